"""``maintain()``: start (or replace) a name's scheduler, and the handle that reads what it is doing."""

from __future__ import annotations

import html
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from ..errors import NbdeployError, UsageError
from ..monitor.history import HISTORY_ACTIONS
from ..registry import Registry
from ..targets._process import is_alive, read_since, spawn, stop_group
from . import store
from .retrain import Options, RetrainData
from .rules import AlertRule, as_rules, default_rules, seconds


def _marker(name: str) -> str:
    return f"nbdeploy.maintenance {name}"


def _has_probabilities(rec: Any) -> bool:
    methods = getattr(rec.info, "methods", None) or []
    return "predict_proba" in methods


def _numeric(rec: Any) -> bool:
    from .. import config
    from ..reference import load_reference

    ref = load_reference(config.deployment_dir(rec.name, rec.version))
    if ref is None or not len(ref[1]):
        return False
    preds = pd.Series(ref[1])
    return pd.api.types.is_float_dtype(preds) and preds.nunique() > 20


def maintain(
    name: str,
    *,
    rules: Any = None,
    notify: list[Any] | None = None,
    retrain: Callable[[RetrainData], Any] | None = None,
    every: str | float = "5s",
    lookback: str | float = "1h",
    holdout: float = 0.3,
    min_labelled: int = 200,
    min_gain: float = 0.0,
    promotion: Any = None,
    shadow_for: str | float = "30min",
    data: Any = None,
    metrics_port: int = 0,
) -> Maintenance:
    """Keep ``name`` healthy by itself; see ``Deployment.maintain`` for the whole story."""
    from ..comparison import as_rules as promotion_rules

    reg = Registry()
    from .scheduler import live_record

    rec = live_record(reg, name)
    if rec is None:
        raise UsageError(f"'{name}' has no live version to maintain", hint="deploy it first")
    chosen = as_rules(rules) or default_rules(_has_probabilities(rec), _numeric(rec))
    if not 0 < holdout < 1:
        raise UsageError(f"holdout must be a fraction between 0 and 1, not {holdout!r}")
    if retrain is not None and not callable(retrain):
        raise UsageError(f"retrain must be a function taking RetrainData, not {type(retrain).__name__}")
    promotion_rules(promotion)  # refuses unknown fields now, not at 3 a.m.
    options = Options(
        fn=retrain, lookback_s=seconds(lookback, "lookback"), holdout=holdout, min_labelled=min_labelled,
        min_gain=min_gain, promotion=None if promotion is None else dict(promotion_rules(promotion).as_dict()),
        shadow_for_s=seconds(shadow_for, "shadow_for"), data=data,
    )  # fmt: skip
    from .sinks import build_sinks

    build_sinks(notify, store.folder(name) / store.ALERTS_LOG)  # refuses a sink it cannot send to, now
    spec = store.Spec(
        name, chosen, None if notify is None else list(notify), options, seconds(every, "every"), metrics_port
    )
    handle = Maintenance(name)
    handle.stop(quiet=True)
    store.save_spec(spec)
    handle.start()
    return handle


