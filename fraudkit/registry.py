"""A file-system model registry: every version kept, one champion, atomic promotion.

Layout under the registry root (``DATA_DIR/registry`` by default)::

    versions/v0001/model.onnx        the artifact both serving paths load
    versions/v0001/manifest.json     version, feature order, sha256, training data, metrics,
                                     thresholds, created time (DESIGN.md, "Model contract")
    versions/v0001/<extra files>     e.g. the drift reference sample
    champion.json                    {"version": ..., "history": [...]}; replaced atomically
    events.jsonl                     every registration, promotion, rollback and gate verdict

A version folder is written under a temporary name and renamed into place, so it is either
complete or absent. ``champion.json`` is replaced with ``os.replace`` under a lock, so a
promotion or rollback is one atomic step that the batch job and the service both observe
on their next read.
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
    pass


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
        return ModelVersion(version, path, json.loads(manifest_path.read_text()))

    def champion_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.champion_file.read_text())
        except FileNotFoundError:
            return None

    def champion(self) -> ModelVersion:
        state = self.champion_state()
        if not state:
            raise RegistryError(
                f"no champion model in {self.root}; materialize the `model` asset first "
                "(make demo does it)"
            )
        return self.get(state["version"])

    def events(self) -> list[dict[str, Any]]:
        if not self.events_file.exists():
            return []
        return [json.loads(line) for line in self.events_file.read_text().splitlines() if line]

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
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".champion.")
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.champion_file)

    def register(
        self,
        onnx_bytes: bytes,
        *,
        training_data: dict[str, Any],
        metrics: dict[str, Any],
        thresholds: Thresholds,
        extra_files: dict[str, bytes] | None = None,
        notes: dict[str, Any] | None = None,
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
            state = self.champion_state() or {"version": None, "history": []}
            if state["version"] == version:
                return
            history = [*state.get("history", []), state["version"]] if state["version"] else []
            self._write_champion(
                {"version": version, "promoted_at": _now(), "reason": reason, "history": history}
            )
            self._append_event(
                {"event": "promoted", "version": version, "previous": state["version"],
                 "reason": reason, **(details or {})}
            )

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
            return previous


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
    args = parser.parse_args(argv)
    registry = ModelRegistry(args.root or Settings.from_env().registry_dir)
    try:
        if args.command == "list":
            state = registry.champion_state() or {}
            for version in registry.versions():
                metrics = registry.get(version).manifest.get("metrics", {})
                mark = "*" if version == state.get("version") else " "
                print(f"{mark} {version}  auc_roc={metrics.get('auc_roc', float('nan')):.4f}  "
                      f"ap={metrics.get('average_precision', float('nan')):.4f}")
        elif args.command == "promote":
            registry.promote(args.version, reason="manual promotion")
            print(f"champion is now {args.version}")
        else:
            print(f"champion is now {registry.rollback()}")
    except RegistryError as exc:
        raise SystemExit(f"error: {exc}") from exc


if __name__ == "__main__":
    main()
