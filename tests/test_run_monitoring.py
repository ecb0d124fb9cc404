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


def kill_mid_run(instance: dg.DagsterInstance, procs: list[subprocess.Popen],
                 timeout: float = 120) -> list[dg.DagsterRun]:
    """Wait until each process's run is STARTED, then `kill -9` it (its main process, as a
    user would; the Dask workers it started go with their process group afterwards)."""
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
    for proc in procs:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return runs


def wait_until(predicate, timeout: float, daemon: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        assert daemon.poll() is None, daemon.stderr.read().decode()[-3000:]
        time.sleep(1)
    return False


@pytest.mark.slow
def test_daemon_fails_killed_runs_and_launches_the_queued_one(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    home = data_dir / "dagster_home"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    write_landing(SimulationConfig.small(n_days=3), data_dir / "landing")
    env = {**pipeline_env(data_dir), "FRAUD_END_DATE": LAST, "RUN_SWEEP_INTERVAL": "5"}
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_module:\n      module_name: definitions\n"
                         f"      working_directory: {ROOT}\n")
    old = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    daemon = None
    try:
        with dg.DagsterInstance.get() as instance:
            procs = [start_headless_run(env) for _ in range(3)]
            killed = kill_mid_run(instance, procs)
            # One of them claims to run on another machine sharing this instance: its
            # process cannot be checked from here, so it must be left alone.
            elsewhere, *dead = killed
            instance.add_run_tags(elsewhere.run_id, {"process/host": "another-host"})
            assert all(not psutil.pid_exists(p.pid) for p in procs)
            launch = subprocess.run(
                [str(Path(sys.executable).parent / "dagster"), "job", "launch", "-w",
                 str(workspace), "-j", "ingest_and_features", "--tags",
                 '{"dagster/asset_partition_range_start": "2026-05-01", '
                 '"dagster/asset_partition_range_end": "2026-05-03"}'],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
            )
            assert launch.returncode == 0, launch.stdout[-2000:] + launch.stderr[-2000:]
            (queued,) = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))

            daemon = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                 str(workspace)],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True,
            )

            def status(run: dg.DagsterRun) -> dg.DagsterRunStatus:
                return instance.get_run_by_id(run.run_id).status

            launched = wait_until(lambda: status(queued) != dg.DagsterRunStatus.QUEUED,
                                  timeout=90, daemon=daemon)
            statuses = {r.run_id: status(r).value for r in killed}
            assert all(status(r) == dg.DagsterRunStatus.FAILURE for r in dead), statuses
            assert launched, f"the queued run never launched; killed runs: {statuses}"
            assert status(elsewhere) == dg.DagsterRunStatus.STARTED
            for run in dead:
                messages = [e.message for e in instance.all_logs(
                    run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]
                assert any(f"process {run.tags['process/pid']} on host "
                           f"{socket.gethostname()} is gone" in m for m in messages), messages
    finally:
        if old is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = old
        if daemon is not None:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=30)
