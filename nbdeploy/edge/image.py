"""A container image of an edge bundle, on nbdeploy's local Python base image: the bundle plus onnxruntime."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import EdgeExportError

PORT = 8080
CONTAINERFILE = """\
FROM {base}
COPY bundle /bundle
RUN uv pip install --system --no-cache -r /bundle/requirements.txt \\
 && python3 -c "import onnxruntime, numpy" \\
 && ! python3 -c "import sklearn" 2>/dev/null
LABEL {labels}
USER 1034
EXPOSE {port}
ENTRYPOINT ["python3", "/bundle/server.py", "--host", "0.0.0.0", "--port", "{port}"]
"""


@dataclass(frozen=True)
class EdgeImage:
    tag: str
    image_id: str
    size_bytes: int
    engine: str


def build_image(
    bundle: str | Path, tag: str, *, engine: str | None = None, base_image: str | None = None, timeout_s: float = 900
) -> EdgeImage:
    """Build ``tag`` from the bundle at ``bundle`` on the base image (``nbdeploy base-image build`` makes it)."""
    from ..targets import _baseimage
    from ..targets._engine import find_engine

    bundle = Path(bundle)
    manifest_path = bundle / "manifest.json"
    if not manifest_path.exists():
        raise EdgeExportError(f"{bundle} is not an edge bundle (no manifest.json)", hint="make one with export_edge")
    manifest = json.loads(manifest_path.read_text())
    eng = find_engine(engine)
    base = _baseimage.resolve(eng, _baseimage.configured(base_image))
    lineage = manifest.get("lineage") or {}
    labels = {
        "nbdeploy.edge": manifest["format"],
        "nbdeploy.edge.model-sha256": manifest["files"]["model.onnx"],
        **{f"nbdeploy.{k}": str(lineage[k]) for k in ("python", "user", "created_at") if lineage.get(k)},
    }
    with tempfile.TemporaryDirectory(prefix="nbdeploy-edge-image-") as tmp:
        ctx = Path(tmp)
        shutil.copytree(bundle, ctx / "bundle", ignore=shutil.ignore_patterns("__pycache__", "*.log"))
        text = CONTAINERFILE.format(
            base=base, port=PORT, labels=" ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
        )
        (ctx / "Containerfile").write_text(text)
        eng.run(["build", "-t", tag, "-f", str(ctx / "Containerfile"), str(ctx)], timeout=timeout_s)
    image_id = eng.image_id(tag) or ""
    size = eng.run(["image", "inspect", "--format", "{{.Size}}", tag]).stdout.strip()
    return EdgeImage(tag, image_id, int(size or 0), eng.name)
