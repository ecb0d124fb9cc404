"""The embedded online store: one SQLite file in WAL mode (``sqlite:///path``).

Why SQLite: it needs no server (``make serve`` and ``make demo`` run with nothing
installed), it is what Feast uses as its embedded online store, and WAL mode lets several
worker processes on one host read while one writes.

Durability: each write is one transaction. With ``synchronous=NORMAL`` (the default) a
committed transaction survives a crash of the process (the WAL is in the OS's page cache
before COMMIT returns); a power loss or kernel crash may lose the commits since the last
WAL checkpoint's fsync. ``?synchronous=FULL`` in the URL fsyncs every commit and loses
nothing to a power loss, at the price of one fsync per drain.

Layout: table ``decisions`` (one row per ``transaction_id``, the columns of
:data:`fraudkit.store.DECISION_SCHEMA`, times in microseconds), covering indexes by
customer and by terminal for the feature reads, an index by day for the daily export;
table ``delivered`` (day -> the newest ``received_at`` already moved to Delta).
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
    OnlineStore,
    StoreError,
    StoreUnavailable,
    StreamRows,
    rows_to_table,
)

_SQL_TYPES = {pa.int64(): "INTEGER", pa.float64(): "REAL", pa.string(): "TEXT",
              pa.bool_(): "INTEGER"}


def _sql_type(field: pa.Field) -> str:
    return "INTEGER" if pa.types.is_timestamp(field.type) else _SQL_TYPES[field.type]


_COLUMNS_SQL = ",\n  ".join(
    f"{f.name} {_sql_type(f)}" + (" PRIMARY KEY" if f.name == "transaction_id" else "")
    for f in DECISION_SCHEMA)
SCHEMA_SQL = f"""
CREATE TABLE IF NOT EXISTS decisions (
  {_COLUMNS_SQL}
);
CREATE INDEX IF NOT EXISTS decisions_by_customer
  ON decisions (customer_id, tx_datetime, terminal_id, tx_amount);
CREATE INDEX IF NOT EXISTS decisions_by_terminal
  ON decisions (terminal_id, tx_datetime, customer_id, tx_amount);
CREATE INDEX IF NOT EXISTS decisions_by_day ON decisions (day, received_at);
CREATE TABLE IF NOT EXISTS delivered (day TEXT PRIMARY KEY, through_us INTEGER NOT NULL,
                                      rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
_INSERT = (f"INSERT OR REPLACE INTO decisions ({', '.join(DECISION_COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in DECISION_COLUMNS)})")
_STREAM = "transaction_id, tx_datetime, customer_id, terminal_id, tx_amount"


class SqliteStore(OnlineStore):
    """See the module docstring. One connection, shared by the process's threads."""

    backend = "sqlite"

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.path = path
        self.location = str(path)
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=10.0)
        self._db.execute("PRAGMA busy_timeout = 10000")
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"cannot switch to WAL mode (journal_mode={mode})")
        self._db.execute(f"PRAGMA synchronous = {synchronous}")
        self._db.executescript(SCHEMA_SQL)

    @classmethod
    def open(cls, url: str, setting: str = "ONLINE_STORE_URL") -> SqliteStore:
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
            store = cls(path, sync)
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

    def _run(self, fn):
        try:
            with self._lock:
                return fn(self._db)
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise StoreUnavailable(f"online store {self.path}: {exc}") from exc

    def write(self, rows: list[tuple]) -> None:
        def do(db: sqlite3.Connection) -> None:
            db.execute("BEGIN")
            db.executemany(_INSERT, rows)
            db.execute("COMMIT")

        self._run(do)

    def stream_rows(self, customers: list[int], terminals: list[int], lo_us: int,
                    hi_us: int) -> StreamRows:
        marks_c = ",".join("?" * len(customers))
        marks_t = ",".join("?" * len(terminals))
        sql = (f"SELECT {_STREAM} FROM decisions WHERE customer_id IN ({marks_c}) "
               f"AND tx_datetime > ? AND tx_datetime <= ? UNION ALL "
               f"SELECT {_STREAM} FROM decisions WHERE terminal_id IN ({marks_t}) "
               f"AND tx_datetime > ? AND tx_datetime <= ?")
        params = (*customers, lo_us, hi_us, *terminals, lo_us, hi_us)
        rows = self._run(lambda db: db.execute(sql, params).fetchall())
        return StreamRows.from_tuples(rows)

    def day_decisions(self, day: str) -> pa.Table:
        sql = f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions WHERE day = ?"
        rows = self._run(lambda db: db.execute(sql, (day,)).fetchall())
        return rows_to_table(rows)

    def day_counts(self) -> dict[str, int]:
        sql = "SELECT day, COUNT(*) FROM decisions GROUP BY day ORDER BY day"
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
            cur = db.execute(
                "DELETE FROM decisions WHERE tx_datetime <= ? AND received_at <= "
                "COALESCE((SELECT through_us FROM delivered d WHERE d.day = decisions.day), "
                "-9223372036854775808)", (horizon,))
            return cur.rowcount

        removed = self._run(do)
        if removed:  # the freed pages are reused by later writes; the WAL is cut back
            self._run(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
        return removed

    def ping(self) -> None:
        self._run(lambda db: db.execute("SELECT 1").fetchone())

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(f"{self.path}{suffix}")
        return total

    def close(self) -> None:
        with self._lock:
            self._db.close()
