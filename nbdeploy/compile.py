"""Compile a fitted model for serving (issue #20), keeping the compiled path only when it answers as the model does.

One-row ``predict`` through scikit-learn costs milliseconds, nearly all of it overhead; the compiled graph answers
in microseconds. ``compile_model`` builds the graph (``compile_graphs``), then checks it on the sample plus a few
thousand generated rows: jittered resamples of the sample, and, for trees that read the input columns, rows on and
one float64 / float32 step either side of split thresholds (where float32 arithmetic flips a class). Classes must
be equal, scores within ``runtime.compiled.TOLERANCE``. It also keeps the compiled path only when it is faster for
one row. Otherwise the Python model serves and the record says why; nothing from a converter escapes as an error.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .runtime import frames
from .runtime.compiled import COMPILED_DIR, FORMAT, MANIFEST, MODEL, SAMPLE, TABLES, TOLERANCE, CompiledModel, recheck
from .runtime.model import methods_of
from .runtime.schema import arrays_to_model_input

SAMPLE_ROWS = 5000  # of the sample, checked as they are
GENERATED_ROWS = 2000  # jittered resamples
SPLIT_PAIRS = 300  # (column, threshold) pairs that get rows on and beside the threshold
RECHECK_ROWS = 256  # stored for the service's check at load
LARGE_ROWS = 10_000
#: One-row timing: up to this many calls or this long per path (at least ``MIN_CALLS``); a deploy waits for it.
TIMED_CALLS, TIMING_BUDGET_S, MIN_CALLS = 200, 0.2, 20


def _record() -> dict[str, Any]:
    return {
        "path": "python",
        "backend": None,
        "reason": None,
        "parity": None,
        "one_row_us": None,
        "frame_ms": None,
        "large_frame": "python",
        "compiled_faster_up_to_rows": None,
        "files": [],
        "manifest_sha256": None,
    }


def compile_model(obj: Any, sample: Any, schema: dict[str, Any], kind: str, out_dir: Path, *, seed: int = 0) -> dict:
    """Compile ``obj`` into ``out_dir/compiled/`` when it predicts as ``obj`` does and sooner; return the record.

    The record is JSON-able: ``path`` ("onnx" or "python"), ``backend``, ``reason`` (why Python serves; None when
    compiled), ``parity`` (rows, sample_rows, generated_rows, classes_equal, max_abs_diff, max_rel_diff, rtol, atol,
    methods), ``one_row_us`` (python, compiled, ratio), ``frame_ms`` (both paths at 1000 and 10k rows),
    ``large_frame`` (the faster path at 10k rows), ``files`` (relative to ``out_dir``) and ``manifest_sha256``
    (of compiled.json: keep it with the artifact's sha256 and give it to ``load_compiled``). ``kind`` is the
    capture's: "estimator" or "function" (never compiled). Nothing a converter raises escapes: it becomes the reason.
    """
    return _compile(obj, sample, schema, kind, Path(out_dir), seed=seed)


def _compile(
    obj: Any,
    sample: Any,
    schema: dict[str, Any],
    kind: str,
    out_dir: Path,
    *,
    seed: int = 0,
    precision: str = "float64",
    require_faster: bool = True,
) -> dict[str, Any]:
    """``compile_model`` with the knobs tests need: ``precision="float32"`` builds what float32 operators would."""
    record = _record()
    shutil.rmtree(out_dir / COMPILED_DIR, ignore_errors=True)  # never leave an older compiled model to be served
    if kind != "estimator":
        return record | {"reason": "a plain function is served as Python: only fitted estimators are compiled"}
    try:
        from . import compile_graphs

        plan = compile_graphs.plan(obj, schema, precision)
    except ImportError as exc:
        return record | {"reason": f"{exc.name or exc} is not installed (pip install onnxruntime skl2onnx): no compile"}
    except Exception as exc:
        refused = type(exc).__name__ == "Refusal"
        return record | {"reason": str(exc) if refused else f"compiling failed: {type(exc).__name__}: {exc}"[:500]}
    record["backend"] = plan.backend
    try:
        return _check_and_write(obj, sample, schema, plan, out_dir, seed, require_faster, record)
    except Exception as exc:  # a graph onnxruntime refuses, a head that fails: Python serves
        return record | {"reason": f"the compiled model failed: {type(exc).__name__}: {exc}"[:500]}


def _methods(obj: Any, head: dict[str, Any]) -> dict[str, Callable[[Any], Any]]:
    """The Python model's methods the compiled head also answers."""
    has = methods_of(obj, "estimator")
    fns: dict[str, Callable[[Any], Any]] = {"predict": obj.predict}
    if "predict_proba" in has and head.get("proba"):
        fns["predict_proba"] = obj.predict_proba
    if "decision_function" in has and head.get("decision"):
        fns["decision_function"] = obj.decision_function
    return fns


def _check_and_write(
    obj: Any,
    sample: Any,
    schema: dict[str, Any],
    plan: Any,
    out_dir: Path,
    seed: int,
    require_faster: bool,
    record: dict[str, Any],
) -> dict[str, Any]:
    python_fns = _methods(obj, plan.head)
    dtype = plan.head["dtype"]
    tables = io.BytesIO()
    np.savez(tables, allow_pickle=False, **plan.tables)
    base = _as_input(_head_rows(sample, SAMPLE_ROWS), schema)
    try:  # as the service would build them; and the Python model must take them
        generated = _as_input(held_out(base, schema, plan.splits, seed), schema)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for fn in python_fns.values():
                fn(generated)
    except Exception:  # e.g. a combination of values the model refuses: check the sample alone
        generated = _take(base, np.arange(0))
    data, n_generated = _concat(base, generated), len(generated)
    blobs = {
        MODEL: plan.onnx.SerializeToString(),
        TABLES: tables.getvalue(),
        SAMPLE: _stored(_recheck_rows(base, generated), schema),
    }
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "path": "onnx",
        "backend": plan.backend,
        "methods": list(python_fns),
        "classes": _jsonable(plan.tables.get("classes")),
        "inputs": plan.inputs,
        "head": plan.head,
        "tolerance": TOLERANCE[dtype],
        "onnxruntime": _onnxruntime_version(),
        "files": {name: hashlib.sha256(b).hexdigest() for name, b in blobs.items()},
    }
    compiled = CompiledModel(manifest, blobs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parity = recheck(compiled, python_fns, data)
    parity |= {"sample_rows": len(base), "generated_rows": n_generated}
    record["parity"] = {k: v for k, v in parity.items() if k not in ("ok", "reason", "row")}
    if not parity["ok"]:
        why = f"the compiled model does not answer as the Python model: {parity['reason']}"
        return record | {"reason": why + _which(parity.get("row"), len(base), n_generated)}
    timing = _timing(obj.predict, compiled.predict, data, seed)
    record |= timing
    if require_faster and timing["one_row_us"]["compiled"] >= timing["one_row_us"]["python"]:
        us = timing["one_row_us"]
        return record | {
            "reason": f"the compiled model is not faster for one row ({us['compiled']:.0f} µs vs {us['python']:.0f} µs)"
        }
    manifest |= {"parity": record["parity"]} | timing
    digest = _write(out_dir, blobs, manifest)
    files = [f"{COMPILED_DIR}/{name}" for name in (MANIFEST, *blobs)]
    return record | {"path": "onnx", "files": files, "manifest_sha256": digest}


def _which(row: int | None, n_sample: int, n_generated: int) -> str:
    if row is None:
        return ""
    if row < n_sample:
        return ", a row of the sample"
    if row < n_sample + min(n_generated, GENERATED_ROWS):
        return ", a generated row (resampled and jittered)"
    return ", a generated row on or beside a split threshold"


def _write(out_dir: Path, blobs: dict[str, bytes], manifest: dict[str, Any]) -> str:
    """Write the folder next to its place, then move it there; return compiled.json's sha256."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".compiled-", dir=out_dir))
    try:
        for name, data in blobs.items():
            (tmp / name).write_bytes(data)
        raw = json.dumps(manifest, indent=1).encode()
        (tmp / MANIFEST).write_bytes(raw)
        tmp.chmod(0o755)
        shutil.rmtree(out_dir / COMPILED_DIR, ignore_errors=True)
        tmp.rename(out_dir / COMPILED_DIR)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return hashlib.sha256(raw).hexdigest()


def _onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def _jsonable(classes: np.ndarray | None) -> list[Any] | None:
    return None if classes is None else classes.tolist()


# --- rows -----------------------------------------------------------------------------------------------------------


def _head_rows(sample: Any, n: int) -> Any:
    if isinstance(sample, np.ndarray):
        return sample[:n]
    if isinstance(sample, pd.DataFrame):
        return sample.iloc[:n]
    return pd.DataFrame.from_records(sample[:n]) if isinstance(sample, list) else sample[:n]


def _encoded(data: Any) -> bytes | None:
    frame = pd.DataFrame(data, columns=[str(i) for i in range(data.shape[1])]) if isinstance(data, np.ndarray) else data
    return frames.encode(frame)


def _as_input(data: Any, schema: dict[str, Any]) -> Any:
    """``data`` as the service hands it to the model: through the .npz route and the schema's checks."""
    body = _encoded(data)
    if body is None:
        return data
    names, arrays = frames.decode(body)
    return arrays_to_model_input(names, arrays, schema)


def _stored(data: Any, schema: dict[str, Any]) -> bytes:
    """The rows as the .npz body ``CompiledModel.sample`` decodes with the schema."""
    body = _encoded(data)
    if body is None:
        raise ValueError("the recheck rows cannot be stored as .npz")
    return body


def _take(data: Any, idx: np.ndarray) -> Any:
    return data[idx] if isinstance(data, np.ndarray) else data.iloc[idx].reset_index(drop=True)


def _concat(a: Any, b: Any) -> Any:
    if len(b) == 0:
        return a
    if isinstance(a, np.ndarray):
        return np.concatenate([a, b])
    return pd.concat([a, b], ignore_index=True)


def _recheck_rows(base: Any, generated: Any) -> Any:
    """Half from the sample, half from the generated rows (the threshold rows come last there: keep them)."""
    half = RECHECK_ROWS // 2
    rows = _take(base, np.arange(min(half, len(base))))
    if len(generated):
        rows = _concat(rows, _take(generated, np.arange(max(0, len(generated) - half), len(generated))))
    return rows


def _columns(data: Any, schema: dict[str, Any]) -> list[tuple[np.ndarray, str, Any]]:
    """Each column as (values, kind, dtype)."""
    if isinstance(data, np.ndarray):
        kind = "integer" if data.dtype.kind in "iu" else "bool" if data.dtype.kind == "b" else "float"
        return [(data[:, j], kind, data.dtype) for j in range(data.shape[1])]
    return [
        (data.iloc[:, j].to_numpy(), spec["kind"], data.iloc[:, j].dtype) for j, spec in enumerate(schema["columns"])
    ]


def _rebuild(data: Any, columns: list[np.ndarray]) -> Any:
    """A frame (or array) like ``data`` (same dtypes) holding ``columns``."""
    if isinstance(data, np.ndarray):
        return np.column_stack(columns).astype(data.dtype)
    out = {}
    for j, values in enumerate(columns):
        dtype = data.iloc[:, j].dtype
        out[j] = pd.Series(values, dtype=object if dtype == np.dtype(object) else None).astype(dtype)
    frame = pd.DataFrame(out)
    frame.columns = data.columns
    return frame


def _floats(values: np.ndarray) -> np.ndarray:
    return np.array(pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan))


