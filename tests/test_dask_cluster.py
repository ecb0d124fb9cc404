"""transaction_features against a real, separately started Dask cluster: a `dask
scheduler` and `dask worker` processes on localhost, reached by scheduler_address."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable
from distributed import Client

from fraudkit import lake
from scripts.serving import free_port
from tests.inprocess import failure_messages, run_in_process

BIN = Path(sys.executable).parent


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[str]:
    address = f"tcp://127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    log = open(tmp_path / "dask.log", "w")  # noqa: SIM115 - closed below
    procs = [subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", port,
                               "--no-dashboard"], stdout=log, stderr=subprocess.STDOUT)]
    procs.append(subprocess.Popen(
        [BIN / "dask", "worker", address, "--nworkers", "2", "--nthreads", "1",
         "--no-dashboard", "--local-directory", str(tmp_path / "worker")],
        stdout=log, stderr=subprocess.STDOUT))
    try:
        deadline = time.time() + 90
        while True:
            try:
                with Client(address, timeout=5) as client:
                    if len(client.scheduler_info()["workers"]) == 2:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                log_text = (tmp_path / "dask.log").read_text()
                raise TimeoutError(f"Dask cluster did not start: {log_text}")
            time.sleep(1)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        log.close()


def test_features_on_an_existing_cluster(
    small_pipeline: Path, tmp_path: Path, dask_cluster: str
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(small_pipeline, data_dir)
    features = str(data_dir / "tables" / "transaction_features")
    before = lake.dataset(features).to_table().to_pandas().sort_values("transaction_id",
                                                                   ignore_index=True)
    version = DeltaTable(features).version()
    result = run_in_process(data_dir, "ingest_and_features", "2026-05-20", "2026-06-29",
                            dask_scheduler_address=dask_cluster)
    assert result.success, failure_messages(result)[-3000:]
    assert dask_cluster in result.log  # the run reports where it ran
    table = DeltaTable(features)
    assert table.version() > version
    after = table.to_pandas().sort_values("transaction_id", ignore_index=True)
    pd.testing.assert_frame_equal(after, before, check_exact=True)
    with Client(dask_cluster) as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert sum(executed.values()) >= 2  # ingest and features tasks ran on these workers
