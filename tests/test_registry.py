"""The file-system registry: versions kept, atomic promotion and rollback, integrity."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from fraudkit.model import Thresholds
from fraudkit.registry import ModelRegistry, RegistryError, main

T = Thresholds(review=0.3, decline=0.8)


def register(reg: ModelRegistry, payload: bytes) -> str:
    return reg.register(payload, training_data={"days": 1}, metrics={"auc_roc": 0.9},
                        thresholds=T).version


def test_versions_promotion_and_rollback(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    with pytest.raises(RegistryError, match="no champion model"):
        reg.champion()
    v1, v2 = register(reg, b"one"), register(reg, b"two")
    assert (v1, v2) == ("v0001", "v0002")
    reg.promote(v1, "first")
    reg.promote(v2, "better")
    assert reg.champion().version == v2
    assert reg.rollback() == v1
    assert reg.champion().version == v1
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()
    assert [e["event"] for e in reg.events()] == [
        "registered", "registered", "promoted", "promoted", "rolled_back"]
    manifest = reg.get(v2).manifest
    assert manifest["thresholds"] == {"review": 0.3, "decline": 0.8}
    assert len(manifest["sha256"]) == 64 and manifest["created_at"]


def test_tampered_artifact_is_refused(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    version = register(reg, b"model")
    (reg.get(version).model_path).write_bytes(b"changed")
    with pytest.raises(RegistryError, match="sha256"):
        reg.promote(version, "should fail")


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    results: list[str] = []
    threads = [threading.Thread(target=lambda i=i: results.append(register(reg, bytes([i]))))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [f"v{i:04d}" for i in range(1, 9)]
    assert not [p for p in (tmp_path / "versions").iterdir() if p.name.startswith(".")]


def test_readers_always_see_a_complete_champion_file(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    versions = [register(reg, bytes([i])) for i in range(3)]
    reg.promote(versions[0], "start")
    stop = threading.Event()
    seen: set[str] = set()
    errors: list[Exception] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(json.loads(reg.champion_file.read_text())["version"])
            except Exception as exc:  # noqa: BLE001 - a torn read is what this looks for
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(60):
        reg.promote(versions[1 + i % 2], "flip")
        time.sleep(0.001)  # let the reader in between promotions
    stop.set()
    thread.join()
    assert not errors, errors[:3]
    assert len(seen) >= 2 and seen <= set(versions)


def test_cli_rollback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = ModelRegistry(tmp_path)
    v1, v2 = register(reg, b"a"), register(reg, b"b")
    reg.promote(v1, "a")
    reg.promote(v2, "b")
    main(["--root", str(tmp_path), "rollback"])
    assert f"champion is now {v1}" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="nothing to roll back"):
        main(["--root", str(tmp_path), "rollback"])
