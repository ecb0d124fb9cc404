"""The real-time path: the registry's champion ONNX model behind BentoML, with online features
that equal the batch ones (see :mod:`fraudkit.online`).

``cd bento && bentoml serve service:FraudService`` (or ``make serve``) listens on port 3000;
``bentoml build`` (bentofile.yaml) serves the same class as ``bento.service:FraudService``.

Structure, and why. BentoML owns the process, /healthz, /livez, /readyz (``__is_ready__``:
200 only while serving champion.json's version with its model file intact, the feature history
loaded and the online store taking writes), the OpenAPI page at / and
``bentoml build``. This module holds only the ``@bentoml.service`` class and the settings
and start-up checks it needs; the rest of ``bento/`` is split by concern:

* :mod:`bento.api`: the FastAPI app mounted here with ``@bentoml.asgi_app`` (the routes,
  auth, errors, the OpenAPI document) and :class:`~bento.api.ScoringRoutes`, the ASGI
  middleware that answers the two hot routes in front of BentoML's own layers;
* :mod:`bento.batching`: the queue that scores requests arriving together in one drain;
* :mod:`bento.schemas`: the request and response models;
* :mod:`bento.metrics`: the Prometheus metrics, created once per process;
* :mod:`bento.settings`: the settings, read once per process;
* :mod:`bento.bundle`: ``python bento/bundle.py bundle-champion``, run before
  ``bentoml build`` to pack the champion.

``ONLINE_WORKERS`` workers share the online store, so each sees what the others scored.

The modules import each other as the package ``bento`` (``bento.api``, ...), so that each,
and every Prometheus metric, exists once per process. Built into a Bento, this file is
imported as ``bento.service`` and that just works; served from inside ``bento/`` it is the
top-level module ``service``, so it first puts the project root on ``sys.path`` (last, so
it shadows nothing) to make ``bento`` importable.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from pathlib import Path

if not __package__:  # `cd bento && bentoml serve service:FraudService`: see the docstring
    sys.path.append(str(Path(__file__).resolve().parents[1]))

import bentoml

from bento import api
from bento.batching import Drainer
from bento.bundle import BUNDLED_REGISTRY
from bento.settings import CONFIG
from fraudkit.online import OnlineScorer
from fraudkit.registry import ModelRegistry
from fraudkit.store import StoreError, open_store

log = logging.getLogger("fraud_service")


def _refuse_a_store_it_cannot_open() -> None:
    """In ``bentoml serve``'s own process, before any worker starts: open the online store
    once, and exit with its error (which names ONLINE_STORE_URL) if it cannot be opened.
    A worker failing the same check would be restarted by BentoML forever."""
    if Path(sys.argv[0]).name == "bentoml" and sys.argv[1:2] == ["serve"]:
        try:
            open_store(CONFIG.online_store_url).close()
        except StoreError as exc:
            raise SystemExit(f"the fraud service cannot start: {exc}") from None


_refuse_a_store_it_cannot_open()
#: True when this file runs from a built Bento (``<bento>/src/bento/service.py``).
IN_BENTO = (Path(__file__).resolve().parents[2] / "bento.yaml").exists()
#: Paths without per-request OpenTelemetry spans (they cost more than the scoring itself).
UNTRACED_PATHS = ["/score", "/score_batch", "/customers", "/healthz", "/livez", "/readyz",
                  "/metrics"]


@bentoml.service(
    name="fraud_service",
    # ONLINE_WORKERS processes share the online store (SQLite file or Redis), so every
    # worker sees the transactions the others scored.
    workers=CONFIG.online_workers,
    # A request slower than 2 s is far past a card terminal's 100 ms budget. The timeout
    # also bounds BentoML's per-request timers: with 30 s, ~120k of them were pending at
    # 4,000 req/s and garbage-collector passes over them pushed p99 past 100 ms. (The two
    # scoring routes skip this layer now: see api.ScoringRoutes.)
    traffic={"timeout": 2},
    logging={"access": {"enabled": False}},
    tracing={"sample_rate": 0.0, "excluded_urls": UNTRACED_PATHS},
    metrics={"enabled": False},  # replaced by api._instrumented + the /metrics route
)
@bentoml.asgi_app(api.app, path="/", name="api")
class FraudService:
    """Online fraud scoring: champion model + online feature store, hot-swapped."""

    def __init__(self) -> None:
        settings = CONFIG
        if (IN_BENTO or os.environ.get("FRAUD_BUNDLED_REGISTRY") == "1") and \
                ModelRegistry.of(settings).champion_stamp() is None and \
                (BUNDLED_REGISTRY / "champion.json").exists():
            log.warning("no registry at %s: serving the champion bundled in the Bento",
                        settings.registry_uri)
            settings = settings.model_copy(update={"registry_dir": BUNDLED_REGISTRY,
                                                   "registry_uri": str(BUNDLED_REGISTRY)})
        self.scorer = OnlineScorer(settings)
        self.scorer.load()
        self.scorer.start()
        self.drainer = Drainer(self.scorer)
        api.started(self)
        # What is loaded by now lives as long as the process: move it out of the cyclic
        # garbage collector's view, whose full passes over it otherwise pause the event
        # loop for tens of milliseconds under load (a p99 spike).
        gc.freeze()
        log.info("fraud service state: %s", self.scorer.status())

    def __is_ready__(self) -> bool:
        """/readyz: see :attr:`fraudkit.online.OnlineScorer.ready`."""
        return self.scorer.ready

    @bentoml.on_shutdown
    def _stop(self) -> None:
        self.scorer.stop()


FraudService.add_asgi_middleware(api.ScoringRoutes)
# /docs.json takes BentoML's /healthz, /livez, /readyz and /metrics from this service's spec.
api.attach(FraudService)
