"""Container images, one layer below the targets that run them (container, kubernetes) and the edge image build.

Why a layer: finding an engine, the local base image and the service image build are shared, and a target must
not reach into another's internals to get them. Everything here is public:

- ``engine(name)``: the container engine (podman, docker) to build and run with; ``recorded_engine(name)`` the
  one a version was made with, without re-checking it;
- ``base_image(engine, ref)``: the base image to build on, checked to be present with the session's Python;
  ``ensure_base_image``/``build_base_image`` make it (``nbdeploy base-image build``);
- ``build_service_image(engine, record)``: a version's bento as an image, reused if the engine has it;
  ``ImageBuilder``: the engine and base image choice a target holds.

The functions look their helpers up at call time, so a test can replace ``engines.find_engine`` or
``base.resolve`` for every caller at once.
"""

from __future__ import annotations

from pathlib import Path

from . import base, engines
from .base import ENV_BASE_IMAGE, BaseImage
from .engines import ENV_ENGINE, Engine, loopback_registry
from .service import (
    BENTO_UID,
    SERVICE_PORT,
    ImageBuilder,
    bento_image_options,
    build_service_image,
    image_tag,
    recorded,
)


def engine(name: str | None = None) -> Engine:
    """The engine named, else NBDEPLOY_CONTAINER_ENGINE, else the first of podman, docker that works here."""
    return engines.find_engine(name)


def recorded_engine(name: str) -> Engine:
    """The engine a deployment was made with, not re-checked (status, logs and stop must stay cheap)."""
    return engines.engine_named(name)


def base_image(engine: Engine, ref: str | None = None) -> str:
    """The base image to build on: ``ref``, else NBDEPLOY_BASE_IMAGE, else nbdeploy's own; checked to be in
    ``engine``'s local images with the session's Python (nothing is assumed pullable)."""
    return base.resolve(engine, base.configured(ref))


def base_image_tag(python: str | None = None) -> str:
    """The tag of nbdeploy's own base image for a Python major.minor (default: the session's)."""
    return base.default_tag(python)


def build_base_image(engine: Engine, tag: str | None = None, **options: object) -> BaseImage:
    """Bootstrap the base image (root and debootstrap); ``options``: mirror, suite, ca_bundle, log_dir."""
    return base.build(engine, tag, **options)  # type: ignore[arg-type]


def ensure_base_image(
    engine: Engine, tag: str | None = None, *, cache: Path | None = None, **options: object
) -> BaseImage:
    """The base image: present, else loaded from the archive ``cache``, else built (and then archived)."""
    return base.ensure(engine, tag, cache=cache, **options)


def base_image_cache(folder: Path, tag: str | None = None) -> Path:
    """Where ``ensure_base_image`` keeps the archive of ``tag`` inside ``folder``."""
    return base.cache_file(folder, tag)


__all__ = [
    "BENTO_UID",
    "ENV_BASE_IMAGE",
    "ENV_ENGINE",
    "SERVICE_PORT",
    "BaseImage",
    "Engine",
    "ImageBuilder",
    "base_image",
    "base_image_cache",
    "base_image_tag",
    "bento_image_options",
    "build_base_image",
    "build_service_image",
    "engine",
    "ensure_base_image",
    "image_tag",
    "loopback_registry",
    "recorded",
    "recorded_engine",
]
