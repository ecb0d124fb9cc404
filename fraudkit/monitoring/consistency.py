"""Online/offline consistency: did the service decide on the features the batch path computes?

The service logs every decision with the 15 features it used (``online_predictions``); the
batch path computes the same features from the landed transactions
(``transaction_features``) and scores them (``batch_predictions``). Joining the three by
``transaction_id`` for a day measures, per feature, how often the real-time answer used the
exact numbers of the offline definition: the log-and-compare that Chronon popularised,
with the project's exact rule instead of a statistical one.

The rule (one implementation, used by the ``online_consistency`` asset and by
``scripts.replay_parity``): a count matches when it is equal, any other feature when it is
within :data:`FEATURE_TOLERANCE`; a score matches within :data:`SCORE_TOLERANCE`, and the
reasons of a review or decline (:func:`reasons_match`) name the same features with
contributions within :data:`REASON_TOLERANCE`. Scores and reasons are compared only where
the online answer and the batch prediction come from the same model version (after a
promotion the two paths may legitimately differ until the day is re-scored). A
transaction *matches* when all its features match and its score and reasons match where
compared.

Besides the matches, a day reports the transactions decided online that never landed
(``missing``: lost upstream of the batch path, or a request that was never a real
transaction) and those that landed but were never decided online (traffic that bypassed
the service, or a day the service saw only in part).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fraudkit.features import COUNT_COLUMNS, FEATURE_COLUMNS

FEATURE_TOLERANCE = 1e-9
SCORE_TOLERANCE = 1e-6
#: Reason contributions (log-odds) of the same model on the same features.
REASON_TOLERANCE = 1e-6
#: The item of a day's summary row (every feature and the score together).
ALL = "transaction"
SCORE = "score"
REASONS = "reasons"
#: Mismatched transactions named per item and day.
EXAMPLES = 5

#: One row per (day, item): item is a feature name, ``score`` or ``transaction``.
CONSISTENCY_SCHEMA = pa.schema(
    [
        ("day", pa.string()),
        ("item", pa.string()),
        ("compared", pa.int64()),
        ("matched", pa.int64()),
        ("match_rate", pa.float64()),
        ("max_abs_diff", pa.float64()),
        ("examples", pa.string()),  # JSON: [{transaction_id, online, batch}] of mismatches
        ("decided_online", pa.int64()),
        ("landed", pa.int64()),
        ("missing", pa.int64()),
        ("landed_not_decided", pa.int64()),
        ("degraded", pa.int64()),
        ("other_model_version", pa.int64()),
    ]
)


def feature_matches(name: str, online: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Element-wise: does the online value of feature ``name`` equal the batch one?"""
    online = np.asarray(online, dtype=np.float64)
    batch = np.asarray(batch, dtype=np.float64)
    if name in COUNT_COLUMNS:
        return online == batch
    return np.abs(online - batch) <= FEATURE_TOLERANCE  # NaN never matches


