"""``python -m nbdeploy.router --endpoint PATH [--host 127.0.0.1]``: one name's router, logging to stderr.

Started by the SDK (``nbdeploy.endpoint``) in its own process group; it imports the standard library, httptools,
uvloop and ``nbdeploy.router`` only, so it starts in a fraction of a second and stays small.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .server import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbdeploy.router", description=__doc__)
    parser.add_argument("--endpoint", required=True, type=Path, help="the name's endpoint.json")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--access-log", action="store_true", help="one stderr line per request (version, role)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s nbdeploy.router[%(process)d] %(message)s",
    )
    run(args.endpoint.resolve(), args.host, args.access_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
