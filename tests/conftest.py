"""Shared fixtures. The pipeline fixture runs the real thing: the simulator, Dagster runs
on a LocalCluster, Delta tables and the registry, in a temporary DATA_DIR."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from filelock import FileLock

if TYPE_CHECKING:
    from scripts.serving import AzuriteServer

ROOT = Path(__file__).resolve().parent.parent
#: The small simulation spans 2026-05-01 .. 2026-06-29.
SMALL_END_DATE = "2026-06-29"

#: The order test files start in. `make test` runs two pytest-xdist workers, each taking the
#: next whole file when it is almost done (``--dist loadfile --no-loadscope-reorder``). The
#: longest files go first so that the two workers end together, and the files that do not
#: need ``small_pipeline`` run on one worker while the first file builds it on the other.
#: Seconds on 2 busy cores (2026-11-28) in the comments; files not listed follow, by name.
FILE_ORDER = (
    "test_sensors.py",  # 170-180: builds small_pipeline (~50), drift loop, the daemon
    "test_run_monitoring.py",  # 35-40, dagster-daemon; the next four need no small_pipeline
    "test_lake.py",  # 10
    "test_training.py",  # 16-23
    "test_ingest_files.py",  # 7
    "test_simulator.py",  # 3
    "test_object_store.py",  # ~300 alone: the small pipeline on Azurite (160), the service,
    # a worker without DATA_DIR, drift reports and the Evidently UI there, the landing sensor
    "test_micro_batch.py",  # ~240: a day in files, a late file, a run in progress, the daemon
    "test_demo.py",  # 110-130
    "test_online_durable.py",  # 75-80
    "test_stack.py",  # 60-70: make up, a crash of the service, make down
    "test_pipeline.py",  # 24-30
    "test_registry_object_store.py",  # 30-40: races of four processes on Azurite and locally
    "test_dask_cluster.py",  # 24
    "test_service.py",  # 18-25
    "test_service_contract.py",  # 15
    "test_bento_build.py",  # 20
    "test_service_fallback.py",  # 9
    "test_alert_rules.py",  # 20-25: promtool, one service with two workers
    "test_gate.py",  # 3-8
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the test files in :data:`FILE_ORDER` (tests keep their order within a file)."""
    rank = {name: i for i, name in enumerate(FILE_ORDER)}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), item.path.name))


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    """A real Azurite (Azure Blob's emulator) on a free port, with a container ``lake``."""
    from scripts.serving import AzuriteServer

    server = AzuriteServer(tmp_path_factory.mktemp("azurite"))
    server.start()
    server.create_container("lake")
    try:
        yield server
    finally:
        server.stop()


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