def _jitter(values: np.ndarray, kind: str, dtype: Any, idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Resampled values of one column, moved within the column's observed range (same kind, NaN where it had)."""
    picked = values[idx]
    m = len(idx)
    if kind in ("integer", "float"):
        x = _floats(values)
        seen = x[~np.isnan(x)]
        if seen.size == 0:
            return picked
        lo, hi = float(seen.min()), float(seen.max())
        new = _floats(picked)
        if kind == "float":
            moved = new + rng.uniform(-0.05, 0.05, m) * (hi - lo)
            fresh = rng.uniform(lo, hi, m)
            new = np.clip(np.where(rng.random(m) < 0.5, moved, fresh), lo, hi)
        else:
            new = np.where(rng.random(m) < 0.3, rng.integers(int(lo), int(hi) + 1, m).astype(np.float64), new)
        if np.isnan(x).any():
            new[rng.random(m) < max(0.05, float(np.isnan(x).mean()))] = np.nan
        if np.dtype(getattr(dtype, "numpy_dtype", dtype)).kind in "iu" and not np.isnan(new).any():
            return new.astype(np.int64)
        return new
    # bool, string, category: values seen in the sample, missing ones included
    return values[rng.integers(0, len(values), m)]


def _beside(t: float, kind: str, dtype: Any) -> list[float]:
    """Values on and one float64 / float32 step either side of threshold ``t``, and around float32(t)'s midpoints."""
    if kind == "integer":
        return [float(np.floor(t)), float(np.ceil(t)), float(np.floor(t)) - 1, float(np.ceil(t)) + 1]
    from .compile_graphs import below_float32

    f = np.float32(t)
    w = float(below_float32(np.array([t]))[0])
    around = [t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf), w, np.nextafter(w, np.inf)]
    around += [float(f), float(np.nextafter(f, np.float32(-np.inf))), float(np.nextafter(f, np.float32(np.inf)))]
    if np.dtype(getattr(dtype, "numpy_dtype", dtype)) == np.float32:
        around = [float(np.float32(v)) for v in around]
    return sorted({float(v) for v in around if np.isfinite(v)})


