"""Delta tables on an object store: the batch pipeline and the online service with
``TABLES_URI=az://…`` against a real Azurite (Azure Blob's emulator, npm ``azurite``) that
the test starts on a free port.

The small pipeline runs once more with its tables in Azurite; what it writes must equal
what the local run (``small_pipeline``) wrote, and nothing may land in the local tables
folder. The service then reads its feature history and batch predictions from Azurite and
answers a replayed day exactly as batch did.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pyarrow.fs import FileSelector

from fraudkit import lake
from fraudkit.config import Settings
from scripts.replay_parity import replay
from scripts.serving import AzuriteServer
from tests.conftest import ROOT, pipeline_env
from tests.test_service_support import running_service

TABLES = ("raw_transactions", "quarantined_transactions", "transaction_features",
          "batch_predictions")


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteServer]:
    server = AzuriteServer(tmp_path_factory.mktemp("azurite"))
    server.start()
    server.create_container("lake")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def on_azurite(azurite: AzuriteServer, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, dict[str, str]]:
    """DATA_DIR and the environment of the small pipeline run with its tables on Azurite."""
    data_dir = tmp_path_factory.mktemp("object_store") / "data"
    (data_dir / "dagster_home").mkdir(parents=True)
    env = {**pipeline_env(data_dir), "TABLES_URI": "az://lake/tables",
           "DELTA_STORAGE_OPTIONS": json.dumps(azurite.storage_options)}
    result = subprocess.run([sys.executable, "-m", "scripts.demo", "--small", "--batch-only"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    assert "az://lake/tables/batch_predictions" in result.stdout  # the summary names them
    return data_dir, env


def test_the_pipeline_writes_its_tables_to_the_object_store(
        on_azurite: tuple[Path, dict[str, str]], small_pipeline: Path,
        azurite: AzuriteServer) -> None:
    data_dir, env = on_azurite
    assert not (data_dir / "tables").exists(), "a table was written to the local disk"
    blobs = azurite.filesystem().get_file_info(FileSelector("lake/tables"))
    assert {Path(b.path).name for b in blobs} >= set(TABLES)
    remote = Settings(data_dir=data_dir, tables_uri=env["TABLES_URI"],
                      storage_options=json.loads(env["DELTA_STORAGE_OPTIONS"]))
    local = Settings(data_dir=small_pipeline)
    days = lake.partition_values(local.table_uri("raw_transactions"))
    assert lake.partition_values(remote.table_uri("raw_transactions"),
                                 remote.storage_options) == days
    # The same simulated days give the same rows and, computed on Dask from the object
    # store, bit-for-bit the same features.
    for table, key in (("raw_transactions", "transaction_id"),
                       ("transaction_features", "transaction_id")):
        theirs = lake.read_days(remote.table_uri(table), days,
                                storage_options=remote.storage_options).to_pandas()
        ours = lake.read_days(local.table_uri(table), days).to_pandas()
        theirs = theirs.sort_values(key).reset_index(drop=True)[sorted(ours.columns)]
        ours = ours.sort_values(key).reset_index(drop=True)[sorted(ours.columns)]
        assert theirs.equals(ours), table
    scored = lake.read_days(remote.table_uri("batch_predictions"), days, ["transaction_id"],
                            storage_options=remote.storage_options).num_rows
    assert scored == lake.read_days(local.table_uri("raw_transactions"), days,
                                    ["transaction_id"]).num_rows


def test_the_service_reads_its_history_from_the_object_store(
        on_azurite: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir, env = on_azurite
    extra = {"TABLES_URI": env["TABLES_URI"],
             "DELTA_STORAGE_OPTIONS": env["DELTA_STORAGE_OPTIONS"],
             "ONLINE_STORE_CUTOFF": "2026-06-27"}
    for name, value in {**extra, "DATA_DIR": str(data_dir)}.items():
        monkeypatch.setenv(name, value)
    with running_service(data_dir, extra) as url, httpx.Client(base_url=url,
                                                               timeout=60) as client:
        status = client.get("/status").json()
        assert status["feature_days"][1] == "2026-06-27"
        assert status["predictions_table_version"] is not None
        report = replay(url, "2026-06-28", "2026-06-28", chunk=100, single_every=20,
                        client=client)
    assert report.transactions > 300
    assert report.rate == 1.0, report.mismatches[:10]
    assert report.max_score_diff <= 1e-6
