"""online_predictions in process: dg.materialize on a real SQLite store and Delta table."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow.compute as pc

from assets.online import online_predictions
from fraudkit import lake
from fraudkit.store import day_start_us, open_store
from resources import DeltaLakeResource
from resources.online import OnlineStoreResource
from tests.test_store import decision

DAY = "2026-06-02"


def _materialize(tmp_path: Path, url: str, day: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [online_predictions], partition_key=day,
        resources={"delta": DeltaLakeResource(root=str(tmp_path / "tables")),
                   "online_store": OnlineStoreResource(url=url)},
    )


def test_a_day_moves_to_delta_once_and_a_retry_is_one_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    store = open_store(url)
    t0 = day_start_us(DAY)
    store.write([decision(i, t0 + i * 1_000_000, i % 3, 7, float(i)) for i in range(1, 101)])
    store.write([decision(5, t0 + 5_000_000, 2, 7, 5.0, score=0.99)])  # a client's retry
    store.write([decision(1000, t0 + 86_400_000_000, 1, 7, 1.0)])  # the next day
    for _ in range(2):  # a re-run replaces the partition
        result = _materialize(tmp_path, url, DAY)
        assert result.success
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {"rows_equal_store": True, "one_row_per_transaction": True}
    table = lake.dataset(str(tmp_path / "tables" / "online_predictions")).to_table()
    assert table.num_rows == 100
    assert pc.count_distinct(table["transaction_id"]).as_py() == 100
    row5 = table.filter(pc.equal(table["transaction_id"], 5)).to_pylist()[0]
    assert row5["score"] == 0.99 and row5["customer_id"] == 2
    assert row5["customer_nb_tx_1d"] == 1 and row5["day"] == DAY
    assert store.delivered_days() == {DAY: 100}
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["dagster/row_count"].value == 100
