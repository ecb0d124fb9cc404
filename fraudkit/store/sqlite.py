"""The embedded online store: one SQLite file in WAL mode (``sqlite:///path``).

Why SQLite: it needs no server (``make serve`` and ``make demo`` run with nothing
installed), it is what Feast uses as its embedded online store, and WAL mode lets several
worker processes on one host read while one writes.

Durability: each write is one transaction. With ``synchronous=NORMAL`` (the default) a
committed transaction survives a crash of the process (the WAL is in the OS's page cache
before COMMIT returns); a power loss or kernel crash may lose the commits since the last
WAL checkpoint's fsync. ``?synchronous=FULL`` in the URL fsyncs every commit and loses
nothing to a power loss, at the price of one fsync per drain.

Layout: table ``decisions``, append-only: ``seq`` (its order) and the columns of
:data:`fraudkit.store.DECISION_SCHEMA` (times in microseconds); indexes by
``transaction_id`` and by day, both nearly in append order. A retry is a new row; the
latest ``seq`` of a ``transaction_id`` is its decision. Table ``delivered``: day -> the
newest ``received_at`` already moved to Delta.

Why append-only: indexes by customer and terminal take random keys, and each commit then
rewrites a page per row per index in the WAL; measured, that tripled a drain's write time
(0.3 ms for 8 rows against 0.05 ms appending). Instead each worker tails the table (``seq``
greater than the last it saw, one indexed range read per feature lookup) into an in-memory
:class:`~fraudkit.store.recent.RecentRows` and answers feature reads from there. Workers
sharing the file see each other's rows at their next read; a restarted worker reads the
rows within the windows' reach back at start.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa

from fraudkit.features import US_PER_DAY
from fraudkit.store import (
    DECISION_COLUMNS,
    DECISION_SCHEMA,
    JSON_COLUMNS,
    OnlineStore,
    Span,
    StoreError,
    StoreUnavailable,
    StreamRows,
    rows_to_table,
)
from fraudkit.store.recent import RecentRows

#: WAL pages past which a commit checkpoints anyway (~80 MB): only when ``maintain`` is
#: not called, or falls far behind (see there).
SAFETY_CHECKPOINT_PAGES = 20_000
#: WAL frames (pages) past which ``maintain`` has the WAL started over (~16 MB).
WAL_RESTART_FRAMES = 4_000
_SQL_TYPES = {pa.int64(): "INTEGER", pa.float64(): "REAL", pa.string(): "TEXT",
              pa.bool_(): "INTEGER"}


def _sql_type(field: pa.Field) -> str:
    if field.name in JSON_COLUMNS:
        return "TEXT"
    return "INTEGER" if pa.types.is_timestamp(field.type) else _SQL_TYPES[field.type]


_COLUMNS_SQL = ",\n  ".join(f"{f.name} {_sql_type(f)}" for f in DECISION_SCHEMA)
SCHEMA_SQL = f"""
CREATE TABLE IF NOT EXISTS decisions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  {_COLUMNS_SQL}
);
CREATE INDEX IF NOT EXISTS decisions_by_id ON decisions (transaction_id, seq);
CREATE INDEX IF NOT EXISTS decisions_by_day ON decisions (day);
CREATE TABLE IF NOT EXISTS delivered (day TEXT PRIMARY KEY, through_us INTEGER NOT NULL,
                                      rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
_INSERT = (f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in DECISION_COLUMNS)})")
_STREAM = "seq, transaction_id, tx_datetime, customer_id, terminal_id, tx_amount"
#: The rows that are decisions: the latest of each transaction_id.
_LATEST = ("seq = (SELECT MAX(seq) FROM decisions AS newer "
           "WHERE newer.transaction_id = decisions.transaction_id)")


