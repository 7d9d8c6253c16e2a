"""Write an edge bundle: model.onnx, schema.json, manifest.json (lineage, sha256s, parity), server.py, page.html.

The bundle is checked before it is handed over: its own server code predicts the sample and must
agree with the session (classes exactly; probabilities and regression values within a tolerance,
since ONNX's tree and linear operators compute in float32 where scikit-learn uses float64).

The manifest lists every file's sha256, and the manifest's own sha256 (``EdgeBundle.manifest_sha256``) is
the trust anchor: kept outside the bundle, given to its server at start, and to ``verify_bundle``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..capture.schema import as_frame, infer_schema
from ..errors import EdgeExportError
from ..runtime import page as try_page
from .convert import TARGET_OPSET, to_onnx
from .server import EdgeModel, InputError, IntegrityError, read_bundle, sha256_file

FORMAT = "nbdeploy-edge/1"
#: |onnx - session| <= ATOL + RTOL * |session| for probabilities and regression values (float32 arithmetic).
RTOL = 1e-4
ATOL = 1e-5
#: Quantised weights change scores by far more than float32 rounding does.
QUANTIZED_RTOL, QUANTIZED_ATOL = 5e-2, 5e-2
#: ... and may move a few rows across a decision boundary: at least this share must keep the session's class.
QUANTIZED_AGREEMENT = 0.99
PARITY_ROWS = 5000
_SERVER = Path(__file__).resolve().parent / "server.py"
#: The try-it page the edge server answers at ``/`` (the service's, rendered at export: the server imports no nbdeploy).
PAGE_FILE = "page.html"


@dataclass(frozen=True)
class EdgeBundle:
    """What ``export_edge`` wrote, and how closely it predicts as the session does."""

    path: Path
    size_bytes: int
    rows_checked: int
    max_difference: float
    quantized: bool
    manifest: dict[str, Any] = field(repr=False)
    #: sha256 of manifest.json, which lists every other file's: keep it outside the bundle, pass it to the server.
    manifest_sha256: str = ""

    @property
    def instructions(self) -> str:
        """How to serve the bundle elsewhere, with the hash its server needs to start."""
        return (
            f"Serve it where onnxruntime and numpy are installed (pip install -r {self.path}/requirements.txt):\n"
            f"  NBDEPLOY_MANIFEST_SHA256={self.manifest_sha256} NBDEPLOY_KEYS_FILE=keys.json \\\n"
            f"    python -I {self.path}/server.py --host 0.0.0.0 --port 8080\n"
            "The server refuses to start without that sha256 of manifest.json, or when the bundle differs from it.\n"
            "Keep the hash outside the bundle (deploy config, secret store); check a copy of the bundle with\n"
            f"  nbdeploy.edge.verify_bundle(path, '{self.manifest_sha256}')"
        )


class BundleIntegrityError(EdgeExportError):
    """An edge bundle differs from the one exported: its manifest, or a file the manifest lists."""


def verify_bundle(path: str | Path, manifest_sha256: str) -> dict[str, Any]:
    """Check a copied or imported bundle against the manifest sha256 kept from its export; return the manifest.

    Raises ``BundleIntegrityError`` naming the file that differs, or a file the manifest does not list.
    """
    root = Path(path)
    if not manifest_sha256:
        raise BundleIntegrityError("no manifest sha256 to check against", hint="pass the one export_edge returned")
    hint = "use the bundle exactly as exported (export it again), or check where this copy came from"
    try:
        manifest, _ = read_bundle(root, manifest_sha256)
    except IntegrityError as exc:
        raise BundleIntegrityError(f"{root}: {exc}", hint=hint) from None
    listed = {*manifest["files"], "manifest.json"}
    extra = sorted(p.name for p in root.iterdir() if p.name not in listed)
    if extra:
        raise BundleIntegrityError(f"{root}: {extra[0]} is in the bundle but not in its manifest", hint=hint)
    return manifest


def _last_step(obj: Any) -> str:
    steps = getattr(obj, "steps", None)
    return f"step '{steps[-1][0]}' ({type(steps[-1][1]).__qualname__})" if steps else type(obj).__qualname__


def _parity(obj: Any, model: EdgeModel, data: Any, rtol: float, atol: float, agreement: float) -> dict[str, Any]:
    """Compare the bundle with the session on ``data``; raise EdgeExportError naming the step if they differ."""
    from ..wire import payload

    try:
        labels, proba = model.run(model.feeds(payload(data)["inputs"]))
    except InputError as exc:
        raise EdgeExportError(f"the sample does not fit the bundle's inputs: {exc}") from exc
    expected = np.asarray(obj.predict(data))
    where = _last_step(obj)
    n = len(expected)
    agreed: float | None = None
    if hasattr(obj, "classes_"):  # a classifier: classes must match
        differ = np.asarray(labels).astype(str) != expected.astype(str)
        agreed = 1.0 - float(differ.mean())
        if agreed < agreement:
            bad = int(np.flatnonzero(differ)[0])
            raise EdgeExportError(
                f"the ONNX model of {where} predicts class {labels[bad].item()!r} where the session predicts "
                f"{expected[bad].item()!r} (row {bad}; {int(differ.sum())} of {n} rows differ)",
                hint="float32 (or int8) arithmetic moved scores across a decision boundary, or the converter "
                "does not reproduce this model; use target='local' for it",
            )
        if proba is None or not hasattr(obj, "predict_proba"):
            return {"rows": n, "max_abs_difference": 0.0, "rtol": rtol, "atol": atol, "class_agreement": agreed}
        got, want = np.asarray(proba, dtype="float64"), np.asarray(obj.predict_proba(data), dtype="float64")
    else:
        got, want = np.asarray(labels, dtype="float64").reshape(expected.shape), expected.astype("float64")
    if got.shape != want.shape:
        raise EdgeExportError(f"the ONNX model of {where} gives shape {got.shape}, the session {want.shape}")
    diff = np.abs(got - want)
    worst = float(np.nanmax(diff)) if diff.size else 0.0
    if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        raise EdgeExportError(
            f"the ONNX model of {where} differs from the session by up to {worst:.3g} "
            f"(tolerance {atol:g} + {rtol:g}×|value|) on {n} rows",
            hint="ONNX tree and linear operators use float32; use target='local' if that precision is not enough",
        )
    out = {"rows": n, "max_abs_difference": worst, "rtol": rtol, "atol": atol}
    return out | ({"class_agreement": agreed} if agreed is not None else {})


_QUANTIZABLE = {"MatMul", "Gemm", "Conv", "Attention", "LSTM", "GRU"}


def _quantize(onx: Any, src: Path, dst: Path, where: str) -> None:
    """Dynamic int8 quantisation of the weight matrices; refused when the graph has none."""
    if not {node.op_type for node in onx.graph.node} & _QUANTIZABLE:
        raise EdgeExportError(
            f"nothing to quantise in {where}: int8 quantisation applies to weight matrices (MatMul, Gemm), "
            "and tree ensembles and linear ML operators have none",
            hint="export with quantize=False",
        )
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def _summary(data: Any, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The page's ranges, values and rows; without them (a sample it cannot summarise) it works from the schema."""
    try:
        return try_page.summarize(data, schema)
    except Exception:
        return None


