"""Find a container engine (podman or docker) that works here, and run its commands.

Podman gets a ``containers.conf`` of nbdeploy's own (runc, lower default ulimits) through ``CONTAINERS_CONF``,
so it works on hosts where crun cannot set rlimits, without hand edits of ``/etc``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import config
from ..errors import EngineError

ENGINES = ("podman", "docker")
ENV_ENGINE = "NBDEPLOY_CONTAINER_ENGINE"

CONTAINERS_CONF = """\
# Written by nbdeploy for the podman commands it runs (CONTAINERS_CONF). Set CONTAINERS_CONF yourself to override.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
"""

_INSTALL_HINT = (
    "install podman (Debian/Ubuntu: `apt-get install -y podman runc catatonit`, or `bash scripts/podman-setup.sh` "
    "in the nbdeploy repo), or docker with a running daemon; choose one with engine=... or NBDEPLOY_CONTAINER_ENGINE"
)


def _containers_conf() -> Path:
    path = config.home() / "containers.conf"
    if not path.exists() or path.read_text() != CONTAINERS_CONF:
        path.write_text(CONTAINERS_CONF)
    return path


@dataclass(frozen=True)
class Engine:
    """A container engine CLI and the environment its commands run with."""

    name: str
    binary: str

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.name == "podman" and "CONTAINERS_CONF" not in env:
            env["CONTAINERS_CONF"] = str(_containers_conf())
        return env

    def run(
        self, args: Sequence[str], *, check: bool = True, timeout: float | None = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ENGINE args...``; with ``check``, a failure raises EngineError carrying its stderr."""
        cmd = [self.binary, *args]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=self.env(), timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise EngineError(f"`{self.name} {' '.join(args[:2])}` did not finish in {timeout:.0f} s") from None
        if check and proc.returncode != 0:
            raise EngineError(
                f"`{self.name} {' '.join(args[:2])}` failed: {_last_line(proc.stderr or proc.stdout)}",
                hint=fix_hint(self.name, proc.stderr),
            )
        return proc

    def image_id(self, ref: str) -> str | None:
        """The full id of the local image ``ref``, or None if the engine does not have it."""
        proc = self.run(["image", "inspect", "--format", "{{.Id}}", ref], check=False)
        if proc.returncode != 0:
            return None
        return proc.stdout.strip().removeprefix("sha256:") or None

    def image_size(self, ref: str) -> int | None:
        """Bytes of the local image ``ref`` as the engine reports them (the size a user sees in ``images``)."""
        proc = self.run(["image", "inspect", "--format", "{{.Size}}", ref], check=False)
        text = proc.stdout.strip()
        return int(text) if proc.returncode == 0 and text.isdigit() else None

    def remove(self, name: str, grace_s: int = 10) -> None:
        """Stop (SIGTERM, SIGKILL after ``grace_s``) and remove container ``name``."""
        if self.name == "docker":  # docker rm has no stop timeout
            self.run(["stop", "-t", str(grace_s), name], check=False, timeout=grace_s + 60)
            self.run(["rm", "-f", name], timeout=60)
        else:
            self.run(["rm", "-f", "-t", str(grace_s), name], timeout=grace_s + 60)

    def push(self, source: str, dest: str, *, timeout: float = 1800.0) -> str:
        """Push local image ``source`` to ``dest`` (``registry/repo:tag``); return the digest the registry keeps.

        The digest is what the registry stores the manifest under (podman may recompress layers on the way,
        so a local id is not it): manifests name the image by it. TLS is verified except for a registry on
        this host (``loopback_registry``), where a plain-HTTP test registry is the normal case.
        """
        if self.name == "docker":  # docker treats 127.0.0.0/8 registries as insecure by itself
            self.run(["tag", source, dest])
            out = self.run(["push", dest], timeout=timeout).stdout
            found = re.search(r"digest: (sha256:[0-9a-f]{64})", out)
            if not found:
                raise EngineError(f"`docker push {dest}` did not report a digest", hint=_last_line(out))
            return found.group(1)
        with tempfile.TemporaryDirectory(prefix="nbdeploy-push-") as tmp:
            digestfile = Path(tmp) / "digest"
            tls = ["--tls-verify=false"] if loopback_registry(dest) else []
            self.run(["push", *tls, "--digestfile", str(digestfile), source, f"docker://{dest}"], timeout=timeout)
            digest = digestfile.read_text().strip() if digestfile.exists() else ""
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise EngineError(f"`podman push {dest}` did not write a digest (got {digest!r})")
        return digest

    def container_state(self, name: str) -> tuple[str, int] | None:
        """(status, restart count) of container ``name``, or None if there is none."""
        proc = self.run(["container", "inspect", "--format", "{{.State.Status}} {{.RestartCount}}", name], check=False)
        if proc.returncode != 0:
            return None
        status, _, restarts = proc.stdout.strip().partition(" ")
        return status, int(restarts or 0)


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def loopback_registry(ref: str) -> bool:
    """True if ``ref`` (``host[:port]/repo...``) names a registry on this host: the only kind pushed to without TLS."""
    host = ref.split("/", 1)[0]
    host = host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0]  # [::1]:5000, h:5000
    return host in _LOOPBACK or host.startswith("127.")


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def fix_hint(engine: str, stderr: str) -> str:
    """What to do about a failed engine command, from the messages we know."""
    err = stderr.lower()
    if "cannot connect to the docker daemon" in err or "docker.sock" in err:
        return "start the docker daemon (e.g. `dockerd &` as root, or `systemctl start docker`), or use podman"
    if "setrlimit" in err or "crun" in err or "oci runtime" in err:
        return (
            "the OCI runtime cannot start containers here; install runc (`apt-get install -y runc`) and let nbdeploy's "
            "CONTAINERS_CONF select it (unset CONTAINERS_CONF if you set your own)"
        )
    if "permission denied" in err or "rootless" in err or "newuidmap" in err:
        return f"run as root, or set up rootless {engine} (subuid/subgid ranges, uidmap package)"
    if "catatonit" in err or "init binary" in err:
        return "install catatonit (`apt-get install -y catatonit`): `--init` needs it"
    return f"check that `{engine} info` and `{engine} run` work in a terminal"


