"""The whole asset graph on small simulated data, for real: Dagster runs, a Dask
LocalCluster, Delta tables and the registry in a temporary DATA_DIR."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from fraudkit import lake
from fraudkit.features import FEATURE_COLUMNS, features_frame
from fraudkit.registry import ModelRegistry
from tests.inprocess import failure_messages, run_in_process

TABLES = ["raw_transactions", "quarantined_transactions", "transaction_features",
          "batch_predictions"]
#: Columns that record *when/with what* a row was made, not what it says.
RUN_METADATA = ["scored_at", "feature_table_version"]


def table(data_dir: Path, name: str) -> pd.DataFrame:
    frame = lake.dataset(str(data_dir / "tables" / name)).to_table().to_pandas()
    keys = ["transaction_id"] if "transaction_id" in frame and name != "quarantined_transactions" \
        else list(frame.columns)
    return frame.drop(columns=[c for c in RUN_METADATA if c in frame]).sort_values(
        keys).reset_index(drop=True)


def test_graph_materializes_with_consistent_tables(small_pipeline: Path) -> None:
    raw = table(small_pipeline, "raw_transactions")
    feats = table(small_pipeline, "transaction_features")
    preds = table(small_pipeline, "batch_predictions")
    landing_rows = sum(len(pd.read_parquet(p)) for p in (small_pipeline / "landing").iterdir())
    assert len(raw) == landing_rows > 20_000
    assert raw["transaction_id"].is_unique
    # One feature row and one prediction per kept transaction.
    assert feats["transaction_id"].tolist() == raw["transaction_id"].tolist()
    assert preds["transaction_id"].tolist() == raw["transaction_id"].tolist()
    assert not feats[list(FEATURE_COLUMNS)].isna().any().any()
    assert preds["score"].between(0, 1).all()
    assert set(preds["decision"]) <= {"approve", "review", "decline"}
    # Every review and decline carries its reasons (the top features, largest first, from
    # the explainer inside the champion's file); approvals carry none.
    flagged = preds["decision"] != "approve"
    assert flagged.any() and preds.loc[~flagged, "reasons"].isna().all()
    for found in preds.loc[flagged, "reasons"]:
        contributions = [r["contribution"] for r in found]
        assert 1 <= len(found) <= 3 and contributions == sorted(contributions, reverse=True)
        assert {r["feature"] for r in found} <= set(FEATURE_COLUMNS) and min(contributions) > 0
    # The Dask path equals the kernel run once over everything (no chunk-edge effects).
    whole = features_frame(raw, 7).sort_values("transaction_id").reset_index(drop=True)
    for col in FEATURE_COLUMNS:
        np.testing.assert_allclose(feats[col].to_numpy(), whole[col].to_numpy(), rtol=0,
                                   atol=1e-9, err_msg=col)
    champion = ModelRegistry(small_pipeline / "registry").champion()
    assert set(preds["model_version"]) == {champion.version}
    manifest = champion.manifest
    assert manifest["feature_order"] == list(FEATURE_COLUMNS)
    assert manifest["metrics"]["auc_roc"] > 0.75
    assert manifest["metrics"]["onnx_max_abs_diff"] < 1e-5
    training_data = manifest["training_data"]
    assert {"training_set_version", "train_range", "test_range"} <= set(training_data)
    raw_version = DeltaTable(str(small_pipeline / "tables" / "raw_transactions")).version()
    assert set(training_data["source_table_versions"]) == {"transaction_features",
                                                           "raw_transactions"}
    assert 0 <= training_data["source_table_versions"]["raw_transactions"] <= raw_version
    champion.verify()


def test_rerunning_partitions_changes_nothing(small_pipeline: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(small_pipeline, data_dir)
    before = {name: table(data_dir, name) for name in TABLES}
    versions = {name: DeltaTable(str(data_dir / "tables" / name)).version() for name in TABLES}
    # Three days in the middle: their features read the days before them, and the days after
    # them read theirs; the run goes through the same jobs as a back-fill, in this process.
    for job in ["ingest_and_features", "score"]:
        result = run_in_process(data_dir, job, "2026-06-10", "2026-06-12")
        assert result.success, failure_messages(result)[-3000:]
        if job == "ingest_and_features":  # both steps on the one cluster the run started
            clusters = set(re.findall(r"on the Dask cluster at (\S+)", result.log))
            assert len(clusters) == 1 and result.log.count("on the Dask cluster at") == 2, \
                clusters
    for name in TABLES:
        after = table(data_dir, name)
        pd.testing.assert_frame_equal(after, before[name], check_exact=True, obj=name)
        assert DeltaTable(str(data_dir / "tables" / name)).version() > versions[name], name
    # Time travel still reads the version before the re-run.
    old = lake.dataset(str(data_dir / "tables" / "raw_transactions"),
                     version=versions["raw_transactions"]).to_table().to_pandas()
    assert len(old) == len(before["raw_transactions"])


def _drop_day(landing: Path, day: str) -> None:
    (landing / f"transactions_{day}.parquet").unlink()


def _drop_a_column(landing: Path, day: str) -> None:
    path = landing / f"transactions_{day}.parquet"
    pd.read_parquet(path).drop(columns=["tx_amount"]).to_parquet(path)


@pytest.mark.parametrize(
    ("breaks", "message"),
    [(_drop_day, "no landing file for 2026-06-25"),
     (_drop_a_column, "transactions_2026-06-25.parquet: missing column(s) tx_amount")],
)
def test_a_bad_landing_day_fails_the_run_and_writes_nothing(
    small_pipeline: Path, tmp_path: Path, breaks, message: str
) -> None:
    # 25 days are two ingest tasks; the broken day is in the second, and yet the first
    # writes nothing either: every day and file header is checked before any task starts.
    data_dir = tmp_path / "data"
    shutil.copytree(small_pipeline, data_dir)
    breaks(data_dir / "landing", "2026-06-25")
    raw = str(data_dir / "tables" / "raw_transactions")
    before, version = table(data_dir, "raw_transactions"), DeltaTable(raw).version()
    result = run_in_process(data_dir, "ingest_and_features", "2026-06-01", "2026-06-25")
    assert not result.success
    assert message in failure_messages(result)
    assert DeltaTable(raw).version() == version
    pd.testing.assert_frame_equal(table(data_dir, "raw_transactions"), before)


def test_an_id_on_two_days_fails_the_blocking_check(small_pipeline: Path,
                                                     tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(small_pipeline, data_dir)
    first = pd.read_parquet(data_dir / "landing" / "transactions_2026-06-01.parquet")
    path = data_dir / "landing" / "transactions_2026-06-02.parquet"
    second = pd.read_parquet(path)
    second.loc[0, "transaction_id"] = taken = int(first.loc[5, "transaction_id"])
    second.to_parquet(path)
    features = str(data_dir / "tables" / "transaction_features")
    version = DeltaTable(features).version()
    result = run_in_process(data_dir, "ingest_and_features", "2026-06-01", "2026-06-02")
    assert not result.success
    out = failure_messages(result)
    assert "ids_unique_across_days" in out
    assert f"{taken}: ['2026-06-01', '2026-06-02']" in out
    assert DeltaTable(features).version() == version  # blocked: no features from it
