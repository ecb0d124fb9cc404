"""The latest batch prediction of each customer, for ``GET /customers/{id}/risk``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudkit import lake


@dataclass(frozen=True)
class PredictionIndex:
    """The latest batch prediction of each customer (by tx_datetime, transaction_id)."""

    customers: np.ndarray
    rows: dict[str, np.ndarray]
    table_version: int | None

    @classmethod
    def load(cls, uri: str, storage_options: dict | None = None) -> PredictionIndex:
        version = lake.table_version(uri, storage_options)
        if version is None:
            return cls(np.zeros(0, dtype=np.int64), {}, None)
        columns = ["customer_id", "transaction_id", "tx_datetime", "score", "decision",
                   "model_version", "day"]
        table = lake.dataset(uri, version=version, storage_options=storage_options).to_table(
            columns=columns)
        # Sort and gather in Arrow (which releases the GIL, so requests keep being served
        # while a new version loads); only the one row per customer becomes Python objects.
        order = pc.sort_indices(table, sort_keys=[("customer_id", "ascending"),
                                                  ("tx_datetime", "ascending"),
                                                  ("transaction_id", "ascending")])
        cust_sorted = table["customer_id"].take(order).to_numpy()
        last = np.r_[cust_sorted[1:] != cust_sorted[:-1], True] if len(order) else []
        latest = table.take(order.to_numpy()[last])
        times = latest["tx_datetime"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        rows = {
            "transaction_id": latest["transaction_id"].to_numpy().astype(np.int64),
            "tx_time_us": times.to_numpy().astype(np.int64),
            "score": latest["score"].to_numpy(),
            **{name: np.asarray(pc.cast(latest[name], pa.string()).to_pylist(), dtype=object)
               for name in ("decision", "model_version", "day")},
        }
        return cls(latest["customer_id"].to_numpy().astype(np.int64), rows, version)

    def lookup(self, customer_id: int) -> dict[str, Any] | None:
        p = int(np.searchsorted(self.customers, customer_id))
        if p >= len(self.customers) or self.customers[p] != customer_id:
            return None
        t_us = int(self.rows["tx_time_us"][p])
        when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=t_us)
        return {
            "customer_id": customer_id,
            "transaction_id": int(self.rows["transaction_id"][p]),
            "tx_datetime": when.isoformat().replace("+00:00", "Z"),
            "score": float(self.rows["score"][p]),
            "decision": self.rows["decision"][p],
            "model_version": self.rows["model_version"][p],
            "day": self.rows["day"][p],
            "predictions_table_version": self.table_version,
        }

