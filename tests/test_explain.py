"""Reason codes (fraudkit.explain): TreeSHAP of the trees inside the registered model file,
checked against its ONNX graph, for reviews and declines only."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import pytest

from fraudkit import explain
from fraudkit.features import FEATURE_COLUMNS, feature_matrix
from fraudkit.model import OnnxModel, decide
from fraudkit.training import Candidate, fit_candidate
from tests.test_training import small_training_set


@functools.cache
def _planted() -> Candidate:
    """A model whose signal is all in ``terminal_risk_7d`` (so reasons must name it)."""
    frame = small_training_set()
    rng = np.random.default_rng(0)
    frame["terminal_risk_7d"] = frame["tx_fraud"] * 0.9 + rng.random(len(frame)) * 0.1
    return fit_candidate(frame)


def _write(path: Path, content: bytes) -> OnnxModel:
    path.write_bytes(content)
    return OnnxModel(path, threads=1)


def test_the_explainer_rides_in_the_model_file_and_adds_up_to_its_scores(
        tmp_path: Path) -> None:
    candidate = _planted()
    assert candidate.explanations["reason_codes"]["probe_max_abs_diff"] < 1e-5
    model = _write(tmp_path / "model.onnx", candidate.onnx_bytes)
    explainer = explain.Explainer.of(model, "v0001")
    assert explainer is not None and explainer.probe_max_abs_diff < 1e-5
    rows = small_training_set()
    matrix = feature_matrix(rows[rows["split"] == "test"])
    contributions = explainer.contributions(matrix)
    assert contributions.shape == (len(matrix), len(FEATURE_COLUMNS) + 1)
    probability = 1.0 / (1.0 + np.exp(-contributions.sum(axis=1)))
    assert np.max(np.abs(probability - model.predict(matrix))) < 1e-5
    # One row alone gets exactly the contributions it gets in a batch (online vs batch).
    for i in (0, 17, len(matrix) - 1):
        assert np.array_equal(explainer.contributions(matrix[i:i + 1])[0], contributions[i])
    # The tables compute LightGBM's own TreeSHAP (pred_contrib), to rounding.
    reference = explainer.booster.predict(matrix.astype(np.float64), pred_contrib=True)
    assert np.max(np.abs(contributions - reference)) < 1e-10


def test_reviews_and_declines_get_the_planted_feature_first_and_approvals_nothing(
        tmp_path: Path) -> None:
    candidate = _planted()
    model = _write(tmp_path / "model.onnx", candidate.onnx_bytes)
    explainer = explain.Explainer.of(model)
    rows = small_training_set()
    test = rows[rows["split"] == "test"]
    matrix = feature_matrix(test)
    decisions = decide(model.predict(matrix), candidate.thresholds).tolist()
    found = explain.reasons(explainer, matrix, decisions, top=3)
    flagged = [i for i, d in enumerate(decisions) if d != "approve"]
    assert flagged and len(flagged) < len(decisions)
    assert all(found[i] is None for i, d in enumerate(decisions) if d == "approve")
    # Most declined frauds were given away by the planted feature: it is their first
    # reason (the simulator's large-amount frauds are partly credited to tx_amount).
    labels = test["tx_fraud"].to_numpy()
    firsts = [found[i][0][0] for i, d in enumerate(decisions) if d == "decline" and labels[i]]
    assert firsts and firsts.count("terminal_risk_7d") / len(firsts) > 0.75, firsts[:20]
    assert set(firsts) <= {"terminal_risk_7d", "tx_amount", "terminal_risk_1d",
                           "terminal_risk_30d"}, set(firsts)
    for i in flagged:
        contributions = [c for _, c in found[i]]
        assert 1 <= len(found[i]) <= 3
        assert contributions == sorted(contributions, reverse=True)
        assert all(c > 0 for c in contributions)
    assert explain.reasons(explainer, matrix, decisions, top=0) == [None] * len(decisions)
    assert explain.reasons(None, matrix, decisions, top=3) == [None] * len(decisions)
    # The Delta column and the API spell them the same way.
    column = explain.to_arrow(found)
    assert column.type == explain.REASONS_TYPE
    assert column.to_pylist()[flagged[0]] == explain.as_json(found[flagged[0]])


def test_a_file_whose_embedded_trees_are_another_model_s_is_refused(tmp_path: Path) -> None:
    """The ONNX graph of one model with the LightGBM text of another: the probe rows catch
    it, so no decision is explained by trees that did not score it."""
    planted = onnx.load_from_string(_planted().onnx_bytes)
    other = onnx.load_from_string(fit_candidate(small_training_set()).onnx_bytes)
    text = next(p.value for p in other.metadata_props if p.key == explain.EXPLAINER_KEY)
    explain.embed(planted, text)
    model = _write(tmp_path / "mixed.onnx", planted.SerializeToString())
    with pytest.raises(explain.ExplainerError, match="does not explain the ONNX graph"):
        explain.Explainer.of(model)


def test_a_version_without_an_explainer_has_none(tmp_path: Path) -> None:
    """Versions registered before reason codes: scored as before, explained by nothing."""
    bare = onnx.load_from_string(_planted().onnx_bytes)
    del bare.metadata_props[:]
    model = _write(tmp_path / "bare.onnx", bare.SerializeToString())
    assert explain.Explainer.of(model) is None