class Maintenance:
    """What a name's scheduler is doing: its rules, open incidents, the retraining in flight, the history."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def pid(self) -> int | None:
        pid = store.read_pid(self.name)
        return pid if is_alive(pid, _marker(self.name)) else None

    def running(self) -> bool:
        return self.pid is not None

    def state(self) -> dict[str, Any]:
        return store.load_state(self.name)

    @property
    def metrics_url(self) -> str | None:
        port = self.state().get("metrics_port")
        return f"http://127.0.0.1:{port}/metrics" if port and self.running() else None

    @property
    def rules(self) -> list[AlertRule]:
        return store.load_spec(self.name).rules

    def start(self) -> Maintenance:
        """Start the scheduler again from the saved rules, sinks and retrain function (after a reboot, or a
        ``stop()``): it resumes from its saved state. A running one is left as it is."""
        if self.running():
            return self
        folder = store.folder(self.name)
        if not (folder / store.SPEC).exists():
            raise UsageError(f"'{self.name}' has no maintenance to start", hint="set one up with dep.maintain(...)")
        started = time.time()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        pid = spawn(
            [sys.executable, "-m", "nbdeploy.maintenance", self.name], folder / store.SCHEDULER_LOG, env, folder
        )
        (folder / store.PID).write_text(str(pid))
        self.wait_started(pid, started)
        return self

    def wait_started(self, pid: int, since: float, timeout: float = 60.0) -> None:
        log_path = store.folder(self.name) / store.SCHEDULER_LOG
        offset = log_path.stat().st_size if log_path.exists() else 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if state.get("pid") == pid and float(state.get("heartbeat", 0)) >= since:
                return
            if not is_alive(pid, _marker(self.name)):
                raise NbdeployError(f"the scheduler of '{self.name}' ended at start:\n{read_since(log_path, offset)}")
            time.sleep(0.1)
        raise NbdeployError(f"the scheduler of '{self.name}' did not start in {timeout:g} s (log: {log_path})")

    def stop(self, quiet: bool = False) -> None:
        """End the scheduler (a retraining in flight ends at its next step; the champion is never touched)."""
        pid = self.pid
        if pid is None:
            if not quiet:
                (store.folder(self.name) / store.PID).unlink(missing_ok=True)
            return
        stop_group(pid, _marker(self.name), grace_s=90.0)
        (store.folder(self.name) / store.PID).unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        """Running or not, each rule's last window and open incident, the retraining in flight or its outcome."""
        state = self.state()
        rules = state.get("rules", {})
        return {
            "running": self.running(),
            "version": state.get("version"),
            "metrics_url": self.metrics_url,
            "open_incidents": {k: v["incident"] for k, v in rules.items() if v.get("incident")},
            "last": {k: v.get("last") for k, v in rules.items()},
            "retrain": state.get("retrain"),
            "last_error": state.get("last_error"),
        }

    def in_flight(self) -> str:
        """One line, as ``%deployments`` shows it: 'churn: watching 6 rules; drift firing; retraining after drift'."""
        from ..views import maintenance_line

        return maintenance_line(self.name) or ""

    def history(self) -> pd.DataFrame:
        """Alerts, retrainings, shadows, promotions and rollbacks of this name on one timeline, oldest first."""
        events = Registry().events(self.name, actions=HISTORY_ACTIONS)
        frame = pd.DataFrame(events, columns=["id", "at", "who", "host", "action", "name", "version", "detail"])
        return frame.astype({"version": "Int64"})  # as nbdeploy.audit: start and stop have no version

    def prometheus_rules(self, path: str | os.PathLike[str]) -> Any:
        """The same rules as a Prometheus alerting-rules file (for Alertmanager), reading this scheduler's
        ``/metrics`` gauges; returns its path."""
        from .promrules import write_prometheus_rules

        return write_prometheus_rules(self.name, self.rules, path)

    def __repr__(self) -> str:
        return f"Maintenance({self.name!r}, {'running' if self.running() else 'stopped'})"

    def _repr_html_(self) -> str:
        st = self.status()
        rows = "".join(
            f"<tr><td>{html.escape(r.describe())}</td><td>{html.escape(_last(st['last'].get(r.name)))}</td>"
            f"<td>{'<b>firing</b>' if r.name in st['open_incidents'] else ''}</td></tr>"
            for r in self.rules
        )
        head = f"<b>{html.escape(self.name)}</b>: maintenance {'running' if st['running'] else 'stopped'}"
        extra = f" · metrics {html.escape(st['metrics_url'])}" if st["metrics_url"] else ""
        return f"<div>{head}{extra}<table><tr><th>rule</th><th>last window</th><th></th></tr>{rows}</table></div>"


def _last(last: dict[str, Any] | None) -> str:
    if not last:
        return "no window closed yet"
    if not last.get("judged"):
        return f"not judged ({last.get('n', 0)} rows)"
    return f"{last['value']:.4g} on {last['n']:,} rows"


__all__ = ["HISTORY_ACTIONS", "AlertRule", "Maintenance", "Options", "RetrainData", "maintain"]