def held_out(data: Any, schema: dict[str, Any], splits: np.ndarray, seed: int = 0) -> Any:
    """Rows the model never saw, seeded: jittered resamples of ``data``, then rows on and beside the trees'
    thresholds (``splits``: input column, threshold) -- last, so the service's recheck can keep them."""
    rng = np.random.default_rng(seed)
    cols = _columns(data, schema)
    n = len(data)
    idx = rng.integers(0, n, GENERATED_ROWS)
    jittered = _rebuild(data, [_jitter(v, k, d, idx, rng) for v, k, d in cols])
    numbers = np.array([k in ("integer", "float") for _, k, _ in cols])
    pairs = np.unique(np.asarray(splits, dtype=np.float64).reshape(-1, 2), axis=0)
    pairs = pairs[(pairs[:, 0] < len(cols)) & np.isfinite(pairs[:, 1])]
    pairs = pairs[numbers[pairs[:, 0].astype(np.intp)]]
    if len(pairs) == 0:
        return jittered
    picked = pairs[np.sort(rng.choice(len(pairs), min(SPLIT_PAIRS, len(pairs)), replace=False))]
    chosen = [(int(j), float(t)) for j, t in picked]
    plan = [(j, v) for j, t in chosen for v in _beside(t, cols[j][1], cols[j][2])]
    rows = rng.integers(0, n, len(plan))
    columns = [_floats(v[rows]) if k in ("integer", "float") else v[rows] for v, k, _ in cols]
    for r, (j, v) in enumerate(plan):
        columns[j][r] = v
    for j, (_, kind, dtype) in enumerate(cols):
        if kind == "integer" and np.dtype(getattr(dtype, "numpy_dtype", dtype)).kind in "iu":
            col = columns[j]
            info = np.iinfo(np.dtype(getattr(dtype, "numpy_dtype", dtype)))
            col[~np.isnan(col)] = np.clip(col[~np.isnan(col)], info.min, info.max)
            columns[j] = col if np.isnan(col).any() else col.astype(np.int64)
    return _concat(jittered, _rebuild(data, columns))


