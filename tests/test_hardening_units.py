"""The hardening pieces on their own, in milliseconds: no server is started here."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time

import numpy as np
import pandas as pd
import pytest
from conftest import notebook

import nbdeploy
from nbdeploy import config, keys
from nbdeploy.registry import RUNNING, STOPPED, Registry
from nbdeploy.runtime import feedback, recorder
from nbdeploy.runtime.redact import Redactor
from nbdeploy.runtime.schema import InputError, to_model_input
from nbdeploy.runtime.watchdog import RECYCLED, Watchdog

SCHEMA = {
    "kind": "frame",
    "columns": [
        {"name": "a", "kind": "float", "dtype": "float64", "nullable": False},
        {"name": "n", "kind": "integer", "dtype": "int64", "nullable": True},
    ],
}


@pytest.mark.parametrize("name", ["ok\n", "ok\r\n", "\nok", "ok ", "../ok", "ok/x", "OK", "-ok", "ok-", "a" * 64, ""])
def test_names_with_anything_around_them_are_refused_before_anything_is_made(name):
    before = Registry().list(all_versions=True)
    with pytest.raises(nbdeploy.NbdeployError, match="invalid deployment name"):
        nbdeploy.deploy(lambda df: df["a"], name=name, sample=pd.DataFrame({"a": [1.0]}))
    assert Registry().list(all_versions=True) == before
    assert not (config.home() / "deployments" / name.strip()).exists() or name.strip() in {"ok", ""}
    with pytest.raises(nbdeploy.UsageError, match="not a deployment name"):
        config.name_dir(name)


def test_validation_is_linear_in_the_number_of_columns():
    names = [f"c{i}" for i in range(200_000)]
    names.append(names[random.randrange(len(names))])
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="unknown column 'c0'"):
        to_model_input({"columns": names, "data": [[0] * len(names)]}, SCHEMA)
    with pytest.raises(InputError, match="is named twice"):
        to_model_input({"columns": ["a", "a"], "data": [[1.0, 1.0]]}, SCHEMA)
    assert time.perf_counter() - t0 < 2.0  # quadratic: minutes


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({"a": float("nan"), "n": 1}, "column 'a': missing value in row 0"),
        ({"a": float("inf"), "n": 1}, "column 'a': expected a finite number, got inf"),
        ({"a": 1.0, "n": float("-inf")}, "column 'n': expected a finite number, got -inf"),
        ({"a": 10**400, "n": 1}, "column 'a': expected a finite number"),
        ({"a": 1.0, "n": 10**30}, "column 'n': a value does not fit in int64"),
        ({"a": "x" * 10**6, "n": 1}, "… (1000002 characters)"),
    ],
)
def test_numbers_that_are_not_finite_or_do_not_fit_are_refused(row, words):
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")) as info:
        to_model_input([row], SCHEMA)
    assert len(str(info.value)) < 300


def test_nan_is_a_missing_value_where_the_sample_had_some():
    frame = to_model_input([{"a": 1.0, "n": float("nan")}], SCHEMA)
    assert np.isnan(frame["n"].iloc[0])


def test_redactor_drops_hashes_and_withholds_messages():
    red = Redactor({"email": "drop", "phone": "hash"}, salt="s" * 64)
    rec = red.records([{"email": "a@b.c", "phone": "555", "x": 1}])[0]
    assert rec["x"] == 1 and "email" not in rec and rec["phone"] == red.hashed("555") != "555"
    assert Redactor({"phone": "hash"}, salt="t" * 64).hashed("555") != rec["phone"]  # keyed by the salt
    cols, rows = red.split(["x", "email", "phone"], [[1, "a@b.c", "555"]])
    assert cols == ["x", "phone"] and rows == [[1, red.hashed("555")]]
    frame = red.frame(pd.DataFrame({"x": [1], "email": ["a@b.c"], "phone": ["555"]}))
    assert list(frame.columns) == ["x", "phone"] and frame.phone.iloc[0] == red.hashed("555")
    assert "a@b" not in red.error("column 'email': expected a string, got 'a@b.c' (row 0)")
    assert red.error("column 'x': expected a number") == "column 'x': expected a number"


def test_without_its_salt_a_hashed_column_is_dropped(monkeypatch, tmp_path):
    monkeypatch.setenv("NBDEPLOY_REDACT", json.dumps({"phone": "hash"}))
    monkeypatch.setenv("NBDEPLOY_REDACT_SALT_FILE", str(tmp_path / "missing"))
    assert Redactor.from_environment().columns == {"phone": "drop"}
    (tmp_path / "salt").write_text("x" * 64)
    monkeypatch.setenv("NBDEPLOY_REDACT_SALT_FILE", str(tmp_path / "salt"))
    assert Redactor.from_environment().columns == {"phone": "hash"}


def test_redact_names_unknown_columns_and_modes():
    f = notebook("def f(df):\n    return df['a']\n")["f"]
    X = pd.DataFrame({"a": [1.0, 2.0], "email": ["p", "q"]})
    with pytest.raises(nbdeploy.UsageError, match="column 'mail'"):
        nbdeploy.deploy(f, name="redact-typo", sample=X, redact=["mail"])
    with pytest.raises(nbdeploy.UsageError, match="mode 'encrypt'"):
        nbdeploy.deploy(f, name="redact-typo", sample=X, redact={"email": "encrypt"})


def test_feedback_checks_ids_and_sizes(tmp_path):
    answered = feedback.Answered(None)
    answered.remember("r1", 3)
    assert feedback.checked([{"request_id": "r1", "y_true": [1, 0, 1]}], answered, 10) == [("r1", [1, 0, 1])]
    cases = [
        ([{"request_id": "r2", "y_true": [1]}], "no answered request has the id 'r2'"),
        ([{"request_id": "r1", "y_true": [1] * 100_000}], "100000 labels for a request of 3 rows"),
        ([{"request_id": "r1", "y_true": [{"a": 1}, 0, 1]}], "is not a label"),
        ([{"request_id": "r1", "y_true": [1, 0, 1]}] * 11, "11 items in one call; the limit is 10"),
        ("nope", "'items' must be a list"),
    ]
    for items, words in cases:
        with pytest.raises(InputError, match=words):
            feedback.checked(items, answered, 10)
    db = tmp_path / recorder.DB_NAME  # ids older than the memory are found in the request log
    log = recorder.Recorder(tmp_path)
    log.request("old", 1.0, 200, [{"a": 1}], [1])
    log.request("refused", 1.0, 400, [{"a": 1}], None, "bad")
    assert log.flush()
    from_log = feedback.Answered(db)
    assert from_log.rows("old") == 1 and from_log.rows("refused") is None and from_log.rows("x") is None


def test_a_frame_is_logged_as_its_first_rows_in_split_form(tmp_path):
    """A frame (a batch chunk sent as .npz): its first ``max_rows`` rows, columns and rows as sent, NaN as null; a
    frame of numbers is written as JSON once, text columns go through the cut of long values; a refused wide frame is
    cut as a whole."""
    log = recorder.Recorder(tmp_path, max_rows=50)
    numbers = pd.DataFrame({"a": np.arange(200) / 3, "b": np.arange(200), "c": np.arange(200) % 2 == 0})
    numbers.loc[1, "a"] = np.nan
    text = pd.DataFrame({"a": np.arange(200.0), "s": ["x" * 5000] * 200})
    wide = pd.DataFrame(np.zeros((3, 20_000)), columns=[f"c{i}" for i in range(20_000)])
    log.request("numbers", 1.0, 200, numbers, list(range(200)))
    log.request("text", 1.0, 200, text, list(range(200)))
    log.request("wide", 1.0, 400, wide, None, "no such columns")
    assert log.flush()
    with sqlite3.connect(tmp_path / recorder.DB_NAME) as con:
        rows = {r[0]: r[1:] for r in con.execute("SELECT request_id, n_rows, inputs FROM requests")}
    n, inputs = rows["numbers"]
    kept = json.loads(inputs)
    assert n == 200 and kept["columns"] == ["a", "b", "c"] and len(kept["data"]) == 50
    assert kept["data"][0] == [0.0, 0, True] and kept["data"][1][0] is None and kept["data"][3] == [1.0, 3, False]
    n, inputs = rows["text"]
    kept = json.loads(inputs)
    assert n == 200 and len(kept["data"]) == 50 and len(kept["data"][0][1]) < 1100  # each long value cut
    assert len(rows["wide"][1]) < 70_000 and "truncated" in json.loads(rows["wide"][1])


def test_the_request_log_cuts_long_values_and_refused_bodies(tmp_path):
    log = recorder.Recorder(tmp_path)
    log.request("big", 1.0, 200, [{"s": "v" * 100_000}], ["w" * 100_000])
    log.request("wide", 1.0, 400, [{f"k{i}": i for i in range(100_000)}], None, "e" * 100_000)
    assert log.flush()
    with sqlite3.connect(tmp_path / recorder.DB_NAME) as con:
        sizes = dict(con.execute("SELECT request_id, LENGTH(inputs) + LENGTH(outputs) + LENGTH(COALESCE(error, ''))"
                                 " FROM requests").fetchall())  # fmt: skip
    assert sizes["big"] < 5_000 and sizes["wide"] < 40_000


def test_the_watchdog_marks_degraded_then_recycles():
    busy: list[float | None] = [None]
    exits: list[int] = []
    dog = Watchdog(lambda: busy[0], timeout_s=0.2, recycle_after_s=0.6, exit=exits.append)
    assert not dog.degraded
    busy[0] = time.monotonic() - 0.3
    assert dog.degraded and exits == []
    dog.start()
    deadline = time.monotonic() + 5
    while not exits:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert exits == [RECYCLED]


def test_claim_lets_the_newest_deploy_win_and_rollback_take_over():
    reg = Registry()
    v1 = reg.allocate("claims", "local", {})
    v2 = reg.allocate("claims", "local", {})
    mine, others, newer = reg.claim("claims", v2.version, newest_wins=True, url="http://b", port=2, pid=None)
    assert mine.status == RUNNING and others == [] and newer is None
    mine, others, newer = reg.claim("claims", v1.version, newest_wins=True, url="http://a", port=1, pid=None)
    assert mine.status == STOPPED and newer is not None and newer.version == v2.version
    mine, others, newer = reg.claim("claims", v1.version, url="http://a", port=1, pid=None)  # a rollback
    assert mine.status == RUNNING and [o.version for o in others] == [v2.version] and newer is None


def test_home_keys_and_salt_are_owner_only(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    monkeypatch.setenv("NBDEPLOY_HOME", str(home))
    assert config.home().stat().st_mode & 0o777 == 0o700
    keys.write_hashes("owner-only", ["0" * 64])
    assert keys.keys_path("owner-only").stat().st_mode & 0o777 == 0o600
    salt = keys.redact_salt("owner-only")
    assert len(salt) == 64 and keys.redact_salt("owner-only") == salt
    assert (config.name_dir("owner-only") / "redact.salt").stat().st_mode & 0o777 == 0o600
    assert os.stat(config.name_dir("owner-only")).st_mode & 0o077 == 0


def test_a_stable_port_is_chosen_below_the_ephemeral_range() -> None:
    """The kernel gives ports of the ephemeral range to outgoing connections: a stable URL's port chosen there can be
    taken while its router restarts (seen in CI). It is chosen below the range, and free."""
    import socket

    from nbdeploy.targets._process import _ephemeral_range, stable_port

    low, _ = _ephemeral_range()
    ports = {stable_port() for _ in range(20)}
    assert all(p < low for p in ports) and len(ports) > 1
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports.pop()))
