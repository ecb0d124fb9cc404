"""Drift reports: an Evidently report of a day against the champion's reference sample,
the :class:`DriftSummary` read from it and the summary's rows in the ``drift_metrics`` table.

Drift methods. A daily batch holds thousands to millions of rows; at that size every
p-value test (K-S, chi-square) calls the smallest, harmless difference "drift". Distances do
not shrink with sample size, so the report fixes them instead of letting Evidently pick by
row count: normed Wasserstein distance for numerical columns, Jensen-Shannon distance for
the 0/1 flags. The default threshold is 0.2, not Evidently's 0.1: a normed Wasserstein
distance of 0.2 means the day moved by a fifth of the reference's standard deviation, and
0.1 fires on sampling noise alone for days of a few hundred rows. A column drifts when its
distance reaches the threshold; the day's *drift share* is the share of monitored features
that drift.

``tx_during_weekend`` is reported but not counted in the drift share: one day is either
entirely weekend or not, so it always differs from a reference that mixes the week.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fraudkit.features import FEATURE_COLUMNS

SCORE_COLUMN = "score"
#: 0/1 flags: compared as categories (Jensen-Shannon), not as numbers.
CATEGORICAL_FEATURES: tuple[str, ...] = ("tx_during_weekend", "tx_during_night")
#: Calendar features that differ between one day and a week-mixing reference by design.
CALENDAR_FEATURES: tuple[str, ...] = ("tx_during_weekend",)
#: Distance methods (drift when score >= threshold); any other method is a p-value test.
DISTANCE_METHODS = frozenset(
    {"wasserstein", "jensenshannon", "psi", "kl_div", "hellinger", "ed", "empirical_mmd"}
)

DRIFT_METRICS_SCHEMA = pa.schema(
    [
        ("column", pa.string()),
        ("kind", pa.string()),  # "feature" or "prediction"
        ("method", pa.string()),
        ("threshold", pa.float64()),
        ("drift_score", pa.float64()),
        ("drifted", pa.bool_()),
        ("counted_in_share", pa.bool_()),
        ("drift_share", pa.float64()),
        ("drifted_features", pa.int64()),
        ("monitored_features", pa.int64()),
        ("dataset_drift", pa.bool_()),
        ("prediction_drift", pa.bool_()),  # null: not measured (no score column)
        ("current_rows", pa.int64()),
        ("current_rows_used", pa.int64()),
        ("reference_rows", pa.int64()),
        ("model_version", pa.string()),
        ("report_path", pa.string()),
        ("computed_at", pa.timestamp("us", tz="UTC")),
        ("day", pa.string()),
    ]
)


@dataclass(frozen=True)
class DriftConfig:
    """How a day is compared with the champion's reference sample.

    ``drift_share`` is both Evidently's dataset-drift share (shown in the report) and the
    share at which the monitoring loop calls the day drifted. ``max_current_rows`` bounds
    the rows the report reads: above it the day is sampled uniformly (seeded) and the
    summary says how many rows were used.
    """

    num_method: str = "wasserstein"
    cat_method: str = "jensenshannon"
    threshold: float = 0.2
    drift_share: float = 0.2
    ignore_in_share: tuple[str, ...] = CALENDAR_FEATURES
    max_current_rows: int | None = 200_000
    seed: int = 0
    #: True: dataset-level quality (rows, missing, duplicates, constant columns);
    #: "full": Evidently's DataSummaryPreset per column (slow: a plot per statistic).
    data_quality: bool | str = True

    def method_for(self, column: str) -> str:
        return self.cat_method if column in CATEGORICAL_FEATURES else self.num_method

    @property
    def share_columns(self) -> list[str]:
        return [c for c in FEATURE_COLUMNS if c not in self.ignore_in_share]


def is_drifted(method: str, score: float, threshold: float) -> bool:
    """Distances drift when they reach the threshold, p-values when they fall below it."""
    if not math.isfinite(score):
        return False
    return score >= threshold if method in DISTANCE_METHODS else score < threshold


@dataclass
class ColumnDrift:
    column: str
    kind: str
    method: str
    threshold: float
    drift_score: float
    drifted: bool
    counted_in_share: bool


@dataclass
class DriftSummary:
    """What the loop needs from a report, in plain numbers."""

    columns: list[ColumnDrift]
    drift_share: float
    drifted_features: int
    monitored_features: int
    dataset_drift: bool
    prediction_drift: bool | None
    current_rows: int
    current_rows_used: int
    reference_rows: int

    @property
    def drifted_columns(self) -> list[str]:
        """Drifted features that count in the drift share."""
        return [c.column for c in self.columns if c.drifted and c.counted_in_share]

    @property
    def sampled(self) -> bool:
        return self.current_rows_used < self.current_rows


def _frame(data: pd.DataFrame, with_score: bool) -> pd.DataFrame:
    columns = [*FEATURE_COLUMNS, *([SCORE_COLUMN] if with_score else [])]
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise ValueError(f"drift input lacks column(s) {missing}; it needs {columns}")
    out = data[columns].copy()
    for c in CATEGORICAL_FEATURES:
        out[c] = out[c].astype(np.int64)
    for c in columns:
        if c not in CATEGORICAL_FEATURES:
            out[c] = out[c].astype(np.float64)
    return out.reset_index(drop=True)


def build_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    cfg: DriftConfig | None = None,
    *,
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    timestamp: dt.datetime | None = None,
) -> tuple[Any, DriftSummary]:
    """Run an Evidently report of ``current`` against ``reference``: data drift of each
    feature, prediction drift of ``score`` (when both frames have it) and, unless
    ``cfg.data_quality`` is off, the data summary (missing values, ranges, constants).

    ``timestamp`` dates the snapshot (the day it describes, so the workspace's dashboard
    plots drift by day rather than by when the report ran). Returns the Evidently
    ``Snapshot`` (save it as HTML, add it to a workspace) and the :class:`DriftSummary`
    read from it.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import (
        AlmostConstantColumnsCount,
        ConstantColumnsCount,
        DatasetMissingValueCount,
        DuplicatedRowCount,
        EmptyColumnsCount,
        RowCount,
        ValueDrift,
    )
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    cfg = cfg or DriftConfig()
    if reference.empty:
        raise ValueError("the reference sample is empty: nothing to compare the day with")
    with_score = SCORE_COLUMN in current.columns and SCORE_COLUMN in reference.columns
    current_rows = len(current)
    if cfg.max_current_rows and current_rows > cfg.max_current_rows:
        current = current.sample(cfg.max_current_rows, random_state=cfg.seed)
    cur, ref = _frame(current, with_score), _frame(reference, with_score)
    numerical = [c for c in cur.columns if c not in CATEGORICAL_FEATURES]
    definition = DataDefinition(numerical_columns=numerical,
                                categorical_columns=list(CATEGORICAL_FEATURES))
    per_column_method = {c: cfg.method_for(c) for c in FEATURE_COLUMNS}
    per_column_threshold = dict.fromkeys(FEATURE_COLUMNS, cfg.threshold)
    items: list[Any] = [
        # The monitored features: their drift, with the distributions as Evidently renders
        # them, and the drift share the loop acts on (the preset's DriftedColumnsCount).
        DataDriftPreset(columns=cfg.share_columns, drift_share=cfg.drift_share,
                        per_column_method=per_column_method,
                        per_column_threshold=per_column_threshold),
        # Features reported but left out of the share (a day's calendar flags).
        *[ValueDrift(column=c, method=cfg.method_for(c), threshold=cfg.threshold)
          for c in FEATURE_COLUMNS if c not in cfg.share_columns],
    ]
    if with_score:
        items.append(ValueDrift(column=SCORE_COLUMN, method=cfg.num_method,
                                threshold=cfg.threshold))
    if cfg.data_quality == "full":
        items.append(DataSummaryPreset(columns=list(cur.columns)))
    elif cfg.data_quality:
        # Dataset-level quality: the full summary draws ~100 plotly figures (5+ s a day).
        items += [RowCount(), DatasetMissingValueCount(), DuplicatedRowCount(),
                  EmptyColumnsCount(), ConstantColumnsCount(), AlmostConstantColumnsCount()]
    report = Report(items, metadata=metadata or {}, tags=tags or [])
    snapshot = report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
        timestamp=timestamp,
        name=name,
    )
    return snapshot, summarize(snapshot, cfg, current_rows, len(cur), len(ref))


