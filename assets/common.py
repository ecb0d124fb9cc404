"""Partitions and small helpers the asset modules share."""


import datetime as dt

import dagster as dg
import pandas as pd

from fraudkit import lake
from fraudkit.config import Settings

SETTINGS = Settings.from_env()

#: One partition per calendar day of transactions (UTC), keys ``YYYY-MM-DD``. The day in
#: progress is a partition too (``end_offset=1``): the landing sensor's micro-batches score
#: its files as they land and replace the day as it grows (sensors/landing.py). What must
#: wait for a whole day (the drift report, realized performance, freshness) skips or ignores
#: it until it has ended: :func:`day_has_ended`.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=SETTINGS.start_date,
    end_date=lake.shift_day(SETTINGS.end_date, 1),  # end_date is exclusive in Dagster
    end_offset=1,
)

#: A back-fill of many days runs as one run that processes the whole range.
single_run = dg.BackfillPolicy.single_run()

#: The Dagster concurrency pool of the assets that train a model (``model``,
#: ``retrained_model``). dagster.yaml gives every pool one slot at run granularity, so the run
#: queue holds a second training run that goes through it (drift sensor, UI, ``dagster job
#: launch``) until the first has finished: two trainings would share the cores and race to
#: register versions. Runs executed in process (scripts.run_job, make demo) skip the queue.
TRAINING_POOL = "model_training"


def today() -> str:
    """The UTC day in progress on the wall clock: the partition that has not ended yet."""
    return dt.datetime.now(dt.UTC).date().isoformat()


def day_has_ended(day: str) -> bool:
    """Whether ``day`` (``YYYY-MM-DD``, UTC) is over: only then is it a whole day of data."""
    return day < today()


def partition_days(context: dg.AssetExecutionContext) -> list[str]:
    key_range = context.partition_key_range
    return lake.day_range(key_range.start, key_range.end)


def preview(frame: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    shown = frame.head(rows).copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = shown[col].round(4)
    return dg.MetadataValue.md(shown.to_markdown(index=False))



def md_table(frame: pd.DataFrame) -> dg.MetadataValue:
    """A whole frame as a Markdown table of metadata, floats at 3 decimals: the per-day and
    per-model tables the monitoring assets show in the Dagster UI (unlike :func:`preview`,
    every row, since these frames are small summaries)."""
    return dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=".3f"))
