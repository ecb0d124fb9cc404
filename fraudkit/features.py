"""The single definition of the model's features, used by batch (Dask) and online (BentoML).

Semantics (DESIGN.md, "Feature semantics"): order transactions by ``(tx_datetime,
transaction_id)``. For a transaction at time ``t``:

* ``tx_during_weekend``: Saturday or Sunday (UTC); ``tx_during_night``: hour <= 6 (UTC).
* customer windows ``w`` in {1, 7, 30} days: count and mean amount of the customer's
  transactions in ``(t - w, t]`` that are ordered at or before this one (itself included).
* terminal windows with delay ``d``: count of the terminal's transactions in
  ``(t - d - w, t - d]`` and risk = frauds / count (0 when the count is 0).

How it is computed, once for both paths: every transaction gets its rank ``seq`` in the
total order above. A time bound maps to a ``seq`` bound with one ``searchsorted`` on the
sorted times, so every window becomes a contiguous ``seq`` range inside one entity's rows.
Rows are keyed ``entity_code * n + seq``; one sort of those keys and two ``searchsorted``
calls per window give exact counts, and segmented prefix sums give the sums. Everything is
vectorized numpy: O(n log n) for a batch of millions of rows, and a few microseconds for
the online path, which calls the very same function on one request plus the recent history
of its customer and terminal (see :mod:`fraudkit.online`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CUSTOMER_WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)
TERMINAL_WINDOWS_DAYS: tuple[int, ...] = (1, 7, 30)
US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
NIGHT_LAST_HOUR = 6  # 00:00 to 06:59:59 UTC counts as night
#: Block length of the window sums (see ``_WindowSums``): the longest customer window.
SUM_BLOCK_US = max(CUSTOMER_WINDOWS_DAYS) * US_PER_DAY

FEATURE_COLUMNS: tuple[str, ...] = (
    "tx_amount",
    "tx_during_weekend",
    "tx_during_night",
    "customer_nb_tx_1d",
    "customer_avg_amount_1d",
    "customer_nb_tx_7d",
    "customer_avg_amount_7d",
    "customer_nb_tx_30d",
    "customer_avg_amount_30d",
    "terminal_nb_tx_1d",
    "terminal_risk_1d",
    "terminal_nb_tx_7d",
    "terminal_risk_7d",
    "terminal_nb_tx_30d",
    "terminal_risk_30d",
)
COUNT_COLUMNS: frozenset[str] = frozenset(
    c for c in FEATURE_COLUMNS if "_nb_tx_" in c or c.startswith("tx_during")
)


def lookback_days(label_delay_days: int) -> int:
    """Days of history a day's features need before it (37 with the default delay of 7)."""
    return max(max(CUSTOMER_WINDOWS_DAYS), label_delay_days + max(TERMINAL_WINDOWS_DAYS))


