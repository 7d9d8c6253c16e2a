"""The edge target's build side: an ONNX bundle served by onnxruntime alone (see ``server.py``)."""

from __future__ import annotations

from .export import ATOL, RTOL, EdgeBundle, export_edge
from .image import EdgeImage, build_image

__all__ = ["ATOL", "RTOL", "EdgeBundle", "EdgeImage", "build_image", "export_edge"]
