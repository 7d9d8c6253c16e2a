"""The compiled inference path inside the service: the model's costly part as an ONNX graph run by onnxruntime,
then the model's own last steps in numpy, so a one-row answer costs tens of microseconds instead of milliseconds
and is the answer the Python model gives.

A ``compiled/`` folder beside ``model.pkl`` holds ``compiled.json`` (the manifest: format, path, backend, methods,
classes, how to feed the graph, the head's rule, tolerance, parity figures, and every other file's sha256),
``model.onnx``, ``tables.npz`` (leaf values, initial scores, class labels) and ``sample.npz`` (rows for ``recheck``).

The graph returns each tree's leaf (tree ensembles) or the raw scores (linear models). The head adds the leaves'
values in the order the library adds them (a sequential cumulative sum), which gives tree ensembles' scores bit
for bit, then applies the library's rule: argmax, margin ``>= 0`` or ``> 0``, expit, softmax. ``recheck`` compares
both paths on the stored rows with the rules the deploy used: classes exactly, scores within the tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import frames
from .schema import arrays_to_model_input

COMPILED_DIR = "compiled"
MANIFEST = "compiled.json"
FORMAT = "nbdeploy-compiled/1"
MODEL, TABLES, SAMPLE = "model.onnx", "tables.npz", "sample.npz"
#: |compiled - python| <= atol + rtol * |python| for scores; float32 heads are XGBoost's, which computes in float32.
TOLERANCE = {"float64": {"rtol": 1e-9, "atol": 1e-12}, "float32": {"rtol": 1e-6, "atol": 1e-6}}
#: rows x trees x outputs up to which the head sums leaves with one cumsum; beyond, tree by tree (same order).
_CUMSUM_CELLS = 1 << 16
_BLOCK_ROWS = 4096


class CompiledError(RuntimeError):
    """The compiled folder cannot be used: a file differs from its manifest, or the manifest from the trusted hash."""


def session_options() -> Any:
    """onnxruntime tuned for one-row latency: one thread, sequential, no thread pool to wake."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _read(root: Path, expected_sha256: str | None) -> tuple[dict[str, Any], dict[str, bytes]]:
    raw = (root / MANIFEST).read_bytes()
    if expected_sha256 and not hmac.compare_digest(hashlib.sha256(raw).hexdigest(), expected_sha256.lower()):
        raise CompiledError(f"{root / MANIFEST} is not the manifest written at deploy (sha256 differs)")
    manifest = json.loads(raw)
    if manifest.get("format") != FORMAT:
        raise CompiledError(f"{root / MANIFEST} has format {manifest.get('format')!r}, expected {FORMAT}")
    blobs = {}
    for name, digest in manifest["files"].items():
        if Path(name).name != name:
            raise CompiledError(f"the compiled manifest lists {name!r}, which is not a file in its folder")
        data = (root / name).read_bytes()
        if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), digest):
            raise CompiledError(f"{root / name} differs from the compiled manifest (sha256)")
        blobs[name] = data
    return manifest, blobs


def load_compiled(artifact_dir: Path, expected_sha256: str | None = None) -> CompiledModel | None:
    """The compiled model beside the artifact, or None when the deploy wrote none (the Python model serves).

    ``expected_sha256`` (of compiled.json, kept outside the folder) anchors the manifest; the manifest anchors
    every other file. Raises CompiledError when a file differs.
    """
    root = Path(artifact_dir) / COMPILED_DIR
    if not (root / MANIFEST).is_file():
        return None
    manifest, blobs = _read(root, expected_sha256)
    return CompiledModel(manifest, blobs)


def _exp(x: np.ndarray) -> np.ndarray:
    """exp; in float32 rounded from float64, as C's expf (XGBoost's) rounds, which numpy's float32 exp may not."""
    with np.errstate(over="ignore"):
        return np.exp(x.astype(np.float64)).astype(np.float32) if x.dtype == np.float32 else np.exp(x)


