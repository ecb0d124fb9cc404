"""The champion model the service scores with, the challenger it scores in shadow beside it,
and the rules used when there is no model."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fraudkit.blobs import is_transient
from fraudkit.explain import Explainer, ExplainerError
from fraudkit.features import FEATURE_COLUMNS
from fraudkit.model import OnnxModel, Thresholds
from fraudkit.registry import (
    MODEL_FILE,
    ModelRegistry,
    ModelVersion,
)

log = logging.getLogger("fraudkit.online")

#: Rule-based decisions used when no model can score (documented in the README):
#: decline amounts above the simulator's "large amount" scenario, review transactions at a
#: terminal with recent confirmed fraud or far above the customer's usual amount.
FALLBACK_VERSION = "fallback-rules"
FALLBACK_DECLINE_AMOUNT = 220.0
FALLBACK_REVIEW_TERMINAL_RISK_7D = 0.1
FALLBACK_REVIEW_AMOUNT_FACTOR = 3.0



@dataclass(frozen=True)
class LoadedModel:
    model: OnnxModel
    version: str
    thresholds: Thresholds
    #: TreeSHAP of the same file's trees (reason codes); None when the version carries
    #: none or it failed its check (``explainer_error`` says why).
    explainer: Explainer | None = None
    explainer_error: str | None = None


def load_version(registry: ModelRegistry, version: str, explained: bool = True
                 ) -> tuple[LoadedModel, ModelVersion]:
    """``version`` verified (sha256 against its manifest), loaded for one thread and warmed
    up; raises on any failure."""
    entry = registry.get(version)
    entry.verify()
    model = OnnxModel(entry.model_path, threads=1)
    model.predict(np.zeros((1, len(FEATURE_COLUMNS)), dtype=np.float32))  # warm up
    explainer, error = None, None
    if not explained:  # a shadow model: scored, never explained (its tables cost ~25 MB)
        return LoadedModel(model, entry.version, entry.thresholds), entry
    try:  # inside the file just verified, so the hash covers it; checked against the graph
        explainer = Explainer.of(model, entry.version)
        if explainer is None:
            error = (f"{version} carries no explainer (registered before reason codes): its "
                     "reviews and declines have no reasons; retrain to get them")
    except ExplainerError as exc:  # scores stay right; only reasons would be wrong
        error = f"{exc}; its reviews and declines have no reasons"
    if error:
        log.warning("%s", error)
        error = error.replace(str(registry.root), "registry")  # /status shows it
    return LoadedModel(model, entry.version, entry.thresholds, explainer, error), entry


class ChampionWatcher:
    """Serves the registry's champion and follows ``champion.json`` and the served file.

    Each poll reads a few stamps (:meth:`ModelRegistry.champion_stamp`: a ``stat`` of a
    local file, a HEAD request for its ETag on an object store), so it can run every half
    second in the background thread:

    * ``champion.json``: every promotion or rollback replaces it whole, so it always
      changes its stamp; only then is it read again.
    * While the version it names is not the one served (a failed load: its folder missing,
      copied in file by file, a sha256 mismatch, a bad ONNX), the load is retried at each
      poll in which that version's ``manifest.json`` or ``model.onnx`` stamp changed: a
      folder that arrives late is picked up without a restart, and a broken one is not
      re-hashed and re-logged twice a second. Meanwhile the previous model keeps serving
      and :attr:`serving_champion` is False (/readyz 503, /status says why).
    * While the champion is served, its ``model.onnx``: when the stamp changes (replaced,
      rewritten, touched) the file's sha256 is checked against the manifest again. A
      touched file matches and nothing changes. A file that no longer matches is reported
      in :attr:`last_error` (so /readyz fails and /status says it) while the model loaded
      and verified earlier keeps scoring from memory. Why that choice: the copy in memory is
      exactly the artifact the manifest describes and the batch path scored with; loading
      the changed file would serve an unverified model, and switching to the fallback rules
      would degrade every decision because of a file on disk. Failing readiness makes the
      damage visible (alerts, a rollout that waits) without changing any answer; a restart
      would refuse the file and fall back to the rules, so restore it (or promote a good
      version) first. Restoring the file's bytes clears the error. On an object store the
      file watched is the local copy the registry made (its objects are never rewritten).

    ``last_error`` is recomputed from the registry at every read, so a repaired registry
    (e.g. champion.json back to the served version) clears it. Error texts name paths
    relative to the registry root (``registry/versions/...``): /status shows them, and the
    registry's absolute location is none of a caller's business; the log has the full text.
    """

    def __init__(self, registry: ModelRegistry | Path) -> None:
        self.registry = (registry if isinstance(registry, ModelRegistry)
                         else ModelRegistry(registry))
        self.current: LoadedModel | None = None
        #: The version champion.json names (None when it is missing or unreadable).
        self.champion_version: str | None = None
        self.last_error: str | None = None
        self._stamp: str | None = "unread"  # champion.json's (registry.champion_stamp)
        self._attempt: tuple[Any, ...] | None = None  # the files of the last failed load
        self._served: ModelVersion | None = None  # the registry entry of ``current``
        self._served_stamp: tuple[int, int, int] | None = None  # its model.onnx, verified
        self._served_error: str | None = None  # what the last check of that file found

    @staticmethod
    def _stat(path: Path) -> tuple[int, int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _error(self, message: str) -> str:
        """``message`` for /status: the registry root replaced by ``registry``; logged."""
        log.error("%s; serving %s", message,
                  self.current.version if self.current else FALLBACK_VERSION)
        return message.replace(str(self.registry.root), "registry")

    @property
    def serving_champion(self) -> bool:
        """True when the model in memory is the version champion.json names."""
        return self.current is not None and self.current.version == self.champion_version

    def poll(self) -> bool:
        """Follow the registry (see the class doc); True when a new model is live."""
        stamp = self.registry.champion_stamp()
        if stamp != self._stamp:
            self._stamp = stamp
            self.champion_version = self._read_champion_version()
        if self.champion_version is None:
            return False
        if self.serving_champion:
            self._check_served_file()
            return False
        return self._load(self.champion_version)

    def _read_champion_version(self) -> str | None:
        """The version champion.json names, or None with ``last_error`` saying why."""
        try:
            state = self.registry.champion_state()
            if state is None:
                raise FileNotFoundError("the file is missing; promote a version")
            return str(state["version"])
        except Exception as exc:  # noqa: BLE001 - a damaged file keeps the current model
            if is_transient(exc):  # the store did not answer: read it again next poll
                self._stamp = "unread"
            self.last_error = self._error(
                f"cannot read {self.registry.champion_file}: {exc!r}; promote a version or "
                "roll back to rewrite it")
            return None

    def _load(self, version: str) -> bool:
        """Load ``version`` unless its files are unchanged since a failed try."""
        # the local file verified at load (on an object store: its checked local copy)
        local = None if self.registry.remote else self.registry.root / "versions" / version
        model_stamp = self._stat(local / MODEL_FILE) if local else None
        attempt = (self._stamp, *self.registry.version_stamp(version))
        if attempt == self._attempt:
            return False
        self._attempt = attempt
        try:
            loaded, champion = load_version(self.registry, version)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the current model
            if is_transient(exc):  # the store did not answer: try again next poll
                self._attempt = None
            self.last_error = self._error(
                f"cannot load the champion {version}: {exc}; retrying "
                + ("at the next poll" if is_transient(exc) else "when its files change"))
            return False
        self.current = loaded
        if local is None:
            model_stamp = self._stat(champion.model_path)
        self._served, self._served_stamp, self._served_error = champion, model_stamp, None
        self._attempt = None
        self.last_error = None
        log.info("serving model %s from %s", champion.version, champion.model_path)
        return True

    def _check_served_file(self) -> None:
        """Re-verify the served model.onnx when its stamp changed; set ``last_error``."""
        served = self._served
        assert served is not None  # set with ``current``
        stamp = self._stat(served.model_path)
        if stamp != self._served_stamp:
            self._served_stamp = stamp
            try:
                served.verify()
                self._served_error = None
            except Exception as exc:  # noqa: BLE001 - a missing file, a changed one
                self._served_error = self._error(
                    f"the served model's file changed on disk: {exc}; still scoring with the "
                    f"copy of {served.version} verified at load. Restore the file, or promote "
                    "a good version")
        self.last_error = self._served_error


class ShadowWatcher:
    """The challenger the registry puts in shadow (``shadow.json``), loaded and verified like
    the champion, or None.

    The service scores it on every request beside the champion and logs its score; it never
    answers with it. So a shadow that cannot be loaded (a missing folder, a sha256 mismatch)
    changes no answer and no readiness: it is reported in :attr:`last_error` (``/status``)
    and not scored. Each poll is one ``stat`` of ``shadow.json``; the file is read again only
    when it changed (``python -m fraudkit.registry shadow vNNNN`` rewrites it, so running it
    again retries a failed load).
    """

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._stamp: str | None = "unread"

    def poll(self) -> bool:
        """Follow ``shadow.json``; True when the shadow model changed (loaded or removed)."""
        stamp = self.registry.shadow_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        before = self.current.version if self.current else None
        try:
            state = self.registry.shadow_state()
            if state is None:
                self.current, self.last_error = None, None
            elif before != state["version"]:
                self.current, _ = load_version(self.registry, state["version"],
                                               explained=False)
                self.last_error = None
                log.info("scoring %s in shadow", state["version"])
        except Exception as exc:  # noqa: BLE001 - a shadow never stops serving
            if is_transient(exc):  # the store did not answer: try again next poll
                self._stamp = "unread"
            self.current = None
            self.last_error = str(exc).replace(str(self.registry.root), "registry")
            log.error("no shadow model: %s", exc)
        return (self.current.version if self.current else None) != before


def fallback_scores(feats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rule-based (score, decision) when no model can score: 1.0 decline, 0.5 review, 0."""
    amount = np.asarray(feats["tx_amount"], dtype=np.float64)
    decline = amount > FALLBACK_DECLINE_AMOUNT
    usual = np.asarray(feats["customer_avg_amount_30d"], dtype=np.float64)
    review = (np.asarray(feats["terminal_risk_7d"]) >= FALLBACK_REVIEW_TERMINAL_RISK_7D) | (
        (np.asarray(feats["customer_nb_tx_30d"]) >= 5)
        & (amount >= FALLBACK_REVIEW_AMOUNT_FACTOR * usual)
    )
    scores = np.where(decline, 1.0, np.where(review, 0.5, 0.0))
    decisions = np.where(decline, "decline", np.where(review, "review", "approve"))
    return scores, decisions.astype(object)

