"""The model registry: every version kept, one champion, atomic promotion; in a local folder
or on an object store (``REGISTRY_URI=az://...``, ``s3://``, ``gs://``).

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

A version's number is claimed by creating its ``model.onnx`` only if absent, and its
manifest is written last: a version is listed only once complete. Every change of
``champion.json``, ``shadow.json`` and ``events.jsonl`` is a read and a *conditional write*
of the file read (:mod:`fraudkit.blobs`): on a local folder under a lock and with
``os.replace``; on an object store with ``If-Match``/``If-None-Match`` on the object's ETag,
the loser re-reading and retrying. So a promotion or rollback is one atomic step that the
batch job and the service both observe on their next read, whatever the number of writers,
with no lock service. On an object store, readers get each version as a local copy under
``FRAUD_REGISTRY_DIR`` whose ``model.onnx`` is checked against the manifest's sha256.

Who is champion is answered in one place, :meth:`ModelRegistry.champion_state`:
``champion.json`` when it exists, else the last promotion or rollback in ``events.jsonl``
(replayed, so the predecessors a rollback needs come back too). A lost ``champion.json``
therefore never makes the next trained model a "first model" that skips the gate, and never
strands ``rollback``. A broken file (not JSON, no version, a champion whose folder is gone)
raises :class:`RegistryError` naming the file and the way out, never a bare JSON error.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import shutil
import tempfile
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraudkit.blobs import ANY, Blobs, Conflict, is_remote, open_blobs
from fraudkit.features import FEATURE_COLUMNS
from fraudkit.model import Thresholds, sha256_file

if TYPE_CHECKING:
    from fraudkit.config import Settings

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
CHAMPION = "champion.json"
SHADOW = "shadow.json"
EVENTS = "events.jsonl"


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


#: Attempts of one conditional update before giving up (each loser re-reads and retries).
_ATTEMPTS = 50


class ModelRegistry:
    """The registry at ``root``: a local folder, or an object-store URI (``az://``,
    ``s3://``, ``gs://``) whose versions are copied into ``cache_dir`` when read, so every
    reader gets a local, sha256-checked ``model.onnx`` (:attr:`ModelVersion.path`)."""

    def __init__(self, root: Path | str, *, cache_dir: Path | None = None,
                 storage_options: dict[str, str] | None = None) -> None:
        self.blobs: Blobs = open_blobs(root, storage_options)
        self.remote = is_remote(root)
        if self.remote:
            self.root: Path | str = str(root).rstrip("/")
            # One folder per registry URI, beside anything else in cache_dir: FRAUD_REGISTRY_DIR
            # may hold a local registry of its own, which a copy must never replace.
            digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
            self.cache_dir = (Path(cache_dir) if cache_dir else Path(tempfile.gettempdir())
                              ) / f"copies-{digest}"
            self.versions_dir: Path | str = f"{self.root}/versions"
        else:
            self.root = Path(str(root).removeprefix("file://"))
            self.cache_dir = self.root
            self.versions_dir = self.root / "versions"
        self.champion_file = self.location(CHAMPION)
        self.shadow_file = self.location(SHADOW)
        self.events_file = self.location(EVENTS)

    @classmethod
    def of(cls, settings: Settings) -> ModelRegistry:
        """The registry the settings name (``REGISTRY_URI``, default ``FRAUD_REGISTRY_DIR``;
        on an object store, ``FRAUD_REGISTRY_DIR`` holds the verified local copies)."""
        return cls(settings.registry_uri, cache_dir=settings.registry_dir,
                   storage_options=settings.storage_options)

    def location(self, key: str) -> Any:
        """``key``'s path (local) or URI (object store), for messages and tests."""
        return self.root / key if isinstance(self.root, Path) else self.blobs.where(key)

    # -- stamps: cheap change detection for pollers (the online service) ------------------
    def champion_stamp(self) -> str | None:
        """Changes whenever ``champion.json`` is written; None when it is absent."""
        return self.blobs.stamp(CHAMPION)

    def shadow_stamp(self) -> str | None:
        return self.blobs.stamp(SHADOW)

    def version_stamp(self, version: str) -> tuple[str | None, str | None]:
        """The stamps of a version's manifest and model (a folder copied in late shows)."""
        return (self.blobs.stamp(f"versions/{version}/{MANIFEST_FILE}"),
                self.blobs.stamp(f"versions/{version}/{MODEL_FILE}"))

    # -- reading -------------------------------------------------------------------------
    def versions(self) -> list[str]:
        """Every complete version (its manifest is written last), oldest first."""
        return sorted({key.split("/")[1] for key in self.blobs.keys("versions/")
                       if key.endswith(f"/{MANIFEST_FILE}") and key.count("/") == 2
                       and key.split("/")[1].startswith("v")})

    def get(self, version: str) -> ModelVersion:
        manifest_key = f"versions/{version}/{MANIFEST_FILE}"
        found = self.blobs.get(manifest_key)
        if found is None:
            raise RegistryError(
                f"model version {version!r} is not in the registry at {self.root}; "
                f"known versions: {', '.join(self.versions()) or 'none'}"
            )
        try:
            manifest = json.loads(found[0])
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self.blobs.where(manifest_key)} is not valid JSON ({exc}); "
                                "the version is damaged: restore the file or register a new "
                                "model") from exc
        path = (self._cached(version, found[0]) if self.remote
                else self.root / "versions" / version)  # type: ignore[operator]
        return ModelVersion(version, path, manifest)

    def _cached(self, version: str, manifest: bytes) -> Path:
        """The local copy of a remote version, downloaded once (whole, then renamed into
        place). Its ``model.onnx`` is checked against the manifest by :meth:`verify`."""
        folder = self.cache_dir / "versions" / version

        def ready() -> bool:
            with suppress(FileNotFoundError):
                return (folder / MANIFEST_FILE).read_bytes() == manifest
            return False

        if ready():
            return folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{version}-"))
        try:
            prefix = f"versions/{version}/"
            for key in self.blobs.keys(prefix):
                found = self.blobs.get(key)
                if found is not None and key != prefix + MANIFEST_FILE:
                    target = staging / key.removeprefix(prefix)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(found[0])
            (staging / MANIFEST_FILE).write_bytes(manifest)
            if ready():  # another process (a service worker, a step) put it there meanwhile
                return folder
            # A copy of other content: only then is it replaced. ``ready()`` again, not just
            # ``exists()``: another process may have put this very content there since the
            # check above, and readers may already use it.
            if folder.exists() and not ready():
                old = folder.with_name(f".{version}-old-{staging.name}")
                with suppress(FileNotFoundError):
                    folder.rename(old)
                    shutil.rmtree(old, ignore_errors=True)
            try:
                staging.rename(folder)
            except OSError:  # another process put the same version there first
                if not ready():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def _champion_file_state(self) -> dict[str, Any] | None:
        """``champion.json`` checked: None when absent, RegistryError when unusable."""
        return self._champion_file_read()[0]

    def _champion_file_read(self) -> tuple[dict[str, Any] | None, str | None]:
        found = self.blobs.get(CHAMPION)
        if found is None:
            return None, None
        try:
            state = json.loads(found[0])
        except json.JSONDecodeError as exc:
            raise RegistryError(
                f"{self.champion_file} is not valid JSON ({exc}); delete it to fall back to "
                f"the last champion in {EVENTS}, or {_FIX}") from exc
        if not isinstance(state, dict) or not isinstance(state.get("version"), str):
            raise RegistryError(
                f"{self.champion_file} names no champion version (expected "
                '{"version": "v0001", "history": [...]}); delete it to fall back to the last '
                f"champion in {EVENTS}, or {_FIX}")
        return state, found[1]

    def _champion_from_events(self) -> dict[str, Any] | None:
        """Replay the promotions and rollbacks of ``events.jsonl`` the way :meth:`promote`
        and :meth:`rollback` change ``champion.json``; None when none was ever recorded.

        Each change since ``seq`` exists carries the ``seq`` it gave ``champion.json`` and
        the history it wrote, so the replay follows ``seq``, not the order of the lines:
        on an object store two promotions can log in the other order than they committed.
        Events without one (an older log) come first, in their order."""
        events = [e for e in self.events() if e.get("event") in CHAMPION_EVENTS]
        events.sort(key=lambda e: int(e.get("seq", -1)))  # stable: older events keep order
        version: str | None = None
        history: list[str] = []
        last: dict[str, Any] = {}
        for event in events:
            if "seq" in event and isinstance(event.get("history"), list):
                history = list(event["history"])
            elif event["event"] == "promoted" and version and event["version"] != version:
                history.append(version)
            elif event["event"] == "rolled_back" and history:
                history.pop()
            version, last = event["version"], event
        if version is None:
            return None
        return {"version": version, "promoted_at": last.get("at"),
                "reason": last.get("reason"), "history": history,
                "seq": int(last.get("seq", 0)), "recovered_from": str(self.events_file)}

    def champion_state(self) -> dict[str, Any] | None:
        """Who is champion, and its predecessors (``history``, oldest first).

        ``champion.json`` when present; without it, the last champion the event log
        records (the state then carries ``recovered_from``). None only when no champion
        was ever recorded. Raises RegistryError when either file cannot be read."""
        return self._champion_read()[0]

    def _champion_read(self) -> tuple[dict[str, Any] | None, str | None]:
        """:meth:`champion_state` and the stamp of the ``champion.json`` it came from (None
        when absent: a write then must create the file)."""
        state, stamp = self._champion_file_read()
        if state is not None:
            if "history" not in state:  # a hand-written file: the log knows the rest
                logged = self._champion_from_events()
                same = logged is not None and logged["version"] == state["version"]
                state = {**state, "history": logged["history"] if same else []}
            return state, stamp
        return self._champion_from_events(), None

    def champion(self) -> ModelVersion:
        """The champion's version; RegistryError (naming the file and the fix) otherwise."""
        state = self.champion_state()
        if not state:
            existing = self.versions()
            if existing:
                raise RegistryError(
                    f"versions {', '.join(existing)} exist in {self.root} but no champion is "
                    f"recorded: {CHAMPION} is missing and {EVENTS} has no promotion; {_FIX}")
            raise RegistryError(
                f"no champion model in {self.root}; materialize the `model` asset first "
                "(make demo does it)"
            )
        version = state["version"]
        source = state.get("recovered_from", str(self.champion_file))
        if version not in self.versions():
            raise RegistryError(
                f"{source} names champion {version}, but {self.versions_dir}/{version} has "
                f"no {MANIFEST_FILE} (the folder was deleted or damaged); restore it, or "
                "`python -m fraudkit.registry rollback` to the previous champion, or "
                f"{_FIX}; versions present: {', '.join(self.versions()) or 'none'}")
        return self.get(version)

    def events(self) -> list[dict[str, Any]]:
        found = self.blobs.get(EVENTS)
        if found is None:
            return []
        events = []
        for number, line in enumerate(found[0].decode().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise RegistryError(
                    f"{self.events_file} line {number} is not valid JSON ({exc}); remove or "
                    "repair that line (each event replaces the file whole, so only an edit "
                    "by hand or an older registry that appended leaves one)") from exc
        return events

    def shadow_state(self) -> dict[str, Any] | None:
        """The challenger in shadow (``{"version", "since", "reason"}``), None when none.

        In shadow, the online service scores every request with it beside the champion,
        answers with the champion only, and logs ``shadow_version`` and ``shadow_score``:
        evidence on live traffic that the shadow gate judges once the labels mature."""
        return self._shadow_read()[0]

    def _shadow_read(self) -> tuple[dict[str, Any] | None, str | None]:
        found = self.blobs.get(SHADOW)
        if found is None:
            return None, None
        try:
            state = json.loads(found[0])
        except json.JSONDecodeError as exc:
            raise RegistryError(f"{self.shadow_file} is not valid JSON ({exc}); `python -m "
                                "fraudkit.registry shadow --stop` removes it, `shadow "
                                "vNNNN` writes it again") from exc
        if not isinstance(state, dict) or not isinstance(state.get("version"), str):
            raise RegistryError(f"{self.shadow_file} names no version; `python -m "
                                "fraudkit.registry shadow --stop` removes it")
        return state, found[1]

    # -- writing -------------------------------------------------------------------------
    # Every change is a read, a decision and a conditional write of the file read
    # (Blobs.put with expect=its stamp). On a local folder the whole sequence also holds
    # the folder's lock; on an object store a writer that lost the race gets Conflict,
    # waits a little and decides again on what it reads then (_retrying).

    def _retrying(self, change: Any) -> Any:
        """Run ``change()`` until its conditional write wins (at most ``_ATTEMPTS``)."""
        for attempt in range(_ATTEMPTS):
            try:
                with self.blobs.exclusive():
                    return change()
            except Conflict:
                time.sleep(random.uniform(0, min(0.5, 0.01 * 2 ** attempt)))
        raise RegistryError(f"{self.root}: {_ATTEMPTS} conditional writes in a row lost to "
                            "other writers; retry the operation")

    def _append_event(self, event: dict[str, Any]) -> None:
        """Add a line to ``events.jsonl``: a conditional rewrite of the whole file (an
        object has no append), retried until it wins, so no event is lost."""
        line = (json.dumps({"at": _now(), **event}, default=str) + "\n").encode()

        def append() -> None:
            found = self.blobs.get(EVENTS)
            self.blobs.put(EVENTS, (found[0] if found else b"") + line,
                           expect=found[1] if found else None)

        self._retrying(append)

    def _put_json(self, key: str, state: dict[str, Any], expect: Any = ANY) -> None:
        """Replace ``key`` whole: readers see the old file or the new one."""
        self.blobs.put(key, json.dumps(state, indent=2).encode(), expect=expect)

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
        """Store a new version (never overwrites one) and return it. Not yet champion.

        The version number is claimed by creating its ``model.onnx`` only if absent (a
        racing registration that took the number moves on to the next); the manifest is
        written last, so a version is listed only once it is complete."""

        def claim() -> str:
            taken = {key.split("/")[1] for key in self.blobs.keys("versions/")
                     if key.count("/") >= 2 and key.split("/")[1].startswith("v")}
            number = max((int(v[1:]) for v in taken if v[1:].isdigit()), default=0) + 1
            version = f"v{number:04d}"
            self.blobs.put(f"versions/{version}/{MODEL_FILE}", onnx_bytes, expect=None)
            return version

        version = self._retrying(claim)
        for name, content in (extra_files or {}).items():
            self.blobs.put(f"versions/{version}/{name}", content)
        manifest = {
            "version": version,
            "feature_order": list(FEATURE_COLUMNS),
            "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
            "training_data": training_data,
            "metrics": metrics,
            "thresholds": thresholds.as_dict(),
            "created_at": _now(),
            **({"explanations": explanations} if explanations else {}),
            **({"notes": notes} if notes else {}),
        }
        self.blobs.put(f"versions/{version}/{MANIFEST_FILE}",
                       json.dumps(manifest, indent=2, default=str).encode(), expect=None)
        self._append_event({"event": "registered", "version": version})
        return self.get(version)

    def promote(self, version: str, reason: str, details: dict[str, Any] | None = None) -> None:
        """Make ``version`` champion in one atomic step; the old champion is remembered."""
        self.get(version).verify()
        token, planned = uuid.uuid4().hex, []

        def change() -> dict[str, Any] | None:
            try:
                state, stamp = self._champion_read()
                state = state or {"version": None, "history": []}
            except RegistryError:
                # A broken champion.json is what a manual promotion repairs: the log's
                # champion and history stand in for it.
                stamp = self.blobs.stamp(CHAMPION)
                state = self._champion_from_events() or {"version": None, "history": []}
                state["recovered_from"] = str(self.events_file)
            if planned and state.get("write") == token:
                return planned[0]  # our write landed, its answer was lost: log it once
            seq = int(state.get("seq", 0)) + 1
            if state["version"] == version:
                if "recovered_from" in state:  # champion.json lost or broken: write it back
                    planned[:] = [{"event": "champion_file_restored", "version": version,
                                   "reason": reason}]
                    self._put_json(CHAMPION, {"version": version, "promoted_at": _now(),
                                              "reason": reason, "history": state["history"],
                                              "seq": seq, "write": token}, expect=stamp)
                    return planned[0]
                return None
            history = [*state.get("history", []), state["version"]] if state["version"] else []
            planned[:] = [{"event": "promoted", "version": version,
                           "previous": state["version"], "reason": reason, **(details or {}),
                           "seq": seq, "history": history}]
            self._put_json(CHAMPION, {"version": version, "promoted_at": _now(),
                                      "reason": reason, "history": history, "seq": seq,
                                      "write": token}, expect=stamp)
            return planned[0]

        with self.blobs.exclusive():
            event = self._retrying(change)
            if event is not None:
                self._append_event(event)
                if event["event"] == "promoted":
                    self._end_shadow_of(version, f"promoted to champion ({reason})")

    def start_shadow(self, version: str, reason: str = "manual",
                     details: dict[str, Any] | None = None) -> None:
        """Put ``version`` (verified, not the champion) in shadow, replacing any other."""
        self.get(version).verify()

        def change() -> tuple[str | None, str | None]:
            champion = (self.champion_state() or {}).get("version")
            if version == champion:
                raise RegistryError(f"{version} is the champion; a shadow model is a "
                                    "challenger scored beside it (pick another version)")
            try:
                state, stamp = self._shadow_read()
            except RegistryError:
                state, stamp = None, self.blobs.stamp(SHADOW)
            self._put_json(SHADOW, {"version": version, "since": _now(), "reason": reason,
                                    "champion": champion}, expect=stamp)
            return champion, (state or {}).get("version")

        with self.blobs.exclusive():
            champion, previous = self._retrying(change)
            self._append_event({"event": "shadow_started", "version": version,
                                "champion": champion, "replaced": previous, "reason": reason,
                                **(details or {})})
            # A promotion of this version that committed meanwhile (on an object store the
            # champion is not locked while shadow.json is written) ends the shadow again.
            if (self.champion_state() or {}).get("version") == version:
                self._stop_shadow(f"{version} became champion meanwhile", only=version)
                raise RegistryError(f"{version} became the champion while it was put in "
                                    "shadow; a shadow model is a challenger (pick another)")

    def stop_shadow(self, reason: str = "manual") -> str | None:
        """Take the shadow model out (the service stops scoring it); its version, or None."""
        with self.blobs.exclusive():
            return self._stop_shadow(reason)

    def _stop_shadow(self, reason: str, only: str | None = None) -> str | None:
        """Delete ``shadow.json`` (when it names ``only``, if given); its version or None.
        A broken file is removed all the same."""

        def change() -> tuple[bool, str | None]:
            try:
                state, stamp = self._shadow_read()
                version = (state or {}).get("version")
            except RegistryError:
                stamp, version = self.blobs.stamp(SHADOW), None
            if stamp is None or (only is not None and version not in (None, only)):
                return False, None
            self.blobs.delete(SHADOW, expect=stamp)
            return True, version

        with self.blobs.exclusive():
            deleted, version = self._retrying(change)
            if deleted:
                self._append_event({"event": "shadow_stopped", "version": version,
                                    "reason": reason})
        return version

    def record(self, event: str, **details: Any) -> None:
        """Append a decision (e.g. a gate verdict that kept the champion) to the log."""
        with self.blobs.exclusive():
            self._append_event({"event": event, **details})

    def rollback(self, reason: str = "manual rollback") -> str:
        """Restore the previous champion; returns its version."""

        token, planned = uuid.uuid4().hex, []

        def change() -> dict[str, Any]:
            state, stamp = self._champion_read()
            if planned and state and state.get("write") == token:
                return planned[0]  # our write landed, its answer was lost: log it once
            if not state or not state.get("history"):
                raise RegistryError(
                    f"nothing to roll back to in {self.root}: the champion "
                    f"{state['version'] if state else None} has no predecessor"
                )
            previous, seq = state["history"][-1], int(state.get("seq", 0)) + 1
            planned[:] = [{"event": "rolled_back", "version": previous,
                           "from": state["version"], "reason": reason, "seq": seq,
                           "history": state["history"][:-1]}]
            self._put_json(CHAMPION, {"version": previous, "promoted_at": _now(),
                                      "reason": reason, "history": state["history"][:-1],
                                      "seq": seq, "write": token}, expect=stamp)
            return planned[0]

        with self.blobs.exclusive():
            event = self._retrying(change)
            previous = event["version"]
            self._append_event(event)
            self._end_shadow_of(previous, f"rolled back to champion ({reason})")
            return previous

    def _end_shadow_of(self, version: str, reason: str) -> None:
        """The new champion cannot also be in shadow (the service skips a shadow equal to
        the champion, so it could never be judged): end it. A broken shadow.json goes too,
        rather than failing a promotion that is already committed."""
        self._stop_shadow(reason, only=version)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from fraudkit.config import Settings

    parser = argparse.ArgumentParser(description="Inspect the model registry, promote, roll back.")
    parser.add_argument("--root", default=None,
                        help="a folder or an object-store URI (default: REGISTRY_URI, else "
                             "FRAUD_REGISTRY_DIR)")
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
    settings = Settings.from_env()
    registry = (ModelRegistry(args.root, cache_dir=settings.registry_dir if is_remote(args.root)
                              else None, storage_options=settings.storage_options)
                if args.root else ModelRegistry.of(settings))
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
