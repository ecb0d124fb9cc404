"""The online store's size, and how often concurrent requests miss each other.

Two measurements on the demo's data (``DATA_DIR``, run ``make demo`` first):

1. **Size after 40 days of traffic.** The scorer (in process, exactly as a service worker
   scores a drain) scores the last ``--days`` days of ``raw_transactions`` in time order,
   ``--drain`` transactions per call, writing every decision to a fresh store: SQLite, then
   a real redis-server (AOF on) started on a free port. After each day the script does what
   the ``online_predictions`` asset does (mark the day delivered, prune), so the figure is
   the store's steady size. Prints bytes per stored transaction and the size at the end.
2. **Concurrent requests of one customer.** The service (``bentoml serve``) on Redis with one
   worker, then with two, replays one day with ``--clients`` concurrent clients taking the
   transactions in time order; each answer's customer features are compared with
   ``transaction_features``. Requests of one customer that are in flight together can miss
   each other (one worker: a later transaction may be scored before an earlier one that
   is still being parsed; two workers: also on different processes); the share of answers
   whose customer features differ is what the README quotes.

    DATA_DIR=... .venv/bin/python benchmarks/online_store.py [--days 40] [--clients 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

from fraudkit import lake  # noqa: E402
from fraudkit.config import Settings  # noqa: E402
from fraudkit.features import FEATURE_COLUMNS  # noqa: E402
from fraudkit.online import OnlineScorer, Requests  # noqa: E402
from fraudkit.online.history import reach_days  # noqa: E402
from scripts.serving import BentoServer, RedisServer  # noqa: E402

CUSTOMER_FEATURES = [c for c in FEATURE_COLUMNS if c.startswith("customer_")]


def _day_requests(settings: Settings, day: str) -> Requests:
    frame = lake.read_days(settings.table_uri("raw_transactions"), [day]).to_pandas()
    frame = frame.sort_values(["tx_datetime", "transaction_id"]).reset_index(drop=True)
    return Requests(frame["transaction_id"].to_numpy(np.int64),
                    frame["tx_datetime"].astype("datetime64[us, UTC]").array.asi8,
                    frame["customer_id"].to_numpy(np.int64),
                    frame["terminal_id"].to_numpy(np.int64),
                    frame["tx_amount"].to_numpy(np.float64))


def store_size(settings: Settings, url: str, days: list[str], drain: int) -> None:
    """Score ``days`` in process into the store at ``url``; print its size."""
    cutoff = lake.shift_day(days[0], -1)
    scorer = OnlineScorer(settings.model_copy(update={"online_store_cutoff": cutoff,
                                                      "online_store_url": url}))
    scorer.load()
    store = scorer.decisions.store
    retention = reach_days(settings.label_delay_days)
    started, scored = time.perf_counter(), 0
    for day in days:
        req = _day_requests(settings, day)
        for i in range(0, len(req), drain):
            part = Requests(*(getattr(req, f)[i:i + drain] for f in (
                "transaction_id", "tx_time_us", "customer_id", "terminal_id", "tx_amount")))
            scorer.score(part)
        scored += len(req)
        store.mark_delivered(day, store.day_counts().get(day, 0))
        store.prune(retention)
    rows = sum(store.day_counts().values())
    size = store.size_bytes()
    print(f"  {store.backend}: {scored:,} transactions over {len(days)} days scored in "
          f"{time.perf_counter() - started:.0f}s; the store holds {rows:,} "
          f"({len(store.day_counts())} days), {size / 2**20:.1f} MiB, "
          f"{size / max(rows, 1):.0f} bytes per stored transaction", flush=True)
    scorer.stop()
    store.close()


def concurrent_misses(settings: Settings, redis_url: str, day: str, workers: int,
                      clients: int, log: Path) -> None:
    """Replay ``day`` with ``clients`` concurrent clients; print the share of answers whose
    customer features differ from transaction_features."""
    env = {**os.environ, "DATA_DIR": str(settings.data_dir), "ONLINE_STORE_URL": redis_url,
           "ONLINE_WORKERS": str(workers), "ONLINE_STORE_CUTOFF": lake.shift_day(day, -1)}
    env.pop("FRAUD_API_KEY", None)
    req = _day_requests(settings, day)
    times = (np.asarray(req.tx_time_us).astype("datetime64[us]").astype(str))
    bodies = [{"transaction_id": int(i), "tx_datetime": t + "Z", "customer_id": int(c),
               "terminal_id": int(term), "tx_amount": float(a)}
              for i, t, c, term, a in zip(req.transaction_id, times, req.customer_id,
                                          req.terminal_id, req.tx_amount, strict=True)]
    features = lake.read_days(settings.table_uri("transaction_features"), [day]).to_pandas()
    features = features.set_index("transaction_id")
    # A connection per request, so requests spread over the workers as they would behind
    # a load balancer (one keep-alive connection stays with one worker).
    # One client per thread (httpx shares no connection across threads safely).
    local = threading.local()
    with BentoServer(env, log) as server:

        def post(body: dict) -> dict:
            if not hasattr(local, "client"):
                local.client = httpx.Client(
                    base_url=server.url, timeout=30,
                    limits=httpx.Limits(max_keepalive_connections=0))
            return local.client.post("/score", json=body).json()

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(post, bodies))
        seconds = time.perf_counter() - started
    differ = 0
    for answer in answers:
        want = features.loc[answer["transaction_id"]]
        if any(abs(answer["features"][c] - float(want[c])) > 1e-9 for c in CUSTOMER_FEATURES):
            differ += 1
    print(f"  {workers} worker(s), {clients} concurrent clients: {len(answers):,} answers in "
          f"{seconds:.0f}s, customer features differ from batch in {differ} "
          f"({differ / len(answers):.3%})", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=40)
    parser.add_argument("--skip-size", action="store_true", help="only the concurrency part")
    parser.add_argument("--drain", type=int, default=8, help="transactions per scoring call")
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    raw_days = lake.partition_values(settings.table_uri("raw_transactions"))
    days = raw_days[-args.days:]
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    redis = RedisServer(work / "redis")
    (work / "redis").mkdir()
    redis.start()
    try:
        if not args.skip_size:
            print(f"1. store size after {len(days)} days of traffic ({days[0]}..{days[-1]}), "
                  f"{args.drain} transactions per drain")
            store_size(settings, f"sqlite:///{work / 'size.sqlite3'}", days, args.drain)
            store_size(settings, redis.url.replace("/0", "/1"), days, args.drain)
        print(f"2. concurrent requests, one day ({days[-1]}) on Redis")
        for workers, db in ((1, 2), (2, 3)):
            concurrent_misses(settings, redis.url.replace("/0", f"/{db}"), days[-1], workers,
                              args.clients, work / f"service-{workers}.log")
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
