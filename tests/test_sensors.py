"""The drift sensor against drift reports computed on simulated data: with drift injected
it launches exactly one retraining run for the event, over the same number of normal days
none. Also the cool-down and the landing sensor's once-per-file run keys, and (slow) the
whole loop under a real `dagster-daemon`."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import pyarrow as pa
import pytest

from assets.drift import DRIFT_TABLE
from fraudkit import lake
from fraudkit.model import Thresholds
from fraudkit.monitoring.drift import DRIFT_METRICS_SCHEMA
from fraudkit.monitoring.trigger import (
    Event,
    Launched,
    TriggerConfig,
    about_champion,
    decide_trigger,
)
from fraudkit.registry import ModelRegistry
from fraudkit.simulator import SimulationConfig, write_landing
from resources import (
    DeltaLakeResource,
    ModelRegistryResource,
    MonitoringResource,
)
from scripts.instance import POSTGRES_URL
from scripts.serving import PostgresServer
from sensors.drift import drift_sensor
from tests.conftest import pipeline_env
from tests.inprocess import failure_messages, run_in_process
from tests.servers import daemon_log, dagster_daemon, dagster_webserver

NEW_DAYS = ("2026-06-30", "2026-07-04")  # 5 days after the small simulation's last day
END_DATE = "2026-07-31"
SMALL_RETRAIN_ENV = {"RETRAIN_TRAIN_DAYS": "21", "RETRAIN_TEST_DAYS": "7",
                     "RETRAIN_WARMUP_DAYS": "7", "FRAUD_END_DATE": END_DATE}


def land_and_process(small_pipeline: Path, target: Path, drift_from: str | None) -> Path:
    """Copy the pipeline, land 5 more days (drifted or not), run them through micro_batch
    (ingest, features, score, drift_report) as one Dagster run, in this process."""
    data_dir = target / "data"
    shutil.copytree(small_pipeline, data_dir)
    cfg = replace(SimulationConfig.small(), n_days=65, drift_from=drift_from)
    days = {d for d in cfg.days if d >= NEW_DAYS[0]}
    write_landing(cfg, data_dir / "landing", days=days)
    result = run_in_process(data_dir, "micro_batch", *NEW_DAYS)
    assert result.success, failure_messages(result)[-3000:]
    return data_dir


@pytest.fixture(scope="module")
def drifted(small_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return land_and_process(small_pipeline, tmp_path_factory.mktemp("drifted"), NEW_DAYS[0])


@pytest.fixture(scope="module")
def normal(small_pipeline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small pipeline's last five days (no drift was simulated), with drift reports."""
    data_dir = tmp_path_factory.mktemp("normal") / "data"
    shutil.copytree(small_pipeline, data_dir)
    result = run_in_process(data_dir, "monitor_drift", "2026-06-25", "2026-06-29")
    assert result.success, failure_messages(result)[-3000:]
    return data_dir


def evaluate(data_dir: Path, ticks: int = 3) -> tuple[list[dg.RunRequest], list[str]]:
    """Evaluate the drift sensor ``ticks`` times, carrying the cursor like the daemon."""
    resources = {"delta": DeltaLakeResource(root=str(data_dir / "tables")),
                 "monitoring": MonitoringResource(performance_floor=None, workspace="none"),
                 "registry": ModelRegistryResource(root=str(data_dir / "registry"))}
    requests, skips, cursor = [], [], None
    with dg.DagsterInstance.ephemeral() as instance:
        for _ in range(ticks):
            context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                              resources=resources)
            result = drift_sensor(context)
            cursor = context.cursor
            if isinstance(result, dg.RunRequest):
                requests.append(result)
            else:
                skips.append(result.skip_message)
    return requests, skips


def test_drift_launches_exactly_one_retraining(drifted: Path) -> None:
    requests, skips = evaluate(drifted)
    assert len(requests) == 1, skips
    request = requests[0]
    assert request.run_key.startswith("retrain-drift-2026-0")
    assert request.tags["monitoring/trigger"] == "drift"
    assert float(request.tags["monitoring/value"]) >= MonitoringResource().drift_share
    assert all("already handled" in s for s in skips), skips
    assert (drifted / "reports" / "drift" / "drift_2026-07-04.html").stat().st_size > 10_000


