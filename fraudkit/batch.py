"""The batch path's units of work: plain functions a Dask worker runs on a run of days.

Each function reads its inputs from Delta (or landing files) itself, writes its output
partitions itself with one atomic overwrite, and returns only small statistics. The process
that orchestrates (a Dagster step) therefore never holds the data, and its memory does not
grow with it. Table versions are pinned by the caller so every task of one run reads the
same snapshot.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fraudkit import explain, lake
from fraudkit.blobs import is_remote
from fraudkit.features import (
    COUNT_COLUMNS,
    FEATURE_COLUMNS,
    feature_matrix,
    features_frame,
    lookback_days,
)
from fraudkit.model import OnnxModel, Thresholds, decide
from fraudkit.schema import (
    LANDING_SUFFIXES,
    QUARANTINE_SCHEMA,
    RAW_SCHEMA,
    LandingFileError,
    landing_files_for_day,
    read_landing_file,
    to_arrow,
    validate_raw,
)

FEATURES_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.int64()),
        ("tx_datetime", pa.timestamp("us", tz="UTC")),
        ("customer_id", pa.int64()),
        ("terminal_id", pa.int64()),
        *[
            (c, pa.int64() if c in COUNT_COLUMNS else pa.float64())
            for c in FEATURE_COLUMNS
        ],
        ("day", pa.string()),
    ]
)
PREDICTIONS_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.int64()),
        ("customer_id", pa.int64()),
        ("tx_datetime", pa.timestamp("us", tz="UTC")),
        ("score", pa.float64()),
        ("decision", pa.string()),
        # the top features behind a review or decline (fraudkit.explain); null otherwise
        ("reasons", explain.REASONS_TYPE),
        ("model_version", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
        ("feature_table_version", pa.int64()),
        ("day", pa.string()),
    ]
)


@dataclass(frozen=True)
class Tables:
    """URIs of the Delta tables (one folder per asset) and their storage options."""

    raw: str
    quarantine: str
    features: str
    predictions: str
    storage_options: dict | None = None


def chunk_days(days: list[str], max_days: int, min_chunks: int = 1) -> list[list[str]]:
    """Split a sorted run of days into contiguous runs of at most ``max_days``, and into at
    least ``min_chunks`` runs when there are that many days (one per Dask worker, so a short
    run of days still keeps every worker busy)."""
    size = min(max_days, -(-len(days) // max(1, min_chunks)))
    return [days[i : i + size] for i in range(0, len(days), max(1, size))]


def chunk_days_by_rows(days: list[str], rows_per_day: Mapping[str, int], max_days: int,
                       max_rows: int, lookback: int = 0, min_chunks: int = 1,
                       max_own_rows: int | None = None) -> list[list[str]]:
    """:func:`chunk_days`, each run also bounded by the rows its task holds at once: the rows
    of its days and of the ``lookback`` days before them (the history it reads) at most
    ``max_rows``, and the rows of its own days (those it computes and writes) at most
    ``max_own_rows``; one day a run at least. ``rows_per_day`` comes from the table's
    statistics (:func:`fraudkit.lake.rows_per_day`; a day it lacks counts 0), so a worker's
    memory follows the rows of a day, not the length of the back-fill: at ten times the data
    a task takes fewer days, and re-reads more look-back.

    Two bounds because a row costs a feature task about seven times more memory when it is
    computed than when it is only look-back: the first run of a back-fill has no look-back,
    so with ``max_rows`` alone it held ``max_rows`` computed rows."""
    def rows(first: int, last: int) -> int:
        start = lake.shift_day(days[first], -lookback)
        history = lake.day_range(start, days[last])
        return sum(rows_per_day.get(day, 0) for day in history)

    def fits(first: int, last: int) -> bool:
        if rows(first, last) > max_rows:
            return False
        own = sum(rows_per_day.get(day, 0) for day in days[first:last + 1])
        return max_own_rows is None or own <= max_own_rows

    size = max(1, min(max_days, -(-len(days) // max(1, min_chunks))))
    chunks: list[list[str]] = []
    first = 0
    while first < len(days):
        last = first
        while last + 1 < len(days) and last + 1 - first < size and fits(first, last + 1):
            last += 1
        chunks.append(days[first:last + 1])
        first = last + 1
    return chunks


# -- raw_transactions ------------------------------------------------------------------------
#: Rows of a task's output it returns for the step's preview in the Dagster UI.
PREVIEW_ROWS = 5


def head_of(table: pa.Table, days: list[str], rows: int = PREVIEW_ROWS) -> pa.Table:
    """The first ``rows`` rows of ``table`` on ``days``: the preview a task returns with its
    statistics. The task holds these rows already; a step that read them back from Delta
    would read a whole day's file for five rows (about 60 MiB at ten times the demo's data,
    the growth of the ingest-and-features step's peak)."""
    on = table.filter(pc.field("day").isin(days))
    return on.slice(0, rows)


