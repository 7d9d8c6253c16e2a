"""What each model family becomes when compiled: an ONNX graph for the costly part, and the arrays and rule with
which the service's numpy head (``runtime.compiled``) finishes the answer as the Python model does.

Tree ensembles become one ``TreeEnsemble`` operator (ai.onnx.ml opset 5, double precision) that returns each
tree's leaf; the head sums the leaves' values in the order the library sums them, so probabilities come out bit for
bit. scikit-learn compares ``float32(x)`` with a float64 threshold, so each threshold becomes the largest double
``w`` with ``x <= w`` exactly when ``float32(x) <= threshold``; XGBoost compares float32 with float32 (``<``),
LightGBM and HistGradientBoosting compare float64. Linear models become MatMul + Add in double. Steps before the
last one are converted by skl2onnx with double inputs. Anything else raises ``Refusal`` with a sentence naming
the step (the caller serves the Python model and records it).
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .edge.convert import TARGET_OPSET, check_convertible
from .errors import EdgeExportError

#: ai.onnx.ml opset of the ``TreeEnsemble`` operator (onnxruntime runs it from 1.20 on, double included).
ML_OPSET = 5
_FEATURES = "nbd_features"
#: Tree nodes per TreeEnsemble operator (about 1 MB of them): see ``_Forest.nodes``.
NODES_PER_OPERATOR = 32_768
_OUT = "nbd_out"
_LINEAR = (
    "LinearRegression", "Ridge", "RidgeCV", "Lasso", "LassoCV", "ElasticNet", "ElasticNetCV", "SGDRegressor",
    "LogisticRegression", "LogisticRegressionCV", "RidgeClassifier", "RidgeClassifierCV", "LinearSVC",
    "LinearSVR", "SGDClassifier", "Perceptron",
)  # fmt: skip
_LGBM_OBJECTIVES = ("regression", "regression_l1", "huber", "fair", "quantile", "mape", "binary", "multiclass")
_XGB_OBJECTIVES = {
    "reg:squarederror": "value", "reg:absoluteerror": "value", "reg:pseudohubererror": "value",
    "binary:logistic": "expit", "multi:softprob": "softmax", "multi:softmax": "softmax",
}  # fmt: skip


class Refusal(Exception):
    """The model cannot be compiled exactly; the message is the reason the record keeps (one sentence)."""


@dataclass
class Plan:
    """A compiled model before it is written: the graph, the head's arrays and rule, and how to feed it."""

    onnx: Any
    head: dict[str, Any]
    tables: dict[str, np.ndarray]
    inputs: dict[str, Any]
    backend: str
    #: (input column, threshold) pairs of the trees when they read the input columns directly: the generated
    #: parity rows sit on and beside them.
    splits: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))


def _name(step: str, obj: Any) -> str:
    kind = type(obj).__qualname__
    return kind if step == type(obj).__name__ else f"step '{step}' ({kind})"


def _flatten(obj: Any) -> list[tuple[str, Any]]:
    from sklearn.pipeline import Pipeline

    if not isinstance(obj, Pipeline):
        return [(type(obj).__name__, obj)]
    steps: list[tuple[str, Any]] = []
    for name, step in obj.steps:
        if step is None or step == "passthrough":
            continue
        steps.extend(_flatten(step) if isinstance(step, Pipeline) else [(name, step)])
    return steps


# --- trees ------------------------------------------------------------------------------------------------------


def below_float32(t: np.ndarray) -> np.ndarray:
    """The largest double ``w`` with ``x <= w`` exactly when ``float32(x) <= t``, for every double ``x``: x rounds
    to a float32 at most ``f`` (the largest float32 <= t) below the midpoint to the next float32, and at the
    midpoint when the tie goes to ``f`` (even last bit)."""
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(over="ignore"):
        f = t.astype(np.float32)
    over = f.astype(np.float64) > t
    f[over] = np.nextafter(f[over], np.float32(-np.inf))
    g = np.nextafter(f, np.float32(np.inf))
    f64 = f.astype(np.float64)
    with np.errstate(invalid="ignore"):
        step = np.where(np.isinf(g), 2.0**104, g.astype(np.float64) - f64)  # beyond float32's max: its last step
    mid = f64 + step / 2
    even = (f.view(np.uint32) & 1) == 0
    return np.where(even, mid, np.nextafter(mid, -np.inf))


