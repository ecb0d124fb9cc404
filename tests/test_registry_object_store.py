"""The registry on an object store (``REGISTRY_URI=az://…``, a real Azurite) and the one
guarantee it must keep there: a promotion is one atomic step whatever the number of
writers, because every change of ``champion.json`` is a conditional write (ETag).

The race tests run on the local folder too, the same code under its lock."""

from __future__ import annotations

import json
import multiprocessing
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import obstore
import pytest
from obstore.exceptions import GenericError

from fraudkit.model import Thresholds
from fraudkit.online.champion import ChampionWatcher
from fraudkit.registry import ModelRegistry, RegistryError, main
from scripts.serving import AzuriteServer

T = Thresholds(review=0.3, decline=0.8)
WRITERS, PROMOTIONS = 4, 6


def register(reg: ModelRegistry, payload: bytes, **extra: bytes) -> str:
    return reg.register(payload, training_data={"days": 1}, metrics={"auc_roc": 0.9},
                        thresholds=T, extra_files=extra or None).version


@pytest.fixture
def remote(azurite: AzuriteServer, tmp_path: Path) -> ModelRegistry:
    """An empty registry under a fresh prefix of the Azurite container."""
    return ModelRegistry(f"az://lake/registry-{uuid.uuid4().hex[:8]}",
                         cache_dir=tmp_path / "cache", storage_options=azurite.storage_options)


def _reopen(reg: ModelRegistry, cache: Path, options: dict[str, str] | None) -> ModelRegistry:
    return ModelRegistry(reg.root, cache_dir=cache, storage_options=options)


