"""online_consistency: the rule on small frames, and the asset on the small pipeline's real
Delta tables, with a logged feature corrupted."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from assets.consistency import online_consistency
from fraudkit import lake
from fraudkit.features import COUNT_COLUMNS, FEATURE_COLUMNS
from fraudkit.monitoring.consistency import ALL, REASONS, SCORE, compare_day
from fraudkit.store import DECISION_SCHEMA
from resources import DeltaLakeResource, MonitoringResource
from tests.conftest import private_copy

DAY = "2026-06-20"


def _batch(n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(7)
    feats = pd.DataFrame({"transaction_id": np.arange(1, n + 1)})
    for name in FEATURE_COLUMNS:
        feats[name] = rng.integers(0, 9, n) if name in COUNT_COLUMNS else rng.random(n)
    preds = pd.DataFrame({"transaction_id": feats["transaction_id"], "score": rng.random(n),
                          "model_version": "v0001"})
    return feats, preds


def _online(feats: pd.DataFrame, preds: pd.DataFrame) -> pd.DataFrame:
    online = feats.merge(preds, on="transaction_id")
    online["degraded"] = False
    return online


def test_equal_numbers_match_and_one_changed_count_is_named() -> None:
    feats, preds = _batch(50)
    online = _online(feats, preds)
    clean = compare_day(DAY, online, feats, preds)
    assert (clean.compared, clean.matched, clean.rate) == (50, 50, 1.0)
    assert clean.missing == clean.landed_not_decided == 0 and clean.mismatched_items() == {}

    online.loc[online["transaction_id"] == 17, "customer_nb_tx_7d"] += 1
    online.loc[online["transaction_id"] == 23, "terminal_risk_30d"] += 1e-8  # > 1e-9
    online.loc[online["transaction_id"] == 24, "terminal_risk_30d"] += 5e-10  # within
    result = compare_day(DAY, online, feats, preds)
    assert (result.compared, result.matched) == (50, 48)
    assert result.mismatched_items() == {"customer_nb_tx_7d": 1, "terminal_risk_30d": 1}
    assert result.examples() == [{"transaction_id": 17, "differed": ["customer_nb_tx_7d"]},
                                 {"transaction_id": 23, "differed": ["terminal_risk_30d"]}]
    example = result.items["customer_nb_tx_7d"]["examples"][0]
    assert example["transaction_id"] == 17 and example["online"] == example["batch"] + 1
    rows = {r["item"]: r for r in result.rows()}
    assert set(rows) == {*FEATURE_COLUMNS, SCORE, ALL}
    assert rows[ALL]["match_rate"] == pytest.approx(48 / 50)
    assert json.loads(rows["terminal_risk_30d"]["examples"])[0]["transaction_id"] == 23


def test_scores_compare_only_for_the_same_model_and_unjoined_rows_are_counted() -> None:
    feats, preds = _batch(20)
    online = _online(feats, preds)
    online.loc[online["transaction_id"] == 3, "score"] += 0.5  # same model: a mismatch
    online.loc[online["transaction_id"] == 4, ["score", "model_version"]] = [0.9, "v0002"]
    extra = online.iloc[[0]].assign(transaction_id=999)  # decided online, never landed
    online = pd.concat([online, extra]).iloc[2:]  # 1 and 2 landed but were not decided
    result = compare_day(DAY, online, feats, preds)
    assert (result.decided_online, result.landed) == (19, 20)
    assert (result.missing, result.landed_not_decided) == (1, 2)
    assert (result.compared, result.matched, result.other_model_version) == (18, 17, 1)
    assert result.items[SCORE]["compared"] == 17
    assert result.examples() == [{"transaction_id": 3, "differed": [SCORE]}]


def test_reasons_compare_for_the_same_model_within_1e_6() -> None:
    feats, preds = _batch(6)
    why = [{"feature": "tx_amount", "contribution": 1.5},
           {"feature": "terminal_risk_7d", "contribution": 0.25}]
    preds["reasons"] = [None, why, why, why, why, None]
    online = _online(feats, preds)
    online["reasons"] = online["reasons"].astype(object)
    online.at[2, "reasons"] = [why[0], {**why[1], "contribution": 0.25 + 5e-7}]  # within
    online.at[3, "reasons"] = [why[1], why[0]]  # another order: a mismatch
    online.at[4, "reasons"] = [why[0], {**why[1], "contribution": 0.26}]  # 1e-2 off
    online.at[5, "reasons"] = why  # explained online, not in batch
    result = compare_day(DAY, online, feats, preds)
    assert result.items[REASONS]["compared"] == 6
    assert (result.compared, result.matched) == (6, 3)
    assert [e["transaction_id"] for e in result.examples()] == [4, 5, 6]
    assert all(e["differed"] == [REASONS] for e in result.examples())
    # Another model version's reasons are not compared (nor its score).
    online.loc[online["transaction_id"].isin([4, 5, 6]), "model_version"] = "v0002"
    result = compare_day(DAY, online, feats, preds)
    assert (result.items[REASONS]["compared"], result.matched) == (3, 6)


def _log_decisions(data_dir: Path, day: str) -> pd.DataFrame:
    """online_predictions of ``day`` as a service answering with the batch numbers would
    have logged them (the service's own path is tested by the replay tests)."""
    tables = data_dir / "tables"
    raw = lake.read_days(str(tables / "raw_transactions"), [day]).to_pandas()
    feats = lake.read_days(str(tables / "transaction_features"), [day]).to_pandas()
    preds = lake.read_days(str(tables / "batch_predictions"), [day]).to_pandas()
    frame = raw[["transaction_id", "tx_datetime", "customer_id", "terminal_id"]].merge(
        feats[["transaction_id", *FEATURE_COLUMNS]], on="transaction_id").merge(
        preds[["transaction_id", "score", "decision", "model_version", "reasons"]],
        on="transaction_id")
    frame = frame.assign(threshold_review=0.5, threshold_decline=0.9, fallback=False,
                         shadow_version=None, shadow_score=None, received_at=frame["tx_datetime"],
                         latency_ms=2.0, worker="test:1", degraded=False, day=day)
    return frame


def _write_log(data_dir: Path, frame: pd.DataFrame, day: str) -> None:
    uri = str(data_dir / "tables" / "online_predictions")
    lake.ensure_table(uri, DECISION_SCHEMA)
    table = pa.Table.from_pandas(frame[list(DECISION_SCHEMA.names)], schema=DECISION_SCHEMA,
                                 preserve_index=False)
    lake.replace_days(uri, table, [day])


def _check(data_dir: Path) -> tuple[bool, dict, dict]:
    result = dg.materialize(
        [online_consistency], partition_key=DAY,
        resources={"delta": DeltaLakeResource(root=str(data_dir / "tables")),
                   "monitoring": MonitoringResource(workspace=str(data_dir / "evidently"))})
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    return check.passed, {k: v.value for k, v in check.metadata.items()}, meta


def test_the_asset_passes_on_equal_numbers_and_fails_naming_a_corrupted_feature(
        small_pipeline: Path, tmp_path: Path) -> None:
    data_dir = private_copy(small_pipeline, tmp_path)
    logged = _log_decisions(data_dir, DAY)
    _write_log(data_dir, logged, DAY)
    passed, check, meta = _check(data_dir)
    assert passed, check
    assert meta["match_rate"].value == 1.0 and meta["compared"].value == len(logged) > 100
    assert meta["missing"].value == meta["landed_not_decided"].value == 0
    # The rate is on an Evidently dashboard too: the day's report in its own project.
    from evidently.ui.workspace import Workspace

    from fraudkit.monitoring.consistency import ConsistencyWorkspace

    workspace = Workspace.create(str(data_dir / "evidently"))
    (project,) = workspace.search_project(ConsistencyWorkspace.PROJECT)
    assert len(workspace.list_runs(project.id)) == 1
    assert meta["evidently_report"].value.startswith("http://localhost:")

    victim = int(logged["transaction_id"].iloc[len(logged) // 2])
    logged.loc[logged["transaction_id"] == victim, "customer_avg_amount_30d"] += 0.01
    _write_log(data_dir, logged, DAY)
    passed, check, meta = _check(data_dir)
    assert not passed
    assert f"transaction {victim}: customer_avg_amount_30d" in check["mismatched_transactions"]
    assert DAY in check["days_below"]
    assert check["values"][f"{DAY} customer_avg_amount_30d"][0]["transaction_id"] == victim
    assert meta["matched"].value == len(logged) - 1
    table = lake.read_days(str(data_dir / "tables" / "online_consistency"), [DAY]).to_pandas()
    assert len(table) == len(FEATURE_COLUMNS) + 3  # per feature, score, reasons, transaction
    row = table.set_index("item").loc["customer_avg_amount_30d"]
    assert row["compared"] - row["matched"] == 1
    assert row["max_abs_diff"] == pytest.approx(0.01)

    # A review or decline logged with other reasons than batch_predictions gave it.
    logged.loc[logged["transaction_id"] == victim, "customer_avg_amount_30d"] -= 0.01
    explained = logged.index[logged["reasons"].map(lambda r: r is not None and len(r) > 1)]
    assert len(explained) > 0
    other = int(logged.at[explained[0], "transaction_id"])
    logged.at[explained[0], "reasons"] = list(logged.at[explained[0], "reasons"])[::-1]
    _write_log(data_dir, logged, DAY)
    passed, check, meta = _check(data_dir)
    assert not passed and f"transaction {other}: reasons" in check["mismatched_transactions"]
