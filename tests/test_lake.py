"""fraudkit.lake: the Delta helpers both serving paths and the assets read through."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from deltalake.exceptions import SchemaMismatchError

from fraudkit import lake


@pytest.fixture(scope="module")
def daily_table(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """A Delta table of 60 daily partitions, one file each, 400 rows per day."""
    uri = str(tmp_path_factory.mktemp("lake") / "t")
    days = lake.day_range("2026-05-01", "2026-06-29")
    n = 400
    write_deltalake(uri, pa.table({
        "transaction_id": pa.array(range(n * len(days)), pa.int64()),
        "payload": pa.array([f"row {i}" for i in range(n * len(days))]),
        "day": pa.array([d for d in days for _ in range(n)]),
    }), partition_by=["day"])
    return uri, days


def test_consecutive_runs_split_at_gaps_and_month_ends() -> None:
    assert lake.consecutive_runs([]) == []
    assert lake.consecutive_runs(["2026-06-29", "2026-06-30", "2026-07-01", "2026-07-03",
                                  "2026-07-05", "2026-07-06"]) == [
        ["2026-06-29", "2026-06-30", "2026-07-01"], ["2026-07-03"],
        ["2026-07-05", "2026-07-06"]]


def test_reading_no_days_gives_the_table_s_empty_columns(
        daily_table: tuple[str, list[str]]) -> None:
    uri, _ = daily_table
    assert lake.read_days(uri, []).schema.names == ["transaction_id", "payload", "day"]
    assert lake.read_days(uri, [], ["transaction_id"]).num_rows == 0


def test_a_new_column_is_merged_into_a_table_of_an_earlier_release(tmp_path: Path) -> None:
    """A table written before a column existed (e.g. ``reasons``) takes it on the next
    replace of some days; the other days read it as null. Anything else that breaks the
    schema is still refused."""
    uri = str(tmp_path / "t")
    old = pa.table({"a": pa.array([1, 2], pa.int64()), "day": ["2026-06-01", "2026-06-02"]})
    lake.replace_days(uri, old, ["2026-06-01", "2026-06-02"])
    new = pa.table({"a": pa.array([3], pa.int64()), "day": ["2026-06-02"],
                    "reasons": pa.array([["x"]], pa.list_(pa.string()))})
    lake.replace_days(uri, new, ["2026-06-02"])
    assert "reasons" in lake.column_names(uri)
    rows = {r["day"]: r for r in lake.read_days(uri, ["2026-06-01", "2026-06-02"]).to_pylist()}
    assert rows["2026-06-01"]["reasons"] is None and rows["2026-06-02"]["reasons"] == ["x"]
    bad = pa.table({"a": pa.array(["text"]), "day": ["2026-06-01"]})
    with pytest.raises(SchemaMismatchError):
        lake.replace_days(uri, bad, ["2026-06-01"])
