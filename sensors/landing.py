"""Micro-batches: landing files are scored minutes after they land, within the day too.

Each tick lists the landing folder and compares each day's files (their names, sizes and
modification times: a *fingerprint*) with those of the day's last run, kept in the cursor.
A day whose files changed is run again over **all** its files, so every run replaces the
day's partitions of ``raw_transactions``, ``transaction_features`` and
``batch_predictions`` with exactly the rows of the files landed so far, once each:

* **the day in progress** (the sensor's clock, UTC; Dagster offers it as a partition, see
  ``assets/common.py``): a ``micro_batch_intraday`` run, without the drift report, as each
  file lands. Once the day has ended, one ``micro_batch`` run over all its files ends the
  day with its drift report, so a partial day is never reported as drifted; that run gives
  exactly what a single run over the day's files gives, because it is one;
* **a day that has ended** (a late or replaced file, or files that landed after midnight):
  a ``micro_batch`` run over the day and over the later days whose features look back on it
  (``transaction_features`` holds them, up to the look-back of the features), so their
  features are recomputed in the same run, in day order. A later day that must be
  recomputed but has no landing file left is named as stale, with the day it looks back
  on, in a warning of the sensor's log;
* a file of a day still to come waits for its day; a file of a day outside
  ``FRAUD_START_DATE``..``FRAUD_END_DATE`` is skipped with a warning.

One run at a time: while a run this sensor launched is queued or in progress, the tick
waits (the files that land meanwhile go into the next run). Two runs of one day never
write at once, and a run that reads the day's files while another lands still writes each
row once: it reads the files it listed when it started, and the next run reads them all.

On its first evaluation the sensor records the files already there as a baseline instead
of re-scoring history (the batch back-fill covers those). A file that is not a landing
file by the ingest's own rule (:func:`fraudkit.schema.is_landing_file`) is skipped with a
warning naming it, once per file and change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from assets.common import SETTINGS
from assets.drift import micro_batch_intraday_job, micro_batch_job
from assets.features import LOOKBACK
from fraudkit import lake
from fraudkit.blobs import is_remote
from fraudkit.schema import (
    Location,
    day_of_file,
    file_name,
    is_landing_file,
    landing_entries,
    skip_reason,
)
from resources import DeltaLakeResource, LandingZoneResource

SENSOR_NAME = "landing_sensor"
#: Run statuses during which the sensor launches nothing more.
ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
          dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
          dg.DagsterRunStatus.CANCELING]
#: A run's ``landing/files`` tag names its files up to this many (a day of hourly files).
MAX_NAMED_FILES = 24
_STATUS = {"running": dg.DefaultSensorStatus.RUNNING,
           "stopped": dg.DefaultSensorStatus.STOPPED}


def now() -> dt.datetime:
    """The sensor's clock (a module function, so a test or the demo can move it)."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class LandedFile:
    path: Location
    mtime_ns: int
    size: int
    #: changes when the file is rewritten: its mtime (a folder) or ETag (an object store,
    #: whose times have whole seconds); empty: the mtime stands for it
    stamp: str = ""


def fingerprint(files: list[LandedFile]) -> str:
    """What identifies a day's files: a new, replaced or removed file changes it."""
    text = "\n".join(f"{file_name(f.path)}\t{f.stamp or f.mtime_ns}\t{f.size}"
                     for f in sorted(files, key=lambda f: str(f.path)))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass
class LandingState:
    """The cursor: what each day's last run (or the baseline) read, and what is owed."""

    #: day -> fingerprint of its files when its last run was requested (or at the baseline)
    done: dict[str, str] = field(default_factory=dict)
    #: days scored while in progress, owed one ``micro_batch`` run once they have ended
    open: list[str] = field(default_factory=list)
    #: days whose features look back on a day that changed, owed a run
    stale: list[str] = field(default_factory=list)
    #: files that are not landing files, already warned about: path -> mtime
    skipped: dict[str, int] = field(default_factory=dict)
    #: runs requested so far, numbering the run keys
    requests: int = 0

    def to_cursor(self) -> str:
        return json.dumps({"v": 2, "done": self.done, "open": sorted(self.open),
                           "stale": sorted(self.stale), "skipped": self.skipped,
                           "requests": self.requests})

    @classmethod
    def from_cursor(cls, cursor: str, by_day: dict[str, list[LandedFile]]) -> LandingState:
        """The state in ``cursor``; a cursor of the earlier, mtime-based sensor counts every
        day whose files were all seen and none waiting as done."""
        if cursor.lstrip("-").isdigit():
            old: dict = {"seen": int(cursor), "waiting": {}}
        else:
            old = json.loads(cursor)
        if old.get("v") == 2:
            return cls(done=dict(old["done"]), open=list(old["open"]),
                       stale=list(old["stale"]), skipped=dict(old.get("skipped", {})),
                       requests=int(old["requests"]))
        seen, waiting = int(old["seen"]), set(old.get("waiting", {}))
        done = {day: fingerprint(files) for day, files in by_day.items()
                if all(f.mtime_ns <= seen and str(f.path) not in waiting for f in files)}
        return cls(done=done, skipped={str(k): int(v)
                                       for k, v in old.get("skipped", {}).items()})