def ingest_days(days: list[str], landing_dir: str, tables: Tables,
                files: dict[str, list[str]] | None = None) -> dict:
    """Validate the landing files of ``days`` into the raw and quarantine tables.

    ``files`` are the files of each day as the caller listed (and header-checked) them;
    without it the task lists ``landing_dir`` itself. Raises :class:`LandingFileError`
    (naming the file or day) when a day has no landing file or a file cannot be read as the
    contract; nothing is written for these days then. Days of other tasks of the same run
    may have been written: a re-run replaces them.
    """
    started = time.perf_counter()
    valid, rejected, stats = [], [], {}
    for day in days:
        paths = ([f if is_remote(f) else Path(f) for f in files.get(day, [])]
                 if files is not None else landing_files_for_day(
                     landing_dir if is_remote(landing_dir) else Path(landing_dir), day,
                     tables.storage_options))
        if not paths:
            raise LandingFileError(
                f"no landing file for {day} in {landing_dir} (expected a name containing "
                f"{day}, ending {', '.join(LANDING_SUFFIXES)} in any case)"
            )
        frames = [read_landing_file(f, tables.storage_options) for f in paths]
        frame = pd.concat(frames, ignore_index=True)
        source = np.concatenate([np.full(len(f), str(p), dtype=object)
                                 for f, p in zip(frames, paths, strict=True)])
        row_number = np.concatenate([np.arange(len(f)) for f in frames])
        result = validate_raw(frame, day, source, row_number)
        valid.append(result.valid)
        rejected.append(result.quarantine)
        stats[day] = {
            "files": len(paths),
            "rows_in": len(frame),
            "kept": len(result.valid),
            "quarantined": len(result.quarantine),
            "reasons": dict(Counter(result.quarantine["reason"])),
        }
    kept = to_arrow(pd.concat(valid), RAW_SCHEMA)
    quarantined = to_arrow(pd.concat(rejected), QUARANTINE_SCHEMA)
    raw_version = lake.replace_days(tables.raw, kept, days, tables.storage_options)
    quarantine_version = lake.replace_days(tables.quarantine, quarantined, days,
                                           tables.storage_options)
    return {"days": stats, "raw_version": raw_version, "quarantine_version": quarantine_version,
            "head": head_of(kept, days[-1:]), "quarantine_head": head_of(quarantined, days),
            "seconds": time.perf_counter() - started}


class DuplicateIdError(ValueError):
    """A transaction_id on several days of the raw table (see :func:`ids_on_several_days`)."""


