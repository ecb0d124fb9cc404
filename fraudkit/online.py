"""The online path's state: feature history, the champion model, the latest batch predictions.

Plain Python (no BentoML, no Dagster), so it can be tested and benchmarked on its own;
``bento/service.py`` only wires it to HTTP.

Features are computed by :func:`fraudkit.features.compute_features`, the one definition the
batch path uses too. For a request the store builds a small :class:`Transactions` frame:

* the request itself (its row wins for its ``transaction_id``),
* the customer's stored rows in ``(t - 30d, t]`` and the terminal's stored (labelled) rows
  in ``(t - d - 30d, t - d]``, from the last days of the Delta ``raw_transactions`` table,
* the requests scored since the service started (the *stream*), so customer windows see
  the transactions the service was asked about, not only those ingested in batch,

de-duplicated by ``transaction_id`` (request, then stored row, then stream row), and asks for
the features of the request rows. The windows only count rows ordered at or before the
request by ``(tx_datetime, transaction_id)``, so rows "from the future" are harmless: a
replay of days that the store already holds gives the same numbers as a replay past it.

The history is held as CSR arrays (rows sorted by entity then time, with an ``indptr`` per
entity): a lookup is two binary searches and a slice. A background thread
(:meth:`OnlineScorer.start`) reloads it when the raw table gets a new Delta version and
swaps it in one assignment, watches ``champion.json`` for promotions and rollbacks, and
keeps the index of the latest batch prediction per customer fresh.

Scale-out note: the stream lives in the process. With several workers or replicas, route
requests by ``customer_id`` (consistent hashing) so each customer's stream stays in one
place; the service therefore runs one worker per replica.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake.exceptions import TableNotFoundError

from fraudkit import lake
from fraudkit.config import Settings
from fraudkit.features import (
    COUNT_COLUMNS,
    CUSTOMER_WINDOWS_DAYS,
    FEATURE_COLUMNS,
    TERMINAL_WINDOWS_DAYS,
    US_PER_DAY,
    Transactions,
    compute_features,
    feature_matrix,
    lookback_days,
)
from fraudkit.model import OnnxModel, Thresholds, decide
from fraudkit.registry import MANIFEST_FILE, MODEL_FILE, ModelRegistry, ModelVersion

log = logging.getLogger("fraudkit.online")

#: Extra days of raw history loaded beyond the windows' look-back (DST-free, but cheap
#: insurance against requests slightly older than the newest stored day).
MARGIN_DAYS = 2
CUSTOMER_SPAN_US = max(CUSTOMER_WINDOWS_DAYS) * US_PER_DAY
TERMINAL_SPAN_US = max(TERMINAL_WINDOWS_DAYS) * US_PER_DAY
RAW_COLUMNS = ["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount",
               "tx_fraud"]
INT64_MAX = np.iinfo(np.int64).max
_EMPTY_RAW = pa.schema([("transaction_id", pa.int64()),
                        ("tx_datetime", pa.timestamp("us", tz="UTC")),
                        ("customer_id", pa.int64()), ("terminal_id", pa.int64()),
                        ("tx_amount", pa.float64()), ("tx_fraud", pa.int8())])

#: Rule-based decisions used when no model can score (documented in the README):
#: decline amounts above the simulator's "large amount" scenario, review transactions at a
#: terminal with recent confirmed fraud or far above the customer's usual amount.
FALLBACK_VERSION = "fallback-rules"
FALLBACK_DECLINE_AMOUNT = 220.0
FALLBACK_REVIEW_TERMINAL_RISK_7D = 0.1
FALLBACK_REVIEW_AMOUNT_FACTOR = 3.0


@dataclass(frozen=True)
class Requests:
    """Column arrays of request transactions (the raw contract without the label)."""

    transaction_id: np.ndarray
    tx_time_us: np.ndarray
    customer_id: np.ndarray
    terminal_id: np.ndarray
    tx_amount: np.ndarray

    @classmethod
    def from_rows(cls, rows: list[tuple[int, int, int, int, float]]) -> Requests:
        """From ``(transaction_id, tx_time_us, customer_id, terminal_id, tx_amount)``."""
        ints = np.array([r[:4] for r in rows], dtype=np.int64).reshape(-1, 4)
        return cls(ints[:, 0], ints[:, 1], ints[:, 2], ints[:, 3],
                   np.array([r[4] for r in rows], dtype=np.float64))

    def __len__(self) -> int:
        return len(self.transaction_id)


#: How far a request's ``tx_datetime`` may run ahead of the service's clock. A transaction
#: cannot happen in the future; one dated days ahead (a terminal with a wrong clock, a typo)
#: would also move the stream's day forward and evict every recent request from it.
MAX_CLOCK_SKEW = dt.timedelta(days=1)


def check_not_future(value: dt.datetime, now: dt.datetime | None = None) -> dt.datetime:
    """``value`` unchanged, or a ``ValueError`` that says it lies after the clock's skew."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    if aware - now > MAX_CLOCK_SKEW:
        raise ValueError(f"{aware.isoformat()} is more than {MAX_CLOCK_SKEW.days} day after "
                         f"the service's clock ({now.isoformat(timespec='seconds')}); a "
                         "transaction cannot be in the future: check the sender's clock")
    return value


