"""`make demo`: the whole product on the embedded defaults, headless.

1. simulate the default data and back-fill the batch path (ingest, features, training,
   scoring), then summarize the tables and the champion;
2. start the BentoML service;
3. the monitoring loop: the service scores the first drifted day live, the drifted days
   land, the drift report flags them, the drift sensor launches retraining, the gate
   promotes the challenger, the running service and the next batch partition answer with
   it (``scripts/demo_monitoring.py``);
4. the service's decisions move into Delta (``online_predictions``),
   ``online_consistency`` compares the live day's answers with the batch path's numbers and
   ``online_drift_report`` reports the drift of that live traffic and ``serving_report``
   sets the two paths side by side;
5. micro-batches within the day: the next day lands as hourly files while the landing
   sensor runs, each scored seconds after it lands, and the day closes with its drift
   report (``scripts/demo_micro_batch.py``);
6. fairness: ``model_performance`` of the newest matured week and its segment table.

Every step is a real Dagster run recorded in the project's instance (``DAGSTER_HOME``), so
`make dev` afterwards shows the same runs, materializations and checks in the UI. The demo
owns its DATA_DIR: it starts afresh there each time (and refuses a folder it did not make).

``--batch-only`` stops after step 1; ``--skip-batch`` then runs steps 2 to 6 on that
DATA_DIR as it is (the tests build the small batch path once and tell the rest of the story
on copies of it).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg

from fraudkit import lake
from fraudkit.config import Settings
from fraudkit.simulator import SimulationConfig, write_landing
from scripts.jobs import ensure_dagster_home, quiet_beta_warnings, run_job

#: Marks a DATA_DIR that `make demo` made, so a later demo may replace its contents.
DEMO_MARKER = ".made-by-make-demo"


def step(message: str) -> float:
    print(f"\n==> {message}", flush=True)
    return time.perf_counter()


def done(started: float, detail: str = "") -> None:
    print(f"    done in {time.perf_counter() - started:.1f}s {detail}", flush=True)


def simulate(settings: Settings, cfg: SimulationConfig) -> None:
    started = step(f"simulating {cfg.n_days} days ({cfg.n_customers} customers, "
                   f"{cfg.n_terminals} terminals) into {settings.landing_dir}")
    written = write_landing(cfg, settings.landing_dir)
    uploaded = upload_landing(settings)
    done(started, f"({len(written)} new landing files, existing ones kept"
         + (f"; {uploaded} copied to {settings.landing_uri})" if uploaded is not None else ")"))


def upload_landing(settings: Settings) -> int | None:
    """With ``LANDING_URI`` on an object store, copy the simulated files of
    ``DATA_DIR/landing`` there (those not there yet), where the ingest reads them. None
    when landing is local."""
    from fraudkit.blobs import is_remote
    from fraudkit.simulator import copy_landing

    if not is_remote(settings.landing_uri):
        return None
    return copy_landing(settings.landing_dir, settings.landing_uri, settings.storage_options)


def run_batch(settings: Settings, instance: dg.DagsterInstance, first: str, last: str,
              train_config: dict | None = None) -> None:
    started = step(f"raw_transactions + transaction_features for {first}..{last} (one run)")
    run_job("ingest_and_features", instance, (first, last))
    done(started)
    started = step("training_set + model (LightGBM → ONNX → registry)")
    run_job("train", instance, run_config=train_config)
    done(started)
    started = step(f"batch_predictions for {first}..{last} with the champion (one run)")
    run_job("score", instance, (first, last))
    done(started)


def summary(settings: Settings) -> None:

    from fraudkit.registry import ModelRegistry

    print("\n==> summary")
    for name in ["raw_transactions", "quarantined_transactions", "transaction_features",
                 "training_set", "batch_predictions"]:
        version = lake.table_version(settings.table_uri(name), settings.storage_options)
        rows = lake.dataset(settings.table_uri(name), version=version,
                            storage_options=settings.storage_options).count_rows()
        print(f"    {name:26s} {rows:>10,d} rows  version {version:>4d}  "
              f"{settings.table_uri(name)}")
    champion = ModelRegistry.of(settings).champion()
    m = champion.manifest["metrics"]
    print(f"    champion model {champion.version}: AUC-ROC {m['auc_roc']:.4f}, average precision "
          f"{m['average_precision']:.4f}, card precision@100 {m['card_precision_at_100']:.4f}, "
          f"onnx max |diff| {m['onnx_max_abs_diff']:.1e}")
    print(f"    thresholds {champion.manifest['thresholds']}  ({champion.path})")
    explanations = champion.manifest.get("explanations")
    if explanations:
        from fraudkit.training import importance_table

        top = importance_table(explanations).head(5)
        print(f"    what drives it (mean |SHAP| in log-odds on {explanations['shap_rows']:,} "
              "held-out rows): " + ", ".join(f"{r.feature} {r.mean_abs_shap:.2f}"
                                             for r in top.itertuples()))


#: Training window for the small (test) scale: 60 days leave little room for warm-up.
SMALL_TRAINING = {"ops": {"training_set": {"config": {"train_days": 21, "test_days": 7,
                                                      "warmup_days": 7}}}}


def prepare_data_dir(settings: Settings) -> None:
    """Start from an empty DATA_DIR: remove an earlier demo's data, refuse anything else.

    The Dagster home is kept when it lies inside DATA_DIR (the tests put it there), so the
    UI keeps every run. Landing files go to DATA_DIR/landing; a LANDING_DIR elsewhere is
    the user's data, which the simulator must not write into.
    """
    data = settings.data_dir
    if settings.landing_dir != data / "landing":
        raise SystemExit(f"LANDING_DIR={settings.landing_dir} is set: the demo simulates its "
                         "own landing files under DATA_DIR; unset LANDING_DIR to run it")
    home = Path(os.environ["DAGSTER_HOME"]).resolve()
    entries = [p for p in data.iterdir() if p.resolve() != home] if data.exists() else []
    if entries and not (data / DEMO_MARKER).exists():
        raise SystemExit(f"DATA_DIR={data} holds data that `make demo` did not write "
                         f"({', '.join(p.name for p in entries[:5])}); point DATA_DIR at an "
                         "empty folder, or remove this one (`make clean` removes ./data)")
    if entries:
        print(f"==> {data} holds an earlier demo's data: starting afresh", flush=True)
        for path in entries:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    data.mkdir(parents=True, exist_ok=True)
    (data / DEMO_MARKER).write_text("Written by `make demo`, which replaces this folder's "
                                    "contents on its next run.\n")


def require_batch_path(settings: Settings) -> None:
    """``--skip-batch`` continues an earlier ``--batch-only`` demo: refuse a DATA_DIR
    without one, saying what to run first."""
    data = settings.data_dir
    from fraudkit.registry import ModelRegistry

    registry = ModelRegistry.of(settings)
    champion = registry.champion_file
    if not (data / DEMO_MARKER).exists() or registry.champion_stamp() is None:
        raise SystemExit(f"DATA_DIR={data} holds no batch path of the demo (no "
                         f"{DEMO_MARKER} or no {champion}): run `python -m scripts.demo "
                         "[--small] --batch-only` first, or the whole `make demo`")


def show_decision_log(settings: Settings, instance: dg.DagsterInstance) -> None:
    """Move the service's logged decisions into Delta (online_predictions) and show one."""
    from fraudkit.store import open_store

    store = open_store(settings.online_store_url)
    counts = store.day_counts()
    store.close()
    if not counts:
        return
    days = sorted(counts)
    started = step(f"decision log: online_predictions moves the service's {sum(counts.values())} "
                   f"decision(s) of {days[0]}..{days[-1]} from the online store into Delta")
    run_job("online_log", instance, (days[0], days[-1]))
    table = lake.read_days(settings.table_uri("online_predictions"), days,
                           storage_options=settings.storage_options)
    row = max(table.to_pylist(), key=lambda r: r["received_at"])
    print(f"    latest: transaction {row['transaction_id']} {row['decision']} score "
          f"{row['score']:.4f} model {row['model_version']} in {row['latency_ms']:.1f} ms by "
          f"worker {row['worker']} (customer_nb_tx_7d={row['customer_nb_tx_7d']})")
    done(started, f"({table.num_rows} row(s) in {settings.table_uri('online_predictions')})")


