"""The secret scanner: each class of credential it must refuse wherever it hides, and a corpus of realistic
objects (fitted models, the docs notebooks' models, notebook code, ordinary data) on which it must find nothing.

Every secret-shaped value is made at run time from random characters: no credential literal is stored here.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import functools
import hashlib
import json
import random
import string
import time
import uuid

import numpy as np
import pandas as pd
import pytest
from conftest import notebook

from nbdeploy.capture import capture, secrets, serialize
from nbdeploy.errors import SecretFoundError

ALNUM = string.ascii_letters + string.digits
UPPER = string.ascii_uppercase + string.digits
LOWER_HEX = "0123456789abcdef"
RNG = random.SystemRandom()


def _token(prefix: str = "", n: int = 32, alphabet: str = ALNUM) -> str:
    """A credential-shaped random value made at run time (no secret is stored in the tests)."""
    return prefix + "".join(RNG.choice(alphabet) for _ in range(n))


def _aws_id() -> str:
    return _token("AKIA", 16, UPPER)


def _aws_secret() -> str:
    return _token(n=40, alphabet=ALNUM + "/+")


def _b64(n_bytes: int) -> str:
    return base64.b64encode(bytes(RNG.getrandbits(8) for _ in range(n_bytes))).decode()


def _jwt() -> str:
    def part(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': _token(n=8), 'iat': 1700000000})}.{_token(n=43)}"


def _pem() -> str:
    head = "-----BEGIN RSA " + "PRIVATE" + " KEY-----"  # split, so no scanner flags this file
    return head + "\n" + "\n".join(_b64(48) for _ in range(4)) + "\n-----END RSA " + "PRIVATE" + " KEY-----\n"


def _scan(obj, allow=None) -> list[secrets.Finding]:
    payload, _, _ = serialize.dumps(obj)
    return secrets.scan(obj, payload, allow)


def _refused(obj, allow=None) -> str:
    """The error message for ``obj``; it must never repeat a generated secret (checked by the callers)."""
    payload, _, _ = serialize.dumps(obj)
    with pytest.raises(SecretFoundError) as info:
        secrets.check(obj, payload, allow)
    return str(info.value)


class Holder:
    """A plain object the tests hang values on, as a notebook model class would."""


class Slotted:
    __slots__ = ("name", "token")

    def __init__(self, name: str, token: str) -> None:
        self.name, self.token = name, token


@dataclasses.dataclass
class Settings:
    name: str
    options: dict


# -- URLs and connection strings with a password -----------------------------------------------------------------------

URL_SCHEMES = ["postgresql", "postgres", "postgresql+psycopg2", "mysql", "mysql+pymysql", "mongodb+srv", "amqp"]


@pytest.mark.parametrize("scheme", URL_SCHEMES)
def test_a_database_url_with_a_password_is_refused(scheme):
    pw = _token(n=12)
    ns = notebook(
        f"DB_URL = {scheme + '://app:' + pw + '@db.internal:5432/sales'!r}\ndef model(df):\n    return DB_URL\n"
    )
    message = _refused(ns["model"])
    assert "'DB_URL' (global used by function 'model') looks like a secret: a URL with a password" in message
    assert pw not in message


@pytest.mark.parametrize("pw", ["pw", "s3cr3t", "p%40ss"])
def test_even_a_short_or_encoded_password_in_a_url_counts(pw):
    assert [f.what for f in _scan({"conn": f"postgresql://user:{pw}@host/db"})] == ["a URL with a password"]


def test_a_redis_url_with_only_a_password_counts():
    assert _scan({"cache": f"redis://:{_token(n=16)}@cache:6379/0"})[0].name == "cache"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://analytics@db.internal:5432/warehouse",
        "postgresql://user:@host/db",
        "postgresql://user:${DB_PASSWORD}@host/db",
        "postgresql://user:****@host/db",
        "https://api.example.com/v1/predict?version=3",
        "s3://acme-ml/churn/2024-06-01/model.joblib",
        "git+ssh://git@github.com/acme/churn.git",
    ],
)
def test_urls_without_a_password_are_not_secrets(url):
    assert _scan({"url": url, "db": url}) == []


def test_a_keyword_dsn_and_query_parameters_count():
    dsn = f"host=db user=app password={_token(n=12)} dbname=sales"
    jdbc = f"jdbc:sqlserver://db:1433;databaseName=sales;user=app;pwd={_token(n=10)}"
    sas = f"https://acct.blob.core.windows.net/c?sv=2022-11-02&sr=c&sig={_token(n=43)}"
    for value in (dsn, jdbc, sas):
        assert [f.name for f in _scan({"conn": value})] == ["conn"], value


@pytest.mark.parametrize(
    "template",
    [
        "Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey={b64}",
        "AccountEndpoint=https://acme.documents.azure.com:443/;AccountKey={b64};",
        "mongodb://app:{tok}@db1:27017,db2:27017,db3:27017/sales?replicaSet=rs0",
        "jdbc:postgresql://db:5432/sales?user=app&password={tok}",
        "Driver={{ODBC Driver 18}};Server=db;Uid=app;Pwd={tok};",
        "mssql+pyodbc://app:{tok}@sales-dsn",
        "https://app:{tok}@nexus.internal/repository/pypi/simple",
    ],
)
def test_other_connection_strings_with_a_secret_count(template):
    value = template.format(b64=_b64(64), tok=_token(n=16))
    assert [f.name for f in _scan({"conn": value})] == ["conn"], value


def test_a_database_url_read_from_the_environment_is_named_by_its_variable(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{_token(n=14)}@db:5432/sales")
    ns = notebook("import os\nENGINE_URL = os.environ['DATABASE_URL']\ndef model(df):\n    return ENGINE_URL\n")
    message = _refused(ns["model"])
    assert "'ENGINE_URL' (global used by function 'model')" in message
    assert "the value of environment variable 'DATABASE_URL'" in message


def test_an_environment_value_is_judged_by_its_content_not_only_its_name(monkeypatch):
    monkeypatch.setenv("NBD_TEST_HUB_SETTING", _token("hf_", 34, string.ascii_letters))
    found = secrets._secret_env()
    assert "NBD_TEST_HUB_SETTING" in found
    monkeypatch.setenv("NBD_TEST_PLAIN_SETTING", "postgresql://analytics@db:5432/warehouse")
    assert "NBD_TEST_PLAIN_SETTING" not in secrets._secret_env()


def test_an_environment_secret_past_the_traversal_bound_is_found_in_the_bytes(monkeypatch):
    value = f"mysql://etl:{_token(n=12)}@db/sales"
    monkeypatch.setenv("NBD_TEST_WAREHOUSE", value)
    rows = [f"row {i}" for i in range(secrets._MAX_ITEMS)] + [value]
    found = _scan(rows)
    assert [(f.name, f.where) for f in found] == [("NBD_TEST_WAREHOUSE", "environment variable")]


# -- provider tokens ---------------------------------------------------------------------------------------------------

PROVIDERS = {
    "Hugging Face": lambda: _token("hf_", 34, string.ascii_letters),
    "Azure storage": lambda: (
        "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=" + _b64(64) + ";EndpointSuffix=core.windows.net"
    ),
    "Azure storage, short key": lambda: f"AccountName=acme;AccountKey={_token(n=30)};EndpointSuffix=core.windows.net",
    "AWS key id": _aws_id,
    "GitHub": lambda: _token("ghp_", 36),
    "GitLab": lambda: _token("glpat-", 20),
    "Slack": lambda: f"xoxb-{_token(n=11, alphabet=string.digits)}-{_token(n=12, alphabet=string.digits)}-{_token()}",
    "Stripe live": lambda: _token("sk_live_", 24),
    "Stripe test": lambda: _token("rk_test_", 24),
    "npm": lambda: _token("npm_", 36),
    "PyPI": lambda: "pypi-AgEIcHlwaS5vcmc" + _token(n=80, alphabet=ALNUM + "-_"),
    "SendGrid": lambda: f"SG.{_token(n=22)}.{_token(n=43)}",
    "Twilio": lambda: _token("AC", 32, LOWER_HEX),
    "Mailchimp": lambda: _token(n=32, alphabet=LOWER_HEX) + "-us14",
    "Google": lambda: _token("AIza", 35, ALNUM + "-_"),
    "OpenAI": lambda: _token("sk-proj-", 48),
    "Anthropic": lambda: _token("sk-ant-api03-", 95, ALNUM + "-_"),
    "Square": lambda: _token("sq0csp-", 43),
    "Artifactory": lambda: _token("AKCp", 69),
    "Google OAuth": lambda: _token("GOCSPX-", 28),
    "Discord": lambda: f"M{_token(n=23)}.{_token(n=6)}.{_token(n=27)}",
    "Telegram": lambda: f"{_token(n=9, alphabet=string.digits)}:{_token(n=35)}",
    "JWT": _jwt,
    "private key": _pem,
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_credentials_are_refused_under_any_name(provider):
    value = PROVIDERS[provider]()
    model = Holder()
    model.note = value
    message = _refused(model)
    assert "'note' (attribute of Holder object) looks like a secret" in message
    assert value not in message


@pytest.mark.parametrize("provider", ["Hugging Face", "Twilio", "Slack", "AWS key id"])
def test_provider_credentials_inside_text_are_refused(provider):
    assert _scan({"comment": f"uploaded with {PROVIDERS[provider]()} yesterday"})[0].name == "comment"


def test_prefixes_that_ordinary_words_share_are_not_keys():
    words = {
        "a": "sk-learn-pipeline-v2-production",
        "b": "hf_model_checkpoint_directory_name_v3",
        "c": "APEXLegendsSeasonChampions",  # pragma: allowlist secret (detect-secrets' Artifactory rule flags it)
    }
    assert _scan(words) == []


# -- secrets named as such ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["aws", "creds", "cred", "pw", "pwd", "pass_", "passwd", "dsn", "db_pass", "clientSecret", "X_API_KEY"]
)
def test_a_secret_in_a_short_or_abbreviated_name_is_refused(name):
    model = Holder()
    setattr(model, name, _token(n=20))
    assert [f.name for f in _scan(model)] == [name]


def test_an_aws_secret_key_in_an_attribute_or_a_tuple_is_refused():
    model = Holder()
    model.aws = _aws_secret()
    assert [f.name for f in _scan(model)] == ["aws"]
    assert {f.name for f in _scan({"creds": ("analytics", _aws_secret())})} == {"creds"}
    assert {f.name for f in _scan({"creds": (_aws_id(), _aws_secret())})} == {"creds"}  # once, not per copy


def test_detect_secrets_rules_that_read_the_name_apply():
    assert [f.what for f in _scan({"cl_key": _token(n=24, alphabet=string.ascii_lowercase)})] == [
        "Cloudant Credentials"
    ]


def test_a_binary_key_is_judged_by_its_name():
    model = Holder()
    model.secret_key = bytes(RNG.getrandbits(8) for _ in range(24))
    model.weights = bytes(RNG.getrandbits(8) for _ in range(24))
    assert [f.name for f in _scan(model)] == ["secret_key"]


def test_a_bearer_header_is_refused():
    assert [f.name for f in _scan({"headers": {"Authorization": f"Bearer {_token(n=40)}"}})] == ["Authorization"]


def test_base64_content_is_refused_whatever_its_name():
    model = Holder()
    model.blob = _b64(48)
    assert [(f.name, f.what) for f in _scan(model)] == [("blob", "64 random-looking base64 characters")]


@pytest.mark.parametrize(
    "name, value",
    [
        ("token_pattern", r"(?u)\b\w\w+\b"),
        ("token_pattern", r"[A-Za-z]+"),
        ("aws_region", "eu-west-1"),
        ("secret_path", "/run/secrets/db_password"),
        ("password_field", "password"),
        ("pad_token", "[PAD]"),
        ("eos_token", "<|endoftext|>"),
        ("api_key", "${API_KEY}"),
        ("api_key_env", "CRM_API_KEY"),
        ("auth_method", "oauth2"),
        ("token_url", "https://auth.example.com/oauth/token"),
        ("client_secret_id", "a8f3c2d1-prod"),
    ],
)
def test_secret_looking_names_with_ordinary_values_are_not_refused(name, value):
    assert _scan({name: value}) == []


def test_hex_digests_and_uuids_are_data_unless_named_like_a_secret():
    digest, run_id = hashlib.sha256(b"customers-2024-06").hexdigest(), str(uuid.uuid4())
    assert _scan({"data_version": digest, "run_id": run_id, "checksum": digest.upper()}) == []
    assert [f.name for f in _scan({"api_secret": digest})] == ["api_secret"]
    assert [f.name for f in _scan({"api_key": run_id})] == ["api_key"]  # some providers issue uuid keys


# -- where a secret hides ----------------------------------------------------------------------------------------------


def test_a_token_in_slots_is_found():
    assert [(f.name, f.where) for f in _scan(Slotted("churn", _token(n=30)))] == [
        ("token", "attribute of Slotted object")
    ]
    assert [f.name for f in _scan([1, Slotted("a", "b"), Slotted("churn", _token("ghp_", 36))])] == ["token"]


def test_nested_containers_are_followed():
    found = _scan(({"steps": [{"conf": Settings("etl", {"password": _token(n=16)})}]},))
    assert [(f.name, f.where) for f in found] == [("password", "attribute of Settings object")]


def test_sets_deques_and_named_tuples_are_followed():
    for holder in ({_aws_id()}, collections.deque(["a", _aws_id()]), frozenset({_aws_id()})):
        assert [f.name for f in _scan({"thing": holder})] == ["thing"], holder
    creds = collections.namedtuple("Creds", "user secret")("app", _token(n=24))
    assert [(f.name, f.where) for f in _scan({"thing": creds})] == [("secret", "field of Creds")]


def test_private_and_inherited_slots_are_found():
    class Base:
        __slots__ = ("__key",)

        def __init__(self, key: str) -> None:
            self.__key = key

    class Client(Base):
        __slots__ = "endpoint"

    client = Client(f"xoxp-{_token(n=12, alphabet=string.digits)}-{_token(n=24, alphabet=LOWER_HEX)}")
    client.endpoint = "https://slack.com/api"
    assert [f.name for f in _scan(client)] == ["__key"]


def test_a_service_account_dictionary_is_refused():
    account = {"type": "service_account", "project_id": "acme-ml", "private_key": _pem(), "client_email": "x@y.z"}
    assert [f.name for f in _scan({"gcp": account})] == ["private_key"]


def test_a_closure_variable_default_and_partial_are_followed():
    def make(token):
        def model(df):
            return token

        return model

    assert [(f.name, f.where) for f in _scan(make(_token(n=24)))] == [("token", "closure variable of function 'model'")]
    ns = notebook(f"def model(df, *, api_key={_token('sk-', 40)!r}):\n    return df\n")
    assert _scan(ns["model"])[0].where == "default argument of function 'model'"
    part = functools.partial(lambda df, pw=None: df, pw=_token(n=20))
    assert [f.name for f in _scan(part)] == ["pw"]


def test_a_class_attribute_and_a_static_method_of_notebook_code_are_followed():
    ns = notebook(
        f"class Model:\n    DSN = {'postgresql://a:' + _token(n=10) + '@h/d'!r}\n"
        "    @staticmethod\n    def predict(df):\n        return df\n"
    )
    assert [(f.name, f.where) for f in _scan(ns["Model"]())] == [("DSN", "attribute of class 'Model'")]


def test_numpy_string_arrays_are_scanned():
    for dtype in ("U", "S", "O"):
        arr = np.array(["oslo", _aws_id(), "rome"]).astype(dtype)
        model = Holder()
        model.labels = arr
        assert [f.name for f in _scan(model)] == ["labels"], dtype


def test_pandas_values_are_scanned():
    key = _aws_id()
    series = pd.Series(["oslo", "rome", key])
    frame = pd.DataFrame({"city": ["oslo", "rome"], "note": ["ok", f"mysql://a:{_token(n=8)}@h/d"]})
    for obj in (
        series,
        series.astype("category"),
        series.astype("string"),
        pd.Index(["a", key]),
        frame,
        frame.set_index("note"),
    ):
        model = Holder()
        model.lookup = obj
        assert [f.name for f in _scan(model)] == ["lookup"], type(obj)


def test_a_string_array_past_the_element_bound_is_found_in_its_utf32_bytes():
    arr = np.array(["oslo"] * (secrets._MAX_ELEMENTS * 3) + [_aws_id()])
    assert [(f.name, f.where) for f in _scan(arr)] == [("AWS access key", "serialised bytes")]


# -- messages and allow_secrets ----------------------------------------------------------------------------------------


def test_the_detectors_are_built_once():
    assert secrets._plugins(secrets._VALUE_SHAPES) is secrets._plugins(secrets._VALUE_SHAPES)
    assert {type(p).__name__ for p in secrets._plugins(secrets._VALUE_SHAPES)} >= {"AWSKeyDetector", "SlackDetector"}


def test_the_error_names_the_variable_and_the_way_out():
    message = _refused({"pw": _token(n=16)})
    assert "refusing to capture: 'pw' (the model) looks like a secret" in message
    assert "allow_secrets=['pw']" in message


def test_allow_secrets_silences_the_named_value_and_its_copy_in_the_bytes():
    model = Holder()
    model.note = f"built from {_aws_id()}"
    assert [f.name for f in _scan(model)] == ["note"]
    assert _scan(model, allow=["note"]) == []


def test_capture_refuses_a_function_that_reads_a_password_from_a_global():
    ns = notebook(
        f"import pandas as pd\nWAREHOUSE = {'mysql://etl:' + _token(n=12) + '@db/sales'!r}\n"
        "def model(df):\n    return df['a'] * len(WAREHOUSE)\n"
    )
    sample = pd.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(SecretFoundError, match="'WAREHOUSE' \\(global used by function 'model'\\)"):
        capture(ns["model"], sample)
    assert capture(ns["model"], sample, allow_secrets=["WAREHOUSE"]).kind == "function"


# -- the false-positive corpus: realistic objects on which the scanner must find nothing -------------------------------


def _churn(rows: int = 2000, seed: int = 0, plan: bool = False) -> tuple[pd.DataFrame, pd.Series]:
    """The docs notebooks' churn table (tenure, monthly, support_calls[, plan]) and its label."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, rows),
            "monthly": rng.normal(70, 20, rows).round(2),
            "support_calls": rng.poisson(2, rows),
        }
    )
    if plan:
        X["plan"] = rng.choice(["basic", "plus", "pro"], rows)
    y = ((X.support_calls > 2) & (X.tenure < 24) | (X.monthly > 95)).astype(int)
    return X, y


