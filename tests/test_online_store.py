"""The online feature store in-process: parity with the batch features, retries, cold start,
reload and the champion watcher (the service tests cover the same over HTTP)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fraudkit import lake
from fraudkit.batch import FEATURES_SCHEMA, Tables, features_for_days, ingest_days
from fraudkit.config import Settings
from fraudkit.features import COUNT_COLUMNS, FEATURE_COLUMNS
from fraudkit.online import (
    ChampionWatcher,
    OnlineFeatureStore,
    OnlineScorer,
    Requests,
    fallback_scores,
    load_history,
    to_time_us,
)
from fraudkit.registry import ModelRegistry
from fraudkit.schema import QUARANTINE_SCHEMA, RAW_SCHEMA

CUTOFF = "2026-06-20"
REPLAY = ["2026-06-21", "2026-06-22"]


def land_next_day(raw: str, last_day: str) -> tuple[str, int]:
    """A new day lands in the raw table at ``raw``: the rows of ``last_day``, a day later,
    with new ids. Returns the new day and the table version that holds it."""
    last = lake.read_days(raw, [last_day])
    new_day = lake.shift_day(last_day, 1)
    shifted = last.set_column(
        last.schema.get_field_index("transaction_id"), "transaction_id",
        pc.add(last["transaction_id"], 10**9)).set_column(
        last.schema.get_field_index("tx_datetime"), "tx_datetime",
        pc.add(last["tx_datetime"], pa.scalar(dt.timedelta(days=1)))).set_column(
        last.schema.get_field_index("day"), "day", pa.array([new_day] * last.num_rows))
    return new_day, lake.replace_days(raw, shifted, [new_day])


def _raw(data_dir: Path, days: list[str]):
    frame = lake.read_days(str(data_dir / "tables" / "raw_transactions"), days).to_pandas()
    return frame.sort_values(["tx_datetime", "transaction_id"]).reset_index(drop=True)


def _requests(frame) -> Requests:
    return Requests(frame["transaction_id"].to_numpy(np.int64),
                    frame["tx_datetime"].astype("datetime64[us, UTC]").array.asi8,
                    frame["customer_id"].to_numpy(np.int64),
                    frame["terminal_id"].to_numpy(np.int64),
                    frame["tx_amount"].to_numpy(np.float64))


def _assert_equal_to_batch(got: dict[str, np.ndarray], ids: np.ndarray, data_dir: Path,
                           days: list[str]) -> None:
    batch = lake.read_days(str(data_dir / "tables" / "transaction_features"),
                           days).to_pandas().set_index("transaction_id").loc[ids]
    for name in FEATURE_COLUMNS:
        if name in COUNT_COLUMNS:
            np.testing.assert_array_equal(got[name], batch[name].to_numpy(), err_msg=name)
        else:
            np.testing.assert_allclose(got[name], batch[name].to_numpy(), rtol=0, atol=1e-9,
                                       err_msg=name)


def _scorer_at_cutoff(small_pipeline: Path, tmp_path: Path) -> OnlineScorer:
    """A scorer whose history stops at CUTOFF, logging to a SQLite store in ``tmp_path``."""
    settings = Settings(data_dir=tmp_path / "data", start_date="2026-05-01",
                        end_date="2026-07-31", label_delay_days=7)
    scorer = OnlineScorer(settings.model_copy(update={
        "registry_dir": small_pipeline / "registry", "online_store_cutoff": CUTOFF,
        "online_store_url": f"sqlite:///{tmp_path / 'store.sqlite3'}"}))
    scorer.raw_uri = str(small_pipeline / "tables" / "raw_transactions")
    scorer.refresh_history(force=True)
    return scorer


def test_replay_one_by_one_equals_batch(small_pipeline: Path, tmp_path: Path) -> None:
    """Each request is scored and logged alone: the next ones read it back from the store."""
    scorer = _scorer_at_cutoff(small_pipeline, tmp_path)
    req = _requests(_raw(small_pipeline, REPLAY))
    parts = []
    for i in range(len(req)):
        one = Requests(*(getattr(req, f)[i:i + 1] for f in
                         ("transaction_id", "tx_time_us", "customer_id", "terminal_id",
                          "tx_amount")))
        scored = scorer.score(one)
        assert not scored.degraded
        parts.append(scored.features)
    got = {n: np.concatenate([p[n] for p in parts]) for n in FEATURE_COLUMNS}
    _assert_equal_to_batch(got, req.transaction_id, small_pipeline, REPLAY)
    # a new scorer on the same store (a restart, or a second worker) sees the same stream
    again = _scorer_at_cutoff(small_pipeline, tmp_path)
    last = Requests(*(getattr(req, f)[-1:] for f in ("transaction_id", "tx_time_us",
                                                      "customer_id", "terminal_id",
                                                      "tx_amount")))
    feats, ok = again.store.features(last)
    assert ok
    _assert_equal_to_batch(feats, last.transaction_id, small_pipeline, REPLAY)


def test_replay_as_one_batch_equals_batch(small_pipeline: Path) -> None:
    snap = load_history(str(small_pipeline / "tables" / "raw_transactions"), 7, CUTOFF)
    req = _requests(_raw(small_pipeline, REPLAY))
    got, _ = OnlineFeatureStore(7, snap).features(req)
    _assert_equal_to_batch(got, req.transaction_id, small_pipeline, REPLAY)


def test_store_holding_the_future_gives_the_same_answer(small_pipeline: Path) -> None:
    """The store already holds the replayed days and the day after; rows after t must not
    count. (The store covers requests from MARGIN_DAYS before its newest day onwards.)"""
    snap = load_history(str(small_pipeline / "tables" / "raw_transactions"), 7, "2026-06-23")
    req = _requests(_raw(small_pipeline, REPLAY))
    got, _ = OnlineFeatureStore(7, snap).features(req)
    _assert_equal_to_batch(got, req.transaction_id, small_pipeline, REPLAY)


def test_zero_amounts_are_featured_the_same_on_both_paths(tmp_path: Path) -> None:
    """Card verifications ($0) land through the real ingest, then get their features from
    the batch path (``features_for_days``, what each Dask task of transaction_features runs)
    and from the online path (history + requests), which must agree on all 15 features
    exactly: as one batch on the day after the history, and one request at a time against
    a history that already holds the day. Customer 1 only ever verifies cards ($0), so its
    means are 0, not 0/0."""
    days = ["2026-05-01", "2026-05-02", "2026-05-03", "2026-05-04"]
    delay = 1  # labels of the earlier days reach the terminal windows of the last one
    landing = tmp_path / "landing"
    landing.mkdir()
    rng = np.random.default_rng(5)
    n = 40
    for k, day in enumerate(days):
        # Whole minutes, a few ties: windows end exactly on rows of the days before.
        minutes = np.sort(rng.integers(0, 24 * 60, n))
        frame = pd.DataFrame({
            "transaction_id": np.arange(k * 1000, k * 1000 + n, dtype="int64"),
            "tx_datetime": pd.Timestamp(day, tz="UTC") + pd.to_timedelta(minutes, unit="min"),
            "customer_id": rng.integers(1, 6, n).astype("int64"),
            "terminal_id": rng.integers(1, 4, n).astype("int64"),
            "tx_amount": np.where(rng.random(n) < 0.4, 0.0,
                                  np.round(rng.gamma(2.0, 40.0, n), 2)),
            "tx_fraud": (rng.random(n) < 0.3).astype("int8"),
        })
        frame.loc[frame["customer_id"] == 1, "tx_amount"] = 0.0
        frame.loc[n - 1, "tx_amount"] = -1.0  # quarantined: on neither path
        frame.to_parquet(landing / f"transactions_{day}.parquet")
    tables = Tables(raw=str(tmp_path / "raw"), quarantine=str(tmp_path / "quarantine"),
                    features=str(tmp_path / "features"),
                    predictions=str(tmp_path / "predictions"))
    lake.ensure_table(tables.raw, RAW_SCHEMA)
    lake.ensure_table(tables.quarantine, QUARANTINE_SCHEMA)
    lake.ensure_table(tables.features, FEATURES_SCHEMA)
    ingest_days(days, str(landing), tables)
    raw_version = lake.table_version(tables.raw)
    features_for_days(days[-1:], tables, raw_version, delay)
    batch = lake.read_days(tables.features, days[-1:]).to_pandas().set_index("transaction_id")

    today = lake.read_days(tables.raw, days[-1:]).to_pandas()
    today = today.sort_values(["tx_datetime", "transaction_id"]).reset_index(drop=True)
    req = _requests(today)
    assert (req.tx_amount == 0.0).sum() >= 10 and (today["customer_id"] == 1).any()
    assert len(today) == n - 1 and (req.tx_amount >= 0).all()

    def assert_same(got: dict[str, np.ndarray], ids: np.ndarray) -> None:
        want = batch.loc[ids]
        for name in FEATURE_COLUMNS:
            np.testing.assert_array_equal(got[name], want[name].to_numpy(), err_msg=name)

    as_batch, _ = OnlineFeatureStore(delay, load_history(tables.raw, delay, days[-2])
                                     ).features(req)
    assert_same(as_batch, req.transaction_id)
    holding_the_day = OnlineFeatureStore(delay, load_history(tables.raw, delay))
    for i in range(len(req)):
        one = Requests(*(getattr(req, f)[i:i + 1] for f in
                         ("transaction_id", "tx_time_us", "customer_id", "terminal_id",
                          "tx_amount")))
        alone, _ = holding_the_day.features(one)
        assert_same(alone, one.transaction_id)
    only_zero = batch[batch["customer_id"] == 1]
    assert (only_zero["customer_avg_amount_30d"] == 0.0).all()
    assert (only_zero["customer_nb_tx_30d"] >= 1).all()
    assert (batch["terminal_risk_30d"] > 0).any()  # the terminal windows held labels

def test_retry_does_not_count_twice(small_pipeline: Path, tmp_path: Path) -> None:
    scorer = _scorer_at_cutoff(small_pipeline, tmp_path)
    t = to_time_us(dt.datetime(2026, 6, 21, 12, tzinfo=dt.UTC))
    first = Requests.from_rows([(5_000_000, t, 3, 4, 10.0)])
    before = scorer.score(first).features["customer_nb_tx_1d"][0]
    again = scorer.score(first).features["customer_nb_tx_1d"][0]
    later = Requests.from_rows([(5_000_001, t + 1, 3, 4, 20.0)])
    assert before == again
    assert scorer.score(later).features["customer_nb_tx_1d"][0] == before + 1
    assert scorer.decisions.store.day_counts() == {"2026-06-21": 2}


def test_cold_start_unknown_entities() -> None:
    store = OnlineFeatureStore(7)  # nothing loaded at all
    t = to_time_us(dt.datetime(2026, 6, 21, 3, tzinfo=dt.UTC))
    feats, _ = store.features(Requests.from_rows([(1, t, 10**12, 10**12, 42.5)]))
    assert feats["customer_nb_tx_30d"][0] == 1 and feats["customer_avg_amount_1d"][0] == 42.5
    assert feats["terminal_nb_tx_30d"][0] == 0 and feats["terminal_risk_30d"][0] == 0.0
    assert feats["tx_during_night"][0] == 1


def test_fallback_rules() -> None:
    feats = {n: np.zeros(3) for n in FEATURE_COLUMNS}
    feats["tx_amount"] = np.array([10.0, 300.0, 10.0])
    feats["terminal_risk_7d"] = np.array([0.0, 0.0, 0.5])
    scores, decisions = fallback_scores(feats)
    assert decisions.tolist() == ["approve", "decline", "review"]
    assert scores.tolist() == [0.0, 1.0, 0.5]


def test_fallback_rules_on_card_verifications() -> None:
    """docs/contracts.md: a $0 transaction of a customer whose 30-day window is 5 or more
    $0 card verifications meets the review rule (0 >= 3 x 0); with fewer it is approved."""
    feats = {n: np.zeros(2) for n in FEATURE_COLUMNS}
    feats["customer_nb_tx_30d"] = np.array([5, 4])
    scores, decisions = fallback_scores(feats)
    assert decisions.tolist() == ["review", "approve"] and scores.tolist() == [0.5, 0.0]

def test_champion_watcher_follows_promotion_and_rollback(small_pipeline: Path,
                                                        tmp_path: Path) -> None:
    registry_dir = tmp_path / "registry"
    shutil.copytree(small_pipeline / "registry", registry_dir)
    watcher = ChampionWatcher(registry_dir)
    assert watcher.poll() and watcher.current.version == "v0001"
    assert not watcher.poll()  # nothing changed: one stat, no reload
    registry = ModelRegistry(registry_dir)
    old = registry.champion()
    new = registry.register(old.model_path.read_bytes(), training_data={}, metrics={},
                            thresholds=old.thresholds)
    registry.promote(new.version, reason="test")
    assert watcher.poll() and watcher.current.version == new.version
    registry.rollback()
    assert watcher.poll() and watcher.current.version == "v0001"


def test_broken_champion_keeps_serving_the_previous_model(small_pipeline: Path,
                                                          tmp_path: Path) -> None:
    registry_dir = tmp_path / "registry"
    shutil.copytree(small_pipeline / "registry", registry_dir)
    watcher = ChampionWatcher(registry_dir)
    watcher.poll()
    registry = ModelRegistry(registry_dir)
    new = registry.register(b"not an onnx model", training_data={}, metrics={},
                            thresholds=registry.champion().thresholds)
    registry._put_json("champion.json", {"version": new.version, "history": ["v0001"]})
    assert not watcher.poll()
    assert watcher.current.version == "v0001" and "cannot load" in watcher.last_error


def test_background_refresh_swaps_in_a_new_table_version(small_pipeline: Path,
                                                         tmp_path: Path) -> None:
    """The scorer's own thread sees a new raw table version and swaps the history in."""
    data_dir = tmp_path / "data"
    for part in ["tables/raw_transactions", "tables/batch_predictions", "registry"]:
        shutil.copytree(small_pipeline / part, data_dir / part)
    settings = Settings(data_dir=data_dir, start_date="2026-05-01", end_date="2026-07-31",
                        label_delay_days=7)
    scorer = OnlineScorer(settings.model_copy(update={"champion_poll_s": 0.05,
                                                      "table_poll_s": 0.1}))
    scorer.load()
    before = scorer.store.snapshot
    raw = str(data_dir / "tables" / "raw_transactions")
    new_day, version = land_next_day(raw, before.last_day)
    landed = lake.rows_per_day(raw, [new_day])[new_day]
    scorer.start()
    try:
        deadline = time.monotonic() + 30
        while scorer.store.snapshot.table_version != version and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scorer.stop()
    after = scorer.store.snapshot
    assert (after.table_version, after.last_day) == (version, new_day)
    oldest = lake.rows_per_day(raw, [before.first_day])[before.first_day]
    assert after.first_day == lake.shift_day(before.first_day, 1)  # the window moved a day
    assert after.rows == before.rows + landed - oldest
    assert scorer.refresh_errors == 0
    assert not scorer.refresh_history()  # nothing newer: no reload


