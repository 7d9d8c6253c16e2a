"""The target contract, without a server: the base class's defaults, registration by name, options routed to the
target, and a whole lifecycle (deploy, redeploy, rollback, stop) through the public API on an in-process target."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from conftest import SERVICES, FakeTarget, PortlessTarget, notebook

import nbdeploy
from nbdeploy.errors import TargetError, UsageError
from nbdeploy.registry import Record, Registry
from nbdeploy.targets import (
    NotSupported,
    Running,
    Target,
    TargetOptionError,
    available_targets,
    get_target,
    register_target,
    target_class,
    unregister_target,
)
from nbdeploy.targets.container import ContainerTarget
from nbdeploy.targets.kubernetes.target import KubernetesTarget


@pytest.fixture
def model_and_sample() -> tuple[Any, pd.DataFrame]:
    score = notebook("def score(df):\n    return df['tenure'] > 12\n")["score"]
    return score, pd.DataFrame({"tenure": [3, 40, 12], "monthly": [80.5, 20.0, 55.0]})


def _record(target: str = "fake") -> Record:
    return Record(name="contract", version=1, target=target, status="running")


# -- the base class --------------------------------------------------------------------------------------------------


def test_a_target_must_implement_deploy_status_logs_and_stop():
    class Half(Target):
        name = "half"

        def deploy(self, record: Record, bento_path: str, port: int | None = None) -> Running:
            return Running(url="http://half.invalid")

    with pytest.raises(TypeError, match="abstract"):
        Half()  # type: ignore[abstract]


def test_the_defaults_prepare_nothing_and_refuse_what_the_target_cannot_do(fake):
    target = FakeTarget()
    assert target.prepare() == {}
    target.check_port_option(8080)  # a target that serves on a local port takes port=
    rec = _record()
    with pytest.raises(NotSupported, match="scale is not supported on the fake target") as err:
        target.scale(rec, 2)
    assert isinstance(err.value, UsageError) and isinstance(err.value, TargetError)
    assert "scale is for the kubernetes target" in str(err.value)
    assert "deploy with target='kubernetes' to run several replicas" in (err.value.hint or "")
    with pytest.raises(NotSupported, match="'contract' v1 has no image to export") as err:
        target.export(rec, "unused")
    assert "export is for the container target" in (err.value.hint or "")
    assert "target='container' to get an image archive" in (err.value.hint or "")
    with pytest.raises(NotSupported, match="describe is not supported on the fake target"):
        target.describe(rec)


def test_the_built_in_targets_override_only_what_they_support():
    assert target_class("kubernetes").scale is KubernetesTarget.scale is not Target.scale
    assert target_class("container").export is ContainerTarget.export is not Target.export
    with pytest.raises(NotSupported, match="scale is not supported on the container target"):
        get_target("container").scale(_record("container"), 3)
    with pytest.raises(NotSupported, match="export is not supported on the local target"):
        get_target("local").export(_record("local"), "unused")
    with pytest.raises(TargetError, match="port= is not for the kubernetes target") as err:
        get_target("kubernetes").check_port_option(8080)
    assert err.value.hint == "the Service listens on port 80"


def test_a_target_takes_its_constructor_keywords_as_options():
    assert FakeTarget.options() == {"flavour"}
    assert ContainerTarget.options() == {"engine", "base_image"}
    assert {"registry", "replicas", "context", "namespace", "engine", "base_image"} <= KubernetesTarget.options()
    assert target_class("local").options() == frozenset()


# -- registration ----------------------------------------------------------------------------------------------------


def test_registering_a_target_by_class_or_by_path(fake):
    assert available_targets()[:4] == ["local", "container", "edge", "kubernetes"]
    assert "fake" in available_targets() and target_class("fake") is FakeTarget
    register_target("fake", FakeTarget)  # the same again: nothing changes
    with pytest.raises(UsageError, match="target 'fake' is registered already"):
        register_target("fake", PortlessTarget)
    register_target("by-path", f"{__name__}:FakeTarget")  # imported on first use
    try:
        assert target_class("by-path") is FakeTarget
        assert isinstance(get_target("by-path", flavour="x"), FakeTarget)
    finally:
        unregister_target("by-path")
    assert "by-path" not in available_targets()
    with pytest.raises(TargetError, match="unknown target 'by-path'") as err:
        get_target("by-path")
    assert "fake" in (err.value.hint or "")


def test_registration_refuses_what_cannot_be_a_target(fake):
    with pytest.raises(UsageError, match="invalid target name"):
        register_target("Fake Target", FakeTarget)
    with pytest.raises(UsageError, match=r"is not a subclass of nbdeploy\.targets\.Target"):
        register_target("dict", dict)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="is not 'module:Class'"):
        register_target("nopath", "tests.fake")
    register_target("broken", f"{__name__}:SERVICES")
    try:
        with pytest.raises(TargetError, match=r"target 'broken' \(.*:SERVICES\) is not a subclass"):
            get_target("broken")
    finally:
        unregister_target("broken")


def test_a_replaced_built_in_target_comes_back_when_unregistered():
    register_target("local", FakeTarget, replace=True)
    try:
        assert target_class("local") is FakeTarget
    finally:
        unregister_target("local")
    assert target_class("local").__name__ == "LocalTarget"


# -- options ---------------------------------------------------------------------------------------------------------


def test_an_option_the_target_does_not_take_is_refused_before_anything_is_built(fake, model_and_sample):
    model, sample = model_and_sample
    with pytest.raises(TargetOptionError, match="target 'fake' does not take registry") as err:
        nbdeploy.deploy(model, name="contract-opts", sample=sample, target="fake", registry="r.example/ml")
    assert "registry only applies to target='kubernetes'" in (err.value.hint or "")
    assert "target 'fake' takes flavour" in (err.value.hint or "")
    with pytest.raises(TargetOptionError, match="target 'fake' does not take bogus") as err:
        nbdeploy.deploy(model, name="contract-opts", sample=sample, target="fake", target_options={"bogus": 1})
    assert "no target takes bogus" in (err.value.hint or "")
    with pytest.raises(TargetOptionError, match="target 'container' does not take flavour") as err:
        nbdeploy.deploy(model, name="contract-opts", sample=sample, target="container", target_options={"flavour": 1})
    assert "flavour only applies to target='fake'" in (err.value.hint or "")
    with pytest.raises(UsageError, match="option engine is given twice"):
        nbdeploy.deploy(
            model, name="contract-opts", sample=sample, target="kubernetes", engine="podman",
            target_options={"engine": "docker"},
        )  # fmt: skip
    with pytest.raises(TargetError, match="port= is not for the portless target"):
        nbdeploy.deploy(model, name="contract-opts", sample=sample, target="portless", port=8080)
    assert "contract-opts" not in set(nbdeploy.deployments(all_versions=True)["name"])  # refused before any version


# -- a whole lifecycle through the public API ------------------------------------------------------------------------


def test_deploy_redeploy_rollback_and_stop_on_a_registered_target(fake, model_and_sample):
    model, sample = model_and_sample
    dep1 = nbdeploy.deploy(model, name="contract-life", sample=sample, target="fake")
    assert (dep1.version, dep1.url, dep1.target) == (1, "http://fake.invalid", "fake")
    assert dep1.status() == "running" and SERVICES["contract-life", 1] == "running"
    assert dep1.info()["fake"] == {"flavour": "plain"} and "cluster" not in dep1.info()
    assert dep1.logs() == "fake log of contract-life v1"

    dep2 = nbdeploy.deploy(model, name="contract-life", sample=sample, target="fake", target_options={"flavour": "x"})
    assert dep2.version == 2 and dep2.info()["fake"] == {"flavour": "x"}
    assert SERVICES["contract-life", 1] == "stopped" and dep1.status() == "stopped"
    assert nbdeploy.get("contract-life").version == 2

    back = nbdeploy.rollback("contract-life", 1)
    assert back.version == 1 and back.status() == "running" and dep2.status() == "stopped"
    assert SERVICES["contract-life", 1] == "running" and SERVICES["contract-life", 2] == "stopped"
    states = {r.version: r.status for r in Registry().list(all_versions=True) if r.name == "contract-life"}
    assert states == {1: "running", 2: "stopped"}

    with pytest.raises(NotSupported, match="scale is not supported on the fake target"):
        back.scale(2)
    back.stop()
    assert back.status() == "stopped" and SERVICES["contract-life", 1] == "stopped"
    audit = nbdeploy.audit("contract-life")
    lifecycle = audit[audit["action"].isin(["deploy", "rollback", "stop"])]
    assert list(zip(lifecycle["action"], lifecycle["version"], strict=True)) == [
        ("deploy", 1),
        ("deploy", 2),
        ("rollback", 1),
        ("stop", 1),
    ]
    assert [d["target"] for d in audit[audit["action"] == "deploy"]["detail"]] == ["fake", "fake"]
