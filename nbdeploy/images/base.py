"""A local Python base image, bootstrapped from the Debian mirror this machine already uses.

Why: no image registry may be reachable (nothing can be pulled), and a TLS-intercepting proxy re-signs the
package registries with a local CA. So the base image is built with debootstrap, carries the host's CA bundle
(pip and uv inside the image build then trust the proxy) and the session's Python major.minor.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageBuildError, TargetError
from .engines import Engine

ENV_BASE_IMAGE = "NBDEPLOY_BASE_IMAGE"
REPO = "localhost/nbdeploy-python"
# Debian release whose python3 is each Python major.minor.
SUITES = {"3.11": "bookworm", "3.13": "trixie"}
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")
# BentoML 1.4's Dockerfile installs uv with pip unless the image has uv >= 0.13.4; shipping the host's uv
# saves that step (and pip itself).
MIN_UV = (0, 13, 4)
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
IMAGE_ENV = {
    "UV_NATIVE_TLS": "true",  # uv up to 0.13 (BentoML's pinned fallback)
    "UV_SYSTEM_CERTS": "true",  # its newer name
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}


@dataclass(frozen=True)
class BaseImage:
    tag: str
    image_id: str
    python: str
    seconds: float
    source: str  # "present", "loaded" (from a cache archive) or "built"


def session_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def default_tag(python: str | None = None) -> str:
    return f"{REPO}:{python or session_python()}"


def cache_file(folder: Path, tag: str | None = None) -> Path:
    """Where ``ensure`` keeps the archive of ``tag`` inside ``folder``."""
    return folder / ((tag or default_tag()).replace("/", "_").replace(":", "-") + ".tar")


def configured(explicit: str | None = None) -> str:
    """The base image to build service images on: the argument, else NBDEPLOY_BASE_IMAGE, else nbdeploy's own."""
    return explicit or os.environ.get(ENV_BASE_IMAGE) or default_tag()


def resolve(engine: Engine, ref: str) -> str:
    """Check that ``engine`` has ``ref`` with the session's Python; return ``ref``."""
    if engine.image_id(ref) is None:
        ours = ref.startswith(REPO + ":")
        raise TargetError(
            f"base image '{ref}' is not in {engine.name}'s local images (no image can be assumed pullable)",
            hint="build it once with `nbdeploy base-image build` (about a minute; needs root and debootstrap)"
            if ours
            else f"`{engine.name} load -i ARCHIVE` or pull it, or unset {ENV_BASE_IMAGE} to use nbdeploy's own",
        )
    label = engine.run(["image", "inspect", "--format", '{{index .Labels "nbdeploy.python"}}', ref]).stdout.strip()
    if label and label != "<no value>" and label != session_python():
        raise TargetError(
            f"base image '{ref}' has Python {label}, this session runs {session_python()}",
            hint="pickles need the same Python major.minor: build one with `nbdeploy base-image build`",
        )
    return ref


def debian_mirror(apt: Path = Path("/etc/apt")) -> str:
    """The first Debian archive URI in this machine's apt sources (not the security archive)."""
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list"))]
    files += sorted((apt / "sources.list.d").glob("*.sources"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, flags=re.M))
                suites = fields.get("Suites", "").split()
                if "deb" in fields.get("Types", "").split() and set(suites) & set(SUITES.values()):
                    return fields.get("URIs", "").split()[0]
        else:
            for m in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, flags=re.M):
                if m.group(2) in SUITES.values():
                    return m.group(1)
    return DEFAULT_MIRROR


def host_ca_bundle() -> Path | None:
    for candidate in (os.environ.get("SSL_CERT_FILE"), *HOST_CA_BUNDLES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _host_uv() -> Path | None:
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if not uv:
        return None
    out = subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.split()
    try:
        version = tuple(int(p) for p in out[1].split(".")[:3])
    except (IndexError, ValueError):
        return None
    return Path(uv) if version >= MIN_UV else None


def _run_logged(cmd: list[str], log: Path, what: str) -> None:
    with open(log, "ab") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=CLEAN_ENV)
    if rc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise ImageBuildError(f"{what} failed (exit {rc.returncode}); log: {log}", hint="last lines:\n" + tail)


def _trim(rootfs: Path) -> None:
    """Drop what a service image never needs: apt caches and lists, docs, man pages, translations."""
    for sub in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info"):
        for child in (rootfs / sub).glob("*"):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    for child in (rootfs / "usr/share/locale").glob("*"):
        if child.is_dir():
            shutil.rmtree(child)


