"""The deploy-time sample and the session's predictions on it, kept beside a version's request log.

The baseline for drift (the monitor reads it) and the rows an edge export is checked on (the edge target reads
it); written once at deploy, redacted as the request log is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REFERENCE = "reference.pkl"


def save_reference(directory: Path, sample: pd.DataFrame | np.ndarray, predictions: Any) -> None:
    frame = sample if isinstance(sample, pd.DataFrame) else pd.DataFrame(sample)
    pd.to_pickle(  # type: ignore[attr-defined]  # in pandas, not in its stubs
        {"inputs": frame, "predictions": np.asarray(predictions)}, Path(directory) / REFERENCE
    )


def load_reference(directory: Path) -> tuple[pd.DataFrame, np.ndarray] | None:
    path = Path(directory) / REFERENCE
    if not path.exists():
        return None
    ref = pd.read_pickle(path)
    return ref["inputs"], ref["predictions"]
