"""Runs whose process was killed must not hold the run queue forever.

Under a real `dagster-daemon`: headless runs (`python -m scripts.run_job`) are SIGKILLed in
the middle of their work, which leaves them STARTED with no process behind them; together
they fill the queue's ``max_concurrent_runs``. The daemon must mark the dead ones failed
(only those whose recorded process on *this* host is gone) and launch the queued run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest

from fraudkit.simulator import SimulationConfig, write_landing
from tests.conftest import ROOT, pipeline_env
from tests.servers import daemon_log, dagster_daemon

#: The three simulated days of the runs below; their ingest keeps a run STARTED ~20 s.
FIRST, LAST = "2026-05-01", "2026-05-03"


def start_headless_run(env: dict[str, str]) -> subprocess.Popen:
    """`python -m scripts.run_job ingest_and_features` in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "scripts.run_job", "ingest_and_features", "--first", FIRST,
         "--last", LAST],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )


def wait_started(instance: dg.DagsterInstance, procs: list[subprocess.Popen],
                 timeout: float = 120) -> list[dg.DagsterRun]:
    """The runs of ``procs``, once each is STARTED (each keeps working ~20 s then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        if len(runs) == len(procs):
            break
        for proc in procs:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        time.sleep(0.1)
    else:
        raise AssertionError(f"only {len(runs)} of {len(procs)} runs STARTED in {timeout}s")
    return runs


def kill(procs: list[subprocess.Popen]) -> None:
    """`kill -9` each main process, as a user would; the Dask workers it started go with
    their process group afterwards."""
    for proc in procs:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        assert not psutil.pid_exists(proc.pid)


def wait_until(predicate, timeout: float, daemon: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        assert daemon.poll() is None, daemon_log(daemon)
        time.sleep(1)
    return False


@pytest.mark.slow
def test_daemon_fails_killed_runs_and_launches_the_queued_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    write_landing(SimulationConfig.small(n_days=3), data_dir / "landing")
    env = {**pipeline_env(data_dir), "FRAUD_END_DATE": LAST, "RUN_SWEEP_INTERVAL": "5"}
    # The daemon starts first, so that it loads while the runs start.
    with dagster_daemon(env, tmp_path, signal.SIGKILL) as (daemon, instance):
        # Two runs fill max_concurrent_runs (2, dagster.yaml).
        procs = [start_headless_run(env) for _ in range(2)]
        killed = wait_started(instance, procs)
        # One of them claims to run on another machine sharing this instance: its
        # process cannot be checked from here, so it must be left alone.
        elsewhere, dead = killed
        instance.add_run_tags(elsewhere.run_id, {"process/host": "another-host"})
        kill(procs)
        launch = subprocess.run(
            [str(Path(sys.executable).parent / "dagster"), "job", "launch", "-w",
             str(tmp_path / "workspace.yaml"), "-j", "ingest_and_features", "--tags",
             '{"dagster/asset_partition_range_start": "2026-05-01", '
             '"dagster/asset_partition_range_end": "2026-05-03"}'],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert launch.returncode == 0, launch.stdout[-2000:] + launch.stderr[-2000:]
        # The daemon's sweep may already have freed a slot, so the run may have left the
        # queue by now: it is the one run besides the killed ones.
        (queued,) = [r for r in instance.get_runs() if r.run_id not in
                     {k.run_id for k in killed}]
        assert instance.all_logs(queued.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)

        def status(run: dg.DagsterRun) -> dg.DagsterRunStatus:
            return instance.get_run_by_id(run.run_id).status

        launched = wait_until(lambda: status(queued) != dg.DagsterRunStatus.QUEUED,
                              timeout=90, daemon=daemon)
        statuses = {r.run_id: status(r).value for r in killed}
        assert status(dead) == dg.DagsterRunStatus.FAILURE, statuses
        assert launched, f"the queued run never launched; killed runs: {statuses}"
        assert status(elsewhere) == dg.DagsterRunStatus.STARTED
        messages = [e.message for e in instance.all_logs(
            dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]
        assert any(f"process {dead.tags['process/pid']} on host {socket.gethostname()} "
                   "is gone" in m for m in messages), messages


def test_sweep_leaves_live_and_foreign_runs_alone(tmp_path: Path) -> None:
    """Only a gone process of this host counts: not a live one, not another host's; a pid
    reused by a process started at another time does count."""
    from sensors.dead_runs import (
        HOST_TAG,
        PID_SPACE_TAG,
        PID_TAG,
        STARTED_TAG,
        fail_dead_runs,
        process_tags,
    )

    me = process_tags()
    with dg.DagsterInstance.ephemeral() as instance:
        def started_run(tags: dict[str, str]) -> dg.DagsterRun:
            return instance.create_run_for_job(dg.GraphDefinition("noop").to_job(), tags=tags,
                                               status=dg.DagsterRunStatus.STARTED)

        live = started_run(me)
        foreign = started_run({**me, HOST_TAG: "another-host", PID_TAG: "999999999"})
        container = started_run({**me, PID_SPACE_TAG: "other-machine pid:[1]",
                                 PID_TAG: "999999999"})
        untagged = started_run({})
        reused = started_run({**me, STARTED_TAG: f"{float(me[STARTED_TAG]) - 3600:.2f}"})
        assert fail_dead_runs(instance) == [reused.run_id]
        for run in (live, foreign, container, untagged):
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
        assert instance.get_run_by_id(reused.run_id).status == dg.DagsterRunStatus.FAILURE