def test_every_report_of_a_run_reaches_one_evidently_project(drifted: Path) -> None:
    """The 5 days reported in one run are 5 runs of the one "fraud monitoring" project
    (the workspace is opened once per run, not once per day)."""
    from evidently.ui.workspace import Workspace

    workspace = Workspace.create(str(drifted / "evidently"))
    [project] = workspace.list_projects()
    assert project.name == "fraud monitoring"
    assert len(workspace.list_runs(project.id)) == 5


def test_normal_days_launch_nothing(normal: Path) -> None:
    requests, skips = evaluate(normal)
    assert requests == []
    assert all("no day crosses a threshold" in s for s in skips), skips


def test_drift_under_a_retired_model_launches_nothing(drifted: Path, tmp_path: Path) -> None:
    """Once another model is champion, the drift measured against the old one is no
    evidence about it: the sensor skips and says how many rows it left aside."""
    data_dir = tmp_path / "data"
    shutil.copytree(drifted, data_dir, ignore=shutil.ignore_patterns("dagster_home"))
    registry = ModelRegistry(data_dir / "registry")
    old = registry.champion()
    new = registry.register(old.model_path.read_bytes(), training_data=old.manifest[
        "training_data"], metrics=old.manifest["metrics"], thresholds=old.thresholds)
    registry.promote(new.version, reason="test: a new champion")
    requests, skips = evaluate(data_dir, ticks=1)
    assert requests == []
    assert f"about champion {new.version}: 0 day(s) of drift" in skips[0], skips


def test_about_champion_keeps_its_own_out_of_sample_days() -> None:
    per_day = pd.DataFrame({"day": ["2026-06-01", "2026-06-20", "2026-07-02", "2026-07-03"],
                            "model_version": ["v0001", "v0002", "v0002", "v0003"]})
    assert about_champion(per_day, "v0002")["day"].tolist() == ["2026-06-20", "2026-07-02"]
    assert about_champion(per_day, "v0002", after_day="2026-06-30")["day"].tolist() == [
        "2026-07-02"]


def test_cooldown_defers_a_second_event() -> None:
    cfg = TriggerConfig(cooldown_seconds=600)
    first = Event("drift", "2026-07-01", "2026-07-03", 3, 0.4, "v0001", "")
    second = Event("performance", "2026-07-09", "2026-07-09", 1, 0.2, "v0001", "")
    launched = [Launched.of(first)]
    decision = decide_trigger([first, second], launched, last_launch_at=1000.0,
                              now=1300.0, cfg=cfg)
    assert decision.launch is None and "cool-down" in decision.reason
    decision = decide_trigger([first, second], launched, last_launch_at=1000.0,
                              now=1700.0, cfg=cfg)
    assert decision.launch == second


def report_days(tables: Path, shares: dict[str, float], model_version: str = "v0001") -> None:
    """(Re-)report days in drift_metrics the way drift_report does: each day's rows are
    replaced (one column row per day is all the sensor needs)."""
    uri = str(tables / DRIFT_TABLE)
    lake.ensure_table(uri, DRIFT_METRICS_SCHEMA)
    for day, share in shares.items():
        row = {"column": "tx_amount", "kind": "feature", "method": "wasserstein",
               "threshold": 0.2, "drift_score": share, "drifted": share >= 0.2,
               "counted_in_share": True, "drift_share": share, "drifted_features": 1,
               "monitored_features": 5, "dataset_drift": share >= 0.2,
               "prediction_drift": False, "current_rows": 100, "current_rows_used": 100,
               "reference_rows": 100, "model_version": model_version, "report_path": "",
               "computed_at": dt.datetime.now(dt.UTC), "day": day}
        lake.replace_days(uri, pa.Table.from_pylist([row], schema=DRIFT_METRICS_SCHEMA), [day])


def small_registry(root: Path) -> ModelRegistry:
    """A registry whose champion v0001 is a stand-in artifact (the drift sensor reads only
    the champion's version and manifest)."""
    registry = ModelRegistry(root)
    version = registry.register(b"stand-in", training_data={"test_range": ["2026-06-01",
                                                                           "2026-06-14"]},
                                metrics={}, thresholds=Thresholds(review=0.3, decline=0.8))
    registry.promote(version.version, reason="test")
    return registry


