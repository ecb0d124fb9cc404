"""Real servers the tests start and stop (see scripts/serving.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from scripts.instance import POSTGRES_URL, prepare_instance
from scripts.serving import RedisServer, free_port, kill_tree, process_tree

if TYPE_CHECKING:
    import dagster as dg

ROOT = Path(__file__).resolve().parent.parent


def snapshot_aof(server: RedisServer, into: Path) -> Path:
    """Stop ``server`` cleanly (which writes and fsyncs its AOF), copy the AOF to ``into``
    and start it again: :func:`restart_on_aof` later rolls the server back to this point."""
    server.stop()
    shutil.copytree(server.folder / "appendonlydir", into)
    server.start()
    return into


def restart_on_aof(server: RedisServer, snapshot: Path) -> None:
    """``kill -9`` of ``server`` and a start on the AOF of :func:`snapshot_aof`: Redis loses
    every write answered since, as a kill during its background fsync (appendfsync
    everysec) or a power loss would lose the last ones, here for certain."""
    server.kill()
    aof = server.folder / "appendonlydir"
    shutil.rmtree(aof)
    shutil.copytree(snapshot, aof)
    server.start()


@contextmanager
def redis_server(folder: Path, password: str | None = None,
                 appendonly: bool = True, unix_socket: bool = False) -> Iterator[RedisServer]:
    folder.mkdir(parents=True, exist_ok=True)
    server = RedisServer(folder, password, unix_socket=unix_socket)
    server.start(appendonly=appendonly)
    try:
        yield server
    finally:
        server.stop()


def daemon_log(daemon: subprocess.Popen) -> str:
    """The tail of the log of a daemon started by :func:`dagster_daemon`."""
    path = Path(daemon.log_path)  # set by dagster_daemon
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no daemon log)"


@contextmanager
def dagster_daemon(env: dict[str, str], folder: Path, sig: int = signal.SIGTERM
                   ) -> Iterator[tuple[subprocess.Popen, dg.DagsterInstance]]:
    """`dagster-daemon run` on the code location (``folder/workspace.yaml``), with ``env``
    (its ``DAGSTER_HOME`` gets the project's instance settings, PostgreSQL storage when
    ``env`` has DAGSTER_POSTGRES_URL, its storage and pool limits first:
    :func:`scripts.instance.prepare_instance`), and the instance it runs on;
    this process's DAGSTER_HOME (and DAGSTER_POSTGRES_URL) point there meanwhile. Its output
    is in ``folder/daemon.log`` (:func:`daemon_log`). The daemon runs in a session of its
    own and is stopped with ``sig`` to its whole process tree."""
    import dagster as dg

    home = Path(env["DAGSTER_HOME"])
    names = ("DAGSTER_HOME", POSTGRES_URL)
    old = {name: os.environ.get(name) for name in names}
    os.environ.update({name: env[name] for name in names if name in env})
    daemon = None
    try:
        prepare_instance(home, postgres=POSTGRES_URL in env)
        workspace = write_workspace(folder)
        # Its log goes to a file, never a pipe nobody reads: a full pipe would stall it.
        with open(folder / "daemon.log", "ab") as log:
            daemon = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w",
                 str(workspace)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        daemon.log_path = folder / "daemon.log"
        with dg.DagsterInstance.get() as instance:
            yield daemon, instance
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if daemon is not None:  # the whole tree: its code server outlives a killed group
            kill_tree(process_tree(daemon.pid), sig)
            daemon.wait(timeout=30)


def write_workspace(folder: Path) -> Path:
    """A workspace.yaml in ``folder`` that loads this checkout's ``definitions``."""
    workspace = folder / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_module:\n      module_name: definitions\n"
                         f"      working_directory: {ROOT}\n")
    return workspace


@contextmanager
def dagster_webserver(env: dict[str, str], folder: Path) -> Iterator[str]:
    """`dagster-webserver` on a free port over ``folder/workspace.yaml`` (see
    :func:`dagster_daemon`), in a session of its own; its URL once /server_info answers."""
    port = free_port()
    log = folder / "webserver.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-webserver"), "-w",
             str(write_workspace(folder)), "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                if httpx.get(url + "/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield url
    finally:
        kill_tree(process_tree(proc.pid), signal.SIGTERM)
        proc.wait(timeout=30)