def ids_on_several_days(days: list[str], tables: Tables, raw_version: int,
                        examples: int = 10) -> dict:
    """transaction_ids that the raw table holds on more than one day, one of them in ``days``.

    Landing validation sees one day at a time, so it quarantines duplicates within a day
    only; a duplicate across days counts as two transactions in the batch features but as
    one online (which de-duplicates by id), and breaks joins with labels. The other days
    are scanned batch by batch against the run's ids, so memory follows the run's ids (8
    bytes each), not the table; :func:`features_for_days` refuses any duplicate in its
    look-back as well.
    """
    started = time.perf_counter()
    # Only the run's ids, sorted: an id twice among them is on two of its days, as a day
    # holds an id once (validation quarantines a repeat). No group-by of ids and days: for
    # the 17.5 M rows of a back-fill at 10x the demo's data this holds 140 MB of ids.
    run_ids = np.sort(lake.read_days(tables.raw, days, ["transaction_id"], raw_version,
                                     tables.storage_options)["transaction_id"].to_numpy())
    repeated = [run_ids[1:][run_ids[1:] == run_ids[:-1]]]
    in_run = set(days)
    others = [d for d in lake.partition_values(tables.raw, tables.storage_options)
              if d not in in_run]
    if others and len(run_ids):
        dataset = lake.dataset(tables.raw, others, raw_version, tables.storage_options)
        for batch in dataset.to_batches(columns=["transaction_id"],
                                        filter=pc.field(lake.PARTITION).isin(others)):
            ids = batch["transaction_id"].to_numpy()
            at = np.minimum(np.searchsorted(run_ids, ids), len(run_ids) - 1)
            repeated.append(ids[run_ids[at] == ids])
    several = np.unique(np.concatenate(repeated))
    shown = several[:examples]
    rows = (lake.dataset(tables.raw, None, raw_version, tables.storage_options)
            .to_table(columns=["transaction_id", "day"],
                      filter=pc.field("transaction_id").isin(pa.array(shown, pa.int64())))
            .to_pandas()) if len(shown) else pd.DataFrame(columns=["transaction_id", "day"])
    where = rows.groupby("transaction_id")["day"].agg(sorted)
    return {"ids": len(several),
            "examples": {int(i): list(d) for i, d in where.items()},
            "seconds": time.perf_counter() - started}


# -- transaction_features --------------------------------------------------------------------
RAW_FEATURE_INPUTS = ["transaction_id", "tx_datetime", "customer_id", "terminal_id",
                      "tx_amount", "tx_fraud", "day"]


def features_for_days(
    days: list[str], tables: Tables, raw_version: int, label_delay_days: int
) -> dict:
    """Compute the features of ``days`` from the raw table (with the look-back they need)
    and replace those partitions of the features table; then read them back and check that
    every kept transaction has exactly one row and no value is null."""
    started = time.perf_counter()
    history = lake.day_range(lake.shift_day(days[0], -lookback_days(label_delay_days)), days[-1])
    raw = lake.read_days(tables.raw, history, RAW_FEATURE_INPUTS, raw_version,
                         tables.storage_options).to_pandas()
    twice = raw["transaction_id"].duplicated(keep=False)
    if twice.any():  # would count twice here and once online: never compute from it
        where = raw.loc[twice].groupby("transaction_id")["day"].agg(sorted).head(5)
        raise DuplicateIdError(
            f"transaction_id(s) on more than one day in {history[0]}..{history[-1]}, the "
            f"history of {days[0]}..{days[-1]}: {dict(where)} (id: days); remove them from "
            "the landing files and re-run raw_transactions for those days")
    # Only the rows of ``days`` get features; the look-back rows are history for them.
    wanted = np.flatnonzero(raw["day"].isin(days).to_numpy())
    feats = features_frame(raw, label_delay_days, wanted)
    feats.insert(2, "customer_id", raw["customer_id"].to_numpy()[wanted])
    feats.insert(3, "terminal_id", raw["terminal_id"].to_numpy()[wanted])
    out = to_arrow(feats, FEATURES_SCHEMA)
    version = lake.replace_days(tables.features, out, days, tables.storage_options)

    written = lake.read_days(tables.features, days, None, version, tables.storage_options)
    kept_ids = pc.filter(pa.array(raw["transaction_id"]), pa.array(raw["day"].isin(days)))
    written_ids = written["transaction_id"]
    missing = len(pc.filter(kept_ids, pc.invert(pc.is_in(kept_ids, written_ids))))
    nulls = sum(written[c].null_count for c in FEATURE_COLUMNS)
    return {
        "days": len(days),
        "rows": written.num_rows,
        "kept_rows": len(kept_ids),
        "missing": missing,
        "duplicates": written.num_rows - len(pc.unique(written_ids)),
        "nulls": int(nulls),
        "history_rows": len(raw),
        "version": version,
        "head": head_of(written, days[-1:]),
        "seconds": time.perf_counter() - started,
    }


