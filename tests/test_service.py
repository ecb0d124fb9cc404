"""The BentoML service as a real server (`bentoml serve` subprocess), no mocks.

One server for the module: started with ONLINE_STORE_CUTOFF so the replay of the next days
is the stream the store has never seen, and with FRAUD_API_KEY set so auth is exercised.
The parity test runs first (file order) so its stream is the first the service sees.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudkit import lake
from fraudkit.registry import ModelRegistry
from scripts.replay_parity import replay
from tests.conftest import private_copy
from tests.test_service_support import API_KEY, CUTOFF, running_service

pytestmark = pytest.mark.slow
HEADERS = {"x-api-key": API_KEY}
GOOD = {"transaction_id": 10_000_001, "tx_datetime": "2026-06-25T10:15:00Z",
        "customer_id": 42, "terminal_id": 7, "tx_amount": 57.3}


@pytest.fixture(scope="module")
def data_dir(small_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy: the hot-swap test writes to the registry."""
    return private_copy(small_pipeline, tmp_path_factory.mktemp("service"))


@pytest.fixture(scope="module")
def server(data_dir: Path):
    env = {"ONLINE_STORE_CUTOFF": CUTOFF, "FRAUD_API_KEY": API_KEY}
    with running_service(data_dir, env) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def test_replay_parity_is_exact(server: httpx.Client, data_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    report = replay(str(server.base_url), "2026-06-21", "2026-06-23", chunk=150,
                    single_every=25, client=httpx.Client(base_url=server.base_url,
                                                         headers=HEADERS, timeout=60))
    print(report)
    assert report.transactions > 1000
    assert report.rate == 1.0, report.mismatches[:10]
    assert report.max_score_diff <= 1e-6
    # The reviews and declines were explained online exactly as batch_predictions explains
    # them (the same features, contributions within 1e-6: rate 1.0 includes them).
    assert report.explained > 10 and report.max_reason_diff <= 1e-6


def test_health_ready_metrics_docs(server: httpx.Client) -> None:
    assert server.get("/healthz").status_code == 200
    assert server.get("/readyz").status_code == 200
    server.post("/score", json=GOOD, headers=HEADERS)
    metrics = server.get("/metrics").text
    for name in ("fraud_scored_transactions_total", "fraud_score_seconds_bucket",
                 "fraud_model_info{", "fraud_fallback_total",
                 "fraud_http_request_seconds_bucket", "fraud_http_requests_total"):
        assert name in metrics, name
    spec = server.get("/docs.json").json()
    assert {"/score", "/score_batch", "/customers/{customer_id}/risk"} <= set(spec["paths"])


def test_score_answer_shape(server: httpx.Client) -> None:
    body = server.post("/score", json=GOOD, headers=HEADERS).json()
    assert body["transaction_id"] == GOOD["transaction_id"]
    assert 0.0 <= body["score"] <= 1.0
    assert body["decision"] in {"approve", "review", "decline"}
    assert body["model_version"] == "v0001" and body["fallback"] is False
    assert set(body["thresholds"]) == {"review", "decline"}
    assert body["features"]["tx_amount"] == 57.3 and len(body["features"]) == 15
    assert "reasons" in body


def test_scoring_routes_stand_in_front_of_bentoml_and_the_rest_still_works(
        server: httpx.Client) -> None:
    """After the first request the hot routes skip BentoML's middleware (its per-request
    timeout task and timer, tracing, router): /status says so, a BentoML upgrade that
    builds its app another way is caught here, and BentoML's own routes and the FastAPI
    app still answer through its stack."""
    server.post("/score", json=GOOD, headers=HEADERS).raise_for_status()
    assert server.get("/status", headers=HEADERS).json()["scoring_routes_in_front"] is True
    again = server.post("/score", json={**GOOD, "transaction_id": 10_000_099},
                        headers=HEADERS)
    assert again.status_code == 200 and again.json()["transaction_id"] == 10_000_099
    assert server.post("/score", json={**GOOD, "tx_amount": "x"},
                       headers=HEADERS).status_code == 422
    assert server.get("/readyz").status_code == 200
    assert server.get("/docs.json").json()["openapi"] == "3.1.0"
    assert "fraud_http_requests_total" in server.get("/metrics").text


def test_a_decline_says_why(server: httpx.Client) -> None:
    """A very large amount from a new card at a new terminal: declined, and its reasons
    (from the champion's embedded explainer, announced in /status) name the amount."""
    status = server.get("/status", headers=HEADERS).json()["reason_codes"]
    assert status == {"top": 3, "explainer": True, "error": None, "failed_calls": 0}
    body = server.post("/score", headers=HEADERS, json={
        **GOOD, "transaction_id": 10_000_005, "tx_amount": 5000.0}).json()
    assert body["decision"] == "decline", body
    reasons = body["reasons"]
    assert 1 <= len(reasons) <= 3 and "tx_amount" in [r["feature"] for r in reasons]
    assert [r["contribution"] for r in reasons] == sorted(
        (r["contribution"] for r in reasons), reverse=True)


def test_cold_start_customer_and_terminal(server: httpx.Client) -> None:
    body = server.post("/score", headers=HEADERS, json={
        **GOOD, "transaction_id": 10_000_002, "customer_id": 987_654_321,
        "terminal_id": 987_654_321}).json()
    feats = body["features"]
    assert feats["customer_nb_tx_30d"] == 1 and feats["customer_avg_amount_30d"] == 57.3
    assert feats["terminal_nb_tx_30d"] == 0 and feats["terminal_risk_30d"] == 0.0


def test_customer_risk_lookup(server: httpx.Client, data_dir: Path) -> None:

    preds = lake.dataset(str(data_dir / "tables" / "batch_predictions")).to_table().to_pandas()
    latest = preds.sort_values(["tx_datetime", "transaction_id"]).groupby("customer_id").last()
    customer = int(latest.index[3])
    body = server.get(f"/customers/{customer}/risk", headers=HEADERS).json()
    assert body["transaction_id"] == int(latest.loc[customer, "transaction_id"])
    assert body["score"] == pytest.approx(float(latest.loc[customer, "score"]), abs=0)
    assert server.get("/customers/999999999/risk", headers=HEADERS).status_code == 404
    assert server.get("/customers/abc/risk", headers=HEADERS).status_code == 422


def test_auth(server: httpx.Client) -> None:
    assert server.post("/score", json=GOOD).status_code == 401
    wrong = server.post("/score", json=GOOD, headers={"x-api-key": "nope"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
    bearer = server.post("/score", json=GOOD, headers={"Authorization": f"Bearer {API_KEY}"})
    assert bearer.status_code == 200
    assert server.get("/customers/1/risk").status_code == 401
    assert server.get("/healthz").status_code == 200  # health stays open


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in GOOD.items() if k != "tx_amount"}, "tx_amount"),
        ({**GOOD, "customer_id": "42"}, "customer_id"),
        ({**GOOD, "customer_id": 4.5}, "customer_id"),
        ({**GOOD, "tx_amount": -1.0}, "tx_amount"),
        ({**GOOD, "tx_amount": -0.01}, "tx_amount"),  # 0 is allowed, below it is not
        ({**GOOD, "tx_amount": "NaN-literal"}, "tx_amount"),
        ({**GOOD, "tx_amount": "Infinity-literal"}, "tx_amount"),
        ({**GOOD, "tx_amount": "-Infinity-literal"}, "tx_amount"),
        ({**GOOD, "tx_datetime": "not a date"}, "tx_datetime"),
        ({**GOOD, "tx_datetime": 1714558500}, "tx_datetime"),
        ({**GOOD, "transaction_id": 2**64}, "transaction_id"),
        ({**GOOD, "transaction_id": -(2**63) - 1}, "transaction_id"),
        ({**GOOD, "tx_datetime": "9999-12-31T23:59:59Z"}, "tx_datetime"),
        ({**GOOD, "tx_fraud": 1}, "tx_fraud"),
    ],
)
def test_bad_input_is_a_named_4xx(server: httpx.Client, body: dict, field: str) -> None:
    if str(body.get("tx_amount")).endswith("-literal"):  # a bare NaN/Infinity token
        value = float(body["tx_amount"].removesuffix("-literal"))
        content = json.dumps({**body, "tx_amount": value})
    else:
        content = json.dumps(body)
    response = server.post("/score", content=content, headers={
        **HEADERS, "content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]


def test_zero_amount_card_verification_is_scored(server: httpx.Client) -> None:
    """A zero-amount authorization (a card verification, docs/contracts.md) is scored with
    its features like any other transaction, alone and in a batch, and counts in its
    customer's windows with amount 0; a negative amount is still a 422 naming the field."""
    card = {**GOOD, "customer_id": 987_654_400, "terminal_id": 987_654_400}
    first = server.post("/score", headers=HEADERS,
                        json={**card, "transaction_id": 10_000_010, "tx_amount": 0})
    assert first.status_code == 200, first.text
    body = first.json()
    assert 0.0 <= body["score"] <= 1.0 and body["decision"] in {"approve", "review", "decline"}
    assert body["model_version"] == "v0001" and body["fallback"] is False
    feats = body["features"]
    assert (feats["tx_amount"], feats["customer_nb_tx_30d"],
            feats["customer_avg_amount_30d"]) == (0.0, 1, 0.0)
    batch = server.post("/score_batch", headers=HEADERS, json={"transactions": [
        {**card, "transaction_id": 10_000_011, "tx_datetime": "2026-06-25T10:16:00Z",
         "tx_amount": 0.0},
        {**card, "transaction_id": 10_000_012, "tx_datetime": "2026-06-25T10:17:00Z",
         "tx_amount": 30.0}]})
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert all(0.0 <= r["score"] <= 1.0 for r in results)
    assert [(r["features"]["customer_nb_tx_1d"], r["features"]["customer_avg_amount_1d"])
            for r in results] == [(2, 0.0), (3, 10.0)]
    negative = server.post("/score", headers=HEADERS,
                           json={**card, "transaction_id": 10_000_013, "tx_amount": -0.01})
    assert negative.status_code == 422
    assert [p["field"] for p in negative.json()["problems"]] == ["tx_amount"]

def test_ids_take_the_whole_int64_range_as_in_batch(server: httpx.Client) -> None:
    body = {**GOOD, "transaction_id": -(2**63), "customer_id": -7, "terminal_id": 2**63 - 1}
    response = server.post("/score", json=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    assert response.json()["transaction_id"] == -(2**63)


def test_invalid_json_and_oversized_batch(server: httpx.Client) -> None:
    response = server.post("/score", content=b"{not json",
                           headers={**HEADERS, "content-type": "application/json"})
    assert response.status_code == 422 and "JSON" in response.json()["error"]
    many = [{**GOOD, "transaction_id": i} for i in range(1001)]
    response = server.post("/score_batch", json={"transactions": many}, headers=HEADERS)
    assert response.status_code == 422 and "1000" in response.json()["error"]
    dup = server.post("/score_batch", json={"transactions": [GOOD, GOOD]}, headers=HEADERS)
    assert dup.status_code == 422 and "distinct" in dup.json()["error"]
    empty = server.post("/score_batch", json={"transactions": []}, headers=HEADERS)
    assert empty.status_code == 422


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=30), st.lists(st.integers(), max_size=3))
_fields = st.sampled_from(["transaction_id", "tx_datetime", "customer_id", "terminal_id",
                           "tx_amount", "tx_fraud", "extra"])
_valid_like = st.fixed_dictionaries({
    "transaction_id": st.integers(min_value=-10, max_value=2**64),
    "tx_datetime": st.one_of(st.datetimes().map(lambda d: d.isoformat()), st.text(max_size=25)),
    "customer_id": st.integers(min_value=-10, max_value=2**63 + 5),
    "terminal_id": st.integers(min_value=0, max_value=10**6),
    "tx_amount": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers()),
})
_bodies = st.one_of(_valid_like, st.dictionaries(_fields, _values, max_size=7),
                    _values, st.binary(max_size=40))


