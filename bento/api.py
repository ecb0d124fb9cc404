"""The HTTP API: the FastAPI app, its routes, auth, errors and the OpenAPI document.

A FastAPI app, mounted by the service with ``@bentoml.asgi_app``, holds the routes:
``/score``, ``/score_batch``, ``/customers/{id}/risk``, ``/status`` and ``/metrics``
(BentoML merges its OpenAPI into /docs.json). BentoML keeps /healthz, /livez, /readyz and
the OpenAPI page at / (see :mod:`bento.service`).

The two hot routes are answered earlier, by :class:`ScoringRoutes`, an ASGI middleware
added with BentoML's ``add_asgi_middleware`` that puts itself in front of BentoML's whole
middleware stack. Py-spy profiles under load (see benchmarks/README.md) showed BentoML's
router, its per-request context, its traffic timeout and the mounted app's own middleware
taking more of the worker's time than the features and the model together; skipping the
router raised the throughput 1.3x, skipping the outer layers too another 1.3x. The
handlers are the same functions the FastAPI app documents; they parse the body straight
from bytes with pydantic-core and encode the answer with it. Per-request OpenTelemetry
spans (``tracing.excluded_urls``), access logging and BentoML's HTTP metrics middleware
are off; the routes count and time themselves (``fraud_http_*``), one sample per request.

This module does not import the service (which imports it): :mod:`bento.service` hands
over its ``@bentoml.service`` object with :func:`attach` and its started instance with
:func:`started`.
"""

from __future__ import annotations

import functools
import hmac
import logging
import time
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from starlette.requests import ClientDisconnect

from bento.metrics import (
    CONTENT_TYPE,
    HTTP_REQUESTS,
    HTTP_SECONDS,
    REJECTED,
    exposition,
)
from bento.schemas import (
    INT64_SCHEMA,
    CustomerRisk,
    ScoreBatch,
    ScoreBatchResult,
    ScoreResult,
    Transaction,
    error_responses,
)
from bento.settings import CONFIG, MAX_BATCH
from fraudkit.schema import INT64_MAX, INT64_MIN

if TYPE_CHECKING:
    from bento.batching import Drainer
    from fraudkit.online import OnlineScorer

log = logging.getLogger("fraud_service")

#: Schemas in /docs.json live under this prefix (see ``openapi_document``).
REF_TEMPLATE = "#/components/schemas/{model}"


class Served(Protocol):
    """What the routes use of the started service (``bento.service.FraudService``)."""

    scorer: OnlineScorer
    drainer: Drainer


#: The ``@bentoml.service`` object, from :func:`attach`: /docs.json takes BentoML's own
#: routes from its OpenAPI spec (see ``openapi_document``).
_BENTO_SERVICE: Any = None
#: The one service instance of this worker, from :func:`started`; until then the routes
#: answer 503.
_SERVICE: Served | None = None
#: True once :class:`ScoringRoutes` stands in front of BentoML's middleware (/status says).
_IN_FRONT = False


def attach(bento_service: Any) -> None:
    """Called by :mod:`bento.service` once its ``@bentoml.service`` object exists."""
    global _BENTO_SERVICE
    _BENTO_SERVICE = bento_service


def started(service: Served) -> None:
    """Called by the service instance once it has loaded: the routes start scoring."""
    global _SERVICE
    _SERVICE = service


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


def _service() -> Served:
    if _SERVICE is None:
        raise _ApiError(503, "the service is still starting; retry in a moment")
    return _SERVICE


