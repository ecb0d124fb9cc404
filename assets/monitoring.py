"""The monitoring loop's assets: daily drift reports, realized performance once labels have
matured, and the retraining run that puts a challenger through the gate.

Every threshold lives in one resource, :class:`resources.MonitoringResource`, which the assets
and the sensors share, so what a report calls "drifted" is exactly what the sensor acts on.
"""


import datetime as dt
import json

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import Field

from assets.common import SETTINGS, daily_partitions, partition_days, single_run
from assets.features import transaction_features
from assets.ingest import RAW_TRANSACTIONS
from assets.scoring import batch_predictions
from assets.training import (
    HyperparamsConfig,
    TrainingWindowConfig,
    load_labelled,
    training_data_summary,
    training_windows,
)
from fraudkit import lake
from fraudkit.features import FEATURE_COLUMNS
from fraudkit.monitoring.drift import (
    DRIFT_METRICS_SCHEMA,
    add_to_workspace,
    build_report,
    summary_rows,
)
from fraudkit.monitoring.gate import retrain_and_gate, score_version
from fraudkit.monitoring.performance import PERFORMANCE_SCHEMA, matured_until
from fraudkit.registry import ModelVersion
from fraudkit.training import evaluate
from resources import DeltaLakeResource, ModelRegistryResource, MonitoringResource

DRIFT_TABLE = "drift_metrics"
PERFORMANCE_TABLE = "model_performance"


# -- drift_report ----------------------------------------------------------------------------
def reference_frame(version: ModelVersion, delta: DeltaLakeResource, how: str,
                    rows: int) -> tuple[pd.DataFrame, str]:
    """The champion's reference sample with its own scores, and a line saying what it is.

    ``holdout`` (default) reads the features of the days the model was evaluated on (its
    manifest's ``test_range``): the latest matured data it was judged on, with complete
    look-back windows. The stored ``reference.parquet`` is sampled from the training window,
    whose first days can lack a full 30-day look-back (the small scale warms up 7 days only)
    and which at the start of the data predates the steady state of compromised terminals;
    compared with it, every normal day looks drifted. Falls back to the stored sample when
    the held-out days are no longer in the features table.
    """
    if how == "holdout":
        first, last = version.manifest["training_data"].get("test_range", [None, None])
        tables = delta.tables()
        if first and lake.table_version(tables.features, tables.storage_options) is not None:
            days = lake.day_range(first, last)
            feats = lake.read_days(tables.features, days, [*FEATURE_COLUMNS, "day"],
                                   storage_options=tables.storage_options).to_pandas()
            if len(feats):
                feats = feats.sample(min(rows, len(feats)), random_state=0)
                feats["score"] = score_version(version.model_path, feats)
                return feats.reset_index(drop=True), (
                    f"{len(feats)} rows of {version.version}'s held-out days {first}..{last}")
    elif how != "stored":
        raise dg.Failure(f"reference={how!r}: use 'holdout' or 'stored'")
    path = version.path / "reference.parquet"
    if not path.exists():
        raise dg.Failure(f"{version.version} has no reference sample at {path}")
    ref = pd.read_parquet(path)
    ref["score"] = score_version(version.model_path, ref)
    return ref, f"{len(ref)} rows of {version.version}'s stored reference.parquet"