def summarize(snapshot: Any, cfg: DriftConfig, current_rows: int, used_rows: int,
              reference_rows: int) -> DriftSummary:
    """Read per-column drift scores and the drift share out of a report's results.

    The flags come from the score, the method and the threshold the report actually used
    (stored in each metric's config), so the summary cannot disagree with the HTML.
    """
    columns: dict[str, ColumnDrift] = {}
    share_value: dict[str, float] | None = None
    for item in snapshot.dict()["metrics"]:
        config = item["config"]
        kind = config.get("type", "")
        if kind.endswith(":ValueDrift"):
            column = config["column"]
            method = str(config.get("method") or cfg.method_for(column))
            threshold = float(config.get("threshold") or cfg.threshold)
            score = float(item["value"])
            columns[column] = ColumnDrift(
                column=column,
                kind="prediction" if column == SCORE_COLUMN else "feature",
                method=_method_name(method),
                threshold=threshold,
                drift_score=score,
                drifted=is_drifted(_method_name(method), score, threshold),
                counted_in_share=column in cfg.share_columns,
            )
        elif kind.endswith(":DriftedColumnsCount") and config.get("columns") == cfg.share_columns:
            share_value = item["value"]
    missing = [c for c in FEATURE_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"the report has no drift result for {missing}")
    counted = [columns[c] for c in cfg.share_columns]
    drifted = sum(c.drifted for c in counted)
    share = drifted / len(counted) if counted else 0.0
    if share_value is not None and not math.isclose(share, float(share_value["share"]),
                                                    abs_tol=1e-9):
        raise ValueError(f"drift share {share} differs from Evidently's {share_value}")
    ordered = [columns[c] for c in FEATURE_COLUMNS]
    if SCORE_COLUMN in columns:
        ordered.append(columns[SCORE_COLUMN])
    return DriftSummary(
        columns=ordered,
        drift_share=share,
        drifted_features=drifted,
        monitored_features=len(counted),
        dataset_drift=share >= cfg.drift_share,
        prediction_drift=columns[SCORE_COLUMN].drifted if SCORE_COLUMN in columns else None,
        current_rows=current_rows,
        current_rows_used=used_rows,
        reference_rows=reference_rows,
    )


