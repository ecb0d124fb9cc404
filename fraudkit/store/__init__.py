"""The online store: every transaction the service scored, with the decision it got.

One write per drain of concurrent requests records, durably and *before* their answers are
sent, both what the feature windows need (id, time, customer, terminal, amount) and the
decision log (the request, the 15 features by name, score, decision, thresholds, model
version, fallback, shadow model, received time, latency, worker). Feature lookups read the
same rows back, so after a crash or restart of any worker the windows are exact at once,
and several workers (or replicas) sharing one store see each other's traffic.

Two backends behind one small interface (:class:`OnlineStore`), chosen by
``ONLINE_STORE_URL``:

* ``sqlite:///path/to/store.sqlite3`` (the embedded default, under ``DATA_DIR/online``):
  WAL mode, ``synchronous=NORMAL``; survives a crash of the process, a power loss may lose
  the last commits (see :mod:`fraudkit.store.sqlite`);
* ``redis://[:password@]host:port/db``: a real ``redis-server`` with AOF on, shared by every
  worker and replica (see :mod:`fraudkit.store.redis`).

Plain Python (sqlite3 from the standard library, redis-py): no framework imports.
"""

from __future__ import annotations

import datetime as dt
import functools
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from fraudkit.explain import REASONS_TYPE, from_text
from fraudkit.features import COUNT_COLUMNS, FEATURE_COLUMNS, US_PER_DAY

if TYPE_CHECKING:
    from fraudkit.store.recent import RecentRows

#: The request fields of the raw contract (no label), in this order everywhere.
REQUEST_FIELDS: tuple[str, ...] = (
    "transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount")

_TS = pa.timestamp("us", tz="UTC")

#: One logged decision: the columns of the ``online_predictions`` Delta table, in order.
#: Stores keep them as plain values (times as microseconds since the epoch).
DECISION_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.int64()),
        ("tx_datetime", _TS),
        ("customer_id", pa.int64()),
        ("terminal_id", pa.int64()),
        ("tx_amount", pa.float64()),
        # the features by name; tx_amount, the first, is the request's own field above
        *[(name, pa.int64() if name in COUNT_COLUMNS else pa.float64())
          for name in FEATURE_COLUMNS if name not in REQUEST_FIELDS],
        ("score", pa.float64()),
        ("decision", pa.string()),
        ("threshold_review", pa.float64()),
        ("threshold_decline", pa.float64()),
        ("model_version", pa.string()),
        ("fallback", pa.bool_()),
        ("shadow_version", pa.string()),
        ("shadow_score", pa.float64()),
        ("received_at", _TS),
        ("latency_ms", pa.float64()),
        ("worker", pa.string()),
        ("degraded", pa.bool_()),
        ("day", pa.string()),
        # Last, so rows stored by an earlier release (without it) read as null: the top
        # features behind a review or decline (fraudkit.explain); stores keep it as JSON.
        ("reasons", REASONS_TYPE),
    ]
)
DECISION_COLUMNS: tuple[str, ...] = tuple(DECISION_SCHEMA.names)
#: Columns kept as microseconds since the epoch inside a store.
TIME_COLUMNS = frozenset({"tx_datetime", "received_at"})
#: Columns kept as JSON text inside a store.
JSON_COLUMNS = frozenset({"reasons"})

#: ``(lo, hi)``: times (microseconds) with ``lo < time <= hi``.
Span = tuple[int, int]

#: The field order of a :data:`StreamRow`.
STREAM_FIELDS = ("transaction_id", "tx_time_us", "customer_id", "terminal_id", "tx_amount")
#: A stream row: what the feature windows need of one transaction, as a plain tuple in
#: :data:`STREAM_FIELDS` order (the time in microseconds since the epoch). Declared once,
#: here: the service keeps each request as one (``bento``), ``Requests.from_rows``
#: (fraudkit.online) takes them, and the stores keep them and read them back. A tuple, not a
#: NamedTuple or dataclass, on purpose: the service builds and compares one per request on
#: its hot path, and a plain tuple is the cheapest to build.
StreamRow = tuple[int, int, int, int, float]

_EPOCH = dt.date(1970, 1, 1)


def day_of(time_us: int) -> str:
    """The UTC day (``YYYY-MM-DD``, the partition key) of a time in microseconds."""
    return _day_name(time_us // US_PER_DAY)


@functools.lru_cache(maxsize=4096)
def _day_name(day: int) -> str:
    """Cached: every logged decision needs its day, and they fall on few days."""
    return (_EPOCH + dt.timedelta(days=day)).isoformat()


def day_start_us(day: str) -> int:
    return (dt.date.fromisoformat(day) - _EPOCH).days * US_PER_DAY


class StoreError(RuntimeError):
    """The online store cannot be opened or used; the message names the setting."""


class StoreUnavailable(StoreError):
    """A read or write failed at run time (server down, disk full): the service degrades."""


class StreamRows:
    """Column arrays of stored stream rows (see :data:`StreamRow`)."""

    __slots__ = ("ints", "amount")

    def __init__(self, ints: np.ndarray, amount: np.ndarray) -> None:
        self.ints = ints  # [N, 4] int64: transaction_id, tx_time_us, customer_id, terminal_id
        self.amount = amount  # [N] float64

    @classmethod
    def from_tuples(cls, rows: list[StreamRow]) -> StreamRows:
        """Columns of :data:`StreamRow` tuples (the stores read their rows back as these)."""
        if not rows:
            return cls.empty()
        ints = np.array([r[:4] for r in rows], dtype=np.int64)
        return cls(ints, np.array([r[4] for r in rows], dtype=np.float64))

    @classmethod
    def empty(cls) -> StreamRows:
        return cls(np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.float64))

    def __len__(self) -> int:
        return len(self.amount)

    def concat(self, other: StreamRows) -> StreamRows:
        if not len(other):
            return self
        if not len(self):
            return other
        return StreamRows(np.vstack([self.ints, other.ints]),
                          np.concatenate([self.amount, other.amount]))


