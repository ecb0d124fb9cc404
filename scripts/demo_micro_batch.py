"""Micro-batches within the day, headless: one day lands as 24 hourly files while the
landing sensor runs; each file is scored minutes (here: seconds) after it lands, and once the
day has ended one run closes it with its drift report.

``make demo`` runs it last. The sensor is evaluated in this process exactly as the daemon
evaluates it (cursor, run keys, one run at a time) and each run it requests is executed here
as soon as it is requested, in the instance at DAGSTER_HOME (`make dev` shows them). Two
things differ from a deployment, and the demo says so:

* the clock: the demo's days are simulated in the past, so the sensor's clock is moved to
  the hour each file covers (``sensors.landing.now``), and a demo hour lasts
  :data:`HOUR_S` seconds;
* the ticks: the daemon ticks every 15 s; the demo ticks again as soon as a run ends.
  ``benchmarks/micro_batch.py`` measures the delay through the real daemon.

The runs share one Dask LocalCluster (``DASK_SCHEDULER_ADDRESS``), as a deployment that
micro-batches keeps a standing cluster instead of starting one per run.
"""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc
import pyarrow.parquet as pq

import sensors.landing as landing_module
from fraudkit import lake
from fraudkit.blobs import is_remote
from fraudkit.config import Settings
from fraudkit.simulator import SimulationConfig, copy_landing, write_landing

#: Seconds of the demo per hour of the simulated day.
HOUR_S = 0.5


@dataclass
class HourFile:
    hour: int
    path: Path
    ids: set[int]
    landed_at: float | None = None
    scored_at: float | None = None
    run: int | None = None


def hourly_files(settings: Settings, day: str, drift_from: str | None, small: bool,
                 staging: Path) -> list[HourFile]:
    """The simulated ``day`` (the demo's population, drift included) split by hour into
    files staged outside the landing folder, to be renamed in one by one."""
    base = SimulationConfig.small() if small else SimulationConfig()
    cfg = replace(base, start_date=settings.start_date,
                  n_days=len(lake.day_range(settings.start_date, day)), drift_from=drift_from)
    [whole] = write_landing(cfg, staging / "whole", days={day}, overwrite=True)
    table = pq.read_table(whole)
    hour = pc.hour(table["tx_datetime"])
    files = []
    for h in range(24):
        part = table.filter(pc.equal(hour, h))
        path = staging / f"transactions_{day}_h{h:02d}.parquet"
        pq.write_table(part, path)
        files.append(HourFile(h, path, set(part["transaction_id"].to_pylist())))
    return files


def _definitions(settings: Settings, scheduler_address: str) -> dg.Definitions:
    """The code location's jobs and sensors with resources whose Dask work goes to
    ``scheduler_address``."""
    from definitions import defs
    from resources.storage import default_resources

    settings = settings.model_copy(update={"dask_scheduler_address": scheduler_address})
    return dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs,
                          sensors=defs.sensors, resources=default_resources(settings))


