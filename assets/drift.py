"""The drift_report asset: each day's features and scores against the scoring model's
reference in an Evidently report (HTML, a row per column in the ``drift_metrics`` table, the
Evidently workspace), its ``monitor_drift`` job, and ``micro_batch``, the landing sensor's
job, whose runs end with this report. Its twin ``online_drift_report`` runs the same report
on live traffic: the features and scores the online service decided on
(``online_predictions``), into ``online_drift_metrics`` and an Evidently project of its own.

The thresholds come from :class:`resources.MonitoringResource`, which the drift sensor
reads too, so what a report calls "drifted" is exactly what the sensor acts on. The logic
itself is plain Python in :mod:`fraudkit.monitoring.drift`.
"""


import datetime as dt

import dagster as dg
import pandas as pd
import pyarrow as pa

from assets.common import (
    daily_partitions,
    day_has_ended,
    md_table,
    partition_days,
    single_run,
)
from assets.features import transaction_features
from assets.freshness import freshness_selection
from assets.online import online_predictions
from assets.scoring import batch_predictions
from fraudkit import lake
from fraudkit.features import FEATURE_COLUMNS
from fraudkit.monitoring.drift import (
    DRIFT_METRICS_SCHEMA,
    DriftWorkspace,
    build_report,
    summary_rows,
)
from fraudkit.monitoring.gate import score_version
from fraudkit.registry import ModelVersion
from resources import (
    DeltaLakeResource,
    ModelRegistryResource,
    MonitoringResource,
    ReportsResource,
)

DRIFT_TABLE = "drift_metrics"
#: drift_metrics' twin for the reports of live traffic (online_drift_report).
ONLINE_DRIFT_TABLE = "online_drift_metrics"


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


#: Where a drift report's current rows come from: the table its rows go to, the Evidently
#: project, the HTML file prefix, and what the report says it read.
SOURCES = {
    "batch": {"table": DRIFT_TABLE, "project": "fraud monitoring", "prefix": "drift",
              "read": "batch: transaction_features + batch_predictions"},
    "online": {"table": ONLINE_DRIFT_TABLE, "project": "fraud monitoring: online decisions",
               "prefix": "drift_online",
               "read": "online: the service's decisions (online_predictions)"},
}


def _batch_day(delta: DeltaLakeResource, day: str) -> tuple[pd.DataFrame, str]:
    """A day's features and batch scores, and the model that scored most of them."""
    tables = delta.tables()
    preds = lake.read_days(tables.predictions, [day], ["transaction_id", "score",
                                                       "model_version"],
                           storage_options=tables.storage_options).to_pandas()
    if preds.empty:
        raise dg.Failure(f"no batch_predictions for {day}: run the `score` job for it")
    feats = lake.read_days(tables.features, [day], ["transaction_id", *FEATURE_COLUMNS],
                           storage_options=tables.storage_options).to_pandas()
    current = feats.merge(preds, on="transaction_id", how="inner", validate="one_to_one")
    return current, preds["model_version"].mode().iat[0]


def _online_day(delta: DeltaLakeResource, day: str) -> tuple[pd.DataFrame, str] | None:
    """A day's online decisions scored by a model (not the fallback rules), those of the
    version that answered most of them (its reference is the one to compare with); None
    when the service decided nothing that day."""
    logged = lake.read_days(delta.uri("online_predictions"), [day],
                            ["transaction_id", *FEATURE_COLUMNS, "score", "model_version",
                             "fallback"], storage_options=delta.storage_options).to_pandas()
    logged = logged[~logged["fallback"].astype(bool)]
    if logged.empty:
        return None
    version = logged["model_version"].mode().iat[0]
    return logged[logged["model_version"] == version].drop(columns=["fallback"]), version


