"""Replay raw transactions through the running service and compare with the batch tables.

The service must have been started with ``ONLINE_STORE_CUTOFF`` = the day before ``--first``
(so its store holds nothing of the replayed days and every customer window of them comes
from the replayed stream). Transactions go out in ``(tx_datetime, transaction_id)`` order:
in ordered ``/score_batch`` chunks, with every ``--single-every``-th one sent alone to
``/score``. Each answer is compared with ``transaction_features`` (counts exactly, the rest
within 1e-9) and ``batch_predictions`` (score within 1e-6; the reasons of a review or
decline: the same features, contributions within 1e-6).

    .venv/bin/python -m scripts.replay_parity --url http://localhost:3000 \\
        --first 2026-06-21 --last 2026-06-23

``--crash-at N`` starts the service itself (on ``DATA_DIR`` and ``ONLINE_STORE_URL``, with
the cutoff set for you), kills its whole process tree with SIGKILL after N transactions,
starts it again and finishes the replay: the answers after the restart must be as exact as
before it, and every answered transaction must be in the online store's decision log.

    .venv/bin/python -m scripts.replay_parity --first 2026-06-21 --last 2026-06-21 \\
        --crash-at 2000
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np
import pandas as pd

from fraudkit import lake
from fraudkit.config import Settings
from fraudkit.features import COUNT_COLUMNS, FEATURE_COLUMNS
from fraudkit.monitoring.consistency import feature_matches, reasons_match, score_matches
from fraudkit.store import open_store
from scripts.serving import BentoServer


@dataclass
class ParityReport:
    transactions: int = 0
    matched: int = 0
    max_feature_diff: float = 0.0
    max_score_diff: float = 0.0
    explained: int = 0  # answers with reasons (reviews and declines)
    max_reason_diff: float = 0.0
    seconds: float = 0.0
    mismatches: list[str] = field(default_factory=list)
    crashed_at: int | None = None
    logged: int | None = None  # answered transactions found in the online store

    @property
    def rate(self) -> float:
        return self.matched / self.transactions if self.transactions else 0.0

    def __str__(self) -> str:
        return (f"parity {self.rate:.2%} ({self.matched}/{self.transactions} transactions), "
                f"largest feature difference {self.max_feature_diff:.3g}, largest score "
                f"difference {self.max_score_diff:.3g}, {self.explained} answers with "
                f"reasons (largest contribution difference {self.max_reason_diff:.3g}), "
                f"{self.seconds:.1f}s"
                + (f"; crashed after {self.crashed_at} and went on"
                   if self.crashed_at is not None else "")
                + (f"; {self.logged}/{self.transactions} answers in the decision log"
                   if self.logged is not None else ""))


def _read(settings: Settings, table: str, days: list[str]) -> pd.DataFrame:
    return lake.read_days(settings.table_uri(table), days,
                          storage_options=settings.storage_options).to_pandas()


def replay(url: str, first: str, last: str, settings: Settings | None = None,
           chunk: int = 200, single_every: int = 50, headers: dict | None = None,
           client: httpx.Client | None = None, crash_at: int | None = None,
           crash: Callable[[], None] | None = None, keepalive: bool = True) -> ParityReport:
    """Send the raw transactions of ``first..last`` to the service; compare every answer.

    With ``crash_at``, ``crash()`` runs once ``crash_at`` transactions are answered (kill
    and restart the service, or its store) before the replay goes on. Without
    ``keepalive`` each request opens its own connection, so the requests spread over all
    the service's workers (one connection stays with one worker)."""
    settings = settings or Settings.from_env()
    days = lake.day_range(first, last)
    raw = _read(settings, "raw_transactions", days)
    raw = raw.sort_values(["tx_datetime", "transaction_id"], kind="stable").reset_index(drop=True)
    features = _read(settings, "transaction_features", days).set_index("transaction_id")
    scores = _read(settings, "batch_predictions", days).set_index("transaction_id")
    times = raw["tx_datetime"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    payload = [
        {"transaction_id": int(r.transaction_id), "tx_datetime": t,
         "customer_id": int(r.customer_id), "terminal_id": int(r.terminal_id),
         "tx_amount": float(r.tx_amount)}
        for r, t in zip(raw.itertuples(index=False), times, strict=True)
    ]
    own = client is None
    client = client or httpx.Client(
        base_url=url, timeout=60, headers=headers,
        limits=httpx.Limits(max_keepalive_connections=None if keepalive else 0))
    answers: list[dict] = []
    started = time.perf_counter()
    try:
        i = 0
        crashed = False
        while i < len(payload):
            if crash_at is not None and not crashed and i >= crash_at:
                if crash is None:
                    raise ValueError("crash_at needs a crash() to run")
                crash()
                crashed = True
            if single_every and i % single_every == 0:
                response = client.post("/score", json=payload[i])
                response.raise_for_status()
                answers.append(response.json())
                i += 1
                continue
            stop = min(len(payload), i + chunk)
            if crash_at is not None and not crashed and i < crash_at:
                stop = min(stop, crash_at)
            if single_every:  # stop the chunk before the next single request
                stop = min(stop, (i // single_every + 1) * single_every)
            response = client.post("/score_batch", json={"transactions": payload[i:stop]})
            response.raise_for_status()
            answers.extend(response.json()["results"])
            i = stop
    finally:
        if own:
            client.close()
    report = ParityReport(transactions=len(payload), seconds=time.perf_counter() - started,
                          crashed_at=crash_at if crash_at is not None and crash_at < len(payload)
                          else None)
    for answer in answers:
        tx_id = answer["transaction_id"]
        ok = True
        expected = features.loc[tx_id]
        for name in FEATURE_COLUMNS:
            got, want = answer["features"][name], expected[name]
            diff = abs(float(got) - float(want))
            bad = not feature_matches(name, got, want) or (
                name in COUNT_COLUMNS and not isinstance(got, int))  # JSON counts are ints
            report.max_feature_diff = max(report.max_feature_diff, float(diff))
            if bad:
                ok = False
                report.mismatches.append(f"{tx_id} {name}: online {got} batch {want}")
        score_diff = abs(answer["score"] - float(scores.loc[tx_id, "score"]))
        report.max_score_diff = max(report.max_score_diff, score_diff)
        if not score_matches(answer["score"], float(scores.loc[tx_id, "score"])):
            ok = False
            report.mismatches.append(f"{tx_id} score: online {answer['score']} batch "
                                     f"{scores.loc[tx_id, 'score']}")
        batch_reasons = scores.loc[tx_id, "reasons"] if "reasons" in scores.columns else None
        same, reason_diff = reasons_match(answer.get("reasons"), batch_reasons)
        report.explained += answer.get("reasons") is not None
        report.max_reason_diff = max(report.max_reason_diff, reason_diff)
        if not same:
            ok = False
            report.mismatches.append(f"{tx_id} reasons: online {answer.get('reasons')} "
                                     f"batch {batch_reasons}")
        report.matched += ok
    served = {a["model_version"] for a in answers}
    scored_by = set(scores.loc[raw["transaction_id"], "model_version"])
    if served != scored_by:
        report.mismatches.insert(0, (
            f"the service answered with {sorted(served)} but batch_predictions of these days "
            f"were scored by {sorted(scored_by)}: scores can only match for the same model "
            "(roll back, or re-run the score job for these days)"))
    if len(answers) != len(payload) or set(np.unique([a["transaction_id"] for a in answers])) \
            != set(raw["transaction_id"].tolist()):
        report.mismatches.append("the service did not answer every transaction exactly once")
        report.matched = min(report.matched, len(answers) - 1)
    return report


def logged_ids(store_url: str, days: list[str]) -> set[int]:
    """Transaction ids in the online store's decision log for these days."""
    store = open_store(store_url)
    try:
        return {i for day in days
                for i in store.day_decisions(day)["transaction_id"].to_pylist()}
    finally:
        store.close()


def replay_with_crash(first: str, last: str, crash_at: int, chunk: int = 200,
                      single_every: int = 50, extra_env: dict[str, str] | None = None,
                      settings: Settings | None = None) -> ParityReport:
    """Start the service with the cutoff before ``first``, replay with a crash at
    ``crash_at``, and count the answers that reached the decision log."""
    settings = settings or Settings.from_env()
    env = {**os.environ, "DATA_DIR": str(settings.data_dir),
           "ONLINE_STORE_CUTOFF": lake.shift_day(first, -1), **(extra_env or {})}
    env.pop("FRAUD_API_KEY", None)
    log_path = settings.data_dir / "replay-service.log"
    server = BentoServer(env, log_path)
    server.start()

    def crash() -> None:
        server.kill(signal.SIGKILL)
        server.start()

    try:
        report = replay(server.url, first, last, settings, chunk=chunk,
                        single_every=single_every, crash_at=crash_at, crash=crash,
                        keepalive=False)
    finally:
        server.stop()
    days = lake.day_range(first, last)
    raw = _read(settings, "raw_transactions", days)["transaction_id"]
    store_url = env.get("ONLINE_STORE_URL") or settings.online_store_url
    report.logged = len(logged_ids(store_url, days) & set(raw.tolist()))
    if report.logged != report.transactions:
        report.mismatches.append(f"only {report.logged} of {report.transactions} answered "
                                 "transactions are in the online store's decision log")
        report.matched = min(report.matched, report.logged)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://localhost:3000")
    parser.add_argument("--first", required=True, help="first replayed day, YYYY-MM-DD")
    parser.add_argument("--last", required=True, help="last replayed day, YYYY-MM-DD")
    parser.add_argument("--chunk", type=int, default=200,
                        help="transactions per /score_batch request")
    parser.add_argument("--single-every", type=int, default=50,
                        help="send every N-th transaction alone to /score")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--crash-at", type=int, default=None,
                        help="start the service here, SIGKILL its whole process tree after N "
                        "transactions, restart it and finish (checks the decision log too)")
    args = parser.parse_args(argv)
    headers = {"x-api-key": args.api_key} if args.api_key else None
    if args.crash_at is None:
        report = replay(args.url, args.first, args.last, chunk=args.chunk,
                        single_every=args.single_every, headers=headers)
    else:
        report = replay_with_crash(args.first, args.last, args.crash_at, chunk=args.chunk,
                                   single_every=args.single_every)
    print(report)
    for line in report.mismatches[:20]:
        print("  ", line)
    if report.rate < 1.0:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