def _notebook_models() -> dict[str, object]:
    """The models of notebooks/*.ipynb, rebuilt with the same code."""
    from sklearn.compose import ColumnTransformer, make_column_transformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = _churn()
    Xp, yp = _churn(seed=1, plan=True)
    out: dict[str, object] = {
        "quickstart/container/kubernetes/security: forest": RandomForestClassifier(n_estimators=50, random_state=0).fit(
            X, y
        )
    }
    columns = ColumnTransformer(
        [
            ("num", StandardScaler(), ["tenure", "monthly", "support_calls"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ]
    )
    edge = Pipeline([("prep", columns), ("clf", LogisticRegression(max_iter=500))]).fit(Xp, yp)
    out["edge: pipeline"] = edge
    out["monitoring: pipeline"] = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["plan"]), remainder="passthrough"),
        RandomForestClassifier(n_estimators=50, random_state=0),
    ).fit(Xp, yp)
    ns = notebook(
        """
        import pandas as pd
        from sklearn.base import BaseEstimator, TransformerMixin
        CALLS_PER_YEAR_LIMIT = 1.5

        def calls_per_year(df):
            return df["support_calls"] / (1 + df["tenure"] / 12)

        def churn_rule(df):
            \"\"\"At risk if support calls pile up early on, or the bill is high.\"\"\"
            return ((calls_per_year(df) > CALLS_PER_YEAR_LIMIT) | (df["monthly"] > 95)).astype(int).to_numpy()

        class ChurnFeatures(BaseEstimator, TransformerMixin):
            \"\"\"Numeric features, calls per year and one column per plan.\"\"\"

            def fit(self, X, y=None):
                self.plans_ = sorted(X["plan"].unique())
                return self

            def transform(self, X):
                out = X[["tenure", "monthly", "support_calls"]].astype(float)
                out["calls_per_year"] = calls_per_year(X)
                for plan in self.plans_:
                    out[f"plan_{plan}"] = (X["plan"] == plan).astype(float)
                return out

        class CallsPerYear(BaseEstimator, TransformerMixin):
            def fit(self, X, y=None):
                return self
            def transform(self, X):
                return X.assign(calls_per_year=X["support_calls"] / (1 + X["tenure"] / 12))
        """
    )
    out["functions_and_pipelines: rule"] = ns["churn_rule"]
    out["functions_and_pipelines: pipeline"] = Pipeline(
        [("features", ns["ChurnFeatures"]()), ("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=500))]
    ).fit(Xp, yp)
    out["edge: custom pipeline"] = Pipeline([("features", ns["CallsPerYear"]()), ("model", edge)]).fit(Xp, yp)
    ns["model"] = out["quickstart/container/kubernetes/security: forest"]
    exec(
        "SECRET_COLUMNS = ['tenure', 'monthly', 'support_calls']\ndef churn_v3(df):\n"
        "    return model.predict(df[SECRET_COLUMNS])\n",
        ns,
    )
    out["security: churn_v3 with a list of columns"] = ns["churn_v3"]
    return out


def _estimators() -> dict[str, object]:
    """Fitted scikit-learn, xgboost and lightgbm models on data with string categories."""
    import lightgbm
    import xgboost
    from sklearn.cluster import KMeans
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        HistGradientBoostingClassifier,
        IsolationForest,
        RandomForestClassifier,
    )
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import FunctionTransformer, LabelEncoder, OneHotEncoder, OrdinalEncoder, StandardScaler
    from sklearn.svm import SVC

    rng = np.random.default_rng(3)
    n = 600
    X = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "monthly": rng.normal(70, 20, n),
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "city": rng.choice(["oslo", "rome", "lima", "paris", "new york", "são paulo"], n),
        }
    )
    y = ((X.tenure < 20) ^ (X.city == "rome")).astype(int)
    num, cat = ["tenure", "monthly"], ["plan", "city"]
    prep = ColumnTransformer([("num", StandardScaler(), num), ("cat", OneHotEncoder(handle_unknown="ignore"), cat)])
    texts = [
        " ".join(rng.choice(["late", "bill", "support", "great", "cancel", "refund", "app", "slow"], 6))
        for _ in range(n)
    ]
    Xc = X.astype({"plan": "category", "city": "category"})
    return {
        "random forest": RandomForestClassifier(n_estimators=100).fit(X[num], y),
        "gradient boosting": GradientBoostingClassifier(n_estimators=50).fit(X[num], y),
        "one-hot encoder on cities": OneHotEncoder().fit(X[cat]),
        "standard scaler": StandardScaler().fit(X[num]),
        "column transformer": ColumnTransformer([("c", OneHotEncoder(), cat)], remainder="passthrough").fit(X),
        "gradient boosting pipeline": Pipeline([("prep", prep), ("clf", GradientBoostingClassifier())]).fit(X, y),
        "logistic regression": make_pipeline(prep, LogisticRegression(max_iter=300)).fit(X, y),
        "hist gradient boosting": HistGradientBoostingClassifier(categorical_features="from_dtype").fit(Xc, y),
        "ordinal + isolation forest": make_pipeline(
            ColumnTransformer([("o", OrdinalEncoder(), cat)], remainder="passthrough"), IsolationForest()
        ).fit(X),
        "imputer + knn": make_pipeline(ColumnTransformer([("n", SimpleImputer(), num)]), KNeighborsClassifier()).fit(
            X, y
        ),
        "svc": make_pipeline(prep, SVC()).fit(X, y),
        "kmeans + pca": make_pipeline(
            ColumnTransformer([("n", StandardScaler(), num)]), PCA(2), KMeans(3, n_init=3)
        ).fit(X),
        "ridge with function transformer": make_pipeline(
            ColumnTransformer([("n", FunctionTransformer(np.log1p), num)]), Ridge()
        ).fit(X, X.monthly),
        "label encoder": LabelEncoder().fit(X.city),
        "tfidf text model": make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, y),
        "count vectorizer, token_pattern": CountVectorizer(token_pattern=r"[A-Za-z]{2,}").fit(texts),
        "xgboost": xgboost.XGBClassifier(n_estimators=30, enable_categorical=True, tree_method="hist").fit(Xc, y),
        "xgboost booster": xgboost.XGBRegressor(n_estimators=20).fit(X[num], X.monthly).get_booster(),
        "lightgbm": lightgbm.LGBMClassifier(n_estimators=30, verbose=-1).fit(Xc, y),
        "lightgbm booster": lightgbm.LGBMRegressor(n_estimators=20, verbose=-1).fit(X[num], X.monthly).booster_,
    }


