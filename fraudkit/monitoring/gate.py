"""The champion/challenger gate and the retraining it judges: a challenger is trained on a
recent window, scored with the champion on the same held-out days, always registered, and
promoted only when the gate passes: on its metric, and on segment fairness (a challenger
whose worst false-positive disparity is worse than the champion's is refused). Both metric
sets and the verdict go to the registry's event log, so a person can see why a model is
(still) champion.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudkit.config import DEFAULT_SEGMENTS
from fraudkit.model import Thresholds
from fraudkit.monitoring.fairness import (
    Segment,
    fairness_verdict,
    parse_segments,
    segment_table,
)
from fraudkit.monitoring.performance import GATE_METRICS


@dataclass(frozen=True)
class GateConfig:
    """Promote the challenger when ``challenger >= champion - tolerance`` on ``metric``,
    both scored on the same held-out days."""

    metric: str = "average_precision"
    tolerance: float = 0.0
    #: Segment fairness (fraudkit/monitoring/fairness.py): the challenger's worst
    #: false-positive disparity may exceed the champion's by at most ``fairness_tolerance``
    #: on the same held-out rows (None: not judged).
    segments: tuple[Segment, ...] = field(default_factory=lambda: parse_segments(
        DEFAULT_SEGMENTS))
    fairness_tolerance: float | None = 0.25
    fairness_min_false_positives: int = 50

    def __post_init__(self) -> None:
        if self.metric not in GATE_METRICS:
            raise ValueError(f"gate metric {self.metric!r} is not one of {GATE_METRICS}")
        if self.tolerance < 0:
            raise ValueError(f"gate tolerance {self.tolerance} must be >= 0")


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    metric: str
    challenger: float
    champion: float
    tolerance: float
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gate(challenger: dict[str, float], champion: dict[str, float],
         cfg: GateConfig | None = None) -> GateDecision:
    """Decide promotion from two metric dicts measured on the same rows. A challenger whose
    metric is not a number (e.g. a test window without frauds) is never promoted."""
    cfg = cfg or GateConfig()
    new, old = float(challenger.get(cfg.metric, math.nan)), float(champion.get(cfg.metric,
                                                                               math.nan))
    if not math.isfinite(new):
        return GateDecision(False, cfg.metric, new, old, cfg.tolerance,
                            f"challenger {cfg.metric} is not a number; champion kept")
    if not math.isfinite(old):
        return GateDecision(True, cfg.metric, new, old, cfg.tolerance,
                            f"champion {cfg.metric} is not a number on these days; challenger "
                            "promoted")
    if new >= old - cfg.tolerance:
        return GateDecision(True, cfg.metric, new, old, cfg.tolerance,
                            f"challenger {cfg.metric} {new:.4f} >= champion {old:.4f} - "
                            f"tolerance {cfg.tolerance}")
    return GateDecision(False, cfg.metric, new, old, cfg.tolerance,
                        f"challenger {cfg.metric} {new:.4f} < champion {old:.4f} - tolerance "
                        f"{cfg.tolerance}; champion kept")


#: What a gate judges on: the held-out days after training, or the live traffic a challenger
#: was scored on in shadow (``GATE_EVIDENCE``).
EVIDENCE = ("holdout", "shadow")


# -- retraining: challenger vs champion on the same held-out rows -----------------------------
@dataclass
class GateOutcome:
    challenger_version: str
    champion_version: str
    decision: GateDecision
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float]
    new_champion: str
    test_days: tuple[str, str]
    candidate: Any = field(repr=False, default=None)
    #: How the challenger's mean |SHAP| per feature moved from the champion's
    #: (:func:`fraudkit.training.importance_shift`); None when the champion has none.
    importance_shift: pd.DataFrame | None = field(repr=False, default=None)
    #: Both models' segment tables on the held-out rows (``model`` column), for the UI.
    fairness: pd.DataFrame | None = field(repr=False, default=None)


def judge_fairness(rows: pd.DataFrame, challenger_scores: np.ndarray,
                   challenger_thresholds: Thresholds, champion_scores: np.ndarray,
                   champion_thresholds: Thresholds, cfg: GateConfig) -> dict[str, Any]:
    """The fairness half of the gate: both models' decisions on the same rows, split by
    ``cfg.segments``; passes unless the challenger's worst false-positive disparity exceeds
    the champion's by more than ``cfg.fairness_tolerance``. Segments whose column the rows
    lack (a raw column the training set does not keep) are left out and named."""
    from fraudkit.model import decide

    usable = tuple(s for s in cfg.segments if s.column in rows.columns)
    skipped = [s.name for s in cfg.segments if s not in usable]
    tables = []
    for model, scores, thresholds in (("challenger", challenger_scores, challenger_thresholds),
                                      ("champion", champion_scores, champion_thresholds)):
        frame = rows.assign(decision=decide(scores, thresholds))
        tables.append(segment_table(frame, usable).assign(model=model))
    new, old = tables
    if cfg.fairness_tolerance is None or not usable:
        passed, reason = True, "fairness not judged"
        worst_new = worst_old = None
    else:
        passed, reason, worst_new, worst_old = fairness_verdict(
            new, old, cfg.fairness_tolerance, cfg.fairness_min_false_positives)
    return {"passed": bool(passed), "reason": reason,
            "challenger_worst": str(worst_new) if worst_new else None,
            "champion_worst": str(worst_old) if worst_old else None,
            "tolerance": cfg.fairness_tolerance, "segments_left_out": skipped,
            "table": pd.concat(tables, ignore_index=True)}


def score_version(model_path: Path, frame: pd.DataFrame) -> np.ndarray:
    """Scores of a registered ONNX model on feature rows (what serving would produce)."""
    from fraudkit.features import feature_matrix
    from fraudkit.model import OnnxModel

    return OnnxModel(model_path).predict(feature_matrix(frame))


def retrain_and_gate(
    frame: pd.DataFrame,
    registry: Any,
    gate_cfg: GateConfig | None = None,
    params: Any = None,
    *,
    training_data: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    evidence: str = "holdout",
) -> GateOutcome:
    """Train a challenger on ``frame``'s ``train`` rows, score it and the current champion
    on the same ``test`` rows, register the challenger (every version is kept) and promote
    it only if the gate says so. The verdict, both metric sets and the trigger are written
    to the registry's event log either way, so a person can see why a model is champion.

    With ``evidence="shadow"`` a challenger that passes is not promoted but put in shadow:
    the online service scores it beside the champion, and :func:`judge_shadow` decides on
    that live traffic once its labels mature."""
    from fraudkit.training import evaluate, fit_candidate, importance_shift

    if evidence not in EVIDENCE:
        raise ValueError(f"gate evidence {evidence!r} is not one of {EVIDENCE}")
    gate_cfg = gate_cfg or GateConfig()
    champion = registry.champion()
    champion.verify()
    # In fit_candidate's row order (by transaction_id), which its test_scores follow.
    test_rows = frame[frame["split"] == "test"].sort_values("transaction_id", kind="stable")
    candidate = fit_candidate(frame, params)
    champion_scores = score_version(champion.model_path, test_rows)
    champion_metrics = evaluate(test_rows, champion_scores)
    decision = gate(candidate.metrics, champion_metrics, gate_cfg)
    fairness = judge_fairness(test_rows, candidate.test_scores, candidate.thresholds,
                              champion_scores, champion.thresholds, gate_cfg)
    if decision.promote and not fairness["passed"]:
        decision = replace(decision, promote=False,
                           reason=f"fairness: {fairness['reason']}; champion kept (the "
                                  f"metric alone would promote: {decision.reason})")
    test_days = (str(test_rows["day"].min()), str(test_rows["day"].max()))
    buf = io.BytesIO()
    candidate.reference.to_parquet(buf, index=False)
    shift = importance_shift(champion.manifest.get("explanations"), candidate.explanations)
    details = {
        "evidence": "holdout",
        "gate": decision.as_dict(),
        "challenger_metrics": candidate.metrics,
        "champion_metrics": champion_metrics,
        "champion": champion.version,
        "test_days": list(test_days),
        "trigger": trigger or {},
        "fairness": {k: v for k, v in fairness.items() if k != "table"},
        # The largest moves of mean |SHAP| (log-odds) from the champion to the challenger.
        "importance_shift": shift.head(5).round(4).to_dict(orient="records")
        if shift is not None else f"champion {champion.version} has no explanations",
    }
    registered = registry.register(
        candidate.onnx_bytes,
        training_data=training_data or {},
        metrics={**candidate.metrics, "onnx_max_abs_diff": candidate.onnx_max_abs_diff},
        thresholds=candidate.thresholds,
        extra_files={"reference.parquet": buf.getvalue()},
        notes={"role": "challenger", **details,
               **({"selection": candidate.selection} if candidate.selection else {})},
        explanations=candidate.explanations,
    )
    if decision.promote and evidence == "shadow":
        registry.start_shadow(registered.version,
                              reason=f"held-out gate passed ({decision.reason}); judged on "
                                     "live traffic next", details=details)
    elif decision.promote:
        registry.promote(registered.version, reason=f"gate: {decision.reason}",
                         details={"challenger": registered.version, **details})
    else:
        registry.record("gate_rejected", version=registered.version, reason=decision.reason,
                        **details)
    return GateOutcome(
        challenger_version=registered.version,
        champion_version=champion.version,
        decision=decision,
        challenger_metrics=candidate.metrics,
        champion_metrics=champion_metrics,
        new_champion=registry.champion().version,
        test_days=test_days,
        candidate=candidate,
        importance_shift=shift,
        fairness=fairness["table"],
    )


# -- shadow: challenger vs champion on the same live requests ----------------------------------
@dataclass
class ShadowOutcome:
    challenger_version: str
    champion_version: str
    decision: GateDecision
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float]
    days: tuple[str, str]
    rows: int
    new_champion: str


class NotEnoughEvidence(ValueError):
    """The shadow's matured live traffic cannot judge yet (no rows, or one class only)."""


