"""The Dagster code location: every asset, check, job, sensor and resource of the project."""

from __future__ import annotations

import dagster as dg

from assets.consistency import consistency_job, online_consistency
from assets.drift import (
    drift_report,
    drift_report_job,
    micro_batch_intraday_job,
    micro_batch_job,
    online_drift_job,
    online_drift_report,
)
from assets.features import transaction_features
from assets.freshness import freshness_checks, freshness_selection
from assets.ingest import raw_transactions
from assets.online import online_predictions
from assets.performance import model_performance, performance_job
from assets.retraining import retrain_job, retrained_model, shadow_job, shadow_verdict
from assets.scoring import batch_predictions
from assets.serving import serving_job, serving_report
from assets.training import model, training_set
from resources.storage import default_resources
from sensors import (
    dead_run_sweep,
    drift_sensor,
    freshness_sensor,
    landing_sensor,
    performance_sensor,
)

ingest_job = dg.define_asset_job(
    "ingest_and_features",
    # The freshness checks compare the latest day with the clock, not with what a run wrote:
    # freshness_sensor evaluates them (assets/freshness.py), the batch jobs leave them out.
    selection=dg.AssetSelection.assets(raw_transactions, transaction_features)
    - freshness_selection,
    description="Landing files of the chosen days → raw_transactions → transaction_features.",
)
training_job = dg.define_asset_job(
    "train", selection=dg.AssetSelection.assets(training_set, model),
    description="training_set → model (registered; the first becomes champion).",
)
scoring_job = dg.define_asset_job(
    "score", selection=dg.AssetSelection.assets(batch_predictions) - freshness_selection,
    description="Score the chosen days with the champion into batch_predictions.",
)

online_log_job = dg.define_asset_job(
    "online_log",
    selection=dg.AssetSelection.assets(online_predictions) - freshness_selection,
    description="Move the chosen days' online decisions from the online store into Delta.",
)

defs = dg.Definitions(
    assets=[raw_transactions, transaction_features, training_set, model, batch_predictions,
            drift_report, model_performance, retrained_model, online_predictions,
            online_consistency, online_drift_report, shadow_verdict, serving_report],
    asset_checks=freshness_checks,
    jobs=[ingest_job, training_job, scoring_job, drift_report_job, performance_job, retrain_job,
          micro_batch_job, micro_batch_intraday_job, online_log_job, consistency_job,
          online_drift_job,
          shadow_job, serving_job],
    sensors=[drift_sensor, performance_sensor, landing_sensor, dead_run_sweep, freshness_sensor],
    resources=default_resources(),
    # Every job's steps run one after the other in the run's own process. The steps of a job
    # here form a chain (ingest → features → score → drift) and the heavy work is on Dask,
    # so a process per step (Dagster's default) bought no parallelism; it cost each step a
    # fresh interpreter loading this code location (seconds of CPU) and its own Dask cluster.
    executor=dg.in_process_executor,
)