def _notebook_code() -> dict[str, object]:
    """Notebook functions and classes holding the strings real projects hold: paths, URLs, versions, ids."""
    ns = notebook(
        f"""
        import os, hashlib, uuid
        from dataclasses import dataclass, field
        DATA_VERSION = hashlib.sha256(b"customers-2024-06").hexdigest()
        RUN_ID = "{uuid.uuid4()}"
        COMMIT = "{hashlib.sha1(b"x").hexdigest()}"
        MODEL_DIR = "/home/jovyan/work/models/churn"
        PROJECT_DIR = "/Users/MariaGonzalez/Projects/ChurnPrediction/" "Data/Raw/Customers2024Q3"
        WIN_DIR = r"C:\\Users\\maria\\Documents\\ChurnModel\\train_v3.csv"
        FEATURES_PATH = "data/processed/features_v3.parquet"
        API_URL = "https://api.example.com/v1/churn/predict?version=3&region=eu-west-1"
        DB_URL = "postgresql://analytics@db.internal:5432/warehouse"
        S3_URI = "s3://acme-ml-artifacts/churn/models/2024-06-01/model.joblib"
        AWS_REGION = "eu-west-1"
        AWS_PROFILE = "ml-research"
        TOKEN_ENV = "API_TOKEN"
        CONTACT = "maria.gonzalez@example.com"
        FEATURES = ["tenure", "monthly", "support_calls", "plan_basic", "plan_plus", "plan_pro"]
        THRESHOLDS = {{"basic": 0.42, "plus": 0.55, "pro": 0.61}}
        LABELS = dict(zip(range(3), ["stays", "at risk", "churned"]))
        SQL = "SELECT tenure, monthly FROM customers WHERE signup >= %(since)s AND password_reset = false"
        RENAMES = {{"Monthly Charges": "monthly", "Tenure (months)": "tenure"}}

        def score(df, threshold=0.5, columns=("tenure", "monthly")):
            \"\"\"Score with the token read at call time: os.environ['API_TOKEN'], never captured.\"\"\"
            token = os.environ.get(TOKEN_ENV, "")
            path = os.path.join(MODEL_DIR, DATA_VERSION[:12], "model.joblib")
            return df[list(columns)].sum(axis=1) > threshold + len(path + token + API_URL + DB_URL + S3_URI) * 0

        @dataclass
        class Config:
            model_dir: str = MODEL_DIR
            run_id: str = RUN_ID
            features: list = field(default_factory=lambda: list(FEATURES))
            versions: dict = field(default_factory=lambda: {{"data": DATA_VERSION, "code": COMMIT}})

        class Scorer:
            __slots__ = ("config", "thresholds", "region")
            def __init__(self):
                self.config, self.thresholds, self.region = Config(), THRESHOLDS, AWS_REGION
            def predict(self, df):
                return score(df) * len(SQL) * len(RENAMES) * len(LABELS) * len(PROJECT_DIR + WIN_DIR + CONTACT)
        """
    )
    scorer = ns["Scorer"]()
    return {"notebook function": ns["score"], "notebook slotted class": scorer, "notebook config": ns["Config"]()}


