"""A deliberately naive implementation of the feature semantics (docs/contracts.md): a
plain loop over each transaction's windows. It is the oracle the vectorized kernel is tested
against."""

from __future__ import annotations

import pandas as pd

from fraudkit.features import CUSTOMER_WINDOWS_DAYS, TERMINAL_WINDOWS_DAYS


def naive_features(raw: pd.DataFrame, delay_days: int) -> pd.DataFrame:
    rows = raw.sort_values(["tx_datetime", "transaction_id"]).to_dict("records")
    result = []
    for i, tx in enumerate(rows):
        t = tx["tx_datetime"]
        feats = {
            "transaction_id": tx["transaction_id"],
            "tx_amount": tx["tx_amount"],
            "tx_during_weekend": int(t.weekday() >= 5),
            "tx_during_night": int(t.hour <= 6),
        }
        for w in CUSTOMER_WINDOWS_DAYS:
            start = t - pd.Timedelta(days=w)
            amounts = [
                o["tx_amount"]
                for o in rows[: i + 1]  # ordered at or before this one
                if o["customer_id"] == tx["customer_id"] and start < o["tx_datetime"] <= t
            ]
            feats[f"customer_nb_tx_{w}d"] = len(amounts)
            feats[f"customer_avg_amount_{w}d"] = sum(amounts) / len(amounts) if amounts else 0.0
        end = t - pd.Timedelta(days=delay_days)
        for w in TERMINAL_WINDOWS_DAYS:
            start = end - pd.Timedelta(days=w)
            labels = [
                o["tx_fraud"]
                for o in rows
                if o["terminal_id"] == tx["terminal_id"] and start < o["tx_datetime"] <= end
            ]
            feats[f"terminal_nb_tx_{w}d"] = len(labels)
            feats[f"terminal_risk_{w}d"] = sum(labels) / len(labels) if labels else 0.0
        result.append(feats)
    return pd.DataFrame(result).set_index("transaction_id")
