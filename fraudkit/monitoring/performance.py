"""Realized performance: the ``model_performance`` table's schema and the last day whose
labels are known. A day's realized metrics can only be computed once its frauds are
labelled, ``label_delay_days`` after it; until then the day's predictions are unjudged.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

#: The realized metrics a trigger or the gate can use (columns of model_performance).
GATE_METRICS = ("auc_roc", "average_precision", "card_precision_at_100")

PERFORMANCE_SCHEMA = pa.schema(
    [
        ("model_version", pa.string()),
        ("auc_roc", pa.float64()),
        ("average_precision", pa.float64()),
        ("card_precision_at_100", pa.float64()),
        ("rows", pa.int64()),
        ("frauds", pa.int64()),
        ("matured_on", pa.string()),
        ("computed_at", pa.timestamp("us", tz="UTC")),
        ("day", pa.string()),
    ]
)


def matured_until(latest_day: str, label_delay_days: int) -> str:
    """The last day whose labels are known when the data reaches ``latest_day``."""
    return (dt.date.fromisoformat(latest_day) - dt.timedelta(days=label_delay_days)).isoformat()
