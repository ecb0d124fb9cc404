"""The batch back-fill at 1x and 10x the demo's scale, in one run: its time, and the peak
memory of every process (the Dagster step's process, the Dask nanny and worker processes).

    .venv/bin/python benchmarks/scale.py                      # 1x and 10x (~1 hour here)
    .venv/bin/python benchmarks/scale.py --small --factor 2   # smoke run on the tests' scale

1x is the demo: 5,000 customers, 10,000 terminals, 180 days, about 1.75 M transactions;
10x has ten times the customers and terminals (about 17.5 M transactions). For each scale,
in a fresh temporary DATA_DIR:

1. the project's simulator writes the landing files (timed, in this process);
2. the demo's back-fill runs as three headless runs, one child process each
   (``python -m scripts.run_job``, in-process executor, so the Dagster step runs in that
   child; each run starts its own Dask LocalCluster of 2 single-threaded workers):
   ``ingest_and_features`` over every day, ``train`` (the ``model`` asset's defaults:
   90 train days, 14 test days), ``score`` over every day, which also explains every
   review and decline.

Memory: the child's own peak is the kernel's ``VmHWM``, which it writes when it exits;
every descendant (nanny, worker) is sampled every 0.25 s by a thread of this process,
keeping each process's last ``VmHWM`` (the kernel's peak so far, so only growth in a
process's last 0.25 s could be missed).

Targets (issue 13): the back-fill's time at 10x at most 11x the 1x time; each Dagster
step's peak at 10x at most 1.10x its 1x peak; no Dask process above 4 GiB. The steps that
hand their data to Dask hold none of it; feature and scoring tasks are bounded by rows, not
days; training fits in the step's process, on a uniform sample of its window above 1.1 M
rows (the demo's window, 1.01 M rows, is used whole).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
from common import ROOT, banner, machine_line, print_table, scaled_config, verdict

from fraudkit.config import DEFAULT_LABEL_DELAY_DAYS
from fraudkit.simulator import SimulationConfig, write_landing

MAX_TIME_GROWTH = 11.0
MAX_STEP_GROWTH = 1.10
MAX_WORKER_GIB = 4.0
JOBS = ("ingest_and_features", "train", "score")
SMALL_TRAINING = {"ops": {"training_set": {"config": {"train_days": 21, "test_days": 7}}}}

#: Runs in the child: the job, then the child's own peak RSS into a file at exit.
CHILD = """
import atexit, json, os, runpy, sys
def report():
    peak = {}
    for line in open("/proc/self/status"):
        if line.startswith(("VmHWM:", "VmRSS:")):
            peak[line.split(":")[0]] = int(line.split()[1]) / 1024
    with open(os.environ["SCALE_PEAK_FILE"], "w") as out:
        json.dump(peak, out)
atexit.register(report)
sys.argv = ["scripts.run_job", *sys.argv[1:]]
runpy.run_module("scripts.run_job", run_name="__main__")
"""


def vm_hwm_mib(proc: psutil.Process) -> float | None:
    try:
        with open(f"/proc/{proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def role(proc: psutil.Process) -> str:
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "?"
    if "spawn_main" in cmd or "multiprocessing" in cmd:
        return "dask process"
    return cmd.split("/")[-1][:40]


class Sampler(threading.Thread):
    """The last VmHWM of every descendant of ``root``, by pid, every 0.25 s."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root, self.peaks, self.roles = root, {}, {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                children = psutil.Process(self.root).children(recursive=True)
            except psutil.NoSuchProcess:
                break
            for child in children:
                peak = vm_hwm_mib(child)
                if peak is not None:
                    self.peaks[child.pid] = max(peak, self.peaks.get(child.pid, 0.0))
                    self.roles.setdefault(child.pid, role(child))
            time.sleep(0.25)


def run_step(job: str, env: dict[str, str], folder: Path, days: tuple[str, str] | None,
             config: dict | None) -> dict:
    peak_file = folder / f"{job}.peak.json"
    argv = [sys.executable, "-c", CHILD, job]
    if days:
        argv += ["--first", days[0], "--last", days[1]]
    if config:
        argv += ["--config", json.dumps(config)]
    log = folder / f"{job}.log"
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env={**env, "SCALE_PEAK_FILE": str(peak_file)},
                                stdout=out, stderr=subprocess.STDOUT)
        sampler = Sampler(proc.pid)
        sampler.start()
        code = proc.wait()
        sampler.done.set()
        sampler.join()
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"{job} failed (rc={code}):\n{log.read_text()[-4000:]}")
    step = json.loads(peak_file.read_text())
    dask = [mib for pid, mib in sampler.peaks.items() if sampler.roles[pid] == "dask process"]
    return {"seconds": seconds, "step_peak_mib": step["VmHWM"],
            "dask_peak_mib": max(dask, default=0.0), "dask_processes": len(dask),
            "others": {sampler.roles[pid]: mib for pid, mib in sampler.peaks.items()
                       if sampler.roles[pid] != "dask process"}}


