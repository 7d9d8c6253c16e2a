"""The panel's history: audit events reduced to timeline rows, and the snapshot, widget and static HTML carrying
them. No server, no browser (``test_monitor_drift_browser.py`` draws them, and the toast, in JupyterLab)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from test_monitor import _recorded

from nbdeploy.monitor.history import HISTORY_ACTIONS, row, timeline
from nbdeploy.monitor.panel import snapshot, static_html
from nbdeploy.monitor.view import view_model
from nbdeploy.monitor.widget import Panel
from nbdeploy.registry import Registry

AT = "2024-05-01T10:00:00.000+00:00"
FIRED = {
    "rule": "drift", "quantity": "drift", "severity": "critical", "value": 5.2812, "threshold": 0.1, "op": ">",
    "incident": "drift-1", "window_start": 1.0, "window_end": 2.0, "evidence": {"rows": 200, "top": []},
    "summary": "churn v2: drift = 5.281 (> 0.1) on the 5 min window ending 10:00:00, 200 rows — firing",
    "notified": True, "sinks": ["webhook"],
}  # fmt: skip
GATE = {
    "passed": True, "metric": "accuracy", "rows": 1260, "champion": 0.7809, "candidate": 1.0, "gain": 0.219,
    "p_value": 1e-20, "test": "McNemar exact",
}  # fmt: skip


def _event(action: str, version: int | None, **detail: object) -> dict[str, object]:
    return {"id": 7, "at": AT, "who": "me", "host": "h", "action": action, "name": "churn", "version": version,
            "detail": detail}  # fmt: skip


@pytest.mark.parametrize(
    ("action", "version", "detail", "text", "kind"),
    [
        ("alert-fired", 2, FIRED, "drift > 0.1: 5.28 on 200 rows (critical)", "alert"),
        ("retrain-gate", 2, GATE,
         "retrain gate passed: accuracy 0.78 → 1.00 on 1,260 held-out rows (McNemar p = 1e-20)", "retrain"),
        ("promote", 2, {"previous": 1, "forced": False}, "v2 promoted", "promote"),
        ("rollback", 1, {"replaced": 2}, "rolled back to v1", "rollback"),
        ("auto-rollback", 3, {"reason": "error rate 40 %", "to": 2},
         "v3 rolled back automatically to v2: error rate 40 %", "rollback"),
        ("retrain-lost", 2, {"why": "not better"}, "retraining lost: not better", "retrain"),
        ("retrain-rejected", 3, {"why": "no win", "rules": ["x"]}, "retrained v3 rejected: no win", "rollback"),
        ("retrain-promoted", 3, {"champion": 2, "rules": ["a: ok", "b: ok"]}, "retrained v3 promoted: a: ok; b: ok",
         "promote"),
        ("alert-resolved", 2, {"rule": "drift", "why": "v3 is live now"}, "drift resolved: v3 is live now", "other"),
        ("alert-fired", 2, {}, "? ? ?: ? (?)", "alert"),  # whatever an older or broken event lacks: no error
    ],
)  # fmt: skip
def test_an_event_becomes_a_timeline_row(action, version, detail, text, kind):
    r = row(_event(action, version, **detail))
    assert r["text"] == text and r["kind"] == kind and r["action"] == action and r["version"] == version
    assert r["id"] == 7 and r["t"] == datetime.fromisoformat(AT).timestamp()
    json.dumps(r, allow_nan=False)
    if action == "alert-fired":  # the toast's severity and sentence
        assert r["severity"] == (FIRED["severity"] if detail else "warning")
        assert r["summary"] == (FIRED["summary"] if detail else text)
    else:
        assert "summary" not in r


def test_every_history_action_reads_and_long_texts_are_cut():
    rows = [row(_event(a, 2, why="x" * 1000)) for a in HISTORY_ACTIONS]
    assert all(r["text"] and len(r["text"]) <= 200 for r in rows)
    assert {r["kind"] for r in rows} == {"alert", "retrain", "promote", "rollback", "other"}


def test_the_snapshot_panel_and_static_html_carry_the_history():
    rec = _recorded("monitor-history", lambda d: (d.monthly > 80).astype(int), None)
    reg = Registry()
    reg.event("alert-fired", rec.name, rec.version, **FIRED)
    reg.event("scale", rec.name, rec.version, replicas=2)  # not a timeline action
    reg.event("retrain-gate", rec.name, rec.version, **GATE)
    reg.event("promote", "someone-else", 1)
    reg.event("rollback", rec.name, rec.version)
    data = snapshot(rec)
    assert [r["action"] for r in data.timeline] == ["alert-fired", "retrain-gate", "rollback"]  # oldest first
    assert [r["action"] for r in timeline(rec.name, last=2)] == ["retrain-gate", "rollback"]  # the latest ones
    assert len(reg.events(rec.name, actions=())) == 0 and len(reg.events(rec.name)) == 4
    page = static_html(data)
    assert "History" in page and page.count("<circle") == 3 and "drift &gt; 0.1: 5.28 on 200 rows" in page
    assert json.loads(json.dumps(view_model(data)))["timeline"] == data.timeline

    panel = Panel(rec, start=False)
    try:
        sent: list[object] = []
        panel.charts.observe(lambda change: sent.append(change["new"]), "timeline")
        assert panel.charts.timeline == panel.data.timeline and "timeline" not in panel.charts.data
        panel.refresh()
        assert not sent  # nothing new: the timeline is not sent again
        reg.event("alert-fired", rec.name, rec.version, **{**FIRED, "severity": "warning"})
        panel.refresh()
        assert len(sent) == 1 and panel.charts.timeline[-1]["severity"] == "warning"
    finally:
        panel.close()
