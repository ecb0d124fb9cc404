"""Does validation-based selection train a better model? The default training (every train
day, 300 rounds, no class weights) against the same LightGBM with the last train days held
out in time order: early stopping on their average precision (up to ``--max-rounds``), no
class weights vs balanced ones picked there, then a refit on every train day. Both are
measured on the same test days, which neither choice sees, with the metrics the registry
records (AUC-ROC, average precision, card precision@100), on the demo's simulation and on a
second simulator seed.

    .venv/bin/python benchmarks/model_selection.py [--seeds 7 11] [--validation-days 14]

The windows are the ``training_set`` asset's defaults: 90 train days, a gap of the label
delay, 14 test days ending one label delay before the last day. Prints a table and a
verdict: the project's defaults change only if both seeds improve on average precision
without losing AUC-ROC.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import pandas as pd

from fraudkit import lake
from fraudkit.config import DEFAULT_LABEL_DELAY_DAYS
from fraudkit.features import features_frame, lookback_days
from fraudkit.simulator import SimulationConfig, simulate
from fraudkit.training import TrainingParams, fit_candidate

TRAIN_DAYS, TEST_DAYS = 90, 14


def training_frame(seed: int) -> pd.DataFrame:
    """The simulation of ``seed`` featured in memory and split like ``training_set``."""
    cfg = replace(SimulationConfig(), seed=seed)
    raw = pd.concat([f.assign(day=d) for d, f in simulate(cfg)], ignore_index=True)
    feats = features_frame(raw, DEFAULT_LABEL_DELAY_DAYS)
    frame = feats.assign(customer_id=raw["customer_id"].to_numpy(),
                         tx_fraud=raw["tx_fraud"].to_numpy())
    delay, days = DEFAULT_LABEL_DELAY_DAYS, cfg.days
    test_end = lake.shift_day(days[-1], -delay)
    test_start = lake.shift_day(test_end, -(TEST_DAYS - 1))
    train_end = lake.shift_day(test_start, -(delay + 1))
    train_start = max(lake.shift_day(train_end, -(TRAIN_DAYS - 1)),
                      lake.shift_day(days[0], lookback_days(delay)))
    frame = frame[(frame["day"] >= train_start) & (frame["day"] <= test_end)
                  & ((frame["day"] <= train_end) | (frame["day"] >= test_start))].copy()
    frame["split"] = (frame["day"] >= test_start).map({True: "test", False: "train"})
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 11])
    parser.add_argument("--validation-days", type=int, default=14)
    parser.add_argument("--max-rounds", type=int, default=1000)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    baseline = TrainingParams()
    selected = replace(baseline, n_estimators=args.max_rounds,
                       validation_days=args.validation_days,
                       class_weights=("none", "balanced"))
    rows = []
    for seed in args.seeds:
        started = time.perf_counter()
        frame = training_frame(seed)
        print(f"seed {seed}: {int((frame['split'] == 'train').sum()):,} train rows, "
              f"{int((frame['split'] == 'test').sum()):,} test rows "
              f"({time.perf_counter() - started:.0f}s to simulate and feature)", flush=True)
        for name, params in (("default", baseline), ("validation-selected", selected)):
            started = time.perf_counter()
            candidate = fit_candidate(frame, params)
            m = candidate.metrics
            rows.append({"seed": seed, "training": name, "auc_roc": m["auc_roc"],
                         "average_precision": m["average_precision"],
                         "card_precision_at_100": m["card_precision_at_100"],
                         "seconds": round(time.perf_counter() - started, 1),
                         "selection": json.dumps(candidate.selection) or "-"})
            print(f"  {name}: {json.dumps({k: round(v, 4) for k, v in m.items()})} "
                  f"{candidate.selection}", flush=True)
    table = pd.DataFrame(rows)
    print()
    print(table.drop(columns=["selection"]).to_markdown(index=False, floatfmt=".4f"))
    wide = table.pivot(index="seed", columns="training",
                       values=["auc_roc", "average_precision", "card_precision_at_100"])
    better = all(
        wide.loc[s, ("average_precision", "validation-selected")]
        > wide.loc[s, ("average_precision", "default")]
        and wide.loc[s, ("auc_roc", "validation-selected")]
        >= wide.loc[s, ("auc_roc", "default")] - 0.002
        for s in args.seeds)
    print(f"\nvalidation-selected training improves average precision on every seed without "
          f"losing AUC-ROC: {'YES (change the defaults)' if better else 'NO (keep them)'}")
    if args.json:
        table.to_json(args.json, orient="records", indent=2)


if __name__ == "__main__":
    main()
