"""serving_report: the two paths' figures on small frames, and the asset on the small
pipeline's real tables after a real scoring run in the same Dagster instance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudkit import lake
from fraudkit.monitoring.serving import (
    batch_staleness,
    cost_per_1000,
    decisions_differing,
    drains,
    online_latency,
)
from scripts.jobs import RANGE_END, RANGE_START
from tests.conftest import private_copy
from tests.inprocess import definitions_for
from tests.test_consistency import _log_decisions, _write_log

DAY = "2026-06-20"


def _ts(values: list[str]) -> pd.Series:
    return pd.to_datetime(pd.Series(values), utc=True, format="ISO8601")


def test_drains_latency_staleness_and_differences_on_frames() -> None:
    logged = pd.DataFrame({
        "transaction_id": [1, 2, 3, 4],
        "received_at": _ts(["2026-06-20 10:00:00.000100", "2026-06-20 10:00:00.000300",
                            "2026-06-20 10:00:00.000300", "2026-06-20 10:00:02"]),
        "latency_ms": [1.2, 1.0, 1.0, 3.0], "worker": ["a:1", "a:1", "b:2", "a:1"],
        "customer_id": [7, 7, 8, 9],
        "tx_datetime": _ts(["2026-06-20 10:00:00"] * 3 + ["2026-06-20 12:00:00"]),
        "decision": ["approve", "review", "approve", "decline"],
        "model_version": ["v1", "v1", "v1", "v2"],
    })
    # 1 and 2 were decided together by worker a (100 us + 1.2 ms = 300 us + 1.0 ms), in
    # nanosecond frames and in microsecond ones (what a Delta read gives)
    assert [list(d) for d in drains(logged)] == [[0, 1], [2], [3]]
    as_read = logged.assign(received_at=logged["received_at"].astype("datetime64[us, UTC]"))
    assert [list(d) for d in drains(as_read)] == [[0, 1], [2], [3]]
    assert online_latency(as_read)["peak_per_s"] == 3
    latency = online_latency(logged)
    assert latency["predictions"] == 4 and latency["peak_per_s"] == 3
    assert latency["latency_p50_ms"] == pytest.approx(1.1)
    earlier = pd.DataFrame({"customer_id": [7, 7, 9],
                            "tx_datetime": _ts(["2026-06-19 04:00", "2026-06-19 22:00",
                                                "2026-06-18 12:00"])})
    stale = batch_staleness(logged, earlier)
    assert stale["without_batch_prediction"] == 1  # customer 8
    assert stale["staleness_p50_h"] == pytest.approx(12.0)  # 12, 12, 48 hours
    batch = logged.assign(decision=["approve", "approve", "approve", "approve"],
                          model_version=["v1", "v1", "v1", "v1"])
    differ = decisions_differing(logged, batch)
    assert differ["differing"] == pytest.approx(0.5)
    assert differ["differing_same_model"] == pytest.approx(1 / 3)
    assert cost_per_1000(3.6, 1000, 0.05) == pytest.approx(0.00005)
    assert cost_per_1000(None, 10, 0.05) is None


def test_the_report_measures_both_paths_on_real_runs(small_pipeline: Path,
                                                     tmp_path: Path) -> None:
    import dagster as dg

    data_dir = private_copy(small_pipeline, tmp_path)
    _write_log(data_dir, _log_decisions(data_dir, DAY), DAY)
    defs = definitions_for(data_dir)
    tags = {RANGE_START: DAY, RANGE_END: DAY}
    with dg.DagsterInstance.ephemeral() as instance:
        for job in ("score", "report_serving"):  # the report reads the scoring run's timings
            result = defs.resolve_job_def(job).execute_in_process(instance=instance,
                                                                  tags=tags)
            assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    rows = lake.read_days(str(data_dir / "tables" / "serving_report"), [DAY]).to_pandas()
    batch, online = (rows[rows["path"] == p].iloc[0] for p in ("batch", "online"))
    assert batch["predictions"] == online["predictions"] > 100
    assert batch["cpu_seconds"] > 0 and online["cpu_seconds"] > 0
    assert batch["throughput_per_s"] > 0 and np.isfinite(online["latency_p99_ms"])
    assert online["decisions_differing"] == 0.0  # the log holds the batch decisions
    assert 0 < batch["staleness_p50_h"] < 7 * 24 and online["staleness_p50_h"] < 1e-6
    assert meta["batch_cost_per_1000"].value > 0 and meta["online_cost_per_1000"].value > 0
    html = Path(meta["report"].value)
    assert html.exists() and (html.parent / "plotly.min.js").exists()
    assert "Batch vs real-time serving" in html.read_text()