def _scorer(small_pipeline: Path, tmp_path: Path) -> tuple[OnlineScorer, Path]:
    """A loaded scorer over a private copy of the registry and the tables it reads."""
    data_dir = tmp_path / "data"
    for part in ["tables/raw_transactions", "tables/batch_predictions", "registry"]:
        shutil.copytree(small_pipeline / part, data_dir / part)
    settings = Settings(data_dir=data_dir, start_date="2026-05-01", end_date="2026-07-31",
                        label_delay_days=7)
    scorer = OnlineScorer(settings)
    scorer.load()
    assert scorer.ready and scorer.watcher.current.version == "v0001"
    return scorer, data_dir / "registry"


def _point_champion_at(registry_dir: Path, version: str) -> None:
    """champion.json as an operator or a sync job might write it (atomically, by rename)."""
    tmp = registry_dir / ".champion.tmp"
    tmp.write_text(json.dumps({"version": version, "history": ["v0001"]}))
    os.replace(tmp, registry_dir / "champion.json")


def test_champion_load_is_retried_until_its_folder_arrives(small_pipeline: Path,
                                                           tmp_path: Path) -> None:
    """champion.json names a version whose folder is copied in later (a registry synced
    file by file): the watcher keeps retrying, and says meanwhile that it is not serving
    the champion, without naming the registry's absolute path."""
    scorer, registry_dir = _scorer(small_pipeline, tmp_path)
    registry = ModelRegistry(registry_dir)
    new = registry.register(registry.champion().model_path.read_bytes(), training_data={},
                            metrics={}, thresholds=registry.champion().thresholds)
    parked = tmp_path / "parked"
    shutil.move(new.path, parked)
    _point_champion_at(registry_dir, new.version)
    for _ in range(3):
        assert not scorer.watcher.poll()
    status = scorer.status()
    assert status["model_version"] == "v0001" and status["champion_version"] == new.version
    assert status["serving_champion"] is False and not scorer.ready
    assert new.version in status["model_error"]
    assert str(registry_dir) not in status["model_error"]
    shutil.move(parked, new.path)
    assert scorer.watcher.poll() and scorer.watcher.current.version == new.version
    status = scorer.status()
    assert status["serving_champion"] is True and status["model_error"] is None
    assert scorer.ready
    assert not scorer.watcher.poll()  # served: nothing to retry


