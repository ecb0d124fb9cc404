"""The real servers the tests and benchmarks start (``scripts/serving.py``) survive a port
that another process takes between :func:`free_port` and the server's own bind, and say
why when they cannot start."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import redis

from scripts.serving import AzuriteServer, BentoServer, PostgresServer, RedisServer
from tests.conftest import pipeline_env

Server = TypeVar("Server", RedisServer, PostgresServer, AzuriteServer)


@contextmanager
def taken_port(port: int = 0) -> Iterator[int]:
    """A localhost port (``port``, or any free one) that another process listens on, as
    when a free port is lost in a race."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield sock.getsockname()[1]


@contextmanager
def started_on_a_taken_port(server: Server) -> Iterator[Server]:
    """``server`` started after another process took its port: it must have moved."""
    with taken_port() as port:
        server.port = port
        server.start()
        try:
            assert server.port != port
            yield server
        finally:
            server.stop()


def test_redis_moves_to_a_fresh_port_when_its_port_is_taken_before_it_binds(
        tmp_path: Path) -> None:
    with started_on_a_taken_port(RedisServer(tmp_path)) as server:
        assert redis.Redis.from_url(server.url).ping()


def test_a_restarted_redis_keeps_its_port_and_says_why_it_cannot_bind(tmp_path: Path) -> None:
    """Clients hold the URL of a restarted server, so a restart never moves it: a taken port
    is an error carrying Redis's own words."""
    server = RedisServer(tmp_path)
    server.start()
    port = server.port
    server.kill()
    try:
        with taken_port(port), pytest.raises(RuntimeError, match="Address already in use"):
            server.start()
        assert server.port == port
    finally:
        server.stop()


def test_azurite_moves_to_a_fresh_port_when_its_port_is_taken_before_it_binds(
        tmp_path: Path) -> None:
    with started_on_a_taken_port(AzuriteServer(tmp_path)) as server:
        assert httpx.get(f"{server.endpoint}?comp=list", timeout=5).status_code in (200, 403)
        assert "EADDRINUSE" in (tmp_path / "azurite.log").read_text()


def test_the_service_moves_to_a_fresh_port_unless_its_port_was_given(tmp_path: Path) -> None:
    """`bentoml serve` on a port taken meanwhile: a port of the server's own choosing moves
    (the service has no model here, so it is live, not ready); a port the caller gave stays,
    and the error carries BentoML's words."""
    env = pipeline_env(tmp_path / "data")
    with taken_port() as port:
        server = BentoServer(env, tmp_path / "moved.log")
        server.port = port
        server.start(ready=False, timeout=60)
        try:
            assert server.port != port and server.url.endswith(f":{server.port}")
            assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
        finally:
            server.stop()
        given = BentoServer(env, tmp_path / "given.log", port=port)
        with pytest.raises(RuntimeError, match="Address already in use"):
            given.start(ready=False, timeout=60)
        assert given.port == port


def test_postgres_moves_to_a_fresh_port_when_its_port_is_taken_before_it_binds() -> None:
    with started_on_a_taken_port(PostgresServer()) as server:
        assert "Address already in use" in server.log_path.read_text()
        ready = subprocess.run([str(server.bindir / "psql"), server.url, "-tAc",
                                "select current_database()"],
                               capture_output=True, text=True, timeout=30)
        assert ready.stdout.strip() == "dagster", ready.stderr
