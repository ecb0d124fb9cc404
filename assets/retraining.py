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

from assets.common import SETTINGS, TRAINING_POOL, md_table
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
from fraudkit.monitoring.gate import (
    GateOutcome,
    NotEnoughEvidence,
    ShadowOutcome,
    judge_shadow,
    retrain_and_gate,
)
from fraudkit.monitoring.performance import matured_until
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


def gate_metadata(outcome: GateOutcome | ShadowOutcome, role: str = "") -> dict:
    """What a gate's materialization shows, whatever its evidence: the verdict's reason,
    the versions, the metric and both models' scores."""
    decision = outcome.decision
    scores = pd.DataFrame([
        {"model": f"challenger {outcome.challenger_version}{role}",
         **outcome.challenger_metrics},
        {"model": f"champion {outcome.champion_version}", **outcome.champion_metrics},
    ])
    shift = getattr(outcome, "importance_shift", None)
    return {
        "reason": dg.MetadataValue.text(decision.reason),
        "challenger": outcome.challenger_version,
        "previous_champion": outcome.champion_version,
        "champion": outcome.new_champion,
        "gate_metric": decision.metric,
        "challenger_score": round(decision.challenger, 5),
        "champion_score": round(decision.champion, 5),
        "scores": md_table(scores),
        **({"importance_shift": md_table(shift)} if shift is not None else {}),
        **fairness_metadata(getattr(outcome, "fairness", None)),
    }


def fairness_metadata(table: pd.DataFrame | None) -> dict:
    """Both models' false-positive rate and disparity per segment on the held-out rows."""
    if table is None or table.empty:
        return {}
    wide = table.pivot_table(index=["segment", "value"], columns="model",
                             values=["fpr", "fpr_ratio"], aggfunc="first")
    wide.columns = [f"{metric} {model}" for metric, model in wide.columns]
    return {"segment_fairness": md_table(wide.reset_index())}


#: Run tags under this prefix (set by the drift sensor) say what triggered a retrain run;
#: they go, prefix stripped, into the registry's verdict and this asset's metadata.
TRIGGER_TAG_PREFIX = "monitoring/"


@dg.asset(
    deps=[transaction_features, RAW_TRANSACTIONS],
    group_name="monitoring",
    kinds={"lightgbm", "onnx"},
    pool=TRAINING_POOL,
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
        evidence=monitoring.gate_evidence,
    )
    decision = outcome.decision
    verdict = ("kept champion" if not decision.promote
               else "in shadow" if monitoring.gate_evidence == "shadow" else "promoted")
    context.log.info(f"gate: {verdict.upper()} "
                     f"{outcome.challenger_version} vs {outcome.champion_version}: "
                     f"{decision.reason}")
    return dg.MaterializeResult(
        metadata={
            "decision": verdict,
            "evidence": dg.MetadataValue.text(
                f"held-out days {test_days[0]} .. {test_days[-1]}"
                + (" (GATE_EVIDENCE=shadow: the live traffic decides next, judge_shadow)"
                   if monitoring.gate_evidence == "shadow" else "")),
            **gate_metadata(outcome),
            "tolerance": decision.tolerance,
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


class ShadowJudgeConfig(dg.Config):
    """Which live traffic the shadow gate reads (default: every matured day)."""

    first_day: str | None = Field(None, description="First day of online decisions to read "
                                                    "(default: every matured day; only rows "
                                                    "the shadow scored count).")


@dg.asset(
    deps=["online_predictions", RAW_TRANSACTIONS],
    group_name="monitoring",
    kinds={"onnx"},
    description="The gate on live traffic: the champion's online answers and the shadow "
    "challenger's scores of the same requests (online_predictions), on the days whose labels "
    "have matured, with the held-out gate's metric and tolerance. Promotes the challenger or "
    "ends its shadow; the registry event says the evidence was live traffic.",
)
def shadow_verdict(
    context: dg.AssetExecutionContext,
    config: ShadowJudgeConfig,
    delta: DeltaLakeResource,
    registry: ModelRegistryResource,
    monitoring: MonitoringResource,
) -> dg.MaterializeResult:
    reg = registry.registry()
    state = reg.shadow_state()
    if state is None:
        raise dg.Failure("no model is in shadow: `python -m fraudkit.registry shadow vNNNN` "
                         "(or a retrain with GATE_EVIDENCE=shadow) starts one")
    tables = delta.tables()
    online_uri = delta.uri("online_predictions")
    if lake.table_version(online_uri, delta.storage_options) is None:
        raise dg.Failure(f"no online_predictions table at {online_uri}: run the online_log "
                         "job for the shadow's days first")
    latest = lake.partition_values(tables.raw, tables.storage_options)[-1]
    matured = matured_until(latest, SETTINGS.label_delay_days)
    first = config.first_day or ""
    days = [d for d in lake.partition_values(online_uri, delta.storage_options)
            if first <= d <= matured]
    if not days:
        raise dg.Failure(f"no day of online decisions{' from ' + first if first else ''} has "
                         f"matured labels yet (labels are known up to {matured}); wait")
    logged = lake.read_days(online_uri, days, [
        "transaction_id", "customer_id", "day", "score", "model_version", "fallback",
        "shadow_version", "shadow_score"], storage_options=delta.storage_options).to_pandas()
    labels = lake.read_days(tables.raw, days, ["transaction_id", "tx_fraud"],
                            storage_options=tables.storage_options).to_pandas()
    try:
        outcome = judge_shadow(logged, labels, reg, monitoring.gate_config())
    except NotEnoughEvidence as exc:
        raise dg.Failure(str(exc)) from exc
    decision = outcome.decision
    context.log.info(f"shadow gate: {'PROMOTED' if decision.promote else 'rejected'} "
                     f"{outcome.challenger_version} vs {outcome.champion_version}: "
                     f"{decision.reason}")
    return dg.MaterializeResult(metadata={
        "decision": "promoted" if decision.promote else "kept champion, shadow ended",
        "evidence": dg.MetadataValue.text(
            f"live traffic: {outcome.rows} requests of {outcome.days[0]} .. {outcome.days[1]} "
            "scored by both models (online_predictions), labels matured"),
        **gate_metadata(outcome, " (shadow)"),
        "registry_events": dg.MetadataValue.path(str(reg.events_file)),
    })


shadow_job = dg.define_asset_job(
    "judge_shadow", selection=dg.AssetSelection.assets(shadow_verdict),
    description="The shadow challenger against the champion on the live traffic both scored.",
)