def judge_shadow(logged: pd.DataFrame, labels: pd.DataFrame, registry: Any,
                 gate_cfg: GateConfig | None = None) -> ShadowOutcome:
    """The gate on live traffic: the champion's answers and the shadow challenger's scores
    of the *same* requests (``logged``: online decisions with ``transaction_id``,
    ``customer_id``, ``day``, ``score``, ``model_version``, ``fallback``,
    ``shadow_version``, ``shadow_score``), judged on their matured ``labels``
    (``transaction_id``, ``tx_fraud``) with the same metric and tolerance as the held-out
    gate. Promotes the challenger (which ends its shadow) or records the rejection and ends
    the shadow; the event says the evidence was live traffic. Raises
    :class:`NotEnoughEvidence` while the labels cannot judge (the shadow goes on)."""
    from fraudkit.training import evaluate

    gate_cfg = gate_cfg or GateConfig()
    state = registry.shadow_state()
    if state is None:
        raise NotEnoughEvidence("no model is in shadow: `python -m fraudkit.registry shadow "
                                "vNNNN` starts one")
    challenger, champion = state["version"], registry.champion().version
    rows = logged[(logged["shadow_version"] == challenger)
                  & (logged["model_version"] == champion) & ~logged["fallback"].astype(bool)
                  & logged["shadow_score"].notna()]
    frame = rows.merge(labels[["transaction_id", "tx_fraud"]], on="transaction_id",
                       how="inner")
    if frame.empty or frame["tx_fraud"].nunique() < 2:
        raise NotEnoughEvidence(
            f"{len(frame)} matured live request(s) of champion {champion} with {challenger} "
            f"in shadow, {int(frame['tx_fraud'].sum()) if len(frame) else 0} fraud(s): not "
            "enough to judge yet; the shadow goes on until more days' labels mature")
    champion_metrics = evaluate(frame, frame["score"].to_numpy())
    challenger_metrics = evaluate(frame, frame["shadow_score"].to_numpy())
    decision = gate(challenger_metrics, champion_metrics, gate_cfg)
    days = (str(frame["day"].min()), str(frame["day"].max()))
    details = {"evidence": "shadow", "gate": decision.as_dict(),
               "challenger_metrics": challenger_metrics, "champion_metrics": champion_metrics,
               "champion": champion, "shadow_days": list(days), "rows": int(len(frame))}
    if decision.promote:
        registry.promote(challenger, reason=f"shadow gate on live traffic: {decision.reason}",
                         details={"challenger": challenger, **details})
    else:
        registry.record("gate_rejected", version=challenger, reason=decision.reason, **details)
        registry.stop_shadow(reason=f"rejected on live traffic: {decision.reason}")
    return ShadowOutcome(challenger, champion, decision, challenger_metrics, champion_metrics,
                         days, int(len(frame)), registry.champion().version)