# The routes are module functions, not FastAPI class views: BentoML injects ``self`` into a
# class view through a synchronous dependency, which FastAPI runs in a thread pool (a thread
# hop on every request). The one service instance registers itself with ``started``.
def _instrumented(route: str):
    """Count and time a route, and turn :class:`_ApiError` into its JSON answer (any other
    exception into a JSON 500), so every answer, errors included, is counted.

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
            except ClientDisconnect:
                raise  # the client hung up: nobody to answer, not a failure of the service
            except Exception as exc:  # noqa: BLE001 - answered and counted as a 500
                # A failure of the service itself (a scoring drain that raised; the drain
                # logged its traceback once): answered as JSON and counted, so the 5xx
                # alert (monitoring/alerts.yml) sees it.
                log.error("%s answered 500: %r", route, exc)
                response = JSONResponse({"error": "internal error: the service failed to "
                                                  "answer; see its log"}, status_code=500)
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

    Added by :mod:`bento.service` with ``FraudService.add_asgi_middleware``, BentoML puts
    it inside its own outer layers: OpenTelemetry, the traffic timeout (a task and a timer
    per request), error handling, then the router, the request context and the mounted
    app. For the two hot routes those cost more per request than the features and the
    model (see the profile in benchmarks/README.md). So on its first call it also puts
    itself *in front of* that whole stack: it wraps the Starlette app's
    ``middleware_stack`` (the app is in every request's ``scope["app"]``), and from then on
    the hot routes skip every BentoML layer; measured, 1.3x the replay throughput. Every
    other path, /readyz and /metrics included, goes through BentoML as before. If a
    BentoML release stops building its app that way, the routes keep working from the
    inner position. The FastAPI app registers the very same functions, so the routes
    appear in the OpenAPI page and behave the same if this is removed.

    What the hot routes give up: BentoML's traffic timeout (504 after ``traffic.timeout``
    seconds). Scoring never waits on anything unbounded: the store clients time out on
    their own and a store that fails degrades the answer instead (fraudkit/store/log.py).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.routes = {("POST", "/score"): score, ("POST", "/score_batch"): score_batch,
                       ("GET", "/docs.json"): docs_json}
        #: True once this tried to put itself in front of BentoML's stack
        self.placed = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if not self.placed:
            self.placed = True
            self._place_in_front(scope.get("app"))
        await self.dispatch(scope, receive, send, self.app)

    async def dispatch(self, scope: dict, receive: Any, send: Any, rest: Any) -> None:
        """Answer a hot route here, else pass the request on to ``rest``."""
        handler = (self.routes.get((scope["method"], scope["path"]))
                   if scope["type"] == "http" else None)
        if handler is None:
            await rest(scope, receive, send)
            return
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    def _place_in_front(self, outer: Any) -> None:
        stack = getattr(outer, "middleware_stack", None)
        if stack is None:  # not a Starlette app that built its stack: stay where we are
            log.warning("scoring routes stay inside BentoML's middleware (no "
                        "middleware_stack on %r)", type(outer).__name__)
            return

        async def in_front(scope: dict, receive: Any, send: Any) -> None:
            await self.dispatch(scope, receive, send, stack)

        outer.middleware_stack = in_front
        global _IN_FRONT
        _IN_FRONT = True


app.add_api_route("/score", score, methods=["POST"], response_model=ScoreResult,
                  summary="Score one transaction", openapi_extra=_body_doc(Transaction),
                  responses=error_responses(401, 422, 503))
app.add_api_route("/score_batch", score_batch, methods=["POST"],
                  response_model=ScoreBatchResult, openapi_extra=_body_doc(ScoreBatch),
                  summary=f"Score up to {MAX_BATCH} transactions, in (tx_datetime, id) order",
                  responses=error_responses(401, 422, 503))


@app.get("/customers/{customer_id}/risk", dependencies=[Depends(require_api_key)],
         summary="Latest batch prediction of a customer", response_model=CustomerRisk,
         responses=error_responses(401, 404, 422, 503))
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
    if _SERVICE is not None:
        _SERVICE.drainer.report_store()
    return Response(exposition(), media_type=CONTENT_TYPE)


@app.get("/status", dependencies=[Depends(require_api_key)], responses=error_responses(401, 503),
         summary="What the service is serving (model, champion, feature state)")
async def status() -> Response:
    """Behind the API key like the scoring routes: it names the registry's versions and
    their errors, which are nobody else's business."""
    return _json({"ready": _service().scorer.ready, **_service().scorer.status(),
                  "scoring_routes_in_front": _IN_FRONT})


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
    bento = _BENTO_SERVICE.openapi_spec.asdict()
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
