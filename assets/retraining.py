"""The retrained_model asset: a challenger trained on the most recent matured window,
scored with the champion on the same held-out days and promoted only if the gate passes,
and its ``retrain`` job, which the drift sensor launches (tagging the run with the event
that triggered it, under ``TRIGGER_TAG_PREFIX``).

The window defaults and the gate come from :class:`resources.MonitoringResource`; the
training and the gate are plain Python in :mod:`fraudkit.monitoring.gate`.
"""


import json

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.common import SETTINGS, md_table
from assets.features import transaction_features
from assets.ingest import RAW_TRANSACTIONS
from assets.training import (
    HyperparamsConfig,
    TrainingWindowConfig,
    load_labelled,
    training_data_summary,
    training_windows,
)
from fraudkit import lake
from fraudkit.monitoring.gate import retrain_and_gate
from resources import DeltaLakeResource, ModelRegistryResource, MonitoringResource


class RetrainConfig(HyperparamsConfig):
    """The challenger's window (unset: the monitoring resource's RETRAIN_* settings) and
    its hyperparameters (the ``model`` asset's)."""

    train_days: int | None = Field(None, description="Days of training data.")
    test_days: int | None = Field(None, description="Held-out days both models are judged on.")
    warmup_days: int | None = Field(None, description="First days skipped: their look-back "
                                                      "windows are incomplete.")
    as_of: str | None = Field(None, description="Last day of the window (YYYY-MM-DD; "
                                                "default: the newest day with features).")


#: Run tags under this prefix (set by the drift sensor) say what triggered a retrain run;
#: they go, prefix stripped, into the registry's verdict and this asset's metadata.
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
                     else monitoring.warmup_days()),
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
            "scores": md_table(scores),
            "train_days": dg.MetadataValue.text(f"{train_days[0]} .. {train_days[-1]}"),
            "test_days": dg.MetadataValue.text(f"{test_days[0]} .. {test_days[-1]}"),
            "trigger": dg.MetadataValue.json(trigger or {"source": "manual"}),
            "registry_events": dg.MetadataValue.path(str(registry.registry().events_file)),
            "rollback": dg.MetadataValue.text("make rollback (python -m fraudkit.registry "
                                              "rollback) restores the previous champion"),
            "gate": dg.MetadataValue.text(json.dumps(decision.as_dict())),
        }
    )


retrain_job = dg.define_asset_job(
    "retrain", selection=dg.AssetSelection.assets(retrained_model),
    description="Challenger on the latest matured window → gate against the champion.",
)