def test_a_registry_on_the_object_store_keeps_versions_champion_and_log(
        remote: ModelRegistry, azurite: AzuriteServer, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no champion model"):
        remote.champion()
    v1 = register(remote, b"one", **{"reference.parquet": b"ref"})
    v2 = register(remote, b"two")
    assert remote.versions() == [v1, v2] == ["v0001", "v0002"]
    remote.promote(v1, "first")
    remote.promote(v2, "better")
    remote.start_shadow(v1, "try it")
    assert remote.shadow_state()["version"] == v1
    assert remote.rollback() == v1  # v1 is champion again, so its shadow ends
    assert remote.shadow_state() is None
    assert [e["event"] for e in remote.events()] == [
        "registered", "registered", "promoted", "promoted", "shadow_started", "rolled_back",
        "shadow_stopped"]
    # Another reader gets a verified local copy of each version, in a folder of its own
    # beside a local registry that its cache folder already holds, which stays untouched.
    local = ModelRegistry(tmp_path / "other")
    register(local, b"local one")
    other = _reopen(remote, tmp_path / "other", azurite.storage_options)
    champion = other.champion()
    champion.verify()
    assert champion.path == other.cache_dir / "versions" / v1
    assert other.cache_dir.parent == tmp_path / "other"
    assert local.get("v0001").model_path.read_bytes() == b"local one"
    assert champion.model_path.read_bytes() == b"one"
    assert (champion.path / "reference.parquet").read_bytes() == b"ref"
    assert json.loads(bytes(obstore.get(other.blobs.store, "champion.json").bytes()))[
        "history"] == []
    assert not (tmp_path / "other" / "champion.json").exists()  # the state is not copied


def test_a_changed_model_object_is_refused(
        remote: ModelRegistry, azurite: AzuriteServer, tmp_path: Path) -> None:
    version = register(remote, b"model")
    remote.promote(version, "start")
    remote.get(version).verify()
    remote.blobs.put(f"versions/{version}/model.onnx", b"changed")
    # A reader without a copy fetches the changed bytes, and the manifest's sha256 refuses
    # them; a reader with a verified copy keeps it (the manifest, its cache key, is the same).
    fresh = _reopen(remote, tmp_path / "fresh", azurite.storage_options)
    with pytest.raises(RegistryError, match="sha256"):
        fresh.get(version).verify()
    with pytest.raises(RegistryError, match="sha256"):
        fresh.start_shadow(version)
    remote.get(version).verify()


def test_the_cli_works_on_an_object_store_uri(
        remote: ModelRegistry, azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    v1, v2 = register(remote, b"a"), register(remote, b"b")
    remote.promote(v1, "a")
    monkeypatch.setenv("DELTA_STORAGE_OPTIONS", json.dumps(azurite.storage_options))
    monkeypatch.setenv("REGISTRY_URI", str(remote.root))
    monkeypatch.setenv("FRAUD_REGISTRY_DIR", str(tmp_path / "copies"))
    main(["promote", v2])
    main(["list"])
    out = capsys.readouterr().out
    assert f"champion is now {v2}" in out and f"* {v2}" in out
    assert remote.champion().version == v2


def test_the_online_watcher_follows_a_promotion_on_the_object_store(
        remote: ModelRegistry, azurite: AzuriteServer, small_pipeline: Path,
        tmp_path: Path) -> None:
    model = (small_pipeline / "registry" / "versions" / "v0001" / "model.onnx").read_bytes()
    manifest = json.loads(
        (small_pipeline / "registry" / "versions" / "v0001" / "manifest.json").read_text())
    reg = _reopen(remote, tmp_path / "service", azurite.storage_options)
    v1 = reg.register(model, training_data={}, metrics={}, thresholds=Thresholds(
        **manifest["thresholds"]), explanations=manifest.get("explanations"))
    v2 = reg.register(model, training_data={}, metrics={}, thresholds=Thresholds(
        review=0.1, decline=0.9)).version
    served = _reopen(remote, tmp_path / "watcher", azurite.storage_options)
    watcher = ChampionWatcher(served)
    assert not watcher.poll() and watcher.current is None  # no champion yet
    remote.promote(v1.version, "first")
    # The store fails once (a 503 after the client's own retries) while the model is
    # fetched: the next poll tries again, though no object changed.
    real_get, failed = served.blobs.get, []

    def flaky_get(key: str) -> tuple[bytes, str] | None:
        if key.endswith("model.onnx") and not failed:
            failed.append(key)
            raise GenericError("503 Service Unavailable (injected)")
        return real_get(key)

    served.blobs.get = flaky_get  # type: ignore[method-assign]
    assert not watcher.poll() and watcher.current is None and failed
    assert "next poll" in watcher.last_error
    assert watcher.poll() and watcher.current.version == v1.version
    assert not watcher.poll()  # stamps only, nothing changed
    remote.promote(v2, "second")
    assert watcher.poll() and watcher.current.version == v2
    assert watcher.current.thresholds == Thresholds(review=0.1, decline=0.9)


# -- races between processes -----------------------------------------------------------

@contextmanager
def _pool(processes: int) -> Iterator[Pool]:
    """A pool of fresh (spawned) interpreters that leaving the ``with`` can stop.

    Leaving ``with Pool()`` terminates the workers with SIGTERM, and a spawned child
    inherits an ignored SIGTERM. This test process may be ignoring it: Dagster maps
    SIGTERM to the SIGINT handler whenever it runs a job in process, and a test run started
    in the background has SIGINT ignored. The workers then outlived the terminate and the
    pool's join hung until the test timed out, so the workers are born with the default.
    """
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            yield pool
    finally:
        signal.signal(signal.SIGTERM, previous)


def _writer(root: str, cache: str, options: dict[str, str] | None, mine: list[str],
            start: Any) -> None:
    """Promote, in turn, each version of ``mine``, PROMOTIONS times."""
    reg = ModelRegistry(root, cache_dir=Path(cache), storage_options=options)
    start.wait()
    for i in range(PROMOTIONS):
        reg.promote(mine[i % len(mine)], f"race {i}")


def _race(reg: ModelRegistry, options: dict[str, str] | None, tmp_path: Path) -> None:
    versions = [register(reg, bytes([i])) for i in range(WRITERS + 1)]
    reg.promote(versions[-1], "start")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, _pool(WRITERS) as pool:
        start = manager.Event()  # all writers begin together
        pending = [pool.apply_async(_writer, (str(reg.root), str(tmp_path / f"c{i}"), options,
                                              [versions[i], versions[(i + 1) % WRITERS]],
                                              start)) for i in range(WRITERS)]
        start.set()
        [p.get(timeout=240) for p in pending]
    state = reg.champion_state()
    promoted = [e for e in reg.events() if e["event"] == "promoted"]
    # Every promotion that was logged is in the champion's history: none was overwritten
    # by a writer that had read an older champion.json (a lost update would drop one). A
    # promotion of the version that is champion already changes nothing and logs nothing.
    assert len(promoted) > WRITERS * PROMOTIONS // 2
    assert len(state["history"]) == len(promoted) - 1
    assert state["version"] in versions


def test_racing_promotions_on_the_object_store_lose_no_update(
        azurite: AzuriteServer, tmp_path: Path) -> None:
    options = azurite.storage_options
    reg = ModelRegistry(f"az://lake/race-{uuid.uuid4().hex[:8]}", cache_dir=tmp_path / "c",
                        storage_options=options)
    _race(reg, options, tmp_path)


def test_racing_promotions_on_a_local_folder_lose_no_update(tmp_path: Path) -> None:
    _race(ModelRegistry(tmp_path / "registry"), None, tmp_path)


def test_racing_registrations_on_the_object_store_get_distinct_versions(
        remote: ModelRegistry, azurite: AzuriteServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda i: register(remote, bytes([i])), range(6)))
    assert sorted(got) == [f"v{i:04d}" for i in range(1, 7)] == remote.versions()
    for version in got:
        assert remote.get(version).model_path.read_bytes() == bytes([got.index(version)])


def _reader(root: str, caches: list[str], options: dict[str, str], version: str,
            start: Any) -> list[str]:
    """Read ``version`` through each cache folder in turn; the errors met."""
    start.wait()
    errors = []
    for cache in caches:
        try:
            reg = ModelRegistry(root, cache_dir=Path(cache), storage_options=options)
            reg.get(version).verify()
        except Exception as exc:  # noqa: BLE001 - what the test counts
            errors.append(repr(exc))
    return errors


def test_processes_filling_one_copy_folder_at_once_all_read_it(
        remote: ModelRegistry, azurite: AzuriteServer, tmp_path: Path) -> None:
    """Service workers and steps share FRAUD_REGISTRY_DIR: four processes that copy the
    same version into fresh folders at the same moment never see a half-made copy."""
    version = register(remote, b"shared" * 1000, **{"reference.parquet": b"r" * 5000})
    caches = [str(tmp_path / f"round{i}") for i in range(15)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, _pool(4) as pool:
        start = manager.Event()
        pending = [pool.apply_async(_reader, (str(remote.root), caches,
                                              azurite.storage_options, version, start))
                   for _ in range(4)]
        start.set()
        errors = [e for p in pending for e in p.get(timeout=240)]
    assert not errors, errors[:3]
