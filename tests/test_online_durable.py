"""The online store's guarantees end to end, on the real parts: `bentoml serve` (one or two
workers), a SQLite file or a real redis-server, SIGKILLs of the service's whole process tree
and of redis-server, and the online_predictions asset moving the decision log into Delta."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from assets.consistency import online_consistency
from assets.online import online_predictions
from fraudkit import lake
from fraudkit.config import Settings
from fraudkit.store import open_store
from resources import DeltaLakeResource, MonitoringResource
from resources.online import OnlineStoreResource
from scripts.replay_parity import replay, replay_with_crash
from scripts.serving import BentoServer, RedisServer
from tests.conftest import pipeline_env, private_copy
from tests.servers import redis_server, restart_on_aof, snapshot_aof

pytestmark = pytest.mark.slow
DAYS = ["2026-06-21", "2026-06-22"]


@pytest.fixture
def data_dir(small_pipeline: Path, tmp_path: Path) -> Path:
    return private_copy(small_pipeline, tmp_path)


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, start_date="2026-05-01", end_date="2026-06-29",
                    label_delay_days=7)


def _raw_ids(data_dir: Path, days: list[str]) -> set[int]:
    table = lake.read_days(str(data_dir / "tables" / "raw_transactions"), days,
                           ["transaction_id"])
    return set(table["transaction_id"].to_pylist())


def _move_to_delta(data_dir: Path, url: str, days: list[str]) -> set[int]:
    """Materialize online_predictions for ``days``; the transaction ids now in Delta."""
    for day in days:
        result = dg.materialize(
            [online_predictions], partition_key=day,
            resources={"delta": DeltaLakeResource(root=str(data_dir / "tables")),
                       "online_store": OnlineStoreResource(url=url)})
        assert result.success
        assert all(c.passed for c in result.get_asset_check_evaluations())
    table = lake.dataset(str(data_dir / "tables" / "online_predictions")).to_table(
        columns=["transaction_id"])
    return set(table["transaction_id"].to_pylist())


def _consistency(data_dir: Path, days: list[str]) -> dict[str, float]:
    """Materialize online_consistency for ``days``; each day's match rate (its check must
    pass: every logged decision used the batch path's features and score)."""
    rates = {}
    for day in days:
        result = dg.materialize(
            [online_consistency], partition_key=day,
            resources={"delta": DeltaLakeResource(root=str(data_dir / "tables")),
                       "monitoring": MonitoringResource(workspace="none")})
        (check,) = result.get_asset_check_evaluations()
        assert check.passed, {k: v.value for k, v in check.metadata.items()}
        meta = result.get_asset_materialization_events()[0].materialization.metadata
        assert meta["missing"].value == 0 and meta["landed_not_decided"].value == 0
        rates[day] = meta["match_rate"].value
    return rates


@pytest.mark.parametrize("backend", ["sqlite", "redis-2-workers"])
def test_sigkill_of_the_service_mid_replay_loses_nothing(backend: str, data_dir: Path,
                                                         tmp_path: Path) -> None:
    env = pipeline_env(data_dir)
    with redis_server(tmp_path / "redis") as redis:
        if backend == "sqlite":
            url = f"sqlite:///{data_dir / 'online' / 'store.sqlite3'}"
        else:
            url = redis.url
            env["ONLINE_WORKERS"] = "2"
        env["ONLINE_STORE_URL"] = url
        half = len(_raw_ids(data_dir, DAYS)) // 2
        report = replay_with_crash(DAYS[0], DAYS[-1], crash_at=half, chunk=100,
                                   single_every=10, extra_env=env,
                                   settings=_settings(data_dir))
        print(report)
        assert report.crashed_at == half and report.transactions > 800
        assert report.rate == 1.0, report.mismatches[:10]
        assert report.explained > 0  # reviews and declines, explained as in batch
        assert report.logged == report.transactions
        assert _move_to_delta(data_dir, url, DAYS) == _raw_ids(data_dir, DAYS)
        # features, scores and the logged reasons all equal the batch path's
        assert _consistency(data_dir, DAYS) == {day: 1.0 for day in DAYS}


class Alternating:
    """Keep-alive clients pinned to different workers, used in turn: a sequential replay
    whose consecutive requests land on different workers (the kernel would otherwise hand
    an idle service's connections to one worker)."""

    def __init__(self, url: str, workers: int = 2, attempts: int = 20) -> None:
        from concurrent.futures import ThreadPoolExecutor

        by_worker: dict[str, httpx.Client] = {}
        for _ in range(attempts):
            clients = [httpx.Client(base_url=url, timeout=60) for _ in range(8)]
            with ThreadPoolExecutor(8) as pool:  # simultaneous: both workers accept some
                answers = list(pool.map(lambda c: c.get("/status").json()["worker"], clients))
            for client, worker in zip(clients, answers, strict=True):
                if worker in by_worker:
                    client.close()
                else:
                    by_worker[worker] = client
            if len(by_worker) >= workers:
                break
        assert len(by_worker) >= workers, f"only reached workers {sorted(by_worker)}"
        self.clients = list(by_worker.values())[:workers]
        self.calls = 0

    def post(self, *args, **kwargs) -> httpx.Response:
        self.calls += 1
        return self.clients[self.calls % len(self.clients)].post(*args, **kwargs)

    def close(self) -> None:
        for client in self.clients:
            client.close()


def _wait_ready(url: str, want: int, seconds: float = 20, times: int = 6) -> None:
    """/readyz answers ``want`` ``times`` times in a row (each worker may answer one)."""
    deadline, streak = time.monotonic() + seconds, 0
    while streak < times:
        assert time.monotonic() < deadline, f"/readyz did not turn {want}"
        streak = streak + 1 if httpx.get(f"{url}/readyz", timeout=5).status_code == want else 0
        time.sleep(0.1)


