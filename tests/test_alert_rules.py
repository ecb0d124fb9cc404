"""The alerting rules (monitoring/alerts.yml) and the gauges they need.

promtool checks the rules and runs their unit tests (monitoring/alerts_test.yml); every
``fraud_*`` name the rules use is one the service exports; and the real service (two
workers, so the multiprocess merge is exercised) exports the state gauges with the values of
what it loaded, and moves them when a new model is promoted and a new day lands.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fraudkit import lake
from fraudkit.registry import ModelRegistry
from tests.conftest import ROOT, private_copy
from tests.test_online_store import land_next_day
from tests.test_service_support import running_service

MONITORING = ROOT / "monitoring"
RULES = MONITORING / "alerts.yml"
STATE_GAUGES = ("fraud_feature_newest_day_timestamp_seconds",
                "fraud_model_created_timestamp_seconds",
                "fraud_batch_predictions_newest_day_timestamp_seconds")


def _promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed: `make test` installs it (Debian's prometheus "
                    "package: apt-get install -y prometheus)")
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    """Each alert fires on its input series and stays quiet just under its threshold."""
    result = _promtool("test", "rules", str(MONITORING / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def rule_metric_names() -> set[str]:
    """Every ``fraud_*`` series name the rules' expressions read."""
    return {name for rule in _rules() for name in re.findall(r"\bfraud_\w+", rule["expr"])}