def measure(cfg: SimulationConfig, small: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        folder = Path(tmp)
        data_dir = folder / "data"
        first, last = cfg.days[0], cfg.days[-1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
        env.update(DATA_DIR=str(data_dir), DAGSTER_HOME=str(folder / "dagster_home"),
                   FRAUD_START_DATE=first, FRAUD_END_DATE=last,
                   LABEL_DELAY_DAYS=str(DEFAULT_LABEL_DELAY_DAYS))
        started = time.perf_counter()
        files = write_landing(cfg, data_dir / "landing")
        simulated = time.perf_counter() - started
        rows = sum(pq.read_metadata(f).num_rows for f in files)
        print(f"  simulator: {rows:,} transactions in {len(files)} files, {simulated:.0f} s",
              flush=True)
        steps = {}
        for job in JOBS:
            days = None if job == "train" else (first, last)
            config = SMALL_TRAINING if (small and job == "train") else None
            steps[job] = run_step(job, env, folder, days, config)
            s = steps[job]
            print(f"  {job}: {s['seconds']:.0f} s, step peak {s['step_peak_mib']:.0f} MiB, "
                  f"largest of {s['dask_processes']} Dask processes "
                  f"{s['dask_peak_mib']:.0f} MiB", flush=True)
        return {"rows": rows, "simulator_s": simulated, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=int, default=10, help="the larger scale (x)")
    parser.add_argument("--small", action="store_true", help="the tests' scale (smoke)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    banner(f"the batch back-fill at 1x and {args.factor}x: time and peak memory per process")
    print(machine_line())
    results = {}
    for factor in (1, args.factor):
        cfg = scaled_config(factor, "entities", args.small)
        print(f"\n{factor}x: {cfg.n_customers:,} customers, {cfg.n_terminals:,} terminals, "
              f"{cfg.n_days} days", flush=True)
        results[factor] = measure(cfg, args.small)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))

    banner("results")
    one, big = results[1], results[args.factor]
    print(f"transactions: 1x {one['rows']:,}, {args.factor}x {big['rows']:,} "
          f"({big['rows'] / one['rows']:.2f}x)")
    table = [["simulator (this process)", one["simulator_s"], big["simulator_s"],
              big["simulator_s"] / one["simulator_s"], "", "", "", ""]]
    for job in JOBS:
        a, b = one["steps"][job], big["steps"][job]
        table.append([job, a["seconds"], b["seconds"], b["seconds"] / a["seconds"],
                      a["step_peak_mib"], b["step_peak_mib"],
                      a["dask_peak_mib"], b["dask_peak_mib"]])
    backfill = {f: sum(s["seconds"] for s in results[f]["steps"].values()) for f in results}
    table.append(["back-fill (the three runs)", backfill[1], backfill[args.factor],
                  backfill[args.factor] / backfill[1], "", "", "", ""])
    print_table(["step", "1x s", f"{args.factor}x s", "time ratio", "step peak 1x MiB",
                 f"step peak {args.factor}x MiB", "Dask peak 1x MiB",
                 f"Dask peak {args.factor}x MiB"], table)
    print("(step peak: the run's own process, VmHWM at exit; Dask peak: the largest nanny "
          "or worker process, VmHWM sampled every 0.25 s)")
    time_ratio = backfill[args.factor] / backfill[1]
    print(f"Target: back-fill time at {args.factor}x <= {MAX_TIME_GROWTH:.0f}x the 1x time: "
          f"{time_ratio:.2f}x  {verdict(time_ratio, MAX_TIME_GROWTH, higher_is_better=False)}")
    for job in JOBS:
        ratio = big["steps"][job]["step_peak_mib"] / one["steps"][job]["step_peak_mib"]
        print(f"Target: {job}'s step peak at {args.factor}x <= {MAX_STEP_GROWTH:.2f}x the 1x "
              f"peak: {ratio:.2f}x  "
              f"{verdict(ratio, MAX_STEP_GROWTH, higher_is_better=False)}")
    worst = max(s["dask_peak_mib"] for r in results.values() for s in r["steps"].values())
    print(f"Target: no Dask process above {MAX_WORKER_GIB:.0f} GiB: largest "
          f"{worst / 1024:.2f} GiB  "
          f"{verdict(worst / 1024, MAX_WORKER_GIB, higher_is_better=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
