"""A file-system model registry: every version kept, one champion, atomic promotion.

Layout under the registry root (``DATA_DIR/registry`` by default)::

    versions/v0001/model.onnx        the artifact both serving paths load
    versions/v0001/manifest.json     version, feature order, sha256, training data, metrics,
                                     thresholds, created time (docs/contracts.md)
    versions/v0001/<extra files>     e.g. the drift reference sample
    champion.json                    {"version": ..., "history": [...]}; replaced atomically
    shadow.json                      {"version": ..., "since": ...}: a challenger the online
                                     service scores beside the champion (absent: none)
    events.jsonl                     every registration, promotion, rollback, gate verdict
                                     and shadow start or stop

A version folder is written under a temporary name and renamed into place, so it is either
complete or absent. ``champion.json`` is replaced with ``os.replace`` under a lock, so a
promotion or rollback is one atomic step that the batch job and the service both observe
on their next read.

Who is champion is answered in one place, :meth:`ModelRegistry.champion_state`:
``champion.json`` when it exists, else the last promotion or rollback in ``events.jsonl``
(replayed, so the predecessors a rollback needs come back too). A lost ``champion.json``
therefore never makes the next trained model a "first model" that skips the gate, and never
strands ``rollback``. A broken file (not JSON, no version, a champion whose folder is gone)
raises :class:`RegistryError` naming the file and the way out, never a bare JSON error.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fraudkit.features import FEATURE_COLUMNS
from fraudkit.model import Thresholds, sha256_file

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"


class RegistryError(RuntimeError):
    """The registry cannot answer: the message names the file, the problem and the fix."""


#: Events that change the champion; replaying them in order rebuilds ``champion.json``.
CHAMPION_EVENTS = ("promoted", "rolled_back")
#: What to run when the champion record is broken (shown in errors).
_FIX = ("make a version champion with `python -m fraudkit.registry promote <version>` "
        "(`python -m fraudkit.registry list` shows them)")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ModelVersion:
    version: str
    path: Path
    manifest: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(**self.manifest["thresholds"])

    def verify(self) -> None:
        """Raise if the artifact's sha256 or feature order differ from the manifest."""
        digest = sha256_file(self.model_path)
        if digest != self.manifest["sha256"]:
            raise RegistryError(
                f"{self.model_path}: sha256 {digest} differs from the manifest's "
                f"{self.manifest['sha256']}; the file was changed after registration"
            )
        if tuple(self.manifest["feature_order"]) != FEATURE_COLUMNS[: len(
                self.manifest["feature_order"])]:
            raise RegistryError(f"{self.version}: feature order differs from FEATURE_COLUMNS")


