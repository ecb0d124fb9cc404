"""Training, ONNX export and evaluation of the gradient-boosted fraud model (batch only).

Kept apart from :mod:`fraudkit.model` so the online service never imports LightGBM.
LightGBM and scikit-learn (with SciPy, about 2 s of CPU) are imported by the functions
that use them: every Dagster process loads the code location, which imports this module,
and most of those processes (the daemon, the code server, a scoring step) never train.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fraudkit import explain
from fraudkit.features import FEATURE_COLUMNS, feature_matrix
from fraudkit.model import Thresholds

if TYPE_CHECKING:
    import lightgbm as lgb


@dataclass(frozen=True)
class TrainingParams:
    """How a candidate is fit and where its decision thresholds go: the one declaration of
    these defaults (the ``model`` and ``retrain`` run configs take theirs from here)."""

    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 50
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    seed: int = 7
    #: Decline where precision on the held-out days reaches this.
    decline_precision: float = 0.9
    #: Send this share of all traffic, the most suspicious below the declines, to review.
    review_rate: float = 0.01
    #: The last days of the train window held out, in time order, as a validation set: it
    #: stops the boosting early (at most ``n_estimators`` rounds) and picks the
    #: class-imbalance handling by its average precision. 0: every train day trains, for
    #: ``n_estimators`` rounds. The test days never take part in either choice.
    validation_days: int = 0
    #: Class-imbalance handling tried on the validation days: "none" and/or "balanced"
    #: (LightGBM's inverse-frequency class weights).
    class_weights: tuple[str, ...] = ("none",)
    #: Rounds without a better validation average precision before boosting stops.
    early_stopping_rounds: int = 50
    extra: dict = field(default_factory=dict)


def sample_mask(ids: np.ndarray, rate: float) -> np.ndarray:
    """The rows a seeded uniform sample of ``rate`` keeps, chosen by a hash of each row's
    ``transaction_id`` (Fibonacci hashing): the same rows give the same sample, whatever
    order they are read in, and a champion and a challenger judged on the same days see
    the same rows."""
    if rate >= 1.0:
        return np.ones(len(ids), dtype=bool)
    hashed = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # wraps modulo 2**64
    return hashed < np.uint64(int(rate * 2.0**64))


def train(train_frame: pd.DataFrame, params: TrainingParams | None = None) -> lgb.LGBMClassifier:
    """Fit LightGBM on the float32 feature matrix (what ONNX will see) and ``tx_fraud``.

    Training on float32 values keeps the native model and its ONNX export on the same side
    of every split threshold.
    """
    return train_selected(train_frame, params)[0]


def train_selected(train_frame: pd.DataFrame, params: TrainingParams | None = None
                   ) -> tuple[lgb.LGBMClassifier, dict]:
    """:func:`train`, and what the validation days chose (empty without them)."""
    params = params or TrainingParams()
    labels = train_frame["tx_fraud"].to_numpy()
    if len(np.unique(labels)) < 2:
        raise ValueError(
            f"the training window has {len(labels)} rows and only label(s) "
            f"{sorted(np.unique(labels).tolist())}; widen it so it holds frauds and non-frauds"
        )
    if not params.class_weights:
        raise ValueError("class_weights is empty: give 'none' and/or 'balanced'")
    if params.validation_days:
        return _train_with_validation(train_frame, params)
    if len(params.class_weights) > 1:
        raise ValueError(f"class_weights {list(params.class_weights)}: choosing among several "
                         "needs validation_days > 0 (the days that choose)")
    return _fit(train_frame, params, params.class_weights[0]), {}


def _train_with_validation(train_frame: pd.DataFrame, params: TrainingParams
                           ) -> tuple[lgb.LGBMClassifier, dict]:
    """Fit on the train days but the last ``validation_days``, once per class weighting,
    each stopped early on the validation days' average precision; refit the best weighting
    with its best number of rounds on all the train days."""
    days = sorted(train_frame["day"].unique())
    if len(days) <= params.validation_days:
        raise ValueError(f"the train window has {len(days)} day(s); validation_days="
                         f"{params.validation_days} leaves none to train on")
    first_validation = days[-params.validation_days]
    fit_rows = train_frame[train_frame["day"] < first_validation]
    validation = train_frame[train_frame["day"] >= first_validation]
    if validation["tx_fraud"].nunique() < 2:
        raise ValueError(f"the validation days {first_validation}..{days[-1]} hold one label "
                         "only; widen validation_days")
    tried = {}
    for weighting in params.class_weights:
        model = _fit(fit_rows, params, weighting, validation)
        tried[weighting] = (float(model.best_score_["valid_0"]["average_precision"]), model)
    chosen = max(tried, key=lambda w: tried[w][0])
    rounds = int(tried[chosen][1].best_iteration_ or params.n_estimators)
    # The chosen weighting and rounds, refit on every train day: the validation days are
    # the most recent ones, too valuable to leave out of the final model.
    model = _fit(train_frame, replace(params, n_estimators=rounds), chosen)
    return model, {
        "validation_days": [first_validation, days[-1]],
        "class_weight": chosen,
        "validation_average_precision": {w: round(ap, 5) for w, (ap, _) in tried.items()},
        "best_iteration": rounds,
    }


def _fit(train_frame: pd.DataFrame, params: TrainingParams, weighting: str,
         validation: pd.DataFrame | None = None) -> lgb.LGBMClassifier:
    import lightgbm as lgb

    if weighting not in ("none", "balanced"):
        raise ValueError(f"class weighting {weighting!r}: use 'none' or 'balanced'")
    labels = train_frame["tx_fraud"].to_numpy()
    model = lgb.LGBMClassifier(
        n_estimators=params.n_estimators,
        learning_rate=params.learning_rate,
        num_leaves=params.num_leaves,
        min_child_samples=params.min_child_samples,
        subsample=params.subsample,
        subsample_freq=1,
        colsample_bytree=params.colsample_bytree,
        random_state=params.seed,
        n_jobs=2,
        deterministic=True,  # with force_row_wise: the same model on every run
        force_row_wise=True,
        verbose=-1,
        class_weight="balanced" if weighting == "balanced" else None,
        # With validation days, the only metric tracked (so early stopping watches it alone).
        **({"metric": "average_precision"} if validation is not None else {}),
        **params.extra,
    )

    def matrix(frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(feature_matrix(frame).astype(np.float64),
                            columns=list(FEATURE_COLUMNS))

    if validation is None:
        model.fit(matrix(train_frame), labels)
    else:
        model.fit(matrix(train_frame), labels,
                  eval_X=matrix(validation), eval_y=validation["tx_fraud"].to_numpy(),
                  callbacks=[lgb.early_stopping(params.early_stopping_rounds,
                                                first_metric_only=True, verbose=False)])
    # model_to_string keeps the best iteration only, when early stopping found one.
    model._Booster = float32_safe_thresholds(model.booster_)
    return model


def float32_safe_thresholds(booster: lgb.Booster) -> lgb.Booster:
    """Round every split threshold down to the nearest float32.

    ONNX tree ensembles compare float32 features with float32 thresholds, LightGBM with
    double ones. For any float32 ``x``, ``x <= t`` exactly when ``x <= floor32(t)``, so this
    changes no native prediction on float32 inputs and makes the ONNX export take the same
    branch everywhere (otherwise a threshold rounded *up* sends some rows the other way).
    """
    import lightgbm as lgb

    def fix(line: str) -> str:
        values = np.array(line[len("threshold="):].split(), dtype=np.float64)
        down = values.astype(np.float32)
        above = down.astype(np.float64) > values
        down[above] = np.nextafter(down[above], np.float32(-np.inf))
        return "threshold=" + " ".join(repr(float(v)) for v in down)

    # tree_sizes holds byte offsets that the rewrite changes; without it LightGBM parses
    # the trees one after the other.
    lines = [fix(line) if line.startswith("threshold=") else line
             for line in booster.model_to_string().splitlines()
             if not line.startswith("tree_sizes=")]
    return lgb.Booster(model_str="\n".join(lines) + "\n")


def predict_native(model: lgb.LGBMClassifier, frame: pd.DataFrame) -> np.ndarray:
    x = feature_matrix(frame).astype(np.float64)
    return model.predict_proba(pd.DataFrame(x, columns=list(FEATURE_COLUMNS)))[:, 1]


def to_onnx(model: lgb.LGBMClassifier) -> bytes:
    """Export to ONNX: one float32 input ``[N, F]``, outputs ``label`` and ``probabilities``;
    the LightGBM model embedded for reason codes (:func:`fraudkit.explain.embed`)."""
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    onnx_model = convert_lightgbm(
        model.booster_,
        name="fraud_lightgbm",
        initial_types=[("features", FloatTensorType([None, len(FEATURE_COLUMNS)]))],
        zipmap=False,
        target_opset=15,
    )
    # The trees' LightGBM text rides in the same file, so the registry's hash covers what
    # explains each decision (fraudkit.explain) as well as what scores it.
    explain.embed(onnx_model, model.booster_.model_to_string())
    return onnx_model.SerializeToString()


def card_precision_at_k(frame: pd.DataFrame, scores: np.ndarray, k: int = 100) -> float:
    """Mean over days of: among the ``k`` cards with the highest score that day, the share
    with at least one fraudulent transaction that day."""
    cards = (
        pd.DataFrame(
            {
                "day": frame["day"].to_numpy(),
                "customer_id": frame["customer_id"].to_numpy(),
                "score": scores,
                "fraud": frame["tx_fraud"].to_numpy(),
            }
        )
        .groupby(["day", "customer_id"], sort=False)
        .agg(score=("score", "max"), fraud=("fraud", "max"))
        .reset_index()
    )
    top = cards.sort_values(["day", "score"], ascending=[True, False]).groupby("day").head(k)
    per_day = top.groupby("day")["fraud"].sum() / k
    return float(per_day.mean()) if len(per_day) else float("nan")


def evaluate(frame: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    """AUC-ROC, average precision and card precision@100 of ``scores`` on labelled rows."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = frame["tx_fraud"].to_numpy()
    if len(np.unique(labels)) < 2:
        return {"auc_roc": float("nan"), "average_precision": float("nan"),
                "card_precision_at_100": card_precision_at_k(frame, scores), "rows": len(frame)}
    return {
        "auc_roc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        "card_precision_at_100": card_precision_at_k(frame, scores),
        "rows": int(len(frame)),
        "frauds": int(labels.sum()),
    }


