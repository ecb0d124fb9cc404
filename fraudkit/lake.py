"""Delta Lake access shared by the pipeline's Dask tasks and the online service.

Tables are partitioned by ``day`` (``YYYY-MM-DD``, the Dagster partition key). A day range
is replaced with one ``overwrite`` commit whose predicate covers exactly those days, so a
re-run replaces its partitions atomically and never appends twice; readers keep seeing the
previous version until the commit lands.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

PARTITION = "day"


def day_range(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def shift_day(day: str, days: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


def days_predicate(days: Sequence[str]) -> str:
    """SQL predicate for a contiguous, sorted run of days."""
    return f"{PARTITION} >= '{days[0]}' AND {PARTITION} <= '{days[-1]}'"


def ensure_table(uri: str, schema: pa.Schema, storage_options: dict | None = None) -> None:
    """Create an empty day-partitioned table if none exists (before parallel writers start)."""
    DeltaTable.create(uri, schema, mode="ignore", partition_by=[PARTITION],
                      storage_options=storage_options)


def table_version(uri: str, storage_options: dict | None = None) -> int | None:
    try:
        return DeltaTable(uri, storage_options=storage_options).version()
    except TableNotFoundError:
        return None


def replace_days(
    uri: str,
    data: pa.Table,
    days: Sequence[str],
    storage_options: dict | None = None,
    attempts: int = 8,
) -> int:
    """Atomically replace the partitions ``days`` (contiguous) with ``data``; returns the
    table version written. Concurrent writers of other days can make a commit fail: retry
    with jittered backoff, as delta-rs recommends."""
    days = sorted(days)
    for attempt in range(attempts):
        try:
            write_deltalake(
                uri,
                data,
                mode="overwrite",
                predicate=days_predicate(days),
                partition_by=[PARTITION],
                storage_options=storage_options,
            )
            return DeltaTable(uri, storage_options=storage_options).version()
        except CommitFailedError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


def read_days(
    uri: str,
    days: Sequence[str],
    columns: list[str] | None = None,
    version: int | None = None,
    storage_options: dict | None = None,
) -> pa.Table:
    """Rows of the given days (partition-pruned), optionally at a pinned table version."""
    table = DeltaTable(uri, version=version, storage_options=storage_options)
    dataset = table.to_pyarrow_dataset()
    return dataset.to_table(columns=columns, filter=pc.field(PARTITION).isin(list(days)))


def rows_per_day(uri: str, days: Sequence[str], version: int | None = None,
                 storage_options: dict | None = None) -> dict[str, int]:
    table = read_days(uri, days, columns=[PARTITION], version=version,
                      storage_options=storage_options)
    counts = pc.value_counts(table[PARTITION]).to_pylist() if table.num_rows else []
    result = dict.fromkeys(days, 0)
    result.update({c["values"]: c["counts"] for c in counts})
    return result