class DriftSensorTicks:
    """Ticks the drift sensor in process, carrying its cursor like the daemon; no cool-down."""

    def __init__(self, tables: Path, registry: Path) -> None:
        self.cursor: str | None = None
        self.resources = {"delta": DeltaLakeResource(root=str(tables)),
                          "monitoring": MonitoringResource(performance_floor=None,
                                                           workspace="none",
                                                           cooldown_seconds=0),
                          "registry": ModelRegistryResource(root=str(registry))}

    def tick(self) -> dg.RunRequest | dg.SkipReason:
        context = dg.build_sensor_context(cursor=self.cursor, resources=self.resources)
        result = drift_sensor(context)
        self.cursor = context.cursor
        return result


def test_one_drift_episode_launches_one_retrain_however_it_is_re_reported(
        tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    registry = small_registry(tmp_path / "registry")
    sensor = DriftSensorTicks(tables, registry.root)
    report_days(tables, {"2026-07-01": 0.5, "2026-07-02": 0.5, "2026-07-03": 0.5})
    first = sensor.tick()
    assert isinstance(first, dg.RunRequest)
    assert first.tags["monitoring/days"] == "2026-07-01..2026-07-03"
    for change in (
        {"2026-06-30": 0.5},  # an earlier day re-reported drifted: starts a day sooner
        {"2026-07-02": 0.0},  # the middle day re-reported normal: the episode splits
        {"2026-07-04": 0.5},  # the day right after drifts too: the episode goes on
    ):
        report_days(tables, change)
        skipped = sensor.tick()
        assert isinstance(skipped, dg.SkipReason), skipped
        assert "already launched" in skipped.skip_message, skipped.skip_message
    # A day of no drift data in between (07-05): a new episode, launched once.
    report_days(tables, {"2026-07-06": 0.5, "2026-07-07": 0.5})
    second = sensor.tick()
    assert isinstance(second, dg.RunRequest), second
    assert second.tags["monitoring/days"] == "2026-07-06..2026-07-07"
    assert second.run_key != first.run_key
    assert isinstance(sensor.tick(), dg.SkipReason)
    # A new champion: the same days scored by it are evidence about it, a new episode.
    new = registry.register(b"stand-in 2", training_data=registry.champion().manifest[
        "training_data"], metrics={}, thresholds=Thresholds(review=0.3, decline=0.8))
    registry.promote(new.version, reason="test")
    report_days(tables, {d: 0.5 for d in ("2026-07-01", "2026-07-02", "2026-07-03")},
                model_version=new.version)
    third = sensor.tick()
    assert isinstance(third, dg.RunRequest), third
    assert third.tags["monitoring/model_version"] == new.version
    assert third.run_key not in (first.run_key, second.run_key)


@pytest.mark.parametrize(("damage", "problem"), [
    ("garbage", "is not valid JSON"),
    ("no version", "names no champion version"),
    ("folder deleted", "has no manifest.json"),
])
def test_drift_sensor_skips_naming_the_broken_registry_file(
        tmp_path: Path, damage: str, problem: str) -> None:
    registry = small_registry(tmp_path / "registry")
    if damage == "garbage":
        registry.champion_file.write_text("{oops")
    elif damage == "no version":
        registry.champion_file.write_text('{"history": []}')
    else:
        shutil.rmtree(registry.versions_dir / "v0001")
    skipped = DriftSensorTicks(tmp_path / "tables", registry.root).tick()
    assert isinstance(skipped, dg.SkipReason), skipped
    message = skipped.skip_message
    assert str(registry.champion_file) in message and problem in message, message
    assert "fraudkit.registry promote" in message and "materialize" not in message, message


def test_an_older_cursor_s_launched_names_still_hold_their_episode() -> None:
    """Cursors written before episodes were remembered by days kept "<kind>-<first day>"."""
    [old] = [Launched.from_cursor("drift-2026-07-01")]
    moved = Event("drift", "2026-06-30", "2026-07-02", 3, 0.4, "v0002", "")
    decision = decide_trigger([moved], [old], None, now=0.0, cfg=TriggerConfig())
    assert decision.launch is None and "episode drift-2026-07-01" in decision.reason
    assert decision.launched == [Launched("drift", "2026-06-30", "2026-07-02", None,
                                          "drift-2026-07-01")]


RUNS_QUERY = """query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) { ... on Runs { results { runId status jobName } } }
}"""


@pytest.mark.slow
def test_daemon_on_postgres_launches_retraining_and_queues_a_second_one(
        drifted: Path, tmp_path: Path) -> None:
    """The real loop on Dagster's PostgreSQL storage (a server this test starts):
    `dagster-daemon run` ticks the drift sensor, which launches `retrain`; the run trains a
    challenger and the gate records its verdict in the registry. Meanwhile a user launches a
    second `retrain` through `dagster-webserver` (its GraphQL API, as the UI does): the run
    queue holds it QUEUED (pool model_training, one slot) until the first has finished."""
    from dagster_graphql import DagsterGraphQLClient

    data_dir = tmp_path / "data"
    shutil.copytree(drifted, data_dir)
    registry = ModelRegistry(data_dir / "registry")
    versions_before, events_before = registry.versions(), registry.events()
    with PostgresServer() as postgres:
        env = {**pipeline_env(data_dir), **SMALL_RETRAIN_ENV, "MONITOR_SENSOR_INTERVAL": "5",
               "MONITOR_PERFORMANCE_FLOOR": "none", "EVIDENTLY_WORKSPACE": "none",
               POSTGRES_URL: postgres.url}
        with (dagster_daemon(env, tmp_path) as (daemon, instance),
              dagster_webserver(env, tmp_path) as url):
            assert "postgres" in type(instance.run_storage).__module__
            port = int(url.rsplit(":", 1)[1])
            client = DagsterGraphQLClient("127.0.0.1", port_number=port)
            by_user, queued_behind = None, False
            deadline = time.monotonic() + 360
            while time.monotonic() < deadline:
                assert daemon.poll() is None, daemon_log(daemon)
                runs = instance.get_runs(dg.RunsFilter(job_name="retrain"))
                if runs and by_user is None:  # the sensor's run exists: a user asks for one
                    by_user = client.submit_job_execution("retrain", tags={"launched": "ui"})
                statuses = {run.status for run in runs}
                queued_behind |= {dg.DagsterRunStatus.STARTED,
                                  dg.DagsterRunStatus.QUEUED} <= statuses
                if len(runs) == 2 and all(run.is_finished for run in runs):
                    break
                time.sleep(1)
            records = instance.get_run_records(dg.RunsFilter(job_name="retrain"))
            assert len(records) == 2, "the daemon launched no retrain run, or the UI's " \
                                      "stayed queued, in time"
            assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
            first, second = sorted(records, key=lambda r: r.start_time)
            assert second.start_time >= first.end_time, "two trainings ran at once"
            assert queued_behind, "one run was never seen QUEUED while the other ran"
            sensor_run = next(r.dagster_run for r in records if r.dagster_run.run_id != by_user)
            assert sensor_run.tags["monitoring/trigger"] == "drift"
            # The webserver reads the same PostgreSQL storage.
            answer = httpx.post(url + "/graphql", json={
                "query": RUNS_QUERY, "variables": {"filter": {"pipelineName": "retrain"}}})
            shown = {r["runId"]: r["status"] for r in
                     answer.json()["data"]["runsOrError"]["results"]}
            assert shown == {r.dagster_run.run_id: "SUCCESS" for r in records}
    # Each run added one version and, after its registration, the verdict on it carrying
    # its run id (the copied registry already ends with a promotion, which proves nothing).
    added = registry.events()[len(events_before):]
    challengers = sorted(set(registry.versions()) - set(versions_before))
    assert len(challengers) == 2
    for challenger, run_id in zip(challengers, (first.dagster_run.run_id,
                                                second.dagster_run.run_id), strict=True):
        mine = [(e["event"], e["version"]) for e in added if e["version"] == challenger]
        assert mine in ([("registered", challenger), ("promoted", challenger)],
                        [("registered", challenger), ("gate_rejected", challenger)]), added
        verdict = [e for e in added if e["version"] == challenger][-1]
        assert verdict["trigger"]["run_id"] == run_id, verdict
