"""The service's Prometheus metrics, created once per process.

BentoML runs prometheus_client in multiprocess mode: each worker writes its samples to files
in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` (:mod:`bento.api`) merges every process's
files (:func:`exposition`). A metric must therefore be created exactly once per process,
which is why they all live here, at module level, in a module every other one imports by
the same name (``bento.metrics``; see :mod:`bento.service` for how that name is kept when
the service runs from inside ``bento/``).

BentoML's own HTTP metrics are off (see ``bento.api._instrumented``): the routes count and
time themselves (``fraud_http_*``), one sample per request.

Three gauges say how old the served state is, as unix timestamps (Prometheus computes the
age, ``time() - x``, which stays right between scrapes; monitoring/alerts.yml alerts on
them): ``fraud_feature_newest_day_timestamp_seconds``, ``fraud_model_created_timestamp_seconds``
and ``fraud_batch_predictions_newest_day_timestamp_seconds``. :func:`observe_state` sets them
when the scorer's state changes (its first load, a reload, a hot-swap: it is one of
``OnlineScorer.state_listeners``), never per request. Their multiprocess mode is
``mostrecent``: ``/metrics`` shows the value that a worker set last, i.e. the state of the
latest change (a rollback to an older model included). The placeholder that each process
writes when it creates a gauge carries no time, so it never wins, and a worker that BentoML
restarts replaces its dead predecessor's value when it loads. A worker that fails to reload
while the others succeed is not seen here (its log and /status say so). A value of 0 means
that state is not loaded (no history, no model: the fallback rules, no batch_predictions).
"""

from __future__ import annotations

import datetime as dt
import logging
import os

import prometheus_client as prom

from fraudkit.online.scorer import OnlineScorer

log = logging.getLogger("fraud_service")

SCORED = prom.Counter(
    name="fraud_scored_transactions_total", documentation="Transactions scored, by outcome",
    labelnames=["decision", "fallback", "model_version"])
FALLBACKS = prom.Counter(
    name="fraud_fallback_total", documentation="Transactions decided by the fallback rules")
REJECTED = prom.Counter(
    name="fraud_rejected_requests_total", documentation="Requests refused (4xx), by reason",
    labelnames=["reason"])
SCORE_SECONDS = prom.Histogram(
    name="fraud_score_seconds",
    documentation="Time to score one drain: features, model, reasons and the store write",
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5))
DRAIN_SIZE = prom.Histogram(
    name="fraud_drain_transactions", documentation="Transactions scored per drain",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024))
HTTP_REQUESTS = prom.Counter(
    name="fraud_http_requests_total", documentation="Requests by route and status code",
    labelnames=["route", "code"])
HTTP_SECONDS = prom.Histogram(
    name="fraud_http_request_seconds", documentation="Handler latency by route",
    labelnames=["route"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
DEGRADED = prom.Counter(
    name="fraud_degraded_total", documentation="Transactions answered while the online "
    "store could not be read or written (answers flagged degraded)")
STORE_BUFFERED = prom.Gauge(
    name="fraud_store_buffered_rows", documentation="Decisions waiting in a worker's "
    "memory for the online store to come back", multiprocess_mode="sum")
STORE_RESENT = prom.Counter(
    name="fraud_store_resent_rows", documentation="Answered decisions that the online "
    "store had lost (a restart of redis-server that lost the end of its AOF) and a worker "
    "wrote again")
MODEL_INFO = prom.Gauge(
    name="fraud_model_info", documentation="1 for the model version being served",
    labelnames=["model_version"], multiprocess_mode="max")
FEATURE_NEWEST_DAY = prom.Gauge(
    name="fraud_feature_newest_day_timestamp_seconds", documentation="Start (00:00 UTC) of "
    "the newest raw_transactions day in the feature history, unix seconds; 0: none loaded",
    multiprocess_mode="mostrecent")
MODEL_CREATED = prom.Gauge(
    name="fraud_model_created_timestamp_seconds", documentation="When the served model was "
    "registered (its manifest's created_at), unix seconds; 0: no model, the fallback rules",
    multiprocess_mode="mostrecent")
PREDICTIONS_NEWEST_DAY = prom.Gauge(
    name="fraud_batch_predictions_newest_day_timestamp_seconds", documentation="Start "
    "(00:00 UTC) of the newest batch_predictions day behind /customers/{id}/risk, unix "
    "seconds; 0: none loaded", multiprocess_mode="mostrecent")


#: The media type of :func:`exposition`'s text.
CONTENT_TYPE = prom.CONTENT_TYPE_LATEST


def exposition() -> bytes:
    """Every process's metrics in the Prometheus text format, from BentoML's multiprocess
    directory (outside BentoML, without one, this process's own)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return prom.generate_latest()
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = prom.CollectorRegistry()
    MultiProcessCollector(registry)
    return prom.generate_latest(registry)


def day_start(day: str | None) -> float:
    """00:00 UTC of a ``YYYY-MM-DD`` day in unix seconds; 0 for None."""
    if not day:
        return 0.0
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()


def model_created(scorer: OnlineScorer) -> float:
    """The served model's manifest ``created_at`` in unix seconds; 0 without a model."""
    current = scorer.watcher.current
    if current is None:
        return 0.0
    manifest = scorer.watcher.registry.get(current.version).manifest
    created = dt.datetime.fromisoformat(manifest["created_at"])
    return (created if created.tzinfo else created.replace(tzinfo=dt.UTC)).timestamp()


def predictions_newest_day(scorer: OnlineScorer) -> float:
    """Start of the newest day in the batch-predictions index; 0 without one. The index
    holds each customer's latest prediction, so its newest day is the table's."""
    index = scorer.predictions
    if index is None or not len(index.customers):
        return 0.0
    return day_start(str(max(index.rows["day"])))


def observe_state(scorer: OnlineScorer) -> None:
    """Set the state gauges from ``scorer`` (see the module docstring). Each is read on its
    own: one that cannot be read (a manifest gone from disk) keeps its previous value, and
    the others are still set."""
    readers = ((FEATURE_NEWEST_DAY, lambda s: day_start(s.store.snapshot.last_day)),
               (MODEL_CREATED, model_created),
               (PREDICTIONS_NEWEST_DAY, predictions_newest_day))
    for gauge, read in readers:
        try:
            gauge.set(read(scorer))
        except Exception:  # noqa: BLE001 - a gauge must not stop a reload; the log says why
            log.exception("cannot set %s", gauge)


# Every OnlineScorer of this process reports its state changes here (see the docstring).
if observe_state not in OnlineScorer.state_listeners:
    OnlineScorer.state_listeners.append(observe_state)
