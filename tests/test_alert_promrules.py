"""The Prometheus alerting rules made from alert rules: promtool accepts them, and its rule unit tests show they fire
after ``for_windows`` breached windows, resolve after ``clear_windows`` clear ones, and stay quiet at or on the safe
side of the threshold (and on NaN, a window nbdeploy did not judge). promtool is Debian's ``prometheus`` package,
installed by scripts/prometheus-setup.sh (scripts/test.sh runs it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nbdeploy.errors import UsageError
from nbdeploy.maintenance.promrules import prometheus_rules, write_prometheus_rules
from nbdeploy.maintenance.rules import AlertRule

NAME = "fraud-model"
WEIRD = 'we"ird\\name'  # a quote and a backslash: the PromQL selector must escape both


def rule_set() -> list[AlertRule]:
    return [
        AlertRule("drift", for_windows=2),  # 5 min windows: for 5m, keep firing 5m
        AlertRule("error_rate", min_rows=50),
        AlertRule("latency", min_rows=50),
        AlertRule(
            "latency", name="latency_p99", percentile=99, above=250, window="1min", for_windows=3,
            severity="critical", labels={"team": "ml-platform", "page": "true", "severity": "ignored"},
        ),
        AlertRule("accuracy", min_rows=100),
        AlertRule("estimated_accuracy", min_rows=100, severity="info"),
        AlertRule("volume", min_rows=0, for_windows=2, window="90s"),
        AlertRule("error_rate", name="error_rate_1k", window_requests=1000, for_windows=3, severity="critical"),
    ]  # fmt: skip


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: run scripts/prometheus-setup.sh (Debian's prometheus package ships it)")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=30)


def by_rule(text: str) -> dict[str, dict[str, Any]]:
    (group,) = yaml.safe_load(text)["groups"]
    return {a["labels"]["rule"]: a for a in group["rules"]}


def test_structure() -> None:
    doc = yaml.safe_load(prometheus_rules(NAME, rule_set()))
    (group,) = doc["groups"]
    assert group["name"] == "nbdeploy-fraud-model"
    alerts = by_rule(prometheus_rules(NAME, rule_set()))
    assert len(group["rules"]) == len(alerts) == 8
    names = [a["alert"] for a in group["rules"]]
    assert len(set(names)) == 8 and all(re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", n) for n in names)
    assert alerts["latency_p95"]["alert"] == "NbdeployFraudModelLatencyP95"
    assert alerts["drift"]["expr"] == 'nbdeploy_alert_value{deployment="fraud-model",rule="drift"} > 0.1'
    assert alerts["accuracy"]["expr"].endswith("} < 0.8")
    assert alerts["volume"]["expr"].endswith("} <= 0.0")
    assert (alerts["drift"]["for"], alerts["drift"]["keep_firing_for"]) == ("5m", "5m")
    assert (alerts["latency_p99"]["for"], alerts["latency_p99"]["keep_firing_for"]) == ("2m", "1m")
    assert (alerts["volume"]["for"], alerts["volume"]["keep_firing_for"]) == ("90s", "90s")
    assert "for" not in alerts["error_rate"]  # one window is enough
    count = alerts["error_rate_1k"]
    assert "for" not in count and "keep_firing_for" not in count
    assert "counted in requests (1,000)" in count["annotations"]["window"]
    assert "window" not in alerts["drift"]["annotations"]
    p99 = alerts["latency_p99"]
    assert p99["labels"] == {
        "team": "ml-platform", "page": "true", "severity": "critical", "deployment": NAME, "rule": "latency_p99",
    }  # fmt: skip
    assert p99["annotations"]["summary"] == f"{NAME}: {rule_set()[3].describe()}"
    assert "{{ $value }}" in p99["annotations"]["description"]
    odd = AlertRule("drift", window=1.5, for_windows=3, clear_windows=1)
    assert by_rule(prometheus_rules(NAME, [odd]))["drift"]["for"] == "3s"
    assert "keep_firing_for" not in by_rule(prometheus_rules(NAME, [odd]))["drift"]
    assert by_rule(prometheus_rules(NAME, [AlertRule("drift", window=0.75, for_windows=2)]))["drift"]["for"] == "750ms"
    with pytest.raises(UsageError, match="label names"):
        prometheus_rules(NAME, [AlertRule("drift", labels={"bad-name": "x"})])


def test_promtool_check_rules(tmp_path: Path) -> None:
    path = write_prometheus_rules(NAME, rule_set(), tmp_path / "rules.yml")
    assert path == tmp_path / "rules.yml" and path.read_text(encoding="utf-8") == prometheus_rules(NAME, rule_set())
    done = promtool("check", "rules", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def series(name: str, rule: str, quantity: str, values: str) -> dict[str, str]:
    """An input series as the scheduler exports it; json.dumps quotes like Go, and promtool parses it back."""
    labels = ",".join(f"{k}={json.dumps(v)}" for k, v in (("deployment", name), ("rule", rule), ("quantity", quantity)))
    return {"series": f"nbdeploy_alert_value{{{labels}}}", "values": values}


def test_promtool_unit_tests_fire_after_for_and_not_below(tmp_path: Path) -> None:
    rules = rule_set()
    text = prometheus_rules(NAME, rules)
    weird_rule = AlertRule("drift", for_windows=2, labels={"note": "literal {{ braces }}"})
    weird_text = prometheus_rules(WEIRD, [weird_rule])
    (tmp_path / "rules.yml").write_text(text, encoding="utf-8")
    (tmp_path / "weird.yml").write_text(weird_text, encoding="utf-8")
    alerts = {**by_rule(text), "weird": by_rule(weird_text)["drift"]}

    def firing(rule: str, value: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
        a = alerts[rule]
        labels = {**a["labels"], "quantity": next(r.quantity for r in rules if r.name == a["labels"]["rule"])}
        annotations = {k: v.replace("{{ $value }}", value) for k, v in a["annotations"].items()}
        return {"exp_labels": {**labels, **(extra or {})}, "exp_annotations": annotations}

    def check(t: str, rule: str, *exp: dict[str, Any]) -> dict[str, Any]:
        return {"eval_time": t, "alertname": alerts[rule]["alert"], "exp_alerts": list(exp)}

    p99_labels = {  # written out: the generated labels, not a copy of them, with the series' quantity
        "severity": "critical", "deployment": NAME, "rule": "latency_p99", "team": "ml-platform", "page": "true",
        "quantity": "latency",
    }  # fmt: skip
    p99_desc = f"{NAME}: latency_p99 measured 300 on the last breached 1 min window (> 250 breaches)."
    p99_firing = {
        "exp_labels": p99_labels,
        "exp_annotations": {"summary": f"{NAME}: {rules[3].describe()}", "description": p99_desc},
    }
    unit = {
        "rule_files": ["rules.yml", "weird.yml"],
        "evaluation_interval": "30s",
        "tests": [
            {  # 5 min drift windows, 2 in a row to open and 2 clear ones to close
                "interval": "1m",
                "input_series": [
                    # one clear window (0-4m), two breached (5-14m), then clear (15m on)
                    series(NAME, "drift", "drift", "0.05+0x4 0.3+0x9 0.02+0x9"),
                    # one breached window only, then clear: never 2 in a row, never fires
                    series(WEIRD, "drift", "drift", "0.3+0x4 0.02+0x9"),
                    # 1 min windows, 3 in a row: a clear window at 2m restarts the count, so it fires at 5m
                    series(NAME, "latency_p99", "latency", "300 300 100 300 300 300 100 100 100 100"),
                    # equal to the threshold is not above it; NaN (not judged) is nothing
                    series(NAME, "error_rate", "error_rate", "0.05 0.05 NaN 0.06 0.06"),
                ],
                "alert_rule_test": [
                    check("4m", "drift"),
                    check("9m", "drift"),  # pending: one breached window so far
                    check("10m", "drift", firing("drift", "0.3")),
                    check("19m", "drift", firing("drift", "0.3")),  # one clear window: still open
                    check("20m", "drift"),  # two clear windows: resolved
                    check("4m", "weird"),
                    check("9m", "weird"),
                    check("4m", "latency_p99"),
                    check("5m", "latency_p99", p99_firing),
                    check("6m", "latency_p99", p99_firing),  # one clear window: still open, $value the last breach
                    check("7m", "latency_p99"),
                    check("1m", "error_rate"),
                    check("2m", "error_rate"),
                    check("3m", "error_rate", firing("error_rate", "0.06")),
                ],
            },
            {  # 90 s windows, sampled every 30 s
                "interval": "30s",
                "input_series": [
                    series(NAME, "volume", "volume", "3 3 3 0 0 0 0 0 0 0 0"),  # silent from 90 s: <= 0 fires
                    series(NAME, "accuracy", "accuracy", "0.85 0.8 NaN 0.79 0.79"),  # below, not at
                    # a count window: no duration to wait, so the first breach fires
                    series(NAME, "error_rate_1k", "error_rate", "0.01 0.2 0.2"),
                    # the escaped name matches its series, and braces in a label stay literal
                    series(WEIRD, "drift", "drift", "0.5+0x12"),
                ],
                "alert_rule_test": [
                    check("150s", "volume"),
                    check("180s", "volume", firing("volume", "0")),
                    check("30s", "accuracy"),  # at the threshold
                    check("60s", "accuracy"),  # NaN
                    check("90s", "accuracy", firing("accuracy", "0.79")),
                    check("0s", "error_rate_1k"),
                    check("30s", "error_rate_1k", firing("error_rate_1k", "0.2")),
                    check("4m30s", "weird"),
                    check("5m", "weird", firing("weird", "0.5", {"note": "literal {{ braces }}", "deployment": WEIRD})),
                ],
            },
        ],
    }
    (tmp_path / "unit.yml").write_text(yaml.safe_dump(unit, sort_keys=False, allow_unicode=True), encoding="utf-8")
    done = promtool("test", "rules", "unit.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
