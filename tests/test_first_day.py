"""The first day in a notebook (#17): no key in any output, one-line errors, hints that point the right way, the
stages of a deploy, and no new version for an unchanged model. On a real IPython shell, with the in-process fake
target (conftest) where no server is needed."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SERVICES
from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.interactiveshell import InteractiveShell

import nbdeploy
from nbdeploy import _ipython, card, keys
from nbdeploy.progress import Progress
from nbdeploy.registry import Registry

FULL_KEY = re.compile(r"nbd_[A-Za-z0-9_-]{20,}")


@pytest.fixture
def shell(fake):
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "nbdeploy")
    sh.user_ns.update(
        X=pd.DataFrame({"tenure": [3, 40, 12], "plan": ["a", "b", "a"]}),
        score=lambda df: df["tenure"] > 12,
    )
    yield sh
    sh.user_ns.pop("X", None)


def _error(shell, line: str) -> str:
    result = shell.run_cell(line)
    assert isinstance(result.error_in_exec, IPythonUsageError), result.error_in_exec
    return str(result.error_in_exec)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("%deploy score --nmae first --sample X -t fake", "unknown option --nmae for %deploy: did you mean --name?"),
        ("%deploy score --name first --smaple X -t fake", "did you mean --sample?"),
        ("%deploy score --name first --sample X -t fake --replica 2", "did you mean --replicas?"),
        ("%deploy score --name first --sample X --bogus", "unknown option --bogus for %deploy; see %deploy?"),
        ("%deploy score --name first --sample X_train.values -t fake", "--sample takes a variable name, not an"),
        ("%deploy score --name first --sample X[['tenure']] -t fake", "--sample takes a variable name"),
        ("%deploy make_model() --name first --sample X -t fake", "the model takes a variable name"),
        ("%deploy score --name 'wine v2' --sample X -t fake", "invalid deployment name 'wine v2'"),
        ("%deploy score --name Wine_Quality --sample X -t fake", "such as 'wine-quality'"),
        ("%deploy score --name 'wine v2' --sample X -t fake", "such as 'wine-v2'"),
        ("%deploy score --name 'unclosed --sample X", "could not parse"),
    ],
)
def test_magic_mistakes_get_the_hint_that_fixes_them(shell, line, expected):
    message = _error(shell, line)
    assert expected in message
    assert "--name is required" not in message


def test_quoted_names_lose_their_quotes_and_attached_short_options_still_work(shell):
    dep = shell.run_line_magic("deploy", 'score -nquoted --sample "X" -t fake')
    assert dep.name == "quoted" and SERVICES["quoted", 1] == "running"


def test_no_card_or_returned_value_holds_the_full_key(shell):
    """Everything a notebook would save: the card of the deploy that made the key, of a later handle, of a
    rotation, and the key objects the handle returns when they end a cell."""
    dep = shell.run_line_magic("deploy", "score --name keyless-card --sample X -t fake")
    secret = Registry().key("keyless-card")
    assert secret and FULL_KEY.fullmatch(secret)
    outputs = [dep._repr_html_(), repr(dep), nbdeploy.get("keyless-card")._repr_html_(), dep.curl()]
    key = dep.key()
    assert str(key) == secret and f"Bearer {key}" == f"Bearer {secret}"  # usable as the key it is
    outputs += [repr(key), key._repr_html_(), _pretty(key)]
    for text in outputs:
        assert secret not in text and not FULL_KEY.search(text), text
    assert keys.masked(secret) in dep._repr_html_()
    assert "$NBDEPLOY_KEY" in dep.curl() and "nbdeploy key keyless-card" in dep._repr_html_()


def _pretty(value) -> str:
    from IPython.lib.pretty import pretty

    return pretty(value)


def test_the_card_shows_the_schema_the_model_and_only_what_exists(shell):
    wide = pd.DataFrame({f"feature_{i}": np.arange(3.0) + i for i in range(31)})
    shell.user_ns.update(W=wide, total=lambda df: df.sum(axis=1))
    dep = shell.run_line_magic("deploy", "total --name wide-card --sample W -t fake")
    html = dep._repr_html_()
    assert "<details>" in html and "31 columns" in html and "feature_30" in html
    assert "dep.monitor()" not in html  # %deploy binds no `dep`: the card names what exists
    assert "%monitor wide-card" in html and 'nbdeploy.get("wide-card")' in html
    line = dep.curl()
    assert "\n" not in line and len(line) < 250 and "@" in line  # 31 columns: the body is read from a file
    body = line.rsplit("@", 1)[1]
    assert '"feature_30"' in Path(body).read_text()
    assert "Deployed in" in html and "capture" in html and "package" in html


def test_an_unchanged_model_is_not_a_new_version_unless_forced(shell):
    first = shell.run_line_magic("deploy", "score --name same-model --sample X -t fake")
    again = shell.run_line_magic("deploy", "score --name same-model --sample X -t fake")
    assert again.version == first.version == 1
    assert "unchanged" in again._repr_html_() and "force" in again._repr_html_()
    forced = shell.run_line_magic("deploy", "score --name same-model --sample X -t fake --force")
    assert forced.version == 2
    shell.user_ns["score"] = lambda df: df["tenure"] > 20  # another model: a new version without asking
    assert shell.run_line_magic("deploy", "score --name same-model --sample X -t fake").version == 3
    actions = list(nbdeploy.audit("same-model").action)
    assert actions.count("deploy") == 3 and "deploy-unchanged" in actions


def test_own_errors_show_one_line_and_the_hint_and_tb_shows_the_rest(shell, capsys):
    result = shell.run_cell("import nbdeploy\nnbdeploy.get('no-such-deployment').predict([[1]])")
    assert isinstance(result.error_in_exec, nbdeploy.DeploymentNotFound)
    shown = capsys.readouterr().out.strip().splitlines()
    assert shown[0].endswith("DeploymentNotFound: no deployment 'no-such-deployment'") or "no deployment" in shown[0]
    assert len(shown) <= 3 and not any("Traceback" in line or "File " in line for line in shown), shown
    shell.run_line_magic("tb", "")
    frames = capsys.readouterr().out
    assert "Traceback" in frames and "registry.py" in frames  # %tb: every frame, down to where it was raised
    other = shell.run_cell("1/0")  # not ours: IPython's usual traceback
    assert isinstance(other.error_in_exec, ZeroDivisionError)
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_one_line_form_keeps_kind_message_and_hint():
    lines = _ipython.one_line(nbdeploy.PredictionError("'wine' answered 400: no column 'x'", status=400, hint="h"))
    assert lines == ["PredictionError: 'wine' answered 400: no column 'x'", "hint: h", "(%tb shows the full traceback)"]


def test_a_user_handler_is_left_alone():
    class Shell:
        custom_exceptions = (KeyError,)

        def set_custom_exc(self, *_: object) -> None:
            raise AssertionError("replaced the user's handler")

    assert _ipython.install(Shell()) is False


def test_progress_lines_name_each_stage_with_its_time(shell, monkeypatch):
    monkeypatch.setenv("NBDEPLOY_PROGRESS", "1")
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    shell.run_line_magic("deploy", "score --name staged --sample X -t fake")
    lines = err.getvalue().splitlines()
    stages = [re.match(r"nbdeploy: deploying 'staged' to fake: (.+) (\d+\.\d) s$", line) for line in lines]
    assert [m.group(1) for m in stages if m] == ["prepare target", "capture", "package", "start"], lines
    timings = nbdeploy.get("staged").info()["timings"]
    assert set(timings) == {"prepare_target_s", "capture_s", "package_s", "start_s"}


def test_progress_is_silent_when_nobody_watches(monkeypatch):
    monkeypatch.delenv("NBDEPLOY_PROGRESS", raising=False)
    progress = Progress("quiet")
    with progress.stage("capture"):
        pass
    assert progress.done and progress.done[0][0] == "capture" and progress._lines is None


def test_card_masks_even_a_record_rendered_directly():
    from nbdeploy.record import Info, Record

    secret = keys.new_key()

    html = card.render(Record("direct", 1, "local", "running", info=Info(auth=True, example=[{"a": 1}])), secret)
    assert secret not in html and keys.masked(secret) in html


def test_no_committed_notebook_holds_a_key():
    from conftest import ROOT

    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert not FULL_KEY.search(path.read_text()), path.name


@pytest.mark.slow
def test_the_service_describes_itself_without_calling_any_other_host(stop_after):
    """``/`` and ``/docs.json`` come from the captured schema: the columns, the key scheme, the model's routes; and
    nothing on them loads from another host (BentoML's page loaded Google Tag Manager)."""
    import httpx
    from sklearn.linear_model import LogisticRegression

    X = pd.DataFrame({"tenure": [1.0, 5.0, 9.0, 30.0], "plan": pd.Categorical(["a", "b", "a", "b"])})
    model = LogisticRegression().fit(X[["tenure"]], [0, 0, 1, 1])
    dep = nbdeploy.deploy(model, name="self-described", sample=X[["tenure"]])
    stop_after(dep)
    assert "LogisticRegression" in dep._repr_html_() and ".predict_proba(X)" in dep._repr_html_()
    with httpx.Client(trust_env=False, timeout=10) as http:
        spec = http.get(f"{dep.url}/docs.json").json()
        page = http.get(f"{dep.url}/").text
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    records = body["schema"]["properties"]["inputs"]["oneOf"][0]["items"]
    assert records["properties"]["tenure"]["type"] == "number" and records["required"] == ["tenure"]
    assert body["example"] == {"inputs": dep.info()["example"]}
    assert "/predict_proba" in spec["paths"] and "/decision_function" in spec["paths"]
    assert "self-described" in page and "tenure" in page and "/predict_proba" in page
    for text in (page, json.dumps(spec)):
        assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", text), "a served page loads from another host"
        assert "googletagmanager" not in text
