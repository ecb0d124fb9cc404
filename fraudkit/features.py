"""The single definition of the model's features, used by batch (Dask) and online (BentoML).

Semantics (docs/contracts.md, "Feature semantics"): order transactions by ``(tx_datetime,
transaction_id)``. For a transaction at time ``t``:

* ``tx_during_weekend``: Saturday or Sunday (UTC); ``tx_during_night``: hour <= 6 (UTC).
* customer windows ``w`` in {1, 7, 30} days: count and mean amount of the customer's
  transactions in ``(t - w, t]`` that are ordered at or before this one (itself included).
* terminal windows with delay ``d``: count of the terminal's transactions in
  ``(t - d - w, t - d]`` and risk = frauds / count (0 when the count is 0).

How it is computed, once for both paths: rows are put in the total order above (one
sort), so every time bound becomes a position with one ``searchsorted`` on the sorted times
and every window a contiguous range inside one entity's rows. Rows are keyed
``entity_code * n + position``; a stable radix sort by entity and one ``searchsorted`` per
window bound give exact counts, and segmented prefix sums give the sums. Large frames are
split by entity (a window never leaves its entity) so each pass stays cache-sized and time
grows linearly with the rows. Everything is vectorized numpy, with a fixed number of calls
per frame: the batch path runs it on millions of rows per Dask task, and the online path,
which calls the very same function on one request plus the recent history of its customer
and terminal (see :mod:`fraudkit.online`), pays a few hundred microseconds.
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


@dataclass(frozen=True)
class FeatureSpec:
    """One model feature: the single declaration from which the feature names and their
    order (the model's input), the integer columns (exact int64 in the Delta tables and the
    decision log), the Arrow schemas and the API's documented response are derived."""

    name: str
    #: A count or a 0/1 flag: stored as int64, so the two paths compare it exactly.
    integer: bool
    description: str


def _feature_specs() -> tuple[FeatureSpec, ...]:
    specs = [
        FeatureSpec("tx_amount", False, "The transaction's amount."),
        FeatureSpec("tx_during_weekend", True, "1 on a Saturday or Sunday (UTC), else 0."),
        FeatureSpec("tx_during_night", True,
                    f"1 when the hour is {NIGHT_LAST_HOUR} or earlier (UTC), else 0."),
    ]
    for days in CUSTOMER_WINDOWS_DAYS:
        specs += [
            FeatureSpec(f"customer_nb_tx_{days}d", True,
                        f"The customer's transactions in the {days} day(s) up to this one, "
                        "itself included."),
            FeatureSpec(f"customer_avg_amount_{days}d", False,
                        f"Their mean amount (the {days}-day window of customer_nb_tx)."),
        ]
    for days in TERMINAL_WINDOWS_DAYS:
        specs += [
            FeatureSpec(f"terminal_nb_tx_{days}d", True,
                        f"The terminal's transactions in the {days} day(s) ending one label "
                        "delay before this one."),
            FeatureSpec(f"terminal_risk_{days}d", False,
                        "The share of those that were fraud (0 when there were none)."),
        ]
    return tuple(specs)


#: Every model feature, in the model's input order (see :class:`FeatureSpec`).
FEATURES: tuple[FeatureSpec, ...] = _feature_specs()
FEATURE_COLUMNS: tuple[str, ...] = tuple(f.name for f in FEATURES)
COUNT_COLUMNS: frozenset[str] = frozenset(f.name for f in FEATURES if f.integer)


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


