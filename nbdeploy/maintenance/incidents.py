"""From one judged window per rule to incidents: open after N breaches in a row, close after M clear windows.

The state is a plain dict per rule (saved by the scheduler between windows, so a restarted scheduler neither
forgets an open incident nor notifies it twice). Notifications happen on transitions only, and the cooldown
after an incident closed swallows a new one's notification (it is still recorded), so a flapping signal is one
message.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from .rules import AlertRule


@dataclass
class Measurement:
    """One rule's quantity on one window; ``judged`` False when the window had too few rows to say anything."""

    value: float
    n: int
    judged: bool
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Transition:
    """An incident opened (``firing``) or closed (``resolved``); ``notify`` False inside the cooldown."""

    state: str
    incident: str
    notify: bool
    opened: float


def blank_state() -> dict[str, Any]:
    return {"breaches": 0, "clears": 0, "incident": None, "opened": None, "closed_at": None, "last_value": None}


def step(
    rule: AlertRule, state: dict[str, Any], m: Measurement, window_end: float
) -> tuple[dict[str, Any], Transition | None]:
    """The rule's state after one more window, and the transition it made (if any)."""
    s: dict[str, Any] = {**blank_state(), **state}
    if not m.judged or (isinstance(m.value, float) and math.isnan(m.value)):
        return s, None
    s["last_value"] = m.value
    if rule.breached(m.value):
        s["breaches"], s["clears"] = s["breaches"] + 1, 0
        if s["incident"] is None and s["breaches"] >= rule.for_windows:
            closed = s["closed_at"]
            quiet = closed is None or window_end - closed >= rule.cooldown_s
            incident = uuid.uuid4().hex[:12]
            s["incident"], s["opened"] = incident, window_end
            return s, Transition("firing", incident, quiet, window_end)
        return s, None
    s["breaches"], s["clears"] = 0, s["clears"] + 1
    if s["incident"] is not None and s["clears"] >= rule.clear_windows:
        incident, opened = str(s["incident"]), float(s["opened"])
        s["incident"], s["opened"], s["closed_at"] = None, None, window_end
        return s, Transition("resolved", incident, rule.notify_resolved, opened)
    return s, None
