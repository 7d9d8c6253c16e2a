"""The public functions: deploy, get, deployments, rollback. Orchestration only; work lives elsewhere."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from . import config, endpoint, keys
from .capture import capture
from .capture.deps import pin_closure
from .capture.schema import as_frame
from .card import EXAMPLE_FILE, example_body
from .deployment import Deployment
from .errors import DeploymentNotFound, TargetError, UsageError
from .lifecycle import start_record
from .package import COMPILED_DIR, build_bento
from .progress import Progress
from .record import Info
from .registry import CANDIDATE, FAILED, RUNNING, STANDBY, STOPPED, Record, Registry
from .runtime.redact import DROP, MODES, Redactor
from .targets import get_target, merge_options
from .targets._process import check_port
from .wire import payload

REFERENCE_ROWS = 5000


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not config.NAME.fullmatch(name):
        rule = "1-63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        suggestion = config.suggest_name(name) if isinstance(name, str) else None
        raise UsageError(
            f"invalid deployment name {name!r}",
            hint=f"use {rule}" + (f", such as '{suggestion}'" if suggestion else ""),
        )


def describe_model(obj: Any) -> str:
    """What the card calls the model: ``RandomForestClassifier``, ``Pipeline(StandardScaler → LogisticRegression)``,
    ``function score``."""
    steps = getattr(obj, "steps", None)
    if isinstance(steps, list) and all(isinstance(s, tuple) and len(s) >= 2 for s in steps):
        return f"{type(obj).__name__}({' → '.join(describe_model(s[1]) for s in steps)})"
    if callable(obj) and not hasattr(obj, "predict"):
        return f"function {getattr(obj, '__name__', type(obj).__name__)}"
    return type(obj).__name__


def _example(sample: Any, redacted: dict[str, str] | None = None) -> Any:
    """The first row of the sample, for the card's curl line; redacted columns get a placeholder of their kind."""
    data = as_frame(sample)
    head = data.iloc[:1] if isinstance(data, pd.DataFrame) else data[:1]
    if not isinstance(head, pd.DataFrame):
        return payload(head)["inputs"]
    records = payload(head.to_dict(orient="records"))["inputs"]
    for column in redacted or {}:
        records[0][column] = _placeholder(head[column])
    return records


def _placeholder(column: pd.Series) -> Any:
    if pd.api.types.is_bool_dtype(column):
        return False
    if pd.api.types.is_numeric_dtype(column):
        return 0
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.categories[0]
    if pd.api.types.is_datetime64_any_dtype(column):
        return "1970-01-01T00:00:00"
    return "redacted"