def score_matches(online: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Element-wise: do two scores of the same model agree?"""
    return np.abs(np.asarray(online, np.float64) - np.asarray(batch, np.float64)) \
        <= SCORE_TOLERANCE


def reasons_match(online: Any, batch: Any) -> tuple[bool, float]:
    """Do one decision's reasons agree on both paths (the same model version)? Both absent,
    or the same features in the same order with contributions within
    :data:`REASON_TOLERANCE`; and the largest contribution difference. Reasons are lists
    of ``{"feature", "contribution"}`` (as the API answers and the Delta tables hold)."""
    online, batch = _reason_list(online), _reason_list(batch)
    if online is None or batch is None:
        return online is None and batch is None, 0.0
    if [r["feature"] for r in online] != [r["feature"] for r in batch]:
        return False, float("inf")
    diff = max((abs(a["contribution"] - b["contribution"]) for a, b in zip(
        online, batch, strict=True)), default=0.0)
    return diff <= REASON_TOLERANCE, diff


def _reason_list(value: Any) -> list[dict] | None:
    """None for a missing value (None, NaN from a merge); else a plain list."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return list(value)


@dataclass
class DayConsistency:
    """One day's comparison; :meth:`rows` gives its rows of :data:`CONSISTENCY_SCHEMA`."""

    day: str
    decided_online: int
    landed: int
    missing: int
    landed_not_decided: int
    compared: int
    matched: int
    degraded: int
    other_model_version: int  # no batch score of the same version (another, or none)
    items: dict[str, dict] = field(default_factory=dict)  # item -> compared, matched, ...
    #: Per compared transaction: ``transaction_id`` and ``matched`` (1/0), and one 0/1
    #: column per feature (``<feature>_matched``): what the Evidently dashboard averages.
    flags: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def rate(self) -> float | None:
        """Share of the compared transactions that matched; None when none was compared."""
        return self.matched / self.compared if self.compared else None

    def mismatched_items(self) -> dict[str, int]:
        return {item: v["compared"] - v["matched"] for item, v in self.items.items()
                if item != ALL and v["compared"] > v["matched"]}

    def examples(self) -> list[dict]:
        """Mismatched transactions of the day, each with the items that differed."""
        return self.items[ALL]["examples"] if ALL in self.items else []

    def rows(self) -> list[dict]:
        day_level = {"decided_online": self.decided_online, "landed": self.landed,
                     "missing": self.missing, "landed_not_decided": self.landed_not_decided,
                     "degraded": self.degraded,
                     "other_model_version": self.other_model_version}
        out = []
        for item, v in self.items.items():
            out.append({"day": self.day, "item": item, "compared": v["compared"],
                        "matched": v["matched"],
                        "match_rate": v["matched"] / v["compared"] if v["compared"] else None,
                        "max_abs_diff": v["max_abs_diff"],
                        "examples": json.dumps(v["examples"]), **day_level})
        return out


def compare_day(day: str, online: pd.DataFrame, features: pd.DataFrame,
                predictions: pd.DataFrame) -> DayConsistency:
    """Compare one day's online decisions with its batch features and predictions.

    ``online`` has the ``online_predictions`` columns (``transaction_id``, the features by
    name with ``tx_amount``, ``score``, ``model_version``, ``degraded``), ``features`` the
    ``transaction_features`` columns and ``predictions`` the ``batch_predictions`` ones
    (``transaction_id``, ``score``, ``model_version``), all of ``day``.
    """
    online = online.drop_duplicates("transaction_id", keep="last")
    # Reasons are compared when both tables have them (not tables of an earlier release).
    explained = "reasons" in online.columns and "reasons" in predictions.columns
    extra = ["reasons"] if explained else []
    batch = features[["transaction_id", *FEATURE_COLUMNS]].merge(
        predictions[["transaction_id", "score", "model_version", *extra]],
        on="transaction_id", how="left", suffixes=("", "_batch"))
    joined = online[["transaction_id", *FEATURE_COLUMNS, "score", "model_version",
                     "degraded", *extra]].merge(batch, on="transaction_id", how="inner",
                                                suffixes=("", "_b"))
    ids = joined["transaction_id"].to_numpy()
    landed_ids = set(features["transaction_id"].tolist())
    online_ids = set(online["transaction_id"].tolist())
    row_ok = np.ones(len(joined), dtype=bool)
    differed: dict[int, list[str]] = {}
    items: dict[str, dict] = {}

    def record(item: str, ok: np.ndarray, got: np.ndarray, want: np.ndarray,
               compared: np.ndarray) -> None:
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))[compared]
        bad = compared & ~ok
        examples = [{"transaction_id": int(i), "online": _plain(g), "batch": _plain(w)}
                    for i, g, w in zip(ids[bad][:EXAMPLES], got[bad][:EXAMPLES],
                                       want[bad][:EXAMPLES], strict=True)]
        for i in ids[bad]:
            differed.setdefault(int(i), []).append(item)
        items[item] = {"compared": int(compared.sum()), "matched": int((compared & ok).sum()),
                       "max_abs_diff": float(np.nanmax(diff, initial=0.0))
                       if len(diff) else 0.0, "examples": examples}

    everywhere = np.ones(len(joined), dtype=bool)
    flags = {"transaction_id": ids}
    for name in FEATURE_COLUMNS:
        got, want = joined[name].to_numpy(), joined[f"{name}_b"].to_numpy()
        ok = feature_matches(name, got, want)
        record(name, ok, got, want, everywhere)
        flags[f"{name}_matched"] = ok.astype(np.int64)
        row_ok &= ok
    same_model = (joined["model_version"] == joined["model_version_b"]).to_numpy()
    got, want = joined["score"].to_numpy(), joined["score_b"].to_numpy()
    ok = score_matches(got, want)
    record(SCORE, ok, got, want, same_model)
    row_ok &= ok | ~same_model
    if explained:  # the same model's reasons: equal features, contributions within 1e-6
        pairs = [reasons_match(a, b) for a, b in zip(joined["reasons"], joined["reasons_b"],
                                                     strict=True)]
        ok = np.array([p[0] for p in pairs], dtype=bool)
        diff = np.array([p[1] for p in pairs], dtype=np.float64)
        got = np.array([json.dumps(_reason_list(v)) for v in joined["reasons"]], dtype=object)
        want = np.array([json.dumps(_reason_list(v)) for v in joined["reasons_b"]],
                        dtype=object)
        bad = same_model & ~ok
        for i in ids[bad]:
            differed.setdefault(int(i), []).append(REASONS)
        items[REASONS] = {
            "compared": int(same_model.sum()), "matched": int((same_model & ok).sum()),
            "max_abs_diff": float(np.max(diff[same_model], initial=0.0)),
            "examples": [{"transaction_id": int(i), "online": g, "batch": w} for i, g, w in
                         zip(ids[bad][:EXAMPLES], got[bad][:EXAMPLES], want[bad][:EXAMPLES],
                             strict=True)]}
        row_ok &= ok | ~same_model
    bad_ids = ids[~row_ok]
    items[ALL] = {
        "compared": len(joined), "matched": int(row_ok.sum()), "max_abs_diff": max(
            (v["max_abs_diff"] for k, v in items.items() if k not in (SCORE, REASONS)),
            default=0.0),
        "examples": [{"transaction_id": int(i), "differed": differed.get(int(i), [])}
                     for i in bad_ids[:EXAMPLES]]}
    return DayConsistency(
        day=day, decided_online=len(online_ids), landed=len(landed_ids),
        missing=len(online_ids - landed_ids), landed_not_decided=len(landed_ids - online_ids),
        compared=len(joined), matched=int(row_ok.sum()),
        degraded=int(joined["degraded"].fillna(False).astype(bool).sum()),
        other_model_version=int((~same_model).sum()), items=items,
        flags=pd.DataFrame({**flags, "matched": row_ok.astype(np.int64)}))


