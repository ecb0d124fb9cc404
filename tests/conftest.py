"""Shared fixtures. The pipeline fixture runs the real thing: the simulator, Dagster runs
on a LocalCluster, Delta tables and the registry, in a temporary DATA_DIR."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parent.parent
#: The small simulation spans 2026-05-01 .. 2026-06-29.
SMALL_END_DATE = "2026-06-29"


def pipeline_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env.update(
        DATA_DIR=str(data_dir),
        DAGSTER_HOME=str(data_dir / "dagster_home"),
        FRAUD_START_DATE="2026-05-01",
        FRAUD_END_DATE=SMALL_END_DATE,
    )
    return env


@pytest.fixture(scope="session")
def small_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DATA_DIR after `scripts.demo --small --batch-only`: landing files, every Delta
    table, a registered champion. Treat it as read-only; copy it to change it.

    Built once per test session: under pytest-xdist (``make test`` runs two workers) the
    first worker to ask builds it in the session's shared temporary folder, holding a file
    lock, and the others wait for it and reuse it."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the folder every worker's own temporary folder is in
    folder = shared / "small_pipeline"
    data_dir = folder / "data"
    built = folder / "built"  # beside DATA_DIR, so copies of it do not carry the marker
    with FileLock(str(shared / "small_pipeline.lock")):
        if not built.exists():
            if folder.exists():  # a build that failed half-way: start again
                shutil.rmtree(folder)
            (data_dir / "dagster_home").mkdir(parents=True)
            result = subprocess.run(
                [sys.executable, "-m", "scripts.demo", "--small", "--batch-only"],
                cwd=ROOT, env=pipeline_env(data_dir), capture_output=True, text=True,
                timeout=600,
            )
            if result.returncode != 0:
                raise AssertionError(f"small pipeline failed:\n{result.stdout[-4000:]}\n"
                                     f"{result.stderr[-6000:]}")
            built.write_text("done\n")
    return data_dir


def private_copy(small_pipeline: Path, folder: Path) -> Path:
    """A copy of the small pipeline's DATA_DIR under ``folder`` that a test may change (its
    registry, its online store), without the Dagster instance or any online store."""
    target = folder / "data"
    shutil.copytree(small_pipeline, target,
                    ignore=shutil.ignore_patterns("dagster_home", "online"))
    return target