def deploy(
    obj: Any,
    name: str,
    sample: Any,
    *,
    target: str = "local",
    port: int | None = None,
    requirements: list[str] | None = None,
    wheels: list[str] | None = None,
    allow_secrets: list[str] | None = None,
    verify: bool = False,
    auth: bool = True,
    limits: dict[str, float] | None = None,
    redact: list[str] | dict[str, str] | None = None,
    engine: str | None = None,
    base_image: str | None = None,
    registry: str | None = None,
    replicas: int | None = None,
    context: str | None = None,
    namespace: str | None = None,
    target_options: dict[str, Any] | None = None,
    force: bool = False,
    shadow: bool | float = False,
    split: float | None = None,
    sticky: str | None = None,
    compile: bool = True,
) -> Deployment:
    """Capture ``obj``, package it as a bento and serve it on ``target``; return the handle.

    Deploying an existing name makes the next version; the old one is stopped only once the
    new one answers ``/readyz``. ``verify=True`` first replays the sample in a fresh environment
    built from the captured requirements alone. ``requirements`` add or override pins,
    ``wheels`` ship local wheels, ``allow_secrets`` names false positives of the secret scan.
    API keys are on unless ``auth=False``; ``limits`` sets max_rows, max_body_bytes, timeout_s,
    max_concurrency, max_queue, record_sample_rate, record_retention_days.
    ``redact`` keeps personal data out of the request log and the reference sample: a list of columns to drop,
    or ``{"column": "drop" | "hash"}`` (a keyed hash: drift still works on it). The model still gets every column.
    ``engine`` (podman, docker) and ``base_image`` are for ``target="container"`` and ``"kubernetes"``;
    ``registry`` (where the cluster pulls the image from), ``replicas``, ``context`` and ``namespace`` (default:
    the kubeconfig's current context and its namespace) for ``target="kubernetes"`` only. ``target_options``: more
    options for the target (those of a target added with ``nbdeploy.targets.register_target``); an option the
    target does not take is refused before anything is built. Deploying the very model already serving, with the
    same options, makes no new version (the handle says so) unless ``force=True``.

    On the local and container targets a name has one stable URL (``dep.endpoint_url``, a router on the host):
    the new version starts on a port of its own, the router switches to it once it is ready, and the replaced one
    stops once it has no request in flight, so callers of the stable URL lose nothing. ``port=`` on a name's first
    deploy chooses that stable port. ``shadow=True`` (or a percent) starts the new version beside the live one
    with a copy of its requests (the live one keeps answering everyone); ``split=PERCENT`` gives it that share of
    callers, ``sticky="key"`` or ``"header:X-User"`` keeps each caller on one version. Either way it is the
    name's *candidate* until ``promote``.

    ``compile=True`` (the default) also compiles the model for serving (ONNX Runtime in double precision) and
    serves that only if it answers exactly as the Python object on the sample and on generated rows (classes
    identical, scores within the tolerance the card states); otherwise, or with ``compile=False``, the Python
    object serves, and the card says why.
    """
    _check_name(name)
    _check_limits(limits)
    named = {"engine": engine, "base_image": base_image, "registry": registry, "replicas": replicas}
    named.update(context=context, namespace=namespace)
    tgt = get_target(target, **merge_options(named, target_options))  # refuses an option it does not take
    tgt.check_port_option(port)
    role = endpoint.check_role(target, shadow, split, sticky)
    if role is not None:
        endpoint.check_live(Registry(), name)
    _check_port(name, target, port)
    progress = Progress(f"deploying '{name}' to {target}")
    workdir = Path(tempfile.mkdtemp(prefix="nbdeploy-compile-"))
    try:
        with progress.stage("prepare target"):
            bento_options = tgt.prepare()  # fail before building what cannot run
        with progress.stage("capture"):
            artifact = capture(obj, sample, requirements, wheels=wheels, allow_secrets=allow_secrets)
            redacted = _check_redact(redact, artifact.schema)
        if verify:
            with progress.stage("verify", "a fresh environment from the requirements alone"):
                _verify(artifact)
        reg = Registry()
        if auth:
            _ensure_key(reg, name)
        info = _info(artifact, auth, limits, redacted, example=_example(sample, redacted), obj=obj)
        info.compiled = {"requested": bool(compile)}
        # options a target keeps in its own state are not compared: with any of them, a deploy is a new version
        plain = not target_options and all(v is None for v in named.values())
        same = None if force or not plain or role else _unchanged(reg, name, target, port, info)
        if same is not None:
            note = (
                f"unchanged: v{same.version} already serves this model with these options, so no new version was "
                "made (deploy with force=True, or %deploy --force, to make one anyway)"
            )
            reg.event("deploy-unchanged", name, same.version, target=target)
            return Deployment(same, reg, note=note)
        compiling = compile and artifact.kind == "estimator"
        with progress.stage("compile", "a faster path, kept only if it answers alike") if compiling else nullcontext():
            info.compiled, compiled_dir, runtime_pins = _compile(obj, sample, artifact, compile, workdir)
        rec = reg.allocate(name, target, info)
        try:
            reference = Redactor(redacted, keys.redact_salt(name) if redacted else "")
            directory = config.deployment_dir(name, rec.version)
            _keep_reference(obj, artifact.kind, sample, directory, reference)
            (directory / EXAMPLE_FILE).write_text(example_body(rec))
            bento_options = {**bento_options, "compiled_dir": compiled_dir, "extra_packages": runtime_pins}
            rec = _build_and_start(reg, rec, artifact, tgt, port, bento_options, progress, role)
        except BaseException as exc:
            reg.update(name, rec.version, status=FAILED, pid=None)
            reg.event("deploy-failed", name, rec.version, error=f"{type(exc).__name__}: {exc}"[:500])
            raise
    finally:
        progress.close()
        shutil.rmtree(workdir, ignore_errors=True)
    stable = {"endpoint": endpoint.url_of(name, reg)} if endpoint.routed(target) else {}
    roles = {"role": role} if role else {}
    reg.event(
        "deploy", name, rec.version, target=target, url=rec.url, auth=bool(auth), lineage=artifact.lineage,
        **stable, **roles,
    )  # fmt: skip
    return Deployment(rec, reg)