def report_days(context: dg.AssetExecutionContext, source: str, delta: DeltaLakeResource,
                registry: ModelRegistryResource, monitoring: MonitoringResource,
                reports: ReportsResource) -> dg.MaterializeResult:
    """The drift reports of the run's days from ``source`` ("batch" or "online"): the same
    Evidently report, reference and thresholds for both, so the drift sensor can act on
    either; each report, row and materialization says which source it read."""
    days = partition_days(context)
    where = SOURCES[source]
    tables = delta.tables()
    if source == "batch" and lake.table_version(tables.predictions,
                                                tables.storage_options) is None:
        raise dg.Failure(f"no batch_predictions table at {tables.predictions}: score first")
    if source == "online" and lake.table_version(delta.uri("online_predictions"),
                                                 delta.storage_options) is None:
        raise dg.Failure(f"no online_predictions table at {delta.uri('online_predictions')}: "
                         "run the online_log job for these days first")
    reg = registry.registry()
    cfg = monitoring.drift_config()
    workspace_dir = monitoring.workspace_dir()
    workspace = (DriftWorkspace(workspace_dir, project_name=where["project"],
                                description=f"Daily drift, {where['read']}")
                 if workspace_dir is not None else None)
    references: dict[str, tuple[pd.DataFrame, str]] = {}
    rows, lines, skipped = [], [], []
    # A day in progress is a partition (micro-batches score it as files land), but its
    # traffic so far is not a day's: night-time card testing alone would read as drift.
    # It is reported once it has ended (the landing sensor's closing run does it).
    open_days = [d for d in days if not day_has_ended(d)]
    for day in open_days:
        context.log.info(f"{day}: the day has not ended; its drift is reported once it has")
    ui_path, last_html = None, ""
    for day in (d for d in days if d not in open_days):
        found = _batch_day(delta, day) if source == "batch" else _online_day(delta, day)
        if found is None:
            skipped.append(day)
            context.log.info(f"{day}: the service decided nothing with a model; no report")
            continue
        current, version = found
        if version not in references:
            references[version] = reference_frame(reg.get(version), delta,
                                                  monitoring.reference, monitoring.reference_rows)
        reference, reference_note = references[version]
        label = "" if source == "batch" else ", online"
        snapshot, summary = build_report(
            current, reference, cfg, name=f"drift {day} ({version}{label})",
            metadata={"day": day, "model_version": version, "reference": reference_note,
                      "source": where["read"]},
            tags=["drift", day, version, source], timestamp=dt.datetime.fromisoformat(day),
        )
        # The page as text (save_html of evidently 0.7 ignores a file object it is given).
        html = reports.write("drift", f"{where['prefix']}_{day}.html",
                             snapshot.get_html_str(as_iframe=False))
        if workspace is not None:
            ui_path = workspace.add(snapshot)
        rows.append(summary_rows(summary, day, version, html))
        last_html = html
        prediction = next(c for c in summary.columns if c.kind == "prediction")
        lines.append({
            "day": day, "rows": summary.current_rows,
            "rows_used": summary.current_rows_used,
            "drift_share": summary.drift_share, "dataset_drift": summary.dataset_drift,
            "score_drift": prediction.drift_score,
            "drifted": ", ".join(summary.drifted_columns) or "-",
            "model": version, "report": f"[html]({reports.link(html)})",
            **({"evidently": f"[ui](http://localhost:{monitoring.evidently_ui_port}{ui_path})"}
               if workspace is not None else {}),
        })
        context.log.info(f"{day} ({source}): drift share {summary.drift_share:.2f} "
                         f"({', '.join(summary.drifted_columns) or 'no feature'}), score drift "
                         f"{prediction.drift_score:.3f}; report {html}")
    uri = delta.uri(where["table"])
    lake.ensure_table(uri, DRIFT_METRICS_SCHEMA, tables.storage_options)
    version = lake.replace_days(
        uri, pa.concat_tables(rows) if rows else DRIFT_METRICS_SCHEMA.empty_table(), days,
        tables.storage_options)
    metadata: dict = {
        "days": dg.MetadataValue.text(f"{days[0]} .. {days[-1]} ({len(days)})"),
        "source": dg.MetadataValue.text(where["read"]),
        "table_uri": dg.MetadataValue.path(uri),
        "table_version": version,
    }
    if open_days:
        metadata["days_not_ended"] = dg.MetadataValue.text(
            f"{', '.join(open_days)}: not reported until the day has ended")
    if not lines:
        if skipped:
            metadata["days_without_decisions"] = dg.MetadataValue.text(", ".join(skipped))
        note = ("the day has not ended" if not skipped else "no day had decisions to report")
        return dg.MaterializeResult(metadata=metadata, check_results=[dg.AssetCheckResult(
            check_name="no_dataset_drift", passed=True, severity=dg.AssetCheckSeverity.WARN,
            metadata={"drifted_days": "none", "note": note})])
    per_day = pd.DataFrame(lines)
    drifted_days = per_day.loc[per_day["dataset_drift"], "day"].tolist()
    metadata.update({
        "drift_share": round(float(per_day["drift_share"].max()), 4),
        "dataset_drift_days": dg.MetadataValue.text(", ".join(drifted_days) or "none"),
        "per_day": md_table(per_day),
        "report": dg.MetadataValue.path(last_html),
        "report_url": dg.MetadataValue.url(reports.link(last_html)),
        "reference": dg.MetadataValue.text("; ".join(note for _, note in references.values())),
        "thresholds": dg.MetadataValue.json({"feature_threshold": cfg.threshold,
                                             "drift_share": cfg.drift_share,
                                             "methods": {"numerical": cfg.num_method,
                                                         "flags": cfg.cat_method},
                                             "not_in_share": list(cfg.ignore_in_share)}),
    })
    if skipped:
        metadata["days_without_decisions"] = dg.MetadataValue.text(", ".join(skipped))
    if workspace is not None:
        metadata["evidently_ui"] = dg.MetadataValue.text(
            f"evidently ui --workspace {workspace_dir} --port {monitoring.evidently_ui_port}")
        metadata["evidently_report"] = dg.MetadataValue.url(
            f"http://localhost:{monitoring.evidently_ui_port}{ui_path}")
    if len(lines) == 1:
        metadata["per_feature"] = md_table(
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
    reports: ReportsResource,
) -> dg.MaterializeResult:
    return report_days(context, "batch", delta, registry, monitoring, reports)


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    deps=[online_predictions],
    check_specs=[
        dg.AssetCheckSpec(
            "no_dataset_drift", asset="online_drift_report",
            description="No day's drift share of the live traffic reaches the monitoring "
            "threshold (a warning: the drift sensor decides what to do about it).",
        )
    ],
    group_name="monitoring",
    kinds={"evidently", "deltalake"},
    description="drift_report's Evidently report on live traffic: each day's online "
    "decisions (the features and scores the service used, online_predictions) against the "
    "answering model's reference. Rows in the online_drift_metrics Delta table; the drift "
    "sensor reads them beside drift_metrics.",
)
def online_drift_report(
    context: dg.AssetExecutionContext,
    delta: DeltaLakeResource,
    registry: ModelRegistryResource,
    monitoring: MonitoringResource,
    reports: ReportsResource,
) -> dg.MaterializeResult:
    return report_days(context, "online", delta, registry, monitoring, reports)