def show_consistency(settings: Settings, instance: dg.DagsterInstance, days: list[str]
                     ) -> None:
    """online_consistency of the live days: did every online answer use the batch numbers?"""
    from assets.consistency import CONSISTENCY_TABLE
    from fraudkit.monitoring.consistency import ALL, REASONS, SCORE

    started = step(f"online/offline consistency of {days[0]}..{days[-1]}: the decision log "
                   "against transaction_features and batch_predictions")
    run_job("monitor_consistency", instance, (days[0], days[-1]))
    rows = lake.read_days(settings.table_uri(CONSISTENCY_TABLE), days,
                          storage_options=settings.storage_options).to_pandas()
    counts = ["compared", "matched", "missing", "landed_not_decided", "other_model_version"]
    rows = rows.groupby("item")[counts].sum().astype(int)
    rows["match_rate"] = rows["matched"] / rows["compared"]
    whole, score = rows.loc[ALL], rows.loc[SCORE]
    print(f"    {int(whole['matched']):,}/{int(whole['compared']):,} online decisions used "
          f"exactly the batch features ({whole['match_rate']:.2%}; every one of the 15 features); "
          f"scores equal for {int(score['matched']):,}/{int(score['compared']):,} answered by "
          f"the model that scored the day in batch ({int(whole['other_model_version'])} "
          "without such a batch score)")
    print(f"    decided online but never landed: {int(whole['missing'])}; landed but never "
          f"decided online: {int(whole['landed_not_decided'])}")
    if REASONS in rows.index:
        why = rows.loc[REASONS]
        print(f"    reasons of reviews and declines equal on both paths for "
              f"{int(why['matched']):,}/{int(why['compared']):,} decisions (the same model)")
    show_decline_reasons(settings, days)
    done(started, f"({settings.table_uri(CONSISTENCY_TABLE)})")


