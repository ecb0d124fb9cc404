"""The monitoring loop's logic, free of Dagster: drift reports, their summary, the retraining
trigger and the champion/challenger gate.

Why it is plain Python: the same functions run inside Dagster assets and sensors, in the
benchmark and in unit tests, and a person can call them from a notebook.

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
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fraudkit import lake
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

PERFORMANCE_SCHEMA = pa.schema(
    [
        ("model_version", pa.string()),
        ("auc_roc", pa.float64()),
        ("average_precision", pa.float64()),
        ("card_precision_at_100", pa.float64()),
        ("rows", pa.int64()),
        ("frauds", pa.int64()),
        ("matured_on", pa.string()),
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


def add_to_workspace(snapshot: Any, workspace_dir: Path, project_name: str = "fraud monitoring",
                     description: str = "Daily drift of the fraud model's features and scores"
                     ) -> str:
    """Add a report to the local Evidently workspace (``evidently ui --workspace DIR``)
    and return its path in the UI, ``/projects/<project>/reports/<report>``. The project
    is created on first use, with a dashboard that plots, per day, the drift share of the
    monitored features, the prediction drift and the row count; it is found by name after."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel
    from evidently.ui.workspace import Workspace

    workspace = Workspace.create(str(workspace_dir))
    projects = workspace.search_project(project_name)
    if projects:
        project = projects[0]
    else:
        project = workspace.create_project(project_name, description=description)
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
    ref = workspace.add_run(project.id, snapshot)
    return f"/projects/{project.id}/reports/{ref.id}"


# -- realized performance ---------------------------------------------------------------------
def matured_until(latest_day: str, label_delay_days: int) -> str:
    """The last day whose labels are known when the data reaches ``latest_day``."""
    return (dt.date.fromisoformat(latest_day) - dt.timedelta(days=label_delay_days)).isoformat()


# -- retraining trigger -----------------------------------------------------------------------
#: The realized metrics a trigger or the gate can use (columns of model_performance).
GATE_METRICS = ("auc_roc", "average_precision", "card_precision_at_100")


@dataclass(frozen=True)
class TriggerConfig:
    """When the loop retrains.

    * drift: a day whose drift share reaches ``drift_share`` is drifted; consecutive drifted
      days form one *event*, named after its first day.
    * performance: a matured day whose realized ``performance_metric`` falls below
      ``performance_floor`` is degraded; consecutive ones form one event the same way.
    * one *episode*, one run: an event that overlaps or touches (a day apart) the days of
      an event already launched for the same champion is that episode again (re-reported
      days moved its first day or split it) and launches nothing (:class:`Launched`).
    * ``cooldown_seconds``: after a launch, no other launch for this long, whatever the
      events; a skipped event is launched when the cool-down ends (if still unlaunched).
    """

    drift_share: float = 0.2
    performance_metric: str = "average_precision"
    performance_floor: float | None = 0.5
    cooldown_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.performance_metric not in GATE_METRICS:
            raise ValueError(f"performance metric {self.performance_metric!r} is not one of "
                             f"{GATE_METRICS}")
        if not 0 < self.drift_share <= 1:
            raise ValueError(f"drift share {self.drift_share} must be in (0, 1]")
        if self.cooldown_seconds < 0:
            raise ValueError(f"cool-down {self.cooldown_seconds} s must be >= 0")


@dataclass(frozen=True)
class Event:
    kind: str  # "drift" or "performance"
    first_day: str
    last_day: str
    days: int
    value: float  # the worst drift share or metric of the event
    model_version: str
    detail: str

    @property
    def key(self) -> str:
        return f"{self.kind}-{self.first_day}"


def drift_events(per_day: pd.DataFrame, cfg: TriggerConfig) -> list[Event]:
    """Events from a per-day drift frame (``day, drift_share, model_version, drifted_list``)."""
    if per_day.empty:
        return []
    per_day = per_day.sort_values("day").set_index("day")
    flagged = per_day.index[per_day["drift_share"] >= cfg.drift_share].tolist()
    events = []
    for run in lake.consecutive_runs(flagged):
        part = per_day.loc[run]
        worst = part["drift_share"].idxmax()
        events.append(Event(
            kind="drift", first_day=run[0], last_day=run[-1], days=len(run),
            value=float(part["drift_share"].max()), model_version=str(part.loc[worst,
                                                                            "model_version"]),
            detail=str(part.loc[worst].get("drifted_list", "")),
        ))
    return events


def performance_events(per_day: pd.DataFrame, cfg: TriggerConfig) -> list[Event]:
    """Events from the ``model_performance`` rows (one per day)."""
    if per_day.empty or cfg.performance_floor is None:
        return []
    per_day = per_day.sort_values("day").set_index("day")
    values = per_day[cfg.performance_metric]
    flagged = per_day.index[values.notna() & (values < cfg.performance_floor)].tolist()
    events = []
    for run in lake.consecutive_runs(flagged):
        part = per_day.loc[run]
        worst = part[cfg.performance_metric].idxmin()
        events.append(Event(
            kind="performance", first_day=run[0], last_day=run[-1], days=len(run),
            value=float(part[cfg.performance_metric].min()),
            model_version=str(part.loc[worst, "model_version"]),
            detail=f"{cfg.performance_metric} {part[cfg.performance_metric].min():.4f} < "
                   f"floor {cfg.performance_floor}",
        ))
    return events


