"""Start `bentoml serve` for the service tests on a free port (a context manager)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scripts.serving import PROJECT_ROOT, BentoServer
from tests.conftest import pipeline_env

API_KEY = "test-key"
#: The store holds raw data up to this day; the parity test replays the days after it.
CUTOFF = "2026-06-20"


@contextmanager
def running_service(data_dir: Path, extra_env: dict[str, str] | None = None,
                    ready: bool = True, timeout: float = 90,
                    target: str = "service:FraudService", cwd: Path = PROJECT_ROOT / "bento",
                    ) -> Iterator[str]:
    """Yield the base URL of a running service (``bentoml serve target`` run in ``cwd``: the
    checkout's service, or a built Bento's tag); stop its whole process tree afterwards."""
    env = {**pipeline_env(data_dir), "ONLINE_CHAMPION_POLL_S": "0.2",
           "ONLINE_TABLE_POLL_S": "2", **(extra_env or {})}
    server = BentoServer(env, data_dir.parent / "service.log", target=target, cwd=cwd)
    try:
        server.start(ready=ready, timeout=timeout)
    except RuntimeError as exc:
        raise AssertionError(str(exc)) from None
    try:
        yield server.url
    finally:
        server.stop()
