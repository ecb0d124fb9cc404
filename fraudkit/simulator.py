"""A seeded, deterministic transaction simulator with realistic fraud and optional drift.

Customers live on a 100 x 100 map with a spending profile (mean amount, spread, daily
transaction rate) and buy at terminals within ``radius`` of home. Frauds follow three
scenarios from the card-fraud literature:

(a) any amount above ``large_amount`` is fraud (a rule the model should learn at once);
(b) every day ``compromised_terminals_per_day`` terminals are compromised, and all their
    transactions of the next ``terminal_compromise_days`` days are fraudulent;
(c) every day ``compromised_customers_per_day`` cards leak, and for the next
    ``customer_compromise_days`` days a third of their transactions are fraud with amounts
    multiplied by ``card_fraud_amount_factor``.

From ``drift_from`` on (if set), amounts shift by ``drift_amount_factor`` and a new fraud
pattern appears: small night-time "card testing" transactions on a share of the cards.
The drift draws come from their own random stream, so days before ``drift_from`` are
identical with and without drift. The fraud rate stays under 1% without drift.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudkit.schema import LANDING_SCHEMA, RAW_COLUMNS

US_PER_SECOND = 1_000_000


@dataclass(frozen=True)
class SimulationConfig:
    n_customers: int = 5_000
    n_terminals: int = 10_000
    start_date: str = "2026-05-01"
    n_days: int = 180
    seed: int = 7
    radius: float = 5.0
    large_amount: float = 220.0
    compromised_terminals_per_day: int = 2
    terminal_compromise_days: int = 28
    compromised_customers_per_day: int = 3
    customer_compromise_days: int = 14
    card_fraud_amount_factor: float = 5.0
    drift_from: str | None = None
    drift_amount_factor: float = 1.6
    drift_card_testing_share: float = 0.01

    @classmethod
    def small(cls, **overrides: object) -> SimulationConfig:
        """The scale the tests use: about 25k transactions over 60 days."""
        base = cls(n_customers=250, n_terminals=500, n_days=60, compromised_customers_per_day=1)
        return replace(base, **overrides)

    @property
    def days(self) -> list[str]:
        start = dt.date.fromisoformat(self.start_date)
        return [(start + dt.timedelta(days=i)).isoformat() for i in range(self.n_days)]


@dataclass(frozen=True)
class _Population:
    home: np.ndarray  # [C, 2]
    mean_amount: np.ndarray
    std_amount: np.ndarray
    tx_per_day: np.ndarray
    # Terminals within reach of each customer, as CSR: terminals[indptr[c]:indptr[c+1]].
    indptr: np.ndarray
    terminals: np.ndarray


def _population(cfg: SimulationConfig, rng: np.random.Generator) -> _Population:
    home = rng.uniform(0, 100, (cfg.n_customers, 2))
    mean_amount = rng.uniform(5, 100, cfg.n_customers)
    std_amount = mean_amount / 2
    tx_per_day = rng.uniform(0, 4, cfg.n_customers)
    term_xy = rng.uniform(0, 100, (cfg.n_terminals, 2))
    counts, chunks = [], []
    for start in range(0, cfg.n_customers, 512):
        block = home[start : start + 512]
        dist2 = ((block[:, None, :] - term_xy[None, :, :]) ** 2).sum(axis=2)
        rows, cols = np.nonzero(dist2 < cfg.radius**2)
        counts.append(np.bincount(rows, minlength=len(block)))
        chunks.append(cols)
    indptr = np.concatenate(([0], np.cumsum(np.concatenate(counts))))
    return _Population(
        home, mean_amount, std_amount, tx_per_day, indptr, np.concatenate(chunks).astype(np.int64)
    )


def simulate(cfg: SimulationConfig) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield ``(day, transactions)`` for every day of the calendar, in order."""
    rng = np.random.default_rng(cfg.seed)
    drift_rng = np.random.default_rng([cfg.seed, 1])
    pop = _population(cfg, rng)
    reach = np.diff(pop.indptr)
    terminal_until = np.full(cfg.n_terminals, -1)
    customer_until = np.full(cfg.n_customers, -1)
    next_id = 0
    drift_day = dt.date.fromisoformat(cfg.drift_from) if cfg.drift_from else None

    for day_index, day in enumerate(cfg.days):
        drifting = drift_day is not None and dt.date.fromisoformat(day) >= drift_day
        n_per_customer = rng.poisson(pop.tx_per_day) * (reach > 0)
        cust = np.repeat(np.arange(cfg.n_customers), n_per_customer)
        n = len(cust)
        seconds = rng.normal(43_200, 20_000, n)
        micros = rng.integers(0, US_PER_SECOND, n)
        amount = rng.normal(pop.mean_amount[cust], pop.std_amount[cust])
        negative = amount <= 0
        amount[negative] = rng.uniform(0, 2 * pop.mean_amount[cust[negative]])
        pick = pop.indptr[cust] + np.floor(rng.random(n) * reach[cust]).astype(np.int64)
        term = pop.terminals[np.minimum(pick, len(pop.terminals) - 1)]
        keep = (seconds >= 0) & (seconds < 86_400)
        cust, term, amount = cust[keep], term[keep], amount[keep]
        time_us = np.floor(seconds[keep]).astype(np.int64) * US_PER_SECOND + micros[keep]

        # Scenario draws happen every day, drift or not, so the random stream stays aligned.
        new_terms = rng.choice(cfg.n_terminals, cfg.compromised_terminals_per_day, replace=False)
        terminal_until[new_terms] = day_index + cfg.terminal_compromise_days
        new_cards = rng.choice(cfg.n_customers, cfg.compromised_customers_per_day, replace=False)
        customer_until[new_cards] = day_index + cfg.customer_compromise_days
        card_draw = rng.random(len(cust))

        if drifting:
            amount = amount * cfg.drift_amount_factor
        amount = np.maximum(np.round(amount, 2), 0.01)
        fraud = amount > cfg.large_amount
        fraud |= terminal_until[term] > day_index
        stolen = (customer_until[cust] > day_index) & (card_draw < 1 / 3)
        amount = np.where(stolen, np.round(amount * cfg.card_fraud_amount_factor, 2), amount)
        fraud |= stolen

        if drifting:
            testers = np.flatnonzero(
                (drift_rng.random(cfg.n_customers) < cfg.drift_card_testing_share) & (reach > 0)
            )
            k = len(testers)
            pick = pop.indptr[testers] + np.floor(drift_rng.random(k) * reach[testers])
            cust = np.concatenate([cust, testers])
            term = np.concatenate([term, pop.terminals[pick.astype(np.int64)]])
            amount = np.concatenate([amount, np.round(drift_rng.uniform(1, 5, k), 2)])
            night_us = drift_rng.integers(0, 6 * 3600 * US_PER_SECOND, k)
            time_us = np.concatenate([time_us, night_us])
            fraud = np.concatenate([fraud, np.ones(k, dtype=bool)])

        order = np.argsort(time_us, kind="stable")
        day_start = pd.Timestamp(day, tz="UTC").value // 1000
        frame = pd.DataFrame(
            {
                "transaction_id": np.arange(next_id, next_id + len(order), dtype=np.int64),
                "tx_datetime": pd.to_datetime(day_start + time_us[order], unit="us", utc=True),
                "customer_id": cust[order].astype(np.int64),
                "terminal_id": term[order].astype(np.int64),
                "tx_amount": amount[order].astype(np.float64),
                "tx_fraud": fraud[order].astype(np.int8),
            }
        )
        next_id += len(order)
        yield day, frame


