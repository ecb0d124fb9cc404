"""The drift sensor: reads the drift_metrics and model_performance tables and launches
retraining once per event.

An *event* is a run of consecutive days whose drift share reaches the threshold (or whose
realized metric falls below the floor), named after its first day. Re-reported days can move
that first day or split the event, so the cursor remembers each launched *episode* by its
days and champion (:class:`fraudkit.monitoring.trigger.Launched`): an event that overlaps
or touches one is that episode and launches nothing. The run key
``retrain-<kind>-<first day>-<champion>`` keeps Dagster from launching the same event twice
should the cursor be lost. The cursor also keeps the last launch time for the cool-down, so
skip reasons can say exactly why nothing ran.
"""


import json
import time

import dagster as dg
import pandas as pd
from deltalake.exceptions import TableNotFoundError

from assets.common import SETTINGS
from assets.drift import DRIFT_TABLE, ONLINE_DRIFT_TABLE
from assets.performance import PERFORMANCE_TABLE, performance_job
from assets.retraining import TRIGGER_TAG_PREFIX, retrain_job
from fraudkit import lake
from fraudkit.monitoring.performance import matured_until
from fraudkit.monitoring.trigger import (
    Launched,
    about_champion,
    decide_trigger,
    drift_events,
    performance_events,
)
from fraudkit.registry import RegistryError
from resources import DeltaLakeResource, ModelRegistryResource, MonitoringResource

#: Seconds between evaluations; the daemon's own tick is about 30 s at most.
INTERVAL_SECONDS = SETTINGS.monitor_sensor_interval_s


def _read(delta: DeltaLakeResource, table: str, columns: list[str]) -> pd.DataFrame:
    try:
        return (lake.dataset(delta.uri(table), storage_options=delta.storage_options)
                .to_table(columns=columns).to_pandas())
    except TableNotFoundError:
        return pd.DataFrame(columns=columns)


def drift_per_day(delta: DeltaLakeResource) -> pd.DataFrame:
    """One row per day and source of the drift reports: share, model, drifted features;
    ``source`` "batch" (drift_metrics) or "online" (online_drift_metrics, the live traffic)."""
    frames = []
    for source, table in (("batch", DRIFT_TABLE), ("online", ONLINE_DRIFT_TABLE)):
        rows = _read(delta, table, ["day", "column", "kind", "drifted", "counted_in_share",
                                    "drift_share", "model_version", "computed_at"])
        if rows.empty:
            continue
        drifted = (rows[rows["drifted"] & rows["counted_in_share"]].groupby("day")["column"]
                   .agg(lambda c: ", ".join(sorted(c))).rename("drifted_list"))
        per_day = rows.groupby("day").agg(drift_share=("drift_share", "first"),
                                          model_version=("model_version", "first"),
                                          computed_at=("computed_at", "max"))
        frames.append(per_day.join(drifted).fillna({"drifted_list": ""}).reset_index()
                      .assign(source=source))
    if not frames:
        return pd.DataFrame(columns=["day", "drift_share", "model_version", "drifted_list",
                                     "computed_at", "source"])
    return pd.concat(frames, ignore_index=True)


def performance_per_day(delta: DeltaLakeResource) -> pd.DataFrame:
    return _read(delta, PERFORMANCE_TABLE, ["day", "model_version", "auc_roc",
                                             "average_precision", "card_precision_at_100",
                                             "computed_at"])