class OnlineStore(ABC):
    """Where scored transactions and their decisions live (see the module docstring).

    ``write`` is the only call on the request path that must succeed for an answer to be
    durable; it raises :class:`StoreUnavailable` when it cannot commit, and the caller
    keeps the rows to write again later. ``rows`` are tuples in :data:`DECISION_COLUMNS`
    order (times as microseconds); a ``transaction_id`` written again replaces its earlier
    row (a client's retry is one decision: the latest answer).
    """

    #: ``sqlite`` or ``redis``: shown in /status and the metrics.
    backend: str = ""
    #: Where it is, without secrets (a password in a Redis URL is masked).
    location: str = ""
    #: The stream rows this process has read (both backends tail the store into one).
    recent: RecentRows | None = None
    #: Answered rows the store had lost and this process wrote again (Redis: a restart
    #: that lost the end of its AOF; see fraudkit/store/redis.py); /status shows it.
    resent_rows: int = 0

    @abstractmethod
    def write(self, rows: list[tuple]) -> None:
        """Commit ``rows`` durably (one transaction / one round trip)."""

    @abstractmethod
    def stream_rows(self, customers: list[int], customer_span: Span, terminals: list[int],
                    terminal_span: Span) -> StreamRows:
        """Stored rows of these customers with ``lo < time <= hi`` of ``customer_span``,
        and of these terminals within ``terminal_span`` (a row may come twice)."""

    def seen_rows(self, customers: list[int], customer_span: Span, terminals: list[int],
                  terminal_span: Span) -> StreamRows:
        """The rows of :meth:`stream_rows` that this process has already read, without
        asking the store: what a worker still knows while the store is unreachable."""
        if self.recent is None:
            return StreamRows.empty()
        return self.recent.rows_for(customers, customer_span, terminals, terminal_span)

    @abstractmethod
    def day_decisions(self, day: str) -> pa.Table:
        """Every decision logged for ``day`` (by ``tx_datetime``), as :data:`DECISION_SCHEMA`."""

    @abstractmethod
    def day_counts(self) -> dict[str, int]:
        """Decisions held per day."""

    @abstractmethod
    def mark_delivered(self, day: str, rows: int) -> None:
        """Record that ``day``'s decisions reached the Delta table (see :meth:`prune`)."""

    @abstractmethod
    def delivered_days(self) -> dict[str, int]:
        """Days delivered to Delta, with the row count delivered."""

    @abstractmethod
    def prune(self, retention_days: int) -> int:
        """Drop rows that no window and no undelivered day needs; the rows dropped.

        A row is needed while its day is not delivered, or while it lies within
        ``retention_days`` of the newest stored transaction (the windows' look-back)."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""

    def maintain(self) -> None:
        """Upkeep that must stay off the request path, called between requests by the
        service's background thread (SQLite: the WAL checkpoint); none by default."""
        return

    @abstractmethod
    def size_bytes(self) -> int:
        """Bytes the store uses for its data (file size or Redis memory of its keys)."""

    @abstractmethod
    def close(self) -> None: ...


def rows_to_table(rows: list[tuple]) -> pa.Table:
    """Stored decision tuples (times in microseconds, reasons as JSON) as a
    :data:`DECISION_SCHEMA` table. A row stored by an earlier release lacks the last
    columns; they read as null."""
    width = len(DECISION_COLUMNS)
    rows = [r if len(r) == width else tuple(r) + (None,) * (width - len(r)) for r in rows]
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in
                                                                    DECISION_COLUMNS]
    arrays = []
    for name, values in zip(DECISION_COLUMNS, columns, strict=True):
        field = DECISION_SCHEMA.field(name)
        if name in TIME_COLUMNS:
            arrays.append(pa.array(values, pa.int64()).cast(field.type))
        elif name in JSON_COLUMNS:
            arrays.append(pa.array([from_text(v) for v in values], field.type))
        elif pa.types.is_boolean(field.type):  # SQLite keeps booleans as 0/1
            arrays.append(pa.array([None if v is None else bool(v) for v in values],
                                   pa.bool_()))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=DECISION_SCHEMA)


def open_store(url: str, setting: str = "ONLINE_STORE_URL",
               retention_days: int = 39) -> OnlineStore:
    """The store at ``url``, checked to be readable *and* writable now.

    Raises :class:`StoreError` naming ``setting`` when it is not: a corrupt or unwritable
    SQLite file, a wrong Redis host, port or password. Never falls back to memory: a
    service that silently kept its state in memory would lose it at the next crash.
    ``retention_days`` is the windows' reach (look-back + margin, 39 days with the default
    label delay), which the Redis backend trims to on write.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from fraudkit.store.sqlite import SqliteStore

        return SqliteStore.open(url, setting, retention_days)
    if scheme in ("redis", "rediss", "unix"):
        from fraudkit.store.redis import RedisStore

        return RedisStore.open(url, setting, retention_days)
    raise StoreError(f"{setting}={url!r}: unknown scheme {scheme!r}; use "
                     "sqlite:///path/to/store.sqlite3 or redis://[:password@]host:port/db")