def test_every_alert_has_severity_for_and_runbook() -> None:
    for rule in _rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule.get("for"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert "Runbook:" in rule["annotations"]["description"], rule["alert"]


def test_rules_read_only_metrics_that_bento_metrics_defines() -> None:
    """The names as bento/metrics.py creates them (counters end in _total, histograms have
    _bucket, _count and _sum): the rules and the code cannot drift apart unnoticed."""
    import prometheus_client as prom

    import bento.metrics

    exported = set()
    for value in vars(bento.metrics).values():
        if isinstance(value, prom.metrics.MetricWrapperBase):
            (family,) = value.describe()
            suffixes = {"counter": ["_total"], "gauge": [""],
                        "histogram": ["_bucket", "_count", "_sum"]}[family.type]
            exported |= {family.name + s for s in suffixes}
    assert set(STATE_GAUGES) <= exported
    assert rule_metric_names() - exported == set()


def test_observe_state_sets_timestamps_and_zero_for_nothing_loaded() -> None:
    """The gauges in this process (no multiprocess directory): a loaded state gives the
    days' and the manifest's times, nothing loaded gives 0, and a manifest that cannot be
    read keeps the model's previous value without stopping the others."""
    import prometheus_client as prom

    import bento.metrics

    def scorer(last_day, current, days, manifest):
        registry = SimpleNamespace(get=lambda version: SimpleNamespace(manifest=manifest()))
        index = None if days is None else SimpleNamespace(customers=days, rows={"day": days})
        return SimpleNamespace(store=SimpleNamespace(snapshot=SimpleNamespace(last_day=last_day)),
                               watcher=SimpleNamespace(current=current, registry=registry),
                               predictions=index)

    def values() -> list[float | None]:
        return [prom.REGISTRY.get_sample_value(name) for name in STATE_GAUGES]

    v1 = SimpleNamespace(version="v0001")
    bento.metrics.observe_state(scorer("2026-06-29", v1, ["2026-06-28", "2026-06-29", "2026-06-27"],
                                       lambda: {"created_at": "2026-07-01T12:00:00+00:00"}))
    assert values() == [_day_start("2026-06-29"), _day_start("2026-07-01") + 12 * 3600,
                        _day_start("2026-06-29")]

    def unreadable() -> dict:
        raise FileNotFoundError("manifest.json")

    bento.metrics.observe_state(scorer("2026-06-30", v1, None, unreadable))
    assert values() == [_day_start("2026-06-30"), _day_start("2026-07-01") + 12 * 3600, 0.0]
    bento.metrics.observe_state(scorer(None, None, [], unreadable))
    assert values() == [0.0, 0.0, 0.0]


def test_an_unexpected_failure_is_a_counted_json_500() -> None:
    """FraudHTTP5xxRate counts fraud_http_requests_total{code="5.."}: a handler that fails
    with anything but an API error (a scoring drain that raised) must still be answered as
    JSON and counted as a 500, not escape to BentoML's generic error page uncounted."""
    import asyncio

    import prometheus_client as prom
    from starlette.requests import Request

    from bento.api import _instrumented

    @_instrumented("/failing")
    async def failing(request: Request):
        raise RuntimeError("the drain failed")

    scope = {"type": "http", "method": "POST", "path": "/failing", "headers": [],
             "query_string": b""}
    response = asyncio.run(failing(Request(scope)))
    assert response.status_code == 500
    assert b"internal error" in response.body and b"drain" not in response.body
    assert prom.REGISTRY.get_sample_value(
        "fraud_http_requests_total", {"route": "/failing", "code": "500"}) == 1.0


# -- the real service --------------------------------------------------------------------
GOOD = {"transaction_id": 40_000_001, "tx_datetime": "2026-06-25T10:15:00Z",
        "customer_id": 42, "terminal_id": 7, "tx_amount": 57.3}


def _day_start(day: str) -> float:
    return dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp()


def _created(registry: ModelRegistry, version: str) -> float:
    return dt.datetime.fromisoformat(registry.get(version).manifest["created_at"]).timestamp()


def _samples(client: httpx.Client) -> dict[str, float]:
    """/metrics as {sample name: value} (the last sample of each name)."""
    return {s.name: s.value for family in text_string_to_metric_families(
        client.get("/metrics").text) for s in family.samples}


def _wait_for(client: httpx.Client, name: str, value: float, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while (got := _samples(client).get(name)) != value and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


@pytest.fixture(scope="module")
def data_dir(small_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy: the tests promote a model and land a day."""
    return private_copy(small_pipeline, tmp_path_factory.mktemp("alerts"))


@pytest.fixture(scope="module")
def server(data_dir: Path):
    with running_service(data_dir, {"ONLINE_WORKERS": "2"}) as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.mark.slow
def test_service_exports_what_the_rules_read(server: httpx.Client) -> None:
    assert server.post("/score", json=GOOD).status_code == 200  # the labelled series appear
    assert rule_metric_names() - set(_samples(server)) == set()


@pytest.mark.slow
def test_state_gauges_are_the_loaded_state(server: httpx.Client, data_dir: Path) -> None:
    tables = data_dir / "tables"
    registry = ModelRegistry(data_dir / "registry")
    samples = _samples(server)
    expected = {
        "fraud_feature_newest_day_timestamp_seconds":
            _day_start(lake.partition_values(str(tables / "raw_transactions"))[-1]),
        "fraud_model_created_timestamp_seconds":
            _created(registry, registry.champion().version),
        "fraud_batch_predictions_newest_day_timestamp_seconds":
            _day_start(lake.partition_values(str(tables / "batch_predictions"))[-1]),
    }
    assert {name: samples.get(name) for name in STATE_GAUGES} == expected
    for name in STATE_GAUGES:  # plausible: unix seconds, not milliseconds, not the future
        assert _day_start("2020-01-01") < samples[name] <= time.time(), name


@pytest.mark.slow
def test_state_gauges_follow_a_promotion_and_a_new_day(server: httpx.Client,
                                                        data_dir: Path) -> None:
    """Set when the state changes, in every worker's refresh thread: a hot-swap moves the
    model's gauge, a new raw_transactions day the feature history's."""
    registry = ModelRegistry(data_dir / "registry")
    champion = registry.champion()
    time.sleep(1.1)  # created_at has whole seconds: the new version's differs
    new = registry.register(champion.model_path.read_bytes(), training_data={}, metrics={},
                            thresholds=champion.thresholds)
    registry.promote(new.version, reason="test_alert_rules")
    name = "fraud_model_created_timestamp_seconds"
    assert _wait_for(server, name, _created(registry, new.version)) == _created(
        registry, new.version)

    raw = str(data_dir / "tables" / "raw_transactions")
    new_day, _ = land_next_day(raw, lake.partition_values(raw)[-1])
    name = "fraud_feature_newest_day_timestamp_seconds"
    assert _wait_for(server, name, _day_start(new_day)) == _day_start(new_day)
