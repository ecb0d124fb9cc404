"""The simulator: deterministic, realistic fraud rate, drift that only touches later days."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from fraudkit.schema import RAW_COLUMNS, landed_days
from fraudkit.simulator import SimulationConfig, simulate, write_landing


def frame(cfg: SimulationConfig) -> pd.DataFrame:
    return pd.concat([f.assign(day=d) for d, f in simulate(cfg)], ignore_index=True)


def test_default_scale_and_fraud_rate() -> None:
    raw = frame(SimulationConfig())
    assert 1_600_000 < len(raw) < 1_900_000
    assert 0.002 < raw["tx_fraud"].mean() < 0.01
    assert raw["transaction_id"].is_unique
    # (a) large amounts are fraud; (b) and (c) produce frauds below that amount too.
    assert raw.loc[raw["tx_amount"] > 220, "tx_fraud"].all()
    assert raw.loc[raw["tx_amount"] <= 220, "tx_fraud"].sum() > 1000


def test_seeded_and_deterministic() -> None:
    cfg = SimulationConfig.small(n_days=10)
    pd.testing.assert_frame_equal(frame(cfg), frame(cfg))
    assert not frame(cfg).equals(frame(replace(cfg, seed=99)))


def test_drift_changes_only_days_from_drift_on() -> None:
    cfg = SimulationConfig.small(n_days=30)
    drifted = frame(replace(cfg, drift_from="2026-05-21"))
    normal = frame(cfg)
    before = "2026-05-21"
    pd.testing.assert_frame_equal(drifted[drifted["day"] < before], normal[normal["day"] < before])
    late_n, late_d = normal[normal["day"] >= before], drifted[drifted["day"] >= before]
    assert late_d["tx_amount"].median() > 1.3 * late_n["tx_amount"].median()
    assert late_d["tx_fraud"].mean() > late_n["tx_fraud"].mean()


def test_landing_files(tmp_path: Path) -> None:
    cfg = SimulationConfig.small(n_days=3)
    written = write_landing(cfg, tmp_path)
    assert [p.name for p in written] == [f"transactions_{d}.parquet" for d in cfg.days]
    assert landed_days(tmp_path) == cfg.days
    first = pd.read_parquet(written[0])
    assert list(first.columns) == list(RAW_COLUMNS)
    assert str(first["tx_datetime"].dtype) == "datetime64[us, UTC]"
    assert write_landing(cfg, tmp_path) == []  # existing files are kept