def choose_thresholds(
    labels: np.ndarray, scores: np.ndarray, decline_precision: float = 0.9,
    review_rate: float = 0.01,
) -> Thresholds:
    """Decline where precision reaches ``decline_precision``; send the next most suspicious
    transactions, ``review_rate`` of all traffic, to review (the band below the declines,
    so it stays open however many transactions are declined)."""
    from sklearn.metrics import precision_recall_curve

    precision, _, cut = precision_recall_curve(labels, scores)
    ok = np.flatnonzero(precision[:-1] >= decline_precision)
    decline = float(cut[ok[0]]) if len(ok) else 1.0
    if not len(scores):
        return Thresholds(review=min(0.5, decline), decline=decline)
    declined = float(np.mean(np.asarray(scores) >= decline))
    review = float(np.quantile(scores, max(0.0, 1 - declined - review_rate)))
    return Thresholds(review=min(review, decline), decline=decline)


def precision_recall_png(labels: np.ndarray, scores: np.ndarray, title: str) -> bytes:
    """A small precision-recall plot as PNG bytes (for the Dagster UI's Markdown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=90)
    ax.plot(recall, precision, lw=1.5)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


#: Held-out rows whose TreeSHAP values make a model's global importances. TreeSHAP costs
#: about 0.5 ms a row for 300 trees on this machine, so a seeded sample of the
#: held-out days rather than all of them (a mean of |SHAP| over 2,000 rows is stable to a
#: few percent).
SHAP_ROWS = 2_000


def global_explanations(model: lgb.LGBMClassifier, rows: pd.DataFrame,
                        onnx_scores: np.ndarray, sample: int = SHAP_ROWS,
                        explainer: explain.Explainer | None = None) -> dict:
    """Gain importance and mean |SHAP| per feature of ``model`` on (a sample of) ``rows``.

    The SHAP values are path-dependent TreeSHAP (:mod:`fraudkit.treeshap`, equal to
    LightGBM's ``pred_contrib``) of the very trees exported to ONNX, in log-odds, as the
    reason codes compute them. They are checked against the ONNX scores of the same rows: the
    sigmoid of a row's contributions plus the bias is the model's probability, and
    ``additivity_max_abs_diff`` records how far from the ONNX score it is at most.
    """
    booster = model.booster_
    # the reason codes' TreeSHAP (the caller's, when it already built the tables)
    explainer = explainer or explain.Explainer(booster)
    picked = np.arange(len(rows))
    if len(rows) > sample:
        picked = np.sort(np.random.default_rng(0).choice(len(rows), sample, replace=False))
    contributions = explainer.contributions(feature_matrix(rows.iloc[picked]))
    probability = 1.0 / (1.0 + np.exp(-contributions.sum(axis=1)))
    gain = booster.feature_importance(importance_type="gain")
    mean_abs = np.abs(contributions[:, : len(FEATURE_COLUMNS)]).mean(axis=0)
    return {
        "method": "LightGBM split gain; path-dependent TreeSHAP of the exported trees",
        "shap_rows": int(len(picked)),
        "shap_units": "log-odds",
        "additivity_max_abs_diff": float(np.max(np.abs(probability - onnx_scores[picked])))
        if len(picked) else 0.0,
        "features": {
            name: {"gain": float(g), "gain_share": float(g / gain.sum()) if gain.sum() else 0.0,
                   "mean_abs_shap": float(m)}
            for name, g, m in zip(FEATURE_COLUMNS, gain, mean_abs, strict=True)
        },
    }


def importance_table(explanations: dict) -> pd.DataFrame:
    """One row per feature (gain share, mean |SHAP|), the most influential first."""
    table = pd.DataFrame.from_dict(explanations["features"], orient="index")
    table.index.name = "feature"
    return (table[["mean_abs_shap", "gain_share"]].sort_values("mean_abs_shap",
                                                                ascending=False).reset_index())


def importance_png(explanations: dict, title: str) -> bytes:
    """A horizontal bar chart of mean |SHAP| per feature (PNG), for the Dagster UI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = importance_table(explanations).iloc[::-1]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.barh(table["feature"], table["mean_abs_shap"], color="#4c72b0")
    ax.set_xlabel(f"mean |SHAP| (log-odds), {explanations['shap_rows']:,} held-out rows")
    ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def importance_shift(before: dict | None, after: dict) -> pd.DataFrame | None:
    """How each feature's mean |SHAP| and rank moved from ``before`` (the champion's
    explanations) to ``after`` (the challenger's), the largest moves first; None when the
    champion has none (registered before models carried explanations)."""
    if not before:
        return None
    old, new = importance_table(before), importance_table(after)
    old["rank_before"] = range(1, len(old) + 1)
    new["rank_after"] = range(1, len(new) + 1)
    table = old[["feature", "mean_abs_shap", "rank_before"]].merge(
        new[["feature", "mean_abs_shap", "rank_after"]], on="feature",
        suffixes=("_before", "_after"))
    table["change"] = table["mean_abs_shap_after"] - table["mean_abs_shap_before"]
    return table.reindex(table["change"].abs().sort_values(ascending=False).index
                         ).reset_index(drop=True)


@dataclass
class Candidate:
    """A trained model, exported and checked, ready to be registered."""

    onnx_bytes: bytes
    metrics: dict[str, float]
    thresholds: Thresholds
    onnx_max_abs_diff: float
    test_scores: np.ndarray
    reference: pd.DataFrame
    #: :func:`global_explanations` on the held-out rows (goes into the manifest)
    explanations: dict = field(default_factory=dict)
    #: What the validation days chose (:func:`train_selected`; empty without them)
    selection: dict = field(default_factory=dict)


def fit_candidate(
    training_set: pd.DataFrame,
    params: TrainingParams | None = None,
    reference_rows: int = 20_000,
) -> Candidate:
    """Train on the ``train`` split, export to ONNX, compare onnxruntime with LightGBM on
    the ``test`` split, and measure the ONNX scores there (what serving will produce)."""
    from fraudkit.model import OnnxModel

    # One row order whatever order the Delta files were read in: LightGBM's bagging and the
    # reference sample pick rows by position, so the same data gives the same model.
    training_set = training_set.sort_values("transaction_id", kind="stable")
    train_rows = training_set[training_set["split"] == "train"]
    test_rows = training_set[training_set["split"] == "test"]
    if test_rows.empty:
        raise ValueError("the training set has no `test` rows to evaluate on")
    model, selection = train_selected(train_rows, params)
    onnx_bytes = to_onnx(model)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(onnx_bytes)
        exported = OnnxModel(path)
        onnx_scores = exported.predict(feature_matrix(test_rows))
        explainer = explain.Explainer.of(exported)  # raises when it would explain wrongly
    assert explainer is not None  # to_onnx embeds it
    native = predict_native(model, test_rows)
    metrics = evaluate(test_rows, onnx_scores)
    params = params or TrainingParams()
    thresholds = choose_thresholds(test_rows["tx_fraud"].to_numpy(), onnx_scores,
                                   params.decline_precision, params.review_rate)
    sample = train_rows.sample(min(reference_rows, len(train_rows)), random_state=0)
    return Candidate(
        onnx_bytes=onnx_bytes,
        metrics=metrics,
        thresholds=thresholds,
        onnx_max_abs_diff=float(np.max(np.abs(native - onnx_scores))) if len(native) else 0.0,
        test_scores=onnx_scores,
        reference=sample[[*FEATURE_COLUMNS, "tx_fraud", "day"]].reset_index(drop=True),
        explanations={**global_explanations(model, test_rows, onnx_scores,
                                          explainer=explainer),
                      "reason_codes": {"embedded_as": explain.EXPLAINER_KEY,
                                       "probe_rows": explain.PROBE_ROWS,
                                       "probe_max_abs_diff": explainer.probe_max_abs_diff}},
        selection=selection,
    )