@dataclass(frozen=True)
class Plan:
    """The one run a tick requests (if any) and what the tick has to say."""

    job: str | None = None
    days: tuple[str, ...] = ()
    reason: str = ""
    files: tuple[Location, ...] = ()
    #: what the sensor's log should warn about, once (the cursor then knows the files)
    notes: tuple[str, ...] = ()
    #: files of days still to come (said at info level: they wait, every tick)
    waiting: str = ""


def plan_tick(state: LandingState, by_day: dict[str, list[LandedFile]], today: str,
              featured: set[str]) -> Plan:
    """Decide this tick's run and update ``state`` as if it were launched.

    ``today`` is the day in progress on the sensor's clock; ``featured`` the days
    ``transaction_features`` holds (the days a changed day's later look-back reaches)."""
    notes: list[str] = []
    changed = {day: fingerprint(files) for day, files in by_day.items()
               if state.done.get(day) != fingerprint(files)}
    for day in [d for d in changed if not SETTINGS.start_date <= d <= SETTINGS.end_date]:
        names = ", ".join(file_name(f.path) for f in by_day[day])
        notes.append(f"{names}: day {day} is not between FRAUD_START_DATE "
                     f"{SETTINGS.start_date} and FRAUD_END_DATE "
                     f"{SETTINGS.end_date}; skipped")
        state.done[day] = changed.pop(day)
    future = sorted(d for d in changed if d > today)
    waiting = f"files of {', '.join(future)} wait for their day to begin" if future else ""
    dirty = sorted(d for d in changed if d <= today)
    # Days after a changed, ended day whose features look back on it.
    later = {d for day in dirty if day < today for d in featured
             if day < d <= lake.shift_day(day, LOOKBACK) and d <= today}
    closing = {d for d in state.open if d < today}
    owed = set(dirty) | set(state.stale) | later | closing
    orphans = sorted(d for d in owed if d not in by_day)
    for day in orphans:
        if day in state.open:
            notes.append(f"{day}: its landing files were removed while it was in progress; it "
                         "will not be closed (no drift report) unless files of it land again")
            continue
        origin = [d for d in dirty if d < day <= lake.shift_day(d, LOOKBACK)]
        notes.append(f"stale: {day} looks back on "
                     f"{', '.join(origin) if origin else 'an earlier day'} whose files changed, "
                     "but it has no landing file to re-run from; land its files again and the "
                     "sensor re-runs it")
    owed -= set(orphans)
    # Named once, then forgotten: landing them again makes them new files.
    state.stale = [d for d in state.stale if d not in orphans]
    state.open = [d for d in state.open if d not in orphans]
    ended = sorted(d for d in owed if d < today)
    if ended:
        days = lake.consecutive_runs(ended)[0]
        job, why = micro_batch_job.name, _why(days, set(dirty), later, closing)
    elif today in owed:
        days, job = [today], micro_batch_intraday_job.name
        why = (f"{today} in progress: {len(by_day[today])} file(s) so far"
               if today in dirty else f"{today} in progress looks back on a re-run day")
    else:
        return Plan(notes=tuple(notes), waiting=waiting)
    for day in days:
        state.done[day] = fingerprint(by_day[day])
    state.stale = sorted((set(state.stale) | later | set(dirty) - {today}) - set(days)
                         - set(orphans))
    state.open = sorted((set(state.open) - set(days))
                        | ({today} if job == micro_batch_intraday_job.name else set()))
    state.requests += 1
    files = tuple(f.path for day in days for f in by_day[day])
    return Plan(job, tuple(days), why, files, tuple(notes), waiting)


def _why(days: list[str], dirty: set[str], later: set[str], closing: set[str]) -> str:
    parts = []
    if new := [d for d in days if d in dirty]:
        parts.append(f"new or changed files of {', '.join(new)}")
    if ended := [d for d in days if d in closing and d not in dirty]:
        parts.append(f"{', '.join(ended)} ended (its drift report)")
    if looked := [d for d in days if d in later and d not in dirty]:
        parts.append(f"{len(looked)} later day(s) look back on it ({looked[0]}..{looked[-1]})")
    return "; ".join(parts) or "days owed a re-run"


