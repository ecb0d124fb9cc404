"""Online latency and throughput: the BentoML service against a bare ASGI baseline.

Starts, in one run, (1) the service (`bentoml serve`, online features + champion model) and
(2) a bare Starlette app on uvicorn that only parses the JSON and runs the same ONNX model on
a feature row without any lookup. Both are driven by `hey` (a real load generator) at a fixed
request rate and then flat out, ``--repeats`` times each, interleaved; it prints the medians
of p50/p99 latency and throughput, and the service/baseline ratios. Both run one worker
process, so the ratio measures per-worker cost. The machine may be shared: trust medians and
ratios more than single figures.

    DATA_DIR=... .venv/bin/python benchmarks/online.py [--rate 500] [--duration 10]

Targets (issue 3): p99 <= 10 ms at 500 req/s with the feature lookup, and max throughput
>= 0.5x the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    """One hey run; ``rate`` total req/s (spread over the connections) or None = flat out."""
    cmd = ["hey", "-z", f"{duration}s", "-c", str(concurrency), "-m", "POST",
           "-T", "application/json", "-D", str(body)]
    if rate:
        cmd += ["-q", str(max(1, rate // concurrency))]
    text = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout

    def grab(pattern: str) -> float:
        match = re.search(pattern, text)
        return float(match.group(1)) if match else float("nan")

    codes = dict(re.findall(r"\[(\d{3})\]\s+(\d+) responses", text))
    return {"rps": grab(r"Requests/sec:\s+([\d.]+)"),
            "p50_ms": grab(r"50% in ([\d.]+) secs") * 1000,
            "p99_ms": grab(r"99% in ([\d.]+) secs") * 1000,
            "non_200": sum(int(n) for c, n in codes.items() if c != "200")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=500, help="fixed request rate, req/s")
    parser.add_argument("--duration", type=int, default=10, help="seconds per hey run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32, help="connections, flat out")
    parser.add_argument("--bare-app", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_app:  # the baseline subprocess
        import uvicorn

        uvicorn.run(bare_app(args.bare_app), host="127.0.0.1", port=args.port,
                    log_level="warning", access_log=False)
        return
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed: `make bench-deps` (apt-get install hey)")

    from fraudkit import lake
    from fraudkit.config import Settings
    from fraudkit.registry import ModelRegistry

    settings = Settings.from_env()
    champion = ModelRegistry(settings.registry_dir).champion()
    raw_uri = settings.table_uri("raw_transactions")
    last = lake.partition_values(raw_uri)[-1]
    sample = lake.read_days(raw_uri, [last]).to_pylist()[0]
    tx = {"transaction_id": 900_000_000_001,
          "tx_datetime": sample["tx_datetime"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
          "customer_id": sample["customer_id"], "terminal_id": sample["terminal_id"],
          "tx_amount": sample["tx_amount"]}
    workdir = Path(tempfile.mkdtemp(prefix="bench-online-"))
    body = workdir / "body.json"
    body.write_text(json.dumps(tx))
    env = {**os.environ, "DATA_DIR": str(settings.data_dir)}
    env.pop("FRAUD_API_KEY", None)
    service_port, bare_port = free_port(), free_port()
    procs = {
        "service": subprocess.Popen(
            [str(Path(sys.executable).parent / "bentoml"), "serve", "service:FraudService",
             "--port", str(service_port)], cwd=ROOT / "bento", env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True),
        "bare": subprocess.Popen(
            [sys.executable, __file__, "--bare-app", str(champion.model_path),
             "--port", str(bare_port)], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True),
    }
    urls = {"service": f"http://127.0.0.1:{service_port}",
            "bare": f"http://127.0.0.1:{bare_port}"}
    try:
        wait_ready(urls["service"], procs["service"], "/readyz")
        wait_ready(urls["bare"], procs["bare"], "/score")
        print(f"request: {json.dumps(tx)}")
        print(f"service answer: {httpx.post(urls['service'] + '/score', json=tx).text[:200]}...")
        results: dict[tuple[str, str], list[dict]] = {}
        for name in urls:  # warm-up
            hey(urls[name] + "/score", body, 2, None, args.concurrency)
        for repeat in range(args.repeats):
            for name in urls:
                fixed = hey(urls[name] + "/score", body, args.duration, args.rate,
                            max(1, args.rate // 50))
                results.setdefault((name, "fixed"), []).append(fixed)
                flat = hey(urls[name] + "/score", body, args.duration, None, args.concurrency)
                results.setdefault((name, "max"), []).append(flat)
                print(f"  repeat {repeat + 1} {name:7s} fixed {args.rate}/s: p50 "
                      f"{fixed['p50_ms']:.2f} ms p99 {fixed['p99_ms']:.2f} ms "
                      f"({fixed['rps']:.0f}/s) | max: {flat['rps']:.0f}/s p99 "
                      f"{flat['p99_ms']:.1f} ms | non-200 {fixed['non_200'] + flat['non_200']}",
                      flush=True)
        med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]}
               for k, v in results.items()}
        print(f"\nmedians of {args.repeats} runs ({os.cpu_count()} cores, hey on the same "
              "machine):")
        print(f"{'':10s}{'p50 ms':>10s}{'p99 ms':>10s}{'rate/s':>10s}{'max req/s':>12s}")
        for name in urls:
            f, m = med[(name, "fixed")], med[(name, "max")]
            print(f"{name:10s}{f['p50_ms']:>10.2f}{f['p99_ms']:>10.2f}{f['rps']:>10.0f}"
                  f"{m['rps']:>12.0f}")
        s_fix, b_fix = med[("service", "fixed")], med[("bare", "fixed")]
        ratio = med[("service", "max")]["rps"] / med[("bare", "max")]["rps"]
        print(f"ratios service/bare: p50 {s_fix['p50_ms'] / b_fix['p50_ms']:.2f}x, p99 "
              f"{s_fix['p99_ms'] / b_fix['p99_ms']:.2f}x, max throughput {ratio:.2f}x")
        print(f"targets: p99 <= 10 ms at {args.rate}/s: "
              f"{'met' if s_fix['p99_ms'] <= 10 else 'NOT met'} ({s_fix['p99_ms']:.2f} ms); "
              f"throughput >= 0.5x bare: {'met' if ratio >= 0.5 else 'NOT met'} ({ratio:.2f}x)")
    finally:
        for proc in procs.values():
            os.killpg(proc.pid, 15)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
