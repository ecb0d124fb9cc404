"""``make up`` / ``make down``: the whole stack on one host as supervised processes.

    python -m scripts.stack up [--timeout 300]   # start, wait until healthy, print the URLs
    python -m scripts.stack status               # what the supervisor sees now
    python -m scripts.stack down                 # stop every process tree, check none is left

``up`` starts a supervisor (``python -m scripts.stack supervise``) in a session of its own and
returns once every process answers its health check. The supervisor runs:

- ``webserver``: ``dagster-webserver`` on ``workspace.yaml``; healthy when ``/server_info``
  answers 200;
- ``daemon``: ``dagster-daemon run`` (sensors, schedules, the run queue); healthy when every
  daemon of the instance has written a heartbeat since it started, none older than 120 s;
- ``service``: ``bentoml serve service:FraudService`` (the online API); healthy when
  ``/healthz`` answers 200 (``/readyz`` says whether it is ready for traffic);
- ``evidently``: ``evidently ui`` (``python -m scripts.evidently_ui``, which also opens a
  workspace on an object store) on the drift reports' workspace (left out when
  ``EVIDENTLY_WORKSPACE=none``); healthy when ``/`` answers 200.

A process that exits, or fails three health checks in a row once healthy (or is not healthy
within its start allowance), is stopped by its whole process tree (BentoML and Dagster start
workers in sessions of their own, which outlive their parent) and started again after a
back-off of 1, 2, 4 … 30 s. The supervisor writes what it sees to ``STACK_DIR/state.json``
and each process's output to ``STACK_DIR/logs/<name>.log``. ``down`` sends SIGTERM to the
supervisor, which stops every tree (SIGTERM, SIGKILL after 20 s); it then kills whatever
the last state names that is still alive (a supervisor killed by SIGKILL leaves its
children), and fails if anything remains.

Every process reads the settings of the environment, as the rest of the project does:
``DAGSTER_HOME`` (PostgreSQL with ``DAGSTER_POSTGRES_URL``), ``DATA_DIR`` and
``DELTA_STORAGE_OPTIONS``, ``ONLINE_STORE_URL`` (Redis), ``DASK_SCHEDULER_ADDRESS``. Those
servers are the operator's: the stack starts none of them.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from scripts.serving import PROJECT_ROOT, kill_tree, process_tree

BIN = Path(sys.executable).parent
HEALTH_EVERY_S = 3.0
FAILURES_TO_RESTART = 3
MAX_BACKOFF_S = 30.0
HEARTBEAT_MAX_AGE_S = 300.0  # heartbeats come every 30 s; Dagster's own tolerance is 1800 s
CHECK_DEADLINE_S = 15.0  # a health check that takes longer counts as failed


@dataclass
class Spec:
    """One supervised process: how to start it, where a person opens it, how it is judged."""

    name: str
    argv: list[str]
    cwd: Path
    url: str | None
    health: Callable[[Child], str | None]  # None when healthy, else what is wrong
    start_allowance_s: float = 180.0


@dataclass
class Child:
    spec: Spec
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    tree: list[psutil.Process] = field(default_factory=list)
    status: str = "stopped"  # starting, healthy, unhealthy, backoff, stopped
    restarts: int = 0
    backoff_level: int = 0  # back to 0 after a minute healthy
    failures: int = 0
    next_start: float = 0.0
    next_check: float = 0.0
    healthy_since: float | None = None
    problem: str = ""
    check: Future | None = None  # the health check in flight
    check_started: float = 0.0


def http_health(url: str) -> Callable[[Child], str | None]:
    def check(_: Child) -> str | None:
        try:
            answer = httpx.get(url, timeout=2)
        except httpx.TransportError as exc:
            return f"{url}: {type(exc).__name__}"
        return None if answer.status_code == 200 else f"{url}: HTTP {answer.status_code}"
    return check


_instance = None


def daemon_health(child: Child) -> str | None:
    """Every daemon the instance requires has a heartbeat since this process started, none
    older than :data:`HEARTBEAT_MAX_AGE_S`."""
    global _instance
    import dagster as dg

    if _instance is None:  # opened once: opening it costs seconds
        _instance = dg.DagsterInstance.get()
    beats = _instance.get_daemon_heartbeats()
    now = time.time()
    stale = sorted(kind for kind in _instance.get_required_daemon_types()
                   if kind not in beats or beats[kind].timestamp < child.started_at
                   or now - beats[kind].timestamp > HEARTBEAT_MAX_AGE_S)
    return f"no recent heartbeat from {', '.join(stale)}" if stale else None


def specs(host: str, service_port: int, dagster_port: int, evidently_port: int | None,
          workspace: Path | str | None) -> list[Spec]:
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}"
    workspace_yaml = str(PROJECT_ROOT / "workspace.yaml")
    found = [
        Spec("webserver", [str(BIN / "dagster-webserver"), "-w", workspace_yaml, "-h", host,
                           "-p", str(dagster_port)], PROJECT_ROOT, f"{base}:{dagster_port}",
             http_health(f"{base}:{dagster_port}/server_info")),
        Spec("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace_yaml],
             PROJECT_ROOT, None, daemon_health),
        Spec("service", [str(BIN / "bentoml"), "serve", "service:FraudService", "--host", host,
                         "--port", str(service_port)], PROJECT_ROOT / "bento",
             f"{base}:{service_port}", http_health(f"{base}:{service_port}/healthz")),
    ]
    if workspace is not None and evidently_port is not None:
        if isinstance(workspace, Path):
            workspace.mkdir(parents=True, exist_ok=True)
        found.append(Spec("evidently", [str(BIN / "python"), "-m", "scripts.evidently_ui",
                                        "--workspace", str(workspace), "--host", host, "--port",
                                        str(evidently_port)], PROJECT_ROOT,
                          f"{base}:{evidently_port}", http_health(f"{base}:{evidently_port}/")))
    return found


class Supervisor:
    """Starts the children, judges them, restarts the failed, stops them all on SIGTERM."""

    def __init__(self, stack_dir: Path, children: list[Spec]) -> None:
        self.stack_dir = stack_dir
        self.logs = stack_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.children = [Child(spec) for spec in children]
        self.stopping = False
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="health")

    def log(self, message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    def start(self, child: Child) -> None:
        try:
            with open(self.logs / f"{child.spec.name}.log", "a") as out:
                child.proc = subprocess.Popen(child.spec.argv, cwd=child.spec.cwd,
                                              stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True)
        except OSError as exc:  # e.g. .venv being rebuilt: try again later
            self.restart_later(child, f"could not start: {exc}")
            return
        child.started_at = time.time()
        child.tree = process_tree(child.proc.pid)
        child.status, child.failures, child.healthy_since = "starting", 0, None
        child.next_check = time.time() + 1
        self.log(f"{child.spec.name}: started, pid {child.proc.pid}")

    def stop(self, child: Child, sig: int = signal.SIGTERM) -> None:
        """The whole tree: what is below the process now and what was below it before (a
        worker whose parent died is no longer below anything)."""
        alive = {p.pid: p for p in child.tree if p.is_running()}
        if child.proc is not None and child.proc.poll() is None:  # not reaped: pid still ours
            alive.update({p.pid: p for p in process_tree(child.proc.pid)})
        kill_tree(list(alive.values()), sig)
        if child.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=5)
        child.proc, child.tree, child.check = None, [], None

    def restart_later(self, child: Child, why: str) -> None:
        self.log(f"{child.spec.name}: {why}; stopping its process tree")
        self.stop(child)
        delay = min(MAX_BACKOFF_S, 2.0 ** min(child.backoff_level, 5))
        child.restarts += 1
        child.backoff_level += 1
        child.status, child.problem = "backoff", why
        child.next_start = time.time() + delay
        self.log(f"{child.spec.name}: restart {child.restarts} in {delay:.0f} s")

    def tick(self, child: Child) -> None:
        now = time.time()
        if child.proc is None:
            if now >= child.next_start:
                self.start(child)
            return
        code = child.proc.poll()
        if code is not None:
            self.restart_later(child, f"exited with code {code}")
            return
        known = {p.pid for p in child.tree if p.is_running()}
        child.tree = [p for p in child.tree if p.pid in known]
        child.tree += [p for p in process_tree(child.proc.pid) if p.pid not in known]
        problem = self.health(child, now)
        if problem is False:  # no verdict this tick
            return
        if problem is None:
            if child.status != "healthy":
                self.log(f"{child.spec.name}: healthy after {now - child.started_at:.1f} s")
            child.status, child.failures, child.problem = "healthy", 0, ""
            child.healthy_since = child.healthy_since or now
            if now - child.healthy_since > 60:
                child.backoff_level = 0
            return
        child.problem = problem
        if child.status == "starting":
            if now - child.started_at > child.spec.start_allowance_s:
                self.restart_later(child, f"not healthy after "
                                          f"{child.spec.start_allowance_s:.0f} s: {problem}")
            return
        child.failures += 1
        child.status = "unhealthy"
        if child.failures >= FAILURES_TO_RESTART:
            self.restart_later(child, f"{child.failures} failed health checks: {problem}")

    def health(self, child: Child, now: float) -> str | None | bool:
        """The verdict of the check in flight (``None``: healthy, else the problem), or
        ``False`` when there is none yet. Checks run on a thread pool, so a check that hangs
        (a database that does not answer) never stalls the loop; past
        :data:`CHECK_DEADLINE_S` it counts as failed."""
        if child.check is None:
            if now >= child.next_check:
                child.check = self.pool.submit(child.spec.health, child)
                child.check_started = now
            return False
        if not child.check.done():
            if now - child.check_started <= CHECK_DEADLINE_S:
                return False
            problem = f"health check took more than {CHECK_DEADLINE_S:.0f} s"
        else:
            try:
                problem = child.check.result()
            except Exception as exc:  # a check that cannot run: the process is not healthy
                problem = f"{type(exc).__name__}: {exc}"
        child.check, child.next_check = None, now + HEALTH_EVERY_S
        return problem

    def state(self) -> dict:
        return {"supervisor": {"pid": os.getpid(),
                               "create_time": psutil.Process().create_time()},
                "stopping": self.stopping,
                "processes": {c.spec.name: {
                    "status": c.status, "url": c.spec.url,
                    "pid": c.proc.pid if c.proc else None,
                    "tree": [[p.pid, p.create_time()] for p in c.tree if p.is_running()],
                    "restarts": c.restarts, "problem": c.problem,
                    "log": str(self.logs / f"{c.spec.name}.log")} for c in self.children}}

    def write_state(self) -> None:
        path = self.stack_dir / "state.json"
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(psutil.NoSuchProcess):
            tmp.write_text(json.dumps(self.state(), indent=1))
            tmp.replace(path)

    def run(self) -> None:
        def ask_to_stop(*_: object) -> None:
            self.stopping = True
        signal.signal(signal.SIGTERM, ask_to_stop)
        signal.signal(signal.SIGINT, ask_to_stop)
        try:
            while not self.stopping:
                for child in self.children:
                    if not self.stopping:
                        self.tick(child)
                with contextlib.suppress(OSError):  # a full disk must not end supervision
                    self.write_state()
                time.sleep(0.5)
        finally:  # whatever ended the loop, no child is left unsupervised
            self.log("stopping every process tree")
            for child in self.children:
                with contextlib.suppress(psutil.Error, OSError):
                    self.stop(child)
                child.status = "stopped"
            with contextlib.suppress(OSError):
                self.write_state()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.log("stopped")


def read_state(stack_dir: Path) -> dict | None:
    try:
        return json.loads((stack_dir / "state.json").read_text())
    except (OSError, ValueError):
        return None


def hold_lock(stack_dir: Path) -> object | None:
    """The supervisor's lock on ``STACK_DIR/lock`` (held until its process ends), or
    ``None`` when another process holds it: one supervisor per STACK_DIR."""
    stack_dir.mkdir(parents=True, exist_ok=True)
    handle = open(stack_dir / "lock", "a")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def supervised(stack_dir: Path) -> bool:
    """Whether a supervisor holds STACK_DIR's lock now."""
    handle = hold_lock(stack_dir)
    if handle is None:
        return True
    handle.close()
    return False


