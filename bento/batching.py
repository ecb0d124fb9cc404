"""Request batching: requests that arrive together are scored together.

Each request is queued and one drain task on the event loop computes the features and
scores of everything queued in one ``compute_features`` call, one ``predict`` and one write
to the online store, which commits every decision before any of the drain's answers is sent
(see fraudkit/store/log.py). An idle service scores a request as soon as it arrives (no batching
window); a busy one amortizes the per-call cost. Everything runs on the event loop thread
in arrival order.

A request travels as a list of plain tuples (:data:`fraudkit.store.StreamRow`), not
arrays or objects: building one per request is the cheapest there is, and one drain turns
all of them into columns at once (:meth:`fraudkit.online.Requests.from_rows`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from bento.metrics import (
    DEGRADED,
    DRAIN_SIZE,
    FALLBACKS,
    MODEL_INFO,
    SCORE_SECONDS,
    SCORED,
    STORE_BUFFERED,
    STORE_RESENT,
)
from fraudkit.online import OnlineScorer, Requests, Scored
from fraudkit.store import StreamRow

log = logging.getLogger("fraud_service")


class Drainer:
    """Queue of pending requests drained by one event-loop task (see the module docstring).

    Each request waits for the list of its answers (JSON-ready dicts), built once per drain.
    """

    def __init__(self, scorer: OnlineScorer) -> None:
        self.scorer = scorer
        self.pending: list[tuple[list[StreamRow], asyncio.Future, int]] = []
        self.scheduled = False
        self.served_version: str | None = None
        self.buffered = 0  # last value of fraud_store_buffered_rows this worker reported
        self.resent = 0  # resent rows of the online store counted in fraud_store_resent_rows

    async def submit(self, rows: list[StreamRow]) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self.pending.append((rows, future, time.time_ns() // 1000))  # received, for the log
        if not self.scheduled:
            self.scheduled = True
            loop.create_task(self._drain_soon())
        return await future

    async def _drain_soon(self) -> None:
        # Two loop turns let requests whose bytes already arrived join this drain; an idle
        # service pays a few microseconds for it, a busy one scores them in one call.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self.drain()

    def drain(self) -> None:
        self.scheduled = False
        pending, self.pending = self.pending, []
        # Rows of one drain are scored in one call. A transaction_id seen again with the same
        # content (a client's retry) is scored once and both callers get that answer; with
        # different content it starts a new call, because compute_features needs distinct ids.
        rows: dict[int, StreamRow] = {}
        received: list[int] = []
        positions: dict[int, int] = {}
        waiters: list[tuple[asyncio.Future, list[int]]] = []
        for new, future, received_us in pending:
            if any(r[0] in rows and rows[r[0]] != r for r in new):
                self._score(list(rows.values()), received, waiters)
                rows, received, positions, waiters = {}, [], {}, []
            for r in new:
                if r[0] not in rows:
                    rows[r[0]] = r
                    received.append(received_us)
                    positions[r[0]] = len(positions)
            waiters.append((future, [positions[r[0]] for r in new]))
        self._score(list(rows.values()), received, waiters)

    def _score(self, rows: list[StreamRow], received: list[int],
               waiters: list[tuple[asyncio.Future, list[int]]]) -> None:
        """Score, log the decisions in the online store (before any answer), answer."""
        if not rows:
            return
        started = time.perf_counter()
        req = Requests.from_rows(rows)
        try:
            scored = self.scorer.score(req, received)
            answers = scored.rows(req)
        except Exception as exc:  # noqa: BLE001 - answer every waiter, never hang
            self._fail(waiters, exc)
            return
        SCORE_SECONDS.observe(time.perf_counter() - started)
        DRAIN_SIZE.observe(len(req))
        self._count(scored)
        for future, picks in waiters:
            if not future.done():
                future.set_result([answers[i] for i in picks])

    @staticmethod
    def _fail(waiters: list[tuple[asyncio.Future, list[int]]], exc: Exception) -> None:
        log.exception("scoring failed", exc_info=exc)
        for future, _ in waiters:
            if not future.done():
                future.set_exception(exc)

    def _count(self, scored: Scored) -> None:
        if scored.model_version != self.served_version:
            if self.served_version is not None:
                MODEL_INFO.labels(model_version=self.served_version).set(0)
            MODEL_INFO.labels(model_version=scored.model_version).set(1)
            self.served_version = scored.model_version
        fallback = "true" if scored.fallback else "false"
        decisions = scored.decisions.tolist()
        for decision in set(decisions):
            SCORED.labels(decision=decision, fallback=fallback,
                          model_version=scored.model_version).inc(decisions.count(decision))
        if scored.fallback:
            FALLBACKS.inc(len(decisions))
        if scored.degraded:
            DEGRADED.inc(len(decisions))
        self.report_store()

    def report_store(self) -> None:
        """Bring ``fraud_store_buffered_rows`` and ``fraud_store_resent_rows`` up to this
        worker's online store. Called after each drain and on each /metrics scrape: the
        refresh thread also flushes the buffer and resends lost rows (after a restart of
        redis-server), between requests. A multiprocess-file write only when a value moved."""
        buffered = self.scorer.decisions.buffered
        if buffered != self.buffered:
            STORE_BUFFERED.set(buffered)
            self.buffered = buffered
        resent = self.scorer.decisions.store.resent_rows
        if resent != self.resent:
            STORE_RESENT.inc(resent - self.resent)
            self.resent = resent
