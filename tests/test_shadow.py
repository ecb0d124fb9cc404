"""A shadow challenger: the registry's shadow.json, the real service scoring it beside the
champion and logging it, and the gate judging it on that live traffic."""

from __future__ import annotations

import json
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from assets.online import online_predictions
from assets.retraining import shadow_verdict
from fraudkit import lake
from fraudkit.registry import ModelRegistry, RegistryError
from fraudkit.registry import main as registry_cli
from resources import DeltaLakeResource, ModelRegistryResource, MonitoringResource
from resources.online import OnlineStoreResource
from scripts.replay_parity import replay
from tests.conftest import private_copy
from tests.test_online_durable import _settings
from tests.test_service_support import running_service

#: A day whose labels have matured in the small pipeline (raw data ends 2026-06-29).
DAY = "2026-06-15"


def _second_version(registry: ModelRegistry) -> str:
    """v0002: v0001's very model registered again (the same bytes: its scores are known)."""
    v1 = registry.get("v0001")
    v2 = registry.register(v1.model_path.read_bytes(),
                           training_data=v1.manifest["training_data"],
                           metrics=v1.manifest["metrics"], thresholds=v1.thresholds)
    return v2.version


@pytest.fixture
def data_dir(small_pipeline: Path, tmp_path: Path) -> Path:
    return private_copy(small_pipeline, tmp_path)


def test_the_registry_keeps_one_shadow_and_says_so(data_dir: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    registry = ModelRegistry(data_dir / "registry")
    v2 = _second_version(registry)
    with pytest.raises(RegistryError, match="is the champion"):
        registry.start_shadow("v0001")
    registry_cli(["--root", str(registry.root), "shadow", v2])
    assert registry.shadow_state()["version"] == v2
    registry_cli(["--root", str(registry.root), "list"])
    assert f"s {v2}" in capsys.readouterr().out
    registry_cli(["--root", str(registry.root), "shadow", "--stop"])
    assert registry.shadow_state() is None
    registry.start_shadow(v2)
    registry.promote(v2, reason="test")  # the challenger won: no longer in shadow
    assert registry.shadow_state() is None and registry.champion().version == v2
    events = [e["event"] for e in registry.events()]
    assert events[-5:] == ["shadow_started", "shadow_stopped", "shadow_started", "promoted",
                           "shadow_stopped"]
    registry.start_shadow("v0001")  # the old champion as a challenger, then rolled back to
    assert registry.rollback() == "v0001" and registry.shadow_state() is None
    registry.promote(v2, reason="test")
    (registry.root / "shadow.json").write_text("{broken")  # a committed rollback still ends
    assert registry.rollback() == "v0001" and not (registry.root / "shadow.json").exists()
    (registry.root / "shadow.json").write_text("{broken")
    with pytest.raises(RegistryError, match="shadow --stop"):
        registry.shadow_state()


def test_the_service_scores_the_shadow_logs_it_and_the_gate_judges_it(data_dir: Path) -> None:
    registry = ModelRegistry(data_dir / "registry")
    v2 = _second_version(registry)
    store_url = f"sqlite:///{data_dir / 'online' / 'store.sqlite3'}"
    env = {"ONLINE_STORE_URL": store_url, "ONLINE_STORE_CUTOFF": lake.shift_day(DAY, -1)}
    with running_service(data_dir, env) as url, httpx.Client(base_url=url) as client:
        assert client.get("/status").json()["shadow"] == {"version": None, "error": None}
        registry.start_shadow(v2, reason="test")  # picked up by the running service
        deadline = time.monotonic() + 20
        while client.get("/status").json()["shadow"]["version"] != v2:
            assert time.monotonic() < deadline, client.get("/status").json()
            time.sleep(0.2)
        report = replay(url, DAY, DAY, _settings(data_dir), chunk=100, single_every=10,
                        client=client)
        answer = client.post("/score", json={
            "transaction_id": 1, "tx_datetime": f"{DAY}T23:59:59Z", "customer_id": 1,
            "terminal_id": 1, "tx_amount": 10.0}).json()
    assert report.rate == 1.0, report.mismatches[:5]  # answers: the champion's, exact
    assert answer["model_version"] == "v0001" and "shadow_score" not in json.dumps(answer)
    result = dg.materialize([online_predictions], partition_key=DAY, resources={
        "delta": DeltaLakeResource(root=str(data_dir / "tables")),
        "online_store": OnlineStoreResource(url=store_url)})
    assert result.success
    logged = lake.read_days(str(data_dir / "tables" / "online_predictions"), [DAY]).to_pandas()
    logged = logged[logged["transaction_id"] != 1]
    assert len(logged) == report.transactions > 100
    assert set(logged["shadow_version"]) == {v2} and set(logged["model_version"]) == {"v0001"}
    assert (logged["shadow_score"] - logged["score"]).abs().max() == 0.0  # the same model

    judged = dg.materialize([shadow_verdict], resources={
        "delta": DeltaLakeResource(root=str(data_dir / "tables")),
        "registry": ModelRegistryResource(root=str(registry.root)),
        "monitoring": MonitoringResource(performance_floor=None, workspace="none")})
    assert judged.success
    meta = judged.get_asset_materialization_events()[0].materialization.metadata
    assert meta["decision"].value == "promoted"
    assert meta["evidence"].value.startswith(f"live traffic: {len(logged)} requests of {DAY}")
    assert registry.champion().version == v2 and registry.shadow_state() is None
    promoted = [e for e in registry.events() if e["event"] == "promoted"][-1]
    assert promoted["evidence"] == "shadow" and promoted["shadow_days"] == [DAY, DAY]
