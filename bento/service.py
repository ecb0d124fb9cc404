"""The real-time path: the registry's champion ONNX model behind BentoML, with online features
that equal the batch ones (see :mod:`fraudkit.online`).

``cd bento && bentoml serve service:FraudService`` (or ``make serve``) listens on port 3000.

Structure, and why. BentoML owns the process, /healthz, /livez, /readyz (``__is_ready__``:
200 only while serving champion.json's version with its model file intact, the feature history
loaded and the online store taking writes), the OpenAPI page at / and
``bentoml build``. A FastAPI app mounted with ``@bentoml.asgi_app`` holds the routes:
``/score``, ``/score_batch``, ``/customers/{id}/risk``, ``/status`` and ``/metrics``
(BentoML merges its OpenAPI into /docs.json).

The two hot routes are answered earlier, by :class:`ScoringRoutes`, an ASGI middleware
added with BentoML's ``add_asgi_middleware``. A py-spy profile under load (see
benchmarks/README.md) showed BentoML's router, its per-request context and the mounted
app's own middleware taking about a third of the worker's time, more than the features and
the model together; skipping them for the two hot routes raised the throughput 1.3x. The
handlers are the same functions the FastAPI app documents; they parse the body straight
from bytes with pydantic-core and encode the answer with it. Per-request OpenTelemetry
spans (``tracing.excluded_urls``), access logging and BentoML's HTTP metrics middleware
are off; the routes count and time themselves (``fraud_http_*``), one sample per request.

Requests that arrive together are scored together: each is queued and one drain task on
the event loop computes the features and scores of everything queued in one
``compute_features`` call, one ``predict`` and one write to the online store, which
commits every decision before any of the drain's answers is sent (see fraudkit/store). An
idle service scores a request as soon as it arrives (no batching window); a busy one
amortizes the per-call cost. Everything runs on the event loop thread in arrival order.
``ONLINE_WORKERS`` workers share the online store, so each sees what the others scored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import gc
import hmac
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import bentoml
import prometheus_client as prom
from fastapi import Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
)
from pydantic_core import to_json

from fraudkit.config import Settings
from fraudkit.features import FEATURE_COLUMNS
from fraudkit.online import (
    FALLBACK_VERSION,
    OnlineScorer,
    Requests,
    Scored,
    check_not_future,
    to_time_us,
)
from fraudkit.schema import INT64_MAX, INT64_MIN
from fraudkit.store import StoreError, open_store

log = logging.getLogger("fraud_service")
#: The service's settings (fraudkit.config, the same model the batch path reads), read from
#: the environment once per process: the request models below need the batch limit at
#: import time, and the API key never changes.
CONFIG = Settings.from_env()
MAX_BATCH = CONFIG.max_batch


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
#: The champion packed by `bentoml build` (see ``bundle_champion``); a Bento sets
#: FRAUD_BUNDLED_REGISTRY=1 (bentofile envs) to serve it when DATA_DIR has no registry.
BUNDLED_REGISTRY = Path(__file__).resolve().parent / "registry"
#: True when this file runs from a built Bento (``<bento>/src/bento/service.py``).
IN_BENTO = (Path(__file__).resolve().parents[2] / "bento.yaml").exists()
EXAMPLE = {"transaction_id": 1, "tx_datetime": "2026-05-01T10:15:00Z", "customer_id": 42,
           "terminal_id": 7, "tx_amount": 57.3}
#: Paths without per-request OpenTelemetry spans (they cost more than the scoring itself).
UNTRACED_PATHS = ["/score", "/score_batch", "/customers", "/healthz", "/livez", "/readyz",
                  "/metrics"]

#: Schemas in /docs.json live under this prefix (see ``openapi_document``).
REF_TEMPLATE = "#/components/schemas/{model}"
INT64_SCHEMA = {"format": "int64"}
Id = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX, description="int64",
                                json_schema_extra=INT64_SCHEMA)]


class Transaction(BaseModel):
    """One raw transaction without its label (docs/contracts.md, "Raw transaction contract")."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

    transaction_id: Id
    tx_datetime: dt.datetime = Field(
        description="ISO 8601; a time without offset is taken as UTC; at most a day after "
        "the service's clock")
    customer_id: Id
    terminal_id: Id
    tx_amount: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False,
                                            description="> 0 and finite")]

    @field_validator("tx_datetime", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("tx_datetime must be an ISO 8601 string such as "
                             "2026-05-01T10:15:00Z")
        return value

    @field_validator("tx_datetime")
    @classmethod
    def _not_future(cls, value: dt.datetime) -> dt.datetime:
        return check_not_future(value)

    def row(self) -> tuple[int, int, int, int, float]:
        return (self.transaction_id, to_time_us(self.tx_datetime), self.customer_id,
                self.terminal_id, self.tx_amount)


class ScoreBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transactions: list[Transaction] = Field(min_length=1, max_length=MAX_BATCH)


class ScoreResult(BaseModel):
    """Answer for one transaction (documentation of the response)."""

    transaction_id: int
    score: float
    decision: str = Field(description="approve, review or decline")
    model_version: str = Field(description=f"registry version, or {FALLBACK_VERSION!r}")
    thresholds: dict[str, float] | None
    fallback: bool = Field(description="true when the rules decided (no usable model)")
    degraded: bool = Field(description="true when the online store could not be read or "
                           "written: the customer windows may miss recent transactions and "
                           "the decision waits in the worker's memory until the store is back")
    features: dict[str, float] = Field(description=", ".join(FEATURE_COLUMNS))


class ScoreBatchResult(BaseModel):
    results: list[ScoreResult]


class CustomerRisk(BaseModel):
    """The latest batch prediction of a customer (documentation of the response)."""

    customer_id: int
    transaction_id: int
    tx_datetime: str = Field(description="ISO 8601, UTC")
    score: float
    decision: str = Field(description="approve, review or decline")
    model_version: str
    day: str
    predictions_table_version: int | None


class Problem(BaseModel):
    field: str = Field(description="the field's path, e.g. transactions.0.tx_amount")
    problem: str
    type: str | None = None


class ApiErrorBody(BaseModel):
    """Every 4xx/5xx answer of the routes (documentation of the response)."""

    error: str = Field(description="what was wrong and what to do")
    problems: list[Problem] = Field(default_factory=list,
                                    description="each invalid field (422 only)")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error codes, all with :class:`ApiErrorBody`."""
    meaning = {401: "FRAUD_API_KEY is set and the request does not carry it",
               404: "no batch prediction for this customer",
               422: "invalid request: each field and what is wrong with it",
               503: "the service is still starting"}
    return {code: {"model": ApiErrorBody, "description": meaning[code]} for code in codes}


# -- metrics (prometheus_client; BentoML runs it in multiprocess mode, /metrics serves it) --
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


Row = tuple[int, int, int, int, float]  # transaction_id, tx_time_us, customer, terminal, amount


class Drainer:
    """Queue of pending requests drained by one event-loop callback (see module doc).

    Each request waits for the list of its answers (JSON-ready dicts), built once per drain.
    """

    def __init__(self, scorer: OnlineScorer) -> None:
        self.scorer = scorer
        self.pending: list[tuple[list[Row], asyncio.Future, int]] = []
        self.scheduled = False
        self.served_version: str | None = None
        self.buffered = 0  # last value of fraud_store_buffered_rows this worker reported

    async def submit(self, rows: list[Row]) -> list[dict[str, Any]]:
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
        rows: dict[int, Row] = {}
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

    def _score(self, rows: list[Row], received: list[int],
               waiters: list[tuple[asyncio.Future, list[int]]]) -> None:
        """Score, log the decisions in the online store (before any answer), answer."""
        if not rows:
            return
        started = time.perf_counter()
        req = Requests.from_rows(rows)
        try:
            scored, written = self.scorer.score_submitted(req, received)
        except Exception as exc:  # noqa: BLE001 - answer every waiter, never hang
            self._fail(waiters, exc)
            return
        SCORE_SECONDS.observe(time.perf_counter() - started)
        DRAIN_SIZE.observe(len(req))
        # The answers go out once the decisions are written (the writer thread commits
        # while this loop goes on with the next requests).
        asyncio.wrap_future(written).add_done_callback(
            lambda done: self._answer(req, scored, done, waiters))

    def _answer(self, req: Requests, scored: Scored, written: asyncio.Future,
                waiters: list[tuple[asyncio.Future, list[int]]]) -> None:
        try:
            if not written.result():
                scored.degraded = True
            answers = scored.rows(req)
        except Exception as exc:  # noqa: BLE001 - answer every waiter, never hang
            self._fail(waiters, exc)
            return
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
        buffered = self.scorer.decisions.buffered
        if buffered != self.buffered:  # one multiprocess-file write only when it moves
            STORE_BUFFERED.set(buffered)
            self.buffered = buffered


def _json(content: Any, status_code: int = 200) -> Response:
    """A compact JSON response, encoded by pydantic-core (several times faster than json)."""
    return Response(to_json(content), status_code=status_code, media_type="application/json")


# -- the HTTP app --------------------------------------------------------------------------
app = FastAPI(
    title="Fraud scoring",
    description="Scores raw transactions with the registry's champion model and online "
                "features equal to the batch ones. Send `x-api-key` (or `Authorization: "
                "Bearer`) when the service runs with FRAUD_API_KEY.",
    version="1",
    docs_url="/api/docs",
    openapi_url="/api/openapi.json",
    redoc_url=None,
)


async def require_api_key(request: Request) -> None:
    """401 unless FRAUD_API_KEY is unset or the request carries it (x-api-key header, or
    ``Authorization: Bearer <key>``). Async on purpose: FastAPI runs a sync dependency in a
    thread pool, a thread hop per request that cost ~10% of the service's throughput."""
    expected = CONFIG.api_key
    if not expected:
        return
    given = request.headers.get("x-api-key")
    if given is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        REJECTED.labels(reason="auth").inc()
        raise _ApiError(401, "missing or wrong API key: send it in the x-api-key header "
                             "(or Authorization: Bearer <key>)")


_SERVICE: FraudService | None = None


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error_response(exc: _ApiError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)


@app.exception_handler(_ApiError)
async def _api_error(_: Request, exc: _ApiError) -> Response:
    return _error_response(exc)


def _invalid_response(errors: list[dict]) -> Response:
    """422 naming each field and what is wrong with it (values are not echoed: a NaN in
    the input would make the error itself unserializable)."""
    problems = [{"field": "body" if e.get("type") == "json_invalid" else
                 ".".join(str(p) for p in e.get("loc", ())),
                 "problem": e.get("msg", "invalid"), "type": e.get("type")}
                for e in errors]
    REJECTED.labels(reason="validation").inc()
    summary = "; ".join(f"{p['field'] or 'body'}: {p['problem']}" for p in problems[:5])
    return JSONResponse({"error": f"invalid request: {summary}", "problems": problems[:50]},
                        status_code=422)


@app.exception_handler(RequestValidationError)
async def _invalid(_: Request, exc: RequestValidationError) -> Response:
    """FastAPI's errors start their ``loc`` with where the value was (body, path, query):
    drop it, so a field is named as in the hot routes' errors (``customer_id``)."""
    return _invalid_response([{**e, "loc": tuple(e.get("loc", ()))[1:]} for e in exc.errors()])


#: Request bodies that routes parse themselves; ``openapi_document`` adds their schemas.
_BODY_MODELS: list[type[BaseModel]] = []


def _body_doc(model: type[BaseModel]) -> dict:
    """OpenAPI request body of a route that parses its body itself (see ``_parse``)."""
    _BODY_MODELS.append(model)
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": REF_TEMPLATE.format(model=model.__name__)}}}}}


async def _parse(request: Request, model: type[BaseModel]) -> BaseModel | Response:
    """Auth, then the body validated straight from bytes by pydantic-core.

    The hot routes skip FastAPI's body and dependency machinery (json.loads, then
    validate_python, then a dependency graph per request): parsing the bytes in one Rust
    call halves the framework time of a request. Errors keep the same 422 format.
    """
    await require_api_key(request)
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        return _invalid_response(exc.errors(include_input=False, include_context=False))


def _service() -> FraudService:
    if _SERVICE is None:
        raise _ApiError(503, "the service is still starting; retry in a moment")
    return _SERVICE


# The routes are module functions, not FastAPI class views: BentoML injects ``self`` into a
# class view through a synchronous dependency, which FastAPI runs in a thread pool (a thread
# hop on every request). The one service instance registers itself in ``_SERVICE``.
def _instrumented(route: str):
    """Count and time a route, and turn :class:`_ApiError` into its JSON answer.

    BentoML's own HTTP metrics middleware is switched off (``metrics.enabled: false``): it
    did several labelled multiprocess-metric updates per request and cost ~15% of the
    throughput. This records one counter and one histogram sample per request instead, and
    the /metrics route below serves them with the rest of the Prometheus registry.
    """

    def wrap(handler):
        seconds = HTTP_SECONDS.labels(route=route)
        counters: dict[int, Any] = {}  # labelled children, looked up once per status code

        @functools.wraps(handler)
        async def wrapped(request: Request, *args: Any, **kwargs: Any) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request, *args, **kwargs)
            except _ApiError as exc:
                response = _error_response(exc)
            seconds.observe(time.perf_counter() - started)
            code = response.status_code
            if code not in counters:
                counters[code] = HTTP_REQUESTS.labels(route=route, code=str(code))
            counters[code].inc()
            return response

        return wrapped

    return wrap


