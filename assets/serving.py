"""serving_report: the batch and the real-time path side by side, per day, on this model and
data: throughput, latency, CPU-seconds and cost per 1,000 predictions, how old what each
serves is, and how often their decisions differ (:mod:`fraudkit.monitoring.serving`)."""

import dagster as dg
import pandas as pd
import pyarrow as pa

from assets.common import SETTINGS, daily_partitions, partition_days, single_run
from assets.online import online_predictions
from assets.scoring import batch_predictions
from fraudkit import lake
from fraudkit.monitoring.serving import (
    PLOTLY_SCRIPT,
    SERVING_SCHEMA,
    batch_latency,
    batch_staleness,
    cost_per_1000,
    decisions_differing,
    online_latency,
    plotly_script,
    report_html,
    rescore_cpu,
)
from resources import DeltaLakeResource, ReportsResource

SERVING_TABLE = "serving_report"


def _batch_run(context: dg.AssetExecutionContext, day: str, rows: int) -> dict:
    """The day's share of the run that last scored it (by rows): task seconds and CPU."""
    found = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=batch_predictions.key, asset_partitions=[day]),
        limit=1).records
    if not found or not rows:
        return {"note": "no batch_predictions run recorded in this Dagster instance"}
    meta = found[0].asset_materialization.metadata
    run_rows = meta.get("dagster/row_count")
    seconds, cpu = meta.get("task_seconds"), meta.get("task_cpu_seconds")
    if run_rows is None or seconds is None or not run_rows.value:
        return {"note": "the batch run recorded no timings"}
    share = rows / run_rows.value
    out = {"seconds": seconds.value * share,
           "cpu_seconds": cpu.value * share if cpu is not None else None}
    if cpu is None:
        out["note"] = "the batch run predates CPU accounting: re-run score for the day"
    return out


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    deps=[batch_predictions, online_predictions],
    group_name="monitoring",
    kinds={"deltalake", "plotly"},
    description="Batch vs real-time, per day: throughput, p50/p99 latency, CPU-seconds and "
    "cost per 1,000 predictions (COST_PER_CPU_HOUR), the age of what each path serves, and "
    "the share of online decisions that differ from the batch decision. HTML with plots and "
    "the serving_report Delta table.",
)
def serving_report(
    context: dg.AssetExecutionContext,
    delta: DeltaLakeResource,
    reports: ReportsResource,
) -> dg.MaterializeResult:
    days = partition_days(context)
    tables = delta.tables()
    options = tables.storage_options
    online_uri = delta.uri("online_predictions")
    price = SETTINGS.cost_per_cpu_hour
    rows = []
    for day in days:
        batch = lake.read_days(tables.predictions, [day], [
            "transaction_id", "customer_id", "tx_datetime", "decision", "model_version",
            "scored_at"], storage_options=options).to_pandas()
        online = (lake.read_days(online_uri, [day], storage_options=options).to_pandas()
                  if lake.table_version(online_uri, options) is not None else pd.DataFrame())
        run = _batch_run(context, day, len(batch))
        rows.append({
            "day": day, "path": "batch", "predictions": len(batch),
            "throughput_per_s": len(batch) / run["seconds"] if run.get("seconds") else None,
            **batch_latency(batch), "cpu_seconds": run.get("cpu_seconds"),
            "cost_per_1000": cost_per_1000(run.get("cpu_seconds"), len(batch), price),
            "note": run.get("note", "Dask tasks: worker CPU, shared out by rows")})
        if online.empty:
            context.log.info(f"{day}: no online decisions; the report has the batch path only")
            continue
        started = pd.Timestamp.now()
        cpu, drains = rescore_cpu(SETTINGS, online, lake.shift_day(day, -1))
        earlier = lake.read_days(tables.predictions, lake.day_range(
            lake.shift_day(day, -7), lake.shift_day(day, -1)), ["customer_id", "tx_datetime"],
            storage_options=options).to_pandas()
        stale = batch_staleness(online, earlier)
        differ = decisions_differing(online, batch)
        latency = online_latency(online)
        rows[-1].update({k: v for k, v in stale.items() if k.startswith("staleness")})
        rows[-1]["decisions_differing"] = differ.get("differing")
        rows.append({
            "day": day, "path": "online", **latency, "cpu_seconds": cpu,
            "cost_per_1000": cost_per_1000(cpu, latency["predictions"], price),
            # what an online answer decides on: the request itself, latency_ms old
            "staleness_p50_h": latency["latency_p50_ms"] / 3_600_000,
            "staleness_p99_h": latency["latency_p99_ms"] / 3_600_000,
            "decisions_differing": differ.get("differing"),
            "note": f"scoring CPU re-measured in {drains} drains (HTTP not included); "
                    f"{stale.get('without_batch_prediction', 0)} requests had no batch "
                    f"prediction to serve; decisions differing with the same model: "
                    f"{differ.get('differing_same_model')}"})
        context.log.info(f"{day}: online CPU re-measured in "
                         f"{(pd.Timestamp.now() - started).total_seconds():.1f}s")
    frame = pd.DataFrame(rows)
    for column in SERVING_SCHEMA.names:
        if column not in frame:
            frame[column] = None
    frame = frame[SERVING_SCHEMA.names]
    uri = delta.uri(SERVING_TABLE)
    lake.ensure_table(uri, SERVING_SCHEMA, options)
    version = lake.replace_days(uri, pa.Table.from_pandas(frame, schema=SERVING_SCHEMA,
                                                          preserve_index=False), days, options)
    if not reports.exists("serving", PLOTLY_SCRIPT):
        reports.write("serving", PLOTLY_SCRIPT, plotly_script())
    html = reports.write("serving", f"serving_{days[0]}_{days[-1]}.html", report_html(
        frame, f"Batch vs real-time serving, {days[0]} .. {days[-1]}"))
    per_path = frame.groupby("path").agg(
        predictions=("predictions", "sum"), cpu_seconds=("cpu_seconds", "sum"),
        latency_p99_ms=("latency_p99_ms", "max"), staleness_p50_h=("staleness_p50_h", "median"))
    per_path["cost_per_1000"] = [cost_per_1000(c, int(p), price) for c, p in
                                 zip(per_path["cpu_seconds"], per_path["predictions"],
                                     strict=True)]
    metadata = {
        "days": dg.MetadataValue.text(f"{days[0]} .. {days[-1]} ({len(days)})"),
        "per_day": dg.MetadataValue.md(frame.drop(columns=["note"]).to_markdown(
            index=False, floatfmt=".4g")),
        "per_path": dg.MetadataValue.md(per_path.reset_index().to_markdown(
            index=False, floatfmt=".4g")),
        "notes": dg.MetadataValue.md("\n".join(f"- {r.day} {r.path}: {r.note}"
                                               for r in frame.itertuples())),
        "report": dg.MetadataValue.path(html),
        "report_url": dg.MetadataValue.url(reports.link(html)),
        "cost_per_cpu_hour": price,
        "table_uri": dg.MetadataValue.path(uri),
        "table_version": version,
    }
    for path_name, values in per_path.iterrows():
        if values["cost_per_1000"] is not None:
            metadata[f"{path_name}_cost_per_1000"] = float(values["cost_per_1000"])
    return dg.MaterializeResult(metadata=metadata)


serving_job = dg.define_asset_job(
    "report_serving", selection=dg.AssetSelection.assets(serving_report),
    description="Batch vs real-time figures of the chosen days (serving_report).",
)
