"""Alert rules: which quantity, which side of which threshold, over which window, for how long, how loud.

A rule is judged on *closed* windows of the live version's request log, tumbling by time (``window="5min"``) or
by count (``window_requests=1000``). A window with fewer than ``min_rows`` rows (labelled rows for ``accuracy`` and
``mae``) is not judged: it neither breaches nor clears, so a quiet night does not fire or resolve anything.
An incident opens after ``for_windows`` breached windows in a row and closes after ``clear_windows`` clear ones;
while it is open, and for ``cooldown`` after it closed, the rule does not notify again: a flapping signal is one
incident, one notification.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import UsageError

#: quantity -> (the side that breaches, its default threshold, the retrain default, what it measures)
QUANTITIES: dict[str, tuple[str, float, bool, str]] = {
    "drift": (
        "above", 0.1, True,
        "the largest effect size (Wasserstein/σ for numbers, Jensen-Shannon for categories) among features whose "
        "shift is significant (Benjamini-Hochberg q below the false discovery rate)",
    ),
    "error_rate": ("above", 0.05, False, "the share of requests answered with an error (HTTP status ≥ 400)"),
    "latency": ("above", 100.0, False, "the percentile of request latency, in milliseconds"),
    "accuracy": ("below", 0.8, True, "the share of labelled rows predicted right (feedback)"),
    "mae": ("above", 1.0, True, "the mean absolute error on labelled rows (feedback; numeric predictions)"),
    "estimated_accuracy": (
        "below", 0.8, True,
        "the mean top-class probability: the accuracy expected without labels when the model is calibrated",
    ),
    "volume": ("below", 0.0, False, "the number of requests in the window (at or below the threshold fires)"),
}  # fmt: skip

SEVERITIES = ("info", "warning", "critical")

_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(value: str | float | int, what: str) -> float:
    """``"30s"``, ``"5min"``, ``"1h"``, ``"2d"`` or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise UsageError(f"{what} must not be negative, not {value!r}")
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h|d)\s*", str(value))
    if not m:
        raise UsageError(f"{what}: cannot read {value!r} as a duration", hint="write '30s', '5min', '1h', '2d'")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class AlertRule:
    """One alert rule. ``quantity`` is one of ``drift``, ``error_rate``, ``latency`` (``percentile``, in ms),
    ``accuracy``, ``mae``, ``estimated_accuracy``, ``volume``; give ``above`` or ``below`` (each quantity has a
    default side and threshold). ``retrain``: a firing incident starts the retraining, when one is set (default:
    yes for drift and the accuracy quantities)."""

    quantity: str
    above: float | None = None
    below: float | None = None
    window: str | float = "5min"
    window_requests: int | None = None
    min_rows: int = 200
    for_windows: int = 1
    clear_windows: int = 2
    cooldown: str | float = "1h"
    severity: str = "warning"
    retrain: bool | None = None
    name: str | None = None
    percentile: float = 95.0
    features: list[str] | None = None
    fdr: float = 0.05
    delay: str | float = 0.0
    notify_resolved: bool = False
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.quantity not in QUANTITIES:
            raise UsageError(f"unknown alert quantity {self.quantity!r}", hint=f"one of: {', '.join(QUANTITIES)}")
        side, default, retrain, _ = QUANTITIES[self.quantity]
        if self.above is not None and self.below is not None:
            raise UsageError(f"rule {self.quantity!r}: give above= or below=, not both")
        if self.above is None and self.below is None:
            setattr(self, side, default)
        if self.severity not in SEVERITIES:
            raise UsageError(f"rule severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")
        if self.retrain is None:
            self.retrain = retrain
        if self.name is None:
            self.name = (
                self.quantity if self.quantity != "latency" else f"latency_p{self.percentile:g}".replace(".", "_")
            )
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name):
            raise UsageError(f"rule name {self.name!r}: letters, digits and underscores only (it is a metric label)")
        self.window_s  # noqa: B018 (validates the window)
        self.cooldown_s  # noqa: B018
        self.delay_s  # noqa: B018
        if self.window_requests is not None and self.window_requests < 1:
            raise UsageError(f"rule {self.name!r}: window_requests must be at least 1")
        if self.window_requests is not None and self.quantity == "volume":
            raise UsageError("a volume rule needs a time window (window='5min'): a count window is never empty")
        for key in ("for_windows", "clear_windows"):
            if int(getattr(self, key)) < 1:
                raise UsageError(f"rule {self.name!r}: {key} must be at least 1")
        if not 0 < self.percentile < 100:
            raise UsageError(f"rule {self.name!r}: percentile must be between 0 and 100")

    @property
    def window_s(self) -> float:
        s = seconds(self.window, f"rule {self.quantity!r} window")
        if s <= 0:
            raise UsageError(f"rule {self.quantity!r}: the window must be longer than 0 s")
        return s

    @property
    def delay_s(self) -> float:
        """How long after a window closes it is judged: labels come back late (an accuracy rule judged the moment
        its window closes sees only the labels sent by then)."""
        return seconds(self.delay, f"rule {self.quantity!r} delay")

    @property
    def cooldown_s(self) -> float:
        return seconds(self.cooldown, f"rule {self.quantity!r} cooldown")

    @property
    def threshold(self) -> float:
        return float(self.above if self.above is not None else self.below)  # type: ignore[arg-type]

    @property
    def op(self) -> str:
        """``>`` or ``<`` (``<=`` for volume, where zero requests must fire a threshold of zero)."""
        if self.above is not None:
            return ">"
        return "<=" if self.quantity == "volume" else "<"

    def breached(self, value: float) -> bool:
        if self.op == ">":
            return value > self.threshold
        return value <= self.threshold if self.op == "<=" else value < self.threshold

    @property
    def window_words(self) -> str:
        if self.window_requests is not None:
            return f"{self.window_requests:,}-request"
        s = self.window_s
        return f"{s / 3600:g} h" if s >= 3600 and s % 3600 == 0 else f"{s / 60:g} min" if s >= 60 else f"{s:g} s"

    def describe(self) -> str:
        """``drift > 0.1 over 5 min windows (≥ 200 rows), 2 in a row; warning`` and the like."""
        q = self.name if self.quantity != "latency" else f"p{self.percentile:g} latency (ms)"
        times = f", {self.for_windows} in a row" if self.for_windows > 1 else ""
        unit = {"error_rate": "requests", "latency": "requests", "accuracy": "labelled rows", "mae": "labelled rows",
                "estimated_accuracy": "rows with probabilities"}.get(self.quantity, "rows")  # fmt: skip
        least = "" if self.quantity == "volume" else f" (≥ {self.min_rows:,} {unit})"
        late = f", judged {self.delay_s:g} s after it closes" if self.delay_s else ""
        return f"{q} {self.op} {self.threshold:g} over {self.window_words} windows{least}{times}{late}; {self.severity}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: AlertRule | dict[str, Any] | str) -> AlertRule:
        """A rule from itself, a dict of its fields, or a quantity's name (its defaults)."""
        if isinstance(value, AlertRule):
            return value
        if isinstance(value, str):
            return cls(value)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise UsageError(f"unknown alert rule fields: {', '.join(unknown)}", hint=f"fields: {', '.join(known)}")
        return cls(**value)


def as_rules(rules: Any) -> list[AlertRule]:
    """Rules from a list of rules, dicts or quantity names; two rules may not share a name."""
    if rules is None:
        return []
    items = [rules] if isinstance(rules, AlertRule | dict | str) else list(rules)
    out = [AlertRule.from_value(r) for r in items]
    names = [r.name for r in out]
    twice = sorted({n for n in names if names.count(n) > 1 and n is not None})
    if twice:
        raise UsageError(f"two alert rules are named {', '.join(twice)}", hint="give one of them name='...'")
    return out


def default_rules(has_probabilities: bool, numeric: bool) -> list[AlertRule]:
    """What ``maintain()`` watches when no rules are given: drift, errors, p95 latency, silence, and the accuracy
    (or error) from feedback, with the confidence estimate for models with probabilities."""
    rules = [
        AlertRule("drift", for_windows=2),
        AlertRule("error_rate", min_rows=50),
        AlertRule("latency", min_rows=50),
        AlertRule("volume", min_rows=0, for_windows=2),
        AlertRule("mae" if numeric else "accuracy", min_rows=100),
    ]
    if has_probabilities:
        rules.append(AlertRule("estimated_accuracy", min_rows=100))
    return rules