_METHOD_NAMES = {
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "K-S p_value": "ks",
    "PSI": "psi",
}


def _method_name(method: str) -> str:
    return _METHOD_NAMES.get(method, method)


def summary_rows(summary: DriftSummary, day: str, model_version: str, report_path: str,
                 computed_at: dt.datetime | None = None) -> pa.Table:
    """One row per column for the ``drift_metrics`` table; day-level values repeat."""
    at = computed_at or dt.datetime.now(dt.UTC)
    rows = [
        {
            **asdict(c),
            "drift_share": summary.drift_share,
            "drifted_features": summary.drifted_features,
            "monitored_features": summary.monitored_features,
            "dataset_drift": summary.dataset_drift,
            # None (the report had no score column) stays null: unknown, not "no drift".
            "prediction_drift": summary.prediction_drift,
            "current_rows": summary.current_rows,
            "current_rows_used": summary.current_rows_used,
            "reference_rows": summary.reference_rows,
            "model_version": model_version,
            "report_path": report_path,
            "computed_at": at,
            "day": day,
        }
        for c in summary.columns
    ]
    return pa.Table.from_pylist(rows, schema=DRIFT_METRICS_SCHEMA)


class DriftWorkspace:
    """The project of the drift reports in a local Evidently workspace (``evidently ui
    --workspace DIR``), opened once for all the reports of a run.

    Why once: opening a local workspace reads every snapshot already in it, so opening it
    for each report made a back-fill of N days read O(N^2) snapshot files. The project is
    created on first use, with a dashboard that plots, per day, the drift share of the
    monitored features, the prediction drift and the row count; it is found by name after.
    """

    def __init__(self, workspace_dir: Path, project_name: str = "fraud monitoring",
                 description: str = "Daily drift of the fraud model's features and scores"
                 ) -> None:
        from evidently.ui.workspace import Workspace

        self.workspace = Workspace.create(str(workspace_dir))
        projects = self.workspace.search_project(project_name)
        self.project = projects[0] if projects else self._create_project(project_name,
                                                                        description)

    def _create_project(self, name: str, description: str) -> Any:
        from evidently.sdk.models import PanelMetric
        from evidently.sdk.panels import line_plot_panel

        project = self.workspace.create_project(name, description=description)
        project.dashboard.add_panel(line_plot_panel(
            title="Drift share of the monitored features",
            description="drift of the day's features against the scoring model's reference",
            values=[PanelMetric(metric="DriftedColumnsCount", legend="share",
                                metric_labels={"value_type": "share"})],
            size="half"))
        project.dashboard.add_panel(line_plot_panel(
            title="Prediction drift (score)",
            description="normed Wasserstein distance of the day's scores",
            values=[PanelMetric(metric="ValueDrift", legend="score",
                                metric_labels={"column": SCORE_COLUMN})],
            size="half"))
        project.dashboard.add_panel(line_plot_panel(
            title="Transactions per day", values=[PanelMetric(metric="RowCount",
                                                              legend="rows")],
            size="full"))
        return project

    def add(self, snapshot: Any) -> str:
        """Add a report; its path in the UI, ``/projects/<project>/reports/<report>``."""
        ref = self.workspace.add_run(self.project.id, snapshot)
        return f"/projects/{self.project.id}/reports/{ref.id}"
