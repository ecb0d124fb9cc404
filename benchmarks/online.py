"""Online latency and throughput: the BentoML service against a bare ASGI baseline.

Starts, in one run, the service (`bentoml serve`: online features + champion model + the
durable online store, every decision written before its answer) in three set-ups:

* ``sqlite``: one worker on the embedded SQLite store (WAL, synchronous=NORMAL);
* ``redis``: one worker on a real ``redis-server`` (AOF on, appendfsync everysec) that the
  script starts on a free port;
* ``redis-2w``: two workers (``ONLINE_WORKERS=2``) sharing that Redis;

and, with ``--with-fsync-always``, ``redis-always``: one worker on a second ``redis-server``
run with ``appendfsync always`` (an fsync before every reply; see the README for the window
that ``everysec`` leaves open to a ``kill -9`` of redis-server);

and a bare Starlette app on uvicorn that only parses the JSON and runs the same ONNX model on
a feature row, with no lookup and no store (one worker). Each round drives every server, one
after the other, with real load generators:

* a steady request rate (``--rate``, default 500/s) with one request body (a transaction
  batch approved), the p50/p99 latency target: a connection per 50 req/s, each its own
  ``hey -c 1 -q 50`` process, started 1/rate apart, so the clients tick at unrelated
  phases as independent terminals do (the share of requests that left within 0.5 ms of
  another is printed);
* the same rate from one ``hey -c 10 -q 50``, printed for comparison: hey starts its
  workers' tickers together, so its requests leave in bursts of 10 at once every 20 ms (a
  burst test, which earlier runs reported as "hey p99 at 500/s"); then ``hey`` flat out
  with the same body;
* ``wrk`` with ``benchmarks/replay.lua``: flat out, every request a *different* real
  transaction (the last days of ``raw_transactions`` with fresh ids, the service's store
  cut off the day before them), so features, the online store and the model
  see realistic traffic. A repeated body lets the service answer concurrent copies of one
  transaction with one scoring (it treats them as retries), which flatters it; this is the
  honest throughput figure. It runs at each of ``--concurrency`` (default 32 and 64
  connections) and a server's replay max is its best of them: a server that scores the
  requests arriving together in one call (this service) reaches its most with more requests
  in flight than one that answers each on its own (the bare app, whose queueing only grows
  past 32); both levels are printed;
* ``wrk`` with the same replay, *paced* near ``--rate`` (each connection waits a random
  time of mean ``MIX_DELAY_MS`` after an answer, so requests arrive as from independent
  terminals; see benchmarks/replay.lua): the p99 of real traffic, whose reviews and
  declines (the share is printed) are answered with their reasons, TreeSHAP computed per
  request.

Rounds alternate the servers, so machine noise hits all of them; the script prints the
medians of ``--repeats`` rounds and the ratios. The load generator (wrk: 2 threads; hey: one
process flat out and in bursts, one per client at the steady rate) shares the machine's
cores with the servers: on 2 cores, two workers and the load generator compete for the
same two cores. Each replay's CPU is also split by process (the server's tree,
redis-server, wrk) into core-ms per transaction, which shows where a worker's time goes.
At the end it prints the bytes each store holds per stored transaction.

    DATA_DIR=... .venv/bin/python benchmarks/online.py [--rate 500] [--duration 10]

Targets: p99 <= 10 ms at 500 req/s with the durable store on, SQLite and Redis, with one
body at a steady rate and with the paced real traffic (reasons included); replay max
throughput >= 0.5x the bare app for one worker; two workers on Redis >= 1.3x one worker.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))
REPLAY_LUA = Path(__file__).resolve().parent / "replay.lua"
P99_TARGET_MS = 10.0
THROUGHPUT_TARGET = 0.5
TWO_WORKERS_TARGET = 1.3
SERVICES = ("sqlite", "redis", "redis-2w")
#: Requests a second per client of the fixed-rate loads (the steady clients, hey's bursts,
#: the paced replay): ``hey -q 50`` per connection.
CLIENT_RATE = 50


def clients(rate: int) -> int:
    """Clients (connections) of a fixed-rate load of ``rate`` req/s: one per CLIENT_RATE."""
    return max(1, rate // CLIENT_RATE)


#: The paced replay's mean wait between an answer and a connection's next request (ms,
#: exponential): with the answer's few ms, a request every ~20 ms per connection on
#: average, as ``hey -q 50`` sends.
MIX_DELAY_MS = 16
#: The service without reasons (REASON_CODES=0), in the same runs: what the reasons cost.
NO_REASONS = "sqlite-no-reasons"
#: One worker on a redis-server with ``appendfsync always`` (``--with-fsync-always``).
FSYNC_ALWAYS = "redis-always"


def bare_app(model_path: str):  # pragma: no cover - runs in the baseline subprocess
    """Starlette + onnxruntime, nothing else: the floor a Python service can reach."""
    import numpy as np
    import onnxruntime as ort
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out = [o.name for o in session.get_outputs()]
    output = "probabilities" if "probabilities" in out else out[-1]

    async def score(request: Request) -> Response:
        tx = json.loads(await request.body())
        row = np.zeros((1, 15), dtype=np.float32)
        row[0, 0] = tx["tx_amount"]
        (probs,) = session.run([output], {name: row})
        probs = np.asarray(probs)
        value = float(probs[0, 1] if probs.ndim == 2 else probs[0])
        return Response(json.dumps({"transaction_id": tx["transaction_id"], "score": value}),
                        media_type="application/json")

    return Starlette(routes=[Route("/score", score, methods=["POST"])])


def wait_ready(url: str, proc: subprocess.Popen, path: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code in (200, 405):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not become ready in {timeout}s")


def hey(url: str, body: Path, duration: int, rate: int | None, concurrency: int) -> dict:
    """One hey run; ``rate`` total req/s (spread over the connections) or None = flat out.

    With a rate, hey starts its ``concurrency`` workers' tickers together, so their requests
    leave in bursts of ``concurrency`` at once, one burst every ``concurrency / rate``
    seconds: a burst test. :func:`steady` sends the same rate as independent clients."""
    cmd = ["hey", "-z", f"{duration}s", "-c", str(concurrency), "-m", "POST",
           "-T", "application/json", "-D", str(body)]
    if rate:
        cmd += ["-q", str(max(1, rate // concurrency)), "-o", "csv"]
    text = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    if rate:
        return _latencies([_hey_csv(text, 0.0)], duration)

    def grab(pattern: str) -> float:
        match = re.search(pattern, text)
        return float(match.group(1)) if match else float("nan")

    codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", text))
    return {"rps": grab(r"Requests/sec:\s+([\d.]+)"),
            "p50_ms": grab(r"50% in ([\d.]+) secs") * 1000,
            "p99_ms": grab(r"99% in ([\d.]+) secs") * 1000,
            "non_200": sum(int(n) for c, n in codes.items() if c != "200")}


def steady(url: str, body: Path, duration: int, rate: int, connections: int) -> dict:
    """``rate`` req/s from ``connections`` independent clients: one hey process each (one
    connection at ``rate / connections`` req/s), started ``1 / rate`` seconds apart. Each
    process's start-up shifts its phase by a few ms more, so the clients tick at unrelated
    phases (some requests still leave close together, as from independent terminals)
    instead of in :func:`hey`'s bursts."""
    per = max(1, rate // connections)
    cmd = ["hey", "-z", f"{duration}s", "-c", "1", "-q", str(per), "-m", "POST",
           "-T", "application/json", "-D", str(body), "-o", "csv", url]
    runs = []
    with contextlib.ExitStack() as files:
        first = time.perf_counter()
        for i in range(connections):
            time.sleep(max(0.0, first + i / (per * connections) - time.perf_counter()))
            out = files.enter_context(tempfile.TemporaryFile(mode="w+"))
            runs.append((time.perf_counter() - first, out,
                         subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)))
        samples = []
        for started, out, proc in runs:
            if proc.wait() != 0:
                raise SystemExit(f"hey exited with {proc.returncode}: {' '.join(cmd)}")
            out.seek(0)
            samples.append(_hey_csv(out.read(), started))
    return _latencies(samples, duration)