def test_kill_9_of_redis_mid_replay_loses_nothing(data_dir: Path, tmp_path: Path) -> None:
    """Two workers on one Redis, consecutive requests on different workers: exact. Then
    redis-server killed half-way: the workers answer degraded and not ready, buffer the
    decisions, and write them once it is back; the replay stays exact. Last, a restart
    that loses answered decisions: the workers write them again and count them."""
    day = DAYS[0]
    with redis_server(tmp_path / "redis") as redis:
        env = {**pipeline_env(data_dir), "ONLINE_STORE_URL": redis.url, "ONLINE_WORKERS": "2",
               "ONLINE_STORE_CUTOFF": lake.shift_day(day, -1),
               "ONLINE_CHAMPION_POLL_S": "0.1"}
        extra = [{"transaction_id": 900_000_000 + i, "tx_datetime": f"{day}T23:00:00Z",
                  "customer_id": 10**15 + i, "terminal_id": 10**15, "tx_amount": 5.0}
                 for i in range(6)]

        def outage() -> None:
            redis.kill()
            _wait_ready(server.url, 503)
            for tx in extra:  # answered all the same, flagged degraded
                answer = httpx.post(f"{server.url}/score", json=tx, timeout=10)
                assert answer.status_code == 200 and answer.json()["degraded"] is True
            redis.start()
            _wait_ready(server.url, 200)

        with BentoServer(env, tmp_path / "service.log") as server:
            n = len(_raw_ids(data_dir, [day]))
            clients = Alternating(server.url)
            try:
                report = replay(server.url, day, day, _settings(data_dir), chunk=50,
                                single_every=10, crash_at=n // 2, crash=outage,
                                client=clients)  # type: ignore[arg-type]
                resent = _restart_that_loses_answers(redis, server.url, clients, day, tmp_path)
            finally:
                clients.close()
        print(report)
        assert report.rate == 1.0, report.mismatches[:10]
        decisions = open_store(redis.url).day_decisions(day).to_pylist()
        logged = {r["transaction_id"]: r for r in decisions}
        assert set(logged) == (_raw_ids(data_dir, [day]) | {t["transaction_id"] for t in extra}
                               | {t["transaction_id"] for t in resent})
        assert all(logged[t["transaction_id"]]["degraded"] for t in extra)
        assert sum(r["degraded"] for r in decisions) == len(extra)
        assert len({r["worker"] for r in decisions}) == 2  # both workers answered


def _restart_that_loses_answers(redis: RedisServer, url: str, clients: Alternating,
                                day: str, tmp_path: Path) -> list[dict]:
    """redis-server restarts and loses decisions both workers had answered (with appendfsync
    everysec, a kill -9 during its background fsync; here for certain: it restarts on a copy
    of its AOF taken before them). The workers write them again; /metrics counts them.
    Returns the transactions that were lost and written again."""
    before = snapshot_aof(redis, tmp_path / "aof-before")  # everything so far
    _wait_ready(url, 200)
    lost = [{"transaction_id": 900_000_100 + i, "tx_datetime": f"{day}T23:30:00Z",
             "customer_id": 10**15 + 100 + i, "terminal_id": 10**15, "tx_amount": 7.0}
            for i in range(4)]
    for tx in lost:  # on both workers, in turn
        answer = clients.post("/score", json=tx)
        assert answer.status_code == 200 and answer.json()["degraded"] is False
    assert {t["transaction_id"] for t in lost} <= {
        r["transaction_id"] for r in open_store(redis.url).day_decisions(day).to_pylist()}
    restart_on_aof(redis, before)  # without the 4 rows; the workers' refresh threads find it
    # within ONLINE_CHAMPION_POLL_S and write them again (too soon to see them missing)
    deadline = time.monotonic() + 30
    counted = 0.0
    while time.monotonic() < deadline:
        for client in clients.clients:  # a scrape reports the worker that answers it
            text = client.get("/metrics").text
        counted = sum(float(line.split()[-1]) for line in text.splitlines()
                      if line.startswith("fraud_store_resent_rows_total"))
        if counted >= len(lost):
            break
        time.sleep(0.2)
    assert counted == len(lost)  # each written again once: Redis held none of them
    statuses = [client.get("/status").json()["online_store"] for client in clients.clients]
    assert sum(s["resent_rows"] for s in statuses) == len(lost)
    assert all(s["resent_rows"] > 0 for s in statuses)  # both workers had answered some
    return lost


def test_a_store_that_cannot_be_opened_stops_the_service_with_a_named_error(
        data_dir: Path, tmp_path: Path) -> None:
    bad = data_dir / "online" / "store.sqlite3"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a database" * 64)
    server = BentoServer(pipeline_env(data_dir), tmp_path / "bad.log")
    with pytest.raises(RuntimeError, match="the service exited"):
        server.start(timeout=60)
    assert "ONLINE_STORE_URL" in server.log_tail() and "not a SQLite database" in \
        server.log_tail()
    env = {**pipeline_env(data_dir), "ONLINE_STORE_URL": "redis://:wrong@127.0.0.1:1/0"}
    server = BentoServer(env, tmp_path / "redis.log")
    with pytest.raises(RuntimeError, match="the service exited"):
        server.start(timeout=60)
    assert "ONLINE_STORE_URL=redis://:***@127.0.0.1:1/0: cannot reach Redis" in \
        server.log_tail()
