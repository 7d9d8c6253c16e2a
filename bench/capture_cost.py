"""Capture cost against model size (#18 item 7): capture and deploy time for models of 1, 10 and 100 MB.

    python bench/capture_cost.py            # tiny, 1, 10, 100 MB; local target, real deploys, stopped after
    python bench/capture_cost.py --sizes 0,100

The model is a notebook function (sent by value) holding a float64 table of the given size, as a model holding
an embedding table does. Target: deploying the 100 MB model takes at most 1.5x deploying a tiny one plus the
time to write 100 MB to disk. ``run.py`` calls ``section()``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES_MB = (0, 1, 10, 100)  # 0: the tiny model everything is compared with
#: Besides the float tables: a 100 MB uint8 table of printable bytes (a quantised embedding), which the secret
#: scan once read as 100 MB of text (minutes, and a made-up "URL with a password").
BYTES_TABLE_MB = 100

_NOTEBOOK = """
import numpy as np
def make(table):
    def score(df):
        return df["a"] * float(table[0, 0]) + df["b"]
    return score
"""


def _model(mb: float, dtype: str = "float64") -> Any:
    """A notebook function (``__main__``, so cloudpickle sends it by value) closing over ``mb`` MB of numbers."""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(_NOTEBOOK, ns)
    rng = np.random.default_rng(0)
    if dtype == "uint8":
        return ns["make"](rng.integers(32, 127, size=(max(1, int(mb * 1e6 / 1000)), 1000), dtype=np.uint8))
    return ns["make"](rng.normal(size=(max(1, int(mb * 1e6 / 8 / 64)), 64)))


def _sample() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})


def write_seconds(mb: int = 100) -> float:
    """Time to write ``mb`` MB to a file and fsync it: the I/O floor of a capture that size."""
    data = np.random.default_rng(2).bytes(mb * 1_000_000)
    with tempfile.NamedTemporaryFile(dir=os.environ.get("NBDEPLOY_HOME")) as fh:
        started = time.perf_counter()
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
        return time.perf_counter() - started


def measure(sizes: tuple[float, ...] = SIZES_MB, bytes_table: bool = True) -> dict[str, Any]:
    """Capture and deploy (local target, stopped after) each size; the rows and the 100 MB write time."""
    import nbdeploy
    from nbdeploy.capture import capture

    sample = _sample()
    rows = []
    cases = [(mb, "float64") for mb in sizes] + ([(BYTES_TABLE_MB, "uint8")] if bytes_table else [])
    for mb, dtype in cases:
        fn = _model(mb, dtype)
        started = time.perf_counter()
        art = capture(fn, sample)
        capture_s = time.perf_counter() - started
        started = time.perf_counter()
        dep = nbdeploy.deploy(fn, name=f"capture-cost-{int(mb)}-{dtype}", sample=sample, target="local")
        deploy_s = time.perf_counter() - started
        try:
            assert dep.predict(sample[:5]).shape == (5,)
        finally:
            dep.stop()
        rows.append(
            {
                "mb": mb,
                "dtype": dtype,
                "payload_mb": len(art.payload) / 1e6,
                "capture_s": capture_s,
                "deploy_s": deploy_s,
            }
        )
        print(f"  {mb:>5} MB {dtype}: capture {capture_s:.2f} s, deploy {deploy_s:.2f} s", flush=True)
    return {"rows": rows, "write_100mb_s": write_seconds(100)}


def report(result: dict[str, Any]) -> str:
    rows, write_s = result["rows"], result["write_100mb_s"]
    lines = [
        "## Capture cost against model size",
        "",
        "A notebook function holding a table of numbers; local target, real deploys, each stopped after.",
        "",
        "| model | table | pickled MB | capture s | deploy s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        label = "tiny" if r["mb"] == 0 else f"{r['mb']:g} MB"
        lines.append(f"| {label} | {r['dtype']} | {r['payload_mb']:.1f} | {r['capture_s']:.2f} | {r['deploy_s']:.2f} |")
    lines.append(f"\nWriting 100 MB to disk (fsync): {write_s:.2f} s.")
    tiny = next((r for r in rows if r["mb"] == 0), None)
    for big in (r for r in rows if r["mb"] == 100):
        if tiny:
            bound = 1.5 * tiny["deploy_s"] + write_s
            verdict = "met" if big["deploy_s"] <= bound else "missed"
            lines.append(
                f"Target ({big['dtype']}): deploy of 100 MB <= 1.5 x deploy of tiny + write of 100 MB = {bound:.2f} s;"
                f" measured {big['deploy_s']:.2f} s: {verdict}."
            )
    return "\n".join([*lines, ""])


def section(sizes: tuple[float, ...] = SIZES_MB) -> str:
    """Measure and return the markdown section (what ``run.py`` appends to the report)."""
    print("timing capture and deploy against model size ...", flush=True)
    return report(measure(sizes))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(str(s) for s in SIZES_MB), help="MB, comma-separated; 0 is tiny")
    args = ap.parse_args(argv)
    os.environ.setdefault("NBDEPLOY_HOME", tempfile.mkdtemp(prefix="nbdeploy-capture-cost-"))
    print(section(tuple(float(s) for s in args.sizes.split(","))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