@dataclass(frozen=True)
class Transactions:
    """Column arrays of a set of transactions; times are microseconds since the epoch (UTC).

    ``tx_fraud`` may be unknown (not yet matured); give 0 there: labels are only read in
    the terminal windows, which end ``label_delay_days`` before each transaction.
    """

    transaction_id: np.ndarray
    tx_time_us: np.ndarray
    customer_id: np.ndarray
    terminal_id: np.ndarray
    tx_amount: np.ndarray
    tx_fraud: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Transactions:
        times = frame["tx_datetime"]
        if isinstance(times.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(times):
            time_us = times.astype("datetime64[us, UTC]").array.asi8
        else:
            time_us = np.asarray(times, dtype="int64")
        fraud = frame["tx_fraud"] if "tx_fraud" in frame else np.zeros(len(frame))
        return cls(
            transaction_id=np.asarray(frame["transaction_id"], dtype=np.int64),
            tx_time_us=np.asarray(time_us, dtype=np.int64),
            customer_id=np.asarray(frame["customer_id"], dtype=np.int64),
            terminal_id=np.asarray(frame["terminal_id"], dtype=np.int64),
            tx_amount=np.asarray(frame["tx_amount"], dtype=np.float64),
            tx_fraud=np.asarray(fraud, dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.transaction_id)


def calendar_flags(time_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weekend, night) as int8 arrays. 1970-01-01 was a Thursday (weekday 3)."""
    days = np.floor_divide(time_us, US_PER_DAY)
    weekday = (days + 3) % 7
    hour = np.floor_divide(time_us - days * US_PER_DAY, US_PER_HOUR)
    return (weekday >= 5).astype(np.int8), (hour <= NIGHT_LAST_HOUR).astype(np.int8)


class _EntityIndex:
    """Rows of one entity kind (customers or terminals) sorted by ``(entity, seq)``.

    Lookups sort their needles first: numpy's ``searchsorted`` walks sorted needles in
    one cache-friendly pass, several times faster than needles in random order.
    """

    def __init__(self, entity: np.ndarray, seq: np.ndarray, query: np.ndarray | None) -> None:
        codes, _ = pd.factorize(entity, sort=False)
        self.n = len(seq)
        self.row_codes = codes.astype(np.int64)
        keys = self.row_codes * self.n + seq
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        if query is None:
            self.q_codes = self.row_codes
            self.q_order = self.order
        else:
            self.q_codes = self.row_codes[query]
            self.q_order = np.argsort(self.q_codes * self.n + seq[query], kind="stable")

    def positions(self, seq_bound: np.ndarray, side: str) -> np.ndarray:
        """Index in ``keys`` of ``(query's entity, seq_bound)`` for each queried row."""
        needles = (self.q_codes * self.n + seq_bound)[self.q_order]
        out = np.empty(len(needles), dtype=np.int64)
        out[self.q_order] = np.searchsorted(self.keys, needles, side=side)
        return out

    def window_sums(self, values: np.ndarray, times: np.ndarray) -> _WindowSums:
        return _WindowSums(values[self.order], self.row_codes[self.order], times[self.order])


class _WindowSums:
    """Sums of ``values`` over ``[lo, hi)`` ranges of one entity's sorted rows, computed so
    that the result does not depend on how much history the frame holds.

    Time is cut into blocks of :data:`SUM_BLOCK_US` aligned to the epoch. Within each
    (entity, block), prefix sums run forward from the block's first row and suffix sums run
    backward from its last row. A window of at most one block length spans at most two
    blocks: its sum is ``suffix(first row)`` in the older block plus ``prefix(last row)`` in
    the newer one, or a prefix difference inside one block. The block holding ``t`` always
    lies inside the window's look-back, so every frame that can answer a query (a Dask chunk
    with its look-back, a re-run over another range, the online store's month of history)
    adds the same numbers in the same order: the means are bit-for-bit identical.
    """

    def __init__(self, ordered: np.ndarray, codes: np.ndarray, times: np.ndarray) -> None:
        block = np.floor_divide(times, SUM_BLOCK_US)
        new_group = np.empty(len(ordered), dtype=bool)
        new_group[:1] = True
        new_group[1:] = (codes[1:] != codes[:-1]) | (block[1:] != block[:-1])
        self.group = np.cumsum(new_group)
        self.values = ordered
        series = pd.Series(ordered)
        self.prefix = series.groupby(self.group, sort=False).cumsum().to_numpy()
        self.suffix = series[::-1].groupby(self.group[::-1], sort=False).cumsum().to_numpy()[::-1]

    def sum(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Sum over ``[lo, hi)``; 0 where the range is empty."""
        has = hi > lo
        first = np.where(has, lo, 0)
        last = np.where(has, hi - 1, 0)
        same = self.group[first] == self.group[last]
        inside = self.prefix[last] - (self.prefix[first] - self.values[first])
        across = self.suffix[first] + self.prefix[last]
        return np.where(has, np.where(same, inside, across), 0.0)


def _seq_bound(sorted_times: np.ndarray, bound: np.ndarray, by_seq: np.ndarray) -> np.ndarray:
    """Number of transactions with time <= bound, i.e. the first seq with time > bound."""
    out = np.empty(len(bound), dtype=np.int64)
    out[by_seq] = np.searchsorted(sorted_times, bound[by_seq], side="right")
    return out


def compute_features(
    tx: Transactions, label_delay_days: int, query: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Features of the rows ``query`` (indices into ``tx``; default all), by name.

    ``tx`` must hold every transaction the windows of the queried rows can see: for a
    transaction at ``t``, its customer's rows in ``(t - 30d, t]`` and its terminal's rows in
    ``(t - d - 30d, t - d]``. Rows outside do no harm; duplicates of a transaction_id do.
    """
    n = len(tx)
    if n == 0:
        return {c: np.zeros(0) for c in FEATURE_COLUMNS}
    q = None if query is None else np.asarray(query, dtype=np.int64)
    out: dict[str, np.ndarray] = {}

    order = np.lexsort((tx.transaction_id, tx.tx_time_us))
    seq = np.empty(n, dtype=np.int64)
    seq[order] = np.arange(n, dtype=np.int64)
    sorted_times = tx.tx_time_us[order]
    t_q = tx.tx_time_us if q is None else tx.tx_time_us[q]
    seq_q = seq if q is None else seq[q]
    by_seq = order if q is None else np.argsort(seq_q, kind="stable")

    out["tx_amount"] = tx.tx_amount if q is None else tx.tx_amount[q]
    out["tx_during_weekend"], out["tx_during_night"] = calendar_flags(t_q)

    customers = _EntityIndex(tx.customer_id, seq, q)
    sums = customers.window_sums(tx.tx_amount, tx.tx_time_us)
    hi = customers.positions(seq_q, "right")  # rows ordered at or before this one
    for w in CUSTOMER_WINDOWS_DAYS:
        lo = customers.positions(_seq_bound(sorted_times, t_q - w * US_PER_DAY, by_seq), "left")
        count = hi - lo
        out[f"customer_nb_tx_{w}d"] = count
        out[f"customer_avg_amount_{w}d"] = np.where(
            count > 0, sums.sum(lo, hi) / np.maximum(count, 1), 0.0
        )

    terminals = _EntityIndex(tx.terminal_id, seq, q)
    frauds = np.concatenate(([0], np.cumsum(tx.tx_fraud[terminals.order], dtype=np.int64)))
    end_time = t_q - label_delay_days * US_PER_DAY
    hi = terminals.positions(_seq_bound(sorted_times, end_time, by_seq), "left")
    for w in TERMINAL_WINDOWS_DAYS:
        seq_lo = _seq_bound(sorted_times, end_time - w * US_PER_DAY, by_seq)
        lo = terminals.positions(seq_lo, "left")
        count = hi - lo
        out[f"terminal_nb_tx_{w}d"] = count
        out[f"terminal_risk_{w}d"] = np.where(
            count > 0, (frauds[hi] - frauds[lo]) / np.maximum(count, 1), 0.0
        )
    return out


def features_frame(frame: pd.DataFrame, label_delay_days: int) -> pd.DataFrame:
    """Batch entry point: one row of features per row of a raw-contract frame.

    The result has ``transaction_id``, ``tx_datetime``, the features in model order, and
    ``day`` when the input has it. Rows keep the input's order.
    """
    feats = compute_features(Transactions.from_frame(frame), label_delay_days)
    result = frame[["transaction_id", "tx_datetime"]].reset_index(drop=True)
    for name in FEATURE_COLUMNS:
        result[name] = feats[name].astype(np.int64 if name in COUNT_COLUMNS else np.float64)
    if "day" in frame:
        result["day"] = frame["day"].to_numpy()
    return result


def feature_matrix(frame: pd.DataFrame | dict[str, np.ndarray]) -> np.ndarray:
    """The model input: float32 ``[N, F]`` in :data:`FEATURE_COLUMNS` order."""
    return np.column_stack([np.asarray(frame[c], dtype=np.float32) for c in FEATURE_COLUMNS])
