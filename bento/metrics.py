"""The service's Prometheus metrics, created once per process.

BentoML runs prometheus_client in multiprocess mode: each worker writes its samples to files
in ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` (:mod:`bento.api`) merges every process's
files (:func:`exposition`). A metric must therefore be created exactly once per process,
which is why they all live here, at module level, in a module every other one imports by
the same name (``bento.metrics``; see :mod:`bento.service` for how that name is kept when
the service runs from inside ``bento/``).

BentoML's own HTTP metrics are off (see ``bento.api._instrumented``): the routes count and
time themselves (``fraud_http_*``), one sample per request.
"""

from __future__ import annotations

import os

import prometheus_client as prom

SCORED = prom.Counter(
    name="fraud_scored_transactions_total", documentation="Transactions scored, by outcome",
    labelnames=["decision", "fallback", "model_version"])
FALLBACKS = prom.Counter(
    name="fraud_fallback_total", documentation="Transactions decided by the fallback rules")
REJECTED = prom.Counter(
    name="fraud_rejected_requests_total", documentation="Requests refused (4xx), by reason",
    labelnames=["reason"])
SCORE_SECONDS = prom.Histogram(
    name="fraud_score_seconds", documentation="Feature lookup + model time of one drain",
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
MODEL_INFO = prom.Gauge(
    name="fraud_model_info", documentation="1 for the model version being served",
    labelnames=["model_version"], multiprocess_mode="max")


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