@_instrumented("/score")
async def score(request: Request) -> Response:
    transaction = await _parse(request, Transaction)
    if isinstance(transaction, Response):
        return transaction
    (answer,) = await _service().drainer.submit([transaction.row()])
    return _json(answer)


@_instrumented("/score_batch")
async def score_batch(request: Request) -> Response:
    batch = await _parse(request, ScoreBatch)
    if isinstance(batch, Response):
        return batch
    ids = [t.transaction_id for t in batch.transactions]
    if len(set(ids)) != len(ids):
        REJECTED.labels(reason="validation").inc()
        raise _ApiError(422, "invalid request: transactions: transaction_id values must "
                             "be distinct within one batch")
    answers = await _service().drainer.submit([t.row() for t in batch.transactions])
    return _json({"results": answers})


class ScoringRoutes:
    """ASGI middleware that answers ``POST /score`` and ``POST /score_batch`` itself.

    It also answers ``GET /docs.json``, in place of BentoML's (see ``openapi_document``).

    Added with ``FraudService.add_asgi_middleware`` it sits inside BentoML's outer layers
    (error handling, tracing, the traffic timeout) but before BentoML's router, request
    context and the mounted app: for the two hot routes those cost more per request than
    the features and the model (see the profile in benchmarks/README.md). Every other
    path goes on to BentoML. The FastAPI app registers the very same functions, so the
    routes appear in the OpenAPI page and behave the same if this is removed.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.routes = {("POST", "/score"): score, ("POST", "/score_batch"): score_batch,
                       ("GET", "/docs.json"): docs_json}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        handler = (self.routes.get((scope["method"], scope["path"]))
                   if scope["type"] == "http" else None)
        if handler is None:
            await self.app(scope, receive, send)
            return
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)


app.add_api_route("/score", score, methods=["POST"], response_model=ScoreResult,
                  summary="Score one transaction", openapi_extra=_body_doc(Transaction),
                  responses=_errors(401, 422, 503))
app.add_api_route("/score_batch", score_batch, methods=["POST"],
                  response_model=ScoreBatchResult, openapi_extra=_body_doc(ScoreBatch),
                  summary=f"Score up to {MAX_BATCH} transactions, in (tx_datetime, id) order",
                  responses=_errors(401, 422, 503))


@app.get("/customers/{customer_id}/risk", dependencies=[Depends(require_api_key)],
         summary="Latest batch prediction of a customer", response_model=CustomerRisk,
         responses=_errors(401, 404, 422, 503))
@_instrumented("/customers/{customer_id}/risk")
async def customer_risk(
        request: Request,
        customer_id: Annotated[int, PathParam(ge=INT64_MIN, le=INT64_MAX, description="int64",
                                              json_schema_extra=INT64_SCHEMA)]) -> Response:
    index = _service().scorer.predictions
    found = index.lookup(customer_id) if index is not None else None
    if found is None:
        return _json({"error": f"no batch prediction for customer {customer_id} in the "
                               "batch_predictions table"}, status_code=404)
    return _json(found)


@app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics() -> Response:
    """Every process's metrics (BentoML keeps them in a multiprocess directory)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    if _SERVICE is not None:
        STORE_BUFFERED.set(_SERVICE.scorer.decisions.buffered)
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
        content = generate_latest(registry)
    else:
        content = generate_latest()
    return Response(content, media_type=CONTENT_TYPE_LATEST)