def expit(x: np.ndarray) -> np.ndarray:
    one = x.dtype.type(1)
    return one / (one + _exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    """As scikit-learn's: shift by the row's max, exponentiate, divide by the row's sum."""
    e = _exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _nan_for_na(values: np.ndarray, dtype: Any) -> np.ndarray:
    """Numbers that may hold pd.NA (object arrays of nullable columns) as floats with NaN."""
    if values.dtype != object:
        return values.astype(dtype)
    return np.where(pd.isna(values), np.nan, values).astype(dtype)


class CompiledModel:
    """A compiled model: ``fns[method](frame)`` answers as the Python model's method does."""

    def __init__(self, manifest: dict[str, Any], blobs: dict[str, bytes]) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise CompiledError("onnxruntime is not installed, so the compiled model cannot load") from None

        self.manifest = manifest
        self.path: str = manifest["path"]
        self.methods: list[str] = list(manifest["methods"])
        self.tolerance: dict[str, float] = manifest["tolerance"]
        self.large_frame: str = manifest.get("large_frame", "compiled")
        #: onnxruntime here, and where parity was measured (a difference is allowed: ``recheck`` decides)
        self.onnxruntime = (onnxruntime.__version__, manifest.get("onnxruntime"))
        head = self._head = manifest["head"]
        tables = np.load(io.BytesIO(blobs[TABLES]), allow_pickle=False)
        self._values = tables.get("values")
        self._init = tables.get("init")
        outputs = tables.get("outputs")  # boosting: the output each tree adds to
        self._by_output = None if outputs is None else [np.flatnonzero(outputs == k) for k in range(len(self._init))]
        self._outputs = outputs
        classes = tables.get("classes")
        if classes is not None and head.get("classes_dtype") == "object":
            classes = classes.astype(object)
        self.classes: np.ndarray | None = classes
        self._sample = blobs.get(SAMPLE)
        self._session = onnxruntime.InferenceSession(
            blobs[MODEL], session_options(), providers=["CPUExecutionProvider"]
        )
        self._output = [self._session.get_outputs()[0].name]
        self._inputs = manifest["inputs"]
        self._dtype = np.dtype(self._inputs.get("dtype", "float64"))
        every: dict[str, Callable[[Any], np.ndarray]] = {
            "predict": self.predict,
            "predict_proba": self.predict_proba,
            "decision_function": self.decision_function,
        }
        self.fns: dict[str, Callable[[Any], np.ndarray]] = {m: every[m] for m in self.methods}

    # --- from the model input to the graph's output -------------------------------------------------------------

    def _matrix(self, frame: Any) -> np.ndarray:
        if isinstance(frame, np.ndarray):
            return np.ascontiguousarray(frame, dtype=self._dtype)
        if self._inputs.get("masked"):  # nullable dtypes: pd.NA becomes NaN, as scikit-learn reads it
            return np.ascontiguousarray(_nan_for_na(frame.to_numpy(), self._dtype))
        return np.ascontiguousarray(frame.to_numpy(dtype=self._dtype))

    def feeds(self, frame: Any) -> dict[str, np.ndarray]:
        """The graph's inputs from what ``Predictor.frame`` returns (a DataFrame or an array)."""
        if self._inputs["mode"] == "matrix":
            return {self._inputs["name"]: self._matrix(frame)}
        out = {}
        values = frame.to_numpy()  # one object array: 10x faster for one row than taking columns one by one
        for feed in self._inputs["feeds"]:
            j = feed["column"]
            if feed["type"] == "string":
                out[feed["name"]] = values[:, j : j + 1].astype(object)
            elif feed.get("masked"):  # a nullable dtype: pd.NA becomes NaN, as scikit-learn reads it
                out[feed["name"]] = _nan_for_na(values[:, j : j + 1], self._dtype)
            else:
                out[feed["name"]] = values[:, j : j + 1].astype(self._dtype)
        return out

    def raw(self, frame: Any) -> np.ndarray:
        """Raw scores (n, outputs): the leaves' values summed, or the linear scores."""
        out = self._session.run(self._output, self.feeds(frame))[0]
        if self._head["stage"] != "trees":
            return out
        return self._sum(out)

    def _sum(self, leaves: np.ndarray) -> np.ndarray:
        """init + each tree's leaf value, added tree after tree as the library adds them (a cumulative sum is
        sequential: the same additions in the same order), then averaged (forests)."""
        assert self._values is not None and self._init is not None
        values, init = self._values, self._init
        idx = leaves.astype(np.intp)
        n, trees = idx.shape
        acc = np.empty((n, len(init)), dtype=values.dtype)
        acc[:] = init
        small = n * trees * len(init) <= _CUMSUM_CELLS
        if self._by_output is None:  # every tree adds a row of values (forests)
            if small:
                parts = np.concatenate([acc[:, np.newaxis], values[idx]], axis=1)
                acc = np.cumsum(parts, axis=1)[:, -1]
            else:
                for t in range(trees):
                    acc += values[idx[:, t]]
        elif small:  # each tree adds to one output (boosting)
            contrib = values[idx]
            for k, cols in enumerate(self._by_output):
                acc[:, k] = np.cumsum(np.concatenate([acc[:, k : k + 1], contrib[:, cols]], axis=1), axis=1)[:, -1]
        else:  # in blocks of rows whose leaf numbers, transposed, stay in cache
            assert self._outputs is not None
            outputs = self._outputs.tolist()
            for start in range(0, n, _BLOCK_ROWS):
                block, by_tree = (
                    acc[start : start + _BLOCK_ROWS],
                    np.ascontiguousarray(idx[start : start + _BLOCK_ROWS].T),
                )
                for t, k in enumerate(outputs):
                    block[:, k] += values[by_tree[t]]
        average = self._head.get("average")
        if average:
            acc /= average
        return acc

    # --- the library's last steps ---------------------------------------------------------------------------------

    def _proba(self, raw: np.ndarray) -> np.ndarray:
        kind = self._head.get("proba")
        if kind == "identity":
            return raw
        if kind == "expit":
            p = expit(raw[:, 0])
            return np.stack([1 - p, p], axis=1)
        if kind == "softmax":
            return softmax(raw)
        if kind == "ovr":  # scikit-learn's _predict_proba_lr for one-vs-rest linear models
            p = expit(raw)
            total = p.sum(axis=1)
            zero = total == 0
            p[zero, :] = 1
            total[zero] = p.shape[1]
            return p / total[:, np.newaxis]
        raise ValueError(f"this compiled model has no probabilities ({kind!r})")

    def predict(self, frame: Any) -> np.ndarray:
        raw = self.raw(frame)
        rule = self._head["predict"]
        if rule == "value":
            if self._head.get("link") == "exp":
                raw = np.exp(raw)
            return raw[:, 0] if self._head.get("squeeze") else raw
        assert self.classes is not None
        if rule == "argmax_proba":
            idx = np.argmax(self._proba(raw), axis=1)
        elif raw.shape[1] > 1:
            idx = np.argmax(raw, axis=1)
        elif rule == "margin_ge0":
            idx = (raw[:, 0] >= 0).astype(np.intp)
        else:
            idx = (raw[:, 0] > 0).astype(np.intp)
        return self.classes.take(idx, axis=0)

    def predict_proba(self, frame: Any) -> np.ndarray:
        return self._proba(self.raw(frame))

    def decision_function(self, frame: Any) -> np.ndarray:
        raw = self.raw(frame)
        return raw[:, 0] if raw.shape[1] == 1 else raw

    def sample(self, schema: dict[str, Any]) -> Any:
        """The rows stored for ``recheck``, as ``Predictor.frame`` would hand them to the model."""
        if self._sample is None:
            raise CompiledError("this compiled model stores no sample to recheck")
        names, arrays = frames.decode(self._sample)
        return arrays_to_model_input(names, arrays, schema)


# --- parity -------------------------------------------------------------------------------------------------------


def compare(method: str, want: Any, got: Any, tolerance: dict[str, float], exact: bool) -> dict[str, Any]:
    """How ``got`` (compiled) differs from ``want`` (Python): labels must be equal (values and dtype), scores
    within ``atol + rtol * |want|`` (NaN where NaN)."""
    want, got = np.asarray(want), np.asarray(got)
    out: dict[str, Any] = {"method": method, "rows": len(want), "max_abs_diff": 0.0, "max_rel_diff": 0.0}
    if want.shape != got.shape:
        return out | {"ok": False, "why": f"{method} gives shape {got.shape} where Python gives {want.shape}"}
    if exact:
        differ = np.asarray(want != got).reshape(len(want), -1).any(axis=1) if want.size else np.zeros(0, bool)
        ok = want.dtype == got.dtype and not differ.any()
        out |= {"ok": bool(ok), "classes_equal": bool(not differ.any()), "rows_differ": int(differ.sum())}
        if differ.any():
            row = int(np.flatnonzero(differ)[0])
            out |= {"row": row, "why": f"{method} gives {_shown(got[row])} where Python gives {_shown(want[row])}"}
        elif not ok:
            out["why"] = f"{method} gives labels of dtype {got.dtype} where Python gives {want.dtype}"
        return out
    w, g = want.astype(np.float64), got.astype(np.float64)
    diff = np.abs(g - w)
    both_nan = np.isnan(w) & np.isnan(g)
    diff = np.where(both_nan, 0.0, diff)
    with np.errstate(divide="ignore", invalid="ignore"):  # relative to values above atol (a zero has none)
        rel = np.where(np.abs(w) > tolerance["atol"], diff / np.abs(w), 0.0)
    bad = ~(diff <= tolerance["atol"] + tolerance["rtol"] * np.abs(w))
    out |= {
        "ok": not bad.any(),
        "max_abs_diff": float(np.nanmax(diff)) if diff.size else 0.0,
        "max_rel_diff": float(np.nanmax(rel)) if rel.size else 0.0,
    }
    if bad.any():
        where = np.argwhere(bad)[0]
        out["row"] = int(where[0])
        out["why"] = (
            f"{method} differs by {diff[tuple(where)]:.3g} "
            f"(tolerance {tolerance['atol']:g} + {tolerance['rtol']:g}×|value|)"
        )
    return out


def _shown(value: Any) -> str:
    return repr(value.tolist() if isinstance(value, np.ndarray | np.generic) else value)


def recheck(compiled: CompiledModel, python_fns: dict[str, Callable[[Any], Any]], frame: Any) -> dict[str, Any]:
    """Run both paths on ``frame`` (``compiled.sample(schema)`` at load) for every compiled method; ``ok`` is
    False, with ``reason`` naming the method and row, when any answer differs beyond the manifest's rules."""
    tolerance = compiled.tolerance
    figures: list[dict[str, Any]] = []
    for method in compiled.methods:
        if method not in python_fns:
            figures.append({"method": method, "ok": False, "why": f"the Python model has no {method}"})
            continue
        exact = method == "predict" and compiled.classes is not None
        try:
            got = compiled.fns[method](frame)
        except Exception as exc:  # a compiled path that fails is a failed check, not a crash of the service
            figures.append({"method": method, "ok": False, "why": f"compiled {method} failed: {exc!r}"[:300]})
            continue
        figures.append(compare(method, python_fns[method](frame), got, tolerance, exact))
    bad = next((f for f in figures if not f["ok"]), None)
    return {
        "ok": bad is None,
        "reason": None if bad is None else bad["why"] + (f" (row {bad['row']})" if "row" in bad else ""),
        "row": None if bad is None else bad.get("row"),
        "rows": len(frame),
        "classes_equal": all(f.get("classes_equal", True) for f in figures),
        "max_abs_diff": max((float(f.get("max_abs_diff", 0.0)) for f in figures), default=0.0),
        "max_rel_diff": max((float(f.get("max_rel_diff", 0.0)) for f in figures), default=0.0),
        "rtol": tolerance["rtol"],
        "atol": tolerance["atol"],
        "methods": [f["method"] for f in figures],
    }
