"""Training, ONNX export and the metrics, on small simulated data."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from fraudkit.features import FEATURE_COLUMNS, features_frame
from fraudkit.model import Thresholds, decide
from fraudkit.simulator import SimulationConfig, simulate
from fraudkit.training import (
    TrainingParams,
    card_precision_at_k,
    choose_thresholds,
    fit_candidate,
    sample_mask,
)


def small_training_set() -> pd.DataFrame:
    """A fresh copy of the small simulation's training set (built once: each test may
    change its copy)."""
    return _small_training_set().copy()


@functools.cache
def _small_training_set() -> pd.DataFrame:
    raw = pd.concat([f.assign(day=d) for d, f in simulate(SimulationConfig.small())],
                    ignore_index=True)
    feats = features_frame(raw, 7)
    frame = feats.assign(customer_id=raw["customer_id"], tx_fraud=raw["tx_fraud"])
    frame = frame[frame["day"] >= "2026-05-15"]
    frame["split"] = np.where(frame["day"] >= "2026-06-10", "test", "train")
    return frame


def test_onnx_matches_lightgbm_and_the_model_learns() -> None:
    candidate = fit_candidate(small_training_set())
    assert candidate.onnx_max_abs_diff < 1e-5
    assert candidate.metrics["auc_roc"] > 0.8
    assert 0 < candidate.metrics["card_precision_at_100"] <= 1
    assert list(candidate.reference.columns[: len(FEATURE_COLUMNS)]) == list(FEATURE_COLUMNS)


def test_explanations_are_the_exported_model_s_and_find_the_signal() -> None:
    """Gain and mean |SHAP| per feature, from the trees exported to ONNX: each explained
    row's contributions add up to its ONNX score; a feature the model was made to depend on
    leads, and a feature shuffled into noise explains almost nothing."""
    from fraudkit.training import SHAP_ROWS, importance_shift, importance_table

    frame = small_training_set()
    rng = np.random.default_rng(0)
    # All the signal in one feature: the label itself, scaled, hidden among the others.
    frame["terminal_risk_7d"] = frame["tx_fraud"] * 0.9 + rng.random(len(frame)) * 0.1
    frame["customer_nb_tx_1d"] = rng.permutation(frame["customer_nb_tx_1d"].to_numpy())
    candidate = fit_candidate(frame)
    explanations = candidate.explanations
    assert explanations["shap_rows"] == min(SHAP_ROWS, int((frame["split"] == "test").sum()))
    assert explanations["additivity_max_abs_diff"] < 1e-5  # TreeSHAP of the ONNX model
    table = importance_table(explanations)
    assert list(table["feature"])[0] == "terminal_risk_7d", table
    assert table["gain_share"].sum() == pytest.approx(1.0)
    noise = table.set_index("feature").loc["customer_nb_tx_1d", "mean_abs_shap"]
    assert noise < 0.05 * table["mean_abs_shap"].iat[0], table
    # Against a model without the planted signal, that feature moves most.
    plain = fit_candidate(small_training_set()).explanations
    shift = importance_shift(plain, explanations)
    assert shift["feature"].iat[0] == "terminal_risk_7d" and shift["change"].iat[0] > 0
    assert shift["rank_after"].iat[0] == 1
    assert importance_shift(None, explanations) is None


def test_validation_days_stop_early_and_pick_the_weighting_without_the_test_days() -> None:
    """The last train days choose the rounds and the class weighting by their average
    precision; the test days take no part: other test labels give the same model."""
    params = TrainingParams(n_estimators=400, validation_days=5,
                            class_weights=("none", "balanced"))
    frame = small_training_set()
    candidate = fit_candidate(frame, params)
    selection = candidate.selection
    train_days = sorted(frame.loc[frame["split"] == "train", "day"].unique())
    assert selection["validation_days"] == [train_days[-5], train_days[-1]]
    aps = selection["validation_average_precision"]
    assert selection["class_weight"] == max(aps, key=aps.get)
    assert 1 <= selection["best_iteration"] < 400  # stopped early
    assert candidate.metrics["auc_roc"] > 0.8 and candidate.onnx_max_abs_diff < 1e-5
    test = frame["split"] == "test"
    frame.loc[test, "tx_fraud"] = np.random.default_rng(1).permutation(
        frame.loc[test, "tx_fraud"].to_numpy())
    assert fit_candidate(frame, params).onnx_bytes == candidate.onnx_bytes
    with pytest.raises(ValueError, match="needs validation_days"):
        fit_candidate(small_training_set(), TrainingParams(class_weights=("none", "balanced")))
    with pytest.raises(ValueError, match="class_weights is empty"):
        fit_candidate(small_training_set(), TrainingParams(class_weights=()))
    with pytest.raises(ValueError, match="class weighting 'focal'"):
        fit_candidate(small_training_set(), TrainingParams(validation_days=5,
                                                           class_weights=("focal",)))


def test_the_same_rows_in_another_order_give_the_same_model() -> None:
    frame = small_training_set()
    shuffled = frame.sample(frac=1.0, random_state=3)
    first, second = fit_candidate(frame), fit_candidate(shuffled)
    assert first.onnx_bytes == second.onnx_bytes
    assert first.metrics == second.metrics and first.thresholds == second.thresholds
    pd.testing.assert_frame_equal(first.reference.reset_index(drop=True),
                                  second.reference.reset_index(drop=True))


def test_shuffled_labels_learn_nothing() -> None:
    frame = small_training_set()
    rng = np.random.default_rng(0)
    train = frame["split"] == "train"
    frame.loc[train, "tx_fraud"] = rng.permutation(frame.loc[train, "tx_fraud"].to_numpy())
    assert fit_candidate(frame).metrics["auc_roc"] < 0.65


def test_card_precision_counts_cards_per_day() -> None:
    frame = pd.DataFrame({"day": ["d1"] * 4 + ["d2"] * 2, "customer_id": [1, 1, 2, 3, 1, 2],
                          "tx_fraud": [0, 1, 0, 0, 0, 1]})
    scores = np.array([0.9, 0.1, 0.8, 0.2, 0.5, 0.4])
    # k=1: d1 top card is customer 1 (max 0.9; fraud that day) -> 1; d2 top is 1 -> 0.
    assert card_precision_at_k(frame, scores, k=1) == 0.5


def test_decisions_and_thresholds() -> None:
    t = Thresholds(review=0.2, decline=0.7)
    assert decide(np.array([0.1, 0.2, 0.69, 0.7, 1.0]), t).tolist() == [
        "approve", "review", "review", "decline", "decline"]
    labels = np.array([0] * 95 + [1] * 5)
    scores = np.concatenate([np.linspace(0, 0.5, 95), [0.6, 0.7, 0.8, 0.9, 0.95]])
    chosen = choose_thresholds(labels, scores, decline_precision=0.9, review_rate=0.1)
    assert chosen.decline == 0.6 and chosen.review <= chosen.decline


def test_review_band_stays_open_below_many_declines() -> None:
    """5% of traffic above the decline threshold: review still takes the next 1%."""
    rng = np.random.default_rng(3)
    labels = (rng.random(20_000) < 0.06).astype(int)
    scores = np.where(labels == 1, rng.uniform(0.7, 1.0, len(labels)),
                      rng.uniform(0.0, 0.75, len(labels)))
    t = choose_thresholds(labels, scores, decline_precision=0.9, review_rate=0.01)
    declined = np.mean(scores >= t.decline)
    reviewed = np.mean((scores >= t.review) & (scores < t.decline))
    assert declined > 0.04
    assert reviewed == pytest.approx(0.01, abs=0.002)


def test_sample_mask_keeps_its_rate_of_sequential_ids_whatever_their_order() -> None:
    """A training window above max_rows is sampled by a hash of transaction_id: ids are
    sequential, so the hash must spread them; the same ids keep the same rows."""
    ids = np.arange(1_000_000, 1_400_000, dtype=np.int64)
    assert sample_mask(ids, 1.0).all()
    kept = sample_mask(ids, 0.3)
    assert abs(kept.mean() - 0.3) < 0.005
    for block in np.array_split(kept, 40):  # no run of ids left out or kept whole
        assert abs(block.mean() - 0.3) < 0.03
    order = np.random.default_rng(0).permutation(len(ids))
    assert (sample_mask(ids[order], 0.3) == kept[order]).all()
    assert (sample_mask(ids, 0.1) <= kept).all()  # a smaller rate keeps a subset