def test_model_error_clears_when_the_champion_is_repaired(small_pipeline: Path,
                                                          tmp_path: Path) -> None:
    """champion.json briefly names a broken version, then the served one again."""
    scorer, registry_dir = _scorer(small_pipeline, tmp_path)
    registry = ModelRegistry(registry_dir)
    broken = registry.register(b"not an onnx model", training_data={}, metrics={},
                               thresholds=registry.champion().thresholds)
    _point_champion_at(registry_dir, broken.version)
    assert not scorer.watcher.poll()
    assert scorer.status()["model_error"] and not scorer.ready
    _point_champion_at(registry_dir, "v0001")
    assert not scorer.watcher.poll()  # the served model is the champion again: no reload
    status = scorer.status()
    assert status["model_error"] is None and status["serving_champion"] is True
    assert scorer.ready


def test_changed_model_file_of_the_served_champion(small_pipeline: Path,
                                                   tmp_path: Path) -> None:
    """Touched: nothing changes. Rewritten with other bytes: the verified model in memory
    keeps scoring, /status says why and readiness fails. Restored: ready again."""
    scorer, registry_dir = _scorer(small_pipeline, tmp_path)
    model_file = registry_dir / "versions" / "v0001" / "model.onnx"
    original = model_file.read_bytes()
    later = time.time() + 5
    os.utime(model_file, (later, later))
    assert not scorer.watcher.poll()
    assert scorer.ready and scorer.status()["model_error"] is None
    model_file.write_bytes(original + b"\0")
    assert not scorer.watcher.poll()
    status = scorer.status()
    assert "sha256" in status["model_error"] and str(registry_dir) not in status["model_error"]
    assert not scorer.ready
    t = to_time_us(dt.datetime(2026, 6, 21, 12, tzinfo=dt.UTC))
    scored = scorer.score(Requests.from_rows([(7_000_000, t, 3, 4, 10.0)]))
    assert scored.model_version == "v0001" and not scored.fallback
    model_file.write_bytes(original)
    assert not scorer.watcher.poll()
    assert scorer.ready and scorer.status()["model_error"] is None