def _hey_csv(text: str, started: float) -> list[tuple[float, float, int]]:
    """(when it left, s; latency, s; status) of each request in hey's ``-o csv``;
    ``started`` is when that hey process was started (its offsets count from there)."""
    rows = text.strip().splitlines()[1:]
    return [(started + float(cols[7]), float(cols[0]), int(cols[6]))
            for cols in (row.split(",") for row in rows) if len(cols) == 8]


def _latencies(samples: list[list[tuple[float, float, int]]], duration: int) -> dict:
    """p50/p99 over every request of ``samples`` (one list per hey process), the rate, and
    ``together``: the share of requests that left within 0.5 ms of another (hey's bursts:
    nearly all; independent clients: few)."""
    every = [s for run in samples for s in run]
    if len(every) < 100:
        raise SystemExit(f"hey sent {len(every)} requests in {duration}s: is the server up?")
    latency = sorted(s[1] * 1000 for s in every)
    left = sorted(s[0] for s in every)
    gaps = [math.inf, *(b - a for a, b in itertools.pairwise(left)), math.inf]
    together = sum(min(before, after) < 0.0005
                   for before, after in itertools.pairwise(gaps)) / len(left)
    quantiles = statistics.quantiles(latency, n=100)
    return {"rps": len(every) / duration, "p50_ms": statistics.median(latency),
            "p99_ms": quantiles[98], "together": together,
            "non_200": sum(1 for s in every if s[2] != 200)}


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds the live ones of ``processes`` have used so far."""
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # gone since it was listed
            continue
        total += times.user + times.system
    return total


def wrk(url: str, bodies: Path, duration: int, connections: int,
        parts: dict[str, list[psutil.Process]] | None = None, delay_ms: int = 0) -> dict:
    """One wrk run replaying ``bodies`` (one JSON transaction per line), flat out, or with
    a random wait of mean ``delay_ms`` between an answer and the next request of each
    connection (a paced rate of real traffic). With ``parts`` (a name for each group of
    processes: the server's tree, redis-server), also the CPU seconds each group and wrk
    itself used during the run."""
    threads = 2
    env = {**os.environ, "REPLAY_FILE": str(bodies), "REPLAY_THREADS": str(threads),
           "REPLAY_DELAY_MS": str(delay_ms)}
    parts = parts or {}
    before = psutil.cpu_times()
    part_before = {name: _cpu_seconds(procs) for name, procs in parts.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
         "-s", str(REPLAY_LUA), url], capture_output=True, text=True, check=True,
        env=env).stdout
    after = psutil.cpu_times()
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {name: _cpu_seconds(procs) - part_before[name] for name, procs in parts.items()}
    cpu["wrk"] = (waited.ru_utime + waited.ru_stime) - (children.ru_utime + children.ru_stime)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", text)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", text)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return {"rps": float(rps.group(1)) if rps else float("nan"),
            "p50_ms": _ms(*p50.groups()) if p50 else float("nan"),
            "p99_ms": _ms(*p99.groups()) if p99 else float("nan"),
            "non_200": (int(errors.group(1)) if errors else 0)
            + (1 if socket_errors else 0),
            "busy": _busy(before, after), "cpu": cpu}


def _busy(before, after) -> float:
    """Share (0..1) of all cores' time spent not idle between two ``psutil.cpu_times``: how
    much of the machine the server, its store and the load generator used together."""
    total = sum(after) - sum(before)
    idle = (after.idle + after.iowait) - (before.idle + before.iowait)
    return 1 - idle / total if total > 0 else float("nan")


def replay_bodies(settings, target: Path, days: int = 5, last: str | None = None
                  ) -> tuple[int, str, str]:
    """The ``days`` of raw transactions up to ``last`` (default: the newest) as request
    bodies with fresh ids, in time order; returns their count, the day before them (the
    store cutoff under which they are new traffic to the service; the parity test replays
    the same way) and the last day."""
    from fraudkit import lake

    raw_uri = settings.table_uri("raw_transactions")
    every = [d for d in lake.partition_values(raw_uri) if last is None or d <= last]
    if not every:
        raise SystemExit(f"no raw_transactions up to {last}")
    last_days = every[-days:]
    frame = lake.read_days(raw_uri, last_days).to_pandas()
    frame = frame.sort_values(["tx_datetime", "transaction_id"]).reset_index(drop=True)
    times = frame["tx_datetime"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with open(target, "w") as out:
        for i, (row, when) in enumerate(zip(frame.itertuples(index=False), times, strict=True)):
            out.write(json.dumps({"transaction_id": 800_000_000_000 + i, "tx_datetime": when,
                                  "customer_id": int(row.customer_id),
                                  "terminal_id": int(row.terminal_id),
                                  "tx_amount": float(row.tx_amount)}) + "\n")
    return len(frame), lake.shift_day(last_days[0], -1), last_days[-1]


def decisions_so_far(url: str) -> dict[str, float]:
    """Transactions the service scored so far, by decision (its /metrics)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    found: dict[str, float] = {}
    for decision, value in re.findall(
            r'^fraud_scored_transactions_total\{[^}]*decision="(\w+)"[^}]*\} ([\d.e+]+)',
            text, re.M):
        found[decision] = found.get(decision, 0.0) + float(value)
    return found


def explained_share(before: dict[str, float], after: dict[str, float]) -> float:
    """Share of the transactions scored between two :func:`decisions_so_far` that were
    reviews or declines (the ones answered with reasons)."""
    delta = {d: after.get(d, 0.0) - before.get(d, 0.0) for d in after}
    total = sum(delta.values())
    return (delta.get("review", 0.0) + delta.get("decline", 0.0)) / total if total else 0.0


def drain_sizes(url: str) -> str:
    """Mean transactions per drain from the service's /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    total = re.search(r"^fraud_drain_transactions_sum ([\d.e+]+)", text, re.M)
    count = re.search(r"^fraud_drain_transactions_count ([\d.e+]+)", text, re.M)
    if not (total and count) or float(count.group(1)) == 0:
        return "n/a"
    return f"{float(total.group(1)) / float(count.group(1)):.1f}"


def _levels(text: str) -> list[int]:
    """``--concurrency``: comma-separated positive connection counts."""
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give connection counts such as 32,64")
    return levels


def best_replay(url: str, bodies: Path, duration: int, levels: list[int],
                parts: dict[str, list[psutil.Process]]) -> dict:
    """The flat-out replay at each connection count in ``levels``: the run with the most
    requests per second, with every level's rate under ``by_level``."""
    runs = {c: wrk(url, bodies, duration, c, parts=parts) for c in levels}
    best = max(runs.values(), key=lambda run: run["rps"])
    return {**best, "by_level": {c: run["rps"] for c, run in runs.items()},
            "non_200": sum(run["non_200"] for run in runs.values())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=500, help="fixed request rate, req/s")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=_levels, default=[32, 64],
                        help="connections of the flat-out runs, comma-separated: hey runs at "
                             "the first, the replay at each (a server's max is its best)")
    parser.add_argument("--with-fsync-always", action="store_true",
                        help=f"also run {FSYNC_ALWAYS}: one worker on a redis-server with "
                             "appendfsync always, against redis (everysec)")
    parser.add_argument("--last-day", default=None,
                        help="replay the 5 days up to this one (default: the newest)")
    parser.add_argument("--bare-app", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_app:  # the baseline subprocess
        import uvicorn

        uvicorn.run(bare_app(args.bare_app), host="127.0.0.1", port=args.port,
                    log_level="warning", access_log=False)
        return
    missing = [tool for tool in ("hey", "wrk") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"{' and '.join(missing)} not installed: `make bench-deps` "
                         "(apt-get install hey wrk)")

    from fraudkit import lake
    from fraudkit.config import Settings
    from fraudkit.registry import ModelRegistry, RegistryError
    from fraudkit.store import open_store
    from scripts.serving import BentoServer, RedisServer, free_port

    settings = Settings.from_env()
    try:
        champion = ModelRegistry.of(settings).champion()
    except RegistryError as exc:
        raise SystemExit(f"{exc}\n(the benchmark serves DATA_DIR={settings.data_dir})") from exc
    workdir = Path(tempfile.mkdtemp(prefix="bench-online-"))
    bodies = workdir / "replay.jsonl"
    n_bodies, cutoff, last = replay_bodies(settings, bodies, last=args.last_day)
    # The paced replay, shaped like the steady rate: a connection per 50 req/s, each
    # sending every ~20 ms on average (MIX_DELAY_MS after an answer, plus its latency).
    mix_connections = clients(args.rate)
    raw_uri = settings.table_uri("raw_transactions")
    last_day = [last]
    # hey's one body: the day's first transaction that batch approved, as most traffic is
    # (a review or decline would be explained on every request; the paced replay has the
    # real mix of both).
    approved = lake.read_days(settings.table_uri("batch_predictions"), last_day,
                              ["transaction_id", "decision"]).to_pandas()
    approved = set(approved.loc[approved["decision"] == "approve", "transaction_id"])
    sample = next(r for r in lake.read_days(raw_uri, last_day).to_pylist()
                  if r["transaction_id"] in approved)
    tx = {"transaction_id": 900_000_000_001,
          "tx_datetime": sample["tx_datetime"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
          "customer_id": sample["customer_id"], "terminal_id": sample["terminal_id"],
          "tx_amount": sample["tx_amount"]}
    body = workdir / "body.json"
    body.write_text(json.dumps(tx))
    env = {**os.environ, "DATA_DIR": str(settings.data_dir), "ONLINE_STORE_CUTOFF": cutoff}
    env.pop("FRAUD_API_KEY", None)
    redis = RedisServer(workdir / "redis")
    (workdir / "redis").mkdir()
    redis.start()
    stores = {"sqlite": f"sqlite:///{workdir / 'store.sqlite3'}",
              "redis": redis.url.replace("/0", "/1"), "redis-2w": redis.url.replace("/0", "/2")}
    servers = {name: BentoServer({**env, "ONLINE_STORE_URL": stores[name],
                                  "ONLINE_WORKERS": "2" if name.endswith("2w") else "1"},
                                 workdir / f"{name}.log") for name in SERVICES}
    # The baseline of the reasons' cost: SQLite, one worker, REASON_CODES=0.
    stores[NO_REASONS] = f"sqlite:///{workdir / 'store-no-reasons.sqlite3'}"
    servers[NO_REASONS] = BentoServer({**env, "ONLINE_STORE_URL": stores[NO_REASONS],
                                       "REASON_CODES": "0"}, workdir / "no-reasons.log")
    redis_of = {name: redis for name in servers}
    if args.with_fsync_always:
        always = RedisServer(workdir / "redis-always", fsync="always")
        (workdir / "redis-always").mkdir()
        always.start()
        redis_of[FSYNC_ALWAYS] = always
        stores[FSYNC_ALWAYS] = always.url
        servers[FSYNC_ALWAYS] = BentoServer({**env, "ONLINE_STORE_URL": always.url},
                                            workdir / "redis-always.log")
    bare_port = free_port()
    bare = subprocess.Popen(
        [sys.executable, __file__, "--bare-app", str(champion.model_path),
         "--port", str(bare_port)], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    urls = {"bare": f"http://127.0.0.1:{bare_port}"}  # the services' once they started
    # `kill` of the benchmark stops the servers it started too (the finally block below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    def cpu_parts(name: str) -> dict[str, list[psutil.Process]]:
        """The processes whose CPU a replay of ``name`` is split into."""
        tree = servers[name].tree() if name in servers else [
            psutil.Process(bare.pid), *psutil.Process(bare.pid).children(recursive=True)]
        return {"server": tree, "redis": [psutil.Process(redis_of.get(name, redis).proc.pid)]}

    try:
        for name, server in servers.items():
            server.start()
            urls[name] = server.url
        wait_ready(urls["bare"], bare, "/score")
        print(f"{os.cpu_count()} cores; model {champion.version}; replay of {n_bodies:,} "
              f"distinct transactions; one body for hey: {json.dumps(tx)}")
        print(f"service answer: {httpx.post(urls['sqlite'] + '/score', json=tx).text[:160]}...")
        print(f"paced replay: {mix_connections} connections, a random {MIX_DELAY_MS} ms on "
              "average between an answer and the next request")
        results: dict[tuple[str, str], list[dict]] = {}
        not_ok = 0  # answers other than 200: any makes the run an error, not a figure
        flat_out = args.concurrency[0]  # hey's flat-out connections
        fixed_connections = clients(args.rate)
        for name in urls:  # warm-up
            hey(urls[name] + "/score", body, 2, None, flat_out)
        for repeat in range(args.repeats):
            for name in urls:
                runs = {
                    "fixed": steady(urls[name] + "/score", body, args.duration, args.rate,
                                    fixed_connections),
                    "burst": hey(urls[name] + "/score", body, args.duration, args.rate,
                                 fixed_connections),
                    "max": hey(urls[name] + "/score", body, args.duration, None, flat_out),
                    "replay": best_replay(urls[name], bodies, args.duration,
                                          args.concurrency, cpu_parts(name)),
                }
                before = decisions_so_far(urls[name]) if name in servers else {}
                runs["mix"] = wrk(urls[name], bodies, args.duration, mix_connections,
                                  delay_ms=MIX_DELAY_MS)
                if name in servers:
                    runs["mix"]["explained"] = explained_share(before,
                                                               decisions_so_far(urls[name]))
                for kind, run in runs.items():
                    results.setdefault((name, kind), []).append(run)
                f, m, r, x = runs["fixed"], runs["max"], runs["replay"], runs["mix"]
                b = runs["burst"]
                errors = sum(run["non_200"] for run in runs.values())
                not_ok += errors
                print(f"  round {repeat + 1} {name:7s} {args.rate}/s steady: p50 "
                      f"{f['p50_ms']:.2f} p99 {f['p99_ms']:.2f} ms ({f['rps']:.0f}/s, "
                      f"{f['together']:.0%} left together) | in hey's bursts: p50 "
                      f"{b['p50_ms']:.2f} p99 {b['p99_ms']:.2f} ms ({b['together']:.0%} left "
                      f"together) | paced "
                      f"replay p50 {x['p50_ms']:.2f} p99 {x['p99_ms']:.2f} ms "
                      f"({x['rps']:.0f}/s, {x.get('explained', 0):.1%} explained) | hey max "
                      f"{m['rps']:.0f}/s | wrk replay max {r['rps']:.0f}/s ("
                      + ", ".join(f"{c} conns {v:.0f}/s" for c, v in r["by_level"].items())
                      + "; best: p99 "
                      f"{r['p99_ms']:.1f} ms, cores {r['busy']:.0%} busy; CPU s: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu"].items())
                      + f") | non-200 {errors}", flush=True)
        med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]
                   if m not in ("cpu", "by_level")} for k, v in results.items()}
        drains = ", ".join(f"{n} {drain_sizes(urls[n])}" for n in SERVICES)
        print(f"\nmedians of {args.repeats} rounds (load generator on the same machine); "
              f"transactions per drain on average: {drains}")
        header = (f"{'':9s}{'p50 ms':>9s}{'p99 ms':>9s}{'rate/s':>9s}{'burst p99':>11s}"
                  f"{'paced p99':>11s}"
                  f"{'paced/s':>9s}{'hey max/s':>11s}{'replay max/s':>14s}{'replay p99':>12s}"
                  f"{'cores busy':>12s}")
        print(header)
        for name in urls:
            f, m, r = med[(name, "fixed")], med[(name, "max")], med[(name, "replay")]
            x, b = med[(name, "mix")], med[(name, "burst")]
            print(f"{name:9s}{f['p50_ms']:>9.2f}{f['p99_ms']:>9.2f}{f['rps']:>9.0f}"
                  f"{b['p99_ms']:>9.2f}ms"
                  f"{x['p99_ms']:>9.2f}ms{x['rps']:>9.0f}"
                  f"{m['rps']:>11.0f}{r['rps']:>14.0f}{r['p99_ms']:>10.1f}ms"
                  f"{r['busy']:>12.0%}")
        def by_level(name: str) -> str:
            runs = results[(name, "replay")]
            return ", ".join(f"{c}: {statistics.median(r['by_level'][c] for r in runs):.0f}/s"
                             for c in args.concurrency)

        print("replay max by connections (medians of the rounds): "
              + "; ".join(f"{name} {by_level(name)}" for name in urls))
        on, off = med[("sqlite", "mix")], med[(NO_REASONS, "mix")]
        print(f"reasons' cost on SQLite, the same runs with REASON_CODES=0: paced real "
              f"traffic ({on['explained']:.1%} of it reviews and declines, answered with "
              f"reasons) p99 {on['p99_ms']:.2f} vs {off['p99_ms']:.2f} ms, p50 "
              f"{on['p50_ms']:.2f} vs {off['p50_ms']:.2f} ms; replay max "
              f"{med[('sqlite', 'replay')]['rps'] / med[(NO_REASONS, 'replay')]['rps']:.2f}x")
        bare_replay = med[("bare", "replay")]["rps"]
        failed = []
        for name in ("sqlite", "redis"):
            p99 = med[(name, "fixed")]["p99_ms"]
            mix = med[(name, "mix")]
            ratio = med[(name, "replay")]["rps"] / bare_replay
            ok_p99, ok_ratio = p99 <= P99_TARGET_MS, ratio >= THROUGHPUT_TARGET
            ok_mix = mix["p99_ms"] <= P99_TARGET_MS
            failed += [] if ok_p99 and ok_ratio and ok_mix else [name]
            burst = med[(name, "burst")]["p99_ms"]
            print(f"{name}: p99 {p99:.2f} ms at {args.rate}/s steady (target <= "
                  f"{P99_TARGET_MS:.0f}: {'PASS' if ok_p99 else 'MISS'}; in hey's bursts of "
                  f"{fixed_connections} {burst:.2f} ms); real traffic with reasons, paced at "
                  f"{mix['rps']:.0f}/s: p99 {mix['p99_ms']:.2f} ms "
                  f"({'PASS' if ok_mix else 'MISS'}); replay max throughput {ratio:.2f}x bare "
                  f"(target >= {THROUGHPUT_TARGET}: {'PASS' if ok_ratio else 'MISS'}); hey "
                  f"one body {med[(name, 'max')]['rps'] / med[('bare', 'max')]['rps']:.2f}x")
        if FSYNC_ALWAYS in servers:
            a, e = med[(FSYNC_ALWAYS, "mix")], med[("redis", "mix")]
            print(f"redis with appendfsync always against everysec: replay max "
                  f"{med[(FSYNC_ALWAYS, 'replay')]['rps'] / med[('redis', 'replay')]['rps']:.2f}x;"
                  f" paced real traffic p50 {a['p50_ms']:.2f} vs {e['p50_ms']:.2f} ms, p99 "
                  f"{a['p99_ms']:.2f} vs {e['p99_ms']:.2f} ms")
        two = med[("redis-2w", "replay")]["rps"] / med[("redis", "replay")]["rps"]
        print(f"redis, two workers / one worker (replay max): {two:.2f}x (target >= "
              f"{TWO_WORKERS_TARGET}: {'PASS' if two >= TWO_WORKERS_TARGET else 'MISS'}); "
              f"p99 at {args.rate}/s steady {med[('redis-2w', 'fixed')]['p99_ms']:.2f} ms")
        cores = os.cpu_count() or 1
        cost = {n: med[(n, "replay")]["busy"] * cores * 1000 / med[(n, "replay")]["rps"]
                for n in urls}
        print(f"cores busy during the replay: one worker {med[('redis', 'replay')]['busy']:.0%},"
              f" two workers {med[('redis-2w', 'replay')]['busy']:.0%}; CPU per transaction "
              "(server, store and load generator together): "
              + ", ".join(f"{n} {cost[n]:.3f}" for n in cost) + " core-ms")
        print("CPU per transaction during the replay, by process (core-ms; medians of the "
              "rounds; 'other' is the rest of the machine, this script included):")
        for name in urls:
            runs = results[(name, "replay")]
            per_tx = {part: statistics.median(r["cpu"][part] * 1000 / (r["rps"] * args.duration)
                                              for r in runs)
                      for part in ("server", "redis", "wrk")}
            total = cost[name]
            print(f"  {name:9s} server {per_tx['server']:.3f}, redis-server "
                  f"{per_tx['redis']:.3f}, wrk {per_tx['wrk']:.3f}, other "
                  f"{total - sum(per_tx.values()):.3f} (all {total:.3f})")
        for name in ("sqlite", "redis"):
            store = open_store(stores[name])
            rows = sum(store.day_counts().values())
            print(f"{name} store: {rows:,} transactions, {store.size_bytes() / 2**20:.1f} MiB, "
                  f"{store.size_bytes() / max(rows, 1):.0f} bytes per transaction")
            store.close()
        if not_ok:
            raise SystemExit(f"ERROR: {not_ok} answers were not 200 (see the rounds above); "
                             "the figures do not count")
    finally:
        for server in servers.values():
            server.stop()
        os.killpg(bare.pid, 15)
        bare.wait(timeout=20)
        for server in set(redis_of.values()):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
