"""Keep personal data out of the request log: named columns are dropped, or replaced by a keyed hash.

The model still receives every column; only what is written to disk changes. A hashed column keeps its
distribution of distinct values (so drift still works on it, and equal inputs stay equal), but not the values:
the hash is keyed with a per-deployment salt that never leaves ``NBDEPLOY_HOME`` and the service's environment.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

DROP, HASH = "drop", "hash"
MODES = (DROP, HASH)
ENV = "NBDEPLOY_REDACT"  # {"column": "drop" | "hash"}, set by the target from the registry record
SALT_FILE_ENV = "NBDEPLOY_REDACT_SALT_FILE"  # the per-name salt: a file, so it is in no environment or manifest


class Redactor:
    def __init__(self, columns: dict[str, str] | None = None, salt: str = "") -> None:
        self.columns = dict(columns or {})
        self._salt = salt.encode()
        self.enabled = bool(self.columns)

    @classmethod
    def from_environment(cls) -> Redactor:
        """Without its salt file (a cluster that does not mount it), a hashed column is dropped instead: an
        unkeyed hash of a low-entropy value (a phone number) is as good as the value."""
        columns = json.loads(os.environ.get(ENV) or "{}")
        salt = ""
        try:
            with open(os.environ.get(SALT_FILE_ENV) or os.devnull) as fh:
                salt = fh.read().strip()
        except OSError:
            pass
        if not salt:
            columns = dict.fromkeys(columns, DROP)
        return cls(columns, salt)

    def hashed(self, value: Any) -> str | None:
        if value is None:
            return None
        digest = hmac.new(self._salt, str(value).encode(), hashlib.sha256).hexdigest()
        return f"h:{digest[:16]}"

    def records(self, records: list[Any]) -> list[Any]:
        return [self._record(r) if isinstance(r, dict) else r for r in records]

    def _record(self, record: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in record.items():
            mode = self.columns.get(key)
            if mode is None:
                out[key] = value
            elif mode == HASH:
                out[key] = self.hashed(value)
        return out

    def split(self, columns: list[Any], data: list[Any]) -> tuple[list[Any], list[Any]]:
        modes = [self.columns.get(c) if isinstance(c, str) else None for c in columns]
        if not any(modes):
            return columns, data
        keep = [i for i, m in enumerate(modes) if m != DROP]
        rows = [
            [self.hashed(row[i]) if modes[i] == HASH else row[i] for i in keep] if isinstance(row, list) else row
            for row in data
        ]
        return [columns[i] for i in keep], rows

    def frame(self, frame: Any) -> Any:
        """A DataFrame with the columns dropped or hashed (a copy; the model's frame is untouched)."""
        present = [c for c in frame.columns if c in self.columns]
        if not present:
            return frame
        out = frame.drop(columns=[c for c in present if self.columns[c] == DROP])
        for col in present:
            if self.columns[col] == HASH:
                out[col] = [self.hashed(v) for v in out[col].astype(object).where(out[col].notna(), None)]
        return out

    def error(self, message: str | None) -> str | None:
        """An error naming a redacted column echoes the value it refused: keep the column, withhold the rest."""
        if message:
            for col in self.columns:
                prefix = f"column '{col}':"
                if message.startswith(prefix):
                    return f"{prefix} refused (the message is withheld: the column is redacted)"
        return message

    def schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The schema of what the log holds: dropped columns gone, hashed ones strings."""
        if not self.enabled or schema.get("kind") == "ndarray":
            return schema
        columns = []
        for spec in schema["columns"]:
            mode = self.columns.get(spec["name"])
            if mode == HASH:
                columns.append({"name": spec["name"], "kind": "string", "dtype": "object", "nullable": True})
            elif mode is None:
                columns.append(spec)
        return {**schema, "columns": columns}
