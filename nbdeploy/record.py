"""What the registry knows of one version: the row, its typed capture-time facts, and the state its target keeps.

``Info`` holds what capture and deploy decided (schema, pins, lineage, auth, limits, redaction) and every module
reads it by attribute. What a target learns while running a version (an image id, a container, a cluster's
objects, an edge bundle's hash) is the target's own, in ``Record.state`` under the target's key, beside ``Info``
and never mixed into it.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Info:
    kind: str = ""  # "estimator" (has .predict) or "function"
    sha256: str = ""  # the artifact's: what every service checks before it unpickles
    schema: dict[str, Any] = field(default_factory=dict)
    requirements: list[str] = field(default_factory=list)
    local_modules: list[str] = field(default_factory=list)
    lineage: dict[str, Any] = field(default_factory=dict)
    example: Any = None  # the sample's first row (redacted), for the card's curl line
    auth: bool = True
    limits: dict[str, float] = field(default_factory=dict)
    redact: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # The model's methods at deploy ("predict", "predict_proba", "decision_function") and its class labels: the
    # handle refuses a method the model lacks before any HTTP. None: recorded before they were (ask the service).
    methods: list[str] | None = None
    classes: list[Any] | None = None
    model: str = ""  # what the card calls it: "RandomForestClassifier", "Pipeline(StandardScaler → SVC)"
    # The serving path (``nbdeploy.compile``): {"requested", "path": "onnx"|"python", "reason", "parity", ...}.
    # None: recorded before there was one (the Python object serves).
    compiled: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Info:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_INFO_FIELDS = frozenset(f.name for f in fields(Info))


@dataclass
class Record:
    name: str
    version: int
    target: str
    status: str
    bento_tag: str | None = None
    bento_path: str | None = None
    url: str | None = None
    port: int | None = None
    pid: int | None = None
    created_at: str = ""
    updated_at: str = ""
    info: Info = field(default_factory=Info)
    state: dict[str, Any] = field(default_factory=dict)  # the target's own, e.g. {"container": {...}}

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Record:
        data = {k: row[k] for k in row.keys() if k != "rn"}  # noqa: SIM118 (Row iterates values)
        raw = json.loads(data.pop("info") or "{}")
        state = json.loads(data.pop("state", None) or "{}")
        # rows written before the split kept the targets' keys (container, kubernetes, edge) inside info
        state = {**{k: v for k, v in raw.items() if k not in _INFO_FIELDS}, **state}
        return cls(**data, info=Info.from_dict(raw), state=state)