def run_intraday_story(settings: Settings, instance: dg.DagsterInstance, day: str,
                       drift_from: str | None, small: bool) -> list[HourFile]:
    """Land ``day`` hour by hour with the landing sensor running; print each file's delay
    from landing to scored, then close the day. Returns the files with their times."""
    from distributed import LocalCluster

    from scripts.demo_monitoring import _drift_rows
    from sensors.dead_runs import process_tags

    staging = settings.data_dir / "staging"
    files = hourly_files(settings, day, drift_from, small, staging)
    start = dt.datetime.fromisoformat(f"{day}T00:00:00+00:00")
    clock = {"now": start}
    real_now = landing_module.now
    landing_module.now = lambda: clock["now"]
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    runs = 0
    try:
        with LocalCluster(n_workers=settings.dask_n_workers, threads_per_worker=1,
                          processes=True, dashboard_address=":0") as cluster:
            defs = _definitions(settings, cluster.scheduler_address)
            sensor = defs.resolve_sensor_def("landing_sensor")
            resources = {k: v for k, v in defs.resources.items() if k in ("landing", "delta")}
            cursor = None

            def tick() -> dg.RunRequest | None:
                nonlocal cursor
                with dg.build_sensor_context(instance=instance, cursor=cursor,
                                             resources=resources, definitions=defs) as ctx:
                    result = sensor.evaluate_tick(ctx)
                cursor = result.cursor
                return result.run_requests[0] if result.run_requests else None

            def execute(request: dg.RunRequest) -> None:
                job = defs.resolve_job_def(request.job_name)
                outcome = job.execute_in_process(
                    instance=instance, tags={**request.tags, **process_tags()},
                    partition_key=request.partition_key, run_config=quiet,
                    raise_on_error=False)
                if not outcome.success:
                    raise SystemExit(f"run {outcome.run_id} of {request.job_name} failed; "
                                     "`make dev` shows its log")

            tick()  # the baseline: files already there are the back-fill's
            began = time.perf_counter()

            def land_hourly() -> None:
                for f in files:
                    time.sleep(max(0.0, began + f.hour * HOUR_S - time.perf_counter()))
                    f.path.replace(settings.landing_dir / f.path.name)
                    if is_remote(settings.landing_uri):  # LANDING_URI on an object store
                        copy_landing(settings.landing_dir, settings.landing_uri,
                                     settings.storage_options)
                    f.landed_at = time.perf_counter()

            lander = threading.Thread(target=land_hourly, daemon=True)
            lander.start()
            predictions = settings.table_uri("batch_predictions")
            while any(f.scored_at is None for f in files):
                landed = [f for f in files if f.landed_at is not None]
                # The sensor's clock: the end of the newest hour that has landed.
                clock["now"] = start + dt.timedelta(hours=max(1, len(landed)), seconds=-30)
                request = tick()
                if request is None:
                    time.sleep(0.2)
                    continue
                execute(request)
                runs += 1
                done = time.perf_counter()
                scored = set(lake.read_days(predictions, [day], ["transaction_id"],
                                            storage_options=settings.storage_options)
                             .column(0).to_pylist())
                for f in files:
                    if f.scored_at is None and f.landed_at is not None and f.ids <= scored:
                        f.scored_at, f.run = done, runs
            lander.join()
            for f in files:
                print(f"    {f.hour:02d}:00-{f.hour:02d}:59  {len(f.ids):>5,} tx  landed "
                      f"+{f.landed_at - began:5.1f}s  scored +{f.scored_at - began:5.1f}s  "
                      f"delay {f.scored_at - f.landed_at:4.1f}s  (run {f.run})")
            delays = [f.scored_at - f.landed_at for f in files]
            print(f"    landing to scored: median {statistics.median(delays):.1f}s, max "
                  f"{max(delays):.1f}s over 24 files in {runs} micro_batch_intraday runs "
                  "(each run re-reads the day's files so far and replaces the day)")
            clock["now"] = start + dt.timedelta(days=1, seconds=30)
            closing = tick()
            if closing is None:
                raise SystemExit(f"the landing sensor did not close {day} after midnight")
            started = time.perf_counter()
            execute(closing)
            [row] = _drift_rows(settings, [day])
            print(f"    the day ended: {closing.job_name} re-ran {day} over its 24 files with "
                  f"its drift report in {time.perf_counter() - started:.1f}s: drift share "
                  f"{row['share']:.2f}, {'DRIFT' if row['drift'] else 'no drift'}")
    finally:
        landing_module.now = real_now
    total = sum(len(f.ids) for f in files)
    kept = lake.read_days(settings.table_uri("raw_transactions"), [day],
                          ["transaction_id"], storage_options=settings.storage_options
                          ).num_rows
    print(f"    raw_transactions of {day}: {kept:,} rows from {total:,} landed, each once")
    return files
