"""Start `bentoml serve` for the service tests on a free port (a context manager)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import ROOT, pipeline_env

API_KEY = "test-key"
#: The store holds raw data up to this day; the parity test replays the days after it.
CUTOFF = "2026-06-20"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_service(data_dir: Path, extra_env: dict[str, str] | None = None,
                    ready: bool = True, timeout: float = 90,
                    target: str = "service:FraudService", cwd: Path = ROOT / "bento",
                    ) -> Iterator[str]:
    """Yield the base URL of a running service (``bentoml serve target`` run in ``cwd``: the
    checkout's service, or a built Bento's tag); stop it (by its pid) afterwards."""
    port = free_port()
    env = {**pipeline_env(data_dir), "ONLINE_CHAMPION_POLL_S": "0.2",
           "ONLINE_TABLE_POLL_S": "2", **(extra_env or {})}
    log_path = data_dir.parent / f"service-{port}.log"
    bentoml = str(Path(sys.executable).parent / "bentoml")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [bentoml, "serve", target, "--port", str(port)],
            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the service exited:\n{log_path.read_text()[-4000:]}")
            try:
                code = httpx.get(f"{url}/readyz" if ready else f"{url}/healthz",
                                 timeout=2).status_code
                if code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the service did not get ready in {timeout}s:\n"
                                     f"{log_path.read_text()[-4000:]}")
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