@settings(max_examples=1000, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(body=_bodies, batch=st.booleans())
def test_fuzz_never_5xx(server: httpx.Client, body: object, batch: bool) -> None:
    if isinstance(body, bytes):
        content = body
    else:
        payload = {"transactions": [body]} if batch else body
        content = json.dumps(payload).encode()
    response = server.post("/score_batch" if batch else "/score", content=content,
                           headers={**HEADERS, "content-type": "application/json"})
    assert response.status_code < 500, response.text


def test_still_serves_after_fuzz(server: httpx.Client) -> None:
    assert server.get("/readyz").status_code == 200
    assert server.post("/score", json={**GOOD, "transaction_id": 10_000_003},
                       headers=HEADERS).status_code == 200


def test_hot_swap_and_rollback(server: httpx.Client, data_dir: Path) -> None:
    registry = ModelRegistry(data_dir / "registry")
    old = registry.champion()
    errors: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=30) as client:
            i = 0
            while not stop.is_set():
                r = client.post("/score", json={**GOOD, "transaction_id": 20_000_000 + i})
                i += 1
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    versions.append(r.json()["model_version"])

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        new = registry.register(old.model_path.read_bytes(), training_data={"copy_of": old.version},
                                metrics=old.manifest["metrics"], thresholds=old.thresholds)
        registry.promote(new.version, reason="hot swap test")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (not versions or versions[-1] != new.version):
            time.sleep(0.1)
        assert versions and versions[-1] == new.version
        registry.rollback("test rollback")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and versions[-1] != old.version:
            time.sleep(0.1)
        assert versions[-1] == old.version
    finally:
        stop.set()
        thread.join()
    assert not errors, errors[:3]
    assert versions.count(new.version) > 0
    info = [line for line in server.get("/metrics").text.splitlines()
            if line.startswith("fraud_model_info")]
    assert f'fraud_model_info{{model_version="{old.version}"}} 1.0' in info, info


def test_another_server_starting_leaves_this_one_s_metrics(server: httpx.Client,
                                                           data_dir: Path,
                                                           tmp_path: Path) -> None:
    """BentoML empties ``$BENTOML_HOME/prometheus_multiproc_dir`` when a server starts; each
    server that scripts.serving starts has a BENTOML_HOME of its own, so starting another
    one leaves this one's /metrics whole (a shared folder lost them, intermittently, while
    the tests ran two servers at once)."""
    server.post("/score", json={**GOOD, "transaction_id": 10_000_004}, headers=HEADERS)
    other_store = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    with running_service(data_dir, {"ONLINE_STORE_URL": other_store}, ready=False) as url:
        home = data_dir.parent / f"bentoml_home_{url.rsplit(':', 1)[1]}"
        assert (home / "prometheus_multiproc_dir").is_dir()
    assert not home.exists()  # stopping the server removed the home made for it
    metrics = server.get("/metrics").text
    assert "fraud_scored_transactions_total" in metrics and "fraud_model_info{" in metrics