def _usable(engine: Engine) -> str | None:
    """None if ``engine info`` answers, else the reason it does not."""
    try:
        proc = engine.run(["info", "--format", "{{json .}}"], check=False, timeout=60)
    except EngineError as exc:
        return exc.message
    return None if proc.returncode == 0 else (proc.stderr or proc.stdout).strip() or f"exit {proc.returncode}"


def find_engine(name: str | None = None) -> Engine:
    """The engine named (argument, then NBDEPLOY_CONTAINER_ENGINE), else the first of podman, docker that works."""
    name = name or os.environ.get(ENV_ENGINE) or None
    candidates = [name] if name else list(ENGINES)
    if name and name not in ENGINES and not shutil.which(name):
        raise EngineError(f"container engine '{name}' not found on PATH", hint=_INSTALL_HINT)
    found = [Engine(c, path) for c in candidates if (path := shutil.which(c))]
    if not found:
        raise EngineError(
            "no container engine found (looked for " + ", ".join(candidates) + " on PATH)", hint=_INSTALL_HINT
        )
    problems = []
    for engine in found:
        reason = _usable(engine)
        if reason is None:
            return engine
        problems.append((engine, reason))
    engine, reason = problems[0]
    raise EngineError(
        f"{engine.name} is installed ({engine.binary}) but does not work: {_last_line(reason)}",
        hint=fix_hint(engine.name, reason),
    )


def engine_named(name: str) -> Engine:
    """The engine a deployment was made with, without re-checking it (status, logs and stop must stay cheap)."""
    path = shutil.which(name)
    if path is None:
        raise EngineError(f"the container engine '{name}' this deployment was made with is gone", hint=_INSTALL_HINT)
    return Engine(name, path)