def list_landing(folder: Location, options: dict[str, str] | None = None
                 ) -> tuple[dict[str, list[LandedFile]], list[tuple[int, Location]]]:
    """Landing files by day, and the other files (mtime, path) of the folder or prefix."""
    by_day: dict[str, list[LandedFile]] = {}
    skipped: list[tuple[int, Location]] = []
    remote = is_remote(folder)
    for entry in landing_entries(folder, options):
        path: Location = entry.location if remote else Path(entry.location)
        if is_landing_file(path):
            by_day.setdefault(str(day_of_file(path)), []).append(
                LandedFile(path, entry.mtime_ns, entry.size, entry.stamp))
        else:
            skipped.append((entry.mtime_ns, path))
    return by_day, sorted(skipped, key=lambda s: (s[0], str(s[1])))


def warn_skipped(context: dg.SensorEvaluationContext, state: LandingState,
                 skipped: list[tuple[int, Location]]) -> None:
    """Warn once per file (and per change of it) about the files in the landing folder that
    are not landing files (the rule the ingest uses too)."""
    for mtime, path in skipped:
        if state.skipped.get(str(path)) != mtime:
            context.log.warning(f"{file_name(path)}: skipped, {skip_reason(path)} ({path})")
    state.skipped = {str(p): mtime for mtime, p in skipped}


def active_run(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """A run this sensor launched that is queued or in progress, if any."""
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME},
                                           statuses=ACTIVE), limit=1)
    return runs[0] if runs else None


def default_status(value: str) -> dg.DefaultSensorStatus:
    """The sensor's status until someone toggles it in the UI, from ``LANDING_SENSOR``."""
    name = value.strip().lower()
    if name not in _STATUS:
        raise ValueError(f"LANDING_SENSOR={value!r}: use running or stopped")
    return _STATUS[name]


@dg.sensor(
    name=SENSOR_NAME,
    jobs=[micro_batch_intraday_job, micro_batch_job],
    minimum_interval_seconds=15,
    default_status=default_status(SETTINGS.landing_sensor),
    description="Scores landing files as they land: the day in progress with each new file "
    "(micro_batch_intraday), a day that has ended (its closing run, a late file, and the "
    "later days that look back on it) with micro_batch; one run at a time.",
)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZoneResource,
                   delta: DeltaLakeResource):
    folder = landing.ensure()
    by_day, skipped = list_landing(folder, landing.storage_options)
    if context.cursor is None:
        state = LandingState(done={day: fingerprint(f) for day, f in by_day.items()})
        warn_skipped(context, state, skipped)
        context.update_cursor(state.to_cursor())
        return dg.SkipReason(f"baseline: {sum(map(len, by_day.values()))} file(s) already in "
                             f"{folder} are left to the batch back-fill; new files will be "
                             "scored as they land")
    state = LandingState.from_cursor(context.cursor, by_day)
    warn_skipped(context, state, skipped)
    running = active_run(context.instance)
    if running is not None:
        context.update_cursor(state.to_cursor())
        return dg.SkipReason(f"run {running.run_id[:8]} ({running.job_name}, "
                             f"{running.tags.get('landing/days', '?')}) is "
                             f"{running.status.value.lower()}; files that land meanwhile go "
                             "into the next run")
    tables = delta.tables()
    featured = (set(lake.partition_values(tables.features, tables.storage_options))
                if lake.table_version(tables.features, tables.storage_options) is not None
                else set())
    plan = plan_tick(state, by_day, now().date().isoformat(), featured)
    for note in plan.notes:
        context.log.warning(note)
    if plan.waiting:
        context.log.info(plan.waiting)
    context.update_cursor(state.to_cursor())
    if plan.job is None:
        said = [*plan.notes, *([plan.waiting] if plan.waiting else [])]
        return dg.SkipReason("; ".join(said) or f"no new landing file in {folder}")
    first, last = plan.days[0], plan.days[-1]
    names = sorted(file_name(p) for p in plan.files)
    tags = {"dagster/sensor_name": SENSOR_NAME,
            "landing/days": first if first == last else f"{first}..{last}",
            "landing/reason": plan.reason,
            "landing/files": ", ".join(names) if len(names) <= MAX_NAMED_FILES
            else f"{len(names)} files: {names[0]} .. {names[-1]}"}
    run_key = f"{plan.job}:{first}..{last}:{state.requests}"
    if first == last:
        return dg.RunRequest(run_key=run_key, job_name=plan.job, partition_key=first,
                             tags=tags)
    return dg.RunRequest(run_key=run_key, job_name=plan.job,
                         tags={**tags, "dagster/asset_partition_range_start": first,
                               "dagster/asset_partition_range_end": last})
