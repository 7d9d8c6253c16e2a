"""Batch scoring: a DataFrame, a file or a database table through a deployment, into a file or a table.

``score`` is the one entry point (``Deployment.score``, ``nbdeploy.score``, ``nbdeploy score`` and ``%score`` call
it). The work is split by job: ``sources`` read, ``validate`` finds bad rows, ``transport`` speaks to the service,
``sinks`` and ``checkpoint`` commit, ``job`` runs the loop, ``progress`` and ``summary`` show it. The package needs
the deployment's address, key and schema only, so it scores through any target, or any URL with its key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from .summary import BatchResult

if TYPE_CHECKING:
    from .job import Service

__all__ = ["BatchResult", "score"]

METHODS = ("predict", "predict_proba", "decision_function")


def score(
    deployment: Any = None,
    source: Any = None,
    *,
    into: Any = None,
    key: str,
    sql: str | None = None,
    table: str | None = None,
    con: Any = None,
    into_table: str | None = None,
    into_con: Any = None,
    quarantine: Any = None,
    method: str = "predict",
    features: list[str] | None = None,
    keep: list[str] | None = None,
    chunk_rows: int = 20_000,
    in_flight: int = 4,
    overwrite: bool = False,
    progress: bool | None = None,
    monitor: bool = True,
    timeout: float = 120.0,
    retry_s: float = 60.0,
    version: int | None = None,
    url: str | None = None,
    api_key: str | None = None,
) -> BatchResult:
    """Score every row of a source through a deployment and write the predictions, with the key, to a destination.

    ``deployment``: a ``Deployment``, a deployment's name, or None with ``url=`` (and ``api_key=``) for a service
    this machine's registry does not know. ``source``: a DataFrame or a ``.parquet``/``.csv`` path; or ``sql=`` /
    ``table=`` with ``con=`` (a SQLAlchemy URL, Engine or Connection; a plain path is an SQLite file).
    ``into``: a ``.parquet``/``.csv`` path, an SQLite file or a database URL (with ``into_table=``); ``into_table=``
    alone writes into the source's database. ``key``: the column that names each row: the checkpoint is kept by it,
    so an interrupted job resumes with the same call, and a table destination gets it as its primary key.

    Rows the model's schema refuses go to ``quarantine`` (default: ``<into_table>_quarantine``, or
    ``<file>.quarantine.csv``) with the column, value and reason; the job goes on. ``method``: ``predict``,
    ``predict_proba`` (columns ``proba_<class>``) or ``decision_function``. ``chunk_rows`` rows per request and
    ``in_flight`` requests at once bound the memory. ``monitor``: mark the job's requests as batch in the request
    log (the service logs each chunk, a sample of its rows, for the drift panel). ``overwrite``: start again rather
    than resume. Returns a ``BatchResult`` (figures, ``to_frame()``, ``quarantine()``, a card in a notebook).
    """
    from .job import Job, Options
    from .sinks import open_sink
    from .sources import SqlSource, open_source

    if method not in METHODS:
        raise UsageError(f"method={method!r}: choose one of {', '.join(METHODS)}")
    if not isinstance(key, str) or not key:
        raise UsageError("key= names the source's column that identifies each row (e.g. key='customer_id')")
    service = resolve(deployment, url=url, api_key=api_key, version=version, method=method)
    src = open_source(source, sql=sql, table=table, con=con)
    sink = open_sink(
        into,
        key=key,
        into_table=into_table,
        into_con=into_con,
        source_engine=src.engine if isinstance(src, SqlSource) else None,
        quarantine=quarantine,
    )
    opts = Options(
        key=key, method=method, features=list(features) if features is not None else None, keep=list(keep or []),
        chunk_rows=chunk_rows, in_flight=in_flight, overwrite=overwrite, progress=progress, monitor=monitor,
        timeout=timeout, retry_s=retry_s,
    )  # fmt: skip
    return Job(service, src, sink, opts).run()


def resolve(deployment: Any, *, url: str | None, api_key: str | None, version: int | None, method: str) -> Service:
    """The service to score through: from a handle, a name in the registry, or a URL and its key."""
    from .. import config
    from ..registry import SERVING, Registry
    from .job import Service

    if deployment is None:
        if url is None:
            raise UsageError("name the deployment (a Deployment or its name), or pass url= and api_key=")

        def given(reload: bool) -> dict[str, str]:
            return {"authorization": f"Bearer {api_key}"} if api_key else {}

        return Service(name=url, version=None, url=url, headers=given)
    if url is not None:
        raise UsageError("pass a deployment or url=, not both")
    registry = Registry()
    if isinstance(deployment, str):
        rec = registry.get(deployment, version)
    elif hasattr(deployment, "record") and hasattr(deployment, "name"):
        rec = registry.get(deployment.name, deployment.version if version is None else version)
    else:
        raise UsageError(f"deployment= takes a Deployment or a name, not a {type(deployment).__name__}")
    if rec.status not in SERVING or not rec.url:
        raise UsageError(
            f"'{rec.name}' v{rec.version} is {rec.status}: nothing answers there",
            hint=f"nbdeploy.rollback('{rec.name}', {rec.version}) serves it again, or score through the running "
            "version",
        )
    methods = rec.info.methods
    if methods is not None and method not in methods:
        raise UsageError(f"'{rec.name}' v{rec.version} has no {method}", hint=f"its methods: {', '.join(methods)}")
    cached: dict[str, str] = {}

    def headers(reload: bool) -> dict[str, str]:
        if rec.info.auth and (reload or not cached):
            secret = registry.key(rec.name)
            cached.clear()
            if secret:
                cached["authorization"] = f"Bearer {secret}"
        return cached

    return Service(
        name=rec.name,
        version=rec.version,
        url=rec.url,
        headers=headers,
        schema=rec.info.schema or None,
        classes=rec.info.classes,
        json_only=rec.target == "edge",
        log_dir=config.deployment_dir(rec.name, rec.version) if rec.target != "kubernetes" else None,
    )