def alive(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The process ``pid`` if it is still the one recorded (not a reused pid: the same start
    time within a second, which a clock step of the host could move)."""
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        if create_time is None or abs(proc.create_time() - create_time) < 1.0:
            return proc if proc.status() != psutil.STATUS_ZOMBIE else None
    except psutil.NoSuchProcess:
        pass
    return None


def leftovers(state: dict | None) -> list[psutil.Process]:
    """The processes a state names that are still alive."""
    return [p for proc in (state or {"processes": {}})["processes"].values()
            for pid, created in proc["tree"] if (p := alive(pid, created))]


def print_urls(state: dict) -> None:
    print("the stack is up:")
    for name, proc in state["processes"].items():
        where = proc["url"] or "(no port: sensors, schedules and the run queue)"
        print(f"  {name:<10} {proc['status']:<9} {where}   log: {proc['log']}")


def up(args: argparse.Namespace) -> int:
    stack_dir = args.stack_dir
    state = read_state(stack_dir)
    if supervised(stack_dir):
        if state:
            print_urls(state)
        print("(already running; `make down` stops it)")
        return 0
    left = leftovers(state)
    if left:  # a supervisor that died without stopping its children: they hold the ports
        print(f"stopping {len(left)} process(es) a previous supervisor left")
        kill_tree(left, signal.SIGTERM)
    stack_dir.mkdir(parents=True, exist_ok=True)
    (stack_dir / "state.json").unlink(missing_ok=True)
    argv = [sys.executable, "-m", "scripts.stack", "supervise", "--stack-dir", str(stack_dir),
            "--host", args.host, "--service-port", str(args.service_port),
            "--dagster-port", str(args.dagster_port)]
    log = stack_dir / "supervisor.log"
    with open(log, "a") as out:
        supervisor = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
    started, shown = time.monotonic(), set()
    while time.monotonic() - started < args.timeout:
        time.sleep(1)
        if supervisor.poll() is not None:
            print(f"the supervisor exited (code {supervisor.returncode}):\n"
                  f"{log.read_text()[-3000:]}", file=sys.stderr)
            break
        state = read_state(stack_dir)
        if state is None:
            continue
        for name, proc in state["processes"].items():
            if proc["status"] == "healthy" and name not in shown:
                shown.add(name)
                print(f"{name}: healthy ({time.monotonic() - started:.0f} s)", flush=True)
        if all(p["status"] == "healthy" for p in state["processes"].values()):
            print_urls(state)
            return 0
    else:
        print(f"the stack was not healthy within {args.timeout:.0f} s:", file=sys.stderr)
        for name, proc in (state or {"processes": {}})["processes"].items():
            if proc["status"] != "healthy":
                path = Path(proc["log"])
                tail = path.read_text()[-1500:] if path.exists() else ""
                print(f"--- {name}: {proc['status']} {proc['problem']}\n{tail}",
                      file=sys.stderr)
    down(args)
    return 1


def down(args: argparse.Namespace) -> int:
    stack_dir = args.stack_dir
    state = read_state(stack_dir)
    if state is None:
        print(f"nothing to stop: no {stack_dir / 'state.json'}")
        return 0
    supervisor = alive(state["supervisor"]["pid"], state["supervisor"]["create_time"])
    if supervisor is not None:
        supervisor.terminate()
        try:
            supervisor.wait(timeout=90)
        except psutil.TimeoutExpired:
            supervisor.kill()
        state = read_state(stack_dir) or state
    left = leftovers(state)
    if left:  # a supervisor that died without stopping its children
        print(f"stopping {len(left)} process(es) the supervisor left")
        kill_tree(left, signal.SIGTERM)
    still = [p.pid for p in leftovers(state)]
    if still:
        print(f"still running after `down`: {still}", file=sys.stderr)
        return 1
    (stack_dir / "state.json").unlink(missing_ok=True)
    print("the stack is down: every process tree stopped")
    return 0


def status(args: argparse.Namespace) -> int:
    state = read_state(args.stack_dir)
    if not supervised(args.stack_dir) or state is None:
        print("the stack is not running (`make up` starts it)")
        return 3
    for name, proc in state["processes"].items():
        print(f"{name:<10} {proc['status']:<9} restarts {proc['restarts']:<3} "
              f"{proc['url'] or '':<24} {proc['problem']}")
    return 0


def supervise(args: argparse.Namespace) -> int:
    from resources.monitoring import MonitoringResource

    lock = hold_lock(args.stack_dir)
    if lock is None:
        print(f"another supervisor runs on {args.stack_dir}: `make down` first",
              file=sys.stderr)
        return 1

    monitoring = MonitoringResource.from_settings()
    workspace = monitoring.workspace_dir()
    Supervisor(args.stack_dir, specs(args.host, args.service_port, args.dagster_port,
                                     monitoring.evidently_ui_port, workspace)).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "supervise"])
    parser.add_argument("--stack-dir", type=Path,
                        default=Path(os.environ.get("STACK_DIR", PROJECT_ROOT / ".stack")))
    parser.add_argument("--host", default=os.environ.get("STACK_HOST", "127.0.0.1"))
    parser.add_argument("--service-port", type=int, default=int(os.environ.get("PORT", 3000)))
    parser.add_argument("--dagster-port", type=int,
                        default=int(os.environ.get("DAGSTER_PORT", 3001)))
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds `up` waits for every process to be healthy")
    args = parser.parse_args(argv)
    return {"up": up, "down": down, "status": status, "supervise": supervise}[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
