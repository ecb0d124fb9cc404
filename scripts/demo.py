"""`make demo`: simulate the default data, back-fill the batch path end to end, summarize.

Every step is a real Dagster run recorded in the project's instance (``DAGSTER_HOME``), so
`make dev` afterwards shows the same runs, materializations and checks in the UI.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import dagster as dg

from fraudkit.config import Settings
from fraudkit.simulator import SimulationConfig, write_landing

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def ensure_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME (default: .dagster_home beside DATA_DIR) with the project's dagster.yaml."""
    home = Path(os.environ.setdefault("DAGSTER_HOME",
                                      str(settings.data_dir.parent / ".dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


def step(message: str) -> float:
    print(f"\n==> {message}", flush=True)
    return time.perf_counter()


def done(started: float, detail: str = "") -> None:
    print(f"    done in {time.perf_counter() - started:.1f}s {detail}", flush=True)


def run_job(
    name: str,
    instance: dg.DagsterInstance,
    days: tuple[str, str] | None = None,
    run_config: dict[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """Run one job in this process, as a single run over a partition range if given."""
    from definitions import defs

    tags = {RANGE_START: days[0], RANGE_END: days[1]} if days else None
    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    result = defs.resolve_job_def(name).execute_in_process(
        instance=instance, tags=tags, run_config={**quiet, **(run_config or {})},
        raise_on_error=False,
    )
    if not result.success:
        for event in result.all_events:
            if event.is_failure:
                print(f"    FAILED: {event.message}", file=sys.stderr)
        raise SystemExit(f"run {result.run_id} of job {name!r} failed (details above)")
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            check = event.event_specific_data
            status = "passed" if check.passed else "FAILED"
            print(f"    check {check.asset_key.to_user_string()}:{check.check_name} {status}")
    return result


def simulate(settings: Settings, cfg: SimulationConfig) -> None:
    started = step(f"simulating {cfg.n_days} days ({cfg.n_customers} customers, "
                   f"{cfg.n_terminals} terminals) into {settings.landing_dir}")
    written = write_landing(cfg, settings.landing_dir)
    done(started, f"({len(written)} new landing files, existing ones kept)")


def run_batch(settings: Settings, instance: dg.DagsterInstance, first: str, last: str,
              train_config: dict | None = None) -> None:
    started = step(f"raw_transactions + transaction_features for {first}..{last} (one run)")
    run_job("ingest_and_features", instance, (first, last))
    done(started)
    started = step("training_set + model (LightGBM → ONNX → registry)")
    run_job("train", instance, run_config=train_config)
    done(started)
    started = step(f"batch_predictions for {first}..{last} with the champion (one run)")
    run_job("score", instance, (first, last))
    done(started)


def summary(settings: Settings) -> None:
    from deltalake import DeltaTable

    from fraudkit.registry import ModelRegistry

    print("\n==> summary")
    for name in ["raw_transactions", "quarantined_transactions", "transaction_features",
                 "training_set", "batch_predictions"]:
        table = DeltaTable(settings.table_uri(name))
        rows = table.to_pyarrow_dataset().count_rows()
        print(f"    {name:26s} {rows:>10,d} rows  version {table.version():>4d}  "
              f"{settings.table_uri(name)}")
    champion = ModelRegistry(settings.registry_dir).champion()
    m = champion.manifest["metrics"]
    print(f"    champion model {champion.version}: AUC-ROC {m['auc_roc']:.4f}, average precision "
          f"{m['average_precision']:.4f}, card precision@100 {m['card_precision_at_100']:.4f}, "
          f"onnx max |diff| {m['onnx_max_abs_diff']:.1e}")
    print(f"    thresholds {champion.manifest['thresholds']}  ({champion.path})")


#: Training window for the small (test) scale: 60 days leave little room for warm-up.
SMALL_TRAINING = {"ops": {"training_set": {"config": {"train_days": 21, "test_days": 7,
                                                      "warmup_days": 7}}}}


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true",
                        help="test scale (about 25k transactions over 60 days)")
    parser.add_argument("--batch-only", action="store_true",
                        help="stop after the batch path (no online or monitoring steps)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    ensure_dagster_home(settings)
    total = time.perf_counter()
    base = SimulationConfig.small() if args.small else SimulationConfig()
    cfg = replace(base, start_date=settings.start_date)
    if cfg.days[-1] > settings.end_date:
        raise SystemExit(
            f"the simulation ends {cfg.days[-1]}, after FRAUD_END_DATE={settings.end_date}; "
            "raise FRAUD_END_DATE so every simulated day is a partition"
        )
    simulate(settings, cfg)
    first, last = cfg.days[0], cfg.days[-1]
    with dg.DagsterInstance.get() as instance:
        run_batch(settings, instance, first, last, SMALL_TRAINING if args.small else None)
    summary(settings)
    print(f"\nbatch demo finished in {time.perf_counter() - total:.0f}s; open the UI with "
          "`make dev` to see the runs, or `make serve` for the online service")


if __name__ == "__main__":
    main()
