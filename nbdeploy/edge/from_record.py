"""The edge bundle of a deployed version: from its bento's artifact (checked against the registry's sha256),
checked on its deploy-time reference sample. Used by the edge target, ``dep.export_edge`` and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import config
from ..errors import EdgeExportError
from ..record import Record
from ..reference import load_reference
from ..runtime.model import load_model, read_meta
from .export import EdgeBundle, export_edge


def export_record(record: Record, path: str | Path, quantize: bool = False) -> EdgeBundle:
    reference = load_reference(config.deployment_dir(record.name, record.version))
    if reference is None or not record.bento_path:
        raise EdgeExportError(f"'{record.name}' v{record.version} has no bento or reference sample to export from")
    artifact = Path(record.bento_path) / "src" / "artifact"
    obj = load_model(artifact, read_meta(artifact), expected=record.info.sha256)
    data: Any = reference[0]
    schema = record.info.schema
    if schema and schema.get("kind") == "ndarray":
        data = data.to_numpy()
    return export_edge(
        obj, path, data, quantize=quantize, lineage=record.info.lineage, schema=schema,
        name=record.name, version=record.version,
    )  # fmt: skip
