"""The model gets, in the service, the frame it gets in the notebook: dtypes, missing markers, values and labels.

One function that reports what it received is deployed once with a sample holding every pandas dtype users meet
(``dtype_frames.COLUMNS``); frames drawn by hypothesis go to it over JSON and over the ``.npz`` route, and its report
must equal the one it gives in-process. A polars function gets a polars frame.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import time
from typing import Any

import dtype_frames
import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import auth, notebook
from dtype_frames import frame, report
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nbdeploy
from nbdeploy.runtime import frames

pytestmark = pytest.mark.slow

#: The reporting function, defined in a notebook cell (so it travels by value, like the user's code).
REPORTER = "\n".join(
    [
        "import json, math",
        "import numpy as np",
        "import pandas as pd",
        inspect.getsource(dtype_frames.canon),
        inspect.getsource(dtype_frames.report),
        "def received(df):",
        "    return [json.dumps(report(df))] + [''] * (len(df) - 1)",
    ]
)
SETTINGS = settings(
    max_examples=110, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
STATS: dict[str, Any] = {"frames": 0, "seconds": 0.0}


@pytest.fixture(scope="module")
def reporter():
    ns = notebook(REPORTER)
    sample = frame(0, 12, sample=True)
    assert json.loads(ns["received"](sample)[0]) == report(sample)
    dep = nbdeploy.deploy(ns["received"], name="dtypes", sample=sample, limits={"max_rows": 5000})
    try:
        yield dep
    finally:
        dep.stop()


def _npz(dep: Any, df: pd.DataFrame) -> httpx.Response:
    body = frames.encode(df)
    assert body is not None, "every column of the frame travels as .npz"
    headers = {**auth(dep), "content-type": frames.MEDIA_TYPE}
    return httpx.post(f"{dep.url}{frames.ROUTE}", content=body, headers=headers, timeout=60)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 7))
def test_json_carries_every_dtype_as_the_notebook_had_it(reporter, seed, n):
    df = frame(seed, n)
    t0 = time.perf_counter()
    got = reporter.predict(df)
    STATS["seconds"] += time.perf_counter() - t0
    STATS["frames"] += 1
    assert json.loads(got[0]) == report(df)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40))
def test_npz_carries_every_dtype_as_the_notebook_had_it(reporter, seed, n):
    df = frame(seed, n)
    t0 = time.perf_counter()
    resp = _npz(reporter, df)
    STATS["seconds"] += time.perf_counter() - t0
    STATS["frames"] += 1
    assert resp.status_code == 200, resp.text
    assert json.loads(resp.json()["predictions"][0]) == report(df)


def test_a_large_frame_goes_by_npz_through_the_client(reporter):
    df = frame(7, 1500)  # over client.NPZ_ROWS: the client picks the .npz route
    got = reporter.predict(df)
    assert json.loads(got[0]) == report(df)
    print(f"\n{STATS['frames']} generated frames through one service in {STATS['seconds']:.1f} s")


def test_a_frame_that_breaks_the_schema_is_a_400_naming_the_column(reporter):
    df = frame(3, 4)
    df["Int8"] = pd.array([1, 2, 300, 4], dtype="Int64")  # 300 does not fit in Int8
    with pytest.raises(nbdeploy.PredictionError, match=r"column 'Int8'.*300.*row 2") as info:
        reporter.predict(df)
    assert info.value.status == 400
    df = frame(3, 4)
    df["cat_int"] = pd.Categorical([3, 1, 7, 20])
    resp = _npz(reporter, df)
    assert resp.status_code == 400 and "cat_int" in resp.json()["error"] and "row 2" in resp.json()["error"]


POLARS = """
import polars as pl

def score(df):
    return df.select(
        (pl.col("x") * 2 + pl.col("n").fill_null(0)).alias("y")
    ).with_columns(
        pl.when(pl.col("y") > 3).then(pl.lit(1.0)).otherwise(pl.lit(0.0)).alias("y")
    )["y"] + df["tag"].str.len_chars().fill_null(0) + df["when"].dt.year().fill_null(0)

def kinds(df):
    return [repr(df.schema) + "|" + str(type(df).__module__) + "|" + repr(df.rows())] + [""] * (df.height - 1)
"""


def test_a_polars_model_gets_a_polars_frame(stop_after):
    pl = pytest.importorskip("polars")
    ns = notebook(POLARS)
    sample = pl.DataFrame(
        {
            "x": [1, 2, 3, 4],
            "n": [1, None, 3, 4],
            "tag": ["a", None, "ccc", "dd"],
            "when": [dt.datetime(2020, 1, 1), None, dt.datetime(2021, 5, 5, 1, 2, 3, 4), dt.datetime(1999, 1, 1)],
            "lst": [[1, 2], [3, 4], None, [5, 6]],
            "e": pl.Series(["x", "y", None, "x"], dtype=pl.Enum(["x", "y"])),
        }
    ).with_columns(pl.col("when").dt.replace_time_zone("Europe/Paris").alias("tz"))
    dep = nbdeploy.deploy(ns["score"], name="polars-score", sample=sample)
    stop_after(dep)
    assert any(r.startswith("polars==") for r in dep.info()["requirements"])
    np.testing.assert_array_equal(dep.predict(sample), ns["score"](sample).to_numpy())
    seen = nbdeploy.deploy(ns["kinds"], name="polars-kinds", sample=sample)
    stop_after(seen)
    assert seen.predict(sample)[0] == ns["kinds"](sample)[0]
    big = pl.concat([sample] * 300)  # 1,200 rows, as a polars frame, through the .npz body
    body = frames.encode(big)
    assert body is not None
    headers = {**auth(seen), "content-type": frames.MEDIA_TYPE}
    resp = httpx.post(f"{seen.url}{frames.ROUTE}", content=body, headers=headers, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["predictions"][0] == ns["kinds"](big)[0]


def test_integer_labels_reach_the_model_as_integers(stop_after):
    ns = notebook(
        """
        def first_minus_second(df):
            return df[0] - df[1] * 2
        """
    )
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 3)))
    dep = nbdeploy.deploy(ns["first_minus_second"], name="int-labels", sample=X)
    stop_after(dep)
    np.testing.assert_array_equal(dep.predict(X), ns["first_minus_second"](X).to_numpy())
    np.testing.assert_array_equal(dep.predict(X.to_dict(orient="records")), ns["first_minus_second"](X).to_numpy())