def _check_port(name: str, target: str, port: int | None) -> None:
    """``port=`` before the capture and the build: free, or already the name's own (its stable port when the target
    has a router, else the running version's)."""
    if port is None:
        return
    reg = Registry()
    if endpoint.routed(target):
        if reg.endpoint(name) is not None:
            endpoint.check_stable_port(reg, name, port)
            return
        check_port(port)
    elif port not in {r.port for r in reg.running(name)}:
        check_port(port)


def _unchanged(reg: Registry, name: str, target: str, port: int | None, info: Info) -> Record | None:
    """The running version of ``name`` if it serves this very artifact with the same options, else None."""
    for rec in reg.running(name):
        old = rec.info
        same_options = (old.auth, old.limits, old.redact, old.requirements, _asked(old)) == (
            info.auth,
            info.limits,
            info.redact,
            info.requirements,
            _asked(info),
        )
        if (
            rec.target == target
            and old.sha256 == info.sha256
            and same_options
            and (port is None or port == rec.port)
            and get_target(rec.target).status(rec) == RUNNING
        ):
            return rec
    return None


def _asked(info: Info) -> bool:
    """Whether the deploy asked for the compiled path (versions recorded before it existed did not)."""
    return bool((info.compiled or {}).get("requested", False))


def _compile(
    obj: Any, sample: Any, artifact: Any, requested: bool, workdir: Path
) -> tuple[dict[str, Any], Path | None, list[str]]:
    """The serving path's record, the compiled files' folder (None: the Python object serves) and the pins the
    compiled runtime needs in the bento."""
    if not requested:
        return {"requested": False, "path": "python", "reason": "compile=False"}, None, []
    if artifact.kind != "estimator":
        reason = "a plain function is served as Python: only fitted estimators are compiled"
        return {"requested": True, "path": "python", "reason": reason}, None, []
    from .compile import compile_model

    record = compile_model(obj, as_frame(sample)[:REFERENCE_ROWS], artifact.schema, artifact.kind, workdir)
    record = {"requested": True, **record}
    if record.get("path", "python") == "python":
        return record, None, []
    return record, workdir / COMPILED_DIR, pin_closure({"onnxruntime"})  # what runtime/compiled.py imports


def _build_and_start(
    reg: Registry,
    rec: Record,
    artifact: Any,
    tgt: Any,
    port: int | None,
    bento_options: dict[str, Any],
    progress: Progress,
    role: dict[str, Any] | None = None,
) -> Record:
    """Build the version's bento and start it on the target; the timings of each stage go into its info."""
    with progress.stage("package", "a bento"):
        from .form import sample_summary  # ranges, values seen and rows for the try-it page (runtime/page.py)

        meta = {
            "version": rec.version,
            "example": rec.info.example,
            "model": rec.info.model,
            "sample_summary": sample_summary(rec),
        }
        bento = build_bento(artifact, rec.name, rec.version, config.bento_store(), extra_meta=meta, **bento_options)
    rec = reg.update(rec.name, rec.version, bento_tag=bento.tag, bento_path=str(bento.path))
    with progress.stage("start", "until /readyz answers"):
        rec = start_record(reg, rec, port, tgt, role=role)
    timings = {f"{stage.replace(' ', '_')}_s": round(seconds, 3) for stage, seconds in progress.done}
    return reg.update(rec.name, rec.version, info=replace(rec.info, timings=timings))


