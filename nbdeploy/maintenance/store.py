"""Where a name's maintenance lives on disk: its spec (rules, sinks, the retrain function by value), its state
(cursors and open incidents, so a restarted scheduler picks up where it was), the scheduler's PID and logs.

The spec holds sink secrets (a webhook's key, tokens in apprise URLs): it is written owner-only, like the
registry, and nothing from it but the sinks' secret-free descriptions reaches an event or a log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle

from .. import config
from ..capture.serialize import dump
from ..files import write_private
from .retrain import Options
from .rules import AlertRule

SPEC, STATE, PID, ALERTS_LOG, SCHEDULER_LOG = "spec.pkl", "state.json", "scheduler.pid", "alerts.log", "scheduler.log"


@dataclass
class Spec:
    """What the scheduler of one name runs."""

    name: str
    rules: list[AlertRule]
    notify: list[Any] | None = None  # None: the log sink only
    retrain: Options = field(default_factory=Options)
    interval_s: float = 5.0
    metrics_port: int = 0


def folder(name: str) -> Path:
    path = config.name_dir(name) / "maintain"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def save_spec(spec: Spec) -> None:
    """Pickled by value (a notebook's retrain function travels with what it uses); a function that cannot be
    pickled is a ``CaptureError`` naming the member, before anything starts."""
    data = dump(spec, root="maintain(...)").data
    write_private(folder(spec.name) / SPEC, data)


def load_spec(name: str) -> Spec:
    spec = cloudpickle.loads((folder(name) / SPEC).read_bytes())
    assert isinstance(spec, Spec)
    return spec


def load_state(name: str) -> dict[str, Any]:
    path = folder(name) / STATE
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(name: str, state: dict[str, Any]) -> None:
    write_private(folder(name) / STATE, json.dumps(state, default=str).encode())


def read_pid(name: str) -> int | None:
    try:
        return int((folder(name) / PID).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
