"""Micro-batches within the day (sensors/landing.py): a day landing in several files across a
moved clock is scored as each file lands, holds exactly the rows landed so far, and ends
bit for bit as one run over all its files; a late file re-runs its day and the days that
look back on it; a file landing while a run is in progress waits and is scored once.

The sensor is evaluated as the daemon evaluates it (cursor carried, runs recorded in one
instance) and each run it requests is executed in this process with the code location's
jobs; ``test_daemon_scores_a_file_of_today`` runs the real ``dagster-daemon``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import sensors.landing as landing_module
from fraudkit import lake
from fraudkit.simulator import SimulationConfig, landing_path, write_landing
from resources import DeltaLakeResource, LandingZoneResource
from sensors.landing import LandedFile, LandingState, fingerprint, landing_sensor, plan_tick
from tests.conftest import pipeline_env
from tests.inprocess import definitions_for, failure_messages, run_in_process
from tests.servers import daemon_log, dagster_daemon

DAY = "2026-06-30"  # the day after the small simulation
NEXT = "2026-07-01"
#: The day's transactions in three files, by hour of the day.
PARTS = ((0, 8), (8, 16), (16, 24))
TABLES = ("raw_transactions", "transaction_features", "batch_predictions")
#: The lineage of a run, which two runs over the same files differ in: when each row was
#: scored and the version of transaction_features it read (one more commit per run).
RUN_COLUMNS = {"batch_predictions": ["scored_at", "feature_table_version"]}


def simulate_day(folder: Path, day: str = DAY, start_date: str = "2026-05-01") -> pa.Table:
    """One simulated day (the small population's), as the landing contract's table."""
    n_days = len(lake.day_range(start_date, day))
    cfg = replace(SimulationConfig.small(), start_date=start_date, n_days=n_days)
    [path] = write_landing(cfg, folder, days={day})
    return pq.read_table(path)


def land(table: pa.Table, landing: Path, name: str, staging: Path) -> Path:
    """Write ``table`` as a landing file atomically (staged outside the folder, renamed in),
    as a producer should: the sensor never sees half a file."""
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / name
    pq.write_table(table, tmp)
    path = landing / name
    tmp.replace(path)
    return path


def hours(table: pa.Table, first: int, end: int) -> pa.Table:
    hour = pc.hour(table["tx_datetime"])
    return table.filter(pc.and_(pc.greater_equal(hour, first), pc.less(hour, end)))


def part_name(first: int, end: int, day: str = DAY) -> str:
    return f"transactions_{day}_h{first:02d}-{end - 1:02d}.parquet"


class Sensor:
    """The landing sensor ticking on a moved clock, its cursor carried like the daemon's, and
    each run it requests executed here and recorded in the same instance."""

    def __init__(self, data_dir: Path, instance: dg.DagsterInstance,
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.data_dir, self.instance = data_dir, instance
        self.cursor: str | None = None
        self.clock = dt.datetime.fromisoformat(f"{DAY}T00:05:00+00:00")
        monkeypatch.setattr(landing_module, "now", lambda: self.clock)
        self.resources = {"landing": LandingZoneResource(path=str(data_dir / "landing")),
                          "delta": DeltaLakeResource(root=str(data_dir / "tables"))}
        self.defs = definitions_for(data_dir)

    def tick(self) -> dg.RunRequest | dg.SkipReason:
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor,
                                     resources=self.resources) as context:
            result = landing_sensor(context)
            self.cursor = context.cursor
        return result

    def execute(self, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def(request.job_name)
        result = job.execute_in_process(
            instance=self.instance, tags=request.tags, partition_key=request.partition_key,
            raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        return result

    def tick_and_run(self) -> dg.RunRequest:
        request = self.tick()
        assert isinstance(request, dg.RunRequest), request
        self.execute(request)
        return request


def day_table(data_dir: Path, name: str, day: str = DAY) -> pa.Table:
    table = lake.read_days(str(data_dir / "tables" / name), [day])
    return table.drop_columns(RUN_COLUMNS.get(name, []))


def ids(data_dir: Path, name: str, day: str = DAY) -> list[int]:
    return sorted(day_table(data_dir, name, day)["transaction_id"].to_pylist())


def drift_days(data_dir: Path) -> set[str]:
    uri = str(data_dir / "tables" / "drift_metrics")
    if lake.table_version(uri) is None:
        return set()
    return set(lake.partition_values(uri))


@pytest.fixture()
def pipeline(small_pipeline: Path, tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    shutil.copytree(small_pipeline, data_dir, ignore=shutil.ignore_patterns("dagster_home"))
    return data_dir


def test_a_day_in_files_is_scored_as_they_land_and_ends_as_one_run_over_them(
    pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = simulate_day(tmp_path / "sim")
    parts = [hours(day, a, b) for a, b in PARTS]
    landing, staging = pipeline / "landing", tmp_path / "staging"
    reference = tmp_path / "reference"  # the pipeline before the day, for one run over it
    shutil.copytree(pipeline, reference)
    landed: list[int] = []
    with dg.DagsterInstance.ephemeral() as instance:
        sensor = Sensor(pipeline, instance, monkeypatch)
        assert "baseline" in sensor.tick().skip_message
        for (first, end), part in zip(PARTS, parts, strict=True):
            sensor.clock = dt.datetime.fromisoformat(f"{DAY}T{end - 1:02d}:59:00+00:00")
            land(part, landing, part_name(first, end), staging)
            landed += part["transaction_id"].to_pylist()
            request = sensor.tick_and_run()
            assert (request.job_name, request.partition_key) == ("micro_batch_intraday", DAY)
            for name in TABLES:  # exactly the rows landed so far, once each
                assert ids(pipeline, name) == sorted(landed), name
            assert DAY not in drift_days(pipeline)  # a partial day is not reported
            skipped = sensor.tick()
            assert isinstance(skipped, dg.SkipReason), skipped  # nothing twice
        sensor.clock = dt.datetime.fromisoformat(f"{NEXT}T00:00:30+00:00")
        closing = sensor.tick_and_run()  # the day has ended: one run over all its files
        assert (closing.job_name, closing.partition_key) == ("micro_batch", DAY)
        assert "ended" in closing.tags["landing/reason"]
        assert DAY in drift_days(pipeline)
        assert isinstance(sensor.tick(), dg.SkipReason)

    # The same files in one run over the day, on the copy made before they landed.
    for first, end in PARTS:
        shutil.copy2(landing / part_name(first, end), reference / "landing")
    run = run_in_process(reference, "micro_batch", DAY, DAY)
    assert run.success, failure_messages(run)[-3000:]
    assert day_table(pipeline, "raw_transactions").num_rows == day.num_rows
    for name in TABLES:
        assert day_table(pipeline, name).equals(day_table(reference, name)), name  # bit for bit


def test_a_late_file_re_runs_its_day_and_the_days_that_look_back_on_it(
    pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    late_day, last = "2026-06-20", "2026-06-29"
    original = pq.read_table(landing_path(pipeline / "landing", late_day))
    # Transactions the day's first file did not have: new ids, same customers and terminals.
    extra = original.slice(0, 40)
    extra = extra.set_column(0, "transaction_id",
                             pc.add(extra["transaction_id"], pa.scalar(10**9, pa.int64())))
    customer = extra["customer_id"][0].as_py()
    before = day_table(pipeline, "transaction_features", last).to_pandas()
    with dg.DagsterInstance.ephemeral() as instance:
        sensor = Sensor(pipeline, instance, monkeypatch)
        sensor.clock = dt.datetime.fromisoformat(f"{NEXT}T09:00:00+00:00")
        sensor.tick()  # baseline
        land(extra, pipeline / "landing", f"late_{late_day}.parquet", tmp_path / "staging")
        request = sensor.tick_and_run()
        assert request.job_name == "micro_batch"
        assert request.tags["landing/days"] == f"{late_day}..{last}"
        assert "look back" in request.tags["landing/reason"]
        assert isinstance(sensor.tick(), dg.SkipReason)
    assert set(extra["transaction_id"].to_pylist()) <= set(ids(pipeline, "raw_transactions",
                                                               late_day))
    after = day_table(pipeline, "transaction_features", last).to_pandas()
    changed = after.set_index("transaction_id")["customer_nb_tx_30d"].sub(
        before.set_index("transaction_id")["customer_nb_tx_30d"])
    ours = after.loc[after["customer_id"] == customer, "transaction_id"]
    assert (changed.loc[ours] > 0).all() and len(ours)  # the late rows are in its window

    # A back-fill of every day from scratch, with the late file there from the start.
    reference = tmp_path / "reference"
    shutil.copytree(pipeline, reference)
    shutil.rmtree(reference / "tables")
    first = lake.partition_values(str(pipeline / "tables" / "raw_transactions"))[0]
    run = run_in_process(reference, "ingest_and_features", first, last)
    assert run.success, failure_messages(run)[-3000:]
    for day in lake.day_range(late_day, last):
        assert day_table(pipeline, "transaction_features", day).equals(
            day_table(reference, "transaction_features", day)), day


def test_a_file_landing_while_a_run_is_in_progress_waits_and_is_scored_once(
    pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = simulate_day(tmp_path / "sim")
    first, second = hours(day, 0, 12), hours(day, 12, 24)
    landing, staging = pipeline / "landing", tmp_path / "staging"
    (tmp_path / "home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        sensor = Sensor(pipeline, instance, monkeypatch)
        sensor.clock = dt.datetime.fromisoformat(f"{DAY}T23:00:00+00:00")
        sensor.tick()  # baseline
        land(first, landing, part_name(0, 12), staging)
        request = sensor.tick()
        assert isinstance(request, dg.RunRequest)
        seen: list[dg.RunRequest | dg.SkipReason] = []

        def land_during_the_run() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not instance.get_runs(
                    dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
                time.sleep(0.05)
            land(second, landing, part_name(12, 24), staging)
            seen.append(sensor.tick())

        thread = threading.Thread(target=land_during_the_run)
        thread.start()
        sensor.execute(request)
        thread.join()
        [waited] = seen
        assert isinstance(waited, dg.SkipReason) and "is started" in waited.skip_message
        again = sensor.tick_and_run()  # the file that landed meanwhile
        assert again.partition_key == DAY
        assert isinstance(sensor.tick(), dg.SkipReason)
    everything = sorted(day["transaction_id"].to_pylist())
    for name in TABLES:
        assert ids(pipeline, name) == everything, name  # every row, once


def test_files_of_days_to_come_wait_and_files_outside_the_calendar_are_named(
    pipeline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = simulate_day(tmp_path / "sim")
    landing, staging = pipeline / "landing", tmp_path / "staging"
    with dg.DagsterInstance.ephemeral() as instance:
        sensor = Sensor(pipeline, instance, monkeypatch)
        sensor.clock = dt.datetime.fromisoformat("2026-06-29T12:00:00+00:00")
        sensor.tick()  # baseline
        land(day, landing, f"transactions_{DAY}.parquet", staging)
        land(day.slice(0, 5), landing, "tx_2030-01-01.parquet", staging)
        (landing / f"notes_{DAY}.txt").write_text("not a landing file")
        waiting = sensor.tick()
        assert isinstance(waiting, dg.SkipReason)
        assert f"files of {DAY} wait for their day to begin" in waiting.skip_message
        assert "2030-01-01 is not between FRAUD_START_DATE" in waiting.skip_message
        sensor.clock = dt.datetime.fromisoformat(f"{DAY}T00:01:00+00:00")
        request = sensor.tick()
        assert (request.job_name, request.partition_key) == ("micro_batch_intraday", DAY)


def test_the_drift_report_of_the_day_in_progress_waits_for_it_to_end(pipeline: Path) -> None:
    """Launched from the UI on today (a partition while it is in progress), drift_report
    reports nothing for it and says why: a partial day's traffic is not a day's."""
    from assets.common import SETTINGS

    today = dt.datetime.now(dt.UTC).date().isoformat()
    if today > SETTINGS.end_date:
        pytest.skip(f"today {today} is after FRAUD_END_DATE {SETTINGS.end_date}: no partition")
    run = run_in_process(pipeline, "monitor_drift", today, today)
    assert run.success, failure_messages(run)[-3000:]
    [materialization] = run.result.asset_materializations_for_node("drift_report")
    assert materialization.metadata["days_not_ended"].value == (
        f"{today}: not reported until the day has ended")
    assert today not in drift_days(pipeline)


def test_a_later_day_without_a_landing_file_is_named_stale_once() -> None:
    """A late file's day is re-run with the later days that look back on it; a later day
    whose landing file is gone cannot be, and the tick names it and why, once."""
    def files(day: str, size: int = 1) -> list[LandedFile]:
        return [LandedFile(Path(f"transactions_{day}.parquet"), 1, size)]

    by_day = {d: files(d) for d in ("2026-06-20", "2026-06-21", "2026-06-22")}
    state = LandingState(done={d: fingerprint(f) for d, f in by_day.items()})
    by_day["2026-06-20"] = files("2026-06-20", size=2)  # replaced
    del by_day["2026-06-22"]  # its file was archived after ingestion
    featured = {"2026-06-20", "2026-06-21", "2026-06-22"}
    plan = plan_tick(state, by_day, "2026-06-25", featured)
    assert (plan.job, plan.days) == ("micro_batch", ("2026-06-20", "2026-06-21"))
    assert "look back on it (2026-06-21..2026-06-21)" in plan.reason
    [note] = plan.notes
    assert note.startswith("stale: 2026-06-22 looks back on 2026-06-20 whose files changed")
    again = plan_tick(state, by_day, "2026-06-25", featured)
    assert again.job is None and not again.notes


def test_an_earlier_sensor_s_cursor_still_reads(tmp_path: Path) -> None:
    """A cursor of the mtime-based sensor (a number, or seen/waiting/skipped): the days whose
    files were all seen count as done; a waiting file's day is still owed its run."""
    landing = tmp_path / "landing"
    cfg = SimulationConfig.small(n_days=2)
    paths = write_landing(cfg, landing)
    by_day, _ = landing_module.list_landing(landing)
    newest = max(f.mtime_ns for files in by_day.values() for f in files)
    assert set(LandingState.from_cursor(str(newest), by_day).done) == set(cfg.days)
    state = LandingState.from_cursor(
        f'{{"seen": {newest}, "waiting": {{"{paths[1]}": {newest}}}, "skipped": {{}}}}', by_day)
    assert set(state.done) == {cfg.days[0]}


@pytest.mark.slow
def test_daemon_scores_a_file_of_today(pipeline: Path, tmp_path: Path) -> None:
    """The real `dagster-daemon` with LANDING_SENSOR=running: a file of today (the wall
    clock's day, which Dagster offers as a partition) is scored by a micro_batch_intraday
    run it launches; the test prints the delay from landing to scored."""
    today = dt.datetime.now(dt.UTC).date().isoformat()
    day = simulate_day(tmp_path / "sim", today, lake.shift_day(today, -59))
    # New ids: the simulator numbers each simulation from 0, and the history has these.
    day = day.set_column(0, "transaction_id",
                         pc.add(day["transaction_id"], pa.scalar(10**9, pa.int64())))
    env = {**pipeline_env(pipeline), "LANDING_SENSOR": "running",
           "FRAUD_END_DATE": max("2026-12-31", today), "EVIDENTLY_WORKSPACE": "none"}
    with dagster_daemon(env, tmp_path) as (daemon, instance):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(  # the baseline tick
                s.instigator_name == "landing_sensor" and s.instigator_data
                and s.instigator_data.cursor for s in instance.all_instigator_state()):
            assert daemon.poll() is None, daemon_log(daemon)
            time.sleep(1)
        landed_at = time.monotonic()
        land(day, pipeline / "landing", f"transactions_{today}_h00-11.parquet",
             tmp_path / "staging")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            runs = instance.get_runs(dg.RunsFilter(job_name="micro_batch_intraday"))
            if runs and runs[0].is_finished:
                break
            assert daemon.poll() is None, daemon_log(daemon)
            time.sleep(1)
        delay = time.monotonic() - landed_at
        assert runs and runs[0].status == dg.DagsterRunStatus.SUCCESS, runs
        assert runs[0].tags["dagster/partition"] == today
        print(f"landing to scored through the daemon: {delay:.0f} s")
        assert ids(pipeline, "batch_predictions", today) == sorted(
            day["transaction_id"].to_pylist())
