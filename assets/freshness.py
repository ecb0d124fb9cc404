"""Freshness checks: has each day's partition landed by its deadline?

One check per daily asset of the batch and online paths (``raw_transactions``,
``transaction_features``, ``batch_predictions``, ``online_predictions``), all in one
multi-asset check op of this project. At its last deadline tick (``FRESHNESS_DEADLINE``,
default 06:00 in ``FRESHNESS_TIMEZONE``, default UTC) a check expects the day partition that
ended before that tick, i.e. *yesterday* after 06:00 and the day before until then. It
passes when that partition has a materialization, whatever its content (the assets' own
checks judge the content); it fails, naming the partition, when it has none. The day in
progress never counts, materialized or not. The clock is the wall clock: simulated days in
the past (the demo) are late. After ``FRAUD_END_DATE`` the expected partition stays the
calendar's last day; before the first deadline that expects ``FRAUD_START_DATE`` no day is
due and the checks pass, saying so.

Why our own check rather than Dagster's :func:`dagster.build_time_partition_freshness_checks`
(which this module used until the open day became a partition): that builder takes the
partitions definition's last window at the deadline as the expected day. Since
``daily_partitions`` offers the UTC day in progress (``end_offset=1``, for the landing
sensor's micro-batches, assets/common.py), that window is the day *containing* the deadline,
so every check would expect a partial day that cannot have landed. Here the expected day is
computed from the deadline alone (:func:`expected_day`), whatever the partitions' offset.
Why not ``FreshnessPolicy`` (Dagster 1.13's successor to both): a policy is not
partition-aware (it asks whether *any* materialization happened recently, so a back-fill of
old days, or a micro-batch of today, would count as fresh) and shows as a freshness state
rather than a pass/fail check with a message. These checks ask exactly "has day D landed by
HH:MM?".

They are evaluated by ``freshness_sensor`` (sensors/freshness.py, Dagster's
``build_sensor_for_freshness_checks``, which takes any checks that write the metadata it
reads: ``dagster/fresh_until_timestamp`` on a pass) and on demand from the asset's *Checks*
tab. The back-fill jobs of definitions.py (``ingest_and_features``, ``score``,
``online_log``) leave them out (:data:`freshness_selection` is subtracted): a back-fill of
past days says nothing about *now*; so does ``micro_batch`` (assets/drift.py).

Settings (declared in :class:`fraudkit.config.Settings`; an empty variable counts as unset):

* ``FRESHNESS_DEADLINE``: ``HH:MM`` (a daily deadline) or a cron string (e.g.
  ``0 6 * * 1-5``), default ``06:00``: when yesterday's partition must exist;
* ``FRESHNESS_TIMEZONE``: the deadline's IANA time zone, default ``UTC`` (the partitions
  are UTC days whatever it is);
* ``FRESHNESS_SEVERITY``: ``warn`` (default, Dagster's for freshness: a yellow warning in
  the UI) or ``error`` (a red failure).
"""

# No ``from __future__ import annotations``: Dagster checks the check function's context
# annotation at definition time, and a string would not do.
import datetime as dt
import re
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Self

import dagster as dg

# Private, and on purpose: Dagster has no public cron API. These are the functions its own
# freshness checks and sensor use, so the deadline ticks (cron fields, time zones, DST) are
# the same as before, and ``dagster._core.test_utils.freeze_time`` moves this clock and the
# sensor's together. The project pins dagster to 1.13.x (pyproject.toml).
from dagster._time import get_current_datetime
from dagster._utils.schedules import (
    get_latest_completed_cron_tick,
    get_next_cron_tick,
    is_valid_cron_string,
)

from assets.common import SETTINGS
from assets.features import transaction_features
from assets.ingest import RAW_TRANSACTIONS
from assets.online import online_predictions
from assets.scoring import batch_predictions
from fraudkit import lake
from fraudkit.config import Settings

#: The daily assets whose latest day must land by the deadline.
FRESHNESS_ASSETS: tuple[dg.AssetKey, ...] = (
    RAW_TRANSACTIONS, transaction_features.key, batch_predictions.key, online_predictions.key,
)
#: The name of each asset's check (the one Dagster's builder gave them, kept for the UI's
#: history and the run selections that name it).
CHECK_NAME = "freshness_check"

_FIELDS = Settings.model_fields
DEADLINE_ENV, DEFAULT_DEADLINE = "FRESHNESS_DEADLINE", _FIELDS["freshness_deadline"].default
TIMEZONE_ENV, DEFAULT_TIMEZONE = "FRESHNESS_TIMEZONE", _FIELDS["freshness_timezone"].default
SEVERITY_ENV, DEFAULT_SEVERITY = "FRESHNESS_SEVERITY", _FIELDS["freshness_severity"].default
_SEVERITIES = {"warn": dg.AssetCheckSeverity.WARN, "error": dg.AssetCheckSeverity.ERROR}
_HH_MM = re.compile(r"(\d{1,2}):(\d{2})")

# The metadata keys of Dagster's freshness checks. build_sensor_for_freshness_checks reads
# FRESH_UNTIL on a passed result (when the check can fail again); the others say what the
# check compared, under the names Dagster's checks used.
FRESH_UNTIL = "dagster/fresh_until_timestamp"
PARAMS = "dagster/freshness_params"
LATEST_CRON_TICK = "dagster/latest_cron_tick_timestamp"
LAST_UPDATED = "dagster/last_updated_timestamp"