def _info(
    artifact: Any, auth: bool, limits: dict[str, float] | None, redacted: dict[str, str], example: Any, obj: Any = None
) -> Info:
    from .runtime.model import classes_of, methods_of  # what the service finds at load, found the same way

    known = obj is not None
    return Info(
        methods=["predict", *methods_of(obj, artifact.kind)] if known else None,
        classes=classes_of(obj) if known and artifact.kind == "estimator" else None,
        model=describe_model(obj) if known else "",
        kind=artifact.kind,
        sha256=artifact.sha256,
        schema=artifact.schema,
        requirements=artifact.requirements,
        local_modules=artifact.local_modules,
        lineage=artifact.lineage,
        example=example,
        auth=bool(auth),
        limits=dict(limits or {}),
        redact=redacted,
    )


def _check_limits(limits: dict[str, float] | None) -> None:
    from .targets.base import LIMITS

    unknown = sorted(set(limits or {}) - set(LIMITS))
    if unknown:
        raise UsageError(f"unknown limit '{unknown[0]}'", hint=f"known limits: {', '.join(LIMITS)}")
    for key, value in (limits or {}).items():
        if not isinstance(value, (int, float)) or value < 0:
            raise UsageError(f"limit '{key}' must be a non-negative number, got {value!r}")


def _ensure_key(reg: Registry, name: str) -> str | None:
    """The name's API key: made (and returned, to be shown once) on first deploy, reused after."""
    existing = reg.key(name)
    if existing is not None:
        if not keys.read_hashes(name):
            keys.write_hashes(name, [keys.digest(existing)])
        return None
    secret = keys.new_key()
    reg.set_key(name, secret, keys.digest(secret))
    keys.write_hashes(name, [keys.digest(secret)])
    reg.event("key-created", name, None, key=keys.masked(secret))
    return secret


def _keep_reference(obj: Any, kind: str, sample: Any, directory: Any, redactor: Redactor) -> None:
    """The sample (up to 5,000 rows) and the session's predictions on it: the baseline for drift, redacted as the
    request log is (predictions come from the whole sample first)."""
    from .reference import save_reference
    from .runtime.model import to_jsonable
    from .runtime.schema import from_polars, is_polars

    data = as_frame(sample)[:REFERENCE_ROWS]
    predict = obj.predict if kind == "estimator" else obj
    predictions = to_jsonable(predict(data))
    if is_polars(data):  # the reference is kept as pandas (parquet, drift), whatever the model takes
        data = from_polars(data)
    save_reference(directory, redactor.frame(data) if redactor.enabled else data, predictions)


def _check_redact(redact: list[str] | dict[str, str] | None, schema: dict[str, Any]) -> dict[str, str]:
    """``redact`` as {column: mode}, or a UsageError naming the unknown column or mode."""
    if not redact:
        return {}
    spec = dict.fromkeys(redact, DROP) if isinstance(redact, (list, tuple, set)) else dict(redact)
    if schema.get("kind") == "ndarray":
        raise UsageError("redact= needs named columns; this model takes an array", hint="deploy it with a DataFrame")
    names = [c["name"] for c in schema["columns"]]
    for column, mode in spec.items():
        if column not in names:
            raise UsageError(
                f"redact names column {column!r}, which the sample does not have", hint=f"columns: {names}"
            )
        if mode not in MODES:
            raise UsageError(f"redact mode {mode!r} for column {column!r}", hint="use 'drop' or 'hash'")
    return spec


def _verify(artifact: Any) -> Any:
    from .capture.verify import verify as run

    return run(artifact)


def verify(obj: Any, sample: Any, **capture_options: Any) -> dict[str, Any]:
    """Rebuild the model's environment from its requirements alone and check it predicts as the session does.

    Raises ``VerificationError`` naming the missing or differing package; returns a small report.
    """
    artifact = capture(obj, sample, **capture_options)
    result = _verify(artifact)
    return {
        "ok": True,
        "rows": result.rows,
        "seconds": round(result.seconds, 2),
        "cached_environment": result.cached,
        "environment": str(result.env),
        "requirements": artifact.requirements,
    }