def show_decline_reasons(settings: Settings, days: list[str]) -> None:
    """The newest online decline of these days that batch scored with the same model: why
    the service declined it, beside why batch_predictions did."""
    online = lake.read_days(settings.table_uri("online_predictions"), days, [
        "transaction_id", "tx_amount", "score", "decision", "model_version", "reasons",
        "received_at"], storage_options=settings.storage_options).to_pandas()
    batch = lake.read_days(settings.table_uri("batch_predictions"), days, [
        "transaction_id", "model_version", "reasons"],
        storage_options=settings.storage_options).to_pandas()
    both = online[online["decision"] == "decline"].merge(batch, on="transaction_id",
                                                         suffixes=("", "_batch"))
    both = both[(both["model_version"] == both["model_version_batch"])
                & both["reasons"].notna()]
    if both.empty:
        return
    row = both.sort_values("received_at").iloc[-1]
    print(f"    why transaction {row['transaction_id']} (amount {row['tx_amount']:.2f}, score "
          f"{row['score']:.4f}) was declined, TreeSHAP of {row['model_version']} in log-odds:")
    for path, found in (("online", row["reasons"]), ("batch", row["reasons_batch"])):
        print(f"      {path:6s} " + ", ".join(f"{r['feature']} {r['contribution']:+.4f}"
                                               for r in found))


def show_online_drift(settings: Settings, instance: dg.DagsterInstance, days: list[str]
                      ) -> None:
    """online_drift_report of the live days: the drift report on what the service decided."""
    from assets.drift import ONLINE_DRIFT_TABLE
    from scripts.demo_monitoring import _drift_rows

    started = step(f"drift on live traffic: the Evidently reports of {days[0]}..{days[-1]}'s "
                   "online decisions (online_drift_report)")
    run_job("monitor_online_drift", instance, (days[0], days[-1]))
    for r in _drift_rows(settings, days, ONLINE_DRIFT_TABLE):
        print(f"    {r['day']} online  drift share {r['share']:.2f}  score drift "
              f"{r['score_drift']:.3f}  {'DRIFT' if r['drift'] else 'ok   '}  "
              f"{', '.join(r['drifted']) or '-'}")
    done(started, f"({settings.report_location('drift')}/drift_online_<day>.html)")