def _md_table(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False, floatfmt=".3f"))


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    deps=[batch_predictions, transaction_features],
    check_specs=[
        dg.AssetCheckSpec(
            "no_dataset_drift", asset="drift_report",
            description="No day's drift share reaches the monitoring threshold (a warning: "
            "the drift sensor decides what to do about it).",
        )
    ],
    group_name="monitoring",
    kinds={"evidently", "deltalake"},
    description="Evidently report of each day's features and scores against the scoring "
    "model's reference: drift per feature, prediction drift, data quality. HTML per day, a "
    "summary row per column in the drift_metrics Delta table, and the Evidently workspace.",
)
def drift_report(
    context: dg.AssetExecutionContext,
    delta: DeltaLakeResource,
    registry: ModelRegistryResource,
    monitoring: MonitoringResource,
) -> dg.MaterializeResult:
    days = partition_days(context)
    tables = delta.tables()
    if lake.table_version(tables.predictions, tables.storage_options) is None:
        raise dg.Failure(f"no batch_predictions table at {tables.predictions}: score first")
    reg = registry.registry()
    cfg = monitoring.drift_config()
    out_dir = SETTINGS.reports_dir / "drift"
    out_dir.mkdir(parents=True, exist_ok=True)
    workspace = monitoring.workspace_dir()
    references: dict[str, tuple[pd.DataFrame, str]] = {}
    rows, lines = [], []
    for day in days:
        preds = lake.read_days(tables.predictions, [day], ["transaction_id", "score",
                                                           "model_version"],
                               storage_options=tables.storage_options).to_pandas()
        if preds.empty:
            raise dg.Failure(f"no batch_predictions for {day}: run the `score` job for it")
        feats = lake.read_days(tables.features, [day], ["transaction_id", *FEATURE_COLUMNS],
                               storage_options=tables.storage_options).to_pandas()
        current = feats.merge(preds, on="transaction_id", how="inner", validate="one_to_one")
        version = preds["model_version"].mode().iat[0]
        if version not in references:
            references[version] = reference_frame(reg.get(version), delta,
                                                  monitoring.reference, monitoring.reference_rows)
        reference, reference_note = references[version]
        snapshot, summary = build_report(
            current, reference, cfg, name=f"drift {day} ({version})",
            metadata={"day": day, "model_version": version, "reference": reference_note},
            tags=["drift", day, version], timestamp=dt.datetime.fromisoformat(day),
        )
        html = out_dir / f"drift_{day}.html"
        snapshot.save_html(str(html))
        if workspace is not None:
            ui_path = add_to_workspace(snapshot, workspace)
        rows.append(summary_rows(summary, day, version, str(html)))
        prediction = next(c for c in summary.columns if c.kind == "prediction")
        lines.append({
            "day": day, "rows": summary.current_rows,
            "rows_used": summary.current_rows_used,
            "drift_share": summary.drift_share, "dataset_drift": summary.dataset_drift,
            "score_drift": prediction.drift_score,
            "drifted": ", ".join(summary.drifted_columns) or "-",
            "model": version, "report": f"[html](file://{html})",
            **({"evidently": f"[ui](http://localhost:{monitoring.evidently_ui_port}{ui_path})"}
               if workspace is not None else {}),
        })
        context.log.info(f"{day}: drift share {summary.drift_share:.2f} "
                         f"({', '.join(summary.drifted_columns) or 'no feature'}), score drift "
                         f"{prediction.drift_score:.3f}; report {html}")
    uri = delta.uri(DRIFT_TABLE)
    lake.ensure_table(uri, DRIFT_METRICS_SCHEMA, tables.storage_options)
    version = lake.replace_days(uri, pa.concat_tables(rows), days, tables.storage_options)
    per_day = pd.DataFrame(lines)
    drifted_days = per_day.loc[per_day["dataset_drift"], "day"].tolist()
    last_html = out_dir / f"drift_{lines[-1]['day']}.html"
    metadata: dict = {
        "days": dg.MetadataValue.text(f"{days[0]} .. {days[-1]} ({len(days)})"),
        "drift_share": round(float(per_day["drift_share"].max()), 4),
        "dataset_drift_days": dg.MetadataValue.text(", ".join(drifted_days) or "none"),
        "per_day": _md_table(per_day),
        "report": dg.MetadataValue.path(str(last_html)),
        "report_url": dg.MetadataValue.url(f"file://{last_html}"),
        "reference": dg.MetadataValue.text("; ".join(note for _, note in references.values())),
        "thresholds": dg.MetadataValue.json({"feature_threshold": cfg.threshold,
                                             "drift_share": cfg.drift_share,
                                             "methods": {"numerical": cfg.num_method,
                                                         "flags": cfg.cat_method},
                                             "not_in_share": list(cfg.ignore_in_share)}),
        "table_uri": dg.MetadataValue.path(uri),
        "table_version": version,
    }
    if workspace is not None:
        metadata["evidently_ui"] = dg.MetadataValue.text(
            f"evidently ui --workspace {workspace} --port {monitoring.evidently_ui_port}")
        metadata["evidently_report"] = dg.MetadataValue.url(
            f"http://localhost:{monitoring.evidently_ui_port}{ui_path}")
    if len(days) == 1:
        metadata["per_feature"] = _md_table(
            pd.concat([r.to_pandas() for r in rows])[["column", "method", "drift_score",
                                                      "threshold", "drifted"]])
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[dg.AssetCheckResult(
            check_name="no_dataset_drift", passed=not drifted_days,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"drifted_days": dg.MetadataValue.text(", ".join(drifted_days) or "none"),
                      "max_drift_share": round(float(per_day["drift_share"].max()), 4)},
        )],
    )


