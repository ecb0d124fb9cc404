"""The vectorized feature kernel against the naive loop, on data built to hit the edges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudkit import features
from fraudkit.features import (
    COUNT_COLUMNS,
    FEATURE_COLUMNS,
    Transactions,
    compute_features,
    features_frame,
    lookback_days,
)
from tests.reference import naive_features

BASE = pd.Timestamp("2026-05-01", tz="UTC")


def random_raw(seed: int, n: int = 300) -> pd.DataFrame:
    """Random transactions with deliberate ties and window-edge timestamps."""
    rng = np.random.default_rng(seed)
    # Whole-hour offsets make exact 1/7/30-day (and delay) edges frequent; some rows share
    # an exact timestamp (ties broken by transaction_id).
    hours = rng.integers(0, 24 * 45, n)
    micro = np.where(rng.random(n) < 0.5, 0, rng.integers(0, 3_600_000_000, n))
    times = BASE + pd.to_timedelta(hours, unit="h") + pd.to_timedelta(micro, unit="us")
    ids = rng.permutation(np.arange(1000, 1000 + n))
    frame = pd.DataFrame(
        {
            "transaction_id": ids.astype("int64"),
            "tx_datetime": times.astype("datetime64[us, UTC]"),
            "customer_id": rng.integers(0, 12, n).astype("int64"),
            "terminal_id": rng.integers(0, 9, n).astype("int64"),
            "tx_amount": np.round(rng.gamma(2.0, 40.0, n), 2) + 0.01,
            "tx_fraud": (rng.random(n) < 0.2).astype("int8"),
        }
    )
    # A customer with a single transaction, and a terminal whose only transactions are too
    # recent for any label to have matured.
    frame.loc[0, "customer_id"] = 999
    late = frame.index[-3:]
    frame.loc[late, "terminal_id"] = 777
    frame.loc[late, "tx_datetime"] = BASE + pd.Timedelta(days=44)
    return frame


def assert_matches_reference(raw: pd.DataFrame, delay: int) -> None:
    got = features_frame(raw, delay).set_index("transaction_id")
    want = naive_features(raw, delay).loc[got.index]
    for col in FEATURE_COLUMNS:
        if col in COUNT_COLUMNS:
            np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(), err_msg=col)
        else:
            np.testing.assert_allclose(
                got[col].to_numpy(), want[col].to_numpy(), rtol=0, atol=1e-9, err_msg=col
            )


@pytest.mark.parametrize("seed", range(6))
def test_kernel_matches_naive_loop(seed: int) -> None:
    assert_matches_reference(random_raw(seed), delay=7)


@pytest.mark.parametrize("delay", [1, 3, 14])
def test_other_label_delays(delay: int) -> None:
    assert_matches_reference(random_raw(100 + delay), delay=delay)


@pytest.mark.parametrize("seed", range(3))
def test_zero_amounts_match_naive_loop(seed: int) -> None:
    """Zero-amount authorizations (card verifications) are ordinary amounts in every window:
    a third of the rows at $0, one customer with nothing but $0 (mean 0, not 0/0) and a
    $0 first transaction (a one-row mean of 0)."""
    raw = random_raw(200 + seed)
    rng = np.random.default_rng(seed)
    raw.loc[rng.random(len(raw)) < 1 / 3, "tx_amount"] = 0.0
    raw.loc[raw["customer_id"] == 5, "tx_amount"] = 0.0
    raw.loc[0, "tx_amount"] = 0.0  # customer 999's only transaction
    assert_matches_reference(raw, delay=7)
    got = features_frame(raw, 7).set_index("transaction_id")
    zero_only = got.loc[raw.loc[raw["customer_id"] == 5, "transaction_id"]]
    assert (zero_only[[f"customer_avg_amount_{w}d" for w in (1, 7, 30)]] == 0.0).all().all()
    assert (zero_only["customer_nb_tx_30d"] >= 1).all()
    assert got.loc[raw.loc[0, "transaction_id"], "customer_avg_amount_30d"] == 0.0

def test_ties_window_edges_single_customer_and_unmatured_terminal() -> None:
    t0 = BASE + pd.Timedelta(hours=12)
    rows = [
        # id, time, customer, terminal, amount, fraud
        (10, t0, 1, 1, 10.0, 1),
        (12, t0, 1, 1, 20.0, 0),  # same timestamp, later id: sees id 10, not vice versa
        (11, t0, 1, 2, 40.0, 0),  # ties broken by id, not by row order
        (13, t0 + pd.Timedelta(days=1), 1, 1, 5.0, 0),  # exactly 1 day later: t - 1d excluded
        (14, t0 + pd.Timedelta(days=7), 2, 1, 7.0, 0),  # exactly the delay: t - d included
        (15, t0 + pd.Timedelta(days=8), 3, 1, 9.0, 0),  # (t-d-1d, t-d] holds only id 13
        (16, t0 + pd.Timedelta(days=2), 4, 3, 1.0, 0),  # lone customer, terminal w/o labels
    ]
    raw = pd.DataFrame(
        rows,
        columns=["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount",
                 "tx_fraud"],
    )
    raw["tx_datetime"] = raw["tx_datetime"].astype("datetime64[us, UTC]")
    assert_matches_reference(raw, delay=7)
    got = features_frame(raw, 7).set_index("transaction_id")
    assert got.loc[10, "customer_nb_tx_1d"] == 1
    assert got.loc[11, "customer_nb_tx_1d"] == 2
    assert got.loc[12, "customer_nb_tx_1d"] == 3
    assert got.loc[13, "customer_nb_tx_1d"] == 1  # the three at t0 are exactly 1 day old
    assert got.loc[13, "customer_nb_tx_7d"] == 4
    assert got.loc[14, "terminal_nb_tx_1d"] == 2  # ids 10 and 12 sit exactly at t - d
    assert got.loc[14, "terminal_risk_1d"] == pytest.approx(0.5)
    assert got.loc[15, "terminal_nb_tx_1d"] == 1
    assert got.loc[16, "terminal_nb_tx_30d"] == 0
    assert got.loc[16, "terminal_risk_30d"] == 0.0


def test_query_subset_equals_full_computation() -> None:
    """The online path computes one row against a small frame; it must equal the batch row."""
    raw = random_raw(7, n=400)
    tx = Transactions.from_frame(raw)
    full = compute_features(tx, 7)
    pick = np.array([5, 17, 230, 399])
    part = compute_features(tx, 7, query=pick)
    for col in FEATURE_COLUMNS:
        np.testing.assert_array_equal(part[col], full[col][pick], err_msg=col)


def test_lookback_covers_the_longest_window() -> None:
    assert lookback_days(7) == 37
    assert lookback_days(1) == 31


def test_calendar_flags_are_utc() -> None:
    raw = pd.DataFrame(
        {
            "transaction_id": [1, 2, 3, 4],
            # Sat 06:59:59.999999, Sat 07:00, Sun 23:59, Mon 00:00
            "tx_datetime": pd.to_datetime(
                ["2026-05-02T06:59:59.999999Z", "2026-05-02T07:00:00Z",
                 "2026-05-03T23:59:00Z", "2026-05-04T00:00:00Z"], utc=True, format="ISO8601"
            ).astype("datetime64[us, UTC]"),
            "customer_id": [1, 1, 1, 1],
            "terminal_id": [1, 1, 1, 1],
            "tx_amount": [1.0, 2.0, 3.0, 4.0],
            "tx_fraud": [0, 0, 0, 0],
        }
    )
    got = features_frame(raw, 7)
    assert got["tx_during_weekend"].tolist() == [1, 1, 1, 0]
    assert got["tx_during_night"].tolist() == [1, 0, 0, 1]


def test_results_do_not_depend_on_how_much_history_the_frame_holds() -> None:
    """Re-runs over other day ranges, Dask chunks and the online store's month of history
    must produce bit-for-bit the same features, not just close ones."""
    rng = np.random.default_rng(11)
    n = 6000
    raw = pd.DataFrame(
        {
            "transaction_id": np.arange(n, dtype="int64"),
            "tx_datetime": (BASE + pd.to_timedelta(np.sort(rng.integers(0, 80 * 86_400, n)),
                                                   unit="s")).astype("datetime64[us, UTC]"),
            "customer_id": rng.integers(0, 40, n).astype("int64"),
            "terminal_id": rng.integers(0, 30, n).astype("int64"),
            "tx_amount": rng.gamma(2.0, 40.0, n) + 0.01,  # full float64 mantissas
            "tx_fraud": (rng.random(n) < 0.1).astype("int8"),
        }
    )
    full = features_frame(raw, 7).set_index("transaction_id")
    target_start = BASE + pd.Timedelta(days=70)
    for history_days in (37, 40, 55):
        part = raw[raw["tx_datetime"] >= target_start - pd.Timedelta(days=history_days)]
        got = features_frame(part, 7).set_index("transaction_id")
        ids = part.loc[part["tx_datetime"] >= target_start, "transaction_id"]
        for col in FEATURE_COLUMNS:
            np.testing.assert_array_equal(got.loc[ids, col].to_numpy(),
                                          full.loc[ids, col].to_numpy(), err_msg=col)


def test_entity_partitions_give_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large frames are computed per partition of customers (and of terminals); forcing
    partitions on a small frame must change no bit, and a query in any order comes back in
    that order."""
    raw = random_raw(3, n=500)
    raw["customer_id"] += 10**12  # ids far from 0, negative offsets in the partition math
    tx = Transactions.from_frame(raw)
    pick = np.random.default_rng(0).permutation(len(raw))[:300]
    whole = compute_features(tx, 7, query=pick)
    monkeypatch.setattr(features, "PARTITION_ROWS", 64)
    parted = compute_features(tx, 7, query=pick)
    for col in FEATURE_COLUMNS:
        np.testing.assert_array_equal(parted[col], whole[col], err_msg=col)
    assert_matches_reference(raw, delay=7)  # the partitioned path against the naive loop