# --- speed ------------------------------------------------------------------------------------------------------------


def _median_us(fn: Callable[[Any], Any], arg: Any) -> float:
    fn(arg)  # warm
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < TIMED_CALLS and (len(times) < MIN_CALLS or time.perf_counter() - start < TIMING_BUDGET_S):
        t0 = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def _best_s(fn: Callable[[Any], Any], arg: Any, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - t0)
    return best


def _timing(python: Callable[[Any], Any], compiled: Callable[[Any], Any], data: Any, seed: int) -> dict[str, Any]:
    """Median one-row latency of each path (in process, the model input as the service builds it), and each path's
    time for larger frames: onnxruntime walks trees row by row, and beyond some thousands of rows scikit-learn's
    tree-by-tree walk (or XGBoost's threads) can win, so the service may pick the path by frame size."""
    one = _take(data, np.arange(1))
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        py_us, c_us = _median_us(python, one), _median_us(compiled, one)
        frames_ms = {}
        for rows in sorted({min(1000, LARGE_ROWS), LARGE_ROWS}):
            frame = _take(data, rng.integers(0, len(data), rows))
            frames_ms[str(rows)] = {
                "python": round(_best_s(python, frame, repeat=1) * 1e3, 2),
                "compiled": round(_best_s(compiled, frame, repeat=1) * 1e3, 2),
            }
    faster = [int(rows) for rows, ms in frames_ms.items() if ms["compiled"] < ms["python"]]
    large = frames_ms[str(LARGE_ROWS)]
    return {
        "one_row_us": {"python": round(py_us, 1), "compiled": round(c_us, 1), "ratio": round(c_us / py_us, 4)},
        "frame_ms": frames_ms,
        "large_frame": "compiled" if large["compiled"] < large["python"] else "python",
        "compiled_faster_up_to_rows": max(faster, default=1),
    }
