"""Drift report time for 1M current rows against a 100k reference, versus the same
per-feature statistics (normed Wasserstein, Jensen-Shannon) computed directly with scipy.

    .venv/bin/python benchmarks/drift.py [--rows 1000000] [--reference 100000] [--repeats 3]

The report is what the ``drift_report`` asset makes of one day: the Evidently report (data
drift of the 15 features, prediction drift, dataset-level data quality) and its HTML file.
It samples the current day to ``DriftConfig.max_current_rows`` (200k by default) and says
so in its summary (``current_rows_used``); scipy reads every row. The two are timed in
alternation, medians of ``--repeats`` rounds.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import verdict
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from fraudkit.features import FEATURE_COLUMNS
from fraudkit.monitoring.drift import CATEGORICAL_FEATURES, DriftConfig, build_report

#: Issue 4: the report at no more than 3x the direct computation.
TARGET_VS_SCIPY = 3.0


def frame(n: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {c: rng.gamma(2.0, 20.0 * (1 + shift), n) for c in FEATURE_COLUMNS}
    for c in CATEGORICAL_FEATURES:
        data[c] = (rng.random(n) < 0.2 + shift / 4).astype(np.int64)
    data["score"] = rng.beta(1, 30 * (1 - shift / 2), n)
    return pd.DataFrame(data)


def scipy_stats(cur: pd.DataFrame, ref: pd.DataFrame) -> dict[str, float]:
    out = {}
    for c in [*FEATURE_COLUMNS, "score"]:
        r, x = ref[c].to_numpy(), cur[c].to_numpy()
        if c in CATEGORICAL_FEATURES:
            p = np.bincount(r, minlength=2) / len(r)
            q = np.bincount(x, minlength=2) / len(x)
            out[c] = float(jensenshannon(p, q))
        else:
            out[c] = float(wasserstein_distance(r, x) / np.std(r))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cur, ref = frame(args.rows, 0.1, 1), frame(args.reference, 0.0, 2)
    build_report(cur.head(5000), ref.head(5000))  # imports and first-call warm-up
    report_t, scipy_t = [], []
    html = Path(tempfile.mkdtemp(prefix="bench-drift-")) / "report.html"
    for _ in range(args.repeats):
        t = time.perf_counter()
        snapshot, summary = build_report(cur, ref, DriftConfig())
        snapshot.save_html(str(html))
        report_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        direct = scipy_stats(cur, ref)
        scipy_t.append(time.perf_counter() - t)
    html.unlink(missing_ok=True)
    html.parent.rmdir()
    rep, sci = statistics.median(report_t), statistics.median(scipy_t)
    diff = max(abs(c.drift_score - direct[c.column]) for c in summary.columns)
    print(f"current {args.rows:,} rows (report used {summary.current_rows_used:,}: sampled="
          f"{summary.sampled}), reference {args.reference:,} rows, {args.repeats} repeats")
    print(f"evidently report + HTML (drift, prediction drift, quality): median {rep:.2f}s "
          f"{[round(x, 2) for x in report_t]}")
    print(f"scipy, same statistics on all rows:                        median {sci:.2f}s "
          f"{[round(x, 2) for x in scipy_t]}")
    print(f"max |score difference| {diff:.4f} (sampling)")
    print(f"\nTarget report <= {TARGET_VS_SCIPY:.0f}x scipy: {rep / sci:.2f}x  "
          f"{verdict(rep / sci, TARGET_VS_SCIPY, higher_is_better=False)}")


if __name__ == "__main__":
    main()
