"""The online half of the demo: start the service, score a few transactions, stop it.

``run_online_demo(settings)`` is called by ``scripts/demo.py`` after the batch path has
filled DATA_DIR; it can also run alone: ``.venv/bin/python -m scripts.demo_online``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fraudkit import lake
from fraudkit.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_online_demo(settings: Settings, port: int | None = None, timeout: float = 120) -> None:
    """Serve the champion on a free port, send a few transactions, print answers and latency."""
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATA_DIR": str(settings.data_dir)}
    env.pop("FRAUD_API_KEY", None)
    print(f"\n==> online service: bentoml serve on {url}", flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "bentoml"), "serve", "service:FraudService",
         "--port", str(port)], cwd=PROJECT_ROOT / "bento", env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the service exited:\n{proc.stderr.read()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"the service was not ready after {timeout:.0f}s")
            time.sleep(0.3)
        print(f"    ready in {time.perf_counter() - started:.1f}s")
        raw_uri = settings.table_uri("raw_transactions")
        last = lake.partition_values(raw_uri)[-1]
        rows = lake.read_days(raw_uri, [last]).to_pylist()[:3]
        examples = [{"transaction_id": 990_000_000 + i,
                     "tx_datetime": r["tx_datetime"].strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "customer_id": r["customer_id"], "terminal_id": r["terminal_id"],
                     "tx_amount": amount}
                    for i, (r, amount) in enumerate(zip(rows, (25.0, 80.0, 450.0),
                                                        strict=False))]
        with httpx.Client(base_url=url, timeout=10) as client:
            for tx in examples:
                t0 = time.perf_counter()
                answer = client.post("/score", json=tx).json()
                ms = (time.perf_counter() - t0) * 1000
                f = answer["features"]
                print(f"    POST /score customer {tx['customer_id']} amount {tx['tx_amount']:>6}: "
                      f"{answer['decision']:8s} score {answer['score']:.4f} model "
                      f"{answer['model_version']} ({ms:.1f} ms; customer_nb_tx_7d="
                      f"{f['customer_nb_tx_7d']}, terminal_risk_30d={f['terminal_risk_30d']:.3f})")
            risk = client.get(f"/customers/{examples[0]['customer_id']}/risk").json()
            print(f"    GET /customers/{examples[0]['customer_id']}/risk: latest batch "
                  f"prediction {risk.get('decision')} score {risk.get('score')} "
                  f"({risk.get('tx_datetime')})")
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    print("    service stopped; `make serve` keeps it running on port 3000")


if __name__ == "__main__":
    run_online_demo(Settings.from_env())
