"""`make up` / `make down` (scripts/stack.py) for real: the Dagster webserver and daemon, the
online service and the Evidently UI as supervised processes on the small pipeline's data;
a killed process comes back; `make down` leaves nothing running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import psutil
import pytest

from scripts.serving import free_port
from tests.conftest import ROOT, pipeline_env


def state(stack_dir: Path) -> dict:
    return json.loads((stack_dir / "state.json").read_text())


def tree_pids(stack_dir: Path) -> set[tuple[int, float]]:
    return {(pid, created) for proc in state(stack_dir)["processes"].values()
            for pid, created in proc["tree"]}


def running(pid: int, created: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - created) < 1e-3 and proc.status() != "zombie"
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_make_up_supervises_the_stack_and_make_down_stops_it(
        small_pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(small_pipeline, data_dir)
    stack_dir = tmp_path / "stack"
    ports = {"PORT": free_port(), "DAGSTER_PORT": free_port(), "EVIDENTLY_UI_PORT": free_port()}
    env = {**pipeline_env(data_dir), "STACK_DIR": str(stack_dir),
           **{k: str(v) for k, v in ports.items()}}

    def make(target: str) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "-s", target], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=420)

    seen: set[tuple[int, float]] = set()
    try:
        started = make("up")
        assert started.returncode == 0, started.stdout + started.stderr
        for port in ports.values():
            assert f"http://127.0.0.1:{port}" in started.stdout, started.stdout
        service = f"http://127.0.0.1:{ports['PORT']}"
        assert httpx.get(f"http://127.0.0.1:{ports['DAGSTER_PORT']}/server_info").is_success
        assert httpx.get(f"{service}/healthz").is_success
        assert httpx.get(f"{service}/readyz").is_success  # a champion to serve
        assert httpx.get(f"http://127.0.0.1:{ports['EVIDENTLY_UI_PORT']}/").is_success
        monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
        with dg.DagsterInstance.get() as instance:
            assert instance.get_daemon_heartbeats(), "the daemon wrote no heartbeat"
        seen |= tree_pids(stack_dir)

        # A crash of `bentoml serve` alone: its worker (a session of its own) lives on and
        # must go too before the service is started again on the same port.
        before = state(stack_dir)["processes"]["service"]
        orphans = [(pid, created) for pid, created in before["tree"] if pid != before["pid"]]
        assert orphans, before
        os.kill(before["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            now = state(stack_dir)["processes"]["service"]
            if now["restarts"] == 1 and now["status"] == "healthy":
                break
            time.sleep(1)
        else:
            pytest.fail(f"the service did not come back: {state(stack_dir)}")
        assert now["pid"] != before["pid"]
        assert not any(running(pid, created) for pid, created in orphans)
        assert httpx.get(f"{service}/readyz").is_success
        assert httpx.post(f"{service}/score", json={
            "transaction_id": 1, "tx_datetime": "2026-06-29T12:00:00Z", "customer_id": 1,
            "terminal_id": 1, "tx_amount": 12.5}).is_success
        seen |= tree_pids(stack_dir)
        assert all(p["restarts"] == 0 for name, p in state(stack_dir)["processes"].items()
                   if name != "service")
    finally:
        stopped = make("down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not [pid for pid, created in seen if running(pid, created)]
    listening = {c.laddr.port for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN}
    assert not listening & set(ports.values())
    assert "the stack is down" in stopped.stdout
    after = subprocess.run([sys.executable, "-m", "scripts.stack", "status"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    assert after.returncode == 3 and "not running" in after.stdout
