"""Near-real-time micro-batches: each new landing file is ingested, featurized, scored and
drift-reported as its own run, as soon as its day is a partition, instead of the next daily
back-fill.

The run key is ``<file name>:<mtime ns>``: the same file is never scored twice, and a file
replaced with new content (new mtime) is scored again. The cursor holds the newest mtime
seen and the files that wait for their day to end (Dagster offers a day as a partition once
it has ended): those are requested on the first tick after it. On its first evaluation the
sensor records the files already there as a baseline instead of re-scoring history (the
batch back-fill covers those).
"""

import datetime as dt
import json
from pathlib import Path

import dagster as dg

from assets.common import SETTINGS, daily_partitions
from assets.monitoring import micro_batch_job
from fraudkit.schema import LANDING_SUFFIXES, day_of_file
from resources import LandingZoneResource


def read_cursor(cursor: str | None) -> tuple[int, dict[str, int]]:
    """(newest mtime seen, waiting files by path with their mtime) from the cursor."""
    if cursor is None:
        return 0, {}
    if cursor.lstrip("-").isdigit():  # the cursor of earlier versions: an mtime alone
        return int(cursor), {}
    state = json.loads(cursor)
    return int(state["seen"]), {str(k): int(v) for k, v in state["waiting"].items()}


def plan_files(files: list[tuple[int, Path]], now: dt.datetime | None = None
               ) -> tuple[list[dg.RunRequest], list[tuple[int, Path]], list[Path]]:
    """Split files into run requests (their day is a partition), files that wait for their
    day to end, and files whose day is outside FRAUD_START_DATE..FRAUD_END_DATE."""
    keys = set(daily_partitions.get_partition_keys(current_time=now))
    requests, waiting, outside = [], [], []
    for mtime, path in files:
        day = day_of_file(path)
        if day in keys:
            requests.append(dg.RunRequest(run_key=f"{path.name}:{mtime}", partition_key=day,
                                          tags={"landing/file": str(path)}))
        elif day is not None and SETTINGS.start_date <= day <= SETTINGS.end_date:
            waiting.append((mtime, path))
        else:
            outside.append(path)
    return requests, waiting, outside


@dg.sensor(
    job=micro_batch_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Scores each new landing file (ingest → features → score → drift report of "
    "its day) as one micro-batch run, once its day has ended; run key per file and mtime.",
)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZoneResource):
    folder = landing.ensure()
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix in LANDING_SUFFIXES]
    stamped = sorted((p.stat().st_mtime_ns, p) for p in files)
    if context.cursor is None:
        newest = stamped[-1][0] if stamped else 0
        context.update_cursor(json.dumps({"seen": newest, "waiting": {}}))
        return dg.SkipReason(f"baseline: {len(stamped)} file(s) already in {folder} are left "
                             "to the batch back-fill; new files will be scored as they land")
    seen, was_waiting = read_cursor(context.cursor)
    new = [(mtime, p) for mtime, p in stamped if mtime > seen]
    # A waiting file still counts if it is unchanged; a changed one comes back as new.
    still = [(mtime, p) for mtime, p in stamped
             if mtime <= seen and was_waiting.get(str(p)) == mtime]
    requests, waiting, outside = plan_files(sorted(still + new))
    for path in outside:
        context.log.warning(f"{path.name}: its day is not between FRAUD_START_DATE "
                            f"{SETTINGS.start_date} and FRAUD_END_DATE {SETTINGS.end_date}; "
                            "skipped")
    context.update_cursor(json.dumps({
        "seen": max([seen, *(m for m, _ in new)]),
        "waiting": {str(p): mtime for mtime, p in waiting},
    }))
    if requests:
        return requests
    if waiting:
        return dg.SkipReason(f"{len(waiting)} file(s) wait for their day to end, e.g. "
                             f"{waiting[0][1].name}")
    if new:
        return dg.SkipReason(f"{len(new)} new file(s), none for a day in the partitions")
    return dg.SkipReason(f"no new landing file in {folder}")
