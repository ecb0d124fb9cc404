"""Reason codes: why one transaction was sent to review or declined, the same on both paths.

The reasons of a decision are the features that pushed its score up the most, by their
TreeSHAP contributions (log-odds) in the very model that scored it. TreeSHAP needs what an
ONNX tree ensemble does not keep (how many training rows reached each node), so the
LightGBM model the ONNX file was converted from travels *inside* that file, in its
``metadata_props`` under :data:`EXPLAINER_KEY` (written by :func:`embed`). The registry's
sha256 of ``model.onnx`` therefore covers the explainer too: there is one artifact, and a
version cannot be explained by another version's trees.

:meth:`Explainer.of` checks the embedded trees against the ONNX graph before any reason is
given: on probe rows that take both branches of the model's splits, the sigmoid of each
row's contributions (plus the bias) must equal the ONNX probability. Batch scoring and the
online service both call :func:`reasons` with the float32 feature matrix the model scored,
so one transaction gets the same reasons, to the last bit, on both paths (a row's
contributions do not depend on the rows explained with it; tested). The contributions
themselves come from :mod:`fraudkit.treeshap`: LightGBM's TreeSHAP numbers, about five
times faster.

Plain Python (numpy, scipy, pyarrow; LightGBM reads the trees): no framework imports.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from scipy.special import expit

from fraudkit.features import FEATURE_COLUMNS
from fraudkit.treeshap import TreeShapTables, UnsupportedTree

if TYPE_CHECKING:
    import lightgbm as lgb
    import onnx

    from fraudkit.model import OnnxModel

#: The ``metadata_props`` key of ``model.onnx`` holding the LightGBM model text.
EXPLAINER_KEY = "fraudkit.lightgbm_model"
#: How far the explainer's probability may be from the ONNX one on a probe row (ONNX sums
#: the trees in float32: about 1e-7 relative; a wrong tree moves it by far more).
ADDITIVITY_TOLERANCE = 1e-5
#: Probe rows checked when an explainer is loaded.
PROBE_ROWS = 256
#: Decisions that carry reasons (approvals need none and skip the cost).
EXPLAINED_DECISIONS = frozenset({"review", "decline"})

#: One decision's reasons in the Delta tables (``batch_predictions``, ``online_predictions``):
#: the top features by contribution, largest first; null for an approval.
REASONS_TYPE = pa.list_(pa.struct([("feature", pa.string()), ("contribution", pa.float64())]))

#: A decision's reasons: ``(feature, contribution in log-odds)``, largest first.
Reasons = list[tuple[str, float]]


class ExplainerError(ValueError):
    """The explainer embedded in a model file does not explain that model."""


def embed(model: onnx.ModelProto, booster_text: str) -> None:
    """Store the LightGBM model text in ``model``'s metadata (before it is serialized)."""
    for prop in model.metadata_props:
        if prop.key == EXPLAINER_KEY:
            prop.value = booster_text
            return
    model.metadata_props.add(key=EXPLAINER_KEY, value=booster_text)