def show_serving(settings: Settings, instance: dg.DagsterInstance, days: list[str]) -> None:
    """serving_report of the live days: the two paths side by side, measured."""
    from assets.serving import SERVING_TABLE
    from fraudkit.monitoring.serving import cost_per_1000

    started = step(f"batch vs real-time on {days[0]}..{days[-1]} (serving_report)")
    run_job("report_serving", instance, (days[0], days[-1]))
    rows = lake.read_days(settings.table_uri(SERVING_TABLE), days,
                          storage_options=settings.storage_options).to_pandas()
    rows["differing"] = rows["decisions_differing"] * rows["predictions"]
    rows = rows.groupby("path", sort=True).agg(
        predictions=("predictions", "sum"), cpu_seconds=("cpu_seconds", "sum"),
        staleness_p50_h=("staleness_p50_h", "median"), differing=("differing", "sum"),
    ).reset_index()
    rows["decisions_differing"] = rows["differing"] / rows["predictions"]
    rows["cost_per_1000"] = [cost_per_1000(c, p, settings.cost_per_cpu_hour)
                             for c, p in zip(rows["cpu_seconds"], rows["predictions"],
                                             strict=True)]
    for r in rows.itertuples():
        print(f"    {r.path:6s} {r.predictions:>7,} predictions, {r.cpu_seconds:.2f} CPU-s "
              f"({r.cpu_seconds / r.predictions * 1000:.3f} ms each), cost per 1,000 "
              f"{r.cost_per_1000:.2e} at {settings.cost_per_cpu_hour}/CPU-hour, what it serves "
              f"is {r.staleness_p50_h:.3g} h old (median)")
    print(f"    online decisions differing from the batch decision of the same transaction: "
          f"{rows['decisions_differing'].iat[0]:.2%}")
    done(started, f"({settings.report_location('serving')})")


def online_and_monitoring(settings: Settings, instance: dg.DagsterInstance, last_normal: str,
                          small: bool) -> None:
    """Steps 2 to 6 of the demo (the service process runs throughout steps 2 and 3)."""
    from scripts.demo_monitoring import run_drift_story
    from scripts.demo_online import ServiceProcess, live_traffic, newest_landed, print_answer

    started = step("online service: bentoml serve (bento/service.py)")
    with ServiceProcess(settings) as service:
        done(started, f"(ready at {service.url})")
        live: list[str] = []

        def on_live_traffic(day: str, landing_file: Path) -> None:
            live_traffic(service, day, landing_file, examples=not live)
            live.append(day)

        def on_promoted(version: str) -> None:
            example = newest_landed(settings)  # sent again: a retry, no made-up transaction
            answer, waited = service.wait_for_version(version, example)
            print(f"   the running service answers with {version} {waited:.1f}s after the "
                  f"promotion (transaction {example['transaction_id']} of "
                  f"{example['tx_datetime'][:10]} sent again):")
            print_answer(example, answer)

        step("monitoring loop: live traffic, drift → sensor → retraining → gate → both "
             "serving paths")
        story = run_drift_story(settings, instance, last_normal, small=small,
                                on_promoted=on_promoted, on_live_traffic=on_live_traffic)
    print("    service stopped; `make serve` keeps one running on port 3000")
    show_decision_log(settings, instance)
    show_consistency(settings, instance, live)
    show_online_drift(settings, instance, live)
    show_serving(settings, instance, live)
    micro_batches(settings, instance, last_normal, small)
    show_fairness(settings, instance)
    if story.promoted:
        print(f"\n    champion {story.before} -> {story.after}; from the drifted days landing "
              f"to the promotion {story.landed_to_promotion_s:.0f}s, to the online service "
              f"answering with it {story.landed_to_online_s:.0f}s (target < 180s)")
    else:
        print(f"\n    the gate kept champion {story.before} (see the reason above)")
    from resources.monitoring import MonitoringResource

    workspace = MonitoringResource.from_settings(project=settings).workspace
    print("    rollback: `make rollback`; drift reports: `.venv/bin/python -m "
          f"scripts.evidently_ui` (workspace {workspace}) or {settings.report_location('drift')}")