def _ordinary_data() -> dict[str, object]:
    """DataFrames and arrays of ordinary data: people, places, ids, hashes, addresses, free text."""
    rng = np.random.default_rng(5)
    n = 3000
    first = rng.choice(["maria", "li", "ahmed", "olga", "john", "aiko", "kwame", "sofia"], n)
    last = rng.choice(["gonzalez", "wang", "khan", "ivanova", "smith", "tanaka", "mensah", "rossi"], n)
    frame = pd.DataFrame(
        {
            "customer_id": [str(uuid.UUID(int=int(rng.integers(0, 2**62)) << 64)) for _ in range(n)],
            "email": [f"{a}.{b}{i}@example.com" for i, (a, b) in enumerate(zip(first, last, strict=True))],
            "email_sha256": [
                hashlib.sha256(f"{a}{b}{i}".encode()).hexdigest()
                for i, (a, b) in enumerate(zip(first, last, strict=True))
            ],
            "city": rng.choice(["oslo", "rome", "lima", "São Paulo", "Zürich", "東京"], n),
            "phone": [f"+47 {rng.integers(10_000_000, 99_999_999)}" for _ in range(n)],
            "ip": [f"10.{rng.integers(0, 255)}.{rng.integers(0, 255)}.{rng.integers(1, 254)}" for _ in range(n)],
            "signup": pd.date_range("2020-01-01", periods=n, freq="h").astype(str),
            "sku": [f"SKU-{rng.integers(10_000, 99_999)}-{rng.choice(['RED', 'BLUE', 'XL'])}" for _ in range(n)],
            "homepage": [f"https://shop.example.com/u/{i}?ref=mail&utm_source=news" for i in range(n)],
            "review": rng.choice(["great app", "too slow, cancelling", "support was helpful!", ""], n),
            "plan": pd.Categorical(rng.choice(["basic", "plus", "pro"], n)),
            "monthly": rng.normal(70, 20, n),
        }
    )
    return {
        "customer frame": frame,
        "customer frame, string dtype": frame.astype({"email": "string", "city": "string"}),
        "feature-name array": np.array(
            [f"num__{c}" for c in ["tenure", "monthly"]] + [f"cat__plan_{p}" for p in ["basic", "plus", "pro"]]
        ),
        "bytes array of codes": np.array([b"NO-OSL", b"IT-ROM", b"PE-LIM"]),
        "object array of hashes": np.array(
            [hashlib.md5(str(i).encode()).hexdigest() for i in range(500)], dtype=object
        ),
        "numeric array": rng.normal(size=(2000, 50)),
        "vocabulary dict": {
            w: i
            for i, w in enumerate(
                f"{a}{b}" for a in ["re", "un", "pre", "over", ""] for b in ["fund", "cancel", "pay", "bill", "slow"]
            )
        },
        "multiindex frame": frame.set_index(["city", "plan"]).head(50),
    }