class ModelRegistry:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.champion_file = self.root / "champion.json"
        self.shadow_file = self.root / "shadow.json"
        self.events_file = self.root / "events.jsonl"

    # -- reading -------------------------------------------------------------------------
    def versions(self) -> list[str]:
        if not self.versions_dir.exists():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.name.startswith("v"))

    def get(self, version: str) -> ModelVersion:
        path = self.versions_dir / version
        manifest_path = path / MANIFEST_FILE
        if not manifest_path.exists():
            raise RegistryError(
                f"model version {version!r} is not in the registry at {self.root}; "
                f"known versions: {', '.join(self.versions()) or 'none'}"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{manifest_path} is not valid JSON ({exc}); the version is "
                                "damaged: restore the file or register a new model") from exc
        return ModelVersion(version, path, manifest)

    def _champion_file_state(self) -> dict[str, Any] | None:
        """``champion.json`` checked: None when absent, RegistryError when unusable."""
        try:
            text = self.champion_file.read_text()
        except FileNotFoundError:
            return None
        try:
            state = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RegistryError(
                f"{self.champion_file} is not valid JSON ({exc}); delete it to fall back to "
                f"the last champion in {self.events_file.name}, or {_FIX}") from exc
        if not isinstance(state, dict) or not isinstance(state.get("version"), str):
            raise RegistryError(
                f"{self.champion_file} names no champion version (expected "
                '{"version": "v0001", "history": [...]}); delete it to fall back to the last '
                f"champion in {self.events_file.name}, or {_FIX}")
        return state

    def _champion_from_events(self) -> dict[str, Any] | None:
        """Replay the promotions and rollbacks of ``events.jsonl`` the way :meth:`promote`
        and :meth:`rollback` change ``champion.json``; None when none was ever recorded."""
        version: str | None = None
        history: list[str] = []
        last: dict[str, Any] = {}
        for event in self.events():
            if event.get("event") not in CHAMPION_EVENTS:
                continue
            if event["event"] == "promoted" and version and event["version"] != version:
                history.append(version)
            elif event["event"] == "rolled_back" and history:
                history.pop()
            version, last = event["version"], event
        if version is None:
            return None
        return {"version": version, "promoted_at": last.get("at"),
                "reason": last.get("reason"), "history": history,
                "recovered_from": str(self.events_file)}

    def champion_state(self) -> dict[str, Any] | None:
        """Who is champion, and its predecessors (``history``, oldest first).

        ``champion.json`` when present; without it, the last champion the event log
        records (the state then carries ``recovered_from``). None only when no champion
        was ever recorded. Raises RegistryError when either file cannot be read."""
        state = self._champion_file_state()
        if state is not None:
            if "history" not in state:  # a hand-written file: the log knows the rest
                logged = self._champion_from_events()
                same = logged is not None and logged["version"] == state["version"]
                state = {**state, "history": logged["history"] if same else []}
            return state
        return self._champion_from_events()

    def champion(self) -> ModelVersion:
        """The champion's version; RegistryError (naming the file and the fix) otherwise."""
        state = self.champion_state()
        if not state:
            existing = self.versions()
            if existing:
                raise RegistryError(
                    f"versions {', '.join(existing)} exist in {self.root} but no champion is "
                    f"recorded: {self.champion_file.name} is missing and "
                    f"{self.events_file.name} has no promotion; {_FIX}")
            raise RegistryError(
                f"no champion model in {self.root}; materialize the `model` asset first "
                "(make demo does it)"
            )
        version = state["version"]
        source = state.get("recovered_from", str(self.champion_file))
        if not (self.versions_dir / version / MANIFEST_FILE).exists():
            raise RegistryError(
                f"{source} names champion {version}, but {self.versions_dir / version} has no "
                f"{MANIFEST_FILE} (the folder was deleted or damaged); restore it, or "
                "`python -m fraudkit.registry rollback` to the previous champion, or "
                f"{_FIX}; versions present: {', '.join(self.versions()) or 'none'}")
        return self.get(version)

    def events(self) -> list[dict[str, Any]]:
        if not self.events_file.exists():
            return []
        events = []
        for number, line in enumerate(self.events_file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RegistryError(
                    f"{self.events_file} line {number} is not valid JSON ({exc}); remove or "
                    "repair that line (a write cut short leaves one at the end)") from exc
        return events

    def shadow_state(self) -> dict[str, Any] | None:
        """The challenger in shadow (``{"version", "since", "reason"}``), None when none.

        In shadow, the online service scores every request with it beside the champion,
        answers with the champion only, and logs ``shadow_version`` and ``shadow_score``:
        evidence on live traffic that the shadow gate judges once the labels mature."""
        try:
            text = self.shadow_file.read_text()
        except FileNotFoundError:
            return None
        try:
            state = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self.shadow_file} is not valid JSON ({exc}); `python -m "
                                "fraudkit.registry shadow --stop` removes it, `shadow "
                                "vNNNN` writes it again") from exc
        if not isinstance(state, dict) or not isinstance(state.get("version"), str):
            raise RegistryError(f"{self.shadow_file} names no version; `python -m "
                                "fraudkit.registry shadow --stop` removes it")
        return state

    # -- writing -------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _append_event(self, event: dict[str, Any]) -> None:
        with open(self.events_file, "a") as handle:
            handle.write(json.dumps({"at": _now(), **event}, default=str) + "\n")

    def _write_champion(self, state: dict[str, Any]) -> None:
        self._write_json(self.champion_file, state)

    def _write_json(self, path: Path, state: dict[str, Any]) -> None:
        """Replace ``path`` atomically: readers see the old file or the new one, whole."""
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.stem}.")
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def register(
        self,
        onnx_bytes: bytes,
        *,
        training_data: dict[str, Any],
        metrics: dict[str, Any],
        thresholds: Thresholds,
        extra_files: dict[str, bytes] | None = None,
        notes: dict[str, Any] | None = None,
        explanations: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Store a new version (never overwrites one) and return it. Not yet champion."""
        with self._locked():
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            existing = self.versions()
            number = int(existing[-1][1:]) + 1 if existing else 1
            version = f"v{number:04d}"
            staging = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=".staging-"))
            try:
                (staging / MODEL_FILE).write_bytes(onnx_bytes)
                for name, content in (extra_files or {}).items():
                    (staging / name).write_bytes(content)
                manifest = {
                    "version": version,
                    "feature_order": list(FEATURE_COLUMNS),
                    "sha256": sha256_file(staging / MODEL_FILE),
                    "training_data": training_data,
                    "metrics": metrics,
                    "thresholds": thresholds.as_dict(),
                    "created_at": _now(),
                    **({"explanations": explanations} if explanations else {}),
                    **({"notes": notes} if notes else {}),
                }
                (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str))
                staging.rename(self.versions_dir / version)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            self._append_event({"event": "registered", "version": version})
        return self.get(version)

    def promote(self, version: str, reason: str, details: dict[str, Any] | None = None) -> None:
        """Make ``version`` champion in one atomic step; the old champion is remembered."""
        self.get(version).verify()
        with self._locked():
            try:
                state = self.champion_state() or {"version": None, "history": []}
            except RegistryError:
                # A broken champion.json is what a manual promotion repairs: the log's
                # champion and history stand in for it.
                state = self._champion_from_events() or {"version": None, "history": []}
                state["recovered_from"] = str(self.events_file)
            if state["version"] == version:
                if "recovered_from" in state:  # champion.json lost or broken: write it back
                    self._write_champion({"version": version, "promoted_at": _now(),
                                          "reason": reason, "history": state["history"]})
                    self._append_event({"event": "champion_file_restored", "version": version,
                                        "reason": reason})
                return
            history = [*state.get("history", []), state["version"]] if state["version"] else []
            self._write_champion(
                {"version": version, "promoted_at": _now(), "reason": reason, "history": history}
            )
            self._append_event(
                {"event": "promoted", "version": version, "previous": state["version"],
                 "reason": reason, **(details or {})}
            )
            self._end_shadow_of(version, f"promoted to champion ({reason})")

    def start_shadow(self, version: str, reason: str = "manual",
                     details: dict[str, Any] | None = None) -> None:
        """Put ``version`` (verified, not the champion) in shadow, replacing any other."""
        self.get(version).verify()
        with self._locked():
            champion = (self.champion_state() or {}).get("version")
            if version == champion:
                raise RegistryError(f"{version} is the champion; a shadow model is a "
                                    "challenger scored beside it (pick another version)")
            previous = (self.shadow_state() or {}).get("version")
            self._write_json(self.shadow_file, {"version": version, "since": _now(),
                                                "reason": reason, "champion": champion})
            self._append_event({"event": "shadow_started", "version": version,
                                "champion": champion, "replaced": previous, "reason": reason,
                                **(details or {})})

    def stop_shadow(self, reason: str = "manual") -> str | None:
        """Take the shadow model out (the service stops scoring it); its version, or None."""
        with self._locked():
            return self._stop_shadow(reason)

    def _stop_shadow(self, reason: str) -> str | None:
        try:
            version = (self.shadow_state() or {}).get("version")
        except RegistryError:
            version = None  # a broken file is removed all the same
        if not self.shadow_file.exists():
            return None
        self.shadow_file.unlink()
        self._append_event({"event": "shadow_stopped", "version": version, "reason": reason})
        return version

    def record(self, event: str, **details: Any) -> None:
        """Append a decision (e.g. a gate verdict that kept the champion) to the log."""
        with self._locked():
            self._append_event({"event": event, **details})

    def rollback(self, reason: str = "manual rollback") -> str:
        """Restore the previous champion; returns its version."""
        with self._locked():
            state = self.champion_state()
            if not state or not state.get("history"):
                raise RegistryError(
                    f"nothing to roll back to in {self.root}: the champion "
                    f"{state['version'] if state else None} has no predecessor"
                )
            previous = state["history"][-1]
            self._write_champion(
                {"version": previous, "promoted_at": _now(), "reason": reason,
                 "history": state["history"][:-1]}
            )
            self._append_event(
                {"event": "rolled_back", "version": previous, "from": state["version"],
                 "reason": reason}
            )
            self._end_shadow_of(previous, f"rolled back to champion ({reason})")
            return previous

    def _end_shadow_of(self, version: str, reason: str) -> None:
        """The new champion cannot also be in shadow (the service skips a shadow equal to
        the champion, so it could never be judged): end it. A broken shadow.json goes too,
        rather than failing a promotion that is already committed."""
        try:
            shadowed = (self.shadow_state() or {}).get("version")
        except RegistryError:
            shadowed = version
        if shadowed == version:
            self._stop_shadow(reason)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from fraudkit.config import Settings

    parser = argparse.ArgumentParser(description="Inspect the model registry, promote, roll back.")
    parser.add_argument("--root", type=Path, default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every version, champion marked")
    promote = sub.add_parser("promote", help="make a version champion")
    promote.add_argument("version")
    sub.add_parser("rollback", help="restore the previous champion")
    shadow = sub.add_parser("shadow", help="score a challenger beside the champion online "
                            "(logged, never answered); --stop ends it")
    shadow.add_argument("version", nargs="?")
    shadow.add_argument("--stop", action="store_true", help="take the shadow model out")
    args = parser.parse_args(argv)
    if args.command == "shadow" and bool(args.version) == bool(args.stop):
        parser.error("shadow takes a version, or --stop")
    registry = ModelRegistry(args.root or Settings.from_env().registry_dir)
    try:
        if args.command == "list":
            state = registry.champion_state() or {}
            shadowed = (registry.shadow_state() or {}).get("version")
            for version in registry.versions():
                metrics = registry.get(version).manifest.get("metrics", {})
                mark = ("*" if version == state.get("version")
                        else "s" if version == shadowed else " ")
                print(f"{mark} {version}  auc_roc={metrics.get('auc_roc', float('nan')):.4f}  "
                      f"ap={metrics.get('average_precision', float('nan')):.4f}")
            if state.get("recovered_from"):
                print(f"{registry.champion_file} is missing: the champion {state['version']} "
                      f"is the last one {state['recovered_from']} records; `promote "
                      f"{state['version']}` writes the file back")
        elif args.command == "shadow" and args.stop:
            stopped = registry.stop_shadow(reason="manual")
            print(f"no shadow model now (was {stopped})" if stopped else "no shadow model")
        elif args.command == "shadow":
            registry.start_shadow(args.version, reason="manual")
            print(f"{args.version} is in shadow: the online service scores it beside the "
                  "champion within a second, and logs its scores in online_predictions")
        elif args.command == "promote":
            registry.promote(args.version, reason="manual promotion")
            print(f"champion is now {args.version}")
        else:
            print(f"champion is now {registry.rollback()}")
    except RegistryError as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
