"""The monitoring loop, headless: normal days show no drift, drifted days land, the report
flags them, the drift sensor launches retraining, the gate promotes the challenger, and
both serving paths pick up the new champion.

``make demo`` runs it after the batch path, with the online service running. Alone, after
``python -m scripts.demo [--small] --batch-only``::

    python -m scripts.demo_monitoring [--small]

Every step is a real Dagster run in the instance at DAGSTER_HOME, so `make dev` shows them.
The sensor is evaluated in this process exactly as the daemon evaluates it (its cursor and
run key included), and the run it requests is executed here, so the story does not wait for
daemon ticks; ``tests/test_sensors.py`` runs the same loop under a real ``dagster-daemon``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import dagster as dg

from fraudkit import lake
from fraudkit.blobs import is_remote
from fraudkit.config import Settings
from fraudkit.registry import ModelRegistry
from fraudkit.simulator import SimulationConfig, copy_landing, landing_path, write_landing
from scripts.jobs import run_job

#: Drifted days landed after the normal ones, and the retraining windows that go with them.
#: Labels mature 7 days after a transaction and the gate's held-out days sit 8 days after
#: the training window, so with 25 drifted days the challenger trains on drifted days 1..6
#: and both models are judged on drifted days 14..18.
DRIFT_DAYS = 25
RETRAIN = {"ops": {"retrained_model": {"config": {"test_days": 5}}}}
SMALL_RETRAIN = {"ops": {"retrained_model": {"config": {"train_days": 21, "test_days": 5,
                                                         "warmup_days": 7}}}}
#: Drifted days the online service scores live before they land (make demo).
LIVE_DAYS = 3
#: Drift reports of the newest days are what the sensor needs; older ones can be
#: back-filled from the UI (they are not on the path from landing to promotion).
REPORTED_DAYS = 7


@dataclass
class StoryResult:
    before: str
    after: str
    promoted: bool
    landed_to_promotion_s: float | None
    #: Until ``on_promoted`` returned (the online service answering with the new champion).
    landed_to_online_s: float | None


def _say(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)


def _drift_rows(settings: Settings, days: list[str], table: str = "drift_metrics"
                ) -> list[dict]:
    rows = lake.read_days(settings.table_uri(table), days,
                          ["day", "drift_share", "dataset_drift", "column", "drifted",
                           "counted_in_share", "kind", "drift_score"],
                          storage_options=settings.storage_options).to_pandas()
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
    resources = {k: v for k, v in defs.resources.items()
                 if k in ("delta", "monitoring", "registry")}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources,
                                 definitions=defs) as context:
        return sensor.evaluate_tick(context)


def drift_days_for(last_normal: str, wanted: int = DRIFT_DAYS) -> list[str]:
    """The drifted days after ``last_normal``; they land as whole days and their drift
    reports wait for a day to end, so they must end yesterday at the latest."""
    days = lake.day_range(lake.shift_day(last_normal, 1), lake.shift_day(last_normal, wanted))
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    if days[-1] > yesterday:
        raise SystemExit(f"the drifted days {days[0]}..{days[-1]} must have ended (today is "
                         f"{yesterday} + 1 day); simulate an earlier calendar "
                         "(FRAUD_START_DATE) to run the monitoring demo")
    return days


def run_drift_story(settings: Settings, instance: dg.DagsterInstance, last_normal: str, *,
                    small: bool = False, on_promoted: Callable[[str], None] | None = None,
                    on_live_traffic: Callable[[str, Path], None] | None = None,
                    ) -> StoryResult:
    """Normal days → drifted days land → report flags drift → sensor → retrain → gate →
    both serving paths on the new champion.

    ``last_normal`` is the simulation's last (normal) day; ``small`` must match the batch
    demo's scale. ``on_live_traffic(day, landing_file)`` runs for each of the first
    :data:`LIVE_DAYS` drifted days once the simulator has written the files and before any
    is ingested: the demo sends the day through the online service there, as its
    transactions would arrive live.
    ``on_promoted(version)`` runs right after a promotion (the demo waits there for the
    online service to answer with it).
    """
    started = time.perf_counter()
    drifted = drift_days_for(last_normal)
    if drifted[-1] > settings.end_date:
        raise SystemExit(f"the drifted days {drifted[0]}..{drifted[-1]} need partitions, but "
                         f"FRAUD_END_DATE={settings.end_date}; raise it to {drifted[-1]}")
    registry = ModelRegistry.of(settings)
    before = registry.champion().version

    normal = lake.day_range(lake.shift_day(last_normal, -(REPORTED_DAYS - 1)), last_normal)
    _say(started, f"1. drift reports of the last {len(normal)} normal days against champion "
                  f"{before}'s reference")
    run_job("monitor_drift", instance, (normal[0], normal[-1]))
    _print_drift(started, _drift_rows(settings, normal))

    base = SimulationConfig.small() if small else SimulationConfig()
    cfg = replace(base, start_date=settings.start_date,
                  n_days=len(lake.day_range(settings.start_date, drifted[-1])),
                  drift_from=drifted[0])
    write_landing(cfg, settings.landing_dir, days=set(drifted))
    if is_remote(settings.landing_uri):  # LANDING_URI on an object store: land them there
        copy_landing(settings.landing_dir, settings.landing_uri, settings.storage_options)
    if on_live_traffic is not None:
        live = drifted[:LIVE_DAYS]
        _say(started, f"2. live traffic: the online service scores {live[0]}..{live[-1]}, the "
                      "first drifted days, transaction by transaction before they land")
        for day in live:
            on_live_traffic(day, landing_path(settings.landing_dir, day))
    landed_at = time.perf_counter()
    _say(started, f"{'  ' if on_live_traffic else '2.'} {len(drifted)} drifted days land: "
                  f"{drifted[0]}..{drifted[-1]} "
                  f"(amounts x{cfg.drift_amount_factor}, night card testing on "
                  f"{cfg.drift_card_testing_share:.0%} of cards)")

    _say(started, "3. they go through the batch path (ingest, features, score), then drift "
                  f"reports of the newest {REPORTED_DAYS}")
    run_job("ingest_and_features", instance, (drifted[0], drifted[-1]))
    run_job("score", instance, (drifted[0], drifted[-1]))
    reported = drifted[-REPORTED_DAYS:]
    run_job("monitor_drift", instance, (reported[0], reported[-1]))
    rows = _drift_rows(settings, reported)
    _print_drift(started, rows)
    flagged = sum(r["drift"] for r in rows)
    _say(started, f"   {flagged} of {len(rows)} reported days flagged; HTML reports in "
                  f"{settings.report_location('drift')}")

    _say(started, "4. the drift sensor reads drift_metrics (one evaluation, as the daemon "
                  "ticks)")
    result = evaluate_drift_sensor(instance)
    requests = result.run_requests or []
    if not requests:
        raise SystemExit(f"the drift sensor launched nothing: {result.skip_message}")
    request = requests[0]
    shown = {k: v for k, v in request.tags.items() if "reason" not in k}
    _say(started, f"   RunRequest run_key={request.run_key} tags={json.dumps(shown)}")
    again = evaluate_drift_sensor(instance, result.cursor)
    _say(started, f"   next tick: {len(again.run_requests or [])} run(s), skipped: "
                  f"{again.skip_message}")

    _say(started, "5. retrain: a challenger on the newest matured window, then the gate")
    from definitions import defs
    from sensors.dead_runs import process_tags

    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    outcome = defs.resolve_job_def("retrain").execute_in_process(
        instance=instance,
        tags={**request.tags, "dagster/run_key": request.run_key, **process_tags()},
        run_config={**quiet, **(SMALL_RETRAIN if small else RETRAIN)}, raise_on_error=True)
    verdict = [e for e in registry.events() if e["event"] in ("promoted", "gate_rejected")][-1]
    after = registry.champion().version
    _say(started, f"   {verdict['event']}: {verdict.get('gate', {}).get('reason')} "
                  f"(run {outcome.run_id[:8]})")
    if "fairness" in verdict:
        _say(started, f"   fairness: {verdict['fairness']['reason']}")
    _say(started, f"   champion {before} -> {after}")
    promoted = after != before
    landed_to_promotion = time.perf_counter() - landed_at if promoted else None
    landed_to_online = None
    if promoted and on_promoted:
        on_promoted(after)
        landed_to_online = time.perf_counter() - landed_at

    _say(started, f"6. the batch path picks up the champion: re-score {drifted[-1]}")
    run_job("score", instance, (drifted[-1], drifted[-1]))
    versions = set(lake.read_days(settings.table_uri("batch_predictions"), [drifted[-1]],
                                  ["model_version"], storage_options=settings.storage_options
                                  ).column(0).to_pylist())
    _say(started, f"   batch_predictions of {drifted[-1]} now carry model {sorted(versions)}")
    return StoryResult(before, after, promoted, landed_to_promotion, landed_to_online)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from scripts.jobs import ensure_dagster_home, quiet_beta_warnings

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="the batch demo ran --small")
    args = parser.parse_args(argv)
    quiet_beta_warnings()
    settings = Settings.from_env()
    ensure_dagster_home()
    base = SimulationConfig.small() if args.small else SimulationConfig()
    last_normal = replace(base, start_date=settings.start_date).days[-1]
    with dg.DagsterInstance.get() as instance:
        run_drift_story(settings, instance, last_normal, small=args.small)


if __name__ == "__main__":
    main()
