"""The dead-run sweep: fails STARTED runs whose process on this host is gone.

Why it exists. A run executed in-process (``execute_in_process``, which is how
``python -m scripts.run_job`` and ``make demo`` run jobs) reports its own end. If that
process is killed (``kill -9``, the OOM killer, a closed terminal), nothing ever does: the
run stays STARTED, the QueuedRunCoordinator counts it against ``max_concurrent_runs``, and
once enough dead runs pile up the daemon queues the drift sensor's retrain forever
("N runs are currently in progress. Maximum is 2, won't launch more").

What Dagster itself covers (dagster 1.13, see dagster.yaml):

* ``run_monitoring`` fails runs stuck in STARTING / NOT_STARTED past
  ``start_timeout_seconds`` and in CANCELING past ``cancel_timeout_seconds``, any launcher;
* for STARTED runs it asks the run launcher's worker health check, but the
  DefaultRunLauncher has none (``supports_check_run_worker_health`` is False), and an
  in-process run has no run worker to check at all;
* a run launched by the daemon through the DefaultRunLauncher runs in a subprocess of the
  gRPC code server, whose cleanup thread fails the run when that subprocess dies (as long as
  the code server itself lives).

What this sweep covers, and nothing more: STARTED runs that carry the :func:`process_tags`
of the process executing them (``scripts.demo.run_job`` adds them to every headless run),
whose pids are the ones this sensor sees (same hostname, same ``/etc/machine-id`` and same
pid namespace as the code server evaluating it), and whose process is gone: no such pid, a
zombie, or a pid reused by a process started at another time. A run recorded on another
host, or in another container's pid namespace, is never touched: its process cannot be seen
from here. Runs without these tags, such as the daemon's own launches, are left to Dagster's
mechanisms above.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg
import psutil

from fraudkit.config import Settings

#: Run tags naming the process that executes a run in-process.
HOST_TAG = "process/host"
PID_TAG = "process/pid"
#: Which pid numbering the pid belongs to: machine id and pid namespace (Linux; "-" elsewhere).
PID_SPACE_TAG = "process/pid_space"
#: The process's start time (seconds since the epoch): a reused pid does not match it.
STARTED_TAG = "process/started_at"
#: Two readings of one process's start time differ by the clock tick rounding, well below 1 s.
START_TIME_TOLERANCE_S = 1.0

#: Seconds between sweeps.
INTERVAL_SECONDS = Settings.from_env().run_sweep_interval_s


def pid_space() -> str:
    """This machine's id and this process's pid namespace: two containers may share a
    hostname (``--network host``) but not, unless they share it too, the pid namespace."""
    try:
        machine = Path("/etc/machine-id").read_text().strip() or "-"
    except OSError:
        machine = "-"
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = "-"
    return f"{machine} {namespace}"


def process_tags() -> dict[str, str]:
    """The tags that let the sweep tell whether this process still runs the run."""
    me = psutil.Process()
    return {HOST_TAG: socket.gethostname(), PID_SPACE_TAG: pid_space(), PID_TAG: str(me.pid),
            STARTED_TAG: f"{me.create_time():.2f}"}


def why_gone(tags: dict[str, str]) -> str | None:
    """Why the recorded process no longer runs the run, or None when it may still (alive,
    on another host or pid namespace, or not recorded)."""
    if (tags.get(HOST_TAG) != socket.gethostname() or tags.get(PID_SPACE_TAG) != pid_space()
            or PID_TAG not in tags):
        return None
    pid = int(tags[PID_TAG])
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return "it has exited (a zombie)"
        started = float(tags.get(STARTED_TAG, "nan"))
        if abs(process.create_time() - started) > START_TIME_TOLERANCE_S:
            return f"pid {pid} now belongs to another process ({process.name()})"
    except psutil.NoSuchProcess:
        return "no such process"
    except psutil.AccessDenied:
        return None  # it exists; whose it is cannot be read here, so assume it is alive
    return None


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Marks each STARTED run whose recorded process is gone as failed, with the reason in
    its event log; returns their run ids."""
    failed = []
    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        reason = why_gone(run.tags)
        if reason is None:
            continue
        instance.report_run_failed(
            run,
            f"The run's process {run.tags[PID_TAG]} on host {run.tags[HOST_TAG]} is gone "
            f"({reason}) while the run was STARTED: it was killed before it could report "
            "its end. Marked as failed by the dead_run_sweep sensor so that it stops holding "
            "a run queue slot; re-run the job if its work is still needed.",
        )
        failed.append(run.run_id)
    return failed


@dg.sensor(
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks STARTED runs as failed when the process that executes them on this "
    "host is gone (a headless run killed with kill -9), so they stop holding run queue "
    "slots. Runs recorded on another host, or without a recorded process, are left alone.",
)
def dead_run_sweep(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    failed = fail_dead_runs(context.instance)
    if not failed:
        return dg.SkipReason("no STARTED run of this host has lost its process")
    return dg.SkipReason(f"marked {len(failed)} run(s) whose process is gone as failed: "
                         f"{', '.join(failed)}")
