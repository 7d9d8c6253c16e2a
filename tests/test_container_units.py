"""The image layer's and the container target's pure parts, without an engine: apt sources, error hints, options."""

from __future__ import annotations

import pytest

from nbdeploy import images
from nbdeploy.errors import TargetError, UsageError
from nbdeploy.images import base as _baseimage
from nbdeploy.images.engines import fix_hint
from nbdeploy.targets import get_target


def test_debian_mirror_from_deb822_sources_skips_the_security_archive(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert _baseimage.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_debian_mirror_from_a_one_line_sources_list(tmp_path):
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://mirror.example/debian bookworm main\n"
    )
    assert _baseimage.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_debian_mirror_falls_back_to_the_debian_cdn(tmp_path):
    assert _baseimage.debian_mirror(tmp_path) == _baseimage.DEFAULT_MIRROR


def test_base_image_names(tmp_path, monkeypatch):
    monkeypatch.delenv(_baseimage.ENV_BASE_IMAGE, raising=False)
    py = _baseimage.session_python()
    assert _baseimage.configured() == f"localhost/nbdeploy-python:{py}"
    monkeypatch.setenv(_baseimage.ENV_BASE_IMAGE, "registry.example/python:3.11")
    assert _baseimage.configured() == "registry.example/python:3.11"
    assert _baseimage.configured("mine:1") == "mine:1"
    assert _baseimage.cache_file(tmp_path).name == f"localhost_nbdeploy-python-{py}.tar"
    assert images.base_image_cache(tmp_path) == _baseimage.cache_file(tmp_path)
    assert images.base_image_tag() == f"localhost/nbdeploy-python:{py}"


def test_the_old_private_module_names_are_the_image_layer_itself():
    """``targets._engine`` and ``targets._baseimage`` are aliases: a patch of either reaches every caller."""
    from nbdeploy.targets import _baseimage as old_base
    from nbdeploy.targets import _engine as old_engine

    assert old_engine is images.engines and old_base is images.base


def test_a_service_image_is_named_after_the_bento_and_built_on_the_base_image():
    from nbdeploy.registry import Record

    rec = Record(name="churn", version=3, target="container", status="starting", bento_tag="nbdeploy-churn:v3-ABC")
    assert images.image_tag(rec) == "nbdeploy-churn:v3-abc"
    assert images.image_tag(Record(name="churn", version=3, target="container", status="x")) == "nbdeploy-churn:v3"
    opts = images.bento_image_options("localhost/base:1")["image"]
    assert opts["base_image"] == "localhost/base:1" and opts["distro"] == "custom"


@pytest.mark.parametrize(
    ("stderr", "advice"),
    [
        ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.", "start the docker daemon"),
        ("crun: setrlimit `RLIMIT_NOFILE`: Operation not permitted: OCI runtime error", "install runc"),
        ("something else entirely", "`podman info`"),
    ],
)
def test_engine_failures_come_with_what_to_fix(stderr, advice):
    assert advice in fix_hint("podman", stderr)


def test_target_options_are_checked():
    assert get_target("container", engine="podman", base_image="x:1").name == "container"
    with pytest.raises(TargetError, match="target 'local' does not take base_image") as err:
        get_target("local", base_image="x:1")
    assert isinstance(err.value, UsageError)
    assert "base_image only applies to target='container' or target='kubernetes'" in (err.value.hint or "")
