"""The online store's two backends, on the real thing: a SQLite file and a redis-server."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fraudkit.explain import REASONS_TYPE, to_text
from fraudkit.features import COUNT_COLUMNS, FEATURE_COLUMNS, US_PER_DAY
from fraudkit.store import (
    DECISION_COLUMNS,
    DECISION_SCHEMA,
    OnlineStore,
    StoreError,
    day_of,
    day_start_us,
    open_store,
)
from tests.servers import redis_server

DAY = "2026-06-01"
T0 = day_start_us(DAY) + 10 * 3_600_000_000


def decision(tx_id: int, t_us: int, customer: int, terminal: int, amount: float,
             score: float = 0.25, received_us: int | None = None,
             reasons: str | None = None) -> tuple:
    """A decision row in DECISION_COLUMNS order, with made-up features."""
    values = {
        "transaction_id": tx_id, "tx_datetime": t_us, "customer_id": customer,
        "terminal_id": terminal, "tx_amount": amount,
        **{name: 1 if name in COUNT_COLUMNS else 1.5
           for name in FEATURE_COLUMNS if name != "tx_amount"},
        "score": score, "decision": "approve", "threshold_review": 0.4,
        "threshold_decline": 0.8, "model_version": "v0001", "fallback": False,
        "shadow_version": None, "shadow_score": None,
        "received_at": received_us or t_us, "latency_ms": 1.25, "worker": "test:1",
        "degraded": False, "day": day_of(t_us), "reasons": reasons,
    }
    values["tx_amount"] = amount
    return tuple(values[c] for c in DECISION_COLUMNS)


@pytest.fixture(params=["sqlite", "redis", "redis-unix-socket"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'online' / 'store.sqlite3'}")
        yield s
        s.close()
    else:
        unix = request.param == "redis-unix-socket"
        with redis_server(tmp_path / "redis", unix_socket=unix) as server:
            assert server.url.startswith("unix://" if unix else "redis://")
            s = open_store(server.url)
            yield s
            s.close()


def test_rows_come_back_exactly_and_a_retry_replaces(store: OnlineStore) -> None:
    big = 2**62 + 1  # beyond a double's exact integers: must stay exact
    store.write([decision(1, T0, 42, 7, 10.0), decision(big, T0 + 1, 42, 8, 0.1 + 0.2)])
    day = (T0 - US_PER_DAY, T0 + US_PER_DAY)
    rows = store.stream_rows([42], day, [], day)
    assert sorted(rows.ints[:, 0].tolist()) == [1, big]
    assert sorted(rows.amount.tolist()) == [0.1 + 0.2, 10.0]
    # a retry of id 1 with another customer and amount replaces the first copy everywhere
    store.write([decision(1, T0 + 5, 43, 9, 11.0, score=0.9)])
    upto = (0, T0 + US_PER_DAY)
    assert store.stream_rows([42], upto, [], upto).ints[:, 0].tolist() == [big]
    again = store.stream_rows([43], upto, [9], upto)
    assert set(again.ints[:, 0].tolist()) == {1}
    assert again.amount.tolist()[0] == 11.0
    table = store.day_decisions(DAY)
    assert table.num_rows == 2
    by_id = {r["transaction_id"]: r for r in table.to_pylist()}
    assert by_id[1]["score"] == 0.9 and by_id[1]["customer_id"] == 43
    assert by_id[big]["tx_amount"] == 0.1 + 0.2
    assert store.day_counts() == {DAY: 2}


def test_reasons_come_back_and_rows_of_an_earlier_release_read_as_none(
        store: OnlineStore) -> None:
    """A logged decline's reasons (JSON in the store) come back as the Delta column's
    structs; a row stored before the column existed (one value short) reads as null."""
    why = [{"feature": "tx_amount", "contribution": 2.5},
           {"feature": "terminal_risk_7d", "contribution": 0.125}]
    store.write([decision(1, T0, 42, 7, 10.0, reasons=to_text([(r["feature"],
                                                                 r["contribution"])
                                                                for r in why])),
                 # Redis keeps rows as JSON arrays: one of an earlier release is shorter
                 # (SQLite's own migration is the next test)
                 decision(2, T0 + 1, 42, 7, 10.0)[:-1] if store.backend == "redis"
                 else decision(2, T0 + 1, 42, 7, 10.0)])
    table = store.day_decisions(DAY)
    assert table.schema.field("reasons").type == REASONS_TYPE
    by_id = {r["transaction_id"]: r["reasons"] for r in table.to_pylist()}
    assert by_id == {1: why, 2: None}


def test_an_sqlite_store_of_an_earlier_release_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    old = [f for f in DECISION_SCHEMA if f.name != "reasons"]
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE decisions (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                   + ", ".join(f.name for f in old) + ")")
        db.execute(f"INSERT INTO decisions ({', '.join(f.name for f in old)}) VALUES "
                   f"({', '.join('?' for _ in old)})", decision(7, T0, 1, 2, 3.0)[:-1])
        db.commit()
    store = open_store(f"sqlite:///{path}")
    try:
        store.write([decision(8, T0 + 1, 1, 2, 4.0, reasons='[{"feature":"tx_amount",'
                                                             '"contribution":1.0}]')])
        rows = {r["transaction_id"]: r["reasons"] for r in store.day_decisions(DAY).to_pylist()}
        assert rows == {7: None, 8: [{"feature": "tx_amount", "contribution": 1.0}]}
    finally:
        store.close()


def test_time_bounds_and_terminals(store: OnlineStore) -> None:
    store.write([decision(i, T0 + i * 1000, 5, 70 + i % 2, 1.0) for i in range(10)])
    found = store.stream_rows([5], (T0, T0 + 1000), [70], (T0 + 2000, T0 + 6000))  # (lo, hi]
    assert sorted(found.ints[:, 0].tolist()) == [1, 4, 6]  # customer 5 at T0+1000; terminal
    assert len(store.stream_rows([99], (0, 2**62), [99], (0, 2**62))) == 0


def test_prune_keeps_undelivered_days_and_the_windows(store: OnlineStore) -> None:
    days = [day_start_us("2026-06-01") + d * US_PER_DAY for d in range(50)]
    store.write([decision(d_i + 1, t + 3_600_000_000, 1, 1, 1.0)
                 for d_i, t in enumerate(days)])
    assert store.prune(retention_days=39) == 0  # nothing delivered yet: everything stays
    assert len(store.day_counts()) == 50
    for t in days:
        store.mark_delivered(day_of(t), 1)
    # a retry after its day was delivered: that day waits for its next export
    store.write([decision(1, days[0] + 3_600_000_000, 1, 1, 2.0, received_us=days[-1] * 2)])
    removed = store.prune(retention_days=39)
    counts = store.day_counts()
    assert day_of(days[0]) in counts  # written again after delivery
    assert removed >= 10  # days 2..11 are 39 days or more before the newest (SQLite also
    assert len(counts) == 40  # drops the first copy of the retried id 1)
    assert set(counts.values()) == {1}
    assert store.delivered_days()[day_of(days[-1])] == 1


def test_corrupt_or_unwritable_sqlite_is_a_named_error(tmp_path: Path) -> None:
    bad = tmp_path / "store.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="ONLINE_STORE_URL=.*not a SQLite database"):
        open_store(f"sqlite:///{bad}")
    # Tests run as root, who ignores permissions: a file where the folder should be is
    # unwritable for everyone.
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="ONLINE_STORE_URL=.*cannot be written"):
        open_store(f"sqlite:///{tmp_path / 'file' / 'store.sqlite3'}")
    with pytest.raises(StoreError, match="unknown scheme"):
        open_store("postgres://x")


def test_a_full_disk_is_a_named_error_at_start(tmp_path: Path) -> None:
    """On a file system with no space left, opening the store (which commits once) fails
    with an error naming the setting, not later on the first request. The file system is a
    real 256 KiB tmpfs, filled up (tests and CI run as root, who may mount one)."""
    import subprocess

    mount = tmp_path / "full"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (not root?): {mounted.stderr.strip()}")
    try:
        # unbuffered, so ENOSPC ends the loop (the disk is full) and nothing is left to flush
        with open(mount / "filler", "wb", buffering=0) as filler, \
                contextlib.suppress(OSError):
            while True:
                filler.write(b"x" * 4096)
        with pytest.raises(StoreError, match="ONLINE_STORE_URL=.*full disk"):
            open_store(f"sqlite:///{mount / 'store.sqlite3'}")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_wrong_redis_url_password_or_no_aof_is_a_named_error(tmp_path: Path) -> None:
    with redis_server(tmp_path / "auth", password="s3cret") as server:
        with pytest.raises(StoreError, match=r"ONLINE_STORE_URL=redis://:\*\*\*@.*authentication"):
            open_store(server.url.replace("s3cret", "wrong"))
        with pytest.raises(StoreError, match="(authentication|password)"):
            open_store(f"redis://127.0.0.1:{server.port}/0")
        assert open_store(server.url).location.startswith("redis://:***@")
    with (redis_server(tmp_path / "noaof", appendonly=False) as server,
          pytest.raises(StoreError, match="appendonly no")):
        open_store(server.url)
    with pytest.raises(StoreError, match="cannot reach Redis"):
        open_store(f"redis://127.0.0.1:{server.port}/0")


def test_redis_kill_9_loses_no_written_row(tmp_path: Path) -> None:
    with redis_server(tmp_path / "r") as server:
        store = open_store(server.url)
        store.write([decision(i, T0 + i, 3, 4, 1.0) for i in range(1, 501)])
        server.kill()
        server.start()
        store = open_store(server.url)
        assert store.day_counts() == {DAY: 500}
        assert len(store.stream_rows([3], (0, 2**62), [], (0, 2**62))) == 500


def test_decision_log_buffers_while_redis_is_down_and_writes_in_order(tmp_path: Path) -> None:
    from fraudkit.store.log import DecisionLog

    with redis_server(tmp_path / "r") as server:
        dlog = DecisionLog(open_store(server.url))
        assert dlog.record([decision(1, T0, 3, 4, 1.0)])
        rows, ok = dlog.stream_rows([3], (0, 2**62), [], (0, 2**62))  # this worker reads 1
        assert ok and rows.amount.tolist() == [1.0]
        assert dlog.record([decision(5, T0 + 3, 3, 4, 5.0)])  # stored, never read here
        server.kill()
        # the service keeps answering: rows are buffered; reads see the buffer, then what
        # the worker had read from the store before the outage (not row 5)
        assert not dlog.record([decision(2, T0 + 1, 3, 4, 2.0)])
        assert not dlog.record([decision(2, T0 + 2, 3, 4, 3.0)])  # a retry, later
        assert dlog.degraded and dlog.buffered == 2
        rows, ok = dlog.stream_rows([3], (0, 2**62), [], (0, 2**62))
        # newest first: the features count a transaction_id once, as its first copy
        assert not ok and rows.amount.tolist() == [3.0, 2.0, 1.0]
        assert not dlog.flush()
        server.start()
        assert dlog.flush() and not dlog.degraded and dlog.buffered == 0
        table = dlog.store.day_decisions(DAY)
        by_id = {r["transaction_id"]: r for r in table.to_pylist()}
        assert by_id[2]["tx_amount"] == 3.0 and by_id[2]["degraded"] is True
        assert by_id[1]["degraded"] is False
        rows, ok = dlog.stream_rows([3], (0, 2**62), [], (0, 2**62))
        assert ok and sorted(rows.amount.tolist()) == [1.0, 3.0, 5.0]


def test_a_restart_of_redis_between_two_calls_is_not_an_outage(tmp_path: Path) -> None:
    """After redis-server restarts, the worker's connection is dead though the server is
    back: the next call opens it again instead of answering degraded (a worker that was
    idle during the restart did, and its answer missed rows it had read before)."""
    from fraudkit.store.log import DecisionLog

    with redis_server(tmp_path / "r") as server:
        dlog = DecisionLog(open_store(server.url))
        assert dlog.record([decision(1, T0, 3, 4, 1.0)])
        assert dlog.stream_rows([3], (0, 2**62), [], (0, 2**62))[1]
        for i in (2, 3):  # a restart before a read, then one before a write
            server.kill()
            server.start()
            rows, ok = dlog.stream_rows([3], (0, 2**62), [], (0, 2**62))
            assert ok and not dlog.degraded
            assert sorted(rows.amount.tolist()) == [float(a) for a in range(1, i)]
            server.kill()
            server.start()
            assert dlog.record([decision(i, T0 + i, 3, 4, float(i))]) and not dlog.degraded
        assert dlog.store.day_counts() == {DAY: 3}
        # while it is down, the first call fails fast and the worker degrades
        server.kill()
        started = time.monotonic()
        rows, ok = dlog.stream_rows([3], (0, 2**62), [], (0, 2**62))
        assert not ok and dlog.degraded and time.monotonic() - started < 1.0
        assert sorted(rows.amount.tolist()) == [1.0, 2.0]  # what it had read: not row 3


def test_answered_rows_that_a_restart_of_redis_lost_are_written_again(tmp_path: Path) -> None:
    """With appendfsync everysec, a kill -9 of redis-server while its background fsync runs
    (or a power loss) loses writes Redis had answered. Simulated for certain: Redis restarts
    on a copy of its AOF taken before the last two writes. The worker writes them again when
    its connection comes back, except where the store holds a later answer of the same
    transaction (another worker's, after the restart)."""
    from fraudkit.store.log import DecisionLog
    from tests.servers import restart_on_aof, snapshot_aof

    everything = ([3], (0, 2**62), [], (0, 2**62))
    with redis_server(tmp_path / "r") as server:
        dlog = DecisionLog(open_store(server.url))
        assert dlog.record([decision(i, T0 + i, 3, 4, float(i)) for i in (1, 2)])
        before = snapshot_aof(server, tmp_path / "aof-before")  # rows 1 and 2 on disk
        assert dlog.record([decision(3, T0 + 3, 3, 4, 3.0)])
        assert dlog.record([decision(4, T0 + 4, 3, 4, 4.0, received_us=T0 + 4)])
        assert dlog.store.resent_rows == 0  # the restart lost nothing
        restart_on_aof(server, before)
        other = open_store(server.url)  # another worker
        assert other.day_counts() == {DAY: 2}  # Redis lost rows 3 and 4
        other.write([decision(4, T0 + 4, 3, 4, 40.0, received_us=T0 + 10_000_000)])

        # the background thread's check finds the restart even with no traffic
        assert dlog.check() and not dlog.degraded and dlog.store.resent_rows == 1  # row 3
        by_id = {r["transaction_id"]: r for r in other.day_decisions(DAY).to_pylist()}
        assert {i: r["tx_amount"] for i, r in by_id.items()} == {1: 1.0, 2: 2.0, 3: 3.0,
                                                                 4: 40.0}
        fresh = open_store(server.url)  # a worker that starts now reads each row once
        assert sorted(fresh.stream_rows(*everything).amount.tolist()) == [1.0, 2.0, 3.0, 40.0]
        assert len(fresh.stream_rows(*everything)) == 4
        assert fresh.day_counts() == {DAY: 4}


def test_a_write_is_in_the_next_read_and_a_retry_replaces_its_first_copy(
        store: OnlineStore) -> None:
    """The service writes each drain's decisions before it answers (on the event loop, no
    writer thread): the next drain's windows read them, and a client's retry of a
    transaction_id counts once, with its latest content."""
    from fraudkit.store.log import DecisionLog

    dlog = DecisionLog(store)
    assert dlog.write([decision(1, T0, 5, 6, 1.0)]) is True
    rows, ok = dlog.stream_rows([5], (0, 2**62), [], (0, 2**62))
    assert ok and rows.amount.tolist() == [1.0]
    assert dlog.write([decision(2, T0 + 1, 5, 6, 2.0), decision(1, T0, 5, 6, 1.5)]) is True
    rows, ok = dlog.stream_rows([5], (0, 2**62), [], (0, 2**62))
    assert ok and sorted(rows.amount.tolist()) == [1.5, 2.0]
    assert {r["transaction_id"]: r["tx_amount"]
            for r in store.day_decisions(DAY).to_pylist()} == {1: 1.5, 2: 2.0}


def test_reasons_land_in_the_same_write_and_a_failure_loses_no_decision(
        tmp_path: Path) -> None:
    """The service hands the decision log the reasons to compute with the rows: they land
    in the same write, and an explainer that fails leaves them null without failing or
    changing the decisions."""
    from fraudkit.store.log import DecisionLog

    store = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    dlog = DecisionLog(store)
    try:
        def reasons() -> list[str | None]:
            return ['[{"feature":"tx_amount","contribution":2.0}]', None]

        assert dlog.write([decision(1, T0, 5, 6, 1.0), decision(2, T0 + 1, 5, 6, 2.0)],
                          reasons) is True

        def broken() -> list[str | None]:
            raise RuntimeError("explainer broke")

        assert dlog.write([decision(3, T0 + 2, 5, 6, 3.0)], broken) is True
        logged = {r["transaction_id"]: r["reasons"] for r in store.day_decisions(DAY).to_pylist()}
        assert logged == {1: [{"feature": "tx_amount", "contribution": 2.0}], 2: None, 3: None}
        rows, ok = dlog.stream_rows([5], (0, 2**62), [], (0, 2**62))
        assert ok and sorted(rows.amount.tolist()) == [1.0, 2.0, 3.0]
    finally:
        store.close()


def test_the_sqlite_checkpoint_runs_off_the_write_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes leave the WAL to grow (no checkpoint inside a commit below the safety net).
    ``maintain``, which the service's background thread calls, checkpoints it while the
    writes go on and, past ``WAL_RESTART_FRAMES``, has the next write start the WAL over:
    under steady writes its file stays bounded, where with copying alone it keeps
    growing (the control). The rows stay readable."""
    import sqlite3
    import threading

    from fraudkit.store import sqlite as sqlite_store

    store = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    try:
        for i in range(400):  # ~2,000 pages of WAL: past SQLite's default of 1,000
            store.write([decision(10_000 * i + k, T0 + i, k, k, 1.0) for k in range(25)])
        probe = sqlite3.connect(tmp_path / "store.sqlite3")
        frames = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        probe.close()
        assert 1_000 < frames < sqlite_store.SAFETY_CHECKPOINT_PAGES  # all in the WAL
    finally:
        store.close()

    def steady_writes(name: str, restart_frames: int) -> tuple[int, int]:
        """WAL file bytes after 3 s of writes with ``maintain`` every 20 ms, and the
        number of writes."""
        monkeypatch.setattr(sqlite_store, "WAL_RESTART_FRAMES", restart_frames)
        busy = open_store(f"sqlite:///{tmp_path / name}")
        stop = threading.Event()
        written = [0]

        def write() -> None:
            while not stop.is_set():
                i = written[0]
                busy.write([decision(10 * i + k, T0 + i, k, k, 1.0) for k in range(5)])
                written[0] += 1
                time.sleep(0.0005)  # a busy service's pace: a drain every ~0.5 ms

        writer = threading.Thread(target=write)
        writer.start()
        try:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                busy.maintain()
                time.sleep(0.02)
        finally:
            stop.set()
            writer.join()
        size = (tmp_path / f"{name}-wal").stat().st_size
        rows = sum(busy.day_counts().values())
        busy.close()
        assert rows == written[0] * 5
        return size, written[0]

    bounded, writes = steady_writes("restarted.sqlite3", 500)
    grown, control_writes = steady_writes("copied-only.sqlite3", 10**9)
    assert writes > 1_500 and control_writes > 1_500
    assert bounded < 2 * 500 * 4_200 and grown > 1_500 * 4_096, (bounded, grown)
