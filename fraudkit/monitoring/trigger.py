"""The retraining trigger: which drifted or degraded days form an *event*, which events
are one *episode* already launched, and whether the cool-down lets a new one launch.

The sensor only reads tables and launches runs; every decision about *whether* to retrain is
here, so it can be tested on plain frames without a Dagster instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd

from fraudkit import lake
from fraudkit.monitoring.performance import GATE_METRICS


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
    #: What the worst day's figure was read from: "batch" (drift_metrics, model_performance)
    #: or "online" (online_drift_metrics: the live traffic the service decided on).
    source: str = "batch"

    @property
    def key(self) -> str:
        return f"{self.kind}-{self.first_day}"


def worst_per_day(per_day: pd.DataFrame) -> pd.DataFrame:
    """One row per day: of a day reported from several sources (batch and online), the one
    with the highest drift share (batch first on a tie), so the loop acts on either."""
    if per_day.empty or "source" not in per_day:
        return per_day
    ranked = per_day.assign(_batch=per_day["source"] == "batch").sort_values(
        ["day", "drift_share", "_batch"], ascending=[True, False, False])
    return ranked.drop_duplicates("day").drop(columns=["_batch"]).reset_index(drop=True)


def drift_events(per_day: pd.DataFrame, cfg: TriggerConfig) -> list[Event]:
    """Events from a per-day drift frame (``day, drift_share, model_version, drifted_list``
    and optionally ``source``; a day reported by several sources counts at its worst)."""
    if per_day.empty:
        return []
    per_day = worst_per_day(per_day).sort_values("day").set_index("day")
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
            source=str(part.loc[worst].get("source", "batch")),
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
                and event.first_day <= lake.shift_day(self.last_day, 1)
                and event.last_day >= lake.shift_day(self.first_day, -1))

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
    first = pending[0]
    source = "" if first.source == "batch" else f" ({first.source} traffic)"
    return TriggerDecision(first, f"{first.key}{source}: {first.detail}", pending[1:],
                           [*memory, Launched.of(first)])
