"""The decision log in front of an :class:`~fraudkit.store.OnlineStore`: rows, buffer, degraded.

The service calls :meth:`DecisionLog.write` once per drain, after scoring, and answers
when it returns. When the store takes the write, the answers are durable, and the next
drain's feature windows see the rows. The write runs on the caller's thread (the event
loop): a writer thread was tried and measured worse, each answer then waiting for the
thread to get the GIL and for the loop to be woken (p50 of paced real traffic 7.0 against
2.8 ms, the same throughput; benchmarks/README.md). When the store cannot take the write
(Redis down, disk full), the service must keep answering: the rows stay in this process's
buffer, the answers say ``"degraded": true``, ``/readyz`` reports not ready (a load
balancer drains the worker), and the background thread calls :meth:`flush` until the store
takes them, in their original order. While degraded, feature reads see the buffer and the
rows this worker had read from the store before the outage, but not the store itself, so a
customer's windows may miss what other workers stored since this one last read it.

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
        "reasons": [None] * n,  # filled by DecisionLog.write
    }
    constant = {"threshold_review": review, "threshold_decline": decline,
                "model_version": model_version, "fallback": fallback,
                "shadow_version": shadow_version, "worker": worker, "degraded": degraded}
    ordered = [columns[c] if c in columns else [constant[c]] * n for c in DECISION_COLUMNS]
    return list(zip(*ordered, strict=True))


class DecisionLog:
    """See the module docstring. Thread-safe: the event loop records, a thread flushes."""

    def __init__(self, store: OnlineStore, max_buffer: int = 1_000_000) -> None:
        self.store = store
        self.max_buffer = max_buffer
        self._buffer: list[tuple] = []
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
        # Newest first (buffered, then stored): a transaction_id found twice counts once,
        # as its first copy, so a retry's latest content wins.
        with self._lock:
            unstored = self._buffer[::-1]
        rows = self._pick(unstored, set(customers), customer_span, set(terminals),
                          terminal_span) if unstored else StreamRows.empty()
        if not self.degraded:
            try:
                return rows.concat(self.store.stream_rows(customers, customer_span, terminals,
                                                          terminal_span)), True
            except StoreUnavailable as exc:
                self._fail(exc)
        # Degraded: the rows this worker read from the store before the outage still count.
        return rows.concat(self.store.seen_rows(customers, customer_span, terminals,
                                                terminal_span)), False

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

    def write(self, rows: list[tuple],
              reasons: Callable[[], Sequence[str | None]] | None = None) -> bool:
        """Write ``rows`` (one drain's decisions) now; False when they were buffered
        instead (degraded).

        ``reasons``, when given, runs first and returns the ``reasons`` column of these
        rows (JSON text or None each), so the reasons land in the same write. If it fails,
        the rows are written without reasons: an explanation never costs a decision."""
        if reasons is not None:
            try:
                texts = reasons()
            except Exception:  # noqa: BLE001 - the decisions are written without them
                log.exception("explaining %d decision(s) failed; logged without reasons",
                              len(rows))
            else:
                rows = [r[:_REASONS] + (text,) + r[_REASONS + 1:]
                        for r, text in zip(rows, texts, strict=True)]
        return self.record(rows)

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
        """Ping the store and do its upkeep (:meth:`OnlineStore.maintain`; the background
        thread calls this between requests), so a worker with no traffic also reports an
        outage on /readyz; True when healthy."""
        if self.degraded:
            return self.flush()
        try:
            self.store.ping()
        except StoreUnavailable as exc:
            self._fail(exc)
            return False
        try:
            self.store.maintain()
        except StoreUnavailable as exc:  # the writes may still go through: not degraded
            log.warning("online store upkeep failed: %s", exc)
        return True

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