@dataclass
class _Tree:
    """One tree as the TreeEnsemble operator's arrays, numbered within the tree (nodes, then leaves)."""

    feature: np.ndarray
    split: np.ndarray
    missing: np.ndarray
    true_id: np.ndarray
    true_leaf: np.ndarray
    false_id: np.ndarray
    false_leaf: np.ndarray
    n_leaves: int


@dataclass
class _Forest:
    """Trees for the TreeEnsemble operator; leaf ``i`` (over all trees) weighs ``i``: its row in ``values``."""

    n_out: int
    dtype: Any
    trees: list[_Tree] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)
    #: the output each tree adds to, for ensembles of one tree per class and iteration (boosting)
    outputs: list[int] = field(default_factory=list)

    def add(
        self,
        left: Any,
        right: Any,
        feature: Any,
        split: Any,
        missing_left: Any,
        value: np.ndarray,
        output: int | None = None,
    ) -> None:
        """One tree in array form (node ids index every array; ``left == -1`` marks a leaf, whose row of
        ``value`` (n_nodes x n_out) is what the tree adds, or whose ``value`` (n_nodes) it adds to ``output``);
        ``x <= split`` and ``missing_left`` go left."""
        left, right = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
        leaf = left < 0
        inner, leaves = np.flatnonzero(~leaf), np.flatnonzero(leaf)
        if inner.size == 0:  # a lone leaf: the operator needs a node above it, both ways to the leaf
            one, zero = np.ones(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
            tree = _Tree(zero, np.zeros(1), zero, zero, one, zero, one, 1)
        else:
            pos = np.full(len(left), -1, dtype=np.int64)
            pos[inner] = np.arange(inner.size)
            pos[leaves] = np.arange(leaves.size)
            lc, rc = left[inner], right[inner]
            tree = _Tree(
                np.asarray(feature, dtype=np.int64)[inner],
                np.asarray(split, dtype=np.float64)[inner],
                np.asarray(missing_left, dtype=np.int64)[inner],
                pos[lc],
                leaf[lc].astype(np.int64),
                pos[rc],
                leaf[rc].astype(np.int64),
                int(leaves.size),
            )
        self.trees.append(tree)
        if output is None:
            self.values.append(np.asarray(value, dtype=self.dtype).reshape(len(left), self.n_out)[leaves])
        else:
            self.values.append(np.asarray(value, dtype=self.dtype).reshape(len(left))[leaves])
            self.outputs.append(output)
        assert not self.outputs or len(self.outputs) == len(self.trees), "every tree adds to one output, or none"

    def nodes(self, source: str, output: str, graph_dtype: Any) -> list[Any]:
        """TreeEnsemble nodes (``source`` (n, features) in, each tree's leaf number (n, trees) out, in
        ``graph_dtype``), one per ~NODES_PER_OPERATOR nodes: onnxruntime walks an operator's trees row by row,
        and trees that stay in cache make a 20k-row frame 3x faster (the leaves' values stay in ``values``)."""
        from onnx import helper

        chunks: list[list[int]] = [[]]
        size = 0
        for t, tree in enumerate(self.trees):
            if chunks[-1] and size + len(tree.feature) > NODES_PER_OPERATOR:
                chunks.append([])
                size = 0
            chunks[-1].append(t)
            size += len(tree.feature)
        first_leaf = np.concatenate([[0], np.cumsum([tree.n_leaves for tree in self.trees])])
        if len(chunks) == 1:
            return [self._operator(chunks[0], source, output, graph_dtype, first_leaf)]
        names = [f"{output}_{i}" for i in range(len(chunks))]
        ops = [self._operator(c, source, n, graph_dtype, first_leaf) for c, n in zip(chunks, names, strict=True)]
        return [*ops, helper.make_node("Concat", names, [output], axis=1)]

    def _operator(self, trees: list[int], source: str, output: str, graph_dtype: Any, first_leaf: np.ndarray) -> Any:
        from onnx import helper, numpy_helper

        part = [self.trees[t] for t in trees]
        node0 = np.concatenate([[0], np.cumsum([len(tree.feature) for tree in part])])
        leaf0 = np.concatenate([[0], np.cumsum([tree.n_leaves for tree in part])])

        def ids(tree: _Tree, i: int, side: str) -> np.ndarray:
            is_leaf = getattr(tree, f"{side}_leaf")
            return np.where(is_leaf == 1, leaf0[i], node0[i]) + getattr(tree, f"{side}_id")

        def cat(arrays: list[np.ndarray]) -> list[int]:
            return np.concatenate(arrays).astype(np.int64).tolist()

        splits = np.concatenate([tree.split for tree in part]).astype(graph_dtype)
        weights = np.concatenate([first_leaf[t] + np.arange(self.trees[t].n_leaves) for t in trees])
        return helper.make_node(
            "TreeEnsemble",
            [source],
            [output],
            domain="ai.onnx.ml",
            n_targets=len(trees),
            aggregate_function=1,  # SUM: each tree adds its leaf's number to its own output column
            post_transform=0,
            tree_roots=node0[:-1].tolist(),
            nodes_featureids=cat([tree.feature for tree in part]),
            nodes_splits=numpy_helper.from_array(splits),
            nodes_modes=numpy_helper.from_array(np.zeros(len(splits), dtype=np.uint8)),  # BRANCH_LEQ
            nodes_truenodeids=cat([ids(tree, i, "true") for i, tree in enumerate(part)]),
            nodes_trueleafs=cat([tree.true_leaf for tree in part]),
            nodes_falsenodeids=cat([ids(tree, i, "false") for i, tree in enumerate(part)]),
            nodes_falseleafs=cat([tree.false_leaf for tree in part]),
            nodes_missing_value_tracks_true=cat([tree.missing for tree in part]),
            leaf_targetids=cat([np.full(tree.n_leaves, i) for i, tree in enumerate(part)]),
            leaf_weights=numpy_helper.from_array(weights.astype(graph_dtype)),
        )

    def tables(self) -> dict[str, np.ndarray]:
        """The head's arrays: ``values`` by leaf number, and ``outputs`` when each tree adds to one output."""
        out = {"values": np.concatenate(self.values).astype(self.dtype)}
        return out | ({"outputs": np.asarray(self.outputs, dtype=np.int64)} if self.outputs else {})


def _sk_tree(
    forest: _Forest, tree: Any, value: np.ndarray, precision: str, raw: list[np.ndarray], output: int | None = None
) -> None:
    """A scikit-learn ``Tree``: it compares float32(x) with float64 thresholds, NaN goes by missing_go_to_left."""
    thr = tree.threshold
    split = below_float32(thr) if precision == "float64" else thr.astype(np.float32)
    missing = getattr(tree, "missing_go_to_left", np.zeros(tree.node_count, dtype=np.uint8))
    forest.add(tree.children_left, tree.children_right, tree.feature, split, missing, value, output)
    raw.append(np.stack([tree.feature[tree.children_left >= 0], thr[tree.children_left >= 0]], axis=1))


def _proba_values(est: Any) -> np.ndarray:
    """Leaf probabilities as ``predict_proba`` of this scikit-learn computes them (same operations, same bits):
    the stored fractions, divided by their sum by releases whose predict_proba still normalises."""
    proba = est.tree_.value[:, 0, : est.n_classes_].copy()
    if _normalizes(type(est)):
        normalizer = proba.sum(axis=1)[:, np.newaxis]
        normalizer[normalizer == 0.0] = 1.0
        proba /= normalizer
    return proba


def _normalizes(cls: Any) -> bool:
    import inspect

    try:
        return "normalizer" in inspect.getsource(cls.predict_proba)
    except (OSError, TypeError):
        return True


def _check_single_output(step: str, est: Any) -> None:
    if getattr(est, "n_outputs_", 1) != 1 and hasattr(est, "classes_"):
        raise Refusal(f"{_name(step, est)} predicts several outputs, which the compiled path does not serve")


def _sklearn_trees(step: str, est: Any, precision: str) -> tuple[_Forest, dict[str, Any], np.ndarray, list[Any]]:
    """Decision trees and forests: the head averages (forests) the leaves' rows, then argmax for classes."""
    from sklearn.base import is_classifier

    _check_single_output(step, est)
    trees = list(est.estimators_) if hasattr(est, "estimators_") else [est]
    classifier = is_classifier(est)
    n_out = len(est.classes_) if classifier else est.n_outputs_
    forest, raw = _Forest(n_out, np.float64), list[Any]()
    for tree in trees:
        value = _proba_values(tree) if classifier else tree.tree_.value[:, :, 0]
        _sk_tree(forest, tree.tree_, value, precision, raw)
    head: dict[str, Any] = {"average": len(trees) if hasattr(est, "estimators_") else None}
    if classifier:
        head |= {"predict": "argmax_proba", "proba": "identity"}
    else:
        head |= {"predict": "value", "squeeze": n_out == 1}
    return forest, head, np.zeros(n_out), raw


def _gradient_boosting(step: str, est: Any, precision: str) -> tuple[_Forest, dict[str, Any], np.ndarray, list[Any]]:
    """GradientBoosting: init + learning_rate * each stage's tree value, summed stage after stage."""
    from sklearn.base import is_classifier
    from sklearn.dummy import DummyClassifier, DummyRegressor

    classifier = is_classifier(est)
    loss = type(est._loss).__name__
    if classifier and loss not in ("HalfBinomialLoss", "HalfMultinomialLoss"):
        raise Refusal(f"{_name(step, est)} uses loss '{est.loss}', whose probabilities the compiled path lacks")
    if est.init_ != "zero" and not isinstance(est.init_, DummyClassifier | DummyRegressor):
        raise Refusal(f"{_name(step, est)} starts from init={type(est.init_).__name__}, which is not a constant")
    k = est.estimators_.shape[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init = est._raw_predict_init(np.zeros((1, est.n_features_in_), dtype=np.float32))[0]
    forest, raw = _Forest(k, np.float64), list[Any]()
    for stage in est.estimators_:
        for j, tree in enumerate(e.tree_ for e in stage):
            _sk_tree(forest, tree, est.learning_rate * tree.value[:, 0, 0], precision, raw, output=j)
    if classifier:
        head = {"predict": "margin_ge0", "proba": "expit" if k == 1 else "softmax", "decision": True}
    else:
        head = {"predict": "value", "squeeze": True}
    return forest, head, np.asarray(init, dtype=np.float64), raw


def _hist_gradient_boosting(step: str, est: Any, precision: str) -> tuple[_Forest, dict[str, Any], np.ndarray, list]:
    """HistGradientBoosting: baseline + each predictor's leaf value; float64 comparisons, NaN by the node's side."""
    from sklearn.base import is_classifier

    if getattr(est, "is_categorical_", None) is not None and np.any(est.is_categorical_):
        raise Refusal(f"{_name(step, est)} splits on categorical features, which the compiled path does not encode")
    link = type(est._loss.link).__name__
    if link not in ("IdentityLink", "LogitLink", "MultinomialLogit", "LogLink"):
        raise Refusal(f"{_name(step, est)} uses a {link}, which the compiled path does not apply")
    k = est.n_trees_per_iteration_
    forest, raw = _Forest(k, np.float64), list[Any]()
    for iteration in est._predictors:
        for j, predictor in enumerate(iteration):
            nodes = predictor.nodes
            leaf = nodes["is_leaf"].astype(bool)
            left = np.where(leaf, -1, nodes["left"].astype(np.int64))
            split = nodes["num_threshold"] if precision == "float64" else nodes["num_threshold"].astype(np.float32)
            missing = nodes["missing_go_to_left"]
            forest.add(left, nodes["right"], nodes["feature_idx"], split, missing, nodes["value"], output=j)
            raw.append(np.stack([nodes["feature_idx"][~leaf], nodes["num_threshold"][~leaf]], axis=1))
    if is_classifier(est):
        head = {"predict": "margin_gt0", "proba": "expit" if k == 1 else "softmax", "decision": True}
    else:
        head = {"predict": "value", "squeeze": True, "link": "exp" if link == "LogLink" else "identity"}
    return forest, head, np.asarray(est._baseline_prediction, dtype=np.float64).ravel(), raw


def _lightgbm(step: str, est: Any, precision: str) -> tuple[_Forest, dict[str, Any], np.ndarray, list[Any]]:
    """LightGBM: float64 comparisons, NaN by default_left (missing_type NaN) or as 0.0 (missing_type None)."""
    dump = est.booster_.dump_model()
    objective = str(dump.get("objective", "")).split(" ")[0]
    if objective not in _LGBM_OBJECTIVES or dump.get("average_output"):
        raise Refusal(f"{_name(step, est)} has objective '{dump.get('objective')}', which the compiled path lacks")
    sigmoid = next((float(p.split(":")[1]) for p in str(dump["objective"]).split() if p.startswith("sigmoid:")), 1.0)
    if objective == "binary" and sigmoid != 1.0:
        raise Refusal(f"{_name(step, est)} uses sigmoid={sigmoid}; the compiled path applies the standard one")
    k = int(dump["num_tree_per_iteration"])
    forest, raw = _Forest(k, np.float64), list[Any]()
    for i, info in enumerate(dump["tree_info"]):
        nodes: list[dict[str, Any]] = []
        _walk_lgbm(step, est, info["tree_structure"], nodes)
        ids = {id(n): j for j, n in enumerate(nodes)}
        left = [ids[id(n["left_child"])] if "left_child" in n else -1 for n in nodes]
        right = [ids[id(n["right_child"])] if "right_child" in n else -1 for n in nodes]
        thr = np.array([n.get("threshold", 0.0) for n in nodes], dtype=np.float64)
        # missing_type None: NaN is read as 0.0, so it goes where 0.0 goes
        missing = [
            n.get("default_left", False) if n.get("missing_type") == "NaN" else t >= 0.0
            for n, t in zip(nodes, thr, strict=True)
        ]
        value = np.array([n.get("leaf_value", 0.0) for n in nodes], dtype=np.float64)
        split = thr if precision == "float64" else thr.astype(np.float32)
        feature = [n.get("split_feature", 0) for n in nodes]
        forest.add(left, right, feature, split, missing, value, output=i % k)
        inner = np.asarray(left) >= 0
        raw.append(np.stack([np.asarray(feature)[inner], thr[inner]], axis=1))
    head: dict[str, Any] = {"predict": "value", "squeeze": True}
    if objective in ("binary", "multiclass"):
        proba = "expit" if objective == "binary" else "softmax"
        head = {"predict": "argmax_proba", "proba": proba, "decision": True}  # decision_function: the raw margin
    return forest, head, np.zeros(k), raw


#: LightGBM reads a value within this of zero as zero (``kZeroThreshold``, 1e-35f) before any split.
_LGBM_ZERO = float(np.float32(1e-35))


def _lightgbm_zeros(nodes: list[Any], inits: list[Any], dtype: Any) -> str:
    """Append ``where(|x| <= kZeroThreshold, 0, x)`` to the graph (NaN stays NaN); return the new features."""
    from onnx import helper, numpy_helper

    inits += [
        numpy_helper.from_array(np.array(_LGBM_ZERO, dtype=dtype), "nbd_lgbm_kzero"),
        numpy_helper.from_array(np.array(0.0, dtype=dtype), "nbd_lgbm_zero"),
    ]
    nodes += [
        helper.make_node("Abs", [_FEATURES], ["nbd_lgbm_abs"]),
        helper.make_node("LessOrEqual", ["nbd_lgbm_abs", "nbd_lgbm_kzero"], ["nbd_lgbm_tiny"]),
        helper.make_node("Where", ["nbd_lgbm_tiny", "nbd_lgbm_zero", _FEATURES], ["nbd_lgbm_features"]),
    ]
    return "nbd_lgbm_features"


def _walk_lgbm(step: str, est: Any, node: dict[str, Any], out: list[dict[str, Any]]) -> None:
    out.append(node)
    if "leaf_value" in node:
        return
    if node.get("decision_type") != "<=" or node.get("missing_type") not in ("None", "NaN"):
        raise Refusal(
            f"{_name(step, est)} has a split of type {node.get('decision_type')} with missing_type "
            f"{node.get('missing_type')} (categorical or zero-as-missing), which the compiled path does not encode"
        )
    _walk_lgbm(step, est, node["left_child"], out)
    _walk_lgbm(step, est, node["right_child"], out)


def _xgboost(step: str, est: Any, precision: str) -> tuple[_Forest, dict[str, Any], np.ndarray, list[Any]]:
    """XGBoost: float32 features, ``x < split`` in float32, NaN by default_left; margins summed in float32."""
    model = json.loads(est.get_booster().save_raw("json"))["learner"]
    objective = model["objective"]["name"]
    booster = model["gradient_booster"]
    if booster["name"] != "gbtree" or objective not in _XGB_OBJECTIVES:
        raise Refusal(f"{_name(step, est)} uses {booster['name']} with objective '{objective}', not compiled")
    if objective == "multi:softmax":
        raise Refusal(f"{_name(step, est)} uses objective multi:softmax, whose probabilities XGBoost does not give")
    if not np.isnan(getattr(est, "missing", np.nan)):
        raise Refusal(f"{_name(step, est)} reads missing={est.missing} as missing; the compiled path reads NaN")
    trees, tree_info = booster["model"]["trees"], booster["model"]["tree_info"]
    best = est.get_booster().attr("best_iteration")  # early stopping: predict uses the trees up to it
    if best is not None:
        end = booster["model"]["iteration_indptr"][int(best) + 1]
        trees, tree_info = trees[:end], tree_info[:end]
    k = max(tree_info) + 1 if tree_info else 1
    forest, raw = _Forest(k, np.float32), list[Any]()
    for tree, group in zip(trees, tree_info, strict=True):
        if any(tree["split_type"]) or int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
            raise Refusal(f"{_name(step, est)} has categorical or vector-leaf trees, which are not compiled")
        left = np.asarray(tree["left_children"], dtype=np.int64)
        cond = np.asarray(tree["split_conditions"], dtype=np.float32)
        below = np.nextafter(cond, np.float32(-np.inf))  # float32(x) < c  <=>  float32(x) <= the float32 below c
        split = below_float32(below) if precision == "float64" else below
        # a leaf keeps its value in split_conditions
        forest.add(left, tree["right_children"], tree["split_indices"], split, tree["default_left"], cond, group)
        inner = left >= 0
        raw.append(np.stack([np.asarray(tree["split_indices"])[inner], cond[inner].astype(np.float64)], axis=1))
    base = np.asarray(json.loads(model["learner_model_param"]["base_score"].replace("E", "e")), dtype=np.float32)
    kind = _XGB_OBJECTIVES[objective]
    if kind == "expit":  # base_score is a probability: the margin starts at its logit, as XGBoost computes it
        base = -np.log(np.float32(1) / base - np.float32(1))
    head: dict[str, Any] = {"predict": "argmax_proba", "proba": kind} if kind != "value" else {"predict": "value"}
    head |= {"squeeze": True} if kind == "value" else {}
    return forest, head, np.broadcast_to(base.ravel(), (k,)).copy(), raw


# --- linear models -----------------------------------------------------------------------------------------------


def _linear(step: str, est: Any, precision: str) -> tuple[list[Any], list[Any], dict[str, Any]]:
    """``X @ coef_.T + intercept_`` as MatMul + Add, then scikit-learn's rule (``> 0`` or argmax, expit/softmax)."""
    from onnx import numpy_helper
    from sklearn.base import is_classifier

    dtype = np.float64 if precision == "float64" else np.float32
    coef = np.asarray(est.coef_, dtype=np.float64)
    coef = coef.reshape(1, -1) if coef.ndim == 1 else coef
    intercept = np.broadcast_to(np.asarray(est.intercept_, dtype=np.float64), (coef.shape[0],))
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(coef.T).astype(dtype), "nbd_coef"),
        numpy_helper.from_array(intercept.astype(dtype), "nbd_intercept"),
    ]
    from onnx import helper

    nodes = [
        helper.make_node("MatMul", [_FEATURES, "nbd_coef"], ["nbd_scores"]),
        helper.make_node("Add", ["nbd_scores", "nbd_intercept"], [_OUT]),
    ]
    if not is_classifier(est):
        return nodes, inits, {"predict": "value", "squeeze": bool(np.ndim(est.coef_) == 1)}
    head: dict[str, Any] = {"predict": "margin_gt0", "decision": True}
    if type(est).__name__.startswith("LogisticRegression"):
        if getattr(est, "multi_class", "auto") == "ovr":
            raise Refusal(f"{_name(step, est)} is one-vs-rest, whose probabilities the compiled path lacks")
        head["proba"] = "expit" if coef.shape[0] == 1 else "softmax"
    elif type(est).__name__ == "SGDClassifier" and est.loss == "log_loss":
        head["proba"] = "expit" if coef.shape[0] == 1 else "ovr"  # _predict_proba_lr: expit, normalised
    return nodes, inits, head


