"""benchmarks/online.py's reading of hey's per-request CSV: the latency percentiles the
p99 target is judged on, and the share of requests that left together, which tells a
steady rate from hey's bursts (see benchmarks/README.md, run S)."""

from __future__ import annotations

import statistics

import pytest

from benchmarks.online import _hey_csv, _latencies

HEADER = ("response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,"
          "status-code,offset")


def csv(requests: list[tuple[float, float, int]]) -> str:
    """hey's ``-o csv`` for (offset s, latency s, status) requests."""
    rows = [f"{lat:.4f},0.0001,0.0000,0.0001,{lat:.4f},0.0000,{status},{offset:.4f}"
            for offset, lat, status in requests]
    return "\n".join([HEADER, *rows]) + "\n"


def test_bursts_of_one_process_all_leave_together() -> None:
    # hey -c 10 -q 50: ten requests at once, every 20 ms
    requests = [(0.02 * k, 0.001 * (1 + i), 200) for k in range(20) for i in range(10)]
    result = _latencies([_hey_csv(csv(requests), 0.0)], duration=1)
    assert result["together"] == 1.0
    assert result["rps"] == 200
    assert result["non_200"] == 0
    latencies = sorted(1000 * lat for _, lat, _ in requests)
    assert result["p50_ms"] == pytest.approx(statistics.median(latencies))
    assert result["p99_ms"] == pytest.approx(statistics.quantiles(latencies, n=100)[98])


def test_processes_are_placed_by_their_start() -> None:
    # two clients, each every 4 ms: 2 ms apart they interleave, 0.1 ms apart they pair up
    one = csv([(0.004 * k, 0.002, 200) for k in range(100)])
    spread = _latencies([_hey_csv(one, 0.0), _hey_csv(one, 0.002)], duration=1)
    paired = _latencies([_hey_csv(one, 0.0), _hey_csv(one, 0.0001)], duration=1)
    assert spread["together"] == 0.0
    assert paired["together"] == 1.0
    assert spread["p99_ms"] == pytest.approx(2.0)


def test_errors_are_counted_and_an_empty_run_is_refused() -> None:
    requests = [(0.002 * k, 0.001, 500 if k % 50 == 0 else 200) for k in range(200)]
    assert _latencies([_hey_csv(csv(requests), 0.0)], duration=1)["non_200"] == 4
    with pytest.raises(SystemExit, match="is the server up"):
        _latencies([_hey_csv(HEADER + "\n", 0.0)], duration=1)