def test_repeated_query_rows_are_refused() -> None:
    tx = Transactions.from_frame(random_raw(1, n=20))
    with pytest.raises(ValueError, match="repeated"):
        compute_features(tx, 7, query=np.array([1, 1]))


def test_the_feature_spec_fixes_names_order_and_integer_columns() -> None:
    """The model contract (docs/contracts.md): every registered model takes its input in
    this order, so a change to the spec that reorders or renames them must fail here."""
    from fraudkit.batch import FEATURES_SCHEMA
    from fraudkit.features import FEATURES

    assert FEATURE_COLUMNS == (
        "tx_amount", "tx_during_weekend", "tx_during_night",
        "customer_nb_tx_1d", "customer_avg_amount_1d", "customer_nb_tx_7d",
        "customer_avg_amount_7d", "customer_nb_tx_30d", "customer_avg_amount_30d",
        "terminal_nb_tx_1d", "terminal_risk_1d", "terminal_nb_tx_7d", "terminal_risk_7d",
        "terminal_nb_tx_30d", "terminal_risk_30d")
    assert {n for n in FEATURE_COLUMNS if "_nb_tx_" in n or "during" in n} == COUNT_COLUMNS
    assert all(f.description for f in FEATURES)
    for name in FEATURE_COLUMNS:  # the features table's types come from the same spec
        expected = "int64" if name in COUNT_COLUMNS else "double"
        assert str(FEATURES_SCHEMA.field(name).type) == expected, name
