"""The feature history: the last days of the Delta ``raw_transactions`` table, in memory.

Held as CSR arrays (rows sorted by entity then time, with an ``indptr`` per entity): a
lookup is two binary searches and a slice. Each worker loads it read-only and swaps in a
new snapshot in one assignment when the raw table gets a new Delta version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from deltalake.exceptions import TableNotFoundError

from fraudkit import lake
from fraudkit.features import (
    CUSTOMER_WINDOWS_DAYS,
    TERMINAL_WINDOWS_DAYS,
    US_PER_DAY,
    lookback_days,
)
from fraudkit.schema import LANDING_SCHEMA

#: Extra days of raw history loaded beyond the windows' look-back (DST-free, but cheap
#: insurance against requests slightly older than the newest stored day).
MARGIN_DAYS = 2


def reach_days(label_delay_days: int) -> int:
    """Days before the newest transaction that any online window can still see: the
    look-back plus :data:`MARGIN_DAYS`. The history loads them; the online store keeps
    scored transactions that long (and prunes older ones once their day is delivered)."""
    return lookback_days(label_delay_days) + MARGIN_DAYS

CUSTOMER_SPAN_US = max(CUSTOMER_WINDOWS_DAYS) * US_PER_DAY
TERMINAL_SPAN_US = max(TERMINAL_WINDOWS_DAYS) * US_PER_DAY
#: The raw contract's columns (the landing files' schema: the raw table without ``day``).
RAW_COLUMNS = LANDING_SCHEMA.names


class EntityRows:
    """Rows sorted by (entity, time, id) with an ``indptr`` per distinct entity (CSR)."""

    def __init__(self, entity: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        order = np.lexsort((cols["transaction_id"], cols["tx_time_us"], entity))
        sorted_entity = entity[order]
        self.keys, starts = np.unique(sorted_entity, return_index=True)
        self.indptr = np.append(starts, len(sorted_entity)).astype(np.int64)
        self.cols = {name: values[order] for name, values in cols.items()}
        self.time = self.cols["tx_time_us"]

    def __len__(self) -> int:
        return len(self.time)

    def ranges(self, keys: np.ndarray, lo_excl: np.ndarray, hi_incl: np.ndarray) -> np.ndarray:
        """Row indices of each ``keys[i]`` with time in ``(lo_excl[i], hi_incl[i]]``."""
        pos = np.searchsorted(self.keys, keys)
        pieces = []
        for i, p in enumerate(pos.tolist()):
            if p >= len(self.keys) or self.keys[p] != keys[i]:
                continue
            a, b = int(self.indptr[p]), int(self.indptr[p + 1])
            times = self.time[a:b]
            lo = a + int(np.searchsorted(times, lo_excl[i], side="right"))
            hi = a + int(np.searchsorted(times, hi_incl[i], side="right"))
            if hi > lo:
                pieces.append(np.arange(lo, hi))
        if not pieces:
            return np.zeros(0, dtype=np.int64)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


@dataclass(frozen=True)
class HistorySnapshot:
    """The raw table's recent rows, by customer and by terminal; immutable once built."""

    customers: EntityRows
    terminals: EntityRows
    table_version: int | None
    first_day: str | None
    last_day: str | None
    loaded: bool

    @classmethod
    def from_arrow(cls, table: pa.Table, version: int | None, first_day: str | None,
                   last_day: str | None, loaded: bool = True) -> HistorySnapshot:
        times = table["tx_datetime"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        cols = {
            "transaction_id": table["transaction_id"].to_numpy().astype(np.int64),
            "tx_time_us": times.to_numpy().astype(np.int64),
            "customer_id": table["customer_id"].to_numpy().astype(np.int64),
            "terminal_id": table["terminal_id"].to_numpy().astype(np.int64),
            "tx_amount": table["tx_amount"].to_numpy().astype(np.float64),
            "tx_fraud": table["tx_fraud"].to_numpy().astype(np.int64),
        }
        return cls(EntityRows(cols["customer_id"], cols), EntityRows(cols["terminal_id"], cols),
                   version, first_day, last_day, loaded)

    @classmethod
    def empty(cls, version: int | None = None, loaded: bool = False) -> HistorySnapshot:
        return cls.from_arrow(LANDING_SCHEMA.empty_table(), version, None, None, loaded=loaded)

    @property
    def rows(self) -> int:
        return len(self.customers)


def load_history(raw_uri: str, label_delay_days: int, cutoff: str | None = None,
                 storage_options: dict | None = None) -> HistorySnapshot:
    """The newest day of the raw table (up to ``cutoff``) and the :func:`reach_days` before.

    A missing table gives an empty, not-loaded snapshot (features then count nothing, as
    batch would for unseen entities, and /readyz says the feature state is not loaded).
    """
    try:
        version = lake.table_version(raw_uri, storage_options)
        if version is None:
            return HistorySnapshot.empty()
        days = [d for d in lake.partition_values(raw_uri, storage_options)
                if cutoff is None or d <= cutoff]
    except (TableNotFoundError, FileNotFoundError):
        return HistorySnapshot.empty()
    if not days:
        return HistorySnapshot.empty(version, loaded=True)
    last = days[-1]
    first = lake.shift_day(last, -reach_days(label_delay_days))
    wanted = [d for d in days if d >= first]
    table = lake.read_days(raw_uri, wanted, RAW_COLUMNS, version, storage_options)
    return HistorySnapshot.from_arrow(table, version, wanted[0], last)

