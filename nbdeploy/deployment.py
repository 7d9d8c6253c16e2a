"""The handle users hold: a thin view over a registry record. Each verb delegates to the module that owns the job:
HTTP to ``client``, starting and stopping to ``lifecycle``, keys to ``keys``, the card to ``card``, the rest to
the target or the monitor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import card, config, keys, lifecycle
from .client import ServiceClient
from .errors import NbdeployError, NotSupported, UsageError
from .registry import CANDIDATE, RUNNING, SERVING, Record, Registry
from .targets import get_target

# Kept importable from here: earlier code and tests start and stop records through this module.
start_record, stop_record = lifecycle.start_record, lifecycle.stop_record


class Deployment:
    """One version of a named deployment. ``predict`` goes over HTTP to the running service."""

    def __init__(self, record: Record, registry: Registry | None = None, note: str | None = None) -> None:
        self._record = record
        self._registry = registry or Registry()
        self._client = ServiceClient(record, self._registry)
        #: The id the service gave the last ``predict`` call; pass it to ``feedback``.
        self.last_request_id: str | None = None
        self._note = note  # a line for the card, such as "unchanged: v3 already serves this model"

    @property
    def name(self) -> str:
        """The deployment's name; versions of one name share its API key."""
        return self._record.name

    @property
    def version(self) -> int:
        """1 for the first deploy of a name, then 2, 3, ..."""
        return self._record.version

    @property
    def url(self) -> str | None:
        """Where the service answers, e.g. ``http://127.0.0.1:PORT``."""
        return self._record.url

    @property
    def endpoint_url(self) -> str | None:
        """The name's stable URL (its router's, the same for every version, across redeploys, rollbacks and
        restarts), or None where the target has none (kubernetes: the Service is the stable address).
        ``url`` stays this version's own address; the stable one also reaches it as ``/v/VERSION/...``."""
        from . import endpoint

        return endpoint.url_of(self.name, self._registry)

    @property
    def role(self) -> str:
        """``live``, ``shadow`` or ``split`` (a candidate), ``standby`` (kept warm after a promotion) or the
        registry's status for a version that does not serve."""
        rec = self._record
        if rec.status == CANDIDATE:
            return str((rec.state.get("endpoint") or {}).get("mode", "candidate"))
        return "live" if rec.status == RUNNING else rec.status

    @property
    def target(self) -> str:
        """Where it runs: ``local``, ``container``, ``kubernetes`` or ``edge``."""
        return self._record.target

    @property
    def record(self) -> Record:
        """The registry record as last read (``info()`` reads it again)."""
        return self._record

    def _refresh(self) -> Record:
        self._record = self._client.record = self._registry.get(self.name, self.version)
        return self._record

    def headers(self) -> dict[str, str]:
        """Headers for any HTTP client (httpx, requests, a load tester): JSON content type and the API key,
        read from the owner-only registry, as ``nbdeploy key NAME`` does."""
        return self._client.headers(reload=True)

    def predict(self, data: Any, timeout: float = 60.0) -> np.ndarray:
        """Predictions from the endpoint, as an array like ``model.predict`` returns."""
        predictions, self.last_request_id = self._client.predict(data, timeout, self.status)
        return predictions

    def predict_proba(self, data: Any, timeout: float = 60.0) -> np.ndarray:
        """Class probabilities from the endpoint, as ``model.predict_proba`` returns (columns in ``classes_``'s
        order). Logged with the request, so ``feedback`` gives AUC, log-loss and calibration on the panel.
        Raises ``UsageError`` before any HTTP when the model has no ``predict_proba``."""
        values, self.last_request_id = self._client.predict(data, timeout, self.status, "predict_proba")
        return values

    def decision_function(self, data: Any, timeout: float = 60.0) -> np.ndarray:
        """Decision values from the endpoint, as ``model.decision_function`` returns (e.g. a LinearSVC's)."""
        values, self.last_request_id = self._client.predict(data, timeout, self.status, "decision_function")
        return values

    def score(self, source: Any = None, **options: Any) -> Any:
        """Batch scoring through this version: a DataFrame, Parquet/CSV file or SQL table into a file or a table,
        keyed, resumable, with bad rows quarantined (``nbdeploy.score``), e.g.
        ``dep.score("customers.parquet", into="scores.parquet", key="customer_id")``. Returns a ``BatchResult``."""
        from .batch import score

        return score(self, source, **options)

    @property
    def classes_(self) -> np.ndarray | None:
        """The model's class labels as recorded at deploy (the columns of ``predict_proba``); None for a
        regressor, a function, or a version recorded before classes were."""
        classes = self._record.info.classes
        return None if classes is None else np.asarray(classes)

    @property
    def methods(self) -> list[str] | None:
        """The methods the service answers: ``predict`` and, when the model has them, ``predict_proba``
        and ``decision_function`` (None: recorded before methods were)."""
        return self._record.info.methods

    def probability_metrics(self) -> dict[str, Any]:
        """AUC and log-loss of the logged ``predict_proba`` answers that have ``feedback``: binary AUC of the
        positive class (``classes_[1]``), multiclass one-vs-rest macro AUC; with the rows they cover."""
        from .monitor import probability_metrics

        return probability_metrics(self._record)

    def calibration(self, bins: int = 10) -> pd.DataFrame:
        """Calibration of the logged probabilities against ``feedback``, one row per probability bin: mean
        predicted, observed frequency, count (binary: of the positive class; multiclass: of the top class)."""
        from .monitor import calibration

        return calibration(self._record, bins)

    def feedback(self, request_ids: str | list[str], y_true: Any) -> int:
        """Ground truth for earlier predictions, so the panel can show accuracy over time.

        ``feedback(dep.last_request_id, y)`` for one request, or lists of ids and label arrays.
        """
        from .endpoint import answered_by
        from .monitor import send_feedback

        if isinstance(request_ids, str):
            request_ids, y_true = [request_ids], [y_true]
        ids, labels = list(request_ids), list(y_true)
        rec = self._refresh()
        headers = self._client.headers(reload=True)
        # behind a split, each version answered some of the ids: its labels go to it (the router logged who answered)
        groups = answered_by(rec.name, ids, default=rec.version)
        accepted = 0
        for version, positions in sorted(groups.items()):
            url = rec.url if version == rec.version else self._registry.get(rec.name, version).url
            accepted += send_feedback(url or "", [ids[i] for i in positions], [labels[i] for i in positions], headers)
        return accepted

    def key(self) -> keys.Key:
        """The API key of this name, read from the owner-only registry. It shows masked when a notebook displays it
        (so a saved notebook never holds it); ``str(key)``, f-strings and headers get the whole key."""
        rec = self._record
        secret = self._registry.key(rec.name)
        if not rec.info.auth or secret is None:
            raise UsageError(f"'{rec.name}' was deployed with auth=False: it has no API key")
        return keys.Key(secret)

    def rotate_key(self) -> keys.Key:
        """Replace the API key without downtime; returns the new key (the old one stops working), masked on
        display as ``key()`` is."""
        rec = self._refresh()
        if not rec.info.auth:
            raise UsageError(f"'{rec.name}' was deployed with auth=False: it has no key to rotate")
        new = keys.rotate(self._registry, rec.name, rec.version)
        self._client.use_key(new)
        return keys.Key(new)

    def requests(self) -> pd.DataFrame:
        """The request log: one row per recorded request (time, latency, status, rows)."""
        from .monitor import log_for

        return log_for(self._record).requests()

    def drift(self, thresholds: Any = None) -> pd.DataFrame:
        """Drift of live inputs and predictions against the deploy-time sample, one row per feature.

        ``thresholds``: ``nbdeploy.DriftThresholds(...)`` to change the tests' cut-offs (defaults as Evidently's).
        """
        from .monitor import drift

        return drift(self._refresh(), thresholds)

    def accuracy(self, freq: str = "1min") -> pd.DataFrame:
        """Accuracy (labels) or mean absolute error (numbers) over time, from ``feedback``."""
        from .monitor import accuracy_over_time, log_for

        return accuracy_over_time(log_for(self._record).feedback(), freq)

    def monitor(self, interval: float = 3.0, live: bool = True) -> Any:
        """The monitoring panel: tiles, traffic and latency, predictions vs reference, drift, accuracy.

        Live (ipywidgets, refreshed every ``interval`` s until closed or the deployment stops) by
        default; ``live=False`` gives a static HTML snapshot for saved notebooks and docs. Leave it
        last in a cell (or ``display(...)`` it) to show it.
        """
        from .monitor.panel import open_panel

        return open_panel(self, interval=interval, live=live)

    def report(self, path: str | Path = "drift.html", thresholds: Any = None) -> Path:
        """Write a standalone HTML report (tiles, traffic, accuracy, the drift table with every feature's
        distributions) that opens without a kernel or a network: for sharing and audits. Returns the path."""
        from .monitor.report import write_report

        return write_report(self._snapshot(thresholds), path)

    def _snapshot(self, thresholds: Any = None) -> Any:
        from .monitor.data import snapshot

        return snapshot(self, thresholds=thresholds)

    def form(self, auto: bool = True) -> Any:
        """The try-it form in the notebook (ipywidgets): one field per input column, with the sample's ranges and
        values seen, "Sample row" and "Random row"; each prediction goes over HTTP to this version. ``auto``:
        predict again whenever a value changes. The same form is the page at the service's ``/``."""
        from .form import Form

        return Form(self, auto=auto)

    def status(self) -> str:
        """``running``, ``degraded`` (process up, not answering /readyz: starting, or a model call stuck past the
        timeout until the worker is recycled), ``stopped`` or ``failed``."""
        from . import endpoint

        if self._registry.endpoint(self.name) is not None:
            endpoint.sync(self._registry, self.name)  # an automatic rollback or a watch that ended, settled first
        rec = self._refresh()
        if rec.status not in SERVING:
            return rec.status
        live = get_target(rec.target).status(rec)
        return live if rec.status == RUNNING or live != "running" else rec.status

    def scale(self, n: int) -> Deployment:
        """Run ``n`` replicas (kubernetes target). With an autoscaler, ``n`` becomes its minimum: the HPA owns
        the replica count. Returns at once; ``status()`` and ``info()["cluster"]`` show the pods coming up."""
        rec = self._refresh()
        target = get_target(rec.target)
        if rec.status != RUNNING:
            raise UsageError(f"'{rec.name}' v{rec.version} is {rec.status}: only the running version scales")
        info = target.scale(rec, n)
        self._record = self._registry.update(rec.name, rec.version, state={**rec.state, "kubernetes": info})
        self._registry.event("scale", rec.name, rec.version, replicas=n, hpa=info.get("hpa"))
        return self

    def restart(self) -> Deployment:
        """Start this version again, with the limits it was deployed with: a crashed one on its own port; the live
        version of a stable endpoint, while it runs, in a fresh process beside the old one, switched and drained,
        so no caller of the stable URL sees it."""
        self._record = self._client.record = lifecycle.restart(self._registry, self._refresh())
        return self

    def logs(self, lines: int = 200) -> str:
        return get_target(self.target).logs(self._record, lines)

    def stop(self) -> None:
        """Stop the service and leave no process behind. Stopping the live version of a name stops its stable
        endpoint (the router) and any candidate or standby too; stopping a candidate takes it out of the endpoint
        (``reject``) while the live version keeps serving."""
        self._record = self._client.record = lifecycle.stop(self._registry, self._refresh())
        self._client.close()

    def promote(
        self,
        rules: Any = None,
        watch_s: float = 300.0,
        watch_rules: dict[str, Any] | None = None,
        force: bool = False,
    ) -> Deployment:
        """Make this candidate the live version (see ``nbdeploy.promote``): gated by ``rules`` unless ``force``;
        the previous version stays warm for ``watch_s`` seconds and takes traffic back by itself if this one breaks
        ``watch_rules``. Raises ``PromotionRefused`` with the failed rules and the comparison."""
        from . import endpoint

        rec = self._refresh()
        if rec.status != CANDIDATE:
            raise UsageError(
                f"'{rec.name}' v{rec.version} is {'live' if rec.status == RUNNING else rec.status}, not a candidate",
                hint="deploy with shadow= or split= to make a candidate",
            )
        self._record = self._client.record = endpoint.promote(
            self._registry, rec.name, rules=rules, watch_s=watch_s, watch_rules=watch_rules, force=force
        )
        return self

    def maintain(
        self,
        rules: Any = None,
        notify: list[Any] | None = None,
        retrain: Any = None,
        **options: Any,
    ) -> Any:
        """Keep this name healthy without a notebook open: a scheduler process judges alert ``rules`` on closed
        windows of the live version's traffic, notifies ``notify`` once per incident, and on a firing drift or
        accuracy rule runs ``retrain`` (a function of ``nbdeploy.RetrainData`` returning a model, captured by
        value). The new model must beat the champion on held-out labelled rows, then serve as a shadow, and is
        promoted only by the promotion rules; anything else leaves the champion untouched. Every step is an
        audit event; returns the ``nbdeploy.Maintenance`` handle (status, history, stop, Prometheus rules).

        ``rules``: ``nbdeploy.AlertRule`` objects, dicts of their fields or quantity names (default: drift,
        error rate, p95 latency, silence, accuracy from feedback and, with probabilities, its estimate).
        ``notify``: ``"log"``, ``nbdeploy.Webhook(url, secret)`` (HMAC-signed), any apprise URL (``slack://…``,
        ``mailto://…``) or a function. ``options``: ``every`` (how often the scheduler looks, "5s"), ``lookback``
        (the traffic a retraining sees, "1h"), ``holdout`` (0.3 of the labelled rows kept for the offline gate),
        ``min_labelled``, ``min_gain``, ``promotion`` (``PromotionRules``), ``shadow_for`` ("30min"), ``data``
        (a batch-scoring source: a DataFrame, a file, or {"sql": ..., "con": ...}), ``metrics_port``."""
        from .maintenance import maintain

        return maintain(self.name, rules=rules, notify=notify, retrain=retrain, **options)

    def maintenance(self) -> Any:
        """The handle of this name's maintenance (running or not)."""
        from .maintenance import Maintenance

        return Maintenance(self.name)

    def compare(self) -> Any:
        """The name's live version against its candidate on the same requests: agreement, the disagreeing requests,
        accuracy on the labelled ones with an exact paired test, latency and errors (``nbdeploy.compare``)."""
        from .comparison import compare

        return compare(self.name)

    def compare_panel(self, interval: float = 3.0, live: bool = True) -> Any:
        """Champion against challenger, live (ipywidgets) or as a static snapshot: agreement over time, flips,
        latency, and the labelled comparison once feedback arrives."""
        from .monitor.challenger import comparison_panel

        return comparison_panel(self.name, live=live, interval=interval)

    def split(self, percent: float, sticky: str | None = None) -> Deployment:
        """Give this candidate ``percent`` % of the callers (a shadow becomes a split); audited."""
        from . import endpoint

        rec = self._refresh()
        if rec.status != CANDIDATE:
            raise UsageError(f"'{rec.name}' v{rec.version} is not a candidate: only a candidate's share changes")
        self._record = self._client.record = endpoint.set_split(self._registry, rec, percent, sticky)
        return self

    def reject(self) -> None:
        """Take this candidate out of the endpoint and stop it (audited); the live version keeps serving."""
        rec = self._refresh()
        if rec.status != CANDIDATE:
            raise UsageError(f"'{rec.name}' v{rec.version} is not a candidate")
        self._registry.event("reject", rec.name, rec.version)
        self.stop()

    def export(self, path: str) -> list[str]:
        """Write this version's image archive and bento archive into the folder ``path``; return their paths.
        The service in them starts only with ``NBDEPLOY_ARTIFACT_SHA256`` set to ``info()["sha256"]``."""
        rec = self._refresh()
        return [str(p) for p in get_target(rec.target).export(rec, path)]

    def export_edge(self, path: str, quantize: bool = False) -> Any:
        """Write this version's edge bundle (ONNX model, schema, manifest, onnxruntime-only server) to ``path``."""
        from .edge.from_record import export_record

        return export_record(self._refresh(), path, quantize=quantize)

    def info(self) -> dict[str, Any]:
        """Registry record and capture metadata (schema, requirements, lineage); on Kubernetes, ``cluster``:
        replicas ready/desired, pods and recent events, read from the cluster now."""
        rec = self._refresh()
        live: dict[str, Any] = {}
        if rec.status == RUNNING:
            try:
                live["cluster"] = get_target(rec.target).describe(rec)
            except NotSupported:  # the target has nothing live to describe
                pass
            except NbdeployError as exc:  # info() must work while the cluster is unreachable
                live["cluster"] = {"error": str(exc)}
        return {
            "name": rec.name,
            "version": rec.version,
            "target": rec.target,
            "status": rec.status,
            "url": rec.url,
            "bento": rec.bento_tag,
            "created_at": rec.created_at,
            **rec.info.to_dict(),
            **rec.state,
            **live,
        }

    def curl(self, key: str | None = None) -> str:
        """A ready-to-copy request (the first row of the sample) to the stable URL when the name has one, that reads
        the key from ``$NBDEPLOY_KEY``; a wide model's body is read from the example file deploy saved."""
        return card.curl(self._record, key, self._example_path(), self.endpoint_url)

    def _example_path(self) -> Path | None:
        path = config.deployment_dir(self.name, self.version) / card.EXAMPLE_FILE
        return path if path.exists() else None

    def __repr__(self) -> str:
        return f"Deployment(name={self.name!r}, version={self.version}, target={self.target!r}, url={self.url!r})"

    def _repr_html_(self) -> str:
        """The card: the key masked, always (what a notebook shows is saved with it)."""
        stored = self._registry.key(self.name) if self._record.info.auth else None
        return card.render(
            self._record,
            stored_key=stored,
            note=self._note,
            example_path=self._example_path(),
            endpoint_url=self.endpoint_url,
        )
