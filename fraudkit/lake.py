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
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pa_ds
import pyarrow.fs as pa_fs
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, SchemaMismatchError, TableNotFoundError

PARTITION = "day"


def day_range(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def shift_day(day: str, days: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


def consecutive_runs(days: Sequence[str]) -> list[list[str]]:
    """Sorted days split into runs of consecutive calendar days (a drift episode, a block of
    days one ranged run processes)."""
    runs: list[list[str]] = []
    for day in days:
        if runs and shift_day(runs[-1][-1], 1) == day:
            runs[-1].append(day)
        else:
            runs.append([day])
    return runs


def days_predicate(days: Sequence[str]) -> str:
    """SQL predicate for a contiguous, sorted run of days."""
    return f"{PARTITION} >= '{days[0]}' AND {PARTITION} <= '{days[-1]}'"


def dataset(
    uri: str,
    days: Sequence[str] | None = None,
    version: int | None = None,
    storage_options: dict | None = None,
) -> pa_ds.Dataset:
    """The table (at ``version``, or the latest) as a pyarrow dataset, its file list pruned
    to ``days`` when given. Every read of a table's rows goes through here.

    A local table is read through Arrow's own file system. deltalake's default is a Python
    file system: Arrow's reader threads then hold Python file objects, and one released by
    such a thread while the interpreter exits aborts the process ("terminate called without
    an active exception", or SIGSEGV), measured in 6 of 48 short processes that read a
    60-day table. Tables on an object store keep deltalake's file system.
    """
    table = DeltaTable(uri, version=version, storage_options=storage_options)
    return table.to_pyarrow_dataset(
        filesystem=_local_filesystem(uri),
        file_pruning_predicate=[(PARTITION, "in", list(days))] if days else None)


def _local_filesystem(uri: str) -> pa_fs.FileSystem | None:
    """Arrow's file system rooted at a local table (data file paths are relative to it)."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        root = unquote(parts.path)
    elif parts.scheme == "":
        root = uri
    else:
        return None
    return pa_fs.SubTreeFileSystem(str(Path(root).resolve()), pa_fs.LocalFileSystem())


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
    with jittered backoff, as delta-rs recommends.

    A column that ``data`` has and the table lacks (a table written by an earlier release,
    e.g. ``reasons``) is added by this commit (schema merge); the other days read it as
    null. Only then, after the plain write refused the schema: a commit that changes the
    schema conflicts with every concurrent one, and every write stays one call.
    """
    days = sorted(days)
    merge = False
    for attempt in range(attempts):
        try:
            write_deltalake(
                uri,
                data,
                mode="overwrite",
                predicate=days_predicate(days),
                partition_by=[PARTITION],
                storage_options=storage_options,
                schema_mode="merge" if merge else None,
            )
            return DeltaTable(uri, storage_options=storage_options).version()
        except SchemaMismatchError:
            if merge or not _new_columns(uri, data.schema, storage_options):
                raise
            merge = True
        except CommitFailedError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


def column_names(uri: str, storage_options: dict | None = None) -> list[str]:
    """The table's columns (its current schema)."""
    return [f.name for f in DeltaTable(uri, storage_options=storage_options).schema().fields]


def _new_columns(uri: str, schema: pa.Schema, storage_options: dict | None) -> bool:
    """True when the table exists and lacks some of ``schema``'s columns."""
    try:
        have = set(column_names(uri, storage_options))
    except TableNotFoundError:
        return False
    return any(name not in have for name in schema.names)


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
    if not days:  # no rows; pyarrow refuses an empty value set in ``isin``
        empty = dataset(uri, None, version, storage_options).schema.empty_table()
        return empty.select(columns) if columns else empty
    return dataset(uri, days, version, storage_options).to_table(
        columns=columns, filter=pc.field(PARTITION).isin(days))


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
        result[day] = dataset(uri, [day], table.version(), storage_options).count_rows(
            filter=pc.field(PARTITION) == day)
    return result


def partition_values(uri: str, storage_options: dict | None = None) -> list[str]:
    """The days present in a table, from the Delta log alone."""
    actions = pa.table(DeltaTable(uri, storage_options=storage_options)
                       .get_add_actions(flatten=True))
    return sorted(set(actions[f"partition.{PARTITION}"].to_pylist()))