drift_report_job = dg.define_asset_job(
    "monitor_drift", selection=dg.AssetSelection.assets(drift_report),
    description="drift_report for the chosen days (HTML, drift_metrics, Evidently workspace).",
)
online_drift_job = dg.define_asset_job(
    "monitor_online_drift", selection=dg.AssetSelection.assets(online_drift_report),
    description="online_drift_report for the chosen days: drift of the live traffic the "
                "service decided on.",
)

#: A landed day end to end, launched by ``sensors/landing.py``. It lives here, beside
#: drift_report, because its runs end with the day's drift report: drift_report is the last
#: asset of its selection (the others are the batch path's, named by key).
micro_batch_job = dg.define_asset_job(
    "micro_batch",
    # The freshness checks judge the clock, not the run: freshness_sensor evaluates them.
    selection=dg.AssetSelection.assets("raw_transactions", "quarantined_transactions",
                                       "transaction_features", "batch_predictions",
                                       drift_report) - freshness_selection,
    description="Landed days end to end: ingest, features, scoring, drift report.",
)
#: The day in progress so far, launched by ``sensors/landing.py`` as its files land: the
#: batch path without the drift report, which waits for the whole day (micro_batch, once
#: the day has ended).
micro_batch_intraday_job = dg.define_asset_job(
    "micro_batch_intraday",
    selection=dg.AssetSelection.assets("raw_transactions", "quarantined_transactions",
                                       "transaction_features", "batch_predictions")
    - freshness_selection,
    description="The day in progress, as its files land: ingest, features, scoring (its "
                "drift report waits for the day to end).",
)