def to_time_us(value: dt.datetime) -> int:
    """Microseconds since the epoch, exactly (naive datetimes are taken as UTC, like ingest)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


# -- history ---------------------------------------------------------------------------------
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
        return cls.from_arrow(_EMPTY_RAW.empty_table(), version, None, None, loaded=loaded)

    @property
    def rows(self) -> int:
        return len(self.customers)


def load_history(raw_uri: str, label_delay_days: int, cutoff: str | None = None,
                 storage_options: dict | None = None) -> HistorySnapshot:
    """The last ``lookback_days(d) + MARGIN_DAYS`` days of the raw table (up to ``cutoff``).

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
    first = lake.shift_day(last, -(lookback_days(label_delay_days) + MARGIN_DAYS))
    wanted = [d for d in days if d >= first]
    table = lake.read_days(raw_uri, wanted, RAW_COLUMNS, version, storage_options)
    return HistorySnapshot.from_arrow(table, version, wanted[0], last)


StreamRow = tuple[int, int, int, int, float]  # id, time_us, customer, terminal, amount


class StreamLog:
    """Requests scored by this process, by customer and by terminal (label unknown = 0).

    Rows live in one bucket per UTC day of their ``tx_datetime``; inside a bucket they are
    keyed by ``transaction_id`` per entity, so a retried request replaces its earlier copy
    instead of counting twice. When a new day starts, buckets older than the retention (the
    longest look-back, ``d + 30`` days, plus a margin) are dropped whole: memory stays
    bounded and no request ever waits for a sweep over the whole log. "New day" follows the
    requests, so callers must refuse future-dated ones (:func:`check_not_future`, which the
    service's request model applies) or one such row would evict every recent bucket.
    """

    def __init__(self, retention_days: int) -> None:
        self.retention_days = retention_days
        #: day -> (customer -> {id: row}, terminal -> {id: row})
        self.buckets: dict[int, tuple[dict[int, dict[int, StreamRow]],
                                      dict[int, dict[int, StreamRow]]]] = {}
        self.newest_day: int | None = None

    @property
    def size(self) -> int:
        return sum(len(rows) for by_customer, _ in self.buckets.values()
                   for rows in by_customer.values())

    def append(self, req: Requests) -> None:
        rows = zip(req.transaction_id.tolist(), req.tx_time_us.tolist(),
                   req.customer_id.tolist(), req.terminal_id.tolist(),
                   req.tx_amount.tolist(), strict=True)
        for row in rows:
            day = row[1] // US_PER_DAY
            bucket = self.buckets.get(day)
            if bucket is None:
                if self.newest_day is not None and day < self.newest_day - self.retention_days:
                    continue  # older than any window of the newest requests can see
                bucket = self.buckets[day] = ({}, {})
                if self.newest_day is None or day > self.newest_day:
                    self.newest_day = day
                    horizon = day - self.retention_days
                    for old in [d for d in self.buckets if d < horizon]:
                        del self.buckets[old]
            bucket[0].setdefault(row[2], {})[row[0]] = row
            bucket[1].setdefault(row[3], {})[row[0]] = row

    def rows_for(self, customers: np.ndarray, terminals: np.ndarray) -> list[StreamRow]:
        """Every stored row of these customers and terminals (a row may come twice)."""
        out: list[StreamRow] = []
        customers, terminals = customers.tolist(), terminals.tolist()
        for by_customer, by_terminal in self.buckets.values():
            for c in customers:
                rows = by_customer.get(c)
                if rows:
                    out.extend(rows.values())
            for t in terminals:
                rows = by_terminal.get(t)
                if rows:
                    out.extend(rows.values())
        return out