def _prepare_rootfs(rootfs: Path, python: str, ca_bundle: Path, uv: Path | None, log: Path) -> None:
    _trim(rootfs)
    certs = rootfs / "etc/ssl/certs/ca-certificates.crt"
    with open(certs, "ab") as out:  # the host's (or the user's) CAs on top of Debian's
        out.write(b"\n" + ca_bundle.read_bytes())
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()  # BentoML's Dockerfile may pip-install into the system Python
    if uv is not None:
        shutil.copy2(uv, rootfs / "usr/local/bin/uv")
    probe = subprocess.run(
        ["chroot", str(rootfs), "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, env=CLEAN_ENV,
    )  # fmt: skip
    if probe.stdout.strip() != python:
        raise ImageBuildError(
            f"the bootstrapped image has Python {probe.stdout.strip() or '?'} ({probe.stderr.strip()}), not {python}",
            hint=f"choose the Debian suite that ships Python {python} with --suite",
        )


def _import(engine: Engine, rootfs: Path, tag: str, labels: dict[str, str], log: Path) -> None:
    changes = [f"ENV {k}={v}" for k, v in IMAGE_ENV.items()] + [f"LABEL {k}={v}" for k, v in labels.items()]
    cmd = [engine.binary, "import", *(a for c in changes for a in ("--change", c)), "-", tag]
    with open(log, "ab") as out:
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(cmd, stdin=tar.stdout, stdout=out, stderr=subprocess.STDOUT, env=engine.env())
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
    if imp.returncode != 0 or tar.returncode != 0:
        raise ImageBuildError(f"`{engine.name} import` of the base image failed; log: {log}")


def build(
    engine: Engine,
    tag: str | None = None,
    *,
    mirror: str | None = None,
    suite: str | None = None,
    ca_bundle: str | Path | None = None,
    log_dir: Path | None = None,
) -> BaseImage:
    """debootstrap a minimal Debian with python3 and the CA bundle, and import it into ``engine`` as ``tag``."""
    t0 = time.perf_counter()
    python = session_python()
    tag = tag or default_tag(python)
    suite = suite or SUITES.get(python)
    if suite is None:
        raise TargetError(
            f"no Debian release known to ship Python {python} (known: {SUITES})",
            hint=f"pass --suite, or use an image with Python {python}: NBDEPLOY_BASE_IMAGE=... / base_image=...",
        )
    if shutil.which("debootstrap", path=CLEAN_ENV["PATH"]) is None or os.geteuid() != 0:
        raise TargetError(
            "building the base image needs root and debootstrap",
            hint="as root: `apt-get install -y debootstrap` (or `bash scripts/podman-setup.sh`), then run this again",
        )
    ca = Path(ca_bundle) if ca_bundle else host_ca_bundle()
    if ca is None or not ca.is_file():
        raise TargetError(f"CA bundle {ca or '(none found)'} is not a file", hint="pass --ca-bundle PATH (PEM)")
    uv = _host_uv()
    packages = ["python3", "ca-certificates"] + ([] if uv else ["python3-pip", "python3-venv"])
    mirror = mirror or os.environ.get("NBDEPLOY_DEBIAN_MIRROR") or debian_mirror()
    log_dir = log_dir or Path(tempfile.gettempdir())
    log = log_dir / "nbdeploy-base-image.log"
    log.write_text(f"base image {tag}: debootstrap {suite} from {mirror}, CA bundle {ca}\n")
    with tempfile.TemporaryDirectory(prefix="nbdeploy-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(packages)}", suite, str(rootfs), mirror]
        _run_logged(cmd, log, f"debootstrap of Debian {suite} from {mirror}")
        _prepare_rootfs(rootfs, python, ca, uv, log)
        labels = {"nbdeploy.python": python, "nbdeploy.suite": suite, "nbdeploy.base": "1"}
        _import(engine, rootfs, tag, labels, log)
    image_id = engine.image_id(tag) or ""
    return BaseImage(tag, image_id, python, round(time.perf_counter() - t0, 1), "built")


def _save(engine: Engine, tag: str, cache: Path) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(cache.name + ".partial")
    partial.unlink(missing_ok=True)
    engine.run(["save", "-o", str(partial), tag], timeout=600)
    partial.replace(cache)


def ensure(engine: Engine, tag: str | None = None, *, cache: Path | None = None, **build_opts: object) -> BaseImage:
    """The base image ``tag``: present already, else loaded from ``cache`` (an archive), else built.

    The archive is written whenever it is missing, so a wiped image store (or a fresh clone on the same
    machine's cache folder) costs a ``load`` of a few seconds instead of a bootstrap of a minute.
    """
    t0 = time.perf_counter()
    tag = tag or default_tag()
    image: BaseImage | None = None
    if image_id := engine.image_id(tag):
        image = BaseImage(tag, image_id, session_python(), 0.0, "present")
    elif cache is not None and cache.is_file():
        engine.run(["load", "-i", str(cache)], timeout=600)
        if image_id := engine.image_id(tag):
            return BaseImage(tag, image_id, session_python(), round(time.perf_counter() - t0, 1), "loaded")
    if image is None:
        image = build(engine, tag, **build_opts)  # type: ignore[arg-type]
    if cache is not None and not cache.is_file():
        _save(engine, tag, cache)
    return image