class SqliteStore(OnlineStore):
    """See the module docstring. Three connections, each behind its own lock: one for
    :meth:`write`, one for :meth:`maintain`'s checkpoints (the service's background
    thread), one for everything else, so a read (an export, a status) never waits for a
    commit or a checkpoint (WAL readers never wait for the writer)."""

    backend = "sqlite"

    def __init__(self, path: Path, synchronous: str = "NORMAL",
                 retention_days: int = 39) -> None:
        self.path = path
        self.location = str(path)
        self.synchronous = synchronous
        self.retention_days = retention_days
        self.recent = RecentRows(retention_days)
        self._seen = 0  # the last seq tailed into ``recent``
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._db = self._connect()
        self._db.executescript(SCHEMA_SQL)
        self._add_new_columns()
        self._wdb = self._connect()
        # The write connection checkpoints only as a safety net (see ``maintain``).
        self._wdb.execute(f"PRAGMA wal_autocheckpoint = {SAFETY_CHECKPOINT_PAGES}")
        self._cdb: sqlite3.Connection | None = None  # maintain's own, opened on first use
        self._checkpoint_lock = threading.Lock()

    def _add_new_columns(self) -> None:
        """A store written by an earlier release lacks the newer decision columns (e.g.
        ``reasons``): add them, null for the rows already there."""
        have = {row[1] for row in self._db.execute("PRAGMA table_info(decisions)")}
        for field in DECISION_SCHEMA:
            if field.name not in have:
                self._db.execute(f"ALTER TABLE decisions ADD COLUMN {field.name} "
                                 f"{_sql_type(field)}")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=10.0)
        db.execute("PRAGMA busy_timeout = 10000")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"cannot switch to WAL mode (journal_mode={mode})")
        db.execute(f"PRAGMA synchronous = {self.synchronous}")
        return db

    @classmethod
    def open(cls, url: str, setting: str = "ONLINE_STORE_URL",
             retention_days: int = 39) -> SqliteStore:
        """Open (creating if needed) and prove it writable with one real commit."""
        parts = urlsplit(url)
        raw_path = parts.path if parts.netloc in ("", "localhost") else None
        if not raw_path or raw_path == "/":
            raise StoreError(f"{setting}={url!r}: expected sqlite:///absolute/path/store.sqlite3")
        path = Path("/" + raw_path.lstrip("/")) if raw_path.startswith("//") else Path(raw_path)
        sync = parse_qs(parts.query).get("synchronous", ["NORMAL"])[0].upper()
        if sync not in ("NORMAL", "FULL"):
            raise StoreError(f"{setting}={url!r}: synchronous must be NORMAL or FULL")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            store = cls(path, sync, retention_days)
            with store._lock:
                store._db.execute("BEGIN IMMEDIATE")
                store._db.execute("INSERT OR REPLACE INTO meta VALUES ('opened_by', ?)",
                                  (f"{os.uname().nodename}:{os.getpid()}",))
                store._db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            hint = ("is not a SQLite database (corrupt?): move it aside"
                    if "not a database" in str(exc) or "malformed" in str(exc) else
                    "cannot be written (permissions, read-only or full disk?)")
            raise StoreError(f"{setting}={url!r}: the online store {path} {hint} ({exc}); "
                             f"fix it or point {setting} at another file") from exc
        return store

    def _run(self, fn, writer: bool = False):
        db, lock = (self._wdb, self._write_lock) if writer else (self._db, self._lock)
        try:
            with lock:
                return fn(db)
        except sqlite3.Error as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise StoreUnavailable(f"online store {self.path}: {exc}") from exc

    def write(self, rows: list[tuple]) -> None:
        def do(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            db.executemany(_INSERT, rows)
            db.execute("COMMIT")

        self._run(do, writer=True)

    def _tail(self, db: sqlite3.Connection) -> None:
        """Add the rows appended since the last tail (by any process) to ``recent``. The
        first tail reads only the windows' reach back from the newest row."""
        if self._seen == 0:
            # seq first: a row appended meanwhile has a larger seq, so the next tail gets it
            seen, newest = db.execute("SELECT COALESCE(MAX(seq), -1), MAX(tx_datetime) "
                                      "FROM decisions").fetchone()
            start = (newest or 0) - self.retention_days * US_PER_DAY
            rows = db.execute(f"SELECT {_STREAM} FROM decisions WHERE seq <= ? AND "
                              "tx_datetime > ? ORDER BY seq", (seen, start)).fetchall()
            self._seen = seen
        else:
            rows = db.execute(f"SELECT {_STREAM} FROM decisions WHERE seq > ? ORDER BY seq",
                              (self._seen,)).fetchall()
            if rows:
                self._seen = rows[-1][0]
        if rows:
            self.recent.add(r[1:] for r in rows)

    def stream_rows(self, customers: list[int], customer_span: Span, terminals: list[int],
                    terminal_span: Span) -> StreamRows:
        self._run(self._tail)
        return self.recent.rows_for(customers, customer_span, terminals, terminal_span)

    def day_decisions(self, day: str) -> pa.Table:
        sql = (f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions WHERE day = ? AND "
               f"{_LATEST} ORDER BY seq")
        rows = self._run(lambda db: db.execute(sql, (day,)).fetchall())
        return rows_to_table(rows)

    def day_counts(self) -> dict[str, int]:
        sql = f"SELECT day, COUNT(*) FROM decisions WHERE {_LATEST} GROUP BY day ORDER BY day"
        return dict(self._run(lambda db: db.execute(sql).fetchall()))

    def mark_delivered(self, day: str, rows: int) -> None:
        """Delivered up to the newest ``received_at`` of the day now: rows written later
        (a retry after the export) stay until the next export of their day."""
        sql = ("INSERT OR REPLACE INTO delivered (day, through_us, rows) SELECT ?, "
               "COALESCE(MAX(received_at), -9223372036854775808), ? FROM decisions "
               "WHERE day = ?")
        self._run(lambda db: db.execute(sql, (day, rows, day)))

    def delivered_days(self) -> dict[str, int]:
        sql = "SELECT day, rows FROM delivered ORDER BY day"
        return dict(self._run(lambda db: db.execute(sql).fetchall()))

    def prune(self, retention_days: int) -> int:
        def do(db: sqlite3.Connection) -> int:
            newest = db.execute("SELECT MAX(tx_datetime) FROM decisions").fetchone()[0]
            if newest is None:
                return 0
            horizon = newest - retention_days * US_PER_DAY
            db.execute("BEGIN IMMEDIATE")
            # copies replaced by a later retry of the same transaction_id
            superseded = db.execute(f"DELETE FROM decisions WHERE NOT ({_LATEST})").rowcount
            old = db.execute(
                "DELETE FROM decisions WHERE tx_datetime <= ? AND received_at <= "
                "COALESCE((SELECT through_us FROM delivered d WHERE d.day = decisions.day), "
                "-9223372036854775808)", (horizon,)).rowcount
            db.execute("COMMIT")
            return superseded + old

        removed = self._run(do)
        if removed:  # the freed pages are reused by later writes; the WAL is cut back
            self._run(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        return removed

    def ping(self) -> None:
        self._run(lambda db: db.execute("SELECT 1").fetchone())

    def maintain(self) -> None:
        """Checkpoint the WAL into the database file, on a connection of its own.

        SQLite checkpoints by default in the commit that takes the WAL past 1,000 pages:
        on the request path, every few seconds at 500 req/s, that commit then copies ~4 MB
        and fsyncs, and the answers of that drain and of the requests queued behind it
        waited (p99 of paced real traffic 15.9 ms, against 9.6 ms without;
        benchmarks/README.md). The service calls this from its background thread between
        polls instead: a PASSIVE checkpoint copies the WAL into the database while the
        writes go on. Under steady writes the WAL is never wholly copied at the moment a
        write starts, so SQLite would never start it over and the file would keep
        growing; past ``WAL_RESTART_FRAMES`` this therefore makes the next write start it
        over (RESTART: writes wait about a millisecond, the PASSIVE pass having left
        little to copy; TRUNCATE would also cut the file, 76 ms for 64 MB here). The file
        then keeps its size and is reused. The write connection still checkpoints past
        ``SAFETY_CHECKPOINT_PAGES``, should nothing call this."""
        with self._checkpoint_lock:
            try:
                if self._cdb is None:
                    self._cdb = self._connect()
                _, frames, _ = self._cdb.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames >= WAL_RESTART_FRAMES:
                    self._cdb.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"online store {self.path}: checkpoint: {exc}") from exc

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(f"{self.path}{suffix}")
        return total

    def close(self) -> None:
        with self._write_lock:
            self._wdb.close()
        with self._lock:
            self._db.close()
        with self._checkpoint_lock:
            if self._cdb is not None:
                self._cdb.close()