def _text_and_odd_objects() -> dict[str, object]:
    """Text models, tokenizer-like configs, templates, regexes, paths, dates, random generators, enums."""
    import enum
    import pathlib

    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.utils import Bunch

    texts = [
        "State-of-the-art models won't replace domain expertise; see https://example.org/paper?id=42 for details.",
        "Contact support@acme.io or call +1-555-0100. Token-level F1 improved by 3.2% over the baseline (v2.1.0).",
        "The user's password reset flow (docs/security.md) uses OAuth2 with PKCE; no secrets are stored client-side.",
        "Résumé parsing: naïve Bayes vs. BERT-base-uncased; learning_rate=3e-5, batch_size=32, warmup_steps=500",
    ] * 50
    ns = notebook(
        """
        import re, pathlib, datetime, logging, random
        TOKENIZER_CONFIG = {"pad_token": "[PAD]", "eos_token": "<|endoftext|>", "mask_token": "<mask>",
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "model_max_length": 512,
            "chat_template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{% endfor %}",
            "tokenizer_class": "BertTokenizerFast", "name_or_path": "bert-base-uncased"}
        PATTERN = re.compile(r"(?P<user>[\\w.]+)@(?P<host>[\\w.-]+)")
        ROOT = pathlib.Path("/home/jovyan/work/ChurnProject/Models")
        TRAINED_AT = datetime.datetime(2024, 6, 1, 12, 30)
        log = logging.getLogger("churn")
        rng = random.Random(42)
        TEMPLATE = "postgresql://{user}:{password}@{host}:5432/{db}"
        CONN_FMT = "Server=tcp:{server};Database={db};Uid={user};Pwd=%(password)s;"
        HF_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
        S3_KEY = "churn/2024/06/01/part-00000-8f14e45f-ceea-467f-a0e6-0a1b2c3d4e5f.snappy.parquet"
        SECRET_MANAGER_ARN = "arn:aws:secretsmanager:eu-west-1:1234:secret:db-AbCdEf"  # pragma: allowlist secret
        AUTH_HEADER_NAME = "X-API-Key"
        PASSWORD_MIN_LENGTH = 12

        def featurize(df):
            \"\"\"Lower-case text, strip e-mails like a@b.c.\"\"\"
            return df.assign(clean=df["text"].str.lower().str.replace(PATTERN, "", regex=True))

        def predict(df):
            log.info("predicting %d rows from %s at %s", len(df), ROOT, TRAINED_AT)
            size = len(TOKENIZER_CONFIG) + len(TEMPLATE + CONN_FMT + HF_MODEL + S3_KEY + SECRET_MANAGER_ARN)
            return [size + rng.random() + PASSWORD_MIN_LENGTH + len(AUTH_HEADER_NAME)] * len(df)
        """
    )
    color = enum.Enum("Color", {"RED": "red", "BLUE": "blue"})
    return {
        "count vectorizer on english": CountVectorizer(ngram_range=(1, 2)).fit(texts),
        "tfidf character n-grams": make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)), LogisticRegression()
        ).fit(texts, np.arange(len(texts)) % 2),
        "function transformer of notebook code": make_pipeline(FunctionTransformer(ns["featurize"])),
        "notebook predict with configs and templates": ns["predict"],
        "bunch": Bunch(feature_names=["a", "b"], target_names=np.array(["stay", "churn"]), DESCR="Churn.\n" * 20),
        "enum members": [color.RED, color.BLUE],
        "paths": [pathlib.Path("/Users/MariaGonzalez/Projects/ChurnPrediction/", "Data/Raw/Customers2024Q3")],
        "numpy generators": [np.random.default_rng(0), np.random.RandomState(0)],
        "dates": pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=500, freq="min", tz="Europe/Oslo")}),
        "text frame": pd.DataFrame(
            {"text": texts, "url": [f"https://cdn.example.com/{i}.png?w=200" for i in range(200)]}
        ),
    }


