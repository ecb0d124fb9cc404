"""The decision log in front of an :class:`~fraudkit.store.OnlineStore`: rows, buffer, degraded.

The service calls :meth:`DecisionLog.submit` once per drain, after scoring, and answers
when the write it returns is done. When the store takes the write, the answers are durable.
The write runs on one writer thread, in submission order, so the event loop parses and
scores the next requests while the store commits (sqlite3 and the Redis socket release the
GIL); until it is committed, a submitted row is *pending* and feature reads see it, so the
next drain's windows count it exactly as if the write had finished. When it cannot (Redis
down, disk full), the service must keep answering: the rows stay in this process's buffer,
the answers say ``"degraded": true``, ``/readyz`` reports not ready (a load balancer drains
the worker), and the background thread calls :meth:`flush` until the store takes them, in
their original order. While degraded, feature reads see the buffer but not the store, so a
customer's windows may miss what other workers (or this one, before the outage) stored.

What a crash while degraded loses: the buffered rows live only in memory, so if the
process dies before the store is back, those decisions are not in ``online_predictions``
and later windows of their customers do not count them. ``max_buffer`` bounds the memory;
past it the oldest buffered rows are dropped and counted in :attr:`dropped`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from fraudkit.features import COUNT_COLUMNS, FEATURE_COLUMNS
from fraudkit.store import (
    DECISION_COLUMNS,
    REQUEST_FIELDS,
    OnlineStore,
    Span,
    StoreUnavailable,
    StreamRows,
    day_of,
)

log = logging.getLogger("fraudkit.store")

#: Features logged under their own name (tx_amount is the request's own field).
LOGGED_FEATURES = tuple(c for c in FEATURE_COLUMNS if c not in REQUEST_FIELDS)
_DEGRADED = DECISION_COLUMNS.index("degraded")
_REASONS = DECISION_COLUMNS.index("reasons")
_TIME = DECISION_COLUMNS.index("tx_datetime")
_FIELDS = (0, _TIME, DECISION_COLUMNS.index("customer_id"),
           DECISION_COLUMNS.index("terminal_id"), DECISION_COLUMNS.index("tx_amount"))


def decision_rows(
    request: dict[str, np.ndarray],
    features: dict[str, np.ndarray],
    scores: np.ndarray,
    decisions: Sequence[str],
    *,
    model_version: str,
    thresholds: tuple[float, float] | None,
    fallback: bool,
    shadow: tuple[str, np.ndarray] | None,
    received_us: Sequence[int],
    decided_us: int,
    worker: str,
    degraded: bool,
) -> list[tuple]:
    """Tuples in :data:`~fraudkit.store.DECISION_COLUMNS` order, one per request.

    ``request`` holds the raw fields (``tx_datetime`` as microseconds); counts are logged
    as integers, like the batch features table. The latency of a row is from its
    ``received_us`` (the body parsed) to ``decided_us`` (its decision about to be written).
    """
    n = len(scores)
    times = request["tx_datetime"].tolist()
    review, decline = thresholds if thresholds else (None, None)
    shadow_version, shadow_scores = (shadow[0], shadow[1].tolist()) if shadow else (
        None, [None] * n)
    columns = {
        **{name: request[name].tolist() for name in REQUEST_FIELDS},
        **{name: (features[name].astype(np.int64) if name in COUNT_COLUMNS
                  else features[name]).tolist() for name in LOGGED_FEATURES},
        "score": scores.tolist(),
        "decision": list(decisions),
        "shadow_score": shadow_scores,
        "received_at": list(received_us),
        "latency_ms": [(decided_us - r) / 1000.0 for r in received_us],
        "day": [day_of(t) for t in times],
        "reasons": [None] * n,  # filled on the writer thread (DecisionLog.submit)
    }
    constant = {"threshold_review": review, "threshold_decline": decline,
                "model_version": model_version, "fallback": fallback,
                "shadow_version": shadow_version, "worker": worker, "degraded": degraded}
    ordered = [columns[c] if c in columns else [constant[c]] * n for c in DECISION_COLUMNS]
    return list(zip(*ordered, strict=True))


class DecisionLog:
    """See the module docstring. Thread-safe: the event loop records, a thread flushes."""

    def __init__(self, store: OnlineStore, max_buffer: int = 1_000_000,
                 max_in_flight: int = 2) -> None:
        self.store = store
        self.max_buffer = max_buffer
        #: Writes submitted and not yet done, at most; :meth:`submit` waits past it, so a
        #: store slower than the scoring slows the service down instead of piling up rows.
        self.max_in_flight = max_in_flight
        self._buffer: list[tuple] = []
        self._pending: list[list[tuple]] = []  # submitted, not yet written (oldest first)
        self._writes: list[Future] = []
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decision-writer")
        self._lock = threading.Lock()
        self.degraded = False
        self.last_error: str | None = None
        self.dropped = 0
        self.failed_writes = 0
        self.degraded_since: float | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def stream_rows(self, customers: list[int], customer_span: Span, terminals: list[int],
                    terminal_span: Span) -> tuple[StreamRows, bool]:
        """Stored (and buffered) rows for the feature windows; False when the store could
        not be read, so the features may be incomplete (the answer is then degraded)."""
        # Newest first (pending, then buffered, then stored): a transaction_id found twice
        # counts once, as its first copy, so a retry's latest content wins.
        with self._lock:
            unstored = [r for rows in reversed(self._pending) for r in rows]
            unstored += self._buffer[::-1]
        rows = self._pick(unstored, set(customers), customer_span, set(terminals),
                          terminal_span) if unstored else StreamRows.empty()
        ok = not self.degraded
        if ok:
            try:
                rows = rows.concat(self.store.stream_rows(customers, customer_span, terminals,
                                                          terminal_span))
            except StoreUnavailable as exc:
                self._fail(exc)
                ok = False
        return rows, ok

    @staticmethod
    def _pick(rows: list[tuple], customers: set[int], customer_span: Span,
              terminals: set[int], terminal_span: Span) -> StreamRows:
        if not rows:
            return StreamRows.empty()
        (c_lo, c_hi), (t_lo, t_hi) = customer_span, terminal_span
        picked = [tuple(r[i] for i in _FIELDS) for r in rows
                  if (c_lo < r[_TIME] <= c_hi and r[_FIELDS[2]] in customers)
                  or (t_lo < r[_TIME] <= t_hi and r[_FIELDS[3]] in terminals)]
        return StreamRows.from_tuples(picked)

    def submit(self, rows: list[tuple],
               reasons: Callable[[], Sequence[str | None]] | None = None) -> Future:
        """Write ``rows`` on the writer thread, after every earlier submission; the future's
        result is :meth:`record`'s (False: buffered, degraded). Until then reads see them.

        ``reasons``, when given, runs first on the writer thread and returns the
        ``reasons`` column of these rows (JSON text or None each): TreeSHAP of the reviews
        and declines costs 0.7-1 ms a row, and computed there the event loop goes on
        parsing and scoring the next requests meanwhile (a later drain's write still waits
        its turn). The feature windows need none of it, so reads see the rows at once, as
        without it. If it fails, the rows are written without reasons (an explanation
        never costs a decision)."""
        with self._lock:
            self._pending.append(rows)
            self._writes = [w for w in self._writes if not w.done()]
            oldest = self._writes[0] if len(self._writes) >= self.max_in_flight else None
        if oldest is not None:
            oldest.exception()  # wait for it; its outcome reaches its own caller
        write = self._writer.submit(self._write_pending, rows, reasons)
        with self._lock:
            self._writes.append(write)
        return write

    def _write_pending(self, rows: list[tuple],
                       reasons: Callable[[], Sequence[str | None]] | None = None) -> bool:
        try:
            if reasons is not None:
                self._add_reasons(rows, reasons)
            return self.record(rows)
        finally:
            with self._lock:
                self._pending.remove(rows)

    def _add_reasons(self, rows: list[tuple], reasons: Callable[[], Sequence[str | None]]
                     ) -> None:
        try:
            texts = reasons()
        except Exception:  # noqa: BLE001 - the decisions are written without them
            log.exception("explaining %d decision(s) failed; logged without reasons",
                          len(rows))
            return
        with self._lock:  # in place: ``rows`` is the pending entry reads iterate
            rows[:] = [r[:_REASONS] + (text,) + r[_REASONS + 1:]
                       for r, text in zip(rows, texts, strict=True)]

    def drain(self, timeout: float | None = None) -> None:
        """Wait for every submitted write (at shutdown, before the last flush)."""
        with self._lock:
            writes = list(self._writes)
        for write in writes:
            write.exception(timeout)

    def record(self, rows: list[tuple]) -> bool:
        """Write ``rows`` now; False when they were buffered instead (degraded)."""
        if not self.degraded:
            try:
                self.store.write(rows)
                return True
            except StoreUnavailable as exc:
                self._fail(exc)
        self._keep([r[:_DEGRADED] + (True,) + r[_DEGRADED + 1:] for r in rows])
        return False

    def _fail(self, exc: Exception) -> None:
        with self._lock:
            self.failed_writes += 1
            self.last_error = str(exc)
            if not self.degraded:
                self.degraded = True
                self.degraded_since = time.time()
                log.error("online store unavailable, answering degraded and buffering: %s",
                          exc)

    def _keep(self, rows: list[tuple]) -> None:
        with self._lock:
            self._buffer.extend(rows)
            # A flush may have emptied the buffer and cleared the flag between our check and
            # this append: set it again so these rows are flushed, in order, next time.
            self.degraded = True
            over = len(self._buffer) - self.max_buffer
            if over > 0:
                del self._buffer[:over]
                self.dropped += over
                log.error("decision buffer full: dropped the %d oldest rows", over)

    def check(self) -> bool:
        """Ping the store (the background thread does, between requests), so a worker
        with no traffic also reports an outage on /readyz; True when healthy."""
        if self.degraded:
            return self.flush()
        try:
            self.store.ping()
            return True
        except StoreUnavailable as exc:
            self._fail(exc)
            return False

    def flush(self) -> bool:
        """Write the buffer, oldest first; True when the store is healthy again."""
        if not self.degraded:
            return True
        while True:
            with self._lock:
                batch = self._buffer[:5000]
            try:
                if batch:
                    self.store.write(batch)
                else:
                    self.store.ping()
            except StoreUnavailable as exc:
                self.last_error = str(exc)
                return False
            with self._lock:
                del self._buffer[:len(batch)]
                if not self._buffer:
                    self.degraded = False
                    self.last_error = None
                    log.warning("online store back after %.1fs; buffered rows written",
                                time.time() - (self.degraded_since or time.time()))
                    self.degraded_since = None
                    return True