def _write_manifest(root: Path, manifest: dict[str, Any]) -> str:
    """Write manifest.json with every other file's sha256; return its own (of the bytes written, not re-read)."""
    files = sorted(p.name for p in root.iterdir() if p.is_file() and p.name != "manifest.json")
    manifest["files"] = {name: sha256_file(root / name) for name in files}
    raw = json.dumps(manifest, indent=1, default=str).encode()
    (root / "manifest.json").write_bytes(raw)
    return hashlib.sha256(raw).hexdigest()


def _place(tmp: Path, path: Path) -> None:
    """Move the finished bundle to ``path``, replacing only an earlier edge bundle."""
    if path.exists():
        old = path / "manifest.json"
        bundle = path.is_dir() and old.exists() and json.loads(old.read_text()).get("format") == FORMAT
        empty = path.is_dir() and not any(path.iterdir())
        if not (bundle or empty):
            raise EdgeExportError(
                f"{path} exists and is not an edge bundle", hint="choose a new path, or remove it first"
            )
        shutil.rmtree(path)
    tmp.rename(path)


def export_edge(
    obj: Any,
    path: str | Path,
    sample: Any,
    *,
    quantize: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
    lineage: dict[str, Any] | None = None,
    schema: dict[str, Any] | None = None,
    name: str | None = None,
    version: int | None = None,
) -> EdgeBundle:
    """Convert ``obj`` to ONNX, write the bundle to ``path`` and check it predicts ``sample`` as the session does.

    Parity: classes must equal the session's; probabilities and regression values must be within
    ``atol + rtol * |value|`` (defaults ``ATOL``, ``RTOL``; looser with ``quantize=True``, which quantises
    weights to int8 dynamically). ``lineage`` and ``schema`` default to the session's and the sample's.
    ``name`` and ``version`` are what the bundle's page at ``/`` calls it (default: the bundle folder's name).
    """
    import onnxruntime

    from ..capture import lineage as lineage_mod

    schema = schema or infer_schema(sample)
    data = as_frame(sample)[:PARITY_ROWS]
    onx, mode = to_onnx(obj, schema)
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    rtol = rtol if rtol is not None else (QUANTIZED_RTOL if quantize else RTOL)
    atol = atol if atol is not None else (QUANTIZED_ATOL if quantize else ATOL)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    tmp.chmod(0o755)  # a bundle is for shipping: readable by the (other) user that serves it
    try:
        model_path = tmp / "model.onnx"
        model_path.write_bytes(onx.SerializeToString())
        float_size = model_path.stat().st_size
        if quantize:
            raw = tmp / "float.onnx"
            model_path.rename(raw)
            _quantize(onx, raw, model_path, _last_step(obj))
            raw.unlink()
        (tmp / "schema.json").write_text(json.dumps(schema, indent=1))
        shutil.copy2(_SERVER, tmp / "server.py")
        (tmp / "requirements.txt").write_text(f"onnxruntime=={onnxruntime.__version__}\nnumpy\n")
        lineage = lineage if lineage is not None else lineage_mod.record()
        page_meta = {
            "service_name": name or path.name,
            "version": version,
            "schema": schema,
            "lineage": lineage,
            "model": type(obj).__name__,
            "sample_summary": _summary(data, schema),
        }
        (tmp / PAGE_FILE).write_text(try_page.render(try_page.config(page_meta, [], server="edge")), encoding="utf-8")
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "model": "model.onnx",
            "estimator": f"{type(obj).__module__}.{type(obj).__qualname__}",
            "inputs": {"mode": mode, "names": [i.name for i in onx.graph.input]},
            "outputs": [o.name for o in onx.graph.output],
            "lineage": lineage,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "runtime": {"onnxruntime": onnxruntime.__version__, "opset": TARGET_OPSET, "precision": "float32"},
            "quantized": bool(quantize),
            "labels": "bool" if np.asarray(getattr(obj, "classes_", [])).dtype == bool else "as-is",
            "size_bytes": {"model.onnx": model_path.stat().st_size, "model.onnx (float32)": float_size},
            "page": {"file": PAGE_FILE, "headers": try_page.HEADERS},
        }
        _write_manifest(tmp, manifest)
        agreement = QUANTIZED_AGREEMENT if quantize else 1.0
        manifest["parity"] = _parity(obj, EdgeModel(tmp), data, rtol, atol, agreement)
        digest = _write_manifest(tmp, manifest)
        _place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    parity = manifest["parity"]
    return EdgeBundle(path, size, parity["rows"], parity["max_abs_difference"], bool(quantize), manifest, digest)
