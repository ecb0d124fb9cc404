"""Near-real-time micro-batches: each new landing file is ingested, featurized, scored and
drift-reported as its own run, minutes after it lands instead of the next daily back-fill.

The run key is ``<file name>:<mtime ns>``: the same file is never scored twice, and a file
replaced with new content (new mtime) is scored again. The cursor holds the newest mtime
seen; on its first evaluation the sensor records the files already there as a baseline
instead of re-scoring history (the batch back-fill covers those).
"""


import dagster as dg

from assets.common import daily_partitions
from assets.monitoring import micro_batch_job
from fraudkit.schema import LANDING_SUFFIXES, day_of_file
from resources import LandingZoneResource


@dg.sensor(
    job=micro_batch_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Scores each new landing file (ingest → features → score → drift report of "
    "its day) as one micro-batch run; run key per file and mtime.",
)
def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZoneResource):
    folder = landing.ensure()
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix in LANDING_SUFFIXES]
    stamped = sorted((p.stat().st_mtime_ns, p) for p in files)
    if context.cursor is None:
        newest = stamped[-1][0] if stamped else 0
        context.update_cursor(str(newest))
        return dg.SkipReason(f"baseline: {len(stamped)} file(s) already in {folder} are left "
                             "to the batch back-fill; new files will be scored as they land")
    seen = int(context.cursor)
    new = [(mtime, p) for mtime, p in stamped if mtime > seen]
    if not new:
        return dg.SkipReason(f"no new landing file in {folder}")
    keys = set(daily_partitions.get_partition_keys())
    requests = []
    for mtime, path in new:
        day = day_of_file(path)
        if day not in keys:
            context.log.warning(f"{path.name}: day {day} is not a partition "
                                f"({daily_partitions.start}..{daily_partitions.end}); skipped")
            continue
        requests.append(dg.RunRequest(run_key=f"{path.name}:{mtime}", partition_key=day,
                                      tags={"landing/file": str(path)}))
    context.update_cursor(str(new[-1][0]))
    if not requests:
        return dg.SkipReason(f"{len(new)} new file(s), none for a known partition day")
    return requests
