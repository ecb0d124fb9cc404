"""Near-real-time micro-batches: each day's new landing files are ingested, featurized,
scored and drift-reported as one run, as soon as the day is a partition, instead of the next
daily back-fill.

The run key is ``<day>:<newest mtime ns of its files>``: a day is never scored twice for
the same files, and a new or replaced file of the day (new mtime) scores it again (the run
re-ingests every file of the day, so one run covers all files that arrived together). The
cursor holds the newest mtime seen and the files that wait for their day to end (Dagster
offers a day as a partition once it has ended): those are requested on the first tick
after it. On its first evaluation the sensor records the files already there as a baseline
instead of re-scoring history (the batch back-fill covers those). A file that is not a
landing file by the ingest's own rule (:func:`fraudkit.schema.is_landing_file`: a
``.parquet``, ``.csv`` or ``.csv.gz`` name in any case, with a day in it) is skipped with a
warning naming it, once per file and change (the cursor remembers them).
"""

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path

import dagster as dg

from assets.common import SETTINGS, daily_partitions
from assets.drift import micro_batch_job
from fraudkit.schema import day_of_file, is_landing_file, skip_reason
from resources import LandingZoneResource


def now() -> dt.datetime:
    """The sensor's clock (a module function, so a test can move it to another day)."""
    return dt.datetime.now(dt.UTC)


def read_cursor(cursor: str | None) -> tuple[int, dict[str, int]]:
    """(newest mtime seen, waiting files by path with their mtime) from the cursor."""
    if cursor is None:
        return 0, {}
    if cursor.lstrip("-").isdigit():  # the cursor of earlier versions: an mtime alone
        return int(cursor), {}
    state = json.loads(cursor)
    return int(state["seen"]), {str(k): int(v) for k, v in state["waiting"].items()}


def read_warned(cursor: str | None) -> dict[str, int]:
    """The skipped files already warned about, by path with their mtime, from the cursor."""
    if cursor is None or cursor.lstrip("-").isdigit():
        return {}
    return {str(k): int(v) for k, v in json.loads(cursor).get("skipped", {}).items()}


def warn_skipped(context: dg.SensorEvaluationContext, skipped: list[tuple[int, Path]]
                 ) -> dict[str, int]:
    """Warn once per file (and per change of it) about the files in the landing folder that
    are not landing files (:func:`fraudkit.schema.is_landing_file`, the rule the ingest
    uses too); returns them for the cursor."""
    warned = read_warned(context.cursor)
    for mtime, path in skipped:
        if warned.get(str(path)) != mtime:
            context.log.warning(f"{path.name}: skipped, {skip_reason(path)} ({path})")
    return {str(p): mtime for mtime, p in skipped}


def plan_files(files: list[tuple[int, Path]], current_time: dt.datetime
               ) -> tuple[list[dg.RunRequest], list[tuple[int, Path]], list[Path]]:
    """Split files into one run request per day that is a partition, files that wait for
    their day to end, and files whose day is outside FRAUD_START_DATE..FRAUD_END_DATE."""
    keys = set(daily_partitions.get_partition_keys(current_time=current_time))
    ready: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    waiting, outside = [], []
    for mtime, path in files:
        day = day_of_file(path)
        if day in keys:
            ready[day].append((mtime, path))
        elif day is not None and SETTINGS.start_date <= day <= SETTINGS.end_date:
            waiting.append((mtime, path))
        else:
            outside.append(path)
    requests = [
        dg.RunRequest(run_key=f"{day}:{max(m for m, _ in stamped)}", partition_key=day,
                      tags={"landing/files": ", ".join(sorted(p.name for _, p in stamped))})
        for day, stamped in sorted(ready.items())
    ]
    return requests, waiting, outside


@dg.sensor(
    job=micro_batch_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Scores each day with new landing files (ingest → features → score → drift "
    "report) as one micro-batch run, once the day has ended; run key per day and newest "
    "file mtime.",
)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZoneResource):
    folder = landing.ensure()
    stamped, skipped = [], []
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                mtime = path.stat().st_mtime_ns
                (stamped if is_landing_file(path) else skipped).append((mtime, path))
        except FileNotFoundError:  # removed while the folder was listed
            continue
    stamped.sort()
    skipped.sort()
    warned = warn_skipped(context, skipped)
    if context.cursor is None:
        newest = stamped[-1][0] if stamped else 0
        context.update_cursor(json.dumps({"seen": newest, "waiting": {}, "skipped": warned}))
        return dg.SkipReason(f"baseline: {len(stamped)} file(s) already in {folder} are left "
                             "to the batch back-fill; new files will be scored as they land")
    seen, was_waiting = read_cursor(context.cursor)
    new = [(mtime, p) for mtime, p in stamped if mtime > seen]
    # A waiting file still counts if it is unchanged; a changed one comes back as new.
    still = [(mtime, p) for mtime, p in stamped
             if mtime <= seen and was_waiting.get(str(p)) == mtime]
    requests, waiting, outside = plan_files(sorted(still + new), now())
    for path in outside:
        context.log.warning(f"{path.name}: its day is not between FRAUD_START_DATE "
                            f"{SETTINGS.start_date} and FRAUD_END_DATE {SETTINGS.end_date}; "
                            "skipped")
    context.update_cursor(json.dumps({
        "seen": max([seen, *(m for m, _ in new)]),
        "waiting": {str(p): mtime for mtime, p in waiting},
        "skipped": warned,
    }))
    if requests:
        return requests
    if waiting:
        return dg.SkipReason(f"{len(waiting)} file(s) wait for their day to end, e.g. "
                             f"{waiting[0][1].name}")
    if new:
        return dg.SkipReason(f"{len(new)} new file(s), none for a day in the partitions")
    return dg.SkipReason(f"no new landing file in {folder}")
