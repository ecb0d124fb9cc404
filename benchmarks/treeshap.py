"""Reason codes' TreeSHAP: fraudkit.treeshap's tables against LightGBM's own pred_contrib.

Both compute path-dependent TreeSHAP of the champion's embedded trees (the reason codes'
explainer) on the float32 features of real reviews and declines of ``DATA_DIR``: one row
at a time, as the service explains a drain, and in batches, as ``score_days`` does. The
numbers must agree within 1e-10 (else the script fails). Rounds alternate the two; medians.

    DATA_DIR=... .venv/bin/python benchmarks/treeshap.py [--rows 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000, help="explained rows per batch run")
    parser.add_argument("--singles", type=int, default=300, help="rows timed one at a time")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from fraudkit import explain, lake
    from fraudkit.config import Settings
    from fraudkit.features import FEATURE_COLUMNS, feature_matrix
    from fraudkit.model import OnnxModel
    from fraudkit.registry import ModelRegistry

    settings = Settings.from_env()
    champion = ModelRegistry.of(settings).champion()
    explainer = explain.Explainer.of(OnnxModel(champion.model_path, threads=1),
                                     champion.version)
    if explainer is None:
        raise SystemExit(f"{champion.version} carries no explainer: run `make demo` again")
    preds_uri = settings.table_uri("batch_predictions")
    days = lake.partition_values(preds_uri)[-30:]
    preds = lake.read_days(preds_uri, days, ["transaction_id", "decision"]).to_pandas()
    flagged = preds.loc[preds["decision"] != "approve", "transaction_id"]
    feats = lake.read_days(settings.table_uri("transaction_features"), days,
                           ["transaction_id", *FEATURE_COLUMNS]).to_pandas()
    feats = feats[feats["transaction_id"].isin(set(flagged))].head(args.rows)
    matrix = feature_matrix(feats)
    x64 = matrix.astype(np.float64)
    booster = explainer.booster

    ours = explainer.contributions(matrix)
    theirs = booster.predict(x64, pred_contrib=True, num_threads=1)
    diff = float(np.max(np.abs(ours - theirs)))
    if not diff < 1e-10:
        raise SystemExit(f"ERROR: the tables differ from pred_contrib by {diff:.3g}")

    def batch_ms(fn) -> float:
        started = time.perf_counter()
        fn()
        return (time.perf_counter() - started) * 1000 / len(matrix)

    def single_ms(fn) -> float:
        times = []
        for i in range(min(args.singles, len(matrix))):
            started = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000

    runs: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, value in (
            ("tables, one row", single_ms(lambda i: explainer.contributions(matrix[i:i + 1]))),
            ("pred_contrib, one row", single_ms(
                lambda i: booster.predict(x64[i:i + 1], pred_contrib=True, num_threads=1))),
            ("tables, batch", batch_ms(lambda: explainer.contributions(matrix))),
            ("pred_contrib, batch", batch_ms(
                lambda: booster.predict(x64, pred_contrib=True, num_threads=1))),
        ):
            runs.setdefault(name, []).append(value)
    med = {k: statistics.median(v) for k, v in runs.items()}
    trees = booster.num_trees()
    print(f"champion {champion.version}: {trees} trees; {len(matrix):,} reviews and declines "
          f"of {days[0]}..{days[-1]}; largest difference {diff:.2g}; one thread; medians "
          f"of {args.repeats} rounds")
    print(f"{'':24s}{'ms a row':>10s}")
    for name, value in med.items():
        print(f"{name:24s}{value:>10.3f}")
    print(f"one row: tables {med['pred_contrib, one row'] / med['tables, one row']:.2f}x "
          f"faster; batch: {med['pred_contrib, batch'] / med['tables, batch']:.2f}x faster")


if __name__ == "__main__":
    main()
