"""The online half of the demo: run the BentoML service, score a few transactions, watch it
pick up a new champion.

``make demo`` starts the service after the batch path, keeps it running through the
monitoring story (so a promotion is seen by a live service) and stops it at the end. It can
also run alone on a filled DATA_DIR: ``.venv/bin/python -m scripts.demo_online``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq

from fraudkit import lake
from fraudkit.config import Settings
from scripts.serving import BentoServer

#: Ids of the demo's example requests: far above the simulator's, so they are new.
EXAMPLE_ID_BASE = 990_000_000


class ServiceProcess:
    """``bentoml serve`` of ``bento/service.py`` on a free localhost port, as a context
    manager: ready (``/readyz`` 200) on entry, stopped on exit."""

    url: str  #: set on entry, once the server listens
    client: httpx.Client

    def __init__(self, settings: Settings, port: int | None = None, timeout: float = 120,
                 env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.timeout = timeout
        full_env = {**os.environ, "DATA_DIR": str(settings.data_dir), **(env or {})}
        full_env.pop("FRAUD_API_KEY", None)
        # The service's log goes to a file, not a pipe: nobody reads a pipe while the demo
        # runs, and a full one would block the service.
        log = Path(tempfile.mkstemp(prefix="fraud-service-", suffix=".log")[1])
        self.server = BentoServer(full_env, log, port=port)
        self._next_id = EXAMPLE_ID_BASE

    def __enter__(self) -> ServiceProcess:
        try:
            self.ready_seconds = self.server.start(timeout=self.timeout)
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None
        # Only now: a start may move the server off a port that was taken meanwhile.
        self.url = self.server.url
        self.client = httpx.Client(base_url=self.url, timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the whole process tree (the worker runs in a session of its own)."""
        self.client.close()
        self.server.stop()
        self.server.log_path.unlink(missing_ok=True)

    def example(self, customer_id: int, terminal_id: int, tx_datetime: str,
                amount: float) -> dict[str, Any]:
        """A new transaction in the raw contract, with a fresh id."""
        self._next_id += 1
        return {"transaction_id": self._next_id, "tx_datetime": tx_datetime,
                "customer_id": customer_id, "terminal_id": terminal_id, "tx_amount": amount}

    def score(self, tx: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """POST /score; returns the answer and the round trip in milliseconds."""
        started = time.perf_counter()
        response = self.client.post("/score", json=tx)
        response.raise_for_status()
        return response.json(), (time.perf_counter() - started) * 1000

    def wait_for_version(self, version: str, tx: dict[str, Any],
                         timeout: float = 60) -> tuple[dict[str, Any], float]:
        """Send ``tx`` again (a client's retry: the decision log keeps its latest answer,
        and no made-up transaction enters any feature window) until the answer comes from
        ``version``; returns that answer and the seconds waited."""
        started = time.perf_counter()
        while True:
            answer, _ = self.score(tx)
            if answer["model_version"] == version:
                return answer, time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"the service still answers with {answer['model_version']} "
                                 f"{timeout:.0f}s after {version} became champion")
            time.sleep(0.1)


def print_answer(tx: dict[str, Any], answer: dict[str, Any], ms: float | None = None) -> None:
    f = answer["features"]
    took = f"{ms:.1f} ms; " if ms is not None else ""
    print(f"    POST /score customer {tx['customer_id']} amount {tx['tx_amount']:>7.2f}: "
          f"{answer['decision']:8s} score {answer['score']:.4f} model {answer['model_version']}"
          f" ({took}customer_nb_tx_7d={f['customer_nb_tx_7d']}, "
          f"terminal_risk_30d={f['terminal_risk_30d']:.3f})", flush=True)
    if answer.get("reasons"):
        print("      reasons: " + ", ".join(f"{r['feature']} {r['contribution']:+.3f}"
                                            for r in answer["reasons"]), flush=True)


