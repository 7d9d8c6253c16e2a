"""The container target's pure parts, without an engine: apt sources, error hints, target options."""

from __future__ import annotations

import pytest

from nbdeploy.errors import TargetError
from nbdeploy.targets import _baseimage, get_target
from nbdeploy.targets._engine import fix_hint


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
    with pytest.raises(TargetError, match="target 'local' does not take base_image"):
        get_target("local", base_image="x:1")