def show_fairness(settings: Settings, instance: dg.DagsterInstance) -> None:
    """model_performance of the newest week of matured labels, and its segment table."""
    from assets.performance import SEGMENT_TABLE
    from fraudkit.monitoring.performance import matured_until

    latest = lake.partition_values(settings.table_uri("raw_transactions"),
                                  settings.storage_options)[-1]
    last = matured_until(latest, settings.label_delay_days)
    first = lake.shift_day(last, -6)
    started = step(f"fairness on matured labels: model_performance of {first}..{last}, per "
                   "segment (segment_performance)")
    run_job("monitor_performance", instance, (first, last))
    rows = lake.read_days(settings.table_uri(SEGMENT_TABLE), lake.day_range(first, last),
                          storage_options=settings.storage_options).to_pandas()
    rows["false_alarms"] = rows["fpr"].fillna(0) * rows["negatives"]
    rows["recalled"] = rows["recall"].fillna(0) * rows["frauds"]
    rows["declines"] = rows["decline_rate"].fillna(0) * rows["rows"]
    table = rows.groupby(["segment", "value"], sort=True)[
        ["rows", "frauds", "negatives", "false_alarms", "recalled", "declines"]].sum()
    negatives = table.groupby(level="segment")[["false_alarms", "negatives"]].transform("sum")
    overall = negatives["false_alarms"] / negatives["negatives"]
    print(f"    {'segment':12s} {'value':24s} {'rows':>8s} {'recall':>7s} {'FPR':>7s} "
          f"{'x overall':>9s} {'declined':>8s}")
    for (segment, value), r in table.iterrows():
        fpr = r["false_alarms"] / r["negatives"] if r["negatives"] else float("nan")
        print(f"    {segment:12s} {value:24s} {int(r['rows']):>8,d} "
              f"{r['recalled'] / r['frauds'] if r['frauds'] else float('nan'):>7.1%} "
              f"{fpr:>7.2%} {fpr / overall[(segment, value)]:>9.2f} "
              f"{r['declines'] / r['rows']:>8.2%}")
    done(started, f"({settings.table_uri(SEGMENT_TABLE)})")


def micro_batches(settings: Settings, instance: dg.DagsterInstance, last_normal: str,
                  small: bool) -> None:
    """Step 5: the day after the drifted ones lands as hourly files while the landing
    sensor runs (``scripts/demo_micro_batch.py``)."""
    from scripts.demo_micro_batch import HOUR_S, run_intraday_story
    from scripts.demo_monitoring import drift_days_for

    drifted = drift_days_for(last_normal)
    day = lake.shift_day(drifted[-1], 1)
    started = step(f"micro-batches within the day: {day} lands as 24 hourly files (an hour "
                   f"every {HOUR_S:g}s) while landing_sensor runs; each file is ingested, "
                   "featured and scored by a micro_batch_intraday run")
    run_intraday_story(settings, instance, day, drifted[0], small)
    done(started)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true",
                        help="test scale (about 25k transactions over 60 days)")
    parser.add_argument("--batch-only", action="store_true",
                        help="stop after the batch path (no online or monitoring steps)")
    parser.add_argument("--skip-batch", action="store_true",
                        help="continue a --batch-only demo on DATA_DIR as it is: only the "
                             "online service and the monitoring loop")
    args = parser.parse_args(argv)
    if args.batch_only and args.skip_batch:
        parser.error("--batch-only and --skip-batch together leave nothing to run")
    # `kill` of the demo stops the servers it started (their `with` blocks run); the jobs
    # it runs in process keep this handler (scripts.jobs.sigterm_kept).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    quiet_beta_warnings()
    settings = Settings.from_env()
    ensure_dagster_home()
    if args.skip_batch:
        require_batch_path(settings)
    else:
        prepare_data_dir(settings)
    total = time.perf_counter()
    base = SimulationConfig.small() if args.small else SimulationConfig()
    cfg = replace(base, start_date=settings.start_date)
    if cfg.days[-1] > settings.end_date:
        raise SystemExit(
            f"the simulation ends {cfg.days[-1]}, after FRAUD_END_DATE={settings.end_date}; "
            "raise FRAUD_END_DATE so every simulated day is a partition"
        )
    first, last = cfg.days[0], cfg.days[-1]
    if args.skip_batch:
        days = lake.partition_values(settings.table_uri("raw_transactions"),
                                     settings.storage_options)
        if days[-1:] != [last]:
            raise SystemExit(f"raw_transactions ends {days[-1] if days else 'nowhere'}, not "
                             f"{last}: run --skip-batch at the scale of the --batch-only run "
                             "(with --small, or without, as it was)")
    with dg.DagsterInstance.get() as instance:
        if not args.skip_batch:
            simulate(settings, cfg)
            run_batch(settings, instance, first, last, SMALL_TRAINING if args.small else None)
            summary(settings)
            print(f"\nbatch path done in {time.perf_counter() - total:.0f}s")
        if not args.batch_only:
            online_and_monitoring(settings, instance, last, args.small)
    print(f"\ndemo finished in {time.perf_counter() - total:.0f}s; `make dev` opens the Dagster "
          "UI on these runs, `make serve` the online service")


if __name__ == "__main__":
    main()
