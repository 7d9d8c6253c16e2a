"""Prometheus alerting rules for a deployment's alert rules, for teams whose alerts go through Alertmanager.

nbdeploy's scheduler exports each rule's last closed window as ``nbdeploy_alert_value{deployment, rule, quantity}``;
these rules compare it with the same threshold; ``for:`` waits ``for_windows - 1`` more windows and
``keep_firing_for:`` ``clear_windows - 1`` (Prometheus 2.42 or later), so Prometheus fires and resolves when nbdeploy
opens and closes the incident. A window counted in requests has no duration to wait: those counts stay nbdeploy's.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError
from .rules import AlertRule

_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNITS = (("d", 86400_000), ("h", 3600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def _camel(text: str) -> str:
    """``fraud-model`` -> ``FraudModel``: an alert name may hold only letters, digits, ``_`` and ``:``."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text))


def _promql_string(value: str) -> str:
    """A PromQL string literal: JSON's escapes (quote, backslash, control characters) are Go's too."""
    return json.dumps(value, ensure_ascii=False)


def _literal(text: str) -> str:
    """Text that Prometheus's label and annotation templates print as it is (``{{`` would start an action)."""
    return text.replace("{{", '{{ "{{" }}')


def _duration(seconds: float) -> str:
    """``600`` -> ``10m``, ``90`` -> ``90s``: the largest Prometheus unit that divides it."""
    ms = round(seconds * 1000)
    unit, size = next((u, s) for u, s in _UNITS if ms % s == 0)
    return f"{ms // size}{unit}"


def _alert(name: str, rule: AlertRule) -> dict[str, Any]:
    assert rule.name is not None  # set by AlertRule.__post_init__
    bad = sorted(k for k in rule.labels if not _LABEL_NAME.fullmatch(k))
    if bad:
        raise UsageError(f"rule {rule.name!r}: label names {', '.join(bad)} are not Prometheus label names")
    selector = f"deployment={_promql_string(name)},rule={_promql_string(rule.name)}"
    alert: dict[str, Any] = {
        "alert": f"Nbdeploy{_camel(name)}{_camel(rule.name)}",
        "expr": f"nbdeploy_alert_value{{{selector}}} {rule.op} {rule.threshold!r}",
    }
    if rule.window_requests is None:
        for key, windows in (("for", rule.for_windows), ("keep_firing_for", rule.clear_windows)):
            if windows > 1:
                alert[key] = _duration((windows - 1) * rule.window_s)
    # ours last: the labels nbdeploy_alert_firing carries must mean the same here
    labels = {**rule.labels, "severity": rule.severity, "deployment": name, "rule": rule.name}
    alert["labels"] = {k: _literal(str(v)) for k, v in labels.items()}
    annotations = {
        "summary": _literal(f"{name}: {rule.describe()}"),
        "description": _literal(f"{name}: {rule.name} measured ")
        + "{{ $value }}"
        + _literal(f" on the last breached {rule.window_words} window ({rule.op} {rule.threshold:g} breaches)."),
    }
    if rule.window_requests is not None:
        annotations["window"] = _literal(
            f"counted in requests ({rule.window_requests:,}), not time, so this alert fires on the first breached "
            f"window and resolves on the first clear one; nbdeploy's own scheduler counts the {rule.for_windows} "
            f"breached and {rule.clear_windows} clear windows in a row (nbdeploy_alert_firing)."
        )
    alert["annotations"] = annotations
    return alert


def prometheus_rules(name: str, rules: list[AlertRule]) -> str:
    """A Prometheus alerting-rules file (group ``nbdeploy-<name>``, one alert per rule) on the gauges nbdeploy's
    scheduler exports, so the same rules can page through an existing Prometheus and Alertmanager."""
    group = {"name": f"nbdeploy-{name}", "rules": [_alert(name, r) for r in rules]}
    return yaml.safe_dump({"groups": [group]}, sort_keys=False, allow_unicode=True, width=1000)


def write_prometheus_rules(name: str, rules: list[AlertRule], path: str | os.PathLike[str]) -> Path:
    """Write :func:`prometheus_rules` to ``path`` (for Prometheus's ``rule_files``); returns the path."""
    out = Path(path)
    out.write_text(prometheus_rules(name, rules), encoding="utf-8")
    return out
