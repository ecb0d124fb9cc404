"""Peak memory of the process that runs a Dagster step, at 1x and 4x data.

    .venv/bin/python benchmarks/step_memory.py             # 1x = the simulator's default
    .venv/bin/python benchmarks/step_memory.py --small     # smoke run on the tests' data

When a Dask cluster does the work, the step's own process (the "driver": it calls
``DaskResource.map_with_progress`` and builds the asset's metadata and checks) should hold
no data, so its peak RSS must not grow with the data.

For each data size, in a fresh temporary ``DATA_DIR``: the raw_transactions table is
written directly (untimed set-up), then the real ``transaction_features`` asset is
materialized over every day as one partition range, in a child process (in-process
executor, so the step runs in that child); then a small model is registered as champion
and the real ``batch_predictions`` asset is materialized the same way. Each child reports
its RSS after its imports and its peak RSS during the materialization: the driver alone
(the LocalCluster's nanny and worker processes are its descendants and are not counted).
The peak is the kernel's ``VmHWM``, reset to the current RSS just before the step starts
(``/proc/self/clear_refs``): ``ru_maxrss`` of ``RUSAGE_SELF`` is the same counter but
cannot be reset and inherits the parent's RSS across fork+exec, so it is printed only for
reference. ``RUSAGE_CHILDREN`` (the largest waited-for descendant, i.e. a Dask process) is
shown for information.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ROOT,
    banner,
    import_from_checkout,
    machine_line,
    print_table,
    scaled_config,
    simulate_frame,
    verdict,
    write_raw_table,
)

from fraudkit import lake
from fraudkit.config import DEFAULT_LABEL_DELAY_DAYS
from fraudkit.simulator import SimulationConfig

#: The driver's peak at 4x data may exceed its peak at 1x by at most this factor.
MAX_GROWTH = 1.10
ASSETS = ("transaction_features", "batch_predictions")
RESULT_MARK = "STEP_MEMORY_RESULT "


def maxrss_mib(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(who).ru_maxrss / 1024


def proc_status_mib(field: str) -> float | None:
    """``VmRSS`` or ``VmHWM`` (peak RSS) of this process from /proc, in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0).

    ``ru_maxrss`` cannot be reset and starts at the parent's RSS when a process is forked
    from a big parent (it survives ``execve``); the /proc peak belongs to this process's
    own address space only, so it measures the step alone.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# -- child: one asset materialization -------------------------------------------------------
def child(asset_name: str, first: str, last: str) -> None:
    """Materialize one asset over ``first..last`` in this process and print the peaks."""
    import dagster as dg

    definitions = import_from_checkout("definitions")
    asset = next(a for a in definitions.defs.assets
                 if asset_name in {k.to_user_string() for k in a.keys})
    storage = import_from_checkout("resources.storage")
    exact = reset_peak()
    after_imports = proc_status_mib("VmRSS") if exact else maxrss_mib()
    started = time.perf_counter()
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [asset],
            resources=storage.default_resources(),
            instance=instance,
            tags={"dagster/asset_partition_range_start": first,
                  "dagster/asset_partition_range_end": last},
            raise_on_error=True,
        )
    checks = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            checks[data.check_name] = bool(data.passed)
    print(RESULT_MARK + json.dumps({
        "asset": asset_name,
        "success": result.success,
        "seconds": time.perf_counter() - started,
        "after_imports_mib": after_imports,
        "peak_mib": (proc_status_mib("VmHWM") if exact else None) or maxrss_mib(),
        "ru_maxrss_mib": maxrss_mib(),
        "peak_source": "VmHWM after reset" if exact else "ru_maxrss",
        "largest_descendant_mib": maxrss_mib(resource.RUSAGE_CHILDREN),
        "checks": checks,
    }), flush=True)