@dg.sensor(
    job=retrain_job,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches `retrain` once per drift event (a run of days whose drift share, "
    "in the batch or the online drift reports, reaches MONITOR_DRIFT_SHARE) or performance "
    "event (realized metric below MONITOR_PERFORMANCE_FLOOR), with a cool-down of "
    "MONITOR_COOLDOWN_SECONDS. Only days the current champion scored count (for "
    "performance: after its held-out window).",
)
def drift_sensor(context: dg.SensorEvaluationContext, delta: DeltaLakeResource,
                 monitoring: MonitoringResource, registry: ModelRegistryResource):
    cfg = monitoring.trigger_config()
    state = json.loads(context.cursor) if context.cursor else {}
    launched = [Launched.from_cursor(item) for item in state.get("launched", [])]
    try:
        champion = registry.registry().champion()
    except RegistryError as exc:  # the message names the file, the problem and the fix
        return dg.SkipReason(f"cannot tell which model is champion, nothing to monitor: {exc}")
    all_drift = drift_per_day(delta)
    all_perf = performance_per_day(delta)
    newest = max([str(x) for x in [*all_drift["computed_at"], *all_perf["computed_at"]]],
                 default="")
    if not newest:
        return dg.SkipReason("no drift_report or model_performance results yet")
    held_out_end = champion.manifest.get("training_data", {}).get("test_range", [None, None])[1]
    drift = about_champion(all_drift, champion.version)
    perf = about_champion(all_perf, champion.version, held_out_end)
    events = drift_events(drift, cfg) + performance_events(perf, cfg)
    now = time.time()
    decision = decide_trigger(events, launched, state.get("last_launch_at"), now, cfg)
    fresh = newest > state.get("seen", "")
    remembered = [episode.as_cursor() for episode in decision.launched]
    if decision.launch is None:
        context.update_cursor(json.dumps({**state, "seen": newest, "launched": remembered}))
        news = "new results read" if fresh else "no new results"
        days = drift["day"].nunique()
        return dg.SkipReason(
            f"{news} (latest {newest[:19]}; about champion {champion.version}: {days} "
            f"day(s) of drift, {len(perf)} of performance after {held_out_end}; "
            f"{len(all_drift) - len(drift) + len(all_perf) - len(perf)} older row(s) "
            f"ignored): {decision.reason}")
    event = decision.launch
    context.update_cursor(json.dumps({"seen": newest, "launched": remembered,
                                      "last_launch_at": now}))
    context.log.info(f"launching retrain for {event.key}: {decision.reason}")
    tags = {
        f"{TRIGGER_TAG_PREFIX}trigger": event.kind,
        f"{TRIGGER_TAG_PREFIX}event": event.key,
        f"{TRIGGER_TAG_PREFIX}days": f"{event.first_day}..{event.last_day}",
        f"{TRIGGER_TAG_PREFIX}value": f"{event.value:.4f}",
        f"{TRIGGER_TAG_PREFIX}threshold": str(cfg.drift_share if event.kind == "drift"
                                              else cfg.performance_floor),
        f"{TRIGGER_TAG_PREFIX}model_version": event.model_version,
        f"{TRIGGER_TAG_PREFIX}source": event.source,
        f"{TRIGGER_TAG_PREFIX}reason": decision.reason[:200],
    }
    return dg.RunRequest(run_key=f"retrain-{event.key}-{champion.version}", tags=tags)


@dg.sensor(
    job=performance_job,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests model_performance for each scored day as soon as its labels have "
    "matured (label_delay_days after it), once per day. (A day re-scored by a newer "
    "champion is not evaluated again: it lies in or before that champion's held-out "
    "window, which the drift sensor does not judge it by.)",
)
def performance_sensor(context: dg.SensorEvaluationContext, delta: DeltaLakeResource):
    tables = delta.tables()
    if lake.table_version(tables.predictions, tables.storage_options) is None:
        return dg.SkipReason("no batch_predictions yet")
    latest = lake.partition_values(tables.raw, tables.storage_options)[-1]
    matured = matured_until(latest, SETTINGS.label_delay_days)
    scored = [d for d in lake.partition_values(tables.predictions, tables.storage_options)
              if d <= matured]
    done = set(performance_per_day(delta)["day"])
    todo = [d for d in scored if d not in done]
    if not todo:
        return dg.SkipReason(f"no newly matured day (labels known up to {matured})")
    # One ranged run per contiguous block of days (the asset back-fills as a single run).
    return [dg.RunRequest(run_key=f"performance-{run[0]}-{run[-1]}",
                          tags={"dagster/asset_partition_range_start": run[0],
                                "dagster/asset_partition_range_end": run[-1]})
            for run in lake.consecutive_runs(todo)]
