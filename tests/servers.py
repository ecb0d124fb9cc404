"""Real servers the tests start and stop (see scripts/serving.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.serving import RedisServer

if TYPE_CHECKING:
    import dagster as dg

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def redis_server(folder: Path, password: str | None = None,
                 appendonly: bool = True) -> Iterator[RedisServer]:
    folder.mkdir(parents=True, exist_ok=True)
    server = RedisServer(folder, password)
    server.start(appendonly=appendonly)
    try:
        yield server
    finally:
        server.stop()


def create_dagster_storage(home: Path) -> None:
    """Create the SQLite storage of a fresh DAGSTER_HOME in this process, before a daemon and
    runs open it: processes that create it at the same moment race in its schema migration
    (alembic: "Version table 'alembic_version' has more than one head present")."""
    import dagster as dg

    # local_temp: the instance of the dagster.yaml in a given folder (temporary or not).
    with dg.DagsterInstance.local_temp(tempdir=str(home)):
        pass


@contextmanager
def dagster_daemon(env: dict[str, str], folder: Path, sig: int = signal.SIGTERM
                   ) -> Iterator[tuple[subprocess.Popen, dg.DagsterInstance]]:
    """`dagster-daemon run` on the code location (``folder/workspace.yaml``), with ``env``
    (its ``DAGSTER_HOME`` gets the project's dagster.yaml and its storage first), and the
    instance it runs on; this
    process's DAGSTER_HOME points there meanwhile. The daemon runs in a session of its own
    and is stopped with ``sig`` to its whole process group."""
    import dagster as dg

    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    create_dagster_storage(home)
    workspace = folder / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - python_module:\n      module_name: definitions\n"
                         f"      working_directory: {ROOT}\n")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    old = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            yield daemon, instance
    finally:
        if old is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = old
        os.killpg(daemon.pid, sig)
        daemon.wait(timeout=30)
