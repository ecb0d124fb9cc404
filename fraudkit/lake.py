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
    """Rows of the given days, optionally at a pinned table version.

    The days prune the Delta log's file list before pyarrow sees it: a table of hundreds of
    daily partitions then costs a few milliseconds to open instead of a quarter second.
    """
    days = list(days)
    table = DeltaTable(uri, version=version, storage_options=storage_options)
    dataset = table.to_pyarrow_dataset(file_pruning_predicate=[(PARTITION, "in", days)])
    return dataset.to_table(columns=columns, filter=pc.field(PARTITION).isin(days))


def rows_per_day(uri: str, days: Sequence[str], version: int | None = None,
                 storage_options: dict | None = None) -> dict[str, int]:
    """Row count of each day from the Delta log's file statistics (no data is read, so the
    caller's memory does not grow with the table); falls back to counting rows of files
    that carry no statistics."""
    table = DeltaTable(uri, version=version, storage_options=storage_options)
    actions = pa.table(table.get_add_actions(flatten=True))
    result = dict.fromkeys(days, 0)
    no_stats: set[str] = set()
    for day, count in zip(actions[f"partition.{PARTITION}"].to_pylist(),
                          actions["num_records"].to_pylist(), strict=True):
        if day in result:
            if count is None:
                no_stats.add(day)
            else:
                result[day] += count
    for day in no_stats:
        result[day] = table.to_pyarrow_dataset().to_table(
            columns=[PARTITION], filter=pc.field(PARTITION) == day).num_rows
    return result


def head_days(uri: str, days: Sequence[str], rows: int = 5,
              storage_options: dict | None = None) -> pa.Table:
    """The first ``rows`` rows of the given days (a preview that reads little)."""
    days = list(days)
    dataset = DeltaTable(uri, storage_options=storage_options).to_pyarrow_dataset(
        file_pruning_predicate=[(PARTITION, "in", days)])
    return dataset.head(rows, filter=pc.field(PARTITION).isin(days))


def partition_values(uri: str, storage_options: dict | None = None) -> list[str]:
    """The days present in a table, from the Delta log alone."""
    actions = pa.table(DeltaTable(uri, storage_options=storage_options)
                       .get_add_actions(flatten=True))
    return sorted(set(actions[f"partition.{PARTITION}"].to_pylist()))
