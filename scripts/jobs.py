"""Running the code location's jobs from scripts (the demo, ``scripts.run_job``), headless.

Each run is recorded in the instance at ``DAGSTER_HOME``, so the UI (`make dev`) shows it,
and tagged with the process that runs it (see sensors/dead_runs.py).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from scripts.instance import postgres_url_from_env, write_instance

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def quiet_beta_warnings() -> None:
    """The backfill policy and partition mapping options the assets use are marked beta in
    Dagster 1.13; their warnings would bury a script's own output. Entry points call this;
    importing this module changes no warning filter."""
    warnings.filterwarnings("ignore", category=dg.BetaWarning)


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME (default: the checkout's .dagster_home, the instance `make dev` shows)
    with the project's instance settings (:mod:`scripts.instance`: SQLite, or PostgreSQL when
    DAGSTER_POSTGRES_URL is set)."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home")))
    write_instance(home, postgres=postgres_url_from_env() is not None)
    return home


@contextmanager
def sigterm_kept() -> Iterator[None]:
    """Keep this process's SIGTERM disposition across a Dagster run in process.

    While it runs a job in process, Dagster points SIGTERM at the SIGINT handler, and it
    leaves it there afterwards. In the foreground that turns a later ``kill`` into a
    KeyboardInterrupt; in a process started in the background, whose SIGINT is ignored,
    SIGTERM stays *ignored*: a ``kill`` of the demo did nothing, and every process it
    started afterwards inherited the ignored SIGTERM (a multiprocessing pool's terminate
    then hung: tests/test_registry_object_store.py).
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; Dagster leaves them alone there too
        return
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def run_job(
    name: str,
    instance: dg.DagsterInstance,
    days: tuple[str, str] | None = None,
    run_config: dict[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """Run one job in this process, as a single run over a partition range if given.

    The run is tagged with this process (host, pid), so that if the process is killed the
    dead_run_sweep sensor (sensors/dead_runs.py) can mark the run failed."""
    from definitions import defs
    from sensors.dead_runs import process_tags

    tags = {**process_tags(), **({RANGE_START: days[0], RANGE_END: days[1]} if days else {})}
    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    with sigterm_kept():
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
