"""Without a usable model the service still answers, by the documented rules, and says so:
`fallback: true`, model_version "fallback-rules", /readyz 503 (alive, not ready)."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.test_service_support import running_service

pytestmark = pytest.mark.slow


def test_no_model_means_rules_and_not_ready(small_pipeline: Path,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir = tmp_path_factory.mktemp("fallback") / "data"
    shutil.copytree(small_pipeline / "tables", data_dir / "tables")  # no registry at all
    with running_service(data_dir, ready=False) as url, httpx.Client(base_url=url) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        tx = {"transaction_id": 1, "tx_datetime": "2026-06-25T10:15:00Z", "customer_id": 42,
              "terminal_id": 7, "tx_amount": 500.0}
        body = client.post("/score", json=tx).json()
        assert body["fallback"] is True and body["model_version"] == "fallback-rules"
        assert body["decision"] == "decline" and body["thresholds"] is None
        small = client.post("/score", json={**tx, "transaction_id": 2, "tx_amount": 20.0})
        assert small.json()["decision"] in {"approve", "review"}
        assert "fraud_fallback_total 2.0" in client.get("/metrics").text