@pytest.fixture(scope="module")
def corpus() -> dict[str, object]:
    return {**_notebook_models(), **_estimators(), **_notebook_code(), **_ordinary_data(), **_text_and_odd_objects()}


@pytest.mark.heavy
def test_the_corpus_of_realistic_objects_has_no_false_positive(corpus):
    found, elapsed = {}, 0.0
    for label, obj in corpus.items():
        payload, _, _ = serialize.dumps(obj)
        start = time.perf_counter()
        findings = secrets.scan(obj, payload)
        elapsed += time.perf_counter() - start
        if findings:
            found[label] = [f.message() for f in findings]
    assert len(corpus) >= 45
    assert found == {}, found
    assert elapsed < 5.0, f"{len(corpus)} objects scanned in {elapsed:.2f} s"


# -- speed -------------------------------------------------------------------------------------------------------------


def _timed_scan(obj) -> float:
    payload, _, _ = serialize.dumps(obj)
    secrets.scan(obj, payload)  # the first call imports detect-secrets
    start = time.perf_counter()
    assert secrets.scan(obj, payload) == []
    return time.perf_counter() - start


@pytest.mark.heavy
def test_a_500_tree_forest_is_scanned_in_well_under_a_second():
    from sklearn.ensemble import RandomForestClassifier

    X, y = _churn(rows=5000)
    forest = RandomForestClassifier(n_estimators=500, random_state=0, n_jobs=2).fit(X, y)
    assert _timed_scan(forest) < 1.0


