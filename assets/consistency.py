"""online_consistency: each day's online decisions compared with the batch path's numbers.

Joins a day of ``online_predictions`` (what the service decided, with the features it
used) with ``transaction_features`` and ``batch_predictions`` by ``transaction_id`` (the
rule: :mod:`fraudkit.monitoring.consistency`) and writes one row per day and item (each
feature, the score, the whole transaction) into the ``online_consistency`` Delta table.
Its check fails when a day's share of matching transactions falls below
``MONITOR_CONSISTENCY_FLOOR`` (default 1.0: every transaction), naming the transactions.
"""

import dagster as dg
import pandas as pd
import pyarrow as pa

from assets.common import daily_partitions, md_table, partition_days, single_run
from assets.features import transaction_features
from assets.online import online_predictions
from assets.scoring import batch_predictions
from fraudkit import lake
from fraudkit.features import FEATURE_COLUMNS
from fraudkit.monitoring.consistency import (
    CONSISTENCY_SCHEMA,
    REASONS,
    SCORE,
    ConsistencyWorkspace,
    DayConsistency,
    compare_day,
)
from resources import DeltaLakeResource, MonitoringResource

CONSISTENCY_TABLE = "online_consistency"


def _read(uri: str, day: str, columns: list[str], options: dict) -> pd.DataFrame:
    """The day's rows; ``reasons`` only if the table has it (tables of earlier releases)."""
    if "reasons" in columns and "reasons" not in lake.column_names(uri, options):
        columns = [c for c in columns if c != "reasons"]
    return lake.read_days(uri, [day], columns, storage_options=options).to_pandas()


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    deps=[online_predictions, transaction_features, batch_predictions],
    check_specs=[
        dg.AssetCheckSpec(
            "consistency_at_floor", asset=CONSISTENCY_TABLE,
            description="Every day's share of online decisions whose 15 features (and score "
                        "and reasons, for the same model version) equal the batch path's is "
                        "at or above "
                        "MONITOR_CONSISTENCY_FLOOR.",
        )
    ],
    group_name="monitoring",
    kinds={"deltalake"},
    description="Online/offline consistency per day and feature: online_predictions joined "
    "with transaction_features and batch_predictions by transaction_id (counts equal, other "
    "features within 1e-9, scores and reason contributions within 1e-6 for the same model "
    "version); missing and never-decided transactions.",
)
def online_consistency(
    context: dg.AssetExecutionContext,
    delta: DeltaLakeResource,
    monitoring: MonitoringResource,
) -> dg.MaterializeResult:
    days = partition_days(context)
    tables = delta.tables()
    options = tables.storage_options
    online_uri = delta.uri("online_predictions")
    for name, uri, fix in (("online_predictions", online_uri, "run the online_log job"),
                           ("transaction_features", tables.features,
                            "run ingest_and_features"),
                           ("batch_predictions", tables.predictions, "run the score job")):
        if lake.table_version(uri, options) is None:
            raise dg.Failure(f"no {name} table at {uri}: {fix} for these days first")
    results: list[DayConsistency] = []
    for day in days:
        online = _read(online_uri, day, ["transaction_id", *FEATURE_COLUMNS, "score",
                                         "model_version", "degraded", "reasons"], options)
        feats = _read(tables.features, day, ["transaction_id", *FEATURE_COLUMNS], options)
        preds = _read(tables.predictions, day, ["transaction_id", "score", "model_version",
                                                "reasons"], options)
        if online.empty:
            context.log.info(f"{day}: the service logged no decision for this day")
        elif feats.empty:
            context.log.warning(f"{day}: {len(online)} online decisions but no landed "
                                "transactions yet; run ingest_and_features for the day")
        result = compare_day(day, online, feats, preds)
        results.append(result)
        context.log.info(
            f"{day}: {result.matched}/{result.compared} matched, {result.missing} decided "
            f"online but not landed, {result.landed_not_decided} landed but not decided "
            "online")
    workspace_dir = monitoring.workspace_dir()
    ui_path = None
    if workspace_dir is not None:  # the rate per day on an Evidently dashboard too
        workspace = ConsistencyWorkspace(workspace_dir)
        for result in results:
            ui_path = workspace.add(result) or ui_path
    uri = delta.uri(CONSISTENCY_TABLE)
    lake.ensure_table(uri, CONSISTENCY_SCHEMA, options)
    table = pa.Table.from_pylist([r for res in results for r in res.rows()],
                                 schema=CONSISTENCY_SCHEMA)
    version = lake.replace_days(uri, table, days, options)

    floor = monitoring.consistency_floor
    judged = [r for r in results if r.compared]
    below = [r for r in judged if r.rate < floor]
    # Decided online, yet nothing to compare with (none of them landed): not a pass.
    unjudged = [r for r in results if r.decided_online and not r.compared]
    compared = sum(r.compared for r in judged)
    matched = sum(r.matched for r in judged)
    per_day = pd.DataFrame([{
        "day": r.day, "decided_online": r.decided_online, "landed": r.landed,
        "compared": r.compared, "matched": r.matched,
        "match_rate": r.rate if r.rate is not None else float("nan"),
        "score_compared": r.items[SCORE]["compared"], "score_matched": r.items[SCORE]["matched"],
        "missing": r.missing, "landed_not_decided": r.landed_not_decided,
        "degraded": r.degraded} for r in results])
    per_feature = pd.DataFrame([
        {"item": item,
         "mismatched": sum(r.items[item]["compared"] - r.items[item]["matched"]
                           for r in results),
         "max_abs_diff": max(r.items[item]["max_abs_diff"] for r in results)}
        for item in [*FEATURE_COLUMNS, SCORE, REASONS] if all(item in r.items for r in results)])
    examples = [f"{r.day} transaction {e['transaction_id']}: {', '.join(e['differed'])}"
                for r in below for e in r.examples()]
    detail = {f"{r.day} {item}": r.items[item]["examples"] for r in below
              for item in r.mismatched_items()}
    return dg.MaterializeResult(
        metadata={
            "days": dg.MetadataValue.text(f"{days[0]} .. {days[-1]} ({len(days)})"),
            # A float per materialization: the Dagster UI plots it over the days.
            "match_rate": float(matched / compared) if compared else float("nan"),
            "compared": compared,
            "matched": matched,
            "missing": sum(r.missing for r in results),
            "landed_not_decided": sum(r.landed_not_decided for r in results),
            "per_day": md_table(per_day),
            "per_feature": md_table(per_feature[per_feature["mismatched"] > 0])
            if (per_feature["mismatched"] > 0).any() else dg.MetadataValue.text(
                "every feature, score and reason matched"),
            "table_uri": dg.MetadataValue.path(uri),
            "table_version": version,
            **({"evidently_report": dg.MetadataValue.url(
                f"http://localhost:{monitoring.evidently_ui_port}{ui_path}")} if ui_path else {}),
        },
        check_results=[dg.AssetCheckResult(
            check_name="consistency_at_floor", passed=not below and not unjudged,
            metadata={
                "floor": floor,
                "days_below": dg.MetadataValue.text(
                    ", ".join(f"{r.day} ({r.rate:.4%})" for r in below) or "none"),
                "mismatched_transactions": dg.MetadataValue.text(
                    "\n".join(examples) or "none"),
                "values": dg.MetadataValue.json(detail),
                "days_not_compared": dg.MetadataValue.text(
                    ", ".join(f"{r.day} ({r.decided_online} decided online, none landed)"
                              for r in unjudged) or "none"),
                "days_without_online_decisions": dg.MetadataValue.text(
                    ", ".join(r.day for r in results if not r.decided_online) or "none"),
            },
        )],
    )


consistency_job = dg.define_asset_job(
    "monitor_consistency", selection=dg.AssetSelection.assets(online_consistency),
    description="Compare the chosen days' online decisions with the batch path's features "
                "and scores.",
)
