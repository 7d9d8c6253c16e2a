"""A batch job in a process of its own, for tests that kill it or measure its memory.

    python tests/batch_job.py '{"deployment": "churn", "source": "x.parquet", "into": "y.parquet", "key": "id"}'

The JSON holds ``nbdeploy.score``'s arguments. Prints one JSON line: the summary's figures and the peak resident
memory of this process (VmHWM) before and after the job.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def peak_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux keeps that across fork and exec, so a
    child started by a big parent (pytest holding a million rows) would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def main() -> None:
    args = json.loads(sys.argv[1])
    # everything a job loads (pandas, pyarrow, SQLAlchemy, httpx), so "before" is the baseline of a scoring process
    import pyarrow.parquet
    import sqlalchemy

    import nbdeploy
    import nbdeploy.batch.job

    assert pyarrow.parquet and sqlalchemy and nbdeploy.batch.job

    before = peak_mb()
    result = nbdeploy.score(args.pop("deployment"), args.pop("source", None), **args)
    figures = result.to_frame().iloc[0].to_dict()
    print(json.dumps({**figures, "peak_mb_before": before, "peak_mb": peak_mb()}, default=str), flush=True)


if __name__ == "__main__":
    main()
