"""Batch scoring throughput: the batch_predictions path (Delta to Delta on Dask) versus
onnxruntime on the same feature matrix already in memory, with the same ONNX model.

    .venv/bin/python benchmarks/batch_scoring.py              # simulator default, ~1.75M rows
    .venv/bin/python benchmarks/batch_scoring.py --repeats 5 --profile

Set-up (untimed), in a temporary folder: simulate, write the raw table, compute the features
with the kernel and write the features table partitioned by day (as the features task
does), train LightGBM on a sample and export it to ONNX (fraudkit.training).

Timed:

* ``dask score_days (Delta->Delta)``: the asset's work: ``fraudkit.batch.score_days`` for
  every chunk of ``assets.scoring.DAYS_PER_TASK`` days, submitted to a running LocalCluster
  of 2 single-thread workers (the DaskResource default); each task reads its days from the
  features table (pinned version), scores them with 1 onnxruntime thread, decides, and
  replaces its partitions of the predictions table. The driver waits for every task.
* ``onnxruntime in memory``: ``OnnxModel(path).predict(matrix)`` on the float32 matrix of
  every row, already built in memory; onnxruntime's default pool (all cores), and a
  1-thread variant for reference.

Target: the Dask path at least 0.8x the rows/s of in-memory onnxruntime (all cores).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
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
from fraudkit.batch import FEATURES_SCHEMA, PREDICTIONS_SCHEMA, Tables, chunk_days, score_days
from fraudkit.config import DEFAULT_LABEL_DELAY_DAYS
from fraudkit.features import FEATURE_COLUMNS, feature_matrix, features_frame
from fraudkit.model import OnnxModel
from fraudkit.schema import to_arrow
from fraudkit.training import TrainingParams, choose_thresholds, to_onnx, train

TARGET = 0.8


def build_tables(tmp: Path, scale: int, axis: str, small: bool, delay: int) -> tuple[Tables, int]:
    """Raw and features Delta tables of the simulated data; returns them and the row count."""
    cfg = scaled_config(scale, axis, small)
    secs, frame = timed(lambda: simulate_frame(cfg))
    print(f"data: {cfg.n_customers:,} customers, {cfg.n_terminals:,} terminals, "
          f"{cfg.n_days} days = {len(frame):,} transactions (simulated in {secs:.1f} s)")
    tables = Tables(raw=str(tmp / "raw_transactions"),
                    quarantine=str(tmp / "quarantined_transactions"),
                    features=str(tmp / "transaction_features"),
                    predictions=str(tmp / "batch_predictions"))
    write_raw_table(frame, tables.raw)
    feats = features_frame(frame, delay)
    feats.insert(2, "customer_id", frame["customer_id"].to_numpy())
    feats.insert(3, "terminal_id", frame["terminal_id"].to_numpy())
    lake.ensure_table(tables.features, FEATURES_SCHEMA)
    days = sorted(frame["day"].unique())
    for chunk in chunk_days(days, 30):
        part = feats[feats["day"].isin(chunk).to_numpy()]
        lake.replace_days(tables.features, to_arrow(part, FEATURES_SCHEMA), chunk)
    lake.ensure_table(tables.predictions, PREDICTIONS_SCHEMA)
    return tables, len(frame)


def build_model(tables: Tables, path: Path, train_rows: int, trees: int) -> dict[str, float]:
    """Train on a sample of the labelled features, export to ONNX; returns thresholds."""

    feats = lake.dataset(tables.features).to_table(
        columns=["transaction_id", *FEATURE_COLUMNS]).to_pandas()
    labels = lake.dataset(tables.raw).to_table(columns=["transaction_id", "tx_fraud"]).to_pandas()
    frame = feats.merge(labels, on="transaction_id")
    sample = frame.sample(min(train_rows, len(frame)), random_state=0)
    secs, model = timed(lambda: train(sample, TrainingParams(n_estimators=trees)))
    path.write_bytes(to_onnx(model))
    scores = OnnxModel(path).predict(feature_matrix(sample))
    thresholds = choose_thresholds(sample["tx_fraud"].to_numpy(), scores)
    print(f"model: LightGBM, {trees} trees, trained on {len(sample):,} rows in {secs:.1f} s, "
          f"exported to ONNX; thresholds {thresholds.as_dict()}")
    return thresholds.as_dict()


def profile_task(tables: Tables, days: list[str], version: int, model: Path,
                 thresholds: dict[str, float], top: int = 18) -> None:
    """cProfile of one score_days task in this process (where its time goes)."""
    profiler = cProfile.Profile()
    profiler.enable()
    result = score_days(days, tables, version, str(model), "bench", thresholds)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    banner(f"profile of one score_days task ({result['rows']:,} rows, "
           f"{result['seconds']:.2f} s, in this process)")
    print("\n".join(out.getvalue().splitlines()[:top + 12]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=1,
                        help="multiply the simulator's default data by this")
    parser.add_argument("--axis", choices=["entities", "days"], default="entities")
    parser.add_argument("--small", action="store_true", help="the tests' small data (smoke)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--days-per-task", type=int, default=None,
                        help="chunk length of the Dask path (default: the asset's)")
    parser.add_argument("--also-days-per-task", type=int, default=None, metavar="N",
                        help="also time the Dask path with N days per task, same rounds")
    parser.add_argument("--trees", type=int, default=TrainingParams().n_estimators)
    parser.add_argument("--train-rows", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true",
                        help="also profile one score_days task in-process")
    args = parser.parse_args(argv)
    days_per_task = args.days_per_task or import_from_checkout("assets.scoring").DAYS_PER_TASK

    banner("batch scoring: score_days on Dask (Delta->Delta) vs onnxruntime in memory")
    print(machine_line())
    print(f"onnxruntime {ort.__version__}; dask: {N_WORKERS} worker processes x 1 thread, "
          f"{days_per_task} days per task")
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp_name:
        tmp = Path(tmp_name)
        tables, n = build_tables(tmp, args.scale, args.axis, args.small,
                                 DEFAULT_LABEL_DELAY_DAYS)
        model_path = tmp / "model.onnx"
        thresholds = build_model(tables, model_path, args.train_rows, args.trees)
        version = lake.table_version(tables.features)
        days = _all_days(tables.features)
        feats = lake.read_days(tables.features, days, ["transaction_id", *FEATURE_COLUMNS],
                               version)
        matrix = feature_matrix({c: feats[c].to_numpy() for c in FEATURE_COLUMNS})
        ids = feats["transaction_id"].to_numpy()
        del feats
        chunks = chunk_days(days, days_per_task)
        model_all = OnnxModel(model_path)
        model_one = OnnxModel(model_path, threads=1)
        if args.profile:
            profile_task(tables, chunks[len(chunks) // 2], version, model_path, thresholds)

        with local_cluster() as client:
            def dask_run(chunks: list[list[str]] = chunks) -> list[dict]:
                futures = [client.submit(score_days, chunk, tables, version, str(model_path),
                                         "bench", thresholds, pure=False) for chunk in chunks]
                results = client.gather(futures)
                assert sum(r["rows"] for r in results) == n, "score_days lost rows"
                return results

            # warm-up (imports onnxruntime in the workers) and verification
            dask_run()
            written = lake.read_days(tables.predictions, days, ["transaction_id", "score"])
            order = np.argsort(written["transaction_id"].to_numpy())
            mem = model_one.predict(matrix)
            mem_by_id = mem[np.argsort(ids)]
            diff = float(np.max(np.abs(written["score"].to_numpy()[order] - mem_by_id)))
            same_ids = np.array_equal(np.sort(ids), written["transaction_id"].to_numpy()[order])
            print(f"verification: {written.num_rows:,} predictions, ids match: {same_ids}, "
                  f"max |score - in-memory score| = {diff:.3g}")
            del written

            cases: dict[str, Callable[[], Any]] = {
                "dask score_days (Delta->Delta)": dask_run,
                "onnxruntime in memory (all cores)": lambda: model_all.predict(matrix),
                "onnxruntime in memory (1 thread)": lambda: model_one.predict(matrix),
            }
            if args.also_days_per_task:
                other = chunk_days(days, args.also_days_per_task)
                cases[f"dask score_days, {args.also_days_per_task} days/task"] = (
                    lambda: dask_run(other))
            banner(f"timing: {args.repeats} interleaved rounds, {len(chunks)} Dask tasks")
            seconds = repeat_interleaved(cases, args.repeats)

    base_name = "onnxruntime in memory (all cores)"
    base = median(seconds[base_name])
    banner(f"results (median of {args.repeats}; ratio = speed / in-memory all-cores speed)")
    rows = [[name, n, median(v), min(v), round(n / median(v)), base / median(v)]
            for name, v in seconds.items()]
    print_table(["case", "rows", "median s", "min s", "rows/s", "vs in-memory"], rows)
    ratio = base / median(seconds["dask score_days (Delta->Delta)"])
    print(f"\nTarget Dask Delta->Delta >= {TARGET:.1f}x in-memory onnxruntime "
          f"(OnnxModel default, all cores): {ratio:.2f}x  {verdict(ratio, TARGET)}")
    best = min(median(v) for k, v in seconds.items() if k.startswith("onnxruntime"))
    strict = best / median(seconds["dask score_days (Delta->Delta)"])
    print(f"Strict: vs the faster in-memory variant of this run: {strict:.2f}x  "
          f"{verdict(strict, TARGET)}")
    if not same_ids or diff > 1e-6:
        print("ERROR: the Dask predictions differ from the in-memory scores")
        return 1
    return 0


def _all_days(uri: str) -> list[str]:
    """Every partition (day) of a day-partitioned Delta table, sorted."""
    from deltalake import DeltaTable

    parts = DeltaTable(uri).partitions()
    return sorted({p["day"] for p in parts})


if __name__ == "__main__":
    sys.exit(main())