def export_edge(obj: Any, path: str, sample: Any, *, quantize: bool = False) -> Any:
    """Write an edge bundle to ``path``: model.onnx, schema.json, manifest.json and a server needing only onnxruntime.

    Fails with ``EdgeExportError`` naming the step that cannot be converted, or the largest difference if the
    bundle does not predict ``sample`` as the session does. Returns an ``EdgeBundle`` (path, size, parity).
    """
    from .edge import export_edge as export

    return export(obj, path, sample, quantize=quantize)


def audit(name: str | None = None) -> pd.DataFrame:
    """Every deploy, stop, rollback and failure, oldest first: who, when, what, from which lineage."""
    cols = ["id", "at", "who", "host", "action", "name", "version", "detail"]
    frame = pd.DataFrame(Registry().events(name), columns=cols)
    return frame.astype({"version": "Int64"})  # key events have no version: missing, not a float column


def get(name: str, version: int | None = None) -> Deployment:
    """The handle of a deployment: the running version, or the one named. What a name's router did by itself (an
    automatic rollback after a promotion) is settled first, so the running version is the one that serves."""
    reg = Registry()
    if version is None and endpoint.load(name) is not None:
        endpoint.sync(reg, name)
    return Deployment(reg.get(name, version), reg)


def deployments(all_versions: bool = False) -> pd.DataFrame:
    """One row per deployment (or per version with ``all_versions``), indexed by name, with its status checked now.

    ``status`` is live: a version the registry holds as running whose server died shows ``failed`` (and ``hint``
    says ``nbdeploy restart NAME``), one that runs but does not answer ``/readyz`` shows ``degraded``; ``recorded``
    keeps the registry's word. Kubernetes versions are not checked here (``checked`` is False): ``get(name).status()``
    asks the cluster. ``requests`` and ``error_rate`` cover the last hour. See ``nbdeploy.views``.
    """
    from .views import rows
    from .views_frame import to_frame

    return to_frame(rows(all_versions=all_versions))