def landing_path(landing_dir: Path, day: str) -> Path:
    return landing_dir / f"transactions_{day}.parquet"


def write_landing(
    cfg: SimulationConfig, landing_dir: Path, days: set[str] | None = None, overwrite: bool = False
) -> list[Path]:
    """Write one Parquet landing file per day (``transactions_<day>.parquet``).

    Files are written to a temporary name and renamed, so a reader never sees half a file.
    Existing files are kept unless ``overwrite``; only ``days`` are written when given.
    """
    landing_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for day, frame in simulate(cfg):
        if days is not None and day not in days:
            continue
        path = landing_path(landing_dir, day)
        if path.exists() and not overwrite:
            continue
        tmp = path.with_suffix(".parquet.tmp")
        table = pa.Table.from_pandas(frame[list(RAW_COLUMNS)], schema=LANDING_SCHEMA,
                                     preserve_index=False)
        pq.write_table(table, tmp)
        tmp.replace(path)
        written.append(path)
    return written


def copy_landing(landing_dir: Path, uri: str, options: dict[str, str] | None = None) -> int:
    """Copy the landing files of ``landing_dir`` that ``uri`` (an object-store prefix) does
    not hold yet; how many. Each object is written whole, so a reader never sees half."""
    from fraudkit.blobs import ObjectBlobs

    store = ObjectBlobs(uri, options)
    there = set(store.keys())
    copied = 0
    for path in sorted(landing_dir.iterdir()):
        if path.is_file() and path.suffix == ".parquet" and path.name not in there:
            store.put(path.name, path.read_bytes())
            copied += 1
    return copied


def main(argv: list[str] | None = None) -> None:
    import argparse

    from fraudkit.config import Settings

    parser = argparse.ArgumentParser(description="Write simulated landing files, one per day.")
    parser.add_argument("--out", type=Path, default=None, help="landing folder")
    parser.add_argument("--small", action="store_true", help="test scale")
    parser.add_argument("--days", type=int, default=None, help="number of days")
    parser.add_argument("--start", default=None, help="first day, YYYY-MM-DD")
    parser.add_argument("--drift-from", default=None, help="inject drift from this day")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    cfg = SimulationConfig.small() if args.small else SimulationConfig()
    overrides = {
        k: v
        for k, v in {
            "n_days": args.days,
            "start_date": args.start,
            "drift_from": args.drift_from,
            "seed": args.seed,
        }.items()
        if v is not None
    }
    cfg = replace(cfg, **overrides)
    out = args.out or Settings.from_env().landing_dir
    paths = write_landing(cfg, out, overwrite=args.overwrite)
    print(f"wrote {len(paths)} landing file(s) to {out}")


if __name__ == "__main__":
    main()
