"""``nbdeploy`` on the command line: list, status, restart, requests, logs, stop, rollback, audit, ...

Quick to start: this module imports the standard library and ``nbdeploy.errors`` only; each command imports what
it needs when it runs, so ``nbdeploy --help`` and ``nbdeploy list`` never load pandas, numpy, httpx or BentoML.
Everything it prints is plain UTF-8 text (JSON with ``ensure_ascii=False``): no ``\\u2026`` where "…" was meant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .errors import NbdeployError


def _json(value: Any) -> str:
    """JSON as people read it: non-ASCII characters as themselves."""
    import json

    return json.dumps(value, indent=1, default=str, ensure_ascii=False)


def _list(args: argparse.Namespace) -> int:
    from .views import list_text, rows

    table = rows(all_versions=args.all)
    if args.json:
        sys.stdout.write(_json([r.as_dict() for r in table]) + "\n")
    else:
        sys.stdout.write(list_text(table) + "\n")
    return 0


def _status(args: argparse.Namespace) -> int:
    from . import _api

    dep = _api.get(args.name, args.version)
    state = dep.status()
    hint = _status_hint(dep.name, dep.version, state, dep.record.status, args.version is not None)
    if args.json:
        sys.stdout.write(_json({**dep.info(), "live_status": state, "hint": hint}) + "\n")
    else:
        sys.stdout.write(f"{dep.name} v{dep.version} [{dep.target}] {state} {dep.url or ''}\n")
        if hint:
            sys.stderr.write(f"hint: {hint}\n")
    return 0 if state == "running" else 3


def _status_hint(name: str, version: int, state: str, recorded: str, versioned: bool) -> str:
    """What to do about a version that should be serving and is not."""
    if recorded != "running":
        return ""
    which = f"{name} --version {version}" if versioned else name
    if state == "failed":
        return (
            f"its server is not running: `nbdeploy restart {which}` starts it again on the same URL;"
            f" `nbdeploy logs {which}` shows why it stopped"
        )
    if state == "degraded":
        return (
            f"it runs but does not answer /readyz (starting, or a call stuck past its timeout):"
            f" `nbdeploy logs {which}`; `nbdeploy restart {which}` if it stays so"
        )
    return ""


def _restart(args: argparse.Namespace) -> int:
    from . import _api

    dep = _api.get(args.name, args.version).restart()
    sys.stdout.write(f"restarted {dep.name} v{dep.version}: {dep.status()} at {dep.url}\n")
    return 0


def _requests(args: argparse.Namespace) -> int:
    from datetime import datetime

    from .registry import Registry
    from .views import ago, recent_requests, request_log_path, text_table

    rec = Registry().get(args.name, args.version)
    if request_log_path(rec) is None:
        sys.stderr.write(f"'{rec.name}' v{rec.version} runs on {rec.target}: its request log is in its pods\n")
        return 2
    found = recent_requests(rec, limit=args.limit, errors_only=args.errors)
    if not found:
        what = "failed requests" if args.errors else "requests"
        sys.stdout.write(f"no {what} recorded for {rec.name} v{rec.version}\n")
        return 0
    body = [
        [
            datetime.fromtimestamp(r["ts"]).strftime("%Y-%m-%d %H:%M:%S"), ago(r["ts"]), r["status"],
            f"{r['latency_ms']:.1f}", r["n_rows"], _one_line(r["error"] or "", 100),
        ]
        for r in reversed(found)  # oldest first: the newest ends up next to the prompt
    ]  # fmt: skip
    headers = ["TIME", "AGO", "STATUS", "LATENCY MS", "ROWS", "ERROR"]
    sys.stdout.write(f"{rec.name} v{rec.version}, last {len(found)}:\n" + text_table(headers, body) + "\n")
    return 0


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _logs(args: argparse.Namespace) -> int:
    from . import _api

    sys.stdout.write(_api.get(args.name, args.version).logs(args.lines) + "\n")
    return 0


def _stop(args: argparse.Namespace) -> int:
    from . import _api

    dep = _api.get(args.name, args.version)
    dep.stop()
    sys.stdout.write(f"stopped {dep.name} v{dep.version}\n")
    return 0


def _key(args: argparse.Namespace) -> int:
    from . import _api
    from .registry import Registry

    key = Registry().key(args.name)
    if key is None:
        _api.get(args.name)  # a clear error if the name is unknown
        sys.stderr.write(f"error: '{args.name}' has no API key (deployed with auth=False)\n")
        return 2
    sys.stdout.write(key + "\n")
    return 0


def _rotate_key(args: argparse.Namespace) -> int:
    from . import _api

    sys.stdout.write(_api.get(args.name).rotate_key() + "\n")
    return 0


def _audit(args: argparse.Namespace) -> int:
    import json
    from datetime import datetime

    from .registry import Registry
    from .views import text_table

    events = Registry().events(args.name)
    if not events:
        sys.stdout.write("no events\n")
        return 0
    body = [
        [
            datetime.fromisoformat(e["at"]).astimezone().strftime("%Y-%m-%d %H:%M:%S"), e["who"], e["action"],
            e["name"], "" if e["version"] is None else f"v{e['version']}",
            json.dumps({k: v for k, v in e["detail"].items() if k != "lineage"}, ensure_ascii=False, default=str),
        ]
        for e in events
    ]  # fmt: skip
    sys.stdout.write(text_table(["AT", "WHO", "ACTION", "NAME", "VERSION", "DETAIL"], body) + "\n")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from . import _api

    dep = _api.rollback(args.name, args.version)
    sys.stdout.write(f"{dep.name} v{dep.version} serving at {dep.url}\n")
    return 0


def _promote(args: argparse.Namespace) -> int:
    from . import _api

    dep = _api.promote(args.name, watch_s=args.watch, force=args.force)
    sys.stdout.write(f"{dep.name} v{dep.version} is live at {dep.endpoint_url or dep.url}\n")
    return 0


def _endpoint(args: argparse.Namespace) -> int:
    from .endpoint import info

    ep = info(args.name)
    if args.json:
        sys.stdout.write(_json(ep.as_dict()) + "\n")
        return 0
    lines = [f"{ep.name}: {ep.url} (router {'running' if ep.router_running else 'stopped'})"]
    lines.append(f"  live       v{ep.live}" if ep.live is not None else "  live       -")
    if ep.candidate:
        c = ep.candidate
        sticky = f", sticky by {c['sticky']}" if c.get("sticky") else ""
        lines.append(f"  candidate  v{c['version']} {c['mode']} {c['percent']:g}%{sticky}")
    if ep.watch:
        w = ep.watch
        lines.append(f"  watch      previous v{w['previous']} warm; {w.get('outcome') or 'watching'}")
    if ep.status:
        flight = ep.status.get("in_flight") or {}
        lines.append(f"  served     {ep.status.get('served')}  in flight {flight or 0}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _maintenance(args: argparse.Namespace) -> int:
    """What a name's scheduler does; ``--stop`` ends it, ``--rules-file`` writes its Prometheus rules."""
    from .maintenance import Maintenance

    m = Maintenance(args.name)
    if args.start:
        m.start()
        sys.stdout.write(f"{args.name}: maintenance running (pid {m.pid})\n")
        return 0
    if args.stop:
        m.stop()
        sys.stdout.write(f"{args.name}: maintenance stopped\n")
        return 0
    if args.rules_file:
        sys.stdout.write(f"{m.prometheus_rules(args.rules_file)}\n")
        return 0
    if args.history:
        frame = m.history()
        for e in frame.to_dict(orient="records"):
            version = "" if e["version"] is None or e["version"] != e["version"] else f" v{int(e['version'])}"
            sys.stdout.write(f"{e['at'][:19]}  {e['action']}{version}  {_json(e['detail'])[:160]}\n")
        return 0
    st = m.status()
    lines = [m.in_flight() or f"{args.name}: no maintenance running"]
    if st["metrics_url"]:
        lines.append(f"  metrics   {st['metrics_url']}")
    for rule, last in (st["last"] or {}).items():
        seen = "no window closed yet" if not last else f"{last.get('value')} on {last.get('n')} rows"
        lines.append(f"  {rule:<18} {seen}{'  FIRING' if rule in st['open_incidents'] else ''}")
    if st["retrain"]:
        lines.append(f"  retrain   {st['retrain'].get('status')}")
    if st["last_error"]:
        lines.append(f"  error     {st['last_error']}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _export(args: argparse.Namespace) -> int:
    from . import _api

    dep = _api.get(args.name, args.version)
    for path in dep.export(args.path):
        sys.stdout.write(path + "\n")
    # the archives cannot vouch for themselves: the importer passes this hash, which the service checks at start
    sys.stdout.write(f"NBDEPLOY_ARTIFACT_SHA256={dep.info()['sha256']}\n")
    return 0


def _export_edge(args: argparse.Namespace) -> int:
    from . import _api

    bundle = _api.get(args.name, args.version).export_edge(args.path, quantize=args.quantize)
    sys.stdout.write(f"{bundle.path} ({bundle.size_bytes} bytes, max |difference| {bundle.max_difference:.3g})\n")
    sys.stdout.write(bundle.instructions + "\n")  # with the manifest's sha256: the bundle cannot vouch for itself
    if args.image:
        from .edge import build_image

        image = build_image(bundle.path, args.image, engine=args.engine, manifest_sha256=bundle.manifest_sha256)
        sys.stdout.write(f"{image.tag} {image.image_id[:12]} ({image.size_bytes} bytes)\n")
    return 0


def _base_image_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import images

    engine = images.engine(args.engine)
    opts = {"mirror": args.mirror, "suite": args.suite, "ca_bundle": args.ca_bundle}
    if args.if_missing or args.cache_dir:
        cache = images.base_image_cache(Path(args.cache_dir), args.tag) if args.cache_dir else None
        image = images.ensure_base_image(engine, args.tag, cache=cache, **opts)
    else:
        image = images.build_base_image(engine, args.tag, **opts)
    sys.stdout.write(
        f"{image.tag} ({image.image_id[:12]}, Python {image.python}, {engine.name}): {image.source}"
        + (f" in {image.seconds} s" if image.source != "present" else "")
        + "\n"
    )
    return 0


def _k8s_manifests(args: argparse.Namespace) -> int:
    from . import _api

    path = _api.manifests(
        args.name, args.dir, version=args.version, image=args.image, replicas=args.replicas,
        hpa=not args.no_hpa, namespace=args.namespace,
    )  # fmt: skip
    sys.stdout.write(f"{path}\n")
    return 0


def _add_k8s(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    k8s = sub.add_parser("k8s", help="Kubernetes: manifests for a deployment")
    k8s_sub = k8s.add_subparsers(dest="k8s_command", required=True)
    m = k8s_sub.add_parser("manifests", help="write DIR/NAME.yaml: Secret, Deployment, Service, HPA, PDB")
    m.add_argument("name")
    m.add_argument("dir")
    m.add_argument("--version", type=int, default=None)
    m.add_argument("--image", default=None, help="image reference, best by digest (default: the version's image)")
    m.add_argument("--replicas", type=int, default=2, help="replicas (the autoscaler's minimum)")
    m.add_argument("--no-hpa", action="store_true", help="no HorizontalPodAutoscaler: a fixed replica count")
    m.add_argument("--namespace", default=None)
    m.set_defaults(func=_k8s_manifests)


def _add_base_image(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bi = sub.add_parser("base-image", help="the local Python base image of the container target")
    bi_sub = bi.add_subparsers(dest="base_image_command", required=True)
    b = bi_sub.add_parser("build", help="bootstrap it from this machine's Debian mirror, with the host's CA bundle")
    b.add_argument("--tag", default=None, help="image name (default: localhost/nbdeploy-python:PYTHON)")
    b.add_argument("--engine", default=None, help="podman or docker (default: the first that works)")
    b.add_argument("--mirror", default=None, help="Debian mirror URI (default: the one in /etc/apt/sources*)")
    b.add_argument("--suite", default=None, help="Debian release (default: the one whose python3 is this Python)")
    b.add_argument("--ca-bundle", default=None, help="PEM bundle to trust inside the image (default: the host's)")
    b.add_argument("--if-missing", action="store_true", help="do nothing if the engine has the image already")
    b.add_argument("--cache-dir", default=None, help="keep an archive of the image here; load it when present")
    b.set_defaults(func=_base_image_build)


def _score(args: argparse.Namespace) -> int:
    from .batch import score

    if args.source is None and args.sql is None and args.table is None:
        sys.stderr.write("error: name a SOURCE file, or --sql/--table with --con\n")
        return 2
    result = score(
        args.name, args.source, into=args.into, key=args.key, sql=args.sql, table=args.table, con=args.con,
        into_table=args.into_table, into_con=args.into_con, quarantine=args.quarantine, method=args.method,
        chunk_rows=args.chunk_rows, in_flight=args.in_flight, overwrite=args.overwrite, version=args.version,
        monitor=not args.no_monitor,
    )  # fmt: skip
    if args.json:
        sys.stdout.write(_json(result.to_frame().iloc[0].to_dict()) + "\n")
    else:
        sys.stdout.write(str(result) + "\n")
        if result.rows_quarantined:
            sys.stdout.write(f"quarantined rows: {result.quarantine_at}\n")
    return 0


def _add_score(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sc = sub.add_parser(
        "score",
        help="batch scoring: a Parquet/CSV file or a SQL table through a deployment, into a file or a table",
        description="Score every row of SOURCE (or --sql/--table in --con) through deployment NAME and write the "
        "predictions with the --key column to --into (a .parquet/.csv file, an SQLite .db or a database URL with "
        "--into-table). Resumable: run the same command again after an interruption.",
    )
    sc.add_argument("name", help="deployment name")
    sc.add_argument("source", nargs="?", default=None, help="a .parquet or .csv file (or use --sql/--table)")
    sc.add_argument("--key", required=True, help="the column that identifies each row (the checkpoint's key)")
    sc.add_argument("--into", default=None, help="destination: a .parquet/.csv file, an SQLite .db, a database URL")
    sc.add_argument("--into-table", default=None, help="table to write (default: 'predictions')")
    sc.add_argument("--into-con", default=None, help="database of --into-table (default: --con)")
    sc.add_argument("--sql", default=None, help="a query to score (with --con)")
    sc.add_argument("--table", default=None, help="a table to score (with --con)")
    sc.add_argument("--con", default=None, help="the source's database: a SQLAlchemy URL or an SQLite file")
    sc.add_argument("--quarantine", default=None, help="where refused rows go (a table, or a .csv/.parquet file)")
    sc.add_argument("--method", default="predict", choices=["predict", "predict_proba", "decision_function"])
    sc.add_argument("--chunk-rows", type=int, default=20_000, help="rows per request (default: 20000)")
    sc.add_argument("--in-flight", type=int, default=4, help="requests at once (default: 4)")
    sc.add_argument("--version", type=int, default=None, help="a version other than the running one")
    sc.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    sc.add_argument("--no-monitor", action="store_true", help="do not mark the requests as batch in the request log")
    sc.add_argument("--json", action="store_true", help="print the summary as JSON")
    sc.set_defaults(func=_score)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nbdeploy", description="Manage models deployed with nbdeploy.")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list deployments: status checked now, age, requests and error rate (last hour)")
    ls.add_argument("--all", action="store_true", help="every version")
    ls.add_argument("--json", action="store_true", help="the rows as JSON")
    ls.set_defaults(func=_list)
    for cmd, func, helptext in (
        ("status", _status, "show live status (exit 3 if not running), with what to do if it is not"),
        ("restart", _restart, "start a version again on its port and URL (after a crash)"),
        ("logs", _logs, "print the server log"),
        ("stop", _stop, "stop the service"),
    ):
        s = sub.add_parser(cmd, help=helptext)
        s.add_argument("name")
        s.add_argument("--version", type=int, default=None)
        s.set_defaults(func=func)
        if cmd == "status":
            s.add_argument("--json", action="store_true")
        if cmd == "logs":
            s.add_argument("--lines", type=int, default=200)
    rq = sub.add_parser("requests", help="print the request log: time, status, latency, rows, error")
    rq.add_argument("name")
    rq.add_argument("--version", type=int, default=None)
    rq.add_argument("--limit", type=int, default=20, help="the last N requests (default: 20)")
    rq.add_argument("--errors", action="store_true", help="only requests answered with an error")
    rq.set_defaults(func=_requests)
    rb = sub.add_parser("rollback", help="serve an earlier version again")
    rb.add_argument("name")
    rb.add_argument("version", type=int)
    rb.set_defaults(func=_rollback)
    pr = sub.add_parser("promote", help="make a name's candidate (shadow or split) the live version, gated by rules")
    pr.add_argument("name")
    pr.add_argument("--force", action="store_true", help="promote without checking the rules (audited)")
    pr.add_argument("--watch", type=float, default=300.0, help="seconds the previous version stays warm")
    pr.set_defaults(func=_promote)
    en = sub.add_parser("endpoint", help="a name's stable URL: live version, candidate, watch, router figures")
    en.add_argument("name")
    en.add_argument("--json", action="store_true")
    en.set_defaults(func=_endpoint)
    for cmd, func, helptext in (
        ("key", _key, "print the API key of a deployment (for curl: export NBDEPLOY_KEY=$(nbdeploy key NAME))"),
        ("rotate-key", _rotate_key, "replace the API key without downtime; prints the new key"),
    ):
        k = sub.add_parser(cmd, help=helptext)
        k.add_argument("name")
        k.set_defaults(func=func)
    mt = sub.add_parser("maintenance", help="a name's alerting and retraining scheduler: status, history, start, stop")
    mt.add_argument("name")
    mt.add_argument("--stop", action="store_true", help="end the scheduler (the live version keeps serving)")
    mt.add_argument("--start", action="store_true", help="start it again from its saved spec (e.g. after a reboot)")
    mt.add_argument("--history", action="store_true", help="alerts, retrainings, promotions and rollbacks")
    mt.add_argument("--rules-file", default=None, help="write the rules as a Prometheus alerting-rules file")
    mt.set_defaults(func=_maintenance)
    au = sub.add_parser("audit", help="the audit trail: deploys, stops, rollbacks, key changes")
    au.add_argument("name", nargs="?", default=None)
    au.set_defaults(func=_audit)
    ex = sub.add_parser("export", help="write a container deployment's image and bento archives into a folder")
    ex.add_argument("name")
    ex.add_argument("path")
    ex.add_argument("--version", type=int, default=None)
    ex.set_defaults(func=_export)
    ee = sub.add_parser("export-edge", help="write a deployment's edge bundle (ONNX + onnxruntime-only server)")
    ee.add_argument("name")
    ee.add_argument("path")
    ee.add_argument("--version", type=int, default=None)
    ee.add_argument("--quantize", action="store_true", help="dynamic int8 quantisation of weight matrices")
    ee.add_argument("--image", default=None, help="also build a container image TAG of it on the local base image")
    ee.add_argument("--engine", default=None, help="podman or docker, for --image (default: the first that works)")
    ee.set_defaults(func=_export_edge)
    _add_base_image(sub)
    _add_score(sub)
    _add_k8s(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a terminal that cannot show "…" gets \\u2026 rather than a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except NbdeployError as exc:
        sys.stderr.write(f"error: {exc.message}\n" + (f"hint: {exc.hint}\n" if exc.hint else ""))
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
