"""Freshness checks (assets/freshness.py) and their sensor (sensors/freshness.py).

The expected day is the one that ended before the last deadline, never the day in
progress, though that is a partition too (``end_offset=1``): the rule alone is checked on
clock values, then the checks on an empty instance given a few materializations (the open
day's, yesterday's). Then the checks and the sensor run for real against a copy of the small
pipeline's own Dagster instance, which holds the materializations of every day
2026-05-01..2026-06-29 of raw_transactions, transaction_features and batch_predictions
(online_predictions: none, until this test materializes its last day from a SQLite store).
Only the clock moves, with Dagster's own test helper ``freeze_time`` (it patches
``dagster._time``, which the checks and the sensor read): just after the deadline of
2026-06-29, before and after the next one.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time

from assets.common import SETTINGS, daily_partitions
from assets.freshness import (
    DEADLINE_ENV,
    FRESHNESS_ASSETS,
    SEVERITY_ENV,
    TIMEZONE_ENV,
    FreshnessSettings,
    build_freshness_checks,
    deadline_cron,
    expected_day,
)
from assets.online import online_predictions
from definitions import defs
from fraudkit.config import Settings
from fraudkit.store import day_start_us, open_store
from resources.storage import default_resources
from sensors.freshness import SENSOR_ENV, build_freshness_sensor, default_status
from tests.conftest import SMALL_END_DATE, private_copy
from tests.test_store import decision

LAST_DAY = SMALL_END_DATE  # the small pipeline's last day: 2026-06-29
NEXT_DAY = "2026-06-30"  # never landed
UTC = dt.UTC
BATCH = ("raw_transactions", "transaction_features", "batch_predictions")
FRESHNESS = "freshness_check"


def at(day: str, hh_mm: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{hh_mm}:00+00:00")


def test_the_code_location_has_a_check_per_daily_asset_and_the_jobs_leave_them_out() -> None:
    checks = {k for k in defs.resolve_asset_graph().asset_check_keys if k.name == FRESHNESS}
    assert {k.asset_key for k in checks} == set(FRESHNESS_ASSETS)
    assert {k.to_user_string() for k in FRESHNESS_ASSETS} == {*BATCH, "online_predictions"}
    for job in ("ingest_and_features", "score", "online_log"):
        nodes = defs.resolve_job_def(job).graph.node_dict
        assert not [n for n in nodes if n.startswith(FRESHNESS)], (job, list(nodes))
    sensor = defs.resolve_sensor_def("freshness_sensor")
    assert sensor.default_status == default_status(os.environ.get(SENSOR_ENV))
    assert default_status(None) == dg.DefaultSensorStatus.STOPPED
    assert sensor.minimum_interval_seconds == 60


def test_settings_parse_and_name_the_variable_when_wrong() -> None:
    assert deadline_cron("06:00") == "0 6 * * *"
    assert deadline_cron("7:45") == "45 7 * * *"
    assert deadline_cron("0 6 * * 1-5") == "0 6 * * 1-5"
    assert FreshnessSettings.from_env({}) == FreshnessSettings("06:00", "UTC", "warn")
    env = {DEADLINE_ENV: "09:30", TIMEZONE_ENV: "Europe/Paris", SEVERITY_ENV: "ERROR"}
    assert FreshnessSettings.from_env(env) == FreshnessSettings("09:30", "Europe/Paris",
                                                                "error")
    assert default_status("Running") == dg.DefaultSensorStatus.RUNNING
    for bad, variable in [(FreshnessSettings(deadline="24:00"), DEADLINE_ENV),
                          (FreshnessSettings(deadline="at six"), DEADLINE_ENV),
                          (FreshnessSettings(timezone="Mars/Olympus"), TIMEZONE_ENV),
                          (FreshnessSettings(severity="loud"), SEVERITY_ENV)]:
        with pytest.raises(ValueError, match=variable):
            build_freshness_checks(bad)
    with pytest.raises(ValueError, match=SENSOR_ENV):
        default_status("on")


def test_the_expected_day_is_the_last_one_ended_at_the_deadline_within_the_calendar() -> None:
    def due(now: dt.datetime, settings: FreshnessSettings = FreshnessSettings()) -> str | None:
        return expected_day(now, settings, first_day="2026-05-01", last_day="2026-12-31")[1]

    assert due(at("2026-06-30", "05:59")) == "2026-06-28"  # 06-29 is not due before 06:00
    assert due(at("2026-06-30", "06:00")) == "2026-06-29"  # nor ever 06-30, the open day
    assert due(at("2026-06-30", "23:59")) == "2026-06-29"
    # Europe/Paris 01:00 in summer is 23:00 UTC the day before: 06-29 had not ended yet.
    assert due(at("2026-06-30", "06:00"), FreshnessSettings("01:00", "Europe/Paris")) == (
        "2026-06-28")
    # Weekdays only: on Monday 2026-06-29 before 06:00 the last deadline is Friday's.
    deadline, day = expected_day(at("2026-06-29", "05:00"), FreshnessSettings("0 6 * * 1-5"))
    assert (deadline, day) == (at("2026-06-26", "06:00"), "2026-06-25")
    # The calendar's last day stays due after it; before its first day none is.
    assert due(at("2027-03-01", "12:00")) == "2026-12-31"
    assert due(at("2026-05-01", "12:00")) is None
    assert due(at("2026-05-02", "06:00")) == "2026-05-01"


def test_the_open_day_neither_passes_nor_fails_a_check() -> None:
    """Today's partition materialized and yesterday's missing fails, naming yesterday;
    yesterday's materialized passes whether today's is or not."""
    yesterday, today = "2026-06-30", "2026-07-01"
    if not SETTINGS.start_date < yesterday < SETTINGS.end_date:
        pytest.skip(f"the calendar {SETTINGS.start_date}..{SETTINGS.end_date} does not "
                    f"hold {yesterday} and the day around it")
    noon = at(today, "12:00")
    with freeze_time(noon):
        assert daily_partitions.get_last_partition_key() == today, "today is a partition"
    checks = build_freshness_checks(FreshnessSettings(deadline="06:00", timezone="UTC"))
    asset = FRESHNESS_ASSETS[0]
    keys = [dg.AssetCheckKey(asset, FRESHNESS)]

    def evaluate(instance: dg.DagsterInstance, now: dt.datetime) -> dg.AssetCheckEvaluation:
        with freeze_time(now):
            result = dg.materialize(checks, instance=instance,
                                    selection=dg.AssetSelection.checks(*keys))
        [evaluation] = result.get_asset_check_evaluations()
        return evaluation

    def land(instance: dg.DagsterInstance, day: str) -> None:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=day))

    with dg.instance_for_test() as instance:
        land(instance, "2026-06-29")
        # The day before, at noon: 06-29 is due and there, 06-30 (open) is not there.
        before = evaluate(instance, at(yesterday, "12:00"))
        assert before.passed, before.description
        assert "2026-06-29 has been materialized" in before.description

        land(instance, today)  # the open day's first micro-batch, say
        late = evaluate(instance, noon)
        assert not late.passed
        assert late.description == (f"Asset is overdue. We expected partition {yesterday} "
                                    "to have arrived, and it has not.")
        assert "dagster/fresh_until_timestamp" not in late.metadata

        land(instance, yesterday)
        fresh = evaluate(instance, noon)
        assert fresh.passed, fresh.description
        assert f"partition {yesterday} has been materialized" in fresh.description
        stamp = fresh.metadata["dagster/fresh_until_timestamp"].value
        assert dt.datetime.fromtimestamp(stamp, UTC) == at("2026-07-02", "06:00")

    with dg.instance_for_test() as empty:
        # Before the first deadline that expects the calendar's first day: nothing is due.
        early = evaluate(empty, at(SETTINGS.start_date, "12:00"))
        assert early.passed
        assert f"the calendar starts on {SETTINGS.start_date}" in early.description
        assert "dagster/fresh_until_timestamp" in early.metadata


@pytest.fixture
def instance(small_pipeline: Path, tmp_path: Path):
    """A copy of the instance that recorded the small pipeline's runs (5 MB)."""
    home = tmp_path / "dagster_home"
    shutil.copytree(small_pipeline / "dagster_home", home)
    with dg.DagsterInstance.from_config(str(home)) as copy:
        yield copy


