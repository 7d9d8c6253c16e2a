"""API keys: made at deploy, kept by the SDK in the owner-only registry; the service sees hashes only.

The hashes live in ``deployments/NAME/keys.json``, which the service re-reads when it changes:
rotation writes old and new hashes, switches the SDK to the new key once the service accepts it,
then drops the old hash, so no request in flight fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from . import config
from .errors import TargetError
from .files import write_private
from .runtime.guard import digest

if TYPE_CHECKING:
    from .registry import Registry

PREFIX = "nbd_"
KEYS_FILE = "keys.json"


class Key(str):
    """An API key that shows masked wherever a notebook or a log would display it (repr, IPython's pretty printer,
    HTML), since a displayed output is saved in the ``.ipynb``; as a string (``str(k)``, f-strings, headers) it is
    the whole key."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Key({masked(self)!r})"

    def _repr_pretty_(self, p: object, cycle: bool) -> None:
        p.text(repr(self))  # type: ignore[attr-defined]

    def _repr_html_(self) -> str:
        return f"<code>{masked(self)}</code> <i>(the key is masked on display: use str(key))</i>"

    def __str__(self) -> str:
        return str.__str__(self)


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def keys_path(name: str) -> Path:
    return config.name_dir(name) / KEYS_FILE


def write_hashes(name: str, hashes: list[str]) -> None:
    """Atomically replace the accepted hashes (the service never reads a half-written file).

    Owner-only, and owned by whoever owned the file before: a container's service runs as its own user
    (``targets.container`` hands the file to it), and a rotation must not take it back.
    """
    path = keys_path(name)

    def same_owner(tmp: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            before = path.stat()
            if (before.st_uid, before.st_gid) != (os.getuid(), os.getgid()):
                try:
                    os.chown(tmp, before.st_uid, before.st_gid)
                except PermissionError:  # not root: we cannot give it away, so keep what the service could read
                    os.chmod(tmp, before.st_mode & 0o777)

    write_private(path, json.dumps({"sha256": hashes}), same_owner)


def redact_salt(name: str) -> str:
    """The name's salt for hashed columns (``deploy(redact=...)``): made once, owner-only, the same for every
    version so that hashes (and drift on them) compare across versions."""
    path = config.name_dir(name) / "redact.salt"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip()


def read_hashes(name: str) -> list[str]:
    path = keys_path(name)
    return json.loads(path.read_text()).get("sha256", []) if path.exists() else []


def masked(key: str | None) -> str:
    return f"{key[:8]}…{key[-4:]}" if key else "-"


def wait_until(url: str, key: str, accepted: bool, deadline_s: float = 10.0) -> None:
    """Poll until the service accepts (or refuses) ``key``; it re-reads the hash file twice a second."""
    end = time.monotonic() + deadline_s
    with httpx.Client(trust_env=False) as http:
        while time.monotonic() < end:
            try:
                resp = http.post(f"{url}/predict", json={"inputs": []}, headers={"authorization": f"Bearer {key}"})
            except httpx.HTTPError:
                resp = None
            if resp is not None and (resp.status_code != 401) == accepted:
                return
            time.sleep(0.05)
    state = "accept the new key" if accepted else "refuse the old key"
    raise TargetError(f"the service at {url} did not {state} within {deadline_s:.0f} s")


def rotate(registry: Registry, name: str, version: int | None = None) -> str:
    """Replace the name's key with no failed request: every running version accepts both keys, the SDK switches
    to the new one, then the old one is refused. Returns the new key; the audit trail has both, masked."""
    old = registry.key(name)
    new = new_key()
    urls = [r.url for r in registry.running(name) if r.url]
    write_hashes(name, [h for h in (digest(new), old and digest(old)) if h])
    for url in urls:  # both keys work now; switch the SDK, then retire the old one
        wait_until(url, new, accepted=True)
    registry.set_key(name, new, digest(new))
    write_hashes(name, [digest(new)])
    for url in urls:
        if old:
            wait_until(url, old, accepted=False)
    registry.event("key-rotated", name, version, old=masked(old), new=masked(new))
    return new


__all__ = ["Key", "digest", "masked", "new_key", "read_hashes", "redact_salt", "rotate", "wait_until", "write_hashes"]
