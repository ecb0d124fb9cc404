"""transaction_features: point-in-time features of every kept transaction, on Dask."""


import dagster as dg

from assets.common import SETTINGS, daily_partitions, partition_days, preview, single_run
from assets.ingest import RAW_TRANSACTIONS
from fraudkit import lake
from fraudkit.batch import FEATURES_SCHEMA, chunk_days_by_rows, features_for_days
from fraudkit.features import lookback_days
from resources import DaskResource, DeltaLakeResource

#: Each Dask task computes at most this many days plus their look-back; more days per task
#: means less look-back re-read, fewer means more parallelism and less memory per worker.
DAYS_PER_TASK = 45
#: ... and holds at most this many raw rows, its days' and their look-back's (one day at
#: least), so a task's rows follow a day's rows and not the length of the back-fill: at 10x
#: the demo's data a 45-day task held 8 M rows, now 4.5 M. At the demo's scale tasks stay
#: 45 days.
ROWS_PER_TASK = 4_500_000
#: ... of which at most this many are its own days' rows, the ones it computes: measured at
#: 10x, a task peaks at about 170 MiB + 124 MiB per million look-back rows + 820 MiB per
#: million computed rows (4.37 M computed rows, the first 45 days of a back-fill, which have
#: no look-back: 4,310 MiB; 0.87 M computed in 4.47 M: 1,443 MiB). 1.5 M keeps a task near
#: 2 GiB.
OWN_ROWS_PER_TASK = 1_500_000
LOOKBACK = lookback_days(SETTINGS.label_delay_days)


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    deps=[
        dg.AssetDep(
            RAW_TRANSACTIONS,
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-LOOKBACK, allow_nonexistent_upstream_partitions=True
            ),
        )
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "features_complete",
            asset="transaction_features",
            description="Exactly one feature row for every kept transaction, no null value.",
        )
    ],
    group_name="batch",
    kinds={"dask", "deltalake"},
    description=f"The 15 model features (docs/contracts.md) per transaction, computed on Dask with "
    f"{LOOKBACK} days of look-back and written to Delta partitioned by day.",
)
def transaction_features(
    context: dg.AssetExecutionContext, dask: DaskResource, delta: DeltaLakeResource
) -> dg.MaterializeResult:
    days = partition_days(context)
    tables = delta.tables()
    raw_version = lake.table_version(tables.raw, tables.storage_options)
    if raw_version is None:
        raise dg.Failure(f"no raw_transactions table at {tables.raw}: materialize it first")
    lake.ensure_table(tables.features, FEATURES_SCHEMA, tables.storage_options)
    counts = lake.rows_per_day(tables.raw, lake.day_range(lake.shift_day(days[0], -LOOKBACK),
                                                          days[-1]),
                               raw_version, tables.storage_options)
    chunks = chunk_days_by_rows(days, counts, DAYS_PER_TASK, ROWS_PER_TASK, LOOKBACK,
                                max_own_rows=OWN_ROWS_PER_TASK)
    results = dask.map_with_progress(
        context, features_for_days, chunks, "features",
        tables=tables, raw_version=raw_version, label_delay_days=SETTINGS.label_delay_days,
    )
    rows = sum(r["rows"] for r in results)
    missing = sum(r["missing"] for r in results)
    duplicates = sum(r["duplicates"] for r in results)
    nulls = sum(r["nulls"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    sample = results[-1]["head"]  # the last day's first rows, from its task
    return dg.MaterializeResult(
        metadata={
            "days": dg.MetadataValue.text(f"{days[0]} .. {days[-1]} ({len(days)})"),
            "dagster/row_count": rows,
            "table_version": lake.table_version(tables.features, tables.storage_options),
            "raw_table_version": raw_version,
            "table_uri": dg.MetadataValue.path(tables.features),
            "task_seconds": round(seconds, 2),
            "rows_per_task_second": round(rows / seconds) if seconds else 0,
            "history_rows_read": sum(r["history_rows"] for r in results),
            "preview": preview(sample.to_pandas()),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="features_complete",
                passed=missing == 0 and duplicates == 0 and nulls == 0,
                metadata={"missing": missing, "duplicates": duplicates, "nulls": nulls,
                          "kept_rows": sum(r["kept_rows"] for r in results)},
            )
        ],
    )