def test_a_day_passes_until_the_next_deadline_then_fails_naming_the_missing_day(
    small_pipeline: Path, tmp_path: Path, instance: dg.DagsterInstance
) -> None:
    if SETTINGS.end_date < NEXT_DAY:
        pytest.skip(f"FRAUD_END_DATE ends the calendar at {SETTINGS.end_date}: after that "
                    "day the checks expect the calendar's last day")
    data_dir = private_copy(small_pipeline, tmp_path)
    settings = Settings(data_dir=data_dir)
    resources = default_resources(settings)
    # The settings are given, so the test does not depend on FRESHNESS_* in the environment.
    checks = build_freshness_checks(FreshnessSettings(deadline="06:00", timezone="UTC"))
    sensor = build_freshness_sensor(checks, dg.DefaultSensorStatus.RUNNING)
    location = dg.Definitions(assets=defs.assets, asset_checks=checks, sensors=[sensor],
                              resources=resources)

    def tick(now: dt.datetime) -> set[str] | str:
        """The sensor at ``now``: the assets whose check it requests, or its skip reason."""
        with freeze_time(now):
            request = sensor(dg.build_sensor_context(instance=instance, definitions=location))
        if isinstance(request, dg.SkipReason):
            return request.skip_message
        return {key.asset_key.to_user_string() for key in request.asset_check_keys}

    def evaluate(now: dt.datetime, assets: set[str]) -> dict[str, dg.AssetCheckEvaluation]:
        """Run those assets' freshness checks at ``now``, as the sensor's run would."""
        keys = [dg.AssetCheckKey(dg.AssetKey(a), FRESHNESS) for a in sorted(assets)]
        with freeze_time(now):
            result = dg.materialize([*defs.assets, *checks], instance=instance,
                                    resources=resources,
                                    selection=dg.AssetSelection.checks(*keys))
        assert result.success
        return {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}

    def fresh_until(evaluation: dg.AssetCheckEvaluation) -> dt.datetime:
        stamp = evaluation.metadata["dagster/fresh_until_timestamp"].value
        return dt.datetime.fromtimestamp(stamp, UTC)

    # 2026-06-30 06:30: 2026-06-29 was due at 06:00. Never evaluated: every check runs.
    everything = {*BATCH, "online_predictions"}
    assert tick(at(NEXT_DAY, "06:30")) == everything
    first = evaluate(at(NEXT_DAY, "06:30"), everything)
    for name in BATCH:
        assert first[name].passed, first[name].description
        assert f"partition {LAST_DAY} has been materialized" in first[name].description
        assert fresh_until(first[name]) == at("2026-07-01", "06:00")
    online = first["online_predictions"]
    assert not online.passed
    assert online.severity == dg.AssetCheckSeverity.WARN
    assert "never been materialized" in online.description
    assert f"expect partition {LAST_DAY}" in online.description
    # A failed check is not evaluated again until its asset changes: no run every minute.
    reason = tick(at(NEXT_DAY, "06:31"))
    assert isinstance(reason, str) and "No freshness checks need to be evaluated" in reason

    # The service's log of 2026-06-29 moves to Delta: a real materialization of the day.
    store = open_store(settings.online_store_url)  # the copy's own: DATA_DIR/online
    t0 = day_start_us(LAST_DAY)
    store.write([decision(i, t0 + i * 60_000_000, i % 3, 7, float(i)) for i in range(1, 6)])
    store.close()
    landed = dg.materialize([online_predictions], partition_key=LAST_DAY, instance=instance,
                            resources=resources)
    assert landed.success
    # Only the failed check whose asset has been updated since runs again, and passes.
    assert tick(at(NEXT_DAY, "06:35")) == {"online_predictions"}
    again = evaluate(at(NEXT_DAY, "06:35"), {"online_predictions"})
    assert again["online_predictions"].passed, again["online_predictions"].description

    # 2026-07-01 05:59: 2026-06-30 is not due yet; the sensor launches nothing, and a check
    # run now (the UI's "Execute") still looks at 2026-06-29.
    reason = tick(at("2026-07-01", "05:59"))
    assert isinstance(reason, str) and "No freshness checks need to be evaluated" in reason
    early = evaluate(at("2026-07-01", "05:59"), everything)
    assert all(e.passed and LAST_DAY in e.description for e in early.values())

    # 06:01: 2026-06-30 was due at 06:00 and never landed: every check runs and fails,
    # naming the day, the deadline and when the asset last changed.
    assert tick(at("2026-07-01", "06:01")) == everything
    late = evaluate(at("2026-07-01", "06:01"), everything)
    for name, evaluation in late.items():
        assert not evaluation.passed, name
        assert evaluation.description == (f"Asset is overdue. We expected partition "
                                          f"{NEXT_DAY} to have arrived, and it has not.")
        deadline = evaluation.metadata["dagster/latest_cron_tick_timestamp"].value
        assert dt.datetime.fromtimestamp(deadline, UTC) == at("2026-07-01", "06:00")
        assert "dagster/last_updated_timestamp" in evaluation.metadata
