"""Helpers the benchmark scripts share: simulated data, Delta set-up, timing, tables.

The scripts are run as ``.venv/bin/python benchmarks/<name>.py``, so this module is
imported as ``common`` (the script's folder is first on ``sys.path``). Dask workers are
spawned processes that import the script again as ``__mp_main__``: everything here must be
cheap and side-effect free at import time.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudkit import lake
from fraudkit.schema import RAW_SCHEMA, to_arrow
from fraudkit.simulator import SimulationConfig, simulate

#: The checkout, put on ``sys.path`` by :func:`import_from_checkout`.
ROOT = Path(__file__).resolve().parent.parent
#: Dask settings of the project's DaskResource defaults (resources/dask.py).
N_WORKERS = 2
THREADS_PER_WORKER = 1


def import_from_checkout(module: str) -> Any:
    """Import a module of the Dagster code location (``assets``, ``resources``,
    ``definitions``) the way the tests do, from the checkout root, without Dagster's beta
    warnings."""
    import importlib
    import warnings

    if str(ROOT) not in sys.path:
        sys.path.insert(1, str(ROOT))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(module)


def scaled_config(factor: int = 1, axis: str = "entities", small: bool = False) -> SimulationConfig:
    """The simulator's default config (or the tests' ``small`` one) grown ``factor`` times
    along ``axis``.

    ``entities`` multiplies customers and terminals (transactions per entity and per day
    stay the same, so rows grow ``factor`` times); ``days`` multiplies the calendar.
    """
    base = SimulationConfig.small() if small else SimulationConfig()
    if axis == "entities":
        return replace(base, n_customers=base.n_customers * factor,
                       n_terminals=base.n_terminals * factor)
    if axis == "days":
        return replace(base, n_days=base.n_days * factor)
    raise ValueError(f"unknown scale axis {axis!r}: use 'entities' or 'days'")


def simulate_frame(cfg: SimulationConfig) -> pd.DataFrame:
    """Every simulated transaction of ``cfg`` in one frame of the raw contract plus ``day``."""
    frames = []
    for day, frame in simulate(cfg):
        frame["day"] = day
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    out["day"] = out["day"].astype(object)
    return out


def write_raw_table(frame: pd.DataFrame, uri: str, days_per_commit: int = 30) -> int:
    """Write ``frame`` (raw contract + ``day``) as the raw_transactions Delta table the way
    the ingest task does (partition-replacing commits); returns the table version."""
    lake.ensure_table(uri, RAW_SCHEMA)
    days = sorted(frame["day"].unique())
    version = -1
    for i in range(0, len(days), days_per_commit):
        chunk = days[i : i + days_per_commit]
        part = frame[frame["day"].isin(chunk)]
        version = lake.replace_days(uri, to_arrow(part, RAW_SCHEMA), chunk)
    return version


@contextmanager
def local_cluster(n_workers: int = N_WORKERS, memory_limit: str = "6GiB") -> Iterator[Any]:
    """A ``Client`` on the same kind of LocalCluster the project's DaskResource starts."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=THREADS_PER_WORKER,
                     processes=True, memory_limit=memory_limit, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(n_workers)
        yield client


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of wall time one call of ``fn`` took, and its result."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def repeat_interleaved(
    cases: dict[str, Callable[[], Any]], repeats: int, log: Callable[[str], None] = print
) -> dict[str, list[float]]:
    """Run every case once per round, ``repeats`` rounds, so that the noise of a shared
    machine hits every case alike; returns each case's list of seconds."""
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for round_no in range(1, repeats + 1):
        for name, fn in cases.items():
            elapsed, _ = timed(fn)
            seconds[name].append(elapsed)
            log(f"  round {round_no}/{repeats}  {name:<42} {elapsed:8.2f} s")
    return seconds


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    """PASS or MISS of ``value`` against ``target``."""
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "MISS"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table: numbers right-aligned, text left-aligned."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) >= 10 else f"{value:.3f}"
        if isinstance(value, int | np.integer):
            return f"{value:,}"
        return str(value)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float | np.integer | np.floating) for row in rows)
               for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True))

    print(line(list(headers)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(line(row))


def machine_line() -> str:
    """Date, CPU count and Python/platform, for the head of a report."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{dt.datetime.now().isoformat(timespec='seconds')}  cpus={os.cpu_count()}  "
            f"load1={load:.2f}  python={platform.python_version()}  {platform.machine()}")


def banner(title: str) -> None:
    print()
    print(title)
    print("=" * len(title))
