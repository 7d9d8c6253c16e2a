"""Turn a fitted scikit-learn (or LightGBM / XGBoost) model into ONNX, or say which step cannot be."""

from __future__ import annotations

import copy
import functools
from typing import Any

from ..errors import EdgeExportError

#: Opsets every onnxruntime since 1.14 runs; the ML domain holds the tree and linear operators.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
_HINT = "serve it with target='local' or target='container', which run the Python object itself"
_INTERNAL = ("sklearn.", "lightgbm.", "xgboost.")


def _kind(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _refuse(step: str, obj: Any, why: str) -> EdgeExportError:
    return EdgeExportError(f"step '{step}' ({type(obj).__qualname__}) cannot be exported to ONNX: {why}", hint=_HINT)


@functools.cache
def _register_boosters() -> None:
    """Teach skl2onnx the LightGBM and XGBoost estimators (their converters live in onnxmltools)."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    except ImportError:
        pass
    else:
        update_registered_converter(
            LGBMClassifier,
            "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes,
            convert_lightgbm,
            options=classifier_options,
        )
        update_registered_converter(
            LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes, convert_lightgbm
        )
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor
    except ImportError:
        pass
    else:
        update_registered_converter(
            XGBClassifier,
            "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes,
            convert_xgboost,
            options=classifier_options,
        )
        update_registered_converter(
            XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes, convert_xgboost
        )


def _leaves(obj: Any, step: str) -> list[tuple[str, Any]]:
    """Every estimator inside pipelines, column transformers and feature unions, with its step path."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import FeatureUnion, Pipeline

    if isinstance(obj, Pipeline):
        return [leaf for name, sub in obj.steps for leaf in _leaves(sub, f"{step}.{name}" if step else name)]
    if isinstance(obj, ColumnTransformer):
        subs = [(n, t) for n, t, _ in obj.transformers_ if not isinstance(t, str)]
        return [(step or "columns", obj)] + [leaf for n, t in subs for leaf in _leaves(t, f"{step}.{n}".strip("."))]
    if isinstance(obj, FeatureUnion):
        return [leaf for n, t in obj.transformer_list if not isinstance(t, str) for leaf in _leaves(t, f"{step}.{n}")]
    return [(step or type(obj).__name__, obj)]


def check_convertible(obj: Any) -> None:
    """Refuse, naming the step and its type, what no ONNX converter knows: notebook code, custom classes."""
    if not hasattr(obj, "predict") or not hasattr(obj, "get_params"):
        raise _refuse(getattr(obj, "__name__", type(obj).__name__), obj, "only fitted estimators and pipelines can be")
    _register_boosters()
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from sklearn.preprocessing import FunctionTransformer

    for step, leaf in _leaves(obj, ""):
        if isinstance(leaf, FunctionTransformer) and leaf.func is not None:  # func None: identity, as passthrough
            fn = getattr(leaf.func, "__qualname__", repr(leaf.func))
            raise _refuse(step, leaf, f"it wraps the Python function {fn}(), which ONNX cannot express")
        if type(leaf).__module__ == "__main__":
            raise _refuse(step, leaf, "it is defined in the notebook, and ONNX converters only know library classes")
        if not _kind(leaf).startswith(_INTERNAL):
            raise _refuse(step, leaf, f"{_kind(leaf)} is not a scikit-learn, LightGBM or XGBoost class")
        if type(leaf) not in sklearn_operator_name_map:
            raise _refuse(step, leaf, "no ONNX converter is registered for it")


def input_types(obj: Any, schema: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    """ONNX inputs from the sample schema: one per column when a ColumnTransformer selects columns
    by name (mode ``columns``), else one float matrix of every column in order (mode ``matrix``)."""
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if schema["kind"] == "ndarray":
        return "matrix", [("input", FloatTensorType([None, schema["n_features"]]))]
    first = obj
    while isinstance(first, Pipeline):
        first = first.steps[0][1]
    columns = schema["columns"]
    by_column = isinstance(first, ColumnTransformer)
    types: list[tuple[str, Any]] = []
    for col in columns:
        kind = col["kind"]
        if kind in ("string", "category"):
            if not by_column:
                raise EdgeExportError(
                    f"column '{col['name']}' holds strings, but the model's first step does not select columns by name",
                    hint="put a ColumnTransformer (e.g. with a OneHotEncoder) first, or use target='local'",
                )
            types.append((col["name"], StringTensorType([None, 1])))
        elif kind == "integer" and by_column and not col.get("nullable"):
            types.append((col["name"], Int64TensorType([None, 1])))
        elif kind in ("integer", "float", "bool"):
            types.append((col["name"], FloatTensorType([None, 1])))
        else:
            raise EdgeExportError(
                f"column '{col['name']}' has kind {kind}, which the edge bundle cannot take",
                hint="convert it to numbers or strings before training, or use target='local'",
            )
    if by_column:
        return "columns", types
    return "matrix", [("input", FloatTensorType([None, len(columns)]))]


def _without_booster_names(obj: Any) -> Any:
    """A copy whose XGBoost boosters forget the DataFrame's feature names (onnxmltools wants f0, f1, ...)."""
    if not any(type(leaf).__module__.startswith("xgboost.") for _, leaf in _leaves(obj, "")):
        return obj
    obj = copy.deepcopy(obj)
    for _, leaf in _leaves(obj, ""):
        if type(leaf).__module__.startswith("xgboost."):
            leaf.get_booster().feature_names = None
    return obj


def to_onnx(obj: Any, schema: dict[str, Any]) -> tuple[Any, str]:
    """The ONNX model of ``obj`` and its input mode; raises EdgeExportError naming what failed."""
    check_convertible(obj)
    mode, inputs = input_types(obj, schema)
    from skl2onnx import convert_sklearn

    obj = _without_booster_names(obj)
    options = {id(leaf): {"zipmap": False} for _, leaf in _leaves(obj, "") if hasattr(leaf, "predict_proba")}
    try:
        onx = convert_sklearn(obj, initial_types=inputs, target_opset=TARGET_OPSET, options=options)
    except Exception as exc:  # the converters raise many kinds; name the model and keep the cause
        raise EdgeExportError(
            f"skl2onnx could not convert {type(obj).__qualname__}: {type(exc).__name__}: {exc}"[:600], hint=_HINT
        ) from exc
    return onx, mode
