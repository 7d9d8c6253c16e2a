"""The edge target's build side: an ONNX bundle served by onnxruntime alone (see ``server.py``)."""

from __future__ import annotations

from .export import ATOL, RTOL, BundleIntegrityError, EdgeBundle, export_edge, verify_bundle
from .image import EdgeImage, build_image

__all__ = [
    "ATOL",
    "RTOL",
    "BundleIntegrityError",
    "EdgeBundle",
    "EdgeImage",
    "build_image",
    "export_edge",
    "verify_bundle",
]
