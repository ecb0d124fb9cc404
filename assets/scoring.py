"""batch_predictions: every day's transactions scored by the champion model on Dask."""


import hashlib
from collections import Counter

import dagster as dg

from assets.common import SETTINGS, daily_partitions, partition_days, preview, single_run
from assets.features import transaction_features
from assets.training import model
from fraudkit import lake
from fraudkit.batch import PREDICTIONS_SCHEMA, chunk_days_by_rows, score_days
from resources import DaskResource, DeltaLakeResource, ModelRegistryResource

#: Days scored per Dask task, at most: each task pays for opening the tables and a session,
#: so fewer, larger tasks score faster (benchmarks/batch_scoring.py: 0.86x of in-memory
#: onnxruntime at 15 days, 0.92x at 45), while 4 tasks still keep 2 workers busy for the
#: default 180 days and the run log shows each one finish. A shorter run is split into one
#: task per worker at least: explaining its reviews and declines (about 0.7 ms of CPU
#: each) is most of the work when a drifted day flags a quarter of its transactions.
DAYS_PER_TASK = 45
#: ... and rows per task, at most (one day at least): a worker peaks at about 800 bytes a row
#: scored (benchmarks/scale.py: 3.4 GiB for the 4.4 M rows of 45 days at 10x the demo's
#: data), so this keeps it near 2.3 GiB at any scale; the demo's 45 days hold 440 k rows.
ROWS_PER_TASK = 3_000_000


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=single_run,
    deps=[transaction_features, model],
    check_specs=[
        dg.AssetCheckSpec("one_prediction_per_transaction", asset="batch_predictions",
                          description="Each kept transaction of the days has exactly one "
                          "prediction."),
        dg.AssetCheckSpec("scores_in_unit_interval", asset="batch_predictions",
                          description="Every score is finite and within [0, 1]."),
    ],
    group_name="batch",
    kinds={"onnx", "dask", "deltalake"},
    description="transaction_id, score, decision, the top reasons of each review and "
    "decline, model_version, scored_at and the feature table version, per day, from the "
    "registry's champion at run time.",
)
def batch_predictions(
    context: dg.AssetExecutionContext,
    dask: DaskResource,
    delta: DeltaLakeResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    days = partition_days(context)
    tables = delta.tables()
    champion = registry.registry().champion()
    champion.verify()
    features_version = lake.table_version(tables.features, tables.storage_options)
    if features_version is None:
        raise dg.Failure(f"no transaction_features table at {tables.features}")
    lake.ensure_table(tables.predictions, PREDICTIONS_SCHEMA, tables.storage_options)
    context.log.info(f"scoring {len(days)} day(s) with champion {champion.version}")
    counts = lake.rows_per_day(tables.features, days, features_version, tables.storage_options)
    chunks = chunk_days_by_rows(days, counts, DAYS_PER_TASK, ROWS_PER_TASK,
                                min_chunks=dask.n_workers)
    # The workers score the bytes verified here, sent once to the cluster: they need no
    # access to the registry (a worker on another host, tables on an object store).
    model_bytes = champion.model_path.read_bytes()
    if hashlib.sha256(model_bytes).hexdigest() != champion.manifest["sha256"]:
        raise dg.Failure(f"{champion.model_path} changed after it was verified; re-run")
    with dask.client() as client:
        results = dask.map_with_progress(
            context, score_days, chunks, "score", client,
            tables=tables, features_version=features_version,
            model_path=str(champion.model_path), model_version=champion.version,
            thresholds=champion.manifest["thresholds"], reason_codes=SETTINGS.reason_codes,
            model_bytes=client.scatter(model_bytes, broadcast=True),
        )
    predicted = lake.rows_per_day(tables.predictions, days, storage_options=tables.storage_options)
    kept = lake.rows_per_day(tables.raw, days, storage_options=tables.storage_options)
    mismatched = [d for d in days if predicted[d] != kept[d]]
    written = sum(r["written_rows"] for r in results)
    distinct = sum(r["distinct_ids"] for r in results)
    out_of_range = sum(r["out_of_range"] for r in results)
    decisions = Counter()
    for r in results:
        decisions.update(r["decisions"])
    rows = sum(r["rows"] for r in results)
    seconds = sum(r["seconds"] for r in results)
    sample = results[-1]["head"]  # the last day's first rows, from its task
    return dg.MaterializeResult(
        metadata={
            "days": dg.MetadataValue.text(f"{days[0]} .. {days[-1]} ({len(days)})"),
            "dagster/row_count": rows,
            "model_version": champion.version,
            "feature_table_version": features_version,
            "table_version": lake.table_version(tables.predictions, tables.storage_options),
            "table_uri": dg.MetadataValue.path(tables.predictions),
            "decisions": dg.MetadataValue.json(dict(decisions)),
            "explained": dg.MetadataValue.text(_explained(results)),
            "task_seconds": round(seconds, 2),
            "task_cpu_seconds": round(sum(r["cpu_seconds"] for r in results), 3),
            "preview": preview(sample.to_pandas()),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="one_prediction_per_transaction",
                passed=not mismatched and distinct == written,
                metadata={"predictions": written, "distinct_ids": distinct,
                          "kept": sum(kept.values()),
                          "days_mismatched": dg.MetadataValue.text(", ".join(mismatched)
                                                                   or "none")},
            ),
            dg.AssetCheckResult(
                check_name="scores_in_unit_interval",
                passed=out_of_range == 0,
                metadata={"out_of_range": out_of_range},
            ),
        ],
    )


def _explained(results: list[dict]) -> str:
    """What the UI says about reason codes for the run."""
    flagged = sum(r["flagged"] for r in results)
    explained = sum(r["explained"] for r in results)
    if SETTINGS.reason_codes == 0:
        return "reason codes are off (REASON_CODES=0)"
    if explained < flagged:
        return (f"{flagged - explained:,} of {flagged:,} reviews and declines have no "
                "reasons: the champion's model file carries no explainer (registered before "
                "reason codes); retrain or promote a newer version")
    return (f"{explained:,} of {flagged:,} reviews and declines carry their top "
            f"{SETTINGS.reason_codes} reasons (column `reasons`)")
