"""Delta tables and the model registry on an object store: the batch pipeline and the
online service with ``TABLES_URI=az://…`` and ``REGISTRY_URI=az://…`` against a real Azurite
(Azure Blob's emulator, npm ``azurite``) that the test starts on a free port.

The small pipeline runs once more with its tables and registry in Azurite; what it writes
must equal what the local run (``small_pipeline``) wrote, and nothing may land in the local
tables folder or as the local registry's state. The service then reads its feature
history, batch predictions and champion from Azurite and answers a replayed day exactly as
batch did.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import pytest
from distributed import Client
from pyarrow.fs import FileSelector

from fraudkit import lake
from fraudkit.blobs import ObjectBlobs
from fraudkit.config import Settings
from fraudkit.registry import ModelRegistry
from resources import (
    DeltaLakeResource,
    LandingZoneResource,
    ModelRegistryResource,
    MonitoringResource,
)
from scripts.replay_parity import replay
from scripts.serving import AzuriteServer, free_port, kill_tree, process_tree
from sensors.drift import drift_sensor
from sensors.landing import landing_sensor
from tests.conftest import ROOT, pipeline_env
from tests.inprocess import failure_messages, run_in_process
from tests.test_service_support import running_service

BIN = Path(sys.executable).parent
TABLES = ("raw_transactions", "quarantined_transactions", "transaction_features",
          "batch_predictions")


@pytest.fixture(scope="module")
def on_azurite(azurite: AzuriteServer, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, dict[str, str]]:
    """DATA_DIR and the environment of the small pipeline run with its tables on Azurite."""
    data_dir = tmp_path_factory.mktemp("object_store") / "data"
    (data_dir / "dagster_home").mkdir(parents=True)
    env = {**pipeline_env(data_dir), "TABLES_URI": "az://lake/tables",
           "REGISTRY_URI": "az://lake/registry", "LANDING_URI": "az://lake/landing",
           "DELTA_STORAGE_OPTIONS": json.dumps(azurite.storage_options)}
    result = subprocess.run([sys.executable, "-m", "scripts.demo", "--small", "--batch-only"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    assert "az://lake/tables/batch_predictions" in result.stdout  # the summary names them
    return data_dir, env


def test_the_pipeline_writes_its_tables_and_registry_to_the_object_store(
        on_azurite: tuple[Path, dict[str, str]], small_pipeline: Path,
        azurite: AzuriteServer, tmp_path: Path) -> None:
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
    # The registry is on Azurite: the model registered and promoted there, its champion
    # scored every row; the local folder holds only the checked copies of versions.
    registry = ModelRegistry(env["REGISTRY_URI"], cache_dir=tmp_path / "copies",
                             storage_options=remote.storage_options)
    champion = registry.champion()
    champion.verify()
    assert [e["event"] for e in registry.events()][:2] == ["registered", "promoted"]
    assert not (data_dir / "registry" / "champion.json").exists()
    assert not (data_dir / "registry" / "events.jsonl").exists()
    versions = lake.read_days(remote.table_uri("batch_predictions"), days, ["model_version"],
                              storage_options=remote.storage_options).column(0).unique()
    assert versions.to_pylist() == [champion.version]


def test_the_service_reads_its_history_from_the_object_store(
        on_azurite: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir, env = on_azurite
    extra = {"TABLES_URI": env["TABLES_URI"], "REGISTRY_URI": env["REGISTRY_URI"],
             "DELTA_STORAGE_OPTIONS": env["DELTA_STORAGE_OPTIONS"],
             "ONLINE_STORE_CUTOFF": "2026-06-27"}
    for name, value in {**extra, "DATA_DIR": str(data_dir)}.items():
        monkeypatch.setenv(name, value)
    with running_service(data_dir, extra) as url, httpx.Client(base_url=url,
                                                               timeout=60) as client:
        status = client.get("/status").json()
        assert status["feature_days"][1] == "2026-06-27"
        assert status["model_version"] == status["champion_version"] is not None
        assert status["predictions_table_version"] is not None
        report = replay(url, "2026-06-28", "2026-06-28", chunk=100, single_every=20,
                        client=client)
    assert report.transactions > 300
    assert report.rate == 1.0, report.mismatches[:10]
    assert report.max_score_diff <= 1e-6


def _hidden_folder_worker(address: str, hidden: Path, log: Path) -> subprocess.Popen:
    """``dask worker`` in a mount namespace of its own where ``hidden`` is an empty,
    read-only folder (a tmpfs mounted over it): any file it opens there is missing and any
    write fails, while the rest of the file system (the project, its venv) stays."""
    worker = [str(BIN / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "1",
              "--no-dashboard", "--local-directory", "/tmp", "--name", "isolated"]
    script = (f"mount -t tmpfs -o ro none {shlex.quote(str(hidden))} && "
              f"exec {shlex.join(worker)}")
    with open(log, "w") as out:
        return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                 script], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


@pytest.fixture
def isolated_cluster(on_azurite: tuple[Path, dict[str, str]], tmp_path: Path
                     ) -> Iterator[str]:
    """A Dask scheduler and a worker process (2 workers) that cannot see into DATA_DIR."""
    data_dir, _ = on_azurite
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare --mount is not permitted here (the test needs root)")
    address = f"tcp://127.0.0.1:{free_port()}"
    with open(tmp_path / "scheduler.log", "w") as out:
        scheduler = subprocess.Popen(
            [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port",
             address.rsplit(":", 1)[1], "--no-dashboard"], stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    worker = _hidden_folder_worker(address, data_dir, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(OSError), Client(address, timeout=5) as client:
                if len(client.scheduler_info()["workers"]) == 2:
                    break
            if time.monotonic() > deadline or worker.poll() is not None:
                raise AssertionError("the isolated worker did not start:\n"
                                     + (tmp_path / "worker.log").read_text()[-3000:])
            time.sleep(1)
        yield address
    finally:
        for proc in (worker, scheduler):
            kill_tree(process_tree(proc.pid), signal.SIGTERM, 20)


def test_a_dask_worker_without_the_data_folder_ingests_computes_and_scores(
        on_azurite: tuple[Path, dict[str, str]], isolated_cluster: str) -> None:
    """Ingest, features and scoring run on workers that cannot open anything under
    DATA_DIR: every byte they read or write goes through the object store (the landing
    files from LANDING_URI; the model reaches them from the step, verified, not from the
    registry folder)."""
    data_dir, env = on_azurite
    with Client(isolated_cluster) as client:
        seen = client.run(os.listdir, str(data_dir))
    assert len(seen) == 2 and not any(seen.values()), seen  # they see an empty folder
    assert {"landing", "registry"} <= set(os.listdir(data_dir))  # where this process sees it
    settings = {"tables_uri": env["TABLES_URI"], "registry_uri": env["REGISTRY_URI"],
                "landing_uri": env["LANDING_URI"],
                "storage_options": json.loads(env["DELTA_STORAGE_OPTIONS"])}
    remote = Settings(data_dir=data_dir, **settings)
    tables = {name: remote.table_uri(name) for name in ("raw_transactions",
                                                         "transaction_features",
                                                         "batch_predictions")}
    before = {name: lake.table_version(uri, remote.storage_options)
              for name, uri in tables.items()}
    features_before = lake.read_days(tables["transaction_features"], ["2026-06-20"],
                                     storage_options=remote.storage_options).to_pandas()
    result = run_in_process(data_dir, "ingest_features_and_scores", "2026-06-10",
                            "2026-06-29", assets=["raw_transactions",
                                                  "quarantined_transactions",
                                                  "transaction_features", "batch_predictions"],
                            dask_scheduler_address=isolated_cluster, **settings)
    assert result.success, failure_messages(result)[-3000:]
    assert isolated_cluster in result.log
    for name, uri in tables.items():
        assert lake.table_version(uri, remote.storage_options) > before[name], name
    features_after = lake.read_days(tables["transaction_features"], ["2026-06-20"],
                                    storage_options=remote.storage_options).to_pandas()
    key = "transaction_id"
    assert features_after.sort_values(key, ignore_index=True).equals(
        features_before.sort_values(key, ignore_index=True))
    with Client(isolated_cluster) as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert sum(executed.values()) >= 3  # the ingest, feature and scoring tasks ran there


def test_drift_reports_and_the_drift_sensor_read_the_object_store(
        on_azurite: tuple[Path, dict[str, str]], azurite: AzuriteServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The drift reports of five days write drift_metrics, their HTML and their Evidently
    snapshots to Azurite, `evidently ui` shows that workspace, and the drift sensor reads
    the metrics there: no drift was simulated in these days, so it launches nothing and
    says why."""
    data_dir, env = on_azurite
    options = json.loads(env["DELTA_STORAGE_OPTIONS"])
    monkeypatch.setenv("EVIDENTLY_WORKSPACE", "az://lake/evidently")
    days = lake.day_range("2026-06-25", "2026-06-29")
    result = run_in_process(data_dir, "monitor_drift", days[0], days[-1],
                            tables_uri=env["TABLES_URI"], registry_uri=env["REGISTRY_URI"],
                            reports_uri="az://lake/reports", storage_options=options)
    assert result.success, failure_messages(result)[-3000:]
    remote = Settings(data_dir=data_dir, tables_uri=env["TABLES_URI"], storage_options=options)
    assert lake.partition_values(remote.table_uri("drift_metrics"), options) == days
    assert not (data_dir / "tables").exists()
    assert not (data_dir / "reports").exists() and not (data_dir / "evidently").exists()
    blobs = ObjectBlobs("az://lake", options)
    assert blobs.keys("reports/drift/") == [f"reports/drift/drift_{d}.html" for d in days]
    page = blobs.get(f"reports/drift/drift_{days[-1]}.html")[0]
    assert page.lstrip().startswith(b"<!DOCTYPE html>") and b"root_metric" in page  # widgets
    report_column = lake.read_days(remote.table_uri("drift_metrics"), days[-1:],
                                   ["report_path"], storage_options=options).column(0)
    assert set(report_column.to_pylist()) == {f"az://lake/reports/drift/drift_{days[-1]}.html"}
    # `evidently ui` on the workspace in Azurite lists the project and its five snapshots.
    port = free_port()
    ui = subprocess.Popen([str(BIN / "python"), "-m", "scripts.evidently_ui", "--host",
                           "127.0.0.1", "--port", str(port)], cwd=ROOT,
                          env={**os.environ, "DELTA_STORAGE_OPTIONS": json.dumps(options)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                          start_new_session=True)
    try:
        projects = _wait_json(f"http://127.0.0.1:{port}/api/projects", ui)
        project = next(p for p in projects if p["name"] == "fraud monitoring")
        snapshots = _wait_json(f"http://127.0.0.1:{port}/api/projects/{project['id']}"
                               "/snapshots", ui)
        assert len(snapshots) == len(days)
    finally:
        kill_tree(process_tree(ui.pid), signal.SIGTERM, 10)
    resources = {"delta": DeltaLakeResource(root=env["TABLES_URI"], storage_options=options),
                 "monitoring": MonitoringResource(performance_floor=None, workspace="none"),
                 "registry": ModelRegistryResource(root=env["REGISTRY_URI"],
                                                   cache_dir=str(data_dir / "registry"),
                                                   storage_options=options)}
    with dg.DagsterInstance.ephemeral() as instance:
        outcome = drift_sensor(dg.build_sensor_context(instance=instance,
                                                       resources=resources))
    assert isinstance(outcome, dg.SkipReason), outcome
    assert "no day crosses a threshold" in outcome.skip_message


def test_the_landing_sensor_reads_the_object_store(
        on_azurite: tuple[Path, dict[str, str]], small_pipeline: Path) -> None:
    """The landing files are in Azurite (the demo copied them there, LANDING_URI): the
    sensor's first tick takes them as its baseline, and a file that lands there later for
    a day that has ended asks for that day's micro-batch run, naming the file (a file of a
    day outside the calendar beside it is only warned about)."""
    data_dir, env = on_azurite
    options = json.loads(env["DELTA_STORAGE_OPTIONS"])
    landing = ObjectBlobs(env["LANDING_URI"], options)
    landed = landing.keys()
    assert len(landed) == 60 and not (data_dir / "landing" / "late_2026-06-29.parquet").exists()
    resources = {"landing": LandingZoneResource(path=env["LANDING_URI"],
                                                storage_options=options),
                 "delta": DeltaLakeResource(root=env["TABLES_URI"], storage_options=options)}
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        baseline = landing_sensor(context)
        assert isinstance(baseline, dg.SkipReason), baseline
        assert "baseline: 60 file(s)" in baseline.skip_message
        # A late file for the last day: a few rows of another day's file, renumbered.
        late = pd.read_parquet(small_pipeline / "landing" / "transactions_2026-06-28.parquet"
                               ).head(20)
        late["transaction_id"] += 10**12
        late["tx_datetime"] += pd.Timedelta(days=1)
        buffer = io.BytesIO()
        late.to_parquet(buffer)
        landing.put("late_2026-06-29.parquet", buffer.getvalue())
        landing.put("tx_2099-01-01.parquet", buffer.getvalue())  # outside the calendar: named
        request = landing_sensor(dg.build_sensor_context(instance=instance,
                                                         resources=resources,
                                                         cursor=context.cursor))
    assert isinstance(request, dg.RunRequest), request
    assert request.partition_key == "2026-06-29"
    assert "late_2026-06-29.parquet" in request.tags["landing/files"]


def _wait_json(url: str, proc: subprocess.Popen, timeout: float = 90) -> object:
    """GET ``url`` until it answers 200 (the server is starting); its JSON."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                return response.json()
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")
