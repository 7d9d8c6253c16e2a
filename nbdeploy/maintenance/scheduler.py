"""The scheduler of one name: a process of its own (``python -m nbdeploy.maintenance NAME``), in its own session,
so it keeps judging windows, notifying and retraining after the notebook's kernel is shut down.

Each pass: find the live version, judge every closed window since each rule's cursor, turn breaches into incidents
(``incidents.step``), notify, start a retraining for a firing rule that asks for one (one at a time, in a thread),
publish the gauges on its own ``/metrics`` and save the state. It ends on SIGTERM, or by itself once the name has
no live version.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any

import prometheus_client as prom

from .. import config
from ..monitor.store import RequestLog, load_reference, logged_schema
from ..registry import RUNNING, Record, Registry
from . import incidents, retrain, store
from .rules import AlertRule
from .signals import Baseline, measure
from .sinks import build_sinks, deliver
from .windows import WindowData, closed_time_windows, count_window, time_window

log = logging.getLogger("nbdeploy.maintenance")

#: the scheduler ends once its name has served nothing for this long (stopped on purpose, or gone)
GONE_AFTER_S = 5.0


class Gauges:
    """The figures the generated Prometheus rules read (``promrules``), on the scheduler's own registry."""

    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        labels = ["deployment", "rule", "quantity"]
        self.value = prom.Gauge("nbdeploy_alert_value", "rule quantity on the last closed window", labels,
                                registry=self.registry)  # fmt: skip
        self.breached = prom.Gauge("nbdeploy_alert_breached", "1 when the last window breached the rule",
                                   ["deployment", "rule"], registry=self.registry)  # fmt: skip
        self.firing = prom.Gauge("nbdeploy_alert_firing", "1 while an incident is open",
                                 ["deployment", "rule", "severity"], registry=self.registry)  # fmt: skip
        self.retraining = prom.Gauge("nbdeploy_retrain_in_flight", "1 while a retraining runs", ["deployment"],
                                     registry=self.registry)  # fmt: skip


def live_record(reg: Registry, name: str) -> Record | None:
    running = [r for r in reg.serving(name) if r.status == RUNNING]
    return max(running, key=lambda r: r.version) if running else None