class Explainer:
    """TreeSHAP of one model version's trees (see the module docstring)."""

    def __init__(self, booster: lgb.Booster, version: str | None = None) -> None:
        names = tuple(booster.feature_name())
        if names != FEATURE_COLUMNS:
            raise ExplainerError(f"the embedded model's features {list(names)} are not "
                                 f"FEATURE_COLUMNS {list(FEATURE_COLUMNS)}")
        self.booster = booster
        self.version = version
        try:
            self.tables = TreeShapTables(booster.dump_model(), len(FEATURE_COLUMNS))
        except UnsupportedTree as exc:
            raise ExplainerError(f"the embedded model cannot be explained: {exc}") from exc
        #: How far its probabilities were from the ONNX ones on the probe rows (set by
        #: :meth:`of`).
        self.probe_max_abs_diff: float | None = None

    @classmethod
    def of(cls, model: OnnxModel, version: str | None = None) -> Explainer | None:
        """The explainer embedded in ``model``'s file, verified against its ONNX graph; None
        when the file carries none (versions registered before reason codes existed).

        Raises :class:`ExplainerError` when the embedded trees do not reproduce the ONNX
        probabilities (a file assembled from two different models)."""
        import lightgbm as lgb

        text = model.session.get_modelmeta().custom_metadata_map.get(EXPLAINER_KEY)
        if not text:
            return None
        try:
            booster = lgb.Booster(model_str=text)
        except lgb.basic.LightGBMError as exc:
            raise ExplainerError(f"{model.path}: the embedded LightGBM model cannot be read: "
                                 f"{exc}") from exc
        explainer = cls(booster, version)
        probe = explainer.probe_rows()
        diff = float(np.max(np.abs(explainer.probabilities(probe) - model.predict(probe))))
        if not diff <= ADDITIVITY_TOLERANCE:
            raise ExplainerError(
                f"{model.path}: the embedded LightGBM model does not explain the ONNX graph "
                f"(probability differs by up to {diff:.3g} on {len(probe)} probe rows, "
                f"tolerance {ADDITIVITY_TOLERANCE}); re-export the version")
        explainer.probe_max_abs_diff = diff
        return explainer

    def probe_rows(self, rows: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
        """float32 rows whose values sit just below or above the model's own split
        thresholds, so the probe runs through both branches of many splits."""
        rng = np.random.default_rng(seed)
        features, thresholds = self.tables.node_feature, self.tables.node_threshold
        out = np.zeros((rows, len(FEATURE_COLUMNS)), dtype=np.float32)
        for j in range(len(FEATURE_COLUMNS)):
            values = thresholds[features == j]
            if len(values):
                picked = np.asarray(values)[rng.integers(0, len(values), rows)]
                nudge = np.maximum(np.abs(picked) * 1e-3, 1e-3) * rng.choice([-1.0, 1.0], rows)
                out[:, j] = (picked + nudge).astype(np.float32)
        return out

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """``[N, F + 1]`` TreeSHAP contributions (log-odds) of the float32 ``matrix`` (the
        values the model scored); the last column is the bias. The numbers of LightGBM's
        ``pred_contrib``, from precomputed tables (:mod:`fraudkit.treeshap`)."""
        return self.tables.contributions(np.asarray(matrix, dtype=np.float32))

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        """The model's P(fraud) from the contributions (what additivity compares); scipy's
        sigmoid saturates a large log-odds silently where ``exp`` warns of overflow."""
        return expit(self.contributions(matrix).sum(axis=1))


def top_reasons(contributions: np.ndarray, top: int) -> list[Reasons]:
    """Per row, the ``top`` features with the largest *positive* contributions (the ones
    that pushed the score towards fraud), largest first; ties in feature order."""
    feats = contributions[:, : len(FEATURE_COLUMNS)]
    order = np.argsort(-feats, axis=1, kind="stable")[:, :top]
    return [[(FEATURE_COLUMNS[j], float(row[j])) for j in picks if row[j] > 0]
            for row, picks in zip(feats, order, strict=True)]


def reasons(explainer: Explainer | None, matrix: np.ndarray, decisions: Sequence[str],
            top: int) -> list[Reasons | None]:
    """Reasons for each row whose decision is review or decline; None for the others, for
    every row when ``explainer`` is None (no model, a version without one) or ``top`` is 0.

    Only the explained rows are computed (TreeSHAP costs about 0.5 ms for one row)."""
    out: list[Reasons | None] = [None] * len(decisions)
    if explainer is None or top <= 0:
        return out
    flagged = [i for i, d in enumerate(decisions) if d in EXPLAINED_DECISIONS]
    if flagged:
        found = top_reasons(explainer.contributions(matrix[flagged]), top)
        for i, r in zip(flagged, found, strict=True):
            out[i] = r
    return out


def as_json(found: Reasons | None) -> list[dict[str, Any]] | None:
    """One decision's reasons as the API and the Delta tables spell them."""
    if found is None:
        return None
    return [{"feature": f, "contribution": c} for f, c in found]


def to_text(found: Reasons | None) -> str | None:
    """Compact JSON, as the online store keeps a logged decision's reasons."""
    return None if found is None else json.dumps(as_json(found), separators=(",", ":"))


def from_text(text: str | None) -> list[dict[str, Any]] | None:
    return None if text is None else json.loads(text)


def to_arrow(found: Sequence[Reasons | None]) -> pa.Array:
    """A :data:`REASONS_TYPE` column."""
    return pa.array([as_json(r) for r in found], REASONS_TYPE)