# -- parent: set-up and measurement ---------------------------------------------------------
def run_child(asset_name: str, data_dir: Path, first: str, last: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env.update(DATA_DIR=str(data_dir), DAGSTER_HOME=str(data_dir / "dagster_home"),
               FRAUD_START_DATE=first, FRAUD_END_DATE=last,
               LABEL_DELAY_DAYS=str(DEFAULT_LABEL_DELAY_DAYS))
    (data_dir / "dagster_home").mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", asset_name, "--first", first, "--last", last],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"materializing {asset_name} failed (rc={proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(lines[-1][len(RESULT_MARK):])


def register_champion(data_dir: Path, trees: int) -> None:
    """Train a small model on the features table and make it champion (set-up)."""

    from fraudkit.registry import ModelRegistry
    from fraudkit.training import TrainingParams, choose_thresholds, to_onnx, train

    tables = data_dir / "tables"
    feats = lake.dataset(str(tables / "transaction_features")).to_table().to_pandas()
    labels = lake.dataset(str(tables / "raw_transactions")).to_table(
        columns=["transaction_id", "tx_fraud"]).to_pandas()
    frame = feats.merge(labels, on="transaction_id").sample(100_000, random_state=0,
                                                            replace=len(feats) < 100_000)
    model = train(frame, TrainingParams(n_estimators=trees))
    onnx_bytes = to_onnx(model)
    from fraudkit.features import feature_matrix

    scores = model.predict_proba(feature_matrix(frame).astype("float64"))[:, 1]
    thresholds = choose_thresholds(frame["tx_fraud"].to_numpy(), scores)
    registry = ModelRegistry(data_dir / "registry")
    version = registry.register(onnx_bytes, training_data={"benchmark": True}, metrics={},
                                thresholds=thresholds)
    registry.promote(version.version, reason="benchmark")


def measure(cfg: SimulationConfig, trees: int) -> tuple[int, dict[str, dict]]:
    """Rows, and each asset's child report, for one data size."""
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        data_dir = Path(tmp) / "data"
        frame = simulate_frame(cfg)
        rows = len(frame)
        write_raw_table(frame, str(data_dir / "tables" / "raw_transactions"))
        del frame
        first, last = cfg.days[0], cfg.days[-1]
        reports = {"transaction_features": run_child("transaction_features", data_dir,
                                                     first, last)}
        register_champion(data_dir, trees)
        reports["batch_predictions"] = run_child("batch_predictions", data_dir, first, last)
    return rows, reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=int, default=4, help="the larger data size (x)")
    parser.add_argument("--axis", choices=["entities", "days"], default="entities")
    parser.add_argument("--small", action="store_true", help="the tests' small data (smoke)")
    parser.add_argument("--trees", type=int, default=50, help="trees of the set-up model")
    parser.add_argument("--child", choices=ASSETS, help=argparse.SUPPRESS)
    parser.add_argument("--first", help=argparse.SUPPRESS)
    parser.add_argument("--last", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.first, args.last)
        return 0

    banner("peak RSS of the Dagster step's process (driver) at 1x and "
           f"{args.factor}x data")
    print(machine_line())
    results = {}
    for factor in (1, args.factor):
        cfg = scaled_config(factor, args.axis, args.small)
        print(f"\n{factor}x: {cfg.n_customers:,} customers, {cfg.n_terminals:,} terminals, "
              f"{cfg.n_days} days ...", flush=True)
        results[factor] = measure(cfg, args.trees)
        rows, reports = results[factor]
        for name, rep in reports.items():
            print(f"  {name}: {rows:,} rows, {rep['seconds']:.1f} s, driver peak "
                  f"{rep['peak_mib']:.0f} MiB ({rep['peak_source']}; after imports "
                  f"{rep['after_imports_mib']:.0f}, ru_maxrss {rep['ru_maxrss_mib']:.0f}), "
                  f"checks {rep['checks']}", flush=True)

    banner("results")
    small_rows, small = results[1]
    big_rows, big = results[args.factor]
    table, verdicts = [], []
    for name in ASSETS:
        a, b = small[name], big[name]
        ratio = b["peak_mib"] / a["peak_mib"]
        grew_a = a["peak_mib"] - a["after_imports_mib"]
        grew_b = b["peak_mib"] - b["after_imports_mib"]
        verdicts.append((name, ratio))
        table.append([name, a["peak_mib"], b["peak_mib"], ratio, grew_a, grew_b,
                      a["largest_descendant_mib"], b["largest_descendant_mib"]])
    print(f"rows: 1x = {small_rows:,}, {args.factor}x = {big_rows:,} "
          f"({big_rows / small_rows:.2f}x)")
    print_table(["asset (driver process)", "peak 1x MiB", f"peak {args.factor}x MiB", "ratio",
                 "step growth 1x", f"step growth {args.factor}x", "worker peak 1x",
                 f"worker peak {args.factor}x"], table)
    print("(step growth = peak - RSS after imports; worker peak = RUSAGE_CHILDREN, the "
          "largest LocalCluster process, for information)")
    for name, ratio in verdicts:
        print(f"Target {name}: driver peak at {args.factor}x <= {MAX_GROWTH:.2f}x the 1x "
              f"peak: {ratio:.2f}x  {verdict(ratio, MAX_GROWTH, higher_is_better=False)}")
    failed = [n for n in ASSETS for r in (small, big) if not r[n]["success"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
