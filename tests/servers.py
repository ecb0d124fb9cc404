"""Real servers the tests start and stop (see scripts/serving.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts.serving import RedisServer


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