class Scheduler:
    def __init__(self, name: str) -> None:
        self.name = name
        self.spec = store.load_spec(name)
        self.state = store.load_state(name)
        self.reg = Registry()
        self.sinks = build_sinks(self.spec.notify, store.folder(name) / store.ALERTS_LOG)
        self.gauges = Gauges()
        self.stopping = threading.Event()
        self.retrain_thread: threading.Thread | None = None
        self.baseline: Baseline | None = None
        self.version: int | None = None
        self.missing_since: float | None = None

    # -- one pass ----------------------------------------------------------------------------------------------

    def bind(self, rec: Record) -> None:
        """Judge ``rec`` from now on: its reference, fresh cursors (a new live version starts a new history)."""
        ref = load_reference(config.deployment_dir(rec.name, rec.version))
        self.baseline = Baseline.of(*ref) if ref is not None else None
        if self.state.get("version") != rec.version:
            previous = self.state.get("rules", {})
            for rule in self.spec.rules:
                open_incident = previous.get(rule.name, {}).get("incident")
                if open_incident:
                    self.reg.event(
                        "alert-resolved", self.name, self.state.get("version"), rule=rule.name,
                        incident=open_incident, why=f"v{rec.version} is live now",
                    )  # fmt: skip
            now = time.time()
            for rule in self.spec.rules:  # the gauges speak of the live version: the old one's figures go
                self.gauges.value.labels(self.name, rule.name, rule.quantity).set(math.nan)
                self.gauges.breached.labels(self.name, rule.name).set(0)
                self.gauges.firing.labels(self.name, rule.name, rule.severity).set(0)
            self.state = {
                **self.state,
                "version": rec.version,
                "rules": {r.name: {"cursor": now} for r in self.spec.rules},
            }
        self.version = rec.version

    def judge(self, rec: Record, now: float) -> list[tuple[AlertRule, incidents.Transition, dict[str, Any]]]:
        """Every closed window since each rule's cursor, oldest first; the transitions they made."""
        log_ = RequestLog(config.deployment_dir(rec.name, rec.version))
        schema = logged_schema(rec.info)
        cache: dict[tuple[float, float], WindowData] = {}
        out = []
        for rule in self.spec.rules:
            st = self.state["rules"].setdefault(rule.name, {"cursor": now})
            for w in self._windows(rule, st, log_, schema, now, cache):
                m = measure(rule, w, self.baseline)
                new, tr = incidents.step(rule, st, m, w.end)
                st.update(new, cursor=w.end, last={"value": m.value, "n": m.n, "judged": m.judged, "end": w.end})
                self._gauge(rule, m, st)
                if tr is not None:
                    out.append((rule, tr, self._payload(rule, tr, m, w)))
        return out

    def _windows(self, rule: AlertRule, st: dict[str, Any], log_: RequestLog, schema: Any, now: float,
                 cache: dict[tuple[float, float], WindowData]) -> Any:  # fmt: skip
        if rule.window_requests is None:
            for start, end in closed_time_windows(float(st["cursor"]), now - rule.delay_s, rule.window_s):
                key = (start, end)
                if key not in cache:
                    cache[key] = time_window(log_, schema, start, end)
                yield cache[key]
            return
        while True:
            w = count_window(log_, schema, float(st["cursor"]), rule.window_requests, now - rule.delay_s)
            if w is None:
                return
            st["cursor"] = w.end
            yield w

    def _gauge(self, rule: AlertRule, m: incidents.Measurement, st: dict[str, Any]) -> None:
        value = m.value if m.judged else math.nan
        self.gauges.value.labels(self.name, rule.name, rule.quantity).set(value)
        self.gauges.breached.labels(self.name, rule.name).set(int(m.judged and rule.breached(m.value)))
        self.gauges.firing.labels(self.name, rule.name, rule.severity).set(int(st.get("incident") is not None))

    def _payload(self, rule: AlertRule, tr: incidents.Transition, m: incidents.Measurement, w: WindowData) -> dict:
        verb = "firing" if tr.state == "firing" else "resolved"
        summary = (
            f"{self.name} v{self.version}: {rule.name} = {m.value:.4g} ({rule.op} {rule.threshold:g}) on the "
            f"{rule.window_words} window ending {time.strftime('%H:%M:%S', time.localtime(w.end))}, {m.n:,} rows "
            f"— {verb}"
        )
        return {
            "deployment": self.name, "version": self.version, "rule": rule.name, "quantity": rule.quantity,
            "state": tr.state, "severity": rule.severity, "value": m.value, "threshold": rule.threshold,
            "op": rule.op, "incident": tr.incident, "window_start": w.start, "window_end": w.end,
            "summary": summary, "evidence": m.evidence, "time": time.time(),
        }  # fmt: skip

    def act(self, rule: AlertRule, tr: incidents.Transition, payload: dict[str, Any]) -> None:
        """Record the transition, notify (outside the cooldown), and start a retraining for a firing rule."""
        sent = deliver(self.sinks, payload) if tr.notify else []
        action = "alert-fired" if tr.state == "firing" else "alert-resolved"
        detail = {k: v for k, v in payload.items() if k not in ("deployment", "version", "state")}
        self.reg.event(action, self.name, self.version, notified=tr.notify, sinks=sent, **detail)
        if tr.state == "firing" and rule.retrain and self.spec.retrain.fn is not None:
            self.start_retrain(payload)

    def start_retrain(self, trigger: dict[str, Any]) -> None:
        if self.retrain_thread is not None and self.retrain_thread.is_alive():
            self.reg.event("retrain-skipped", self.name, self.version, rule=trigger["rule"],
                           why="a retraining is already in flight")  # fmt: skip
            return
        version = self.version
        assert version is not None
        trigger = {k: trigger[k] for k in ("rule", "incident", "value", "threshold", "window_end")}
        self.reg.event("retrain-started", self.name, version, trigger=trigger, lookback_s=self.spec.retrain.lookback_s)

        def work() -> None:
            self.gauges.retraining.labels(self.name).set(1)
            self.state["retrain"] = {"status": "running", "since": time.time(), "trigger": trigger}
            try:
                outcome = retrain.run(self.name, version, self.spec.retrain, trigger, self.stopping)
            finally:
                self.gauges.retraining.labels(self.name).set(0)
            self.state["retrain"] = {"status": outcome, "ended": time.time(), "trigger": trigger}

        self.retrain_thread = threading.Thread(target=work, name="retrain", daemon=True)
        self.retrain_thread.start()

    def pass_once(self, now: float | None = None) -> bool:
        """One pass; False once the name has no live version (the scheduler then ends)."""
        rec = live_record(self.reg, self.name)
        if rec is None:  # mid-promotion a name may have a candidate and a standby but no live version for a moment
            if self.reg.serving(self.name):
                return True
            self.missing_since = self.missing_since or time.monotonic()
            return time.monotonic() - self.missing_since < GONE_AFTER_S
        self.missing_since = None
        if rec.version != self.version:
            self.bind(rec)
        for rule, tr, payload in self.judge(rec, time.time() if now is None else now):
            self.act(rule, tr, payload)
        self.state["heartbeat"] = time.time()
        self.state.pop("last_error", None)  # a pass went through: an old failure is no longer news
        store.save_state(self.name, self.state)
        return True

    # -- the process ---------------------------------------------------------------------------------------------

    def serve(self) -> int:
        server, _ = prom.start_http_server(self.spec.metrics_port, "127.0.0.1", self.gauges.registry)
        self.state.update(pid=os.getpid(), metrics_port=server.server_port, started=time.time())
        self.reg.event("maintain-started", self.name, None, pid=os.getpid(), metrics_port=server.server_port,
                       rules=[r.describe() for r in self.spec.rules], sinks=[s.describe() for s in self.sinks],
                       retrain=self.spec.retrain.fn is not None)  # fmt: skip
        why = "stopped"
        try:
            while not self.stopping.is_set():
                try:
                    if not self.pass_once():
                        why = "the name has no live version"
                        break
                except Exception as exc:  # a pass that fails (a locked file, a bad window) is said and retried
                    log.exception("maintenance pass failed")
                    self.state["last_error"] = f"{type(exc).__name__}: {exc}"[:500]
                self.stopping.wait(self.spec.interval_s)
        finally:
            server.shutdown()
            if self.retrain_thread is not None:
                self.retrain_thread.join(timeout=60)
            self.state.update(pid=None, stopped=time.time(), stopped_why=why)
            store.save_state(self.name, self.state)
            self.reg.event("maintain-stopped", self.name, self.version, why=why)
            (store.folder(self.name) / store.PID).unlink(missing_ok=True)
        return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m nbdeploy.maintenance NAME", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    scheduler = Scheduler(args[0])
    signal.signal(signal.SIGTERM, lambda *_: scheduler.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: scheduler.stopping.set())
    return scheduler.serve()
