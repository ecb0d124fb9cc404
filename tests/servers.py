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