class ConsistencyWorkspace:
    """The consistency rate in the local Evidently workspace (the drift reports' one), as a
    project of its own whose dashboard plots, per day, the share of online decisions that
    matched the batch numbers and the number compared. Opened once per run (opening reads
    every snapshot already there; see :class:`fraudkit.monitoring.drift.DriftWorkspace`)."""

    PROJECT = "fraud monitoring: online/offline consistency"

    def __init__(self, workspace_dir: Path) -> None:
        from evidently.ui.workspace import Workspace

        self.workspace = Workspace.create(str(workspace_dir))
        found = self.workspace.search_project(self.PROJECT)
        self.project = found[0] if found else self._create_project()

    def _create_project(self) -> Any:
        from evidently.sdk.models import PanelMetric
        from evidently.sdk.panels import line_plot_panel

        project = self.workspace.create_project(
            self.PROJECT, description="Share of online decisions whose 15 features and score "
            "equal the batch path's (online_consistency)")
        project.dashboard.add_panel(line_plot_panel(
            title="Online/offline consistency rate",
            description="transactions whose features (and score, same model) matched batch",
            values=[PanelMetric(metric="MeanValue", legend="matched",
                                metric_labels={"column": "matched"})], size="half"))
        project.dashboard.add_panel(line_plot_panel(
            title="Online decisions compared", values=[PanelMetric(metric="RowCount",
                                                                   legend="compared")],
            size="half"))
        return project

    def add(self, result: DayConsistency) -> str | None:
        """Add the day's report (nothing when no transaction was compared); its UI path."""
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import MeanValue, RowCount

        if result.flags is None or result.flags.empty:
            return None
        flags = result.flags.drop(columns=["transaction_id"])
        columns = list(flags.columns)
        report = Report([RowCount(), *[MeanValue(column=c) for c in columns]],
                        metadata={"day": result.day}, tags=["consistency", result.day])
        snapshot = report.run(
            Dataset.from_pandas(flags, data_definition=DataDefinition(
                numerical_columns=columns)),
            None, timestamp=dt.datetime.fromisoformat(result.day),
            name=f"consistency {result.day}")
        ref = self.workspace.add_run(self.project.id, snapshot)
        return f"/projects/{self.project.id}/reports/{ref.id}"


def _plain(value: object) -> object:
    """A JSON-ready number (numpy scalars are not)."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return None if np.isnan(value) else float(value)
    return value
