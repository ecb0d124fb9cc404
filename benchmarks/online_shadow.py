"""What a shadow challenger costs the online service: p99 at a fixed rate with and without.

Starts, in one run, two services on the embedded SQLite store (one worker each), each on a
private copy of ``DATA_DIR``'s registry: ``champion`` alone, and ``shadow``, the same with a
shadow model (the registry's newest other version, or ``--shadow VERSION``), which scores
every request beside the champion and is logged. Rounds alternate the two at a steady
``--rate`` (default 500/s: one ``hey -c 1 -q 50`` process per 50 req/s, as in
benchmarks/online.py), then ``wrk`` replays distinct real transactions flat out (the
last day of ``raw_transactions`` with fresh ids, the service's store cut off before it).
Prints the medians and the ratios.

    DATA_DIR=... .venv/bin/python benchmarks/online_shadow.py [--rate 500] [--repeats 3]

Target: p99 <= 10 ms at 500 req/s with the shadow model loaded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

from benchmarks.online import clients, hey, replay_bodies, steady, wrk  # noqa: E402

P99_TARGET_MS = 10.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shadow", default=None, help="the shadow version (default: the "
                        "newest version that is not champion)")
    args = parser.parse_args(argv)
    if shutil.which("hey") is None or shutil.which("wrk") is None:
        raise SystemExit("hey and wrk are needed: `make bench-deps`")

    from fraudkit.config import Settings
    from fraudkit.registry import ModelRegistry, RegistryError
    from scripts.serving import BentoServer

    settings = Settings.from_env()
    workdir = Path(tempfile.mkdtemp(prefix="bench-shadow-"))
    # A registry each: a shadow.json in a shared one would be scored by both services.
    for name in ("champion", "shadow"):
        shutil.copytree(settings.registry_dir, workdir / f"registry-{name}")
    registry = ModelRegistry(workdir / "registry-shadow")
    try:
        champion = registry.champion().version
    except RegistryError as exc:
        raise SystemExit(f"{exc}\n(the benchmark serves DATA_DIR={settings.data_dir})") from exc
    others = [v for v in registry.versions() if v != champion]
    shadow = args.shadow or (others[-1] if others else None)
    if shadow is None:
        raise SystemExit(f"the registry holds only {champion}: a shadow needs a second "
                         "version (run `make demo`, whose retraining registers one)")
    bodies = workdir / "replay.jsonl"
    n_bodies, cutoff, _ = replay_bodies(settings, bodies, days=1)
    body = workdir / "body.json"
    body.write_text(bodies.read_text().splitlines()[0])
    env = {**os.environ, "DATA_DIR": str(settings.data_dir), "ONLINE_STORE_CUTOFF": cutoff}
    env.pop("FRAUD_API_KEY", None)
    servers = {}
    for name in ("champion", "shadow"):
        servers[name] = BentoServer(
            {**env, "ONLINE_STORE_URL": f"sqlite:///{workdir / f'{name}.sqlite3'}",
             "FRAUD_REGISTRY_DIR": str(workdir / f"registry-{name}")},
            workdir / f"{name}.log")
    try:
        registry.start_shadow(shadow, reason="benchmark")
        for server in servers.values():
            server.start()
        for name, want in (("champion", None), ("shadow", shadow)):
            status = httpx.get(servers[name].url + "/status", timeout=10).json()
            if (status.get("shadow") or {}).get("version") != want:
                raise SystemExit(f"the {name} service's shadow is {status.get('shadow')}, "
                                 f"not {want}")
        print(f"champion {champion}, shadow {shadow}; {os.cpu_count()} cores; replay of "
              f"{n_bodies:,} transactions")
        results: dict[str, dict[str, list[float]]] = {n: {"p50": [], "p99": [], "replay": []}
                                                      for n in servers}
        for server in servers.values():  # warm-up
            hey(server.url + "/score", body, 2, None, 16)
        for repeat in range(args.repeats):
            for name, server in servers.items():
                fixed = steady(server.url + "/score", body, args.duration, args.rate,
                               clients(args.rate))
                replay = wrk(server.url, bodies, args.duration, 32)
                if fixed["non_200"] or replay["non_200"]:
                    raise SystemExit(f"{name}: answers other than 200")
                results[name]["p50"].append(fixed["p50_ms"])
                results[name]["p99"].append(fixed["p99_ms"])
                results[name]["replay"].append(replay["rps"])
                print(f"  round {repeat + 1} {name:8s} {args.rate}/s p50 {fixed['p50_ms']:.2f} "
                      f"p99 {fixed['p99_ms']:.2f} ms | wrk replay {replay['rps']:.0f}/s",
                      flush=True)
        med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}
        print(f"\nmedians of {args.repeats} rounds:")
        for name in servers:
            print(f"  {name:8s} p50 {med[name]['p50']:.2f} ms, p99 {med[name]['p99']:.2f} ms, "
                  f"replay {med[name]['replay']:.0f}/s")
        p99 = med["shadow"]["p99"]
        print(f"shadow/champion: p99 {p99 / med['champion']['p99']:.2f}x, replay throughput "
              f"{med['shadow']['replay'] / med['champion']['replay']:.2f}x")
        print(f"p99 with the shadow model {p99:.2f} ms at {args.rate}/s (target <= "
              f"{P99_TARGET_MS:.0f}): {'PASS' if p99 <= P99_TARGET_MS else 'MISS'}")
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