def live_traffic(service: ServiceProcess, day: str, landing_file: Path,
                 chunk: int = 200, examples: bool = True) -> list[dict[str, Any]]:
    """Score every transaction of ``day`` (its landing file, before it is ingested) through
    ``POST /score_batch``, in time order, as the service would see them live; prints what
    it decided and (with ``examples``) three answers, and returns them."""
    frame = pq.read_table(landing_file).to_pandas()
    frame = frame.sort_values(["tx_datetime", "transaction_id"], kind="stable")
    times = frame["tx_datetime"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    payload = [{"transaction_id": int(r.transaction_id), "tx_datetime": t,
                "customer_id": int(r.customer_id), "terminal_id": int(r.terminal_id),
                "tx_amount": float(r.tx_amount)}
               for r, t in zip(frame.itertuples(index=False), times, strict=True)]
    answers: list[dict[str, Any]] = []
    started = time.perf_counter()
    for first in range(0, len(payload), chunk):
        response = service.client.post("/score_batch",
                                       json={"transactions": payload[first:first + chunk]})
        response.raise_for_status()
        answers.extend(response.json()["results"])
    took = time.perf_counter() - started
    decisions = Counter(a["decision"] for a in answers)
    print(f"    {len(answers):,} transactions of {day} scored in {took:.1f}s "
          f"({len(answers) / took:,.0f}/s, /score_batch of {chunk}): "
          + ", ".join(f"{n:,} {d}" for d, n in sorted(decisions.items())), flush=True)
    if not examples:
        return answers
    # One answer of each decision where the day has it, the first ones otherwise.
    shown = {a["decision"]: i for i, a in reversed(list(enumerate(answers)))}
    picks = sorted(shown.values())[:3] or list(range(min(3, len(answers))))
    for i in picks:
        print_answer(payload[i], answers[i])
    customer = payload[picks[0]]["customer_id"]
    risk = service.client.get(f"/customers/{customer}/risk").json()
    print(f"    GET /customers/{customer}/risk: latest batch prediction {risk.get('decision')} "
          f"score {risk.get('score', float('nan')):.4f} ({risk.get('tx_datetime')}, model "
          f"{risk.get('model_version')})", flush=True)
    return answers


def newest_landed(settings: Settings) -> dict[str, Any]:
    """The first transaction of the raw table's newest day, as a request: sending it is a
    retry of a landed transaction, so it changes no feature window and its answer's
    features equal the batch ones (the service's history holds the newest days)."""
    raw_uri = settings.table_uri("raw_transactions")
    options = settings.storage_options
    row = lake.read_days(raw_uri, lake.partition_values(raw_uri, options)[-1:],
                         storage_options=options).to_pylist()[0]
    return {"transaction_id": row["transaction_id"],
            "tx_datetime": row["tx_datetime"].strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "customer_id": row["customer_id"], "terminal_id": row["terminal_id"],
            "tx_amount": row["tx_amount"]}


def show_examples(service: ServiceProcess, settings: Settings) -> dict[str, Any]:
    """Score three transactions of known customers (a usual, a higher and a large amount)
    and look up the first customer's latest batch prediction; returns the first request."""
    raw_uri = settings.table_uri("raw_transactions")
    options = settings.storage_options
    last = lake.partition_values(raw_uri, options)[-1]
    rows = lake.read_days(raw_uri, [last], storage_options=options).to_pylist()[:3]
    examples = [service.example(r["customer_id"], r["terminal_id"],
                                r["tx_datetime"].strftime("%Y-%m-%dT%H:%M:%SZ"), amount)
                for r, amount in zip(rows, (25.0, 80.0, 450.0), strict=False)]
    for tx in examples:
        answer, ms = service.score(tx)
        print_answer(tx, answer, ms)
    customer = examples[0]["customer_id"]
    risk = service.client.get(f"/customers/{customer}/risk").json()
    print(f"    GET /customers/{customer}/risk: latest batch prediction {risk.get('decision')} "
          f"score {risk.get('score', float('nan')):.4f} ({risk.get('tx_datetime')}, model "
          f"{risk.get('model_version')})", flush=True)
    return examples[0]


def main() -> None:
    settings = Settings.from_env()
    print("==> online service: bentoml serve (bento/service.py)", flush=True)
    with ServiceProcess(settings) as service:
        print(f"    ready in {service.ready_seconds:.1f}s at {service.url}")
        show_examples(service, settings)
    print("    service stopped; `make serve` keeps it running on port 3000")


if __name__ == "__main__":
    main()
