"""A firing incident's retraining: fresh data in, a new model out, and three gates before it serves anyone.

1. offline: on labelled rows held out from the retrain function, the new model must be at least as good as the
   champion was on the very same requests (the champion's logged answers), and not significantly worse;
2. shadow: it is deployed as the name's candidate and sees a copy of live traffic;
3. promotion: ``PromotionRules`` decide, on that traffic and its feedback; a candidate that has not won by
   ``shadow_for`` (or is significantly worse on labels) is rejected.

Every step is an audit event with its evidence. Whatever fails, the champion keeps serving untouched.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .. import config
from ..comparison import NUMBERS, as_rules, gate, kind_of, paired_labels
from ..errors import NbdeployError
from ..monitor.store import RequestLog, logged_schema
from ..registry import CANDIDATE, Registry
from .windows import parse


@dataclass
class RetrainData:
    """What a retrain function gets: the live version's recent traffic and the labels that came back for it.

    ``X`` and ``y`` are the labelled rows (held-out rows removed); ``requests`` every logged input row of the
    window (labelled or not); ``query`` the frame of the ``data=`` source given to ``maintain``, if any."""

    X: pd.DataFrame
    y: pd.Series
    requests: pd.DataFrame
    query: pd.DataFrame | None
    since: float
    trigger: dict[str, Any] = field(default_factory=dict)


@dataclass
class Options:
    """How retraining runs (saved with the rules; see ``Deployment.maintain``)."""

    fn: Callable[[RetrainData], Any] | None = None
    lookback_s: float = 3600.0
    holdout: float = 0.3
    min_labelled: int = 200
    min_gain: float = 0.0
    promotion: dict[str, Any] | None = None
    shadow_for_s: float = 1800.0
    data: Any = None
    sample_rows: int = 5000


def _event(reg: Registry, action: str, name: str, version: int | None, **detail: Any) -> None:
    reg.event(action, name, version, **detail)


def _labelled(name: str, version: int, since: float) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The live version's logged rows since ``since``: inputs, its own answers, the labels (None where none)."""
    reg = Registry()
    rec = reg.get(name, version)
    log = RequestLog(config.deployment_dir(name, version))
    w = parse(log.window(since), logged_schema(rec.info), since, time.time())
    return w.inputs, w.predictions, w.y_true


def _query(source: Any) -> pd.DataFrame | None:
    if source is None:
        return None
    if isinstance(source, pd.DataFrame):
        return source
    from ..batch.sources import open_source

    src = open_source(**source) if isinstance(source, dict) else open_source(source)  # {"sql": ..., "con": ...}
    columns = src.columns()
    return pd.concat(list(src.chunks(100_000, columns, [])), ignore_index=True)


def offline_gate(
    champion_answers: np.ndarray, candidate_answers: np.ndarray, truth: np.ndarray, min_gain: float
) -> tuple[bool, dict[str, Any]]:
    """Whether the candidate is at least ``min_gain`` better than the champion on the held-out rows and not
    significantly worse (paired: McNemar exact for classes, Wilcoxon for numbers)."""
    kind = kind_of(list(truth))
    lab = paired_labels(list(champion_answers), list(candidate_answers), list(truth), kind)
    gain = (lab.difference or 0.0) * (-1 if lab.metric == "mae" else 1)
    worse = lab.significant(0.05) == "live"
    passed = lab.rows > 0 and gain >= min_gain and not worse
    evidence = {
        "metric": lab.metric, "rows": lab.rows, "champion": lab.live, "candidate": lab.candidate, "gain": gain,
        "min_gain": min_gain, "test": lab.test, "p_value": lab.p_value, "numbers": kind == NUMBERS,
    }  # fmt: skip
    return passed, evidence


