"""The scorer: features, the champion's scores (or the rules), a shadow challenger's scores
(logged, never answered), the decision log, refresh."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fraudkit import explain, lake
from fraudkit.config import Settings
from fraudkit.features import COUNT_COLUMNS, FEATURE_COLUMNS, feature_matrix
from fraudkit.model import Thresholds, decide
from fraudkit.online.champion import (
    FALLBACK_VERSION,
    ChampionWatcher,
    ShadowWatcher,
    fallback_scores,
)
from fraudkit.online.feature_store import OnlineFeatureStore, Requests
from fraudkit.online.history import load_history, reach_days
from fraudkit.online.predictions import PredictionIndex
from fraudkit.registry import ModelRegistry
from fraudkit.store import open_store
from fraudkit.store.log import DecisionLog, decision_rows

log = logging.getLogger("fraudkit.online")

@dataclass
class Scored:
    """Scores of one call: arrays aligned with the requests."""

    scores: np.ndarray
    decisions: np.ndarray
    model_version: str
    thresholds: Thresholds | None
    fallback: bool
    features: dict[str, np.ndarray]
    #: True when the online store could not be read or written for these requests.
    degraded: bool = False
    #: The shadow model's version and its scores of the same rows (logged, never answered).
    shadow: tuple[str, np.ndarray] | None = None
    #: Each row's reasons (reviews and declines of a model with an explainer), else None;
    #: set by the decision log's write, which logs them with the decisions.
    reasons: list[explain.Reasons | None] | None = None
    #: What explains the reviews and declines of these rows: the model's explainer and
    #: the feature matrix it scored (None: nothing to explain).
    to_explain: tuple[explain.Explainer, np.ndarray] | None = None

    def rows(self, req: Requests) -> list[dict[str, Any]]:
        """JSON-ready answers; counts as ints, the rest as floats (exact repr)."""
        feats = {name: (self.features[name].tolist()) for name in FEATURE_COLUMNS}
        ints = [n for n in FEATURE_COLUMNS if n in COUNT_COLUMNS]
        for name in ints:
            feats[name] = [int(v) for v in feats[name]]
        thresholds = self.thresholds.as_dict() if self.thresholds else None
        ids = req.transaction_id.tolist()
        scores = self.scores.tolist()
        decisions = self.decisions.tolist()
        reasons = self.reasons or [None] * len(ids)
        return [
            {
                "transaction_id": ids[i],
                "score": scores[i],
                "decision": decisions[i],
                "model_version": self.model_version,
                "thresholds": thresholds,
                "fallback": self.fallback,
                "degraded": self.degraded,
                "reasons": explain.as_json(reasons[i]),
                "features": {name: feats[name][i] for name in FEATURE_COLUMNS},
            }
            for i in range(len(ids))
        ]


@dataclass
class OnlineScorer:
    """Features + champion model + fallback + shadow model + decision log, and their
    background refresh.

    Opening the online store is part of construction: a store that cannot be opened is a
    :class:`fraudkit.store.StoreError` naming ``ONLINE_STORE_URL``, so the service refuses
    to start instead of keeping its state in memory. Everything it reads comes from
    ``settings`` (the same :class:`~fraudkit.config.Settings` as the batch path's).
    """

    settings: Settings
    decisions: DecisionLog = field(init=False)
    store: OnlineFeatureStore = field(init=False)
    watcher: ChampionWatcher = field(init=False)
    predictions: PredictionIndex | None = field(init=False, default=None)
    refresh_errors: int = field(init=False, default=0)
    #: Calls whose reasons could not be computed (answered without them).
    explain_errors: int = field(init=False, default=0)
    #: Called with the scorer after what it serves changed: the first load, then a new
    #: feature history, new batch predictions or another model, in the thread that made the
    #: change (the refresh thread), never on the request path. The service's state gauges
    #: are set there (:mod:`bento.metrics` adds itself on import); an error is logged.
    state_listeners: ClassVar[list[Callable[[OnlineScorer], None]]] = []

    def __post_init__(self) -> None:
        s = self.settings
        retention = reach_days(s.label_delay_days)
        self.decisions = DecisionLog(open_store(s.online_store_url, retention_days=retention))
        self.store = OnlineFeatureStore(s.label_delay_days, recent=self.decisions)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.watcher = ChampionWatcher(ModelRegistry.of(s))
        self.shadow = ShadowWatcher(self.watcher.registry)
        self.raw_uri = s.table_uri("raw_transactions")
        self.predictions_uri = s.table_uri("batch_predictions")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # state ------------------------------------------------------------------------------
    def load(self) -> None:
        """First load, in the caller's thread (the service's startup)."""
        self.watcher.poll()
        self.shadow.poll()
        self.refresh_history(force=True)
        self.refresh_predictions(force=True)
        self._state_changed()

    def _state_changed(self) -> None:
        for listener in self.state_listeners:
            try:
                listener(self)
            except Exception:  # noqa: BLE001 - a gauge must not stop scoring or refreshing
                log.exception("state listener %r failed", listener)

    def refresh_history(self, force: bool = False) -> bool:
        options = self.settings.storage_options
        version = lake.table_version(self.raw_uri, options)
        if not force and version == self.store.snapshot.table_version:
            return False
        started = time.perf_counter()
        snap = load_history(self.raw_uri, self.store.label_delay_days,
                            self.settings.online_store_cutoff, options)
        self.store.swap(snap)
        log.info("feature history: %d rows of %s..%s (raw table version %s) in %.2fs",
                 snap.rows, snap.first_day, snap.last_day, snap.table_version,
                 time.perf_counter() - started)
        return True

    def refresh_predictions(self, force: bool = False) -> bool:
        options = self.settings.storage_options
        version = lake.table_version(self.predictions_uri, options)
        current = self.predictions.table_version if self.predictions else None
        if not force and version == current:
            return False
        self.predictions = PredictionIndex.load(self.predictions_uri, options)
        return True

    def start(self) -> None:
        """Poll the registry and the tables in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="online-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.decisions.flush()

    def _run(self) -> None:
        next_tables = time.monotonic() + self.settings.table_poll_s
        while not self._stop.wait(self.settings.champion_poll_s):
            try:
                self.decisions.check()  # flushes the buffer once the store is back
                if self.watcher.poll():
                    self._state_changed()
                self.shadow.poll()
                if time.monotonic() >= next_tables:
                    next_tables = time.monotonic() + self.settings.table_poll_s
                    if self.refresh_history():
                        self._state_changed()
                    if self.refresh_predictions():
                        self._state_changed()
            except Exception:  # noqa: BLE001 - keep serving the state we have
                self.refresh_errors += 1
                log.exception("online refresh failed; serving the previous state")

    @property
    def ready(self) -> bool:
        """Serving champion.json's version, its file intact, the history loaded, and the
        online store taking writes (a degraded worker asks to be drained)."""
        watcher = self.watcher
        return (watcher.serving_champion and watcher.last_error is None
                and self.store.snapshot.loaded and not self.decisions.degraded)

    def status(self) -> dict[str, Any]:
        """What is served, and why it is not ready (``model_error``); no absolute paths."""
        snap = self.store.snapshot
        current = self.watcher.current
        shadow = self.shadow.current  # read once: the refresh thread may swap it
        return {
            "model_version": current.version if current else None,
            "champion_version": self.watcher.champion_version,
            "serving_champion": self.watcher.serving_champion,
            "model_error": self.watcher.last_error,
            "reason_codes": {"top": self.settings.reason_codes,
                             "explainer": bool(current and current.explainer),
                             "error": current.explainer_error if current else None,
                             "failed_calls": self.explain_errors},
            "feature_rows": snap.rows,
            "feature_days": [snap.first_day, snap.last_day],
            "raw_table_version": snap.table_version,
            "online_store": {
                "backend": self.decisions.store.backend,
                "degraded": self.decisions.degraded,
                "buffered_rows": self.decisions.buffered,
                "dropped_rows": self.decisions.dropped,
                "resent_rows": self.decisions.store.resent_rows,
                "error": self.decisions.last_error,
            },
            "shadow": {"version": shadow.version if shadow else None,
                       "error": self.shadow.last_error},
            "worker": self.worker,
            "cutoff": self.settings.online_store_cutoff,
            "predictions_table_version": self.predictions.table_version
            if self.predictions else None,
        }

    # scoring ----------------------------------------------------------------------------
    def score(self, req: Requests, received_us: list[int] | None = None) -> Scored:
        """Features, the champion's scores (or the rules), and the decisions logged.

        The decisions are in the online store (or, degraded, in the buffer) when this
        returns, so the caller may answer, and the next call's feature windows count these
        requests. ``received_us`` is when each request arrived (wall clock, microseconds);
        request ``transaction_id`` values must be distinct.
        """
        feats, read_ok = self.store.features(req)
        scored = self._model_scores(feats)
        scored.degraded = not read_ok
        now_us = time.time_ns() // 1000
        rows = decision_rows(
            {"transaction_id": req.transaction_id, "tx_datetime": req.tx_time_us,
             "customer_id": req.customer_id, "terminal_id": req.terminal_id,
             "tx_amount": req.tx_amount},
            feats, scored.scores, scored.decisions.tolist(),
            model_version=scored.model_version,
            thresholds=(scored.thresholds.review, scored.thresholds.decline)
            if scored.thresholds else None,
            fallback=scored.fallback, shadow=scored.shadow,
            received_us=received_us if received_us is not None else [now_us] * len(req),
            decided_us=now_us, worker=self.worker, degraded=scored.degraded)
        if not self.decisions.write(rows, self._explainer_of(scored)):
            scored.degraded = True
        return scored

    def _model_scores(self, feats: dict[str, np.ndarray]) -> Scored:
        current = self.watcher.current
        matrix = feature_matrix(feats)
        scored = None
        if current is not None:
            try:
                scores = current.model.predict(matrix)
                decisions = decide(scores, current.thresholds)
                scored = Scored(scores, decisions, current.version, current.thresholds, False,
                                feats)
                flagged = explain.EXPLAINED_DECISIONS.intersection(decisions.tolist())
                if current.explainer is not None and self.settings.reason_codes and flagged:
                    scored.to_explain = (current.explainer, matrix)
            except Exception:  # noqa: BLE001 - a model failure must not fail the request
                log.exception("model %s failed to score; using the fallback rules",
                              current.version)
        if scored is None:
            scores, decisions = fallback_scores(feats)
            scored = Scored(scores, decisions, FALLBACK_VERSION, None, True, feats)
        shadow = self.shadow.current
        if shadow is not None and shadow.version != scored.model_version:
            try:  # the same rows, for the log only: the answer stays the champion's
                scored.shadow = (shadow.version, shadow.model.predict(matrix))
            except Exception:  # noqa: BLE001 - the shadow never fails a request
                log.exception("shadow model %s failed to score", shadow.version)
        return scored

    def _explainer_of(self, scored: Scored) -> Callable[[], list[str | None]] | None:
        """The reasons of ``scored``'s reviews and declines, computed by the decision log's
        write: they set ``scored.reasons`` for the answer and return the logged column.
        None when there is nothing to explain."""
        if scored.to_explain is None:
            return None
        explainer, matrix = scored.to_explain

        def reasons() -> list[str | None]:
            try:
                found = explain.reasons(explainer, matrix, scored.decisions.tolist(),
                                        self.settings.reason_codes)
            except Exception:  # an explanation must never fail or change a decision
                self.explain_errors += 1
                raise
            scored.reasons = found
            return [explain.to_text(r) for r in found]

        return reasons