def _bounds(keys: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct keys with the min and max request time of each."""
    if len(keys) == 1:
        return keys, times, times
    uniq, inverse = np.unique(keys, return_inverse=True)
    lo = np.full(len(uniq), INT64_MAX, dtype=np.int64)
    hi = np.full(len(uniq), -INT64_MAX, dtype=np.int64)
    np.minimum.at(lo, inverse, times)
    np.maximum.at(hi, inverse, times)
    return uniq, lo, hi


class OnlineFeatureStore:
    """Features of request transactions, equal to the batch features of the same stream."""

    def __init__(self, label_delay_days: int, snapshot: HistorySnapshot | None = None) -> None:
        self.label_delay_days = label_delay_days
        self.snapshot = snapshot or HistorySnapshot.empty()
        self.stream = StreamLog(lookback_days(label_delay_days) + MARGIN_DAYS)

    def swap(self, snapshot: HistorySnapshot) -> None:
        """Replace the history in one assignment; requests in flight keep the old one."""
        self.snapshot = snapshot

    def frame(self, req: Requests) -> Transactions:
        """The request rows (first, in order) plus every row their windows can see."""
        snap = self.snapshot
        delay_us = self.label_delay_days * US_PER_DAY
        customers, c_lo, c_hi = _bounds(req.customer_id, req.tx_time_us)
        terminals, t_lo, t_hi = _bounds(req.terminal_id, req.tx_time_us)
        c_idx = snap.customers.ranges(customers, c_lo - CUSTOMER_SPAN_US, c_hi)
        t_idx = snap.terminals.ranges(terminals, t_lo - delay_us - TERMINAL_SPAN_US,
                                      t_hi - delay_us)
        stream = self.stream.rows_for(customers, terminals)
        n_stream = len(stream)
        if n_stream:
            ints = np.array([r[:4] for r in stream], dtype=np.int64)
            s_amount = np.array([r[4] for r in stream], dtype=np.float64)
        else:
            ints = np.zeros((0, 4), dtype=np.int64)
            s_amount = np.zeros(0)
        cc, tc = snap.customers.cols, snap.terminals.cols

        def cat(name: str, request: np.ndarray, stream_col: np.ndarray) -> np.ndarray:
            return np.concatenate((request, cc[name][c_idx], tc[name][t_idx], stream_col))

        ids = cat("transaction_id", req.transaction_id, ints[:, 0])
        cols = {
            "transaction_id": ids,
            "tx_time_us": cat("tx_time_us", req.tx_time_us, ints[:, 1]),
            "customer_id": cat("customer_id", req.customer_id, ints[:, 2]),
            "terminal_id": cat("terminal_id", req.terminal_id, ints[:, 3]),
            "tx_amount": cat("tx_amount", req.tx_amount, s_amount),
            "tx_fraud": cat("tx_fraud", np.zeros(len(req), dtype=np.int64),
                            np.zeros(n_stream, dtype=np.int64)),
        }
        if len(ids) > len(req):
            _, first = np.unique(ids, return_index=True)
            if len(first) < len(ids):  # keep the first occurrence: request, stored, stream
                keep = np.sort(first)
                cols = {k: v[keep] for k, v in cols.items()}
        return Transactions(**cols)

    def features(self, req: Requests) -> dict[str, np.ndarray]:
        """Features of each request, by name (requests of one call see each other)."""
        frame = self.frame(req)
        return compute_features(frame, self.label_delay_days,
                                query=np.arange(len(req), dtype=np.int64))

    def record(self, req: Requests) -> None:
        """Remember scored requests so later windows of their customer include them."""
        self.stream.append(req)


# -- model -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedModel:
    model: OnnxModel
    version: str
    thresholds: Thresholds


class ChampionWatcher:
    """Serves the registry's champion and follows ``champion.json`` and the served file.

    Each poll costs a few ``stat`` calls (inode, mtime, size), so it can run every half
    second in the background thread:

    * ``champion.json``: the registry replaces it with ``os.replace``, so a promotion or a
      rollback always changes its stamp; only then is it read again.
    * While the version it names is not the one served (a failed load: its folder missing,
      copied in file by file, a sha256 mismatch, a bad ONNX), the load is retried at each
      poll in which that version's ``manifest.json`` or ``model.onnx`` stamp changed: a
      folder that arrives late is picked up without a restart, and a broken one is not
      re-hashed and re-logged twice a second. Meanwhile the previous model keeps serving
      and :attr:`serving_champion` is False (/readyz 503, /status says why).
    * While the champion is served, its ``model.onnx``: when the stamp changes (replaced,
      rewritten, touched) the file's sha256 is checked against the manifest again. A
      touched file matches and nothing changes. A file that no longer matches is reported
      in :attr:`last_error` (so /readyz fails and /status says it) while the model loaded
      and verified earlier keeps scoring from memory. Why that choice: the copy in memory is
      exactly the artifact the manifest describes and the batch path scored with; loading
      the changed file would serve an unverified model, and switching to the fallback rules
      would degrade every decision because of a file on disk. Failing readiness makes the
      damage visible (alerts, a rollout that waits) without changing any answer; a restart
      would refuse the file and fall back to the rules, so restore it (or promote a good
      version) first. Restoring the file's bytes clears the error.

    ``last_error`` is recomputed from the registry at every read, so a repaired registry
    (e.g. champion.json back to the served version) clears it. Error texts name paths
    relative to the registry root (``registry/versions/...``): /status shows them, and the
    registry's absolute location is none of a caller's business; the log has the full text.
    """

    def __init__(self, registry_dir: Path) -> None:
        self.registry = ModelRegistry(registry_dir)
        self.current: LoadedModel | None = None
        #: The version champion.json names (None when it is missing or unreadable).
        self.champion_version: str | None = None
        self.last_error: str | None = None
        self._stamp: tuple[int, int, int] | None | str = "unread"  # champion.json
        self._attempt: tuple[Any, ...] | None = None  # the files of the last failed load
        self._served: ModelVersion | None = None  # the registry entry of ``current``
        self._served_stamp: tuple[int, int, int] | None = None  # its model.onnx, verified
        self._served_error: str | None = None  # what the last check of that file found

    @staticmethod
    def _stat(path: Path) -> tuple[int, int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _error(self, message: str) -> str:
        """``message`` for /status: the registry root replaced by ``registry``; logged."""
        log.error("%s; serving %s", message,
                  self.current.version if self.current else FALLBACK_VERSION)
        return message.replace(str(self.registry.root), "registry")

    @property
    def serving_champion(self) -> bool:
        """True when the model in memory is the version champion.json names."""
        return self.current is not None and self.current.version == self.champion_version

    def poll(self) -> bool:
        """Follow the registry (see the class doc); True when a new model is live."""
        stamp = self._stat(self.registry.champion_file)
        if stamp != self._stamp:
            self._stamp = stamp
            self.champion_version = self._read_champion_version()
        if self.champion_version is None:
            return False
        if self.serving_champion:
            self._check_served_file()
            return False
        return self._load(self.champion_version)

    def _read_champion_version(self) -> str | None:
        """The version champion.json names, or None with ``last_error`` saying why."""
        try:
            state = self.registry.champion_state()
            if state is None:
                raise FileNotFoundError("the file is missing; promote a version")
            return str(state["version"])
        except Exception as exc:  # noqa: BLE001 - a damaged file keeps the current model
            self.last_error = self._error(
                f"cannot read {self.registry.champion_file}: {exc!r}; promote a version or "
                "roll back to rewrite it")
            return None

    def _load(self, version: str) -> bool:
        """Load ``version`` unless its files are unchanged since a failed try."""
        folder = self.registry.versions_dir / version
        model_stamp = self._stat(folder / MODEL_FILE)
        attempt = (self._stamp, self._stat(folder / MANIFEST_FILE), model_stamp)
        if attempt == self._attempt:
            return False
        self._attempt = attempt
        try:
            champion = self.registry.get(version)
            champion.verify()
            model = OnnxModel(champion.model_path, threads=1)
            model.predict(np.zeros((1, len(FEATURE_COLUMNS)), dtype=np.float32))  # warm up
        except Exception as exc:  # noqa: BLE001 - any failure keeps the current model
            self.last_error = self._error(
                f"cannot load the champion {version}: {exc}; retrying when its files change")
            return False
        self.current = LoadedModel(model, champion.version, champion.thresholds)
        self._served, self._served_stamp, self._served_error = champion, model_stamp, None
        self._attempt = None
        self.last_error = None
        log.info("serving model %s from %s", champion.version, champion.model_path)
        return True

    def _check_served_file(self) -> None:
        """Re-verify the served model.onnx when its stamp changed; set ``last_error``."""
        served = self._served
        assert served is not None  # set with ``current``
        stamp = self._stat(served.model_path)
        if stamp != self._served_stamp:
            self._served_stamp = stamp
            try:
                served.verify()
                self._served_error = None
            except Exception as exc:  # noqa: BLE001 - a missing file, a changed one
                self._served_error = self._error(
                    f"the served model's file changed on disk: {exc}; still scoring with the "
                    f"copy of {served.version} verified at load. Restore the file, or promote "
                    "a good version")
        self.last_error = self._served_error


def fallback_scores(feats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rule-based (score, decision) when no model can score: 1.0 decline, 0.5 review, 0."""
    amount = np.asarray(feats["tx_amount"], dtype=np.float64)
    decline = amount > FALLBACK_DECLINE_AMOUNT
    usual = np.asarray(feats["customer_avg_amount_30d"], dtype=np.float64)
    review = (np.asarray(feats["terminal_risk_7d"]) >= FALLBACK_REVIEW_TERMINAL_RISK_7D) | (
        (np.asarray(feats["customer_nb_tx_30d"]) >= 5)
        & (amount >= FALLBACK_REVIEW_AMOUNT_FACTOR * usual)
    )
    scores = np.where(decline, 1.0, np.where(review, 0.5, 0.0))
    decisions = np.where(decline, "decline", np.where(review, "review", "approve"))
    return scores, decisions.astype(object)


# -- batch predictions -----------------------------------------------------------------------
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
        from deltalake import DeltaTable

        columns = ["customer_id", "transaction_id", "tx_datetime", "score", "decision",
                   "model_version", "day"]
        table = (DeltaTable(uri, version=version, storage_options=storage_options)
                 .to_pyarrow_dataset().to_table(columns=columns))
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


# -- the scorer ------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnlineConfig:
    """Online settings from the environment (see the README's service section)."""

    settings: Settings
    registry_dir: Path
    cutoff: str | None = None
    champion_poll_s: float = 0.5
    table_poll_s: float = 10.0
    max_batch: int = 1000
    api_key: str | None = None

    @classmethod
    def from_env(cls) -> OnlineConfig:
        cutoff = os.environ.get("ONLINE_STORE_CUTOFF") or None
        if cutoff is not None:
            try:
                dt.date.fromisoformat(cutoff)
            except ValueError as exc:
                raise ValueError(f"ONLINE_STORE_CUTOFF={cutoff!r} is not a day; use "
                                 "YYYY-MM-DD (or unset it to load the newest days)") from exc
        settings = Settings.from_env()
        registry = os.environ.get("FRAUD_REGISTRY_DIR")
        return cls(
            settings=settings,
            registry_dir=Path(registry).resolve() if registry else settings.registry_dir,
            cutoff=cutoff,
            champion_poll_s=_env_number("ONLINE_CHAMPION_POLL_S", cls.champion_poll_s, float),
            table_poll_s=_env_number("ONLINE_TABLE_POLL_S", cls.table_poll_s, float),
            max_batch=_env_number("ONLINE_MAX_BATCH", cls.max_batch, int),
            api_key=os.environ.get("FRAUD_API_KEY") or None,
        )


def _env_number(name: str, default: float, kind: type) -> Any:
    """A positive number from the environment, with an error that names the variable."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not value > 0:
        raise ValueError(f"{name}={raw!r}: expected a positive "
                         f"{'integer' if kind is int else 'number'} (default {default})")
    return value


@dataclass
class Scored:
    """Scores of one call: arrays aligned with the requests."""

    scores: np.ndarray
    decisions: np.ndarray
    model_version: str
    thresholds: Thresholds | None
    fallback: bool
    features: dict[str, np.ndarray]

    def rows(self, req: Requests) -> list[dict[str, Any]]:
        """JSON-ready answers; counts as ints, the rest as floats (exact repr)."""
        feats = {name: (self.features[name].tolist()) for name in FEATURE_COLUMNS}
        ints = [n for n in FEATURE_COLUMNS if n in COUNT_COLUMNS]
        for name in ints:
            feats[name] = [int(v) for v in feats[name]]
        thresholds = self.thresholds.as_dict() if self.thresholds else None
        ids = req.transaction_id.tolist()
        scores = self.scores.tolist()
        decisions = self.decisions.tolist()
        return [
            {
                "transaction_id": ids[i],
                "score": scores[i],
                "decision": decisions[i],
                "model_version": self.model_version,
                "thresholds": thresholds,
                "fallback": self.fallback,
                "features": {name: feats[name][i] for name in FEATURE_COLUMNS},
            }
            for i in range(len(ids))
        ]


@dataclass
class OnlineScorer:
    """Features + champion model + fallback, and the background refresh of all three."""

    config: OnlineConfig
    store: OnlineFeatureStore = field(init=False)
    watcher: ChampionWatcher = field(init=False)
    predictions: PredictionIndex | None = field(init=False, default=None)
    refresh_errors: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        s = self.config.settings
        self.store = OnlineFeatureStore(s.label_delay_days)
        self.watcher = ChampionWatcher(self.config.registry_dir)
        self.raw_uri = s.table_uri("raw_transactions")
        self.predictions_uri = s.table_uri("batch_predictions")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # state ------------------------------------------------------------------------------
    def load(self) -> None:
        """First load, in the caller's thread (the service's startup)."""
        self.watcher.poll()
        self.refresh_history(force=True)
        self.refresh_predictions(force=True)

    def refresh_history(self, force: bool = False) -> bool:
        version = lake.table_version(self.raw_uri)
        if not force and version == self.store.snapshot.table_version:
            return False
        started = time.perf_counter()
        snap = load_history(self.raw_uri, self.store.label_delay_days, self.config.cutoff)
        self.store.swap(snap)
        log.info("feature history: %d rows of %s..%s (raw table version %s) in %.2fs",
                 snap.rows, snap.first_day, snap.last_day, snap.table_version,
                 time.perf_counter() - started)
        return True

    def refresh_predictions(self, force: bool = False) -> bool:
        version = lake.table_version(self.predictions_uri)
        current = self.predictions.table_version if self.predictions else None
        if not force and version == current:
            return False
        self.predictions = PredictionIndex.load(self.predictions_uri)
        return True

    def start(self) -> None:
        """Poll the registry and the tables in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="online-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        next_tables = time.monotonic() + self.config.table_poll_s
        while not self._stop.wait(self.config.champion_poll_s):
            try:
                self.watcher.poll()
                if time.monotonic() >= next_tables:
                    next_tables = time.monotonic() + self.config.table_poll_s
                    self.refresh_history()
                    self.refresh_predictions()
            except Exception:  # noqa: BLE001 - keep serving the state we have
                self.refresh_errors += 1
                log.exception("online refresh failed; serving the previous state")

    @property
    def ready(self) -> bool:
        """Serving champion.json's version, its file intact, and the history loaded."""
        watcher = self.watcher
        return (watcher.serving_champion and watcher.last_error is None
                and self.store.snapshot.loaded)

    def status(self) -> dict[str, Any]:
        """What is served, and why it is not ready (``model_error``); no absolute paths."""
        snap = self.store.snapshot
        current = self.watcher.current
        return {
            "model_version": current.version if current else None,
            "champion_version": self.watcher.champion_version,
            "serving_champion": self.watcher.serving_champion,
            "model_error": self.watcher.last_error,
            "feature_rows": snap.rows,
            "feature_days": [snap.first_day, snap.last_day],
            "raw_table_version": snap.table_version,
            "stream_rows": self.store.stream.size,
            "cutoff": self.config.cutoff,
            "predictions_table_version": self.predictions.table_version
            if self.predictions else None,
        }

    # scoring ----------------------------------------------------------------------------
    def score(self, req: Requests) -> Scored:
        """Features, then the champion's scores, or the rules if there is no usable model.

        Request ``transaction_id`` values must be distinct within one call.
        """
        feats = self.store.features(req)
        self.store.record(req)
        current = self.watcher.current
        if current is not None:
            try:
                scores = current.model.predict(feature_matrix(feats))
                return Scored(scores, decide(scores, current.thresholds), current.version,
                              current.thresholds, False, feats)
            except Exception:  # noqa: BLE001 - a model failure must not fail the request
                log.exception("model %s failed to score; using the fallback rules",
                              current.version)
        scores, decisions = fallback_scores(feats)
        return Scored(scores, decisions, FALLBACK_VERSION, None, True, feats)
