"""The monitoring loop, headless: normal days show no drift, drifted days land, the report
flags them, the drift sensor launches retraining, the gate promotes the challenger.

Run after the batch demo (``python -m scripts.demo [--small] --batch-only``)::

    FRAUD_END_DATE=2026-12-31 python -m scripts.demo_monitoring [--small]

Every step is a real Dagster run in the instance at DAGSTER_HOME, so the UI shows them.
The partitions must reach past the simulated days (FRAUD_END_DATE) for the drifted days to
have partitions.
"""

import datetime as dt
import json
import os
import time
from collections.abc import Callable
from dataclasses import replace

import dagster as dg

from fraudkit import lake
from fraudkit.config import Settings
from fraudkit.registry import ModelRegistry
from fraudkit.simulator import SimulationConfig, write_landing
from scripts.demo import RANGE_END, RANGE_START, ensure_dagster_home, run_job

#: Retraining window of the demo. With 28 drifted days and a 7-day label delay, a 7-day
#: held-out window (drift days 15..21) leaves drift days 1..7 in the training window (the gap
#: between train and test is the label delay). Small scale: a few weeks of data only.
DEMO_RETRAIN = {"ops": {"retrained_model": {"config": {"test_days": 7}}}}
SMALL_RETRAIN = {"ops": {"retrained_model": {"config": {"train_days": 21, "test_days": 7,
                                                         "warmup_days": 7}}}}
#: Drift reports of the newest days are what the sensor needs; older ones can be
#: back-filled from the UI (they are not on the path from landing to promotion).
REPORTED_DRIFT_DAYS = 7


def _say(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)


def _drift_table(settings: Settings, days: list[str]) -> list[dict]:
    rows = lake.read_days(settings.table_uri("drift_metrics"), days,
                          ["day", "drift_share", "dataset_drift", "column", "drifted",
                           "counted_in_share", "kind", "drift_score"]).to_pandas()
    out = []
    for day, part in rows.groupby("day"):
        drifted = part[part["drifted"] & part["counted_in_share"]]["column"].tolist()
        score = part.loc[part["kind"] == "prediction", "drift_score"]
        out.append({"day": day, "share": float(part["drift_share"].iat[0]),
                    "drift": bool(part["dataset_drift"].iat[0]),
                    "score_drift": float(score.iat[0]) if len(score) else float("nan"),
                    "drifted": drifted})
    return out


def _print_drift(started: float, rows: list[dict]) -> None:
    for r in rows:
        _say(started, f"   {r['day']}  drift share {r['share']:.2f}  score drift "
                      f"{r['score_drift']:.3f}  {'DRIFT' if r['drift'] else 'ok   '}  "
                      f"{', '.join(r['drifted']) or '-'}")


def evaluate_drift_sensor(instance: dg.DagsterInstance, cursor: str | None = None):
    """One evaluation of the drift sensor in this process, as the daemon would run it."""
    from definitions import defs

    sensor = defs.resolve_sensor_def("drift_sensor")
    resources = {k: v for k, v in defs.resources.items() if k in ("delta", "monitoring")}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources,
                                 definitions=defs) as context:
        result = sensor.evaluate_tick(context)
    return result