def about_champion(per_day: pd.DataFrame, champion: str, after_day: str | None = None
                   ) -> pd.DataFrame:
    """The rows that are evidence about the current champion: days it scored itself (a
    retired model's drift or realized metrics say nothing about the one serving now) and,
    with ``after_day``, only days after it (its held-out window: earlier days were in or
    next to its training data, so their realized metrics flatter or, in the first weeks of
    look-back, misjudge it)."""
    keep = per_day["model_version"].astype(str) == champion
    if after_day is not None:
        keep &= per_day["day"].astype(str) > after_day
    return per_day[keep]


def _next_day(day: str, days: int = 1) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


@dataclass(frozen=True)
class Launched:
    """An episode a retrain was launched for: the days its events have spanned so far and
    the champion they were about.

    Why days and not the event's name: an event is named after its first day, and
    re-reported days change that (an earlier day found drifted) or split the event (a
    middle day found normal). Any event of the same kind and champion that overlaps or
    touches these days is the same episode; the days grow with it, so a later split of
    the grown episode is recognised too. ``key`` is the event name the run was launched as.
    """

    kind: str
    first_day: str
    last_day: str
    champion: str | None  # None: remembered by an older cursor, which kept names only
    key: str

    @classmethod
    def of(cls, event: Event) -> Launched:
        return cls(event.kind, event.first_day, event.last_day, event.model_version, event.key)

    def covers(self, event: Event) -> bool:
        return (event.kind == self.kind and self.champion in (None, event.model_version)
                and event.first_day <= _next_day(self.last_day)
                and event.last_day >= _next_day(self.first_day, -1))

    def grown(self, event: Event) -> Launched:
        return replace(self, first_day=min(self.first_day, event.first_day),
                       last_day=max(self.last_day, event.last_day))

    def as_cursor(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_cursor(cls, item: dict[str, Any] | str) -> Launched:
        """A cursor entry; earlier cursors stored only the event name ``<kind>-<day>``."""
        if isinstance(item, str):
            kind, day = item.split("-", 1)
            return cls(kind, day, day, None, item)
        return cls(**item)


@dataclass
class TriggerDecision:
    launch: Event | None
    reason: str
    pending: list[Event]
    #: The launched episodes to remember: grown by this evaluation's events, plus ``launch``.
    launched: list[Launched] = field(default_factory=list)


def decide_trigger(events: Sequence[Event], launched: Sequence[Launched],
                   last_launch_at: float | None, now: float, cfg: TriggerConfig
                   ) -> TriggerDecision:
    """Pick the event to launch now, or say why none: every event part of an episode
    already launched, or the cool-down since the last launch still running. The earliest
    new event goes first."""
    memory = list(launched)
    pending: list[Event] = []
    handled: list[str] = []
    for event in sorted(events, key=lambda e: e.first_day):
        same = [i for i, episode in enumerate(memory) if episode.covers(event)]
        for i in same:
            memory[i] = memory[i].grown(event)
        if same:
            handled.append(event.key if event.key == memory[same[0]].key
                           else f"{event.key} (episode {memory[same[0]].key})")
        else:
            pending.append(event)
    if not pending:
        if events:
            return TriggerDecision(None, f"{len(events)} event(s) already handled, each part "
                                         f"of an episode already launched "
                                         f"({', '.join(handled[-3:])})", [], memory)
        return TriggerDecision(None, "no day crosses a threshold", [], memory)
    if last_launch_at is not None and now - last_launch_at < cfg.cooldown_seconds:
        left = cfg.cooldown_seconds - (now - last_launch_at)
        return TriggerDecision(None, f"cool-down: {len(pending)} event(s) wait "
                                     f"{left:.0f}s more ({pending[0].key} first)", pending,
                               memory)
    return TriggerDecision(pending[0], f"{pending[0].key}: {pending[0].detail}", pending[1:],
                           [*memory, Launched.of(pending[0])])


# -- champion / challenger gate ---------------------------------------------------------------
@dataclass(frozen=True)
class GateConfig:
    """Promote the challenger when ``challenger >= champion - tolerance`` on ``metric``,
    both scored on the same held-out days."""

    metric: str = "average_precision"
    tolerance: float = 0.0

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
) -> GateOutcome:
    """Train a challenger on ``frame``'s ``train`` rows, score it and the current champion
    on the same ``test`` rows, register the challenger (every version is kept) and promote
    it only if the gate says so. The verdict, both metric sets and the trigger are written
    to the registry's event log either way, so a person can see why a model is champion."""
    from fraudkit.training import evaluate, fit_candidate

    gate_cfg = gate_cfg or GateConfig()
    champion = registry.champion()
    champion.verify()
    test_rows = frame[frame["split"] == "test"]
    candidate = fit_candidate(frame, params)
    champion_metrics = evaluate(test_rows, score_version(champion.model_path, test_rows))
    decision = gate(candidate.metrics, champion_metrics, gate_cfg)
    test_days = (str(test_rows["day"].min()), str(test_rows["day"].max()))
    buf = io.BytesIO()
    candidate.reference.to_parquet(buf, index=False)
    details = {
        "gate": decision.as_dict(),
        "challenger_metrics": candidate.metrics,
        "champion_metrics": champion_metrics,
        "champion": champion.version,
        "test_days": list(test_days),
        "trigger": trigger or {},
    }
    registered = registry.register(
        candidate.onnx_bytes,
        training_data=training_data or {},
        metrics={**candidate.metrics, "onnx_max_abs_diff": candidate.onnx_max_abs_diff},
        thresholds=candidate.thresholds,
        extra_files={"reference.parquet": buf.getvalue()},
        notes={"role": "challenger", **details},
    )
    if decision.promote:
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
    )