# -- model_performance -----------------------------------------------------------------------
@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    deps=[batch_predictions, RAW_TRANSACTIONS],
    check_specs=[
        dg.AssetCheckSpec(
            "performance_above_floor", asset="model_performance",
            description="Every day's realized metric is at or above the monitoring floor.",
        )
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
    preds = lake.read_days(tables.predictions, days, ["transaction_id", "customer_id", "score",
                                                      "model_version", "day"],
                           storage_options=tables.storage_options).to_pandas()
    labels = lake.read_days(tables.raw, days, ["transaction_id", "tx_fraud", "day"],
                            storage_options=tables.storage_options).to_pandas()
    frame = preds.merge(labels, on=["transaction_id", "day"], how="inner",
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
    metric, floor = monitoring.performance_metric, monitoring.performance_floor
    below = [] if floor is None else per_day.loc[per_day[metric] < floor, "day"].tolist()
    return dg.MaterializeResult(
        metadata={
            "days": dg.MetadataValue.text(f"{days[0]} .. {days[-1]} ({len(days)})"),
            "auc_roc": round(float(per_day["auc_roc"].mean()), 4),
            "average_precision": round(float(per_day["average_precision"].mean()), 4),
            "card_precision_at_100": round(float(per_day["card_precision_at_100"].mean()), 4),
            "per_day": _md_table(per_day),
            "table_uri": dg.MetadataValue.path(uri),
            "table_version": version,
        },
        check_results=[dg.AssetCheckResult(
            check_name="performance_above_floor", passed=not below,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"metric": metric, "floor": floor if floor is not None else "none",
                      "days_below": dg.MetadataValue.text(", ".join(below) or "none")},
        )],
    )


# -- retrained_model: challenger vs champion -------------------------------------------------
class RetrainConfig(HyperparamsConfig):
    """The challenger's window (unset: the monitoring resource's RETRAIN_* settings) and
    its hyperparameters (the ``model`` asset's)."""

    train_days: int | None = Field(None, description="Days of training data.")
    test_days: int | None = Field(None, description="Held-out days both models are judged on.")
    warmup_days: int | None = Field(None, description="First days skipped: their look-back "
                                                      "windows are incomplete.")
    as_of: str | None = Field(None, description="Last day of the window (YYYY-MM-DD; "
                                                "default: the newest day with features).")


TRIGGER_TAG_PREFIX = "monitoring/"


@dg.asset(
    deps=[transaction_features, RAW_TRANSACTIONS],
    group_name="monitoring",
    kinds={"lightgbm", "onnx"},
    description="A challenger trained on the most recent matured window, scored with the "
    "champion on the same held-out days; promoted only if the gate passes. The verdict is "
    "in the registry's event log and this asset's metadata.",
)
def retrained_model(
    context: dg.AssetExecutionContext,
    config: RetrainConfig,
    delta: DeltaLakeResource,
    registry: ModelRegistryResource,
    monitoring: MonitoringResource,
) -> dg.MaterializeResult:
    tables = delta.tables()
    present = lake.partition_values(tables.features, tables.storage_options)
    window = TrainingWindowConfig(
        train_days=config.train_days or monitoring.retrain_train_days,
        test_days=config.test_days or monitoring.retrain_test_days,
        warmup_days=(config.warmup_days if config.warmup_days is not None
                     else monitoring.retrain_warmup_days),
        as_of=config.as_of,
    )
    train_days, test_days = training_windows(present[0], present[-1], window,
                                             SETTINGS.label_delay_days)
    frame, versions = load_labelled(delta, train_days, test_days)
    trigger = {k[len(TRIGGER_TAG_PREFIX):]: v for k, v in context.run.tags.items()
               if k.startswith(TRIGGER_TAG_PREFIX)}
    outcome = retrain_and_gate(
        frame, registry.registry(), monitoring.gate_config(), config.params(),
        training_data=training_data_summary(frame, versions),
        trigger={**trigger, "run_id": context.run.run_id},
    )
    decision = outcome.decision
    context.log.info(f"gate: {'PROMOTED' if decision.promote else 'rejected'} "
                     f"{outcome.challenger_version} vs {outcome.champion_version}: "
                     f"{decision.reason}")
    scores = pd.DataFrame([
        {"model": f"challenger {outcome.challenger_version}", **outcome.challenger_metrics},
        {"model": f"champion {outcome.champion_version}", **outcome.champion_metrics},
    ])
    return dg.MaterializeResult(
        metadata={
            "decision": "promoted" if decision.promote else "kept champion",
            "reason": dg.MetadataValue.text(decision.reason),
            "challenger": outcome.challenger_version,
            "previous_champion": outcome.champion_version,
            "champion": outcome.new_champion,
            "gate_metric": decision.metric,
            "challenger_score": round(decision.challenger, 5),
            "champion_score": round(decision.champion, 5),
            "tolerance": decision.tolerance,
            "scores": _md_table(scores),
            "train_days": dg.MetadataValue.text(f"{train_days[0]} .. {train_days[-1]}"),
            "test_days": dg.MetadataValue.text(f"{test_days[0]} .. {test_days[-1]}"),
            "trigger": dg.MetadataValue.json(trigger or {"source": "manual"}),
            "registry_events": dg.MetadataValue.path(str(registry.registry().events_file)),
            "rollback": dg.MetadataValue.text("make rollback (python -m fraudkit.registry "
                                              "rollback) restores the previous champion"),
            "gate": dg.MetadataValue.text(json.dumps(decision.as_dict())),
        }
    )


# -- jobs ------------------------------------------------------------------------------------
drift_report_job = dg.define_asset_job(
    "monitor_drift", selection=dg.AssetSelection.assets(drift_report),
    description="drift_report for the chosen days (HTML, drift_metrics, Evidently workspace).",
)
performance_job = dg.define_asset_job(
    "monitor_performance", selection=dg.AssetSelection.assets(model_performance),
    description="Realized metrics of days whose labels have matured.",
)
retrain_job = dg.define_asset_job(
    "retrain", selection=dg.AssetSelection.assets(retrained_model),
    description="Challenger on the latest matured window → gate against the champion.",
)
micro_batch_job = dg.define_asset_job(
    "micro_batch",
    selection=dg.AssetSelection.assets("raw_transactions", "quarantined_transactions",
                                       "transaction_features", "batch_predictions",
                                       drift_report),
    description="One landed day end to end: ingest, features, scoring, drift report.",
)