def run(name: str, version: int, options: Options, trigger: dict[str, Any], stop: threading.Event) -> str:
    """One retraining, start to end; returns the outcome (``promoted``, ``failed``, ``lost``, ``rejected``,
    ``superseded``). Never raises: a failure is an audit event that says why."""
    reg = Registry()
    since = time.time() - options.lookback_s  # "retrain-started" is the scheduler's, written before this runs
    try:
        if options.fn is None:
            raise NbdeployError("no retrain function was given to maintain()")
        inputs, answers, truth = _labelled(name, version, since)
        has = np.array([t is not None for t in truth], dtype=bool)
        if int(has.sum()) < options.min_labelled:
            _event(
                reg, "retrain-failed", name, version,
                why=f"{int(has.sum())} labelled rows since the window began; {options.min_labelled} needed "
                "(send feedback for live requests)",
            )  # fmt: skip
            return "failed"
        idx = np.flatnonzero(has)
        rng = np.random.default_rng(int(since))
        held = np.zeros(len(truth), dtype=bool)
        held[rng.choice(idx, size=max(1, int(len(idx) * options.holdout)), replace=False)] = True
        train = has & ~held
        X = inputs[train].reset_index(drop=True)
        y = pd.Series(list(truth[train]), name="y")
        data = RetrainData(X, y, inputs, _query(options.data), since, trigger)
        model = options.fn(data)
        if model is None or not hasattr(model, "predict"):
            raise NbdeployError(f"the retrain function returned {type(model).__name__}, not a model with predict()")
        cand = np.asarray(model.predict(inputs[held].reset_index(drop=True)))
        passed, evidence = offline_gate(answers[held], cand, truth[held], options.min_gain)
        _event(reg, "retrain-gate", name, version, passed=passed, **evidence)
        if not passed:
            _event(reg, "retrain-lost", name, version, why="the new model is not better on held-out labelled rows")
            return "lost"
        if stop.is_set():
            return "superseded"
        from .._api import deploy

        live = reg.get(name, version)
        sample = X.iloc[-options.sample_rows :] if len(X) else inputs.iloc[-options.sample_rows :]
        dep = deploy(model, name, sample=sample, target=live.target, shadow=True)
        _event(reg, "retrain-shadow", name, dep.version, champion=version)
        return _await_promotion(reg, name, version, dep.version, options, stop)
    except Exception as exc:  # any failure of user code or a deploy: said, and the champion stays
        _event(
            reg, "retrain-failed", name, version, why=f"{type(exc).__name__}: {exc}"[:500],
            where=traceback.format_exc(limit=3)[-1500:],
        )  # fmt: skip
        return "failed"


def _await_promotion(
    reg: Registry, name: str, champion: int, candidate: int, options: Options, stop: threading.Event
) -> str:
    """Poll the promotion rules on live traffic until they pass (promote), the candidate is significantly worse
    or time runs out (reject), or someone else decided (superseded)."""
    from ..endpoint import promote
    from ..lifecycle import stop as stop_version

    rules = as_rules(options.promotion)
    deadline = time.monotonic() + options.shadow_for_s
    results: list[Any] = []
    while not stop.is_set():
        rec = reg.get(name, candidate)
        if rec.status != CANDIDATE:
            _event(reg, "retrain-superseded", name, candidate, status=rec.status)
            return "superseded"
        allowed, results, _ = gate(name, rules, champion=champion, challenger=candidate)
        worse = any(r.name == "not worse on labels" and not r.passed for r in results)
        if allowed:
            promote(reg, name, rules=rules)
            _event(reg, "retrain-promoted", name, candidate, champion=champion, rules=[str(r) for r in results])
            return "promoted"
        if worse or time.monotonic() > deadline:
            why = "significantly worse on labelled live rows" if worse else f"no win in {options.shadow_for_s:g} s"
            _event(reg, "retrain-rejected", name, candidate, why=why, rules=[str(r) for r in results])
            stop_version(reg, rec)
            return "rejected"
        stop.wait(2.0)  # the rules are judged again every 2 s, or the maintenance is stopping
    _event(
        reg, "retrain-superseded", name, candidate,
        why=f"maintenance stopped: v{candidate} stays the candidate, for you to promote or reject",
    )  # fmt: skip
    return "superseded"
