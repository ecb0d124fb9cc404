"""The model_performance asset: realized AUC-ROC, average precision and card precision@100
of each day's batch predictions once the day's labels have matured, in the
``model_performance`` table, and its ``monitor_performance`` job (which the performance
sensor requests as days mature).

The floor its check warns at comes from :class:`resources.MonitoringResource`, which the
drift sensor reads too, so the check and the retraining trigger agree on "degraded".
"""


import datetime as dt

import dagster as dg
import pandas as pd
import pyarrow as pa

from assets.common import SETTINGS, daily_partitions, md_table, partition_days, single_run
from assets.ingest import RAW_TRANSACTIONS
from assets.scoring import batch_predictions
from fraudkit import lake
from fraudkit.features import FEATURE_COLUMNS
from fraudkit.monitoring.fairness import (
    SEGMENT_SCHEMA,
    over_ratio,
    segment_table,
    worst_disparity,
)
from fraudkit.monitoring.performance import PERFORMANCE_SCHEMA, matured_until
from fraudkit.schema import RAW_SCHEMA
from fraudkit.training import evaluate
from resources import DeltaLakeResource, MonitoringResource

PERFORMANCE_TABLE = "model_performance"
#: Per day, segment and value: the fairness figures (fraudkit/monitoring/fairness.py).
SEGMENT_TABLE = "segment_performance"


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    deps=[batch_predictions, RAW_TRANSACTIONS],
    check_specs=[
        dg.AssetCheckSpec(
            "performance_above_floor", asset="model_performance",
            description="Every day's realized metric is at or above the monitoring floor.",
        ),
        dg.AssetCheckSpec(
            "segment_fpr_within_ratio", asset="model_performance",
            description="No segment's false-positive rate exceeds the overall one by more "
            "than FAIRNESS_MAX_RATIO over the run's days (segments with enough non-fraud "
            "rows; fraudkit/monitoring/fairness.py).",
        ),
    ],
    group_name="monitoring",
    kinds={"deltalake"},
    description="Realized AUC-ROC, average precision and card precision@100 of each day's "
    "batch predictions, once the day's labels have matured (label_delay_days after it).",
)
def model_performance(
    context: dg.AssetExecutionContext,
    delta: DeltaLakeResource,
    monitoring: MonitoringResource,
) -> dg.MaterializeResult:
    days = partition_days(context)
    tables = delta.tables()
    if lake.table_version(tables.predictions, tables.storage_options) is None:
        raise dg.Failure(f"no batch_predictions table at {tables.predictions}: score first")
    latest = lake.partition_values(tables.raw, tables.storage_options)[-1]
    matured = matured_until(latest, SETTINGS.label_delay_days)
    early = [d for d in days if d > matured]
    if early:
        raise dg.Failure(
            f"labels of {', '.join(early[:5])}{' ...' if len(early) > 5 else ''} have not "
            f"matured: the data reaches {latest} and labels are known "
            f"{SETTINGS.label_delay_days} days later, so only days up to {matured} can be "
            "evaluated; performance_sensor requests them when they mature"
        )
    segments = monitoring.segments()
    needed = sorted({s.column for s in segments})
    from_features = [c for c in needed if c in FEATURE_COLUMNS]
    from_raw = [c for c in needed if c not in FEATURE_COLUMNS and c in RAW_SCHEMA.names]
    unknown = sorted(set(needed) - set(from_features) - set(from_raw))
    if unknown:
        raise dg.Failure(f"FAIRNESS_SEGMENTS names column(s) {', '.join(unknown)}, which "
                         "neither transaction_features nor raw_transactions has; use one of "
                         f"{', '.join([*FEATURE_COLUMNS, *RAW_SCHEMA.names])}")
    preds = lake.read_days(tables.predictions, days, ["transaction_id", "customer_id", "score",
                                                      "decision", "model_version", "day"],
                           storage_options=tables.storage_options).to_pandas()
    labels = lake.read_days(tables.raw, days,
                            ["transaction_id", "tx_fraud", *from_raw, "day"],
                            storage_options=tables.storage_options).to_pandas()
    frame = preds.merge(labels, on=["transaction_id", "day"], how="inner",
                        validate="one_to_one")
    if from_features:
        feats = lake.read_days(tables.features, days, ["transaction_id", *from_features, "day"],
                               storage_options=tables.storage_options).to_pandas()
        frame = frame.merge(feats, on=["transaction_id", "day"], how="left",
                            validate="one_to_one")
    now = dt.datetime.now(dt.UTC)
    rows = []
    for day, part in frame.groupby("day", sort=True):
        metrics = evaluate(part, part["score"].to_numpy())
        rows.append({
            "model_version": part["model_version"].mode().iat[0],
            "auc_roc": metrics["auc_roc"], "average_precision": metrics["average_precision"],
            "card_precision_at_100": metrics["card_precision_at_100"],
            "rows": int(metrics["rows"]), "frauds": int(metrics.get("frauds", 0)),
            "matured_on": lake.shift_day(day, SETTINGS.label_delay_days),
            "computed_at": now, "day": day,
        })
    missing = sorted(set(days) - {r["day"] for r in rows})
    if missing:
        raise dg.Failure(f"no scored, labelled rows for {', '.join(missing)}")
    uri = delta.uri(PERFORMANCE_TABLE)
    lake.ensure_table(uri, PERFORMANCE_SCHEMA, tables.storage_options)
    version = lake.replace_days(uri, pa.Table.from_pylist(rows, schema=PERFORMANCE_SCHEMA), days,
                                tables.storage_options)
    per_day = pd.DataFrame(rows).drop(columns=["computed_at"])
    segment_rows = pd.concat(
        [segment_table(part, segments).assign(
            model_version=part["model_version"].mode().iat[0], day=day)
         for day, part in frame.groupby("day", sort=True)], ignore_index=True)
    segment_uri = delta.uri(SEGMENT_TABLE)
    lake.ensure_table(segment_uri, SEGMENT_SCHEMA, tables.storage_options)
    lake.replace_days(segment_uri, pa.Table.from_pandas(
        segment_rows.reindex(columns=SEGMENT_SCHEMA.names), schema=SEGMENT_SCHEMA,
        preserve_index=False), days, tables.storage_options)
    pooled = segment_table(frame, segments)  # FAIRNESS_SEGMENTS={}: no rows, nothing judged
    evidence = monitoring.fairness_min_false_positives
    worst = worst_disparity(pooled, evidence)
    over = over_ratio(pooled, monitoring.fairness_max_ratio, evidence)
    metric, floor = monitoring.performance_metric, monitoring.performance_floor
    below = [] if floor is None else per_day.loc[per_day[metric] < floor, "day"].tolist()
    return dg.MaterializeResult(
        metadata={
            "days": dg.MetadataValue.text(f"{days[0]} .. {days[-1]} ({len(days)})"),
            "auc_roc": round(float(per_day["auc_roc"].mean()), 4),
            "average_precision": round(float(per_day["average_precision"].mean()), 4),
            "card_precision_at_100": round(float(per_day["card_precision_at_100"].mean()), 4),
            "per_day": md_table(per_day),
            "segments": md_table(pooled.drop(columns=["negatives"], errors="ignore")),
            "worst_fpr_disparity": dg.MetadataValue.text(str(worst)),
            "segment_table_uri": dg.MetadataValue.path(segment_uri),
            "table_uri": dg.MetadataValue.path(uri),
            "table_version": version,
        },
        check_results=[dg.AssetCheckResult(
            check_name="performance_above_floor", passed=not below,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"metric": metric, "floor": floor if floor is not None else "none",
                      "days_below": dg.MetadataValue.text(", ".join(below) or "none")},
        ), dg.AssetCheckResult(
            check_name="segment_fpr_within_ratio", passed=over.empty,
            severity=dg.AssetCheckSeverity.WARN,
            description=None if over.empty else (
                "false-positive rate above FAIRNESS_MAX_RATIO "
                f"{monitoring.fairness_max_ratio:g}x the overall rate: " + "; ".join(
                    f"{r.segment} = {r.value}: {r.fpr_ratio:.2f}x ({r.negatives:,} non-fraud "
                    "rows)" for r in over.itertuples())),
            metadata={"max_ratio": monitoring.fairness_max_ratio,
                      "worst": dg.MetadataValue.text(str(worst)),
                      "min_false_positives": monitoring.fairness_min_false_positives},
        )],
    )


performance_job = dg.define_asset_job(
    "monitor_performance", selection=dg.AssetSelection.assets(model_performance),
    description="Realized metrics of days whose labels have matured.",
)