@app.get("/status", dependencies=[Depends(require_api_key)], responses=_errors(401, 503),
         summary="What the service is serving (model, champion, feature state)")
async def status() -> Response:
    """Behind the API key like the scoring routes: it names the registry's versions and
    their errors, which are nobody else's business."""
    return _json({"ready": _service().scorer.ready, **_service().scorer.status()})


def _exact_int64_bounds(node: Any) -> None:
    """Put back the exact int64 bounds that FastAPI's OpenAPI models round to floats.

    They hold ``minimum``/``maximum`` as floats, so ``2**63 - 1`` comes out as
    ``9.223372036854776e18`` (that is ``2**63``): a spec that allows ids the server refuses.
    """
    if isinstance(node, dict):
        if node.get("format") == "int64":
            for key, exact in (("minimum", INT64_MIN), ("maximum", INT64_MAX)):
                if isinstance(node.get(key), float) and node[key] == float(exact):
                    node[key] = exact
        for value in node.values():
            _exact_int64_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _exact_int64_bounds(value)


@functools.cache
def openapi_document() -> dict[str, Any]:
    """/docs.json: one OpenAPI 3.1 document whose every ``$ref`` resolves.

    Why not BentoML's own /docs.json: it declares OpenAPI 3.0.2 but merges the mounted
    FastAPI app's JSON Schema 2020-12 (numeric ``exclusiveMinimum``, ``type: null``,
    ``examples``), as its own TaskStatusResponse component does, and its schema objects
    hold numeric bounds as floats, so no setting makes it valid. This document is FastAPI's
    (3.1, the dialect pydantic writes) plus what FastAPI cannot see: the schemas of the
    bodies that the hot routes parse themselves (``_BODY_MODELS``, lifted into
    ``components`` with their ``$defs``) and BentoML's /healthz, /livez, /readyz and
    /metrics entries. ``FastAPI.openapi`` serves the same at /api/openapi.json.
    """
    spec = get_openapi(title=app.title, version=app.version, description=app.description,
                       openapi_version="3.1.0", routes=app.routes)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in _BODY_MODELS:
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    bento = FraudService.openapi_spec.asdict()
    for path in ("/healthz", "/livez", "/readyz", "/metrics"):
        spec["paths"][path] = bento["paths"][path]
    spec["paths"]["/readyz"]["get"]["responses"]["503"] = {
        "description": "not ready: no model, champion.json names a version that is not the "
                       "one served, its file changed on disk, or no feature history (/status "
                       "says which)"}
    spec["tags"] = bento.get("tags", [])
    _exact_int64_bounds(spec)
    return spec