@pytest.mark.heavy
def test_a_big_pipeline_is_scanned_in_well_under_a_second():
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(9)
    n = 4000
    words = np.array([f"w{i}x{j}" for i in range(200) for j in range(100)])
    X = pd.DataFrame(
        {
            "tenure": rng.integers(0, 72, n),
            "monthly": rng.normal(70, 20, n),
            "product": rng.choice([f"product-{i:05d}" for i in range(3000)], n),
            "text": [" ".join(rng.choice(words, 12)) for _ in range(n)],
        }
    )
    y = (X.tenure < 24).astype(int)
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), ["tenure", "monthly"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["product"]),
            ("txt", TfidfVectorizer(), "text"),
        ]
    )
    pipe = Pipeline([("prep", prep), ("clf", GradientBoostingClassifier(n_estimators=200, max_depth=2))]).fit(X, y)
    assert _timed_scan(pipe) < 1.0


# -- #18 item 6: ordinary identifiers and words under secret-looking names ---------------------------------------------


@pytest.mark.parametrize(
    "name, value",
    [
        ("AUTH_COL", "authentication_method"),
        ("PASSWORD_AGE_COL", "password_age_days"),
        ("TOKEN_COUNT_COL", "tokenCountPerSession"),
        ("SECRET_FLAG", "SecretKeyRotationDays"),
        ("pwd_col", "isPasswordExpired"),
        ("auth", "OAuth2PasswordBearer"),
        ("api_key", "ApiKeyCreatedAt"),
        ("creds", "TotalChargesUSD2024"),
        ("token", "sklearn.feature_extraction.text.CountVectorizer"),
        ("password_hint", "Use the one from the onboarding email"),
        ("secret", "/srv/data/churn/2024/features_v3.parquet"),
        ("auth_endpoint", "https://login.example.com/oauth2/v2.0/authorize?client_id=churn-app"),
        ("token_colour", "#1f77b4"),
        ("SECRET_COLOUR", "#A0B1C2FF"),
        ("pw", "rgba(31, 119, 180, 0.8)"),
        ("secret_owner", "maria.gonzalez@example.com"),
    ],
)
def test_identifiers_phrases_paths_urls_and_colours_are_not_secrets(name, value):
    ns = notebook(f"{name} = {value!r}\ndef model(df):\n    return df[{name}]\n")
    assert _scan(ns["model"]) == []


@pytest.mark.parametrize("n", [12, 16, 24])
def test_random_values_under_secret_names_are_still_refused(n):
    for _ in range(20):
        assert [f.name for f in _scan({"password": _token(n=n)})] == ["password"]


@pytest.mark.parametrize(
    "secret",
    [
        lambda: _aws_id(),
        lambda: f"postgresql://etl:{_token(n=12)}@db/sales",
        lambda: _token("ghp_", 36),
        lambda: f"host=db user=app password={_token(n=12)}",
    ],
)
def test_a_credential_far_into_a_long_text_column_is_found_quickly(secret):
    value = secret()
    rows = [f"customer {i} from oslo" for i in range(200_000)] + [value]  # ~4 MB of text, past the full scan
    arr = np.array(rows).astype("S")
    payload = serialize.dump(arr)
    started = time.perf_counter()
    found = secrets.scan(arr, payload.data, skip_buffers=payload.numeric_buffers)
    assert found and found[0].where == "serialised bytes"
    assert time.perf_counter() - started < 5.0
