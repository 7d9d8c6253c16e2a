"""``nbdeploy`` on the command line: list, status, logs, stop, rollback."""

from __future__ import annotations

import argparse
import json
import sys

from . import _api
from .errors import NbdeployError


def _list(args: argparse.Namespace) -> int:
    frame = _api.deployments(all_versions=args.all)
    if frame.empty:
        sys.stdout.write("no deployments\n")
        return 0
    sys.stdout.write(frame[["name", "version", "target", "status", "url", "created_at"]].to_string(index=False) + "\n")
    return 0


def _status(args: argparse.Namespace) -> int:
    dep = _api.get(args.name, args.version)
    state = dep.status()
    if args.json:
        sys.stdout.write(json.dumps({**dep.info(), "live_status": state}, indent=1, default=str) + "\n")
    else:
        sys.stdout.write(f"{dep.name} v{dep.version} [{dep.target}] {state} {dep.url or ''}\n")
    return 0 if state == "running" else 3


def _logs(args: argparse.Namespace) -> int:
    sys.stdout.write(_api.get(args.name, args.version).logs(args.lines) + "\n")
    return 0


def _stop(args: argparse.Namespace) -> int:
    dep = _api.get(args.name, args.version)
    dep.stop()
    sys.stdout.write(f"stopped {dep.name} v{dep.version}\n")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    dep = _api.rollback(args.name, args.version)
    sys.stdout.write(f"{dep.name} v{dep.version} serving at {dep.url}\n")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nbdeploy", description="Manage models deployed with nbdeploy.")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list deployments")
    ls.add_argument("--all", action="store_true", help="every version")
    ls.set_defaults(func=_list)
    for cmd, func, helptext in (
        ("status", _status, "show live status (exit 3 if not running)"),
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
    rb = sub.add_parser("rollback", help="serve an earlier version again")
    rb.add_argument("name")
    rb.add_argument("version", type=int)
    rb.set_defaults(func=_rollback)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except NbdeployError as exc:
        sys.stderr.write(f"error: {exc.message}\n" + (f"hint: {exc.hint}\n" if exc.hint else ""))
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