app.openapi = openapi_document  # /api/openapi.json: the same document


async def docs_json(_: Request) -> Response:
    """/docs.json (see ``openapi_document``); ScoringRoutes routes it here."""
    return _json(openapi_document())

@bentoml.service(
    name="fraud_service",
    # ONLINE_WORKERS processes share the online store (SQLite file or Redis), so every
    # worker sees the transactions the others scored.
    workers=CONFIG.online_workers,
    # A request slower than 2 s is far past a card terminal's 100 ms budget. The timeout
    # also bounds BentoML's per-request timers: with 30 s, ~120k of them were pending at
    # 4,000 req/s and garbage-collector passes over them pushed p99 past 100 ms.
    traffic={"timeout": 2},
    logging={"access": {"enabled": False}},
    tracing={"sample_rate": 0.0, "excluded_urls": UNTRACED_PATHS},
    metrics={"enabled": False},  # replaced by _instrumented + the /metrics route
)
@bentoml.asgi_app(app, path="/", name="api")
class FraudService:
    """Online fraud scoring: champion model + online feature store, hot-swapped."""

    def __init__(self) -> None:
        settings = CONFIG
        if (IN_BENTO or os.environ.get("FRAUD_BUNDLED_REGISTRY") == "1") and \
                not (settings.registry_dir / "champion.json").exists() and \
                (BUNDLED_REGISTRY / "champion.json").exists():
            log.warning("no registry in %s: serving the champion bundled in the Bento",
                        settings.registry_dir)
            settings = settings.model_copy(update={"registry_dir": BUNDLED_REGISTRY})
        self.scorer = OnlineScorer(settings)
        self.scorer.load()
        self.scorer.start()
        self.drainer = Drainer(self.scorer)
        global _SERVICE
        _SERVICE = self
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


FraudService.add_asgi_middleware(ScoringRoutes)

# -- packaging helper --------------------------------------------------------------------------
def bundle_champion(target: Path = BUNDLED_REGISTRY) -> str:
    """Copy the registry's champion (model.onnx, manifest, champion.json) into ``bento/registry``
    so `bentoml build` packs it; returns its version. Run before `bentoml build`."""
    from fraudkit.registry import ModelRegistry

    registry = ModelRegistry(Settings.from_env().registry_dir)
    champion = registry.champion()
    champion.verify()
    shutil.rmtree(target, ignore_errors=True)
    dest = target / "versions" / champion.version
    dest.mkdir(parents=True)
    for name in ("model.onnx", "manifest.json"):
        shutil.copy2(champion.path / name, dest / name)
    (target / "champion.json").write_text(json.dumps(
        {"version": champion.version, "history": [], "reason": "bundled by bentoml build"}))
    return champion.version


if __name__ == "__main__":
    if sys.argv[1:] != ["bundle-champion"]:
        raise SystemExit("usage: python bento/service.py bundle-champion")
    print(f"bundled champion {bundle_champion()} into {BUNDLED_REGISTRY}")
