"""The file-system registry: versions kept, atomic promotion and rollback, integrity."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from fraudkit.blobs import Conflict
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


def three_champions(root: Path) -> tuple[ModelRegistry, list[str]]:
    """A registry whose v0001, v0002, v0003 were promoted in turn (v0003 is champion)."""
    reg = ModelRegistry(root)
    versions = [register(reg, bytes([i])) for i in range(3)]
    for version in versions:
        reg.promote(version, "test")
    return reg, versions


def test_lost_champion_file_is_recovered_from_the_event_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """champion.json gone: the champion is the last one the event log promoted or rolled
    back to, and rollback walks back through the log's history."""
    reg, (v1, v2, v3) = three_champions(tmp_path)
    reg.champion_file.unlink()
    assert reg.champion().version == v3
    assert reg.champion_state()["history"] == [v1, v2]
    main(["--root", str(tmp_path), "list"])
    listing = capsys.readouterr().out
    assert f"* {v3}" in listing and "champion.json is missing" in listing
    main(["--root", str(tmp_path), "rollback"])
    assert f"champion is now {v2}" in capsys.readouterr().out
    assert json.loads(reg.champion_file.read_text())["history"] == [v1]
    reg.champion_file.unlink()
    assert reg.rollback() == v1
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()


def test_promotion_after_a_lost_champion_file_keeps_the_history(tmp_path: Path) -> None:
    reg, (v1, v2, v3) = three_champions(tmp_path)
    v4 = register(reg, b"four")
    reg.champion_file.unlink()
    reg.promote(v4, "after the loss")
    assert reg.champion_state()["history"] == [v1, v2, v3]
    assert reg.rollback() == v3
    # Re-promoting the recovered champion writes champion.json back.
    reg.champion_file.unlink()
    reg.promote(v3, "restore the file")
    assert json.loads(reg.champion_file.read_text())["version"] == v3
    assert reg.rollback() == v2


def test_versions_without_any_recorded_champion_say_so(tmp_path: Path) -> None:
    reg, _ = three_champions(tmp_path)
    reg.champion_file.unlink()
    reg.events_file.unlink()
    assert reg.champion_state() is None
    with pytest.raises(RegistryError, match=r"v0001, v0002, v0003 exist.*promote"):
        reg.champion()


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "not valid JSON"),
    ('{"history": []}', "names no champion version"),
    ('["v0001"]', "names no champion version"),
])
def test_broken_champion_file_raises_a_registry_error_naming_it(
    tmp_path: Path, content: str, problem: str
) -> None:
    reg, _ = three_champions(tmp_path)
    reg.champion_file.write_text(content)
    for read in (reg.champion, reg.champion_state, reg.rollback):
        with pytest.raises(RegistryError) as info:
            read()
        message = str(info.value)
        assert str(reg.champion_file) in message and problem in message
        assert "fraudkit.registry promote" in message


def test_missing_champion_folder_raises_a_registry_error_naming_it(tmp_path: Path) -> None:
    reg, _ = three_champions(tmp_path)
    shutil.rmtree(reg.versions_dir / "v0003")
    with pytest.raises(RegistryError) as info:
        reg.champion()
    message = str(info.value)
    assert "champion v0003" in message and str(reg.versions_dir / "v0003") in message
    assert "rollback" in message and "materialize" not in message


def test_unreadable_event_log_line_is_named(tmp_path: Path) -> None:
    reg, _ = three_champions(tmp_path)
    reg.champion_file.unlink()
    with open(reg.events_file, "a") as handle:
        handle.write('{"event": "promo')
    with pytest.raises(RegistryError, match=r"events.jsonl line 7 is not valid JSON"):
        reg.champion()


def test_manual_promotion_repairs_a_broken_champion_file(tmp_path: Path) -> None:
    """The way out the errors name works: `promote` over a garbage champion.json."""
    reg, (v1, v2, v3) = three_champions(tmp_path)
    reg.champion_file.write_text("garbage")
    main(["--root", str(tmp_path), "promote", v3])
    assert reg.champion_state()["history"] == [v1, v2]
    main(["--root", str(tmp_path), "promote", v1])
    assert reg.rollback() == v3


def test_the_log_replays_in_commit_order_not_line_order(tmp_path: Path) -> None:
    """On an object store two promotions can append their events in the other order than
    they committed champion.json; each event's seq puts the replay right."""
    reg, versions = three_champions(tmp_path)
    lines = reg.events_file.read_text().splitlines()
    promoted = [i for i, line in enumerate(lines) if '"promoted"' in line]
    lines[promoted[-2]], lines[promoted[-1]] = lines[promoted[-1]], lines[promoted[-2]]
    reg.events_file.write_text("\n".join(lines) + "\n")
    reg.champion_file.unlink()
    state = reg.champion_state()
    assert state["version"] == versions[2] and state["history"] == versions[:2]
    assert state["seq"] == 3


def test_a_promotion_whose_answer_was_lost_is_logged_once(tmp_path: Path) -> None:
    """A conditional write that landed but whose answer was lost (a PUT retried by the
    client answers 412) is recognised by its token: logged once, not skipped."""
    reg = ModelRegistry(tmp_path)
    v1, v2 = register(reg, b"a"), register(reg, b"b")
    reg.promote(v1, "first")
    real_put, lost = reg.blobs.put, []

    def put_then_lose_the_answer(key: str, data: bytes, **kwargs: object) -> str:
        stamp = real_put(key, data, **kwargs)
        if key == "champion.json" and not lost:
            lost.append(key)
            raise Conflict("the answer was lost (injected)")
        return stamp

    reg.blobs.put = put_then_lose_the_answer  # type: ignore[method-assign]
    reg.promote(v2, "second")
    assert lost and reg.champion().version == v2
    assert [e["version"] for e in reg.events() if e["event"] == "promoted"] == [v1, v2]
