"""The real service (`bentoml serve`) against its own contract: /docs.json is one valid,
resolvable OpenAPI document that the server honours (schemathesis), every route refuses a
bad id with a named 422, /status is behind the API key, and /readyz and /status say when the
champion named by champion.json is not the model being served.

One server for the module, with FRAUD_API_KEY set; the registry test runs last (file order)
because it changes the champion.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate

from fraudkit.registry import ModelRegistry
from tests.conftest import private_copy
from tests.test_service_support import API_KEY, running_service

pytestmark = pytest.mark.slow
HEADERS = {"x-api-key": API_KEY}
GOOD = {"transaction_id": 30_000_001, "tx_datetime": "2026-06-25T10:15:00Z",
        "customer_id": 42, "terminal_id": 7, "tx_amount": 57.3}
INT64_MAX = 2**63 - 1


@pytest.fixture(scope="module")
def data_dir(small_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy: the registry test rewrites champion.json."""
    return private_copy(small_pipeline, tmp_path_factory.mktemp("contract"))


@pytest.fixture(scope="module")
def server(data_dir: Path):
    with running_service(data_dir, {"FRAUD_API_KEY": API_KEY}) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        yield client


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in _refs(v)]
    return [r for v in node for r in _refs(v)] if isinstance(node, list) else []


def _resolve(spec: dict, ref: str) -> object:
    assert ref.startswith("#/"), ref
    node: object = spec
    for part in ref[2:].split("/"):
        node = node[part]  # KeyError: the reference points nowhere
    return node


def test_docs_json_is_a_valid_openapi_document(server: httpx.Client) -> None:
    spec = server.get("/docs.json").json()
    validate(spec)  # raises on a schema error (it resolves references inside schemas only)
    for ref in _refs(spec):  # ... so every reference, e.g. a request body's, is checked
        _resolve(spec, ref)
    assert {"/score", "/score_batch", "/customers/{customer_id}/risk", "/status",
            "/readyz"} <= set(spec["paths"])
    transaction = spec["components"]["schemas"]["Transaction"]
    for name in ("transaction_id", "customer_id", "terminal_id"):
        field = transaction["properties"][name]
        assert field["format"] == "int64"
        assert (field["minimum"], field["maximum"]) == (-(2**63), INT64_MAX)
        assert isinstance(field["maximum"], int)  # exact, not 9.223372036854776e18
    # The spec and the server draw the line at the same id.
    body = {"transactions": [{**GOOD, "transaction_id": INT64_MAX}]}
    jsonschema.validate(body, {**spec["components"]["schemas"]["ScoreBatch"],
                               "components": spec["components"]},
                        cls=jsonschema.Draft202012Validator)
    ok = server.post("/score_batch", json=body, headers=HEADERS)
    assert ok.status_code == 200, ok.text
    beyond = {**GOOD, "transaction_id": 9223372036854775999}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(beyond, transaction)
    assert server.post("/score", json=beyond, headers=HEADERS).status_code == 422


def test_schemathesis_finds_no_5xx_and_no_undocumented_answer(server: httpx.Client,
                                                              tmp_path: Path) -> None:
    """A short, seeded schemathesis run of every operation in /docs.json: no server error,
    and each status code, content type and body as the document says."""
    started = time.monotonic()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run",
         f"{server.base_url}/docs.json", "--header", f"x-api-key:{API_KEY}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
         "response_schema_conformance",
         "--max-examples", "30", "--seed", "1", "--workers", "1",
         "--phases", "examples,coverage,fuzzing", "--request-timeout", "10"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    print(result.stdout[-6000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert elapsed < 60, f"schemathesis took {elapsed:.0f}s"


def test_customer_ids_beyond_int64_are_a_named_422(server: httpx.Client) -> None:
    for customer in (2**63, -(2**63) - 1, 10**30):
        response = server.get(f"/customers/{customer}/risk", headers=HEADERS)
        assert response.status_code == 422, response.text
        assert "customer_id" in response.json()["error"]
    edge = server.get(f"/customers/{INT64_MAX}/risk", headers=HEADERS)
    assert edge.status_code == 404 and "no batch prediction" in edge.json()["error"]


def test_status_needs_the_api_key(server: httpx.Client, data_dir: Path) -> None:
    refused = server.get("/status")
    assert refused.status_code == 401 and "API key" in refused.json()["error"]
    assert str(data_dir) not in refused.text
    status = server.get("/status", headers=HEADERS)
    assert status.status_code == 200 and status.json()["model_version"] == "v0001"


def _wait_for(check, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.2)


def test_champion_named_before_its_folder_exists_is_loaded_when_it_arrives(
        server: httpx.Client, data_dir: Path, tmp_path: Path) -> None:
    registry = ModelRegistry(data_dir / "registry")
    old = registry.champion()
    new = registry.register(old.model_path.read_bytes(), training_data={"copy_of": "v0001"},
                            metrics={}, thresholds=old.thresholds)
    parked = tmp_path / new.version
    shutil.move(new.path, parked)
    tmp = registry.root / ".champion.tmp"
    tmp.write_text(json.dumps({"version": new.version, "history": [old.version]}))
    os.replace(tmp, registry.champion_file)

    def status() -> dict:
        return server.get("/status", headers=HEADERS).json()

    _wait_for(lambda: status()["champion_version"] == new.version, "champion.json read")
    now = status()
    assert now["serving_champion"] is False and now["ready"] is False
    assert now["model_version"] == old.version and new.version in now["model_error"]
    assert str(data_dir) not in json.dumps(now)
    assert server.get("/readyz").status_code == 503
    served = server.post("/score", json=GOOD, headers=HEADERS).json()
    assert served["model_version"] == old.version and served["fallback"] is False

    shutil.copytree(parked, new.path)  # the folder arrives, file by file
    _wait_for(lambda: server.get("/readyz").status_code == 200, "/readyz 200 again")
    now = status()
    assert now["model_version"] == new.version and now["serving_champion"] is True
    assert now["model_error"] is None
    served = server.post("/score", json={**GOOD, "transaction_id": 30_000_002},
                         headers=HEADERS).json()
    assert served["model_version"] == new.version