def rollback(name: str, version: int, *, port: int | None = None) -> Deployment:
    """Serve an earlier version again from its stored bento; the current one stops once it is ready."""
    reg = Registry()
    rec = reg.get(name, version)
    if rec.status == RUNNING:
        return Deployment(rec, reg)
    if not rec.bento_path:
        raise DeploymentNotFound(f"version {version} of '{name}' has no stored bento (it never finished building)")
    from pathlib import Path

    if not Path(rec.bento_path).exists():
        raise TargetError(f"the bento of '{name}' v{version} is gone from {rec.bento_path}")
    current = [r.version for r in reg.running(name)]
    if rec.status in {STANDBY, CANDIDATE}:  # already warm behind the endpoint: switch to it, nothing to start
        state = {k: v for k, v in rec.state.items() if k != "endpoint"}
        rec, others, _ = reg.claim(name, version, state=state)
        endpoint.go_live(reg, rec, others)
        reg.event("rollback", name, version, replaced=current, url=rec.url, warm=True)
        return Deployment(rec, reg)
    try:
        rec = start_record(reg, rec, port, supersede=False)
    except BaseException as exc:
        reg.update(name, version, status=STOPPED, pid=None)
        reg.event("rollback-failed", name, version, error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    reg.event("rollback", name, version, replaced=current, url=rec.url)
    return Deployment(rec, reg)


def promote(
    name: str,
    *,
    rules: Any = None,
    watch_s: float = 300.0,
    watch_rules: dict[str, Any] | None = None,
    force: bool = False,
) -> Deployment:
    """Make the name's candidate (a shadow or split deploy) the live version; return its handle.

    Gated by ``rules`` (``nbdeploy.PromotionRules`` or a dict of its fields; its defaults when None):
    a candidate that breaks one is refused with ``PromotionRefused`` naming the rules and carrying the comparison,
    unless ``force=True``. The previous version stays warm (status ``standby``) for ``watch_s`` seconds; if the new
    one breaks ``watch_rules`` meanwhile (default: error rate above 0.05 over at least 20 requests in 30 s) the
    router sends traffic back to the previous one by itself. Every step is an audit event.
    """
    reg = Registry()
    rec = endpoint.promote(reg, name, rules=rules, watch_s=watch_s, watch_rules=watch_rules, force=force)
    return Deployment(rec, reg)


def get_endpoint(name: str) -> endpoint.EndpointInfo:
    """The name's stable endpoint now: its URL, the live version, the candidate (shadow or split), the watch after
    a promotion, and the router's figures (requests in flight and served per version). What the router did by
    itself (an automatic rollback, a watch that ended) is settled in the registry first."""
    return endpoint.info(name)


def manifests(
    obj_or_name: Any,
    path: str | Path,
    *,
    version: int | None = None,
    name: str | None = None,
    sample: Any = None,
    image: str | None = None,
    replicas: int = 2,
    resources: dict[str, dict[str, str]] | None = None,
    hpa: bool | dict[str, int] = True,
    namespace: str | None = None,
    auth: bool = True,
    limits: dict[str, float] | None = None,
    requirements: list[str] | None = None,
) -> Path:
    """Write the Kubernetes manifests of a deployment into one YAML file (for GitOps or ``kubectl apply``).

    ``obj_or_name`` is a deployed name (its running version, or ``version``) or a model object, which is
    captured with ``name`` and ``sample`` but neither built nor deployed. The image is ``image`` (best by
    digest: ``registry/repo@sha256:...``), else the container image the version was built as, else a
    placeholder under ``registry.invalid`` to replace. ``path`` is a folder (the file is ``NAME.yaml``)
    or a ``.yaml`` file. Returns the file written. ``replicas``, ``resources``, ``hpa``, ``namespace``: see
    ``nbdeploy.targets.kubernetes.render``; ``auth``, ``limits``, ``requirements`` as in ``deploy``.
    The Secret carries the sha256 of the name's API key only; a name without a key gets one, which
    ``nbdeploy key NAME`` prints.
    """
    from .targets.kubernetes import render, to_yaml

    reg = Registry()
    if isinstance(obj_or_name, str):
        rec = reg.get(obj_or_name, version)
    else:
        rec = _captured_record(obj_or_name, name, sample, auth, limits, requirements)
    hashes = None
    if rec.info.auth:
        _ensure_key(reg, rec.name)  # made if the name has none (`nbdeploy key NAME` prints it); hash file restored
        hashes = keys.read_hashes(rec.name)
    ref = image or _k8s_image(rec)
    docs = render(rec, ref, replicas=replicas, resources=resources, hpa=hpa, namespace=namespace, key_hashes=hashes)
    out = Path(path)
    if out.suffix not in {".yaml", ".yml"}:
        out = out / f"{rec.name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    what = f"'{rec.name}' v{rec.version}" if rec.version else f"'{rec.name}' (captured, not deployed)"
    header = (
        f"Kubernetes manifests for {what}, written by nbdeploy.\n"
        f"Apply: kubectl apply --server-side --field-manager=nbdeploy -f {out.name}"
    )
    out.write_text(to_yaml(docs, header))
    reg.event("manifests", rec.name, rec.version or None, path=str(out.resolve()), image=ref)
    return out


def _captured_record(
    obj: Any, name: str | None, sample: Any, auth: bool, limits: dict[str, float] | None, requirements: Any
) -> Record:
    """A record for an object captured but neither built nor deployed (version 0), for its manifests."""
    if name is None or sample is None:
        raise UsageError("manifests for a model object need name= and sample=", hint="or pass a deployed name")
    _check_name(name)
    _check_limits(limits)
    artifact = capture(obj, sample, requirements)
    info = _info(artifact, auth, limits, {}, example=None)
    return Record(name=name, version=0, target="kubernetes", status="captured", info=info)


def _k8s_image(rec: Record) -> str:
    """The image a version's manifests run: pushed (by digest), else its local container image, else a placeholder."""
    pushed = (rec.state.get("kubernetes") or {}).get("image")
    if pushed:
        return str(pushed)
    built = rec.state.get("container") or {}
    if built.get("image"):
        # podman names local images localhost/NAME:TAG; docker keeps them as NAME:TAG
        return f"localhost/{built['image']}" if built.get("engine") == "podman" else str(built["image"])
    return f"registry.invalid/nbdeploy-{rec.name}:unbuilt"
