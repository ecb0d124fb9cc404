"""Freshness checks: has each day's partition landed by its deadline?

One check per daily asset of the batch and online paths (``raw_transactions``,
``transaction_features``, ``batch_predictions``, ``online_predictions``), built with
Dagster's :func:`dagster.build_time_partition_freshness_checks`. At its last deadline tick
(``FRESHNESS_DEADLINE``, default 06:00 in ``FRESHNESS_TIMEZONE``, default UTC) a check
expects the day partition that ended before that tick, i.e. *yesterday* after 06:00 and the
day before until then. It passes when that partition has a materialization, whatever its
content (the assets' own checks judge the content); it fails, naming the partition, when
it has none. The clock is the wall clock: simulated days in the past (the demo) are late.
After ``FRAUD_END_DATE`` the expected partition stays the calendar's last day.

Why this API: Dagster 1.13 marks it *superseded* by ``FreshnessPolicy`` on assets, but a
policy is not partition-aware (it asks whether *any* materialization happened recently, so
a back-fill of old days would count as fresh) and shows as a freshness state rather than a
pass/fail check with a message. These checks ask exactly "has day D landed by HH:MM?".

They are evaluated by ``freshness_sensor`` (sensors/freshness.py) and on demand from the
asset's *Checks* tab. The back-fill jobs of definitions.py (``ingest_and_features``,
``score``, ``online_log``) leave them out (:data:`freshness_selection` is subtracted): a
back-fill of past days says nothing about *now*; so does ``micro_batch`` (assets/drift.py).

Settings (declared in :class:`fraudkit.config.Settings`; an empty variable counts as unset):

* ``FRESHNESS_DEADLINE``: ``HH:MM`` (a daily deadline) or a cron string (e.g.
  ``0 6 * * 1-5``), default ``06:00``: when yesterday's partition must exist;
* ``FRESHNESS_TIMEZONE``: the deadline's IANA time zone, default ``UTC`` (the partitions
  are UTC days whatever it is);
* ``FRESHNESS_SEVERITY``: ``warn`` (default, Dagster's for freshness: a yellow warning in
  the UI) or ``error`` (a red failure).
"""

from __future__ import annotations

import re
import warnings
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from assets.common import SETTINGS
from assets.features import transaction_features
from assets.ingest import RAW_TRANSACTIONS
from assets.online import online_predictions
from assets.scoring import batch_predictions
from fraudkit.config import Settings

#: The daily assets whose latest day must land by the deadline.
FRESHNESS_ASSETS: tuple[dg.AssetKey, ...] = (
    RAW_TRANSACTIONS, transaction_features.key, batch_predictions.key, online_predictions.key,
)

_FIELDS = Settings.model_fields
DEADLINE_ENV, DEFAULT_DEADLINE = "FRESHNESS_DEADLINE", _FIELDS["freshness_deadline"].default
TIMEZONE_ENV, DEFAULT_TIMEZONE = "FRESHNESS_TIMEZONE", _FIELDS["freshness_timezone"].default
SEVERITY_ENV, DEFAULT_SEVERITY = "FRESHNESS_SEVERITY", _FIELDS["freshness_severity"].default
_SEVERITIES = {"warn": dg.AssetCheckSeverity.WARN, "error": dg.AssetCheckSeverity.ERROR}
_HH_MM = re.compile(r"(\d{1,2}):(\d{2})")


def deadline_cron(deadline: str) -> str:
    """The cron string of a deadline given as ``HH:MM`` (every day at that time) or as a
    cron string (returned as given; Dagster validates it)."""
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
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FreshnessSettings:
        """From the project's settings (:class:`fraudkit.config.Settings` declares the
        variables), read from ``environ`` when given, else from this process's."""
        settings = SETTINGS if environ is None else Settings.model_validate(
            {k: v for k, v in environ.items() if v.strip()})
        return cls(deadline=settings.freshness_deadline, timezone=settings.freshness_timezone,
                   severity=settings.freshness_severity.strip().lower())

    @property
    def cron(self) -> str:
        return deadline_cron(self.deadline)

    def validated(self) -> FreshnessSettings:
        """These settings, or a ``ValueError`` that names the variable and the value."""
        self.cron  # noqa: B018 - raises on a bad HH:MM
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


def build_freshness_checks(
    settings: FreshnessSettings, assets: Sequence[dg.AssetKey] = FRESHNESS_ASSETS
) -> list[dg.AssetChecksDefinition]:
    """One ``freshness_check`` per asset in ``assets`` (a single multi-asset check op)."""
    settings = settings.validated()
    with warnings.catch_warnings():
        # Superseded, not deprecated, in 1.13; the module docstring says why it is used.
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        try:
            return list(dg.build_time_partition_freshness_checks(
                assets=list(assets), deadline_cron=settings.cron, timezone=settings.timezone,
                severity=_SEVERITIES[settings.severity]))
        except Exception as exc:  # Dagster's CheckError, not public: only the cron can fail
            raise ValueError(f"{DEADLINE_ENV}={settings.deadline!r}: not a deadline ({exc}); "
                             "use HH:MM or a cron string such as '0 6 * * *'") from exc


#: The checks of the code location, configured from the environment.
freshness_checks = build_freshness_checks(FreshnessSettings.from_env())
#: The freshness checks, to subtract from job selections that name their assets.
freshness_selection = dg.AssetSelection.checks(*freshness_checks)