# --- the whole model --------------------------------------------------------------------------------------------


def _final(step: str, est: Any, precision: str) -> tuple[str, Any]:
    """Which family the last step belongs to, or the reason it has no exact compiled form."""
    kind = type(est).__name__
    module = type(est).__module__
    if module.startswith("sklearn.tree") or module.startswith("sklearn.ensemble._forest"):
        return "trees", _sklearn_trees
    if kind in ("GradientBoostingClassifier", "GradientBoostingRegressor"):
        return "trees", _gradient_boosting
    if kind in ("HistGradientBoostingClassifier", "HistGradientBoostingRegressor"):
        return "trees", _hist_gradient_boosting
    if module.startswith("lightgbm.") and kind in ("LGBMClassifier", "LGBMRegressor"):
        return "trees", _lightgbm
    if module.startswith("xgboost.") and kind in ("XGBClassifier", "XGBRegressor"):
        return "trees", _xgboost
    if kind in _LINEAR and module.startswith(("sklearn.linear_model", "sklearn.svm")):
        return "linear", _linear
    raise Refusal(
        f"{_name(step, est)} has no exact compiled form: the compiled path covers scikit-learn trees and forests, "
        "(Hist)GradientBoosting, linear models, LightGBM and XGBoost"
    )


def _double_types(pre: Any, schema: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """ONNX inputs in double: one per column when the first step picks columns by name, else one matrix."""
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer

    if schema.get("library") == "polars":
        raise Refusal("the sample is a polars frame, which the compiled path does not read")
    if schema["kind"] == "ndarray":
        if np.dtype(schema["dtype"]).kind not in "iufb":
            raise Refusal(f"the sample array holds {schema['dtype']}, which the compiled path does not read")
        return {"mode": "matrix", "name": "input"}, [("input", DoubleTensorType([None, schema["n_features"]]))]
    first = _flatten(pre)[0][1] if pre is not None else None
    by_column = isinstance(first, ColumnTransformer)
    feeds, types = [], []
    for j, col in enumerate(schema["columns"]):
        kind = col["kind"]
        if kind in ("string", "category"):
            if not by_column:
                raise Refusal(
                    f"column '{col['name']}' holds strings, and the model's first step is no ColumnTransformer"
                )
            if col.get("nullable"):
                raise Refusal(f"column '{col['name']}' has missing strings, which an ONNX string input cannot hold")
            if kind == "category" and "categories_dtype" in col:
                raise Refusal(f"column '{col['name']}' has categories that are not strings")
            feeds.append({"name": col["name"], "column": j, "type": "string"})
            types.append((col["name"], StringTensorType([None, 1])))
        elif kind in ("integer", "float", "bool"):  # nullable and arrow dtypes hold pd.NA: read as NaN
            feeds.append({"name": col["name"], "column": j, "type": "double", "masked": bool(col.get("ext"))})
            types.append((col["name"], DoubleTensorType([None, 1])))
        else:
            raise Refusal(f"column '{col['name']}' has kind {kind}, which the compiled path does not read")
    masked = any(f.get("masked") for f in feeds)
    if by_column:
        return {"mode": "columns", "feeds": feeds}, types
    return {"mode": "matrix", "name": "input", "masked": masked}, [("input", DoubleTensorType([None, len(feeds)]))]


def _preprocess(pre: Any, steps: list[tuple[str, Any]], types: list[tuple[str, Any]]) -> Any:
    """The steps before the last as an ONNX graph in double (skl2onnx), checked to load in onnxruntime."""
    import onnxruntime
    from skl2onnx import convert_sklearn

    try:
        onx = convert_sklearn(pre, initial_types=types, target_opset=TARGET_OPSET)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"[:300]
        raise Refusal(f"skl2onnx could not convert {_steps(steps)} in double: {why}") from None
    try:
        onnxruntime.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # e.g. an ai.onnx.ml operator onnxruntime runs in float only
        op = re.search(r"implementation for (\w+)\(", str(exc))
        why = f"it has no double kernel for the {op.group(1)} operator" if op else f"{exc}"[:300]
        version = onnxruntime.__version__
        raise Refusal(f"{_blame(steps)} cannot run in double precision in onnxruntime {version}: {why}") from None
    return onx


def _steps(steps: list[tuple[str, Any]]) -> str:
    return ", ".join(_name(n, s) for n, s in steps)


def _blame(steps: list[tuple[str, Any]]) -> str:
    """The first step whose own double graph onnxruntime refuses (converted alone), else all of them."""
    import onnxruntime
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType

    from .edge.convert import _leaves

    for name, step in steps:
        for leaf_name, leaf in _leaves(step, name):
            width = getattr(leaf, "n_features_in_", None)
            if width is None:
                continue
            try:
                types = [("input", DoubleTensorType([None, width]))]
                onx = convert_sklearn(leaf, initial_types=types, target_opset=TARGET_OPSET)
                onnxruntime.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
            except Exception:
                return _name(leaf_name, leaf)
    return _steps(steps)


def plan(obj: Any, schema: dict[str, Any], precision: str = "float64") -> Plan:
    """The compiled form of ``obj`` (an estimator or pipeline), or ``Refusal`` naming what has none.

    ``precision="float32"`` compiles as the float32 ONNX operators would (thresholds rounded to float32): only
    for showing that the parity check catches it.
    """
    import onnxruntime
    from onnx import TensorProto, helper

    try:
        check_convertible(obj)
    except EdgeExportError as exc:
        raise Refusal(exc.message) from None
    steps = _flatten(obj)
    (step, est), before = steps[-1], steps[:-1]
    family, build = _final(step, est, precision)
    pre = None
    if before:
        from sklearn.pipeline import Pipeline

        pre = Pipeline(before) if len(before) > 1 else before[0][1]
    inputs, types = _double_types(pre, schema)
    onnx_dtype = TensorProto.DOUBLE if precision == "float64" else TensorProto.FLOAT
    if pre is not None:
        graph = _preprocess(pre, before, types).graph
        nodes, inits = list(graph.node), list(graph.initializer)
        source, graph_inputs = graph.output[0].name, list(graph.input)
    else:
        nodes, inits, source = [], [], inputs["name"]
        graph_inputs = [helper.make_tensor_value_info(source, TensorProto.DOUBLE, [None, types[0][1].shape[1]])]
    nodes.append(helper.make_node("Cast", [source], [_FEATURES], to=onnx_dtype))
    tables: dict[str, np.ndarray] = {}
    if family == "trees":
        forest, head, init, raw = build(step, est, precision)
        graph_dtype = np.float64 if precision == "float64" else np.float32
        features = _FEATURES
        if build is _lightgbm:
            features = _lightgbm_zeros(nodes, inits, graph_dtype)
        nodes += forest.nodes(features, _OUT, graph_dtype)
        tables |= forest.tables() | {"init": np.asarray(init).astype(forest.dtype)}
        head |= {"stage": "trees", "dtype": np.dtype(forest.dtype).name}
        width = len(forest.trees)
        splits = np.concatenate(raw) if pre is None and raw else np.empty((0, 2))
    else:
        linear_nodes, linear_inits, head = build(step, est, precision)
        nodes += linear_nodes
        inits += linear_inits
        head |= {"stage": "scores", "dtype": "float64" if precision == "float64" else "float32"}
        width, splits = int(np.atleast_2d(est.coef_).shape[0]), np.empty((0, 2))
    classes = getattr(est, "classes_", None)
    if classes is not None:
        tables["classes"] = _storable(np.asarray(classes))
        head["classes_dtype"] = np.asarray(classes).dtype.name if np.asarray(classes).dtype != object else "object"
    output = helper.make_tensor_value_info(_OUT, onnx_dtype, [None, width])
    graph = helper.make_graph(nodes, "nbdeploy_compiled", graph_inputs, [output], initializer=inits)
    opsets = [helper.make_opsetid("", TARGET_OPSET[""]), helper.make_opsetid("ai.onnx.ml", ML_OPSET)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="nbdeploy")
    model.ir_version = min(model.ir_version, 10)
    inputs["dtype"] = "float64"
    backend = f"onnxruntime {onnxruntime.__version__} ({'double' if precision == 'float64' else 'float32'})"
    return Plan(model, head, tables, inputs, backend, splits)


def _storable(arr: np.ndarray) -> np.ndarray:
    """Class labels as an array ``np.load(allow_pickle=False)`` reads: object labels must all be strings."""
    if arr.dtype != object:
        return arr
    if not all(isinstance(v, str) for v in arr):
        raise Refusal("the class labels mix types (not all strings), which the compiled path does not store")
    return arr.astype(str)