def deadline_cron(deadline: str) -> str:
    """The cron string of a deadline given as ``HH:MM`` (every day at that time) or as a
    cron string (returned as given; :meth:`FreshnessSettings.validated` checks it)."""
    deadline = deadline.strip()
    match = _HH_MM.fullmatch(deadline)
    if match is None:
        return deadline
    hour, minute = int(match[1]), int(match[2])
    if hour > 23 or minute > 59:
        raise ValueError(f"{DEADLINE_ENV}={deadline!r}: not a time of day (HH:MM, 00:00-23:59)")
    return f"{minute} {hour} * * *"


@dataclass(frozen=True)
class FreshnessSettings:
    """When each day's partition is due, and how a late day shows."""

    deadline: str = DEFAULT_DEADLINE
    timezone: str = DEFAULT_TIMEZONE
    severity: str = DEFAULT_SEVERITY

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """From the project's settings (:class:`fraudkit.config.Settings` declares the
        variables), read from ``environ`` when given, else from this process's."""
        settings = SETTINGS if environ is None else Settings.model_validate(
            {k: v for k, v in environ.items() if v.strip()})
        return cls(deadline=settings.freshness_deadline, timezone=settings.freshness_timezone,
                   severity=settings.freshness_severity.strip().lower())

    @property
    def cron(self) -> str:
        return deadline_cron(self.deadline)

    def validated(self) -> Self:
        """These settings, or a ``ValueError`` that names the variable and the value."""
        if not is_valid_cron_string(self.cron):  # raises itself on a bad HH:MM
            raise ValueError(f"{DEADLINE_ENV}={self.deadline!r}: not a deadline; use HH:MM "
                             "or a cron string such as '0 6 * * *'")
        if self.severity not in _SEVERITIES:
            raise ValueError(f"{SEVERITY_ENV}={self.severity!r}: use one of "
                             f"{', '.join(_SEVERITIES)}")
        if self.timezone not in ("UTC", "utc"):
            try:
                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"{TIMEZONE_ENV}={self.timezone!r}: not an IANA time zone "
                                 "(e.g. UTC, Europe/Paris)") from exc
        return self


def expected_day(now: dt.datetime, settings: FreshnessSettings,
                 first_day: str = SETTINGS.start_date,
                 last_day: str = SETTINGS.end_date) -> tuple[dt.datetime, str | None]:
    """The latest deadline tick at or before ``now`` and the partition due by then: the
    last UTC day that had ended at that tick, no later than ``last_day`` (the calendar's
    last day stays due after it), or ``None`` when that day is before ``first_day`` (no day
    of the calendar is due yet).

    Computed from the tick, not from the partitions definition, whose last partition is the
    day in progress (``end_offset=1``)."""
    deadline = get_latest_completed_cron_tick(settings.cron, now, settings.timezone)
    # Day D ends at D+1 00:00 UTC: the last day ended at the tick is the one before its date.
    day = min(lake.shift_day(deadline.astimezone(dt.UTC).date().isoformat(), -1), last_day)
    return deadline, (day if day >= first_day else None)


def _is_materialized(instance: dg.DagsterInstance, key: dg.AssetKey, day: str) -> bool:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1)
    return bool(records.records)


def build_freshness_checks(
    settings: FreshnessSettings, assets: Sequence[dg.AssetKey] = FRESHNESS_ASSETS
) -> list[dg.AssetChecksDefinition]:
    """One ``freshness_check`` per asset in ``assets``, in a single multi-asset check op
    that evaluates any subset of them (the sensor asks only for those that may have
    changed)."""
    settings = settings.validated()
    severity = _SEVERITIES[settings.severity]
    params = dg.MetadataValue.json({"timezone": settings.timezone,
                                    "deadline_cron": settings.cron})
    specs = [dg.AssetCheckSpec(CHECK_NAME, asset=key, metadata={PARAMS: params},
                               description="Has the day that ended before the last deadline "
                                           f"({settings.cron}, {settings.timezone}) landed?")
             for key in assets]

    @dg.multi_asset_check(specs=specs, can_subset=True, name="freshness_checks")
    def _freshness(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        deadline, day = expected_day(get_current_datetime(), settings)
        # The next tick after the one evaluated: until then a passed check cannot fail.
        fresh_until = get_next_cron_tick(settings.cron, deadline + dt.timedelta(seconds=1),
                                         settings.timezone)
        for check_key in context.selected_asset_check_keys:
            key = check_key.asset_key
            metadata: dict[str, dg.MetadataValue] = {
                PARAMS: params, LATEST_CRON_TICK: dg.MetadataValue.timestamp(deadline)}
            passed = day is None or _is_materialized(context.instance, key, day)
            if day is None:
                description = (f"No partition is due yet: the calendar starts on "
                               f"{SETTINGS.start_date} (FRAUD_START_DATE).")
            elif passed:
                description = (f"Asset is currently fresh, since partition {day} has been "
                               "materialized.")
            else:
                latest = context.instance.get_latest_materialization_event(key)
                if latest is None:
                    description = (f"The asset has never been materialized. We currently "
                                   f"expect partition {day} to have arrived.")
                else:
                    metadata[LAST_UPDATED] = dg.MetadataValue.timestamp(latest.timestamp)
                    description = (f"Asset is overdue. We expected partition {day} to have "
                                   "arrived, and it has not.")
            if passed:
                metadata[FRESH_UNTIL] = dg.MetadataValue.timestamp(fresh_until)
            yield dg.AssetCheckResult(asset_key=key, check_name=CHECK_NAME, passed=passed,
                                      severity=severity, description=description,
                                      metadata=metadata)

    return [_freshness]


#: The checks of the code location, configured from the environment.
freshness_checks = build_freshness_checks(FreshnessSettings.from_env())
#: The freshness checks, to subtract from job selections that name their assets.
freshness_selection = dg.AssetSelection.checks(*freshness_checks)
