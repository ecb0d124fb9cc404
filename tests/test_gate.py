"""The champion/challenger gate on real small-scale data: a challenger trained on shuffled
labels is never promoted, a sound one is, and rollback restores the previous champion."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudkit import lake
from fraudkit.features import FEATURE_COLUMNS
from fraudkit.monitoring.gate import GateConfig, gate, retrain_and_gate
from fraudkit.registry import ModelRegistry
from fraudkit.training import TrainingParams


def labelled(data_dir: Path, train: tuple[str, str], test: tuple[str, str]) -> pd.DataFrame:
    days = lake.day_range(*train) + lake.day_range(*test)
    tables = data_dir / "tables"
    feats = lake.read_days(str(tables / "transaction_features"), days).to_pandas()
    labels = lake.read_days(str(tables / "raw_transactions"), days,
                            ["transaction_id", "tx_fraud"]).to_pandas()
    frame = feats.merge(labels, on="transaction_id", validate="one_to_one")
    frame["split"] = np.where(frame["day"] >= test[0], "test", "train")
    return frame


def test_gate_rule() -> None:
    cfg = GateConfig(metric="auc_roc", tolerance=0.01)
    assert gate({"auc_roc": 0.80}, {"auc_roc": 0.805}, cfg).promote
    assert not gate({"auc_roc": 0.79}, {"auc_roc": 0.805}, cfg).promote
    assert not gate({"auc_roc": float("nan")}, {"auc_roc": 0.5}, cfg).promote
    with pytest.raises(ValueError, match="gate metric"):
        GateConfig(metric="accuracy")


def test_worse_challenger_rejected_better_promoted_rollback(small_pipeline: Path,
                                                           tmp_path: Path) -> None:
    root = tmp_path / "registry"
    shutil.copytree(small_pipeline / "registry", root)
    registry = ModelRegistry(root)
    first = registry.champion().version
    # The champion's own held-out days, with a newer training window than the champion's.
    test_range = tuple(registry.champion().manifest["training_data"]["test_range"])
    frame = labelled(small_pipeline, ("2026-05-22", "2026-06-07"), test_range)
    params = TrainingParams(n_estimators=150)

    shuffled = frame.copy()
    train = shuffled["split"] == "train"
    rng = np.random.default_rng(0)
    shuffled.loc[train, "tx_fraud"] = rng.permutation(shuffled.loc[train, "tx_fraud"].to_numpy())
    worse = retrain_and_gate(shuffled, registry, GateConfig(), params,
                             trigger={"event": "test-worse"})
    assert not worse.decision.promote
    assert worse.challenger_metrics["average_precision"] < \
        worse.champion_metrics["average_precision"]
    assert registry.champion().version == first
    rejected = [e for e in registry.events() if e["event"] == "gate_rejected"][-1]
    assert rejected["version"] == worse.challenger_version
    assert rejected["gate"]["champion"] == pytest.approx(worse.decision.champion)

    better = retrain_and_gate(frame, registry, GateConfig(tolerance=0.02), params,
                              trigger={"event": "test-better"})
    assert better.decision.promote, better.decision.reason
    assert registry.champion().version == better.challenger_version != first
    promoted = [e for e in registry.events() if e["event"] == "promoted"][-1]
    assert promoted["challenger_metrics"]["average_precision"] == pytest.approx(
        better.challenger_metrics["average_precision"])
    assert promoted["trigger"] == {"event": "test-better"}
    assert list(better.candidate.reference.columns[:len(FEATURE_COLUMNS)]) == list(
        FEATURE_COLUMNS)
    # The verdict says how the challenger's importances moved from the champion's.
    assert set(registry.get(better.challenger_version).manifest["explanations"]["features"]
               ) == set(FEATURE_COLUMNS)
    moves = promoted["importance_shift"]  # the champion (v0001) carries explanations too
    assert len(moves) == 5 and {"feature", "change", "rank_before", "rank_after"} <= set(
        moves[0])
    assert moves[0]["feature"] == better.importance_shift["feature"].iat[0]

    assert registry.rollback() == first
    assert registry.champion().version == first


def test_a_retrained_challenger_takes_the_threshold_policy_it_is_given(
        small_pipeline: Path, tmp_path: Path) -> None:
    """decline_precision and review_rate reach the challenger's thresholds (the retrain
    job used to drop them and always set the defaults)."""
    from fraudkit.training import choose_thresholds

    root = tmp_path / "registry"
    shutil.copytree(small_pipeline / "registry", root)
    registry = ModelRegistry(root)
    test_range = tuple(registry.champion().manifest["training_data"]["test_range"])
    frame = labelled(small_pipeline, ("2026-05-22", "2026-06-07"), test_range)
    params = TrainingParams(n_estimators=50, decline_precision=0.75, review_rate=0.05)
    outcome = retrain_and_gate(frame, registry, GateConfig(), params)
    # fit_candidate scores the test rows in transaction_id order
    test = frame.sort_values("transaction_id", kind="stable")
    labels = test.loc[test["split"] == "test", "tx_fraud"].to_numpy()
    given = choose_thresholds(labels, outcome.candidate.test_scores, 0.75, 0.05)
    default = choose_thresholds(labels, outcome.candidate.test_scores)
    assert outcome.candidate.thresholds == given != default
    manifest = registry.get(outcome.challenger_version).manifest
    assert manifest["thresholds"] == given.as_dict()


def test_with_shadow_evidence_a_passing_challenger_goes_into_shadow(small_pipeline: Path,
                                                                    tmp_path: Path) -> None:
    """GATE_EVIDENCE=shadow: the held-out gate passes, yet the champion stays; the
    challenger is scored on live traffic next (tests/test_shadow.py judges it there)."""
    root = tmp_path / "registry"
    shutil.copytree(small_pipeline / "registry", root)
    registry = ModelRegistry(root)
    first = registry.champion().version
    test_range = tuple(registry.champion().manifest["training_data"]["test_range"])
    frame = labelled(small_pipeline, ("2026-05-22", "2026-06-07"), test_range)
    outcome = retrain_and_gate(frame, registry, GateConfig(tolerance=1.0),
                               TrainingParams(n_estimators=50), evidence="shadow")
    assert outcome.decision.promote and outcome.new_champion == first
    assert registry.shadow_state()["version"] == outcome.challenger_version
    started = registry.events()[-1]
    assert started["event"] == "shadow_started" and started["evidence"] == "holdout"
    assert "judged on live traffic next" in started["reason"]
    with pytest.raises(ValueError, match="gate evidence"):
        retrain_and_gate(frame, registry, GateConfig(), evidence="vibes")
