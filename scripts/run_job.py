"""Run one of the code location's jobs headless, as a single run over a range of days.

    python -m scripts.run_job ingest_and_features --first 2026-06-01 --last 2026-06-10
    python -m scripts.run_job train

The run is recorded in the instance at DAGSTER_HOME, so the UI (`make dev`) shows it.
"""

from __future__ import annotations

import argparse
import json

import dagster as dg

from scripts.jobs import ensure_dagster_home, quiet_beta_warnings, run_job


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", help="ingest_and_features, train, score, ...")
    parser.add_argument("--first", help="first day of the partition range (YYYY-MM-DD)")
    parser.add_argument("--last", help="last day of the partition range (YYYY-MM-DD)")
    parser.add_argument("--config", help="run config as JSON", default=None)
    args = parser.parse_args(argv)
    if bool(args.first) != bool(args.last):
        parser.error("give both --first and --last, or neither")
    quiet_beta_warnings()
    ensure_dagster_home()
    days = (args.first, args.last) if args.first else None
    with dg.DagsterInstance.get() as instance:
        result = run_job(args.job, instance, days,
                         json.loads(args.config) if args.config else None)
    print(f"run {result.run_id} of {args.job} succeeded")


if __name__ == "__main__":
    main()
