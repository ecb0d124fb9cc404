"""Drift on live traffic: online_drift_report is drift_report's report on the service's
decisions, and the drift sensor acts on either source."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from assets.drift import DRIFT_TABLE, ONLINE_DRIFT_TABLE, drift_report, online_drift_report
from fraudkit import lake
from fraudkit.monitoring.trigger import TriggerConfig, decide_trigger, drift_events
from resources import (
    DeltaLakeResource,
    ModelRegistryResource,
    MonitoringResource,
    ReportsResource,
)
from sensors.drift import drift_sensor
from tests.conftest import private_copy
from tests.test_consistency import _log_decisions, _write_log

DAY = "2026-06-20"


def test_a_day_counts_at_its_worst_source_and_the_event_says_which() -> None:
    per_day = pd.DataFrame({
        "day": ["2026-06-01", "2026-06-01", "2026-06-02", "2026-06-03"],
        "drift_share": [0.1, 0.4, 0.3, 0.1],
        "model_version": "v0001",
        "drifted_list": ["", "tx_amount", "customer_avg_amount_1d", ""],
        "source": ["batch", "online", "batch", "online"],
    })
    cfg = TriggerConfig(drift_share=0.2, performance_floor=None)
    (event,) = drift_events(per_day, cfg)
    assert (event.first_day, event.last_day, event.value) == ("2026-06-01", "2026-06-02", 0.4)
    assert event.source == "online" and event.detail == "tx_amount"
    decision = decide_trigger([event], [], None, 0.0, cfg)
    assert decision.launch == event
    assert decision.reason == "drift-2026-06-01 (online traffic): tx_amount"
    # batch alone: the same day is not drifted, and a tie goes to batch
    assert drift_events(per_day[per_day["source"] == "batch"].iloc[:1], cfg) == []
    tie = per_day.iloc[[0, 1]].assign(drift_share=0.5)
    assert drift_events(tie, cfg)[0].source == "batch"


def _resources(data_dir: Path, monitoring: MonitoringResource) -> dict:
    return {"delta": DeltaLakeResource(root=str(data_dir / "tables")),
            "registry": ModelRegistryResource(root=str(data_dir / "registry")),
            "monitoring": monitoring,
            "reports": ReportsResource(root=str(data_dir / "reports"))}


@pytest.fixture
def logged(small_pipeline: Path, tmp_path: Path) -> Path:
    """A copy of the small pipeline whose online_predictions hold DAY as a service
    answering with the batch numbers would have logged it."""
    data_dir = private_copy(small_pipeline, tmp_path)
    _write_log(data_dir, _log_decisions(data_dir, DAY), DAY)
    return data_dir


def test_the_online_report_is_the_batch_report_on_the_same_numbers(logged: Path) -> None:
    monitoring = MonitoringResource(performance_floor=None, workspace="none")
    for asset in (drift_report, online_drift_report):
        result = dg.materialize([asset], partition_key=DAY,
                                resources=_resources(logged, monitoring))
        assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["source"].value.startswith("online: the service's decisions")
    tables = logged / "tables"
    batch = lake.read_days(str(tables / DRIFT_TABLE), [DAY]).to_pandas().set_index("column")
    online = lake.read_days(str(tables / ONLINE_DRIFT_TABLE), [DAY]).to_pandas().set_index(
        "column")
    assert sorted(online.index) == sorted(batch.index)
    pd.testing.assert_series_equal(online["drift_score"], batch.loc[online.index, "drift_score"],
                                   rtol=0, atol=1e-9)
    assert online["current_rows"].iat[0] == batch["current_rows"].iat[0] > 100
    assert online["report_path"].iat[0].endswith(f"drift_online_{DAY}.html")
    assert Path(online["report_path"].iat[0]).stat().st_size > 10_000


def test_the_drift_sensor_retrains_on_drift_seen_only_online(logged: Path) -> None:
    # Thresholds so low that the normal day counts as drifted: only the online report has
    # it (this copy has no batch drift report), so any launch comes from the live traffic.
    monitoring = MonitoringResource(performance_floor=None, workspace="none",
                                    feature_threshold=1e-6, drift_share=0.01)
    resources = _resources(logged, monitoring)
    assert dg.materialize([online_drift_report], partition_key=DAY,
                          resources=resources).success
    assert lake.table_version(str(logged / "tables" / DRIFT_TABLE)) is None
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(instance=instance, resources={
            k: resources[k] for k in ("delta", "monitoring", "registry")})
        request = drift_sensor(context)
    assert isinstance(request, dg.RunRequest), request
    assert request.run_key == f"retrain-drift-{DAY}-v0001"
    assert request.tags["monitoring/source"] == "online"
    assert "(online traffic)" in request.tags["monitoring/reason"]
