"""Replay raw transactions through the running service and compare with the batch tables.

The service must have been started with ``ONLINE_STORE_CUTOFF`` = the day before ``--first``
(so its store holds nothing of the replayed days and every customer window of them comes
from the replayed stream). Transactions go out in ``(tx_datetime, transaction_id)`` order:
in ordered ``/score_batch`` chunks, with every ``--single-every``-th one sent alone to
``/score``. Each answer is compared with ``transaction_features`` (counts exactly, the rest
within 1e-9) and ``batch_predictions`` (score within 1e-6).

    .venv/bin/python -m scripts.replay_parity --url http://localhost:3000 \\
        --first 2026-06-21 --last 2026-06-23
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import pandas as pd
from deltalake import DeltaTable

from fraudkit import lake
from fraudkit.config import Settings
from fraudkit.features import COUNT_COLUMNS, FEATURE_COLUMNS

FEATURE_TOLERANCE = 1e-9
SCORE_TOLERANCE = 1e-6


@dataclass
class ParityReport:
    transactions: int = 0
    matched: int = 0
    max_feature_diff: float = 0.0
    max_score_diff: float = 0.0
    seconds: float = 0.0
    mismatches: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.matched / self.transactions if self.transactions else 0.0

    def __str__(self) -> str:
        return (f"parity {self.rate:.2%} ({self.matched}/{self.transactions} transactions), "
                f"largest feature difference {self.max_feature_diff:.3g}, largest score "
                f"difference {self.max_score_diff:.3g}, {self.seconds:.1f}s")


def _read(uri: str, days: list[str]) -> pd.DataFrame:
    return DeltaTable(uri).to_pandas(filters=[("day", "in", days)])


def replay(url: str, first: str, last: str, settings: Settings | None = None,
           chunk: int = 200, single_every: int = 50, headers: dict | None = None,
           client: httpx.Client | None = None) -> ParityReport:
    """Send the raw transactions of ``first..last`` to the service; compare every answer."""
    settings = settings or Settings.from_env()
    days = lake.day_range(first, last)
    raw = _read(settings.table_uri("raw_transactions"), days)
    raw = raw.sort_values(["tx_datetime", "transaction_id"], kind="stable").reset_index(drop=True)
    features = _read(settings.table_uri("transaction_features"), days).set_index("transaction_id")
    scores = _read(settings.table_uri("batch_predictions"), days).set_index("transaction_id")
    times = raw["tx_datetime"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    payload = [
        {"transaction_id": int(r.transaction_id), "tx_datetime": t,
         "customer_id": int(r.customer_id), "terminal_id": int(r.terminal_id),
         "tx_amount": float(r.tx_amount)}
        for r, t in zip(raw.itertuples(index=False), times, strict=True)
    ]
    own = client is None
    client = client or httpx.Client(base_url=url, timeout=60, headers=headers)
    answers: list[dict] = []
    started = time.perf_counter()
    try:
        i = 0
        while i < len(payload):
            if single_every and i % single_every == 0:
                response = client.post("/score", json=payload[i])
                response.raise_for_status()
                answers.append(response.json())
                i += 1
                continue
            stop = min(len(payload), i + chunk)
            if single_every:  # stop the chunk before the next single request
                stop = min(stop, (i // single_every + 1) * single_every)
            response = client.post("/score_batch", json={"transactions": payload[i:stop]})
            response.raise_for_status()
            answers.extend(response.json()["results"])
            i = stop
    finally:
        if own:
            client.close()
    report = ParityReport(transactions=len(payload), seconds=time.perf_counter() - started)
    for answer in answers:
        tx_id = answer["transaction_id"]
        ok = True
        expected = features.loc[tx_id]
        for name in FEATURE_COLUMNS:
            got, want = answer["features"][name], expected[name]
            if name in COUNT_COLUMNS:
                diff = abs(int(got) - int(want))
                bad = diff != 0 or not isinstance(got, int)
            else:
                diff = abs(float(got) - float(want))
                bad = not diff <= FEATURE_TOLERANCE
            report.max_feature_diff = max(report.max_feature_diff, float(diff))
            if bad:
                ok = False
                report.mismatches.append(f"{tx_id} {name}: online {got} batch {want}")
        score_diff = abs(answer["score"] - float(scores.loc[tx_id, "score"]))
        report.max_score_diff = max(report.max_score_diff, score_diff)
        if not score_diff <= SCORE_TOLERANCE or math.isnan(score_diff):
            ok = False
            report.mismatches.append(f"{tx_id} score: online {answer['score']} batch "
                                     f"{scores.loc[tx_id, 'score']}")
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
    args = parser.parse_args(argv)
    headers = {"x-api-key": args.api_key} if args.api_key else None
    report = replay(args.url, args.first, args.last, chunk=args.chunk,
                    single_every=args.single_every, headers=headers)
    print(report)
    for line in report.mismatches[:20]:
        print("  ", line)
    if report.rate < 1.0:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