# -- batch_predictions -----------------------------------------------------------------------
def score_days(
    days: list[str],
    tables: Tables,
    features_version: int,
    model_path: str,
    model_version: str,
    thresholds: dict,
    reason_codes: int = 3,
    model_bytes: bytes | None = None,
) -> dict:
    """Score the features of ``days`` with the ONNX model and replace those partitions of
    the predictions table. One onnxruntime thread: the Dask workers are the parallelism.

    ``model_bytes``, when given, is the model file the caller read and verified
    (``model_path`` then only names it): the worker needs no access to the registry.

    Each review and decline gets its top ``reason_codes`` reasons from the explainer in
    the model file (:mod:`fraudkit.explain`), computed from the same float32 matrix the
    model scored, as the online service does; none when the version carries no explainer
    or ``reason_codes`` is 0."""
    started, cpu_started = time.perf_counter(), time.process_time()
    columns = ["transaction_id", "customer_id", "tx_datetime", *FEATURE_COLUMNS, "day"]
    feats = lake.read_days(tables.features, days, columns, features_version,
                           tables.storage_options)
    matrix = feature_matrix({c: feats[c].to_numpy() for c in FEATURE_COLUMNS})
    model = OnnxModel(model_path, threads=1, content=model_bytes)
    scores = model.predict(matrix)
    decisions = decide(scores, Thresholds(**thresholds))
    flagged = int(np.isin(decisions, list(explain.EXPLAINED_DECISIONS)).sum())
    # Loading the explainer (its tables, its check) costs about a second: only when needed.
    explainer = (explain.Explainer.of(model, model_version) if reason_codes and flagged
                 else None)
    reasons = explain.reasons(explainer, matrix, decisions, reason_codes)
    n = feats.num_rows
    out = pa.table(
        {
            "transaction_id": feats["transaction_id"],
            "customer_id": feats["customer_id"],
            "tx_datetime": feats["tx_datetime"],
            "score": pa.array(scores, pa.float64()),
            "decision": pa.array(decisions.tolist(), pa.string()),
            "reasons": explain.to_arrow(reasons),
            "model_version": pa.array([model_version] * n, pa.string()),
            "scored_at": pa.array(
                np.full(n, np.datetime64(dt.datetime.now(dt.UTC).replace(tzinfo=None), "us")),
                pa.timestamp("us", tz="UTC"),
            ),
            "feature_table_version": pa.array(np.full(n, features_version), pa.int64()),
            "day": feats["day"],
        },
        schema=PREDICTIONS_SCHEMA,
    )
    version = lake.replace_days(tables.predictions, out, days, tables.storage_options)
    counts = Counter(decisions.tolist())
    # Read back what was committed and compare with the kept transactions of these days.
    written = lake.read_days(tables.predictions, days, ["transaction_id"], version,
                             tables.storage_options)["transaction_id"]
    kept = lake.rows_per_day(tables.raw, days, storage_options=tables.storage_options)
    return {
        "rows": n,
        "written_rows": len(written),
        "distinct_ids": len(pc.unique(written)),
        "kept_rows": sum(kept.values()),
        "version": version,
        "min_score": float(scores.min()) if n else None,
        "max_score": float(scores.max()) if n else None,
        "out_of_range": int(((scores < 0) | (scores > 1) | ~np.isfinite(scores)).sum()),
        "decisions": dict(counts),
        "flagged": flagged,  # reviews and declines
        "explained": sum(r is not None for r in reasons),
        "head": head_of(out, days[-1:]),
        "seconds": time.perf_counter() - started,
        # The worker process's CPU (its threads: reads, scoring, the commit): what the
        # serving report prices per 1,000 predictions.
        "cpu_seconds": time.process_time() - cpu_started,
    }