def run_drift_story(settings: Settings, instance: dg.DagsterInstance, *,
                    small: bool = False, drift_days: int = 28, normal_days_shown: int = 7,
                    on_promoted: Callable[[str, float], None] | None = None) -> None:
    """Normal days → drifted days land → report flags drift → sensor → retrain → gate.

    ``small`` must match the batch demo's scale; ``drift_days`` is how many drifted days
    land after the last one. ``on_promoted(version, landed_at)`` is called right after a
    promotion (the demo uses it to wait for the online service to answer with it).
    """
    started = time.perf_counter()
    raw_uri = settings.table_uri("raw_transactions")
    present = lake.partition_values(raw_uri)
    if not present:
        raise SystemExit("no raw_transactions: run the batch demo first (make demo)")
    last_normal = present[-1]
    first_drift = lake.shift_day(last_normal, 1)
    drifted = lake.day_range(first_drift, lake.shift_day(last_normal, drift_days))
    if drifted[-1] > settings.end_date:
        raise SystemExit(
            f"the drifted days {drifted[0]}..{drifted[-1]} need partitions, but "
            f"FRAUD_END_DATE={settings.end_date}; set FRAUD_END_DATE={drifted[-1]} or later")
    registry = ModelRegistry(settings.registry_dir)
    retrain_config = SMALL_RETRAIN if small else DEMO_RETRAIN

    _say(started, f"1. drift reports of the last {normal_days_shown} normal days "
                  f"(champion {registry.champion().version})")
    normal = present[-normal_days_shown:]
    run_job("monitor_drift", instance, (normal[0], normal[-1]))
    _print_drift(started, _drift_table(settings, normal))

    base = SimulationConfig.small() if small else SimulationConfig()
    cfg = replace(base, start_date=settings.start_date,
                  n_days=len(lake.day_range(settings.start_date, drifted[-1])),
                  drift_from=first_drift)
    landed_at = time.perf_counter()
    _say(started, f"2. landing {len(drifted)} drifted days {drifted[0]}..{drifted[-1]} "
                  f"(amounts x{cfg.drift_amount_factor}, night card testing on "
                  f"{cfg.drift_card_testing_share:.0%} of cards)")
    write_landing(cfg, settings.landing_dir, days=set(drifted))

    _say(started, "3. the drifted days through the batch path (ingest, features, score), then "
                  f"drift reports of the newest {REPORTED_DRIFT_DAYS}")
    run_job("ingest_and_features", instance, (drifted[0], drifted[-1]))
    run_job("score", instance, (drifted[0], drifted[-1]))
    reported = drifted[-REPORTED_DRIFT_DAYS:]
    run_job("monitor_drift", instance, (reported[0], reported[-1]))
    rows = _drift_table(settings, reported)
    _print_drift(started, rows)
    first_flag = next((r["day"] for r in rows if r["drift"]), None)
    _say(started, f"   first day flagged: {first_flag}")

    _say(started, "4. drift sensor (evaluated in-process, as the daemon does)")
    result = evaluate_drift_sensor(instance)
    requests = result.run_requests or []
    if not requests:
        reason = result.skip_message
        raise SystemExit(f"the drift sensor launched nothing: {reason}")
    request = requests[0]
    _say(started, f"   RunRequest {request.run_key}, tags "
                  f"{json.dumps({k: v for k, v in request.tags.items() if 'reason' not in k})}")
    again = evaluate_drift_sensor(instance, result.cursor)
    _say(started, f"   evaluated again: {len(again.run_requests or [])} run(s); "
                  f"skip: {again.skip_message}")

    _say(started, "5. retrain (challenger on the latest matured window) and the gate")
    before = registry.champion().version
    from definitions import defs

    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    outcome = defs.resolve_job_def("retrain").execute_in_process(
        instance=instance, tags=request.tags, run_config={**quiet, **(retrain_config or {})},
        raise_on_error=True)
    event = [e for e in registry.events() if e["event"] in ("promoted", "gate_rejected")][-1]
    gate = event.get("gate", {})
    after = registry.champion().version
    _say(started, f"   {event['event']}: {gate.get('reason')} (run {outcome.run_id[:8]})")
    _say(started, f"   champion {before} -> {after}")
    if after != before:
        _say(started, f"   time from drifted days landing to promotion: "
                      f"{time.perf_counter() - landed_at:.1f}s")
        if on_promoted:
            on_promoted(after, landed_at)

    _say(started, f"6. batch path picks up the new champion: re-score {drifted[-1]}")
    run_job("score", instance, (drifted[-1], drifted[-1]))
    versions = set(lake.read_days(settings.table_uri("batch_predictions"), [drifted[-1]],
                                  ["model_version"]).column(0).to_pylist())
    _say(started, f"   batch_predictions of {drifted[-1]} now carry model {sorted(versions)}")
    _say(started, "   rollback with `make rollback`; HTML reports in "
                  f"{settings.reports_dir / 'drift'}; `evidently ui --workspace "
                  f"{settings.data_dir / 'evidently'}`")


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="the batch demo ran --small")
    parser.add_argument("--drift-days", type=int, default=28)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    ensure_dagster_home(settings)
    os.environ.setdefault("MONITOR_COOLDOWN_SECONDS", "3600")
    with dg.DagsterInstance.get() as instance:
        run_drift_story(settings, instance, small=args.small, drift_days=args.drift_days)
    print(f"\nmonitoring demo finished at {dt.datetime.now():%H:%M:%S}")


# Names a caller may use to tag its own ranged runs.
__all__ = ["RANGE_END", "RANGE_START", "evaluate_drift_sensor", "run_drift_story"]

if __name__ == "__main__":
    main()