def _stable_argsort_ids(values: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative int64 ``values``.

    Large inputs use least-significant-digit radix passes over 16-bit digits (numpy
    radix-sorts 16-bit integers in O(n)), as many as the largest value needs; small ones a
    single timsort call, which is cheaper than several passes.
    """
    top = int(values.max()) if len(values) else 0
    if top < 1 << 16:
        return np.argsort(values.astype(np.uint16), kind="stable")
    if len(values) < 1 << 16:
        return np.argsort(values, kind="stable")
    order = np.arange(len(values), dtype=np.int64)
    shift = 0
    while top >> shift:
        digit = ((values[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
    return order


def _entity_codes(entity: np.ndarray, n: int) -> np.ndarray:
    """Non-negative codes of the entities such that ``code * n + position`` fits in int64:
    the ids minus the smallest one when their range allows (no hashing), else dense ranks."""
    low = int(entity.min())
    if (int(entity.max()) - low + 1) * max(n, 1) < 2**62:
        return entity - low
    return np.unique(entity, return_inverse=True)[1].astype(np.int64)


def _segmented_scan(values: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Inclusive prefix sums that restart where ``rank`` (position within the segment)
    is 0, by doubling steps (Hillis-Steele).

    Each result is a fixed-order sum of its segment's values from the segment start: it
    depends on nothing outside the segment, so any frame holding the segment gives the same
    bits. About log2(longest segment) vectorized steps, whatever the number of segments.
    """
    out = values.astype(np.float64, copy=True)
    longest = int(rank.max()) + 1 if len(rank) else 0
    step = 1
    while step < longest:
        out[step:] += np.where(rank[step:] >= step, out[:-step], 0.0)  # RHS is a copy
        step *= 2
    return out


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

    def __init__(self, values: np.ndarray, codes: np.ndarray, times: np.ndarray) -> None:
        n = len(values)
        block = np.floor_divide(times, SUM_BLOCK_US)
        new_group = np.empty(n, dtype=bool)
        new_group[:1] = True
        new_group[1:] = (codes[1:] != codes[:-1]) | (block[1:] != block[:-1])
        self.group = np.cumsum(new_group) - 1
        starts = np.flatnonzero(new_group)
        ends = np.append(starts[1:], n) - 1
        index = np.arange(n)
        self.values = values
        self.prefix = _segmented_scan(values, index - starts[self.group])
        self.suffix = _segmented_scan(values[::-1], (ends[self.group] - index)[::-1])[::-1]

    def sum(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Sum over ``[lo, hi)``; 0 where the range is empty."""
        has = hi > lo
        first = np.where(has, lo, 0)
        last = np.where(has, hi - 1, 0)
        same = self.group[first] == self.group[last]
        inside = self.prefix[last] - (self.prefix[first] - self.values[first])
        across = self.suffix[first] + self.prefix[last]
        return np.where(has, np.where(same, inside, across), 0.0)


@dataclass(frozen=True)
class _SeqFrame:
    """One entity kind's view of a frame, rows in ``(tx_datetime, transaction_id)`` order:
    ``time`` ascends, position = rank in the total order."""

    time: np.ndarray
    entity: np.ndarray
    values: np.ndarray  # amounts (customers) or labels (terminals)
    queried: np.ndarray  # bool

    def take(self, rows: np.ndarray) -> _SeqFrame:
        return _SeqFrame(self.time[rows], self.entity[rows], self.values[rows],
                         self.queried[rows])


def _window_index(frame: _SeqFrame, bounds: list[np.ndarray]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows by (entity, position) and, for every queried row and every time bound, the
    index in that order of the first row of the query's entity after the bound.

    ``bounds`` hold one time per queried row (queried rows in position order, so each
    array ascends). Returns ``(row_order, codes_by_row_order, query_perm, starts)`` where
    ``starts`` is ``[len(bounds), n_queries]``, queries in the order ``query_perm`` (by
    entity, then position): rows of the entity before ``starts`` have a time <= the bound.
    """
    n = len(frame.time)
    codes = _entity_codes(frame.entity, n)
    row_order = _stable_argsort_ids(codes)  # positions already ascend within an entity
    sorted_codes = codes[row_order]
    keys = sorted_codes * n + row_order
    queries = np.flatnonzero(frame.queried)
    perm = _stable_argsort_ids(codes[queries])
    # Position bound of each time bound: the number of rows at or before it.
    first_after = np.searchsorted(frame.time, np.concatenate(bounds), side="right")
    first_after = first_after.reshape(len(bounds), -1)[:, perm]
    base = codes[queries[perm]] * n
    starts = np.searchsorted(keys, (base + first_after).ravel(), side="left")
    return row_order, sorted_codes, perm, starts.reshape(len(bounds), -1)


def _customer_windows(frame: _SeqFrame, label_delay_days: int) -> dict[str, np.ndarray]:
    """Counts and mean amounts of the customer windows of the queried rows, in position
    order. The window of a row at ``t`` holds its customer's rows after ``t - w`` up to the
    row itself (position order breaks ties at ``t``)."""
    queries = np.flatnonzero(frame.queried)
    t = frame.time[queries]
    row_order, codes, perm, lo = _window_index(
        frame, [t - w * US_PER_DAY for w in CUSTOMER_WINDOWS_DAYS])
    # The row itself sits right before its "hi": its index in row_order, plus one.
    at = np.empty(len(row_order), dtype=np.int64)
    at[row_order] = np.arange(len(row_order))
    hi = np.broadcast_to(at[queries[perm]] + 1, lo.shape)
    sums = _WindowSums(frame.values[row_order], codes, frame.time[row_order])
    count = hi - lo
    mean = np.where(count > 0, sums.sum(lo.ravel(), hi.ravel()).reshape(lo.shape)
                    / np.maximum(count, 1), 0.0)
    out: dict[str, np.ndarray] = {}
    for k, w in enumerate(CUSTOMER_WINDOWS_DAYS):
        out[f"customer_nb_tx_{w}d"] = _unpermute(count[k], perm)
        out[f"customer_avg_amount_{w}d"] = _unpermute(mean[k], perm)
    return out


def _terminal_windows(frame: _SeqFrame, label_delay_days: int) -> dict[str, np.ndarray]:
    """Counts and fraud rates of the terminal windows ``(t - d - w, t - d]`` of the queried
    rows, in position order."""
    end = frame.time[frame.queried] - label_delay_days * US_PER_DAY
    bounds = [end, *(end - w * US_PER_DAY for w in TERMINAL_WINDOWS_DAYS)]
    row_order, _, perm, starts = _window_index(frame, bounds)
    frauds = np.concatenate(([0], np.cumsum(frame.values[row_order], dtype=np.int64)))
    hi, lo = starts[0], starts[1:]
    count = hi - lo
    risk = np.where(count > 0, (frauds[hi] - frauds[lo]) / np.maximum(count, 1), 0.0)
    out: dict[str, np.ndarray] = {}
    for k, w in enumerate(TERMINAL_WINDOWS_DAYS):
        out[f"terminal_nb_tx_{w}d"] = _unpermute(count[k], perm)
        out[f"terminal_risk_{w}d"] = _unpermute(risk[k], perm)
    return out


def _unpermute(values: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Values given in the order ``perm`` back in the original order."""
    out = np.empty(len(perm), dtype=values.dtype)
    out[perm] = values
    return out


#: Above this many rows, an entity kind's windows are computed per partition of its
#: entities (``id % parts``): every window stays inside one entity, so the result is the
#: same, and the arrays of each pass stay small enough for the CPU caches. Time then grows
#: linearly with the rows instead of n log n with cache misses on top.
PARTITION_ROWS = 1 << 18


def _by_entity_partition(fn, frame: _SeqFrame, label_delay_days: int
                         ) -> dict[str, np.ndarray]:
    """``fn(frame, delay)`` over partitions of the entities, merged in position order."""
    parts = -(-len(frame.time) // PARTITION_ROWS)
    if parts <= 1:
        return fn(frame, label_delay_days)
    part = ((frame.entity - frame.entity.min()) % parts).astype(np.uint16)
    rows = np.argsort(part, kind="stable")  # radix: grouped by partition, order kept
    bounds = np.concatenate(([0], np.cumsum(np.bincount(part, minlength=parts))))
    rank = np.cumsum(frame.queried) - 1  # position -> index among the queried rows
    merged: dict[str, np.ndarray] = {}
    for p in range(parts):
        sub = rows[bounds[p]:bounds[p + 1]]
        piece = frame.take(sub)
        if not piece.queried.any():
            continue
        where = rank[sub[piece.queried]]
        for name, values in fn(piece, label_delay_days).items():
            if name not in merged:
                merged[name] = np.empty(int(rank[-1]) + 1, dtype=values.dtype)
            merged[name][where] = values
    return merged


def compute_features(
    tx: Transactions, label_delay_days: int, query: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Features of the rows ``query`` (distinct indices into ``tx``; default all), by name,
    in the order of ``query``.

    ``tx`` must hold every transaction the windows of the queried rows can see: for a
    transaction at ``t``, its customer's rows in ``(t - 30d, t]`` and its terminal's rows in
    ``(t - d - 30d, t - d]``. Rows outside do no harm; duplicates of a transaction_id do.
    Rows that are not queried cost an index entry each but no window lookups, so a frame of
    look-back plus a few queried days costs little more than its queried rows.
    """
    n = len(tx)
    q = np.arange(n, dtype=np.int64) if query is None else np.asarray(query, dtype=np.int64)
    if n == 0 or len(q) == 0:
        return {c: np.zeros(len(q)) for c in FEATURE_COLUMNS}
    queried = np.zeros(n, dtype=bool)
    queried[q] = True
    if int(np.count_nonzero(queried)) != len(q):
        raise ValueError("compute_features: query holds repeated row indices")

    by_seq = np.lexsort((tx.transaction_id, tx.tx_time_us))  # the one total order
    time = tx.tx_time_us[by_seq]
    queried_seq = queried[by_seq]
    windows = {
        **_by_entity_partition(
            _customer_windows,
            _SeqFrame(time, tx.customer_id[by_seq], tx.tx_amount[by_seq], queried_seq),
            label_delay_days),
        **_by_entity_partition(
            _terminal_windows,
            _SeqFrame(time, tx.terminal_id[by_seq], tx.tx_fraud[by_seq], queried_seq),
            label_delay_days),
    }
    # Window results follow the total order of the queried rows; return them in the
    # order of ``query``.
    rank = np.empty(n, dtype=np.int64)
    rank[by_seq[queried_seq]] = np.arange(len(q))
    take = rank[q]
    out: dict[str, np.ndarray] = {"tx_amount": tx.tx_amount[q]}
    out["tx_during_weekend"], out["tx_during_night"] = calendar_flags(tx.tx_time_us[q])
    for name, values in windows.items():
        out[name] = values[take]
    return {name: out[name] for name in FEATURE_COLUMNS}


def features_frame(frame: pd.DataFrame, label_delay_days: int,
                   rows: np.ndarray | None = None) -> pd.DataFrame:
    """Batch entry point: one row of features per row of a raw-contract frame, or per row
    of ``frame.iloc[rows]`` when ``rows`` is given (the rest is look-back history).

    The result has ``transaction_id``, ``tx_datetime``, the features in model order, and
    ``day`` when the input has it. Rows keep the input's (or ``rows``') order.
    """
    feats = compute_features(Transactions.from_frame(frame), label_delay_days, rows)
    picked = frame if rows is None else frame.iloc[rows]
    result = picked[["transaction_id", "tx_datetime"]].reset_index(drop=True)
    for name in FEATURE_COLUMNS:
        result[name] = feats[name].astype(np.int64 if name in COUNT_COLUMNS else np.float64)
    if "day" in frame:
        result["day"] = picked["day"].to_numpy()
    return result


def feature_matrix(frame: pd.DataFrame | dict[str, np.ndarray]) -> np.ndarray:
    """The model input: float32 ``[N, F]`` in :data:`FEATURE_COLUMNS` order."""
    return np.column_stack([np.asarray(frame[c], dtype=np.float32) for c in FEATURE_COLUMNS])
