"""The 12 window features (plus the 3 per-row ones) three ways, on the same raw data.

    .venv/bin/python benchmarks/features.py                 # simulator default, ~1.75M rows
    .venv/bin/python benchmarks/features.py --scale 2 --repeats 5 --no-pandas

What is timed (every case starts from the raw transactions already in memory, ends with
the feature table of every transaction materialized in memory, and none includes set-up):

* ``dask``: the project's batch computation. The days are cut into the asset's chunks
  (``assets.features.DAYS_PER_TASK``); each chunk's raw rows *with their look-back*
  (``lookback_days``) are placed on a worker beforehand (untimed: in the pipeline a worker
  reads them from Delta itself). Timed: on a LocalCluster of 2 single-thread worker
  processes (the DaskResource default), each task runs ``fraudkit.features.features_frame``
  on its chunk for the rows of its own days (the look-back rows are history only), as
  ``fraudkit.batch.features_for_days`` does; the driver waits for every task.
* ``duckdb``: one SQL query with ``RANGE BETWEEN INTERVAL ... PRECEDING`` windows over an
  Arrow table registered in DuckDB (2 threads, the machine's cores), fetched as Arrow.
* ``pandas``: ``groupby().rolling("<w>D", on=..., closed="right")`` in one process.

Besides, ``dask features_for_days (Delta)`` times the asset's real task
(``fraudkit.batch.features_for_days``: read raw Delta with look-back, compute, replace the
features partitions, read them back and check them) on the same data; it does I/O the
in-memory cases do not, so its ratio is shown for information only.

Every result is checked against the kernel on the whole data set (``features_frame``
without chunking): counts exactly, means and risks within 1e-9. A linear-scaling check
then times the dask case on ``--scaling-factor`` (4) times the data in the same rounds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from common import (
    N_WORKERS,
    banner,
    import_from_checkout,
    local_cluster,
    machine_line,
    median,
    print_table,
    repeat_interleaved,
    scaled_config,
    simulate_frame,
    timed,
    verdict,
    write_raw_table,
)

from fraudkit import lake
from fraudkit.batch import FEATURES_SCHEMA, Tables, chunk_days, features_for_days
from fraudkit.config import DEFAULT_LABEL_DELAY_DAYS
from fraudkit.features import (
    COUNT_COLUMNS,
    CUSTOMER_WINDOWS_DAYS,
    FEATURE_COLUMNS,
    TERMINAL_WINDOWS_DAYS,
    features_frame,
    lookback_days,
)

TARGET_VS_DUCKDB = 1.0
MAX_SCALING_RATIO_PER_FACTOR = 1.1  # 4x data may take at most 4.4x the time
FLOAT_TOLERANCE = 1e-9


def asset_days_per_task() -> int:
    """The chunk length the transaction_features asset uses (imports Dagster)."""
    return import_from_checkout("assets.features").DAYS_PER_TASK


# -- (a) the project's Dask path ----------------------------------------------------------
def chunk_task(history: pd.DataFrame, days: list[str], delay: int, keep: bool) -> Any:
    """What one worker does per chunk, as ``fraudkit.batch.features_for_days`` does it: the
    features of its days' rows, with the look-back rows as history only. Returns the row
    count (timed runs) or the frame itself (the verification run)."""
    wanted = np.flatnonzero(history["day"].isin(days).to_numpy())
    feats = features_frame(history, delay, wanted)
    return feats if keep else len(feats)


class DaskCase:
    """Chunks of one data set placed on the workers, ready to be computed on demand."""

    def __init__(self, client: Any, frame: pd.DataFrame, days_per_task: int, delay: int) -> None:
        self.client = client
        self.delay = delay
        days = sorted(frame["day"].unique())
        self.chunks = chunk_days(days, days_per_task)
        workers = sorted(client.scheduler_info()["workers"])
        self.placed: list[tuple[Any, list[str], str]] = []
        look_back = lookback_days(delay)
        day_col = frame["day"].to_numpy()
        self.history_rows = 0
        for i, chunk in enumerate(self.chunks):
            first = lake.shift_day(chunk[0], -look_back)
            history = frame[(day_col >= first) & (day_col <= chunk[-1])].reset_index(drop=True)
            self.history_rows += len(history)
            worker = workers[i % len(workers)]  # as Dask spreads equal tasks: round robin
            [future] = client.scatter([history], workers=[worker])
            self.placed.append((future, chunk, worker))
        self.rows = len(frame)

    def run(self, keep: bool = False, task: Callable[..., Any] = chunk_task) -> list[Any]:
        futures = [
            self.client.submit(task, data, chunk, self.delay, keep, workers=[worker],
                               pure=False)
            for data, chunk, worker in self.placed
        ]
        return self.client.gather(futures)

    def result_frame(self, task: Callable[..., Any] = chunk_task) -> pd.DataFrame:
        return pd.concat(self.run(keep=True, task=task), ignore_index=True)

    def release(self) -> None:
        self.client.cancel([data for data, _, _ in self.placed])
        self.placed = []


# -- (b) DuckDB ---------------------------------------------------------------------------
def duckdb_sql(delay: int) -> str:
    """The features as one window query. ``RANGE`` frames include every row whose time
    is within the bounds, so peers (same customer, same microsecond, ordered after this
    one by transaction_id) are subtracted again to honour "ordered at or before this one";
    the lower bounds are open: ``w days - 1 microsecond PRECEDING`` on microsecond times."""
    windows, cust_cols, term_cols = [], [], []
    for w in CUSTOMER_WINDOWS_DAYS:
        windows.append(f"c{w} AS (PARTITION BY customer_id ORDER BY ts RANGE BETWEEN "
                       f"INTERVAL {w} DAY - INTERVAL 1 MICROSECOND PRECEDING AND CURRENT ROW)")
        cust_cols += [f"count(*) OVER c{w} AS c_n_{w}", f"sum(tx_amount) OVER c{w} AS c_s_{w}"]
    for w in TERMINAL_WINDOWS_DAYS:
        windows.append(
            f"t{w} AS (PARTITION BY terminal_id ORDER BY ts RANGE BETWEEN "
            f"INTERVAL {delay + w} DAY - INTERVAL 1 MICROSECOND PRECEDING "
            f"AND INTERVAL {delay} DAY PRECEDING)"
        )
        term_cols += [f"count(*) OVER t{w} AS t_n_{w}",
                      f"sum(tx_fraud::DOUBLE) OVER t{w} AS t_f_{w}"]
    windows.append("later AS (PARTITION BY customer_id, ts ORDER BY transaction_id "
                   "ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)")
    peers = ["count(*) OVER later AS p_n", "coalesce(sum(tx_amount) OVER later, 0) AS p_s"]
    out = [
        "transaction_id",
        "tx_amount",
        "CAST(dayofweek(ts) IN (0, 6) AS BIGINT) AS tx_during_weekend",
        "CAST(hour(ts) <= 6 AS BIGINT) AS tx_during_night",
    ]
    for w in CUSTOMER_WINDOWS_DAYS:
        n = f"(c_n_{w} - p_n)"
        out += [f"{n} AS customer_nb_tx_{w}d",
                f"CASE WHEN {n} > 0 THEN (c_s_{w} - p_s) / {n} ELSE 0.0 END "
                f"AS customer_avg_amount_{w}d"]
    for w in TERMINAL_WINDOWS_DAYS:
        out += [f"t_n_{w} AS terminal_nb_tx_{w}d",
                f"CASE WHEN t_n_{w} > 0 THEN t_f_{w} / t_n_{w} ELSE 0.0 END "
                f"AS terminal_risk_{w}d"]
    return (
        f"WITH w AS (SELECT transaction_id, ts, tx_amount, {', '.join(cust_cols + term_cols)}, "
        f"{', '.join(peers)} FROM raw WINDOW {', '.join(windows)}) "
        f"SELECT {', '.join(out)} FROM w"
    )


def duckdb_input(frame: pd.DataFrame) -> pa.Table:
    """The raw rows as Arrow with times as a zone-less microsecond TIMESTAMP (UTC)."""
    micros = frame["tx_datetime"].astype("datetime64[us, UTC]").array.asi8
    return pa.table({
        "transaction_id": pa.array(frame["transaction_id"].to_numpy()),
        "ts": pa.array(micros, pa.timestamp("us")),
        "customer_id": pa.array(frame["customer_id"].to_numpy()),
        "terminal_id": pa.array(frame["terminal_id"].to_numpy()),
        "tx_amount": pa.array(frame["tx_amount"].to_numpy()),
        "tx_fraud": pa.array(frame["tx_fraud"].to_numpy()),
    })


def tie_rows(con: duckdb.DuckDBPyConnection) -> int:
    """Rows a plain RANGE frame would get wrong: a later-ordered peer of the same customer
    at the same microsecond exists (the correction in :func:`duckdb_sql` fixes them)."""
    sql = ("SELECT count(*) FROM (SELECT count(*) OVER (PARTITION BY customer_id, ts ORDER BY "
           "transaction_id ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS p FROM raw) "
           "WHERE p > 0")
    return int(con.sql(sql).fetchall()[0][0])


# -- (c) pandas ---------------------------------------------------------------------------
def _group_positions(keys: np.ndarray) -> np.ndarray:
    """Row positions in the order ``groupby(sort=False).rolling`` returns them."""
    codes, _ = pd.factorize(keys, sort=False)
    return np.argsort(codes, kind="stable")


def pandas_features(frame: pd.DataFrame, delay: int) -> pd.DataFrame:
    """The features with ``groupby().rolling()``. Customer windows: a time window closed on
    the right over rows sorted by (time, id), which pandas cuts at the current row, so it
    honours the tie rule. Terminal windows: a zero-weight query row at ``t - delay`` is put
    after the real rows of that time, and a ``w``-day window ending at it is summed."""
    df = frame.sort_values(["tx_datetime", "transaction_id"], kind="stable")
    ts = df["tx_datetime"].dt.tz_localize(None).reset_index(drop=True)
    n = len(df)
    out = pd.DataFrame({"transaction_id": df["transaction_id"].to_numpy(),
                        "tx_amount": df["tx_amount"].to_numpy()})
    out["tx_during_weekend"] = (ts.dt.dayofweek >= 5).astype(np.int64).to_numpy()
    out["tx_during_night"] = (ts.dt.hour <= 6).astype(np.int64).to_numpy()

    customer = df["customer_id"].to_numpy()
    cust = pd.DataFrame({"customer_id": customer, "ts": ts, "amount": df["tx_amount"].to_numpy()})
    where = _group_positions(customer)
    grouped = cust.groupby("customer_id", sort=False)
    for w in CUSTOMER_WINDOWS_DAYS:
        rolling = grouped.rolling(f"{w}D", on="ts", closed="right")["amount"]
        count, mean = np.empty(n, np.int64), np.empty(n)
        count[where] = rolling.count().to_numpy()
        mean[where] = rolling.mean().to_numpy()
        out[f"customer_nb_tx_{w}d"] = count
        out[f"customer_avg_amount_{w}d"] = mean

    terminal = df["terminal_id"].to_numpy()
    zeros, ones = np.zeros(n), np.ones(n)
    both = pd.DataFrame({
        "terminal_id": np.concatenate([terminal, terminal]),
        "ts": pd.concat([ts, ts - pd.Timedelta(days=delay)], ignore_index=True),
        "one": np.concatenate([ones, zeros]),
        "fraud": np.concatenate([df["tx_fraud"].to_numpy(np.float64), zeros]),
        "query": np.concatenate([np.zeros(n, np.int8), np.ones(n, np.int8)]),
    }).sort_values(["ts", "query"], kind="stable")
    label = both.index.to_numpy()  # 0..n-1 real rows, n..2n-1 the query rows
    label = label[_group_positions(both["terminal_id"].to_numpy())]
    is_query = label >= n
    target = label[is_query] - n
    grouped = both.groupby("terminal_id", sort=False)
    for w in TERMINAL_WINDOWS_DAYS:
        sums = grouped.rolling(f"{w}D", on="ts", closed="right")[["one", "fraud"]].sum()
        count_all, fraud_all = sums["one"].to_numpy(), sums["fraud"].to_numpy()
        count, frauds = np.empty(n), np.empty(n)
        count[target], frauds[target] = count_all[is_query], fraud_all[is_query]
        out[f"terminal_nb_tx_{w}d"] = np.rint(count).astype(np.int64)
        out[f"terminal_risk_{w}d"] = np.where(count > 0, frauds / np.maximum(count, 1), 0.0)
    out[[c for c in FEATURE_COLUMNS if c.startswith("customer_avg")]] = out[
        [c for c in FEATURE_COLUMNS if c.startswith("customer_avg")]].fillna(0.0)
    return out


# -- verification -------------------------------------------------------------------------
def by_id(table: pd.DataFrame | pa.Table) -> pd.DataFrame:
    frame = table.to_pandas() if isinstance(table, pa.Table) else table
    return frame.sort_values("transaction_id", kind="stable").reset_index(drop=True)


def mismatches(reference: pd.DataFrame, other: pd.DataFrame) -> dict[str, int]:
    """Rows per feature that differ from the reference (both sorted by transaction_id):
    counts and flags exactly, means and risks beyond 1e-9 (absolute and relative)."""
    if len(reference) != len(other) or not np.array_equal(
        reference["transaction_id"].to_numpy(), other["transaction_id"].to_numpy()
    ):
        return {"transaction_id": max(len(reference), len(other))}
    bad = {}
    for col in FEATURE_COLUMNS:
        ref = reference[col].to_numpy()
        got = other[col].to_numpy()
        if col in COUNT_COLUMNS:
            diff = ref.astype(np.int64) != got.astype(np.int64)
        else:
            diff = ~np.isclose(got.astype(np.float64), ref, rtol=FLOAT_TOLERANCE,
                               atol=FLOAT_TOLERANCE)
        if diff.any():
            bad[col] = int(diff.sum())
    return bad


def describe(bad: dict[str, int]) -> str:
    return "equal" if not bad else ", ".join(f"{k}: {v}" for k, v in bad.items())


# -- main ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1,
                        help="multiply the simulator's default data by this (see --axis)")
    parser.add_argument("--axis", choices=["entities", "days"], default="entities",
                        help="grow customers+terminals (default) or the number of days")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every case")
    parser.add_argument("--days-per-task", type=int, default=None,
                        help="chunk length of the dask case (default: the asset's)")
    parser.add_argument("--scaling-factor", type=int, default=4,
                        help="data factor of the linear-scaling check (0 skips it)")
    parser.add_argument("--no-pandas", action="store_true", help="skip the pandas case")
    parser.add_argument("--no-delta", action="store_true",
                        help="skip the features_for_days (Delta to Delta) case")
    parser.add_argument("--small", action="store_true",
                        help="start from the tests' small simulation (a smoke run)")
    parser.add_argument("--delay", type=int, default=DEFAULT_LABEL_DELAY_DAYS)
    args = parser.parse_args(argv)
    days_per_task = args.days_per_task or asset_days_per_task()
    delay = args.delay

    banner("transaction features: Dask path vs DuckDB vs pandas")
    print(machine_line())
    print(f"duckdb {duckdb.__version__}, pandas {pd.__version__}, numpy {np.__version__}")
    cfg = scaled_config(args.scale, args.axis, args.small)
    secs, frame = timed(lambda: simulate_frame(cfg))
    n = len(frame)
    print(f"data: {cfg.n_customers:,} customers, {cfg.n_terminals:,} terminals, "
          f"{cfg.n_days} days = {n:,} transactions (simulated in {secs:.1f} s)")
    print(f"dask: {N_WORKERS} worker processes x 1 thread, {days_per_task} days per task "
          f"+ {lookback_days(delay)} days look-back")

    secs, reference = timed(lambda: by_id(features_frame(frame, delay)))
    print(f"reference: the kernel on all rows at once, one process: {secs:.2f} s "
          f"({n / secs:,.0f} rows/s, untimed for the comparison)")

    con = duckdb.connect()
    con.register("raw", duckdb_input(frame))
    threads = con.sql("SELECT current_setting('threads')").fetchall()[0][0]
    sql = duckdb_sql(delay)

    big_frame = None
    with local_cluster() as client, tempfile.TemporaryDirectory(prefix="bench-feat-") as tmp:
        dask_case = DaskCase(client, frame, days_per_task, delay)
        print(f"dask: {len(dask_case.chunks)} tasks reading {dask_case.history_rows:,} history "
              f"rows for {n:,} rows ({dask_case.history_rows / n:.2f}x)")

        banner("verification against the kernel (untimed)")
        checks = [("dask", by_id(dask_case.result_frame()))]
        checks.append(("duckdb", by_id(con.sql(sql).to_arrow_table())))
        if not args.no_pandas:
            checks.append(("pandas", by_id(pandas_features(frame, delay))))
        verify_rows = [[name, len(got), describe(mismatches(reference, got))]
                       for name, got in checks]
        verify_rows.append(["duckdb, plain RANGE (no tie fix)", n,
                            f"{tie_rows(con)} row(s) would differ"])
        print_table(["case", "rows", "vs kernel (counts exact, floats 1e-9)"], verify_rows)
        del checks, reference
        failed = [r for r in verify_rows[:-1] if r[2] != "equal"]

        cases: dict[str, Callable[[], Any]] = {
            "dask": dask_case.run,
            "duckdb": lambda: con.sql(sql).to_arrow_table(),
        }
        if not args.no_pandas:
            cases["pandas"] = lambda: pandas_features(frame, delay)
        if not args.no_delta:
            tables = Tables(raw=str(Path(tmp) / "raw_transactions"),
                            quarantine=str(Path(tmp) / "quarantined_transactions"),
                            features=str(Path(tmp) / "transaction_features"),
                            predictions=str(Path(tmp) / "batch_predictions"))
            raw_version = write_raw_table(frame, tables.raw)
            lake.ensure_table(tables.features, FEATURES_SCHEMA)

            def delta_run() -> list[dict]:
                futures = [client.submit(features_for_days, chunk, tables, raw_version, delay,
                                         pure=False) for chunk in dask_case.chunks]
                results = client.gather(futures)
                assert sum(r["rows"] for r in results) == n, "features_for_days lost rows"
                return results

            cases["dask features_for_days (Delta)"] = delta_run
        big_case = None
        if args.scaling_factor:
            big_cfg = scaled_config(args.scale * args.scaling_factor, args.axis, args.small)
            secs, big_frame = timed(lambda: simulate_frame(big_cfg))
            print(f"\nscaling data: {big_cfg.n_customers:,} customers, "
                  f"{big_cfg.n_terminals:,} terminals, {big_cfg.n_days} days = "
                  f"{len(big_frame):,} rows ({len(big_frame) / n:.2f}x; {secs:.1f} s)")
            big_case = DaskCase(client, big_frame, days_per_task, delay)
            big_rows = len(big_frame)
            del big_frame
            cases[f"dask {args.scaling_factor}x data"] = big_case.run

        banner(f"timing: {args.repeats} interleaved rounds")
        seconds = repeat_interleaved(cases, args.repeats)

    base = median(seconds["duckdb"])
    banner(f"results (median of {args.repeats}; ratio = speed / DuckDB speed)")
    rows = []
    for name, values in seconds.items():
        rows_done = big_rows if name.endswith("x data") else n
        med = median(values)
        speed_ratio = (rows_done / med) / (n / base)
        rows.append([name, rows_done, med, min(values), round(rows_done / med), speed_ratio])
    print_table(["case", "rows", "median s", "min s", "rows/s", "vs duckdb"], rows)
    print(f"(duckdb threads={threads}; dask = {N_WORKERS} single-thread worker processes; "
          "pandas = 1 thread)")

    dask_ratio = median(seconds["duckdb"]) / median(seconds["dask"])
    print(f"\nTarget dask >= {TARGET_VS_DUCKDB:.1f}x duckdb: {dask_ratio:.2f}x  "
          f"{verdict(dask_ratio, TARGET_VS_DUCKDB)}")
    if big_case is not None:
        factor = args.scaling_factor
        pairs = [("dask", f"dask {factor}x data")]
        for small_name, big_name in pairs:
            ratios = [b / s for b, s in zip(seconds[big_name], seconds[small_name], strict=True)]
            time_ratio = median(seconds[big_name]) / median(seconds[small_name])
            row_ratio = big_rows / n
            per_factor = time_ratio / row_ratio * factor  # had rows grown exactly factor x
            limit = factor * MAX_SCALING_RATIO_PER_FACTOR
            print(f"Linear scaling ({small_name}): {row_ratio:.2f}x rows took {time_ratio:.2f}x "
                  f"time (median of per-round ratios {median(ratios):.2f}x); normalized to "
                  f"exactly {factor}x rows: {per_factor:.2f}x, limit {limit:.1f}x  "
                  f"{verdict(per_factor, limit, higher_is_better=False)}")
    if failed:
        print("ERROR: a result differs from the kernel (see the verification table)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
