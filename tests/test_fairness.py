"""Segment fairness (fraudkit/monitoring/fairness.py): the rates per segment, the gate that
refuses a challenger biased on purpose, and model_performance's check that flags it once it
scores real days."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudkit import lake
from fraudkit.config import DEFAULT_SEGMENTS
from fraudkit.monitoring.fairness import (
    fairness_verdict,
    over_ratio,
    parse_segments,
    segment_table,
    worst_disparity,
)
from fraudkit.monitoring.gate import GateConfig, judge_fairness, retrain_and_gate, score_version
from fraudkit.registry import ModelRegistry
from fraudkit.training import TrainingParams
from tests.conftest import private_copy
from tests.inprocess import failure_messages, run_in_process
from tests.test_gate import labelled

SEGMENTS = parse_segments(DEFAULT_SEGMENTS)


def rows(n: int, night_share: float, fpr_day: float, fpr_night: float) -> pd.DataFrame:
    """Non-fraud rows (plus a few frauds) whose alarms fall at the given rates."""
    rng = np.random.default_rng(0)
    night = rng.random(n) < night_share
    alarm = np.where(night, rng.random(n) < fpr_night, rng.random(n) < fpr_day)
    frame = pd.DataFrame({"tx_amount": rng.uniform(1, 150, n), "customer_nb_tx_30d": 10,
                          "tx_during_night": night.astype(int), "tx_fraud": 0,
                          "decision": np.where(alarm, "review", "approve")})
    frame.loc[:9, ["tx_fraud", "decision"]] = [1, "decline"]
    return frame


def test_rates_per_segment_and_their_disparity() -> None:
    table = segment_table(rows(20_000, 0.25, 0.01, 0.04), SEGMENTS).set_index(
        ["segment", "value"])
    night, day = table.loc[("time_of_day", "night")], table.loc[("time_of_day", "day")]
    assert night["fpr"] == pytest.approx(0.04, abs=0.006)
    assert night["fpr_ratio"] == pytest.approx(night["fpr"] / 0.0175, rel=0.15)
    assert day["fpr_ratio"] < 1 < night["fpr_ratio"]
    assert set(table.loc["amount_band"].index) <= {"<10", "10-50", "50-200", ">=200"}
    flagged = over_ratio(table.reset_index(), 1.25, 50)
    assert list(zip(flagged["segment"], flagged["value"], strict=True)) == [
        ("time_of_day", "night")]
    # A handful of alarms is not judged: too little evidence for a ratio.
    small = segment_table(rows(600, 0.25, 0.01, 0.04), SEGMENTS)
    assert math.isnan(worst_disparity(small, 50).ratio)


def test_the_verdict_refuses_a_worse_disparity_only_when_the_segment_is_harmed() -> None:
    champion = segment_table(rows(20_000, 0.25, 0.02, 0.02), SEGMENTS)
    biased = segment_table(rows(20_000, 0.25, 0.02, 0.06), SEGMENTS)
    passed, reason, worst, _ = fairness_verdict(biased, champion, 0.25, 50)
    assert not passed and "time_of_day = night" in reason and "rose" in reason
    assert worst.segment == "time_of_day"
    # Fewer false alarms everywhere, most of all by day: the night ratio grows, nobody is
    # harmed, the challenger passes.
    better = segment_table(rows(40_000, 0.25, 0.002, 0.012), SEGMENTS)
    passed, reason, _, _ = fairness_verdict(better, champion, 0.25, 50)
    assert passed and "fell" in reason


def test_a_champion_too_quiet_to_judge_is_compared_in_the_challenger_s_worst_segment(
) -> None:
    """The champion alarms so rarely that none of its segments has the evidence; the
    challenger's worst segment is still judged against the champion's ratio there."""
    quiet = segment_table(rows(20_000, 0.25, 0.0005, 0.0005), SEGMENTS)
    assert math.isnan(worst_disparity(quiet, 50).ratio)
    biased = segment_table(rows(20_000, 0.25, 0.02, 0.08), SEGMENTS)
    passed, reason, worst, old = fairness_verdict(biased, quiet, 0.25, 50)
    assert not passed and (worst.segment, worst.value) == ("time_of_day", "night"), reason
    assert (old.segment, old.value) == ("time_of_day", "night")


def test_no_segments_judge_nothing() -> None:
    table = segment_table(rows(1_000, 0.25, 0.02, 0.02), parse_segments("{}"))
    assert table.empty and "fpr_ratio" in table.columns
    assert over_ratio(table, 1.25, 50).empty and math.isnan(worst_disparity(table, 50).ratio)


def test_segments_are_configuration_and_a_bad_one_names_the_variable() -> None:
    [segment] = parse_segments('{"channel": {"column": "channel"}}')
    frame = pd.DataFrame({"channel": ["web", "pos", "web"]})
    assert segment.assign(frame).tolist() == ["web", "pos", "web"]
    with pytest.raises(ValueError, match="FAIRNESS_SEGMENTS"):
        parse_segments('{"a": {"bins": [1]}}')
    with pytest.raises(ValueError, match="2 labels"):
        parse_segments('{"a": {"column": "x", "bins": [1], "labels": ["one"]}}')
    with pytest.raises(ValueError, match="FAIRNESS_SEGMENTS"):
        segment_table(pd.DataFrame({"tx_fraud": [0], "decision": ["approve"]}), SEGMENTS)


@pytest.mark.slow
def test_a_model_biased_against_night_is_refused_and_flagged(small_pipeline: Path,
                                                            tmp_path: Path) -> None:
    """A challenger trained to see fraud in night-time transactions: the gate refuses it
    for fairness though its metric passes; forced into service anyway, model_performance's
    check names the night segment on the days it scored."""
    data_dir = private_copy(small_pipeline, tmp_path)
    registry = ModelRegistry(data_dir / "registry")
    test_range = tuple(registry.champion().manifest["training_data"]["test_range"])
    frame = labelled(data_dir, ("2026-05-22", "2026-06-07"), test_range)
    # Both models review 5% of the traffic, so the larger segments have enough false alarms
    # to judge at this small scale.
    params = TrainingParams(n_estimators=100, review_rate=0.05)
    sound = retrain_and_gate(frame, registry, GateConfig(tolerance=1.0), params)
    assert sound.decision.promote, sound.decision.reason
    biased = frame.sample(frac=1.0, random_state=1)  # any row order; taught that the night
    biased.loc[(biased["split"] == "train") & (biased["tx_during_night"] == 1), "tx_fraud"] = 1
    outcome = retrain_and_gate(biased, registry, GateConfig(tolerance=1.0), params)
    # The verdict's tables are those of the registered models' own scores of these rows.
    test = biased[biased["split"] == "test"]
    challenger, champion = (registry.get(outcome.challenger_version),
                            registry.get(sound.challenger_version))
    again = judge_fairness(test, score_version(challenger.model_path, test),
                           challenger.thresholds, score_version(champion.model_path, test),
                           champion.thresholds, GateConfig())
    pd.testing.assert_frame_equal(again["table"], outcome.fairness)
    assert not outcome.decision.promote
    assert outcome.decision.reason.startswith("fairness: worst segment false-positive "
                                              "disparity"), outcome.decision.reason
    assert "time_of_day = night" in outcome.decision.reason
    assert registry.champion().version == sound.challenger_version
    event = [e for e in registry.events() if e["event"] == "gate_rejected"][-1]
    assert event["fairness"]["passed"] is False

    registry.promote(outcome.challenger_version, reason="test: biased on purpose")
    days = lake.day_range(*test_range)
    scored = run_in_process(data_dir, "score", days[0], days[-1])
    assert scored.success, failure_messages(scored)[-3000:]
    run = run_in_process(data_dir, "monitor_performance", days[0], days[-1])
    assert run.success, failure_messages(run)[-3000:]
    [check] = [c for c in run.result.get_asset_check_evaluations()
               if c.check_name == "segment_fpr_within_ratio"]
    assert not check.passed
    assert "time_of_day = night" in (check.description or ""), check.description
    table = lake.read_days(str(data_dir / "tables" / "segment_performance"), days).to_pandas()
    assert set(table["segment"]) == {"amount_band", "customer", "time_of_day"}
    shutil.rmtree(data_dir)
