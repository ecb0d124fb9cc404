"""online_predictions: each day's decisions of the real-time service, moved into Delta.

The service logs every decision in the online store before it answers (fraudkit.store).
This asset copies one day of that log into a day partition of the ``online_predictions``
Delta table, replacing the partition (a re-run gives the same rows, never twice), marks
the day delivered in the store and lets the store drop what no feature window and no
undelivered day needs any more.
"""

import dagster as dg
import pyarrow.compute as pc

from assets.common import SETTINGS, daily_partitions, partition_days, preview, single_run
from fraudkit import lake
from fraudkit.online.history import reach_days
from fraudkit.store import DECISION_SCHEMA
from resources import DeltaLakeResource
from resources.online import OnlineStoreResource


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    check_specs=[
        dg.AssetCheckSpec("rows_equal_store", asset="online_predictions",
                          description="The day's rows in Delta = the decisions the online "
                          "store holds for that day."),
        dg.AssetCheckSpec("one_row_per_transaction", asset="online_predictions",
                          description="A transaction_id appears once per day (a client's "
                          "retry is one row: the latest answer)."),
    ],
    group_name="online",
    kinds={"sqlite", "redis", "deltalake"},
    description="Every decision the online service made on the day: the request, the 15 "
    "features, score, decision, the reasons of a review or decline, thresholds, "
    "model_version, fallback, shadow model, received_at, latency and worker.",
)
def online_predictions(
    context: dg.AssetExecutionContext,
    delta: DeltaLakeResource,
    online_store: OnlineStoreResource,
) -> dg.MaterializeResult:
    days = partition_days(context)
    uri = delta.uri("online_predictions")
    options = delta.storage_options
    store = online_store.open()
    try:
        lake.ensure_table(uri, DECISION_SCHEMA, options)
        copied = {}
        version = None
        for day in days:
            table = store.day_decisions(day)
            version = lake.replace_days(uri, table, [day], options)
            copied[day] = table
            store.mark_delivered(day, table.num_rows)
            context.log.info(f"{day}: {table.num_rows} decisions moved to Delta "
                             f"(version {version})")
        # The windows' reach, as the service's own history: look-back + margin days.
        retention = reach_days(SETTINGS.label_delay_days)
        # Counted by the store itself, apart from the export query: the check compares them.
        held = store.day_counts()
        pruned = store.prune(retention)
        size = store.size_bytes()
        backend, location = store.backend, store.location
    finally:
        store.close()
    in_delta = lake.rows_per_day(uri, days, storage_options=options)
    rows = {d: t.num_rows for d, t in copied.items()}
    distinct = {d: len(pc.unique(t["transaction_id"])) for d, t in copied.items()}
    mismatched = [d for d in days if in_delta[d] != held.get(d, 0)]
    duplicated = [d for d in days if distinct[d] != rows[d]]
    total = sum(rows.values())
    every = [t for t in copied.values() if t.num_rows]
    decisions: dict[str, int] = {}
    for t in every:
        for value, count in zip(*pc.value_counts(t["decision"]).flatten(), strict=True):
            decisions[value.as_py()] = decisions.get(value.as_py(), 0) + count.as_py()
    flagged = {
        "fallback": sum(pc.sum(t["fallback"]).as_py() or 0 for t in every),
        "degraded": sum(pc.sum(t["degraded"]).as_py() or 0 for t in every),
    }
    last = copied[days[-1]]
    return dg.MaterializeResult(
        metadata={
            "days": dg.MetadataValue.text(f"{days[0]} .. {days[-1]} ({len(days)})"),
            "dagster/row_count": total,
            "rows_per_day": dg.MetadataValue.json(rows),
            "decisions": dg.MetadataValue.json(decisions),
            "fallback_or_degraded": dg.MetadataValue.json(flagged),
            "table_version": version,
            "table_uri": dg.MetadataValue.path(uri),
            "store": dg.MetadataValue.text(f"{backend}: {location}"),
            "store_rows_pruned": pruned,
            "store_bytes": size,
            "preview": preview(last.slice(0, 5).to_pandas()),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="rows_equal_store", passed=not mismatched,
                metadata={"store_rows": sum(held.get(d, 0) for d in days),
                          "delta_rows": sum(in_delta.values()),
                          "days_mismatched": dg.MetadataValue.text(", ".join(mismatched)
                                                                   or "none")}),
            dg.AssetCheckResult(
                check_name="one_row_per_transaction", passed=not duplicated,
                metadata={"days_with_duplicates": dg.MetadataValue.text(
                    ", ".join(duplicated) or "none")}),
        ],
    )
