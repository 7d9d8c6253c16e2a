"""A container image of an edge bundle, on nbdeploy's local Python base image (``nbdeploy.images``): the bundle plus
onnxruntime.

The image carries the manifest's sha256 in its command, so the server inside checks the bundle at every start.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
ENTRYPOINT ["python3", "-I", "/bundle/server.py", "--host", "0.0.0.0", "--port", "{port}", "--manifest-sha256", "{sha}"]
"""


@dataclass(frozen=True)
class EdgeImage:
    tag: str
    image_id: str
    size_bytes: int
    engine: str
    manifest_sha256: str = ""


def build_image(
    bundle: str | Path,
    tag: str,
    *,
    manifest_sha256: str | None = None,
    engine: str | None = None,
    base_image: str | None = None,
    timeout_s: float = 900,
) -> EdgeImage:
    """Build ``tag`` from the bundle at ``bundle`` on the base image (``nbdeploy base-image build`` makes it).

    ``manifest_sha256`` (``EdgeBundle.manifest_sha256``) pins the bundle exported: a bundle changed since is
    refused here, and the image's server checks it again at every start. Without it, the bundle as it is now
    is pinned (its files must still match its manifest).
    """
    from .. import images
    from .export import sha256_file, verify_bundle

    bundle = Path(bundle)
    if not (bundle / "manifest.json").exists():
        raise EdgeExportError(f"{bundle} is not an edge bundle (no manifest.json)", hint="make one with export_edge")
    expected = manifest_sha256 or sha256_file(bundle / "manifest.json")
    eng = images.engine(engine)
    base = images.base_image(eng, base_image)
    with tempfile.TemporaryDirectory(prefix="nbdeploy-edge-image-") as tmp:
        ctx = Path(tmp)
        (ctx / "bundle").mkdir()
        listed = json.loads((bundle / "manifest.json").read_bytes()).get("files") or {}
        for name in ["manifest.json", *listed]:  # only what the manifest vouches for, checked once copied
            if Path(name).name == name and (bundle / name).is_file():
                shutil.copy2(bundle / name, ctx / "bundle" / name)
        manifest = verify_bundle(ctx / "bundle", expected)
        (ctx / "Containerfile").write_text(_containerfile(base, manifest, expected))
        eng.run(["build", "-t", tag, "-f", str(ctx / "Containerfile"), str(ctx)], timeout=timeout_s)
    return EdgeImage(tag, eng.image_id(tag) or "", eng.image_size(tag) or 0, eng.name, expected)


def _containerfile(base: str, manifest: dict[str, Any], sha: str) -> str:
    lineage = manifest.get("lineage") or {}
    labels = {
        "nbdeploy.edge": manifest["format"],
        "nbdeploy.edge.model-sha256": manifest["files"]["model.onnx"],
        "nbdeploy.edge.manifest-sha256": sha,
        **{f"nbdeploy.{k}": str(lineage[k]) for k in ("python", "user", "created_at") if lineage.get(k)},
    }
    text = " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())
    return CONTAINERFILE.format(base=base, port=PORT, labels=text, sha=sha)
