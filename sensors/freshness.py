"""The freshness sensor: evaluates the freshness checks of assets/freshness.py on time.

Built with Dagster's :func:`dagster.build_sensor_for_freshness_checks`: every minute it
launches one small run of the checks that may have changed, and only those: a check never
evaluated, a passed check whose deadline has come again (its ``fresh_until`` metadata), a
failed check whose asset has been materialized since. It reads no data; the runs it
launches read the instance's event log. The checks are the project's own since the day in
progress became a partition (assets/freshness.py says why); the sensor takes them as they
are, since it knows a check only by its key and by the ``dagster/fresh_until_timestamp``
metadata of its last passed result, which they write as Dagster's did.

Stopped by default, like ``landing_sensor``: the checks compare the latest day with the
wall clock, so on a demo of simulated past days every check would fail. Turn it on in the
UI (Automation → ``freshness_sensor``) where days land daily, or set
``FRESHNESS_SENSOR=running`` so that a deployment starts with it running.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import dagster as dg

from assets.common import SETTINGS
from assets.freshness import freshness_checks
from fraudkit.config import Settings

SENSOR_ENV = "FRESHNESS_SENSOR"
DEFAULT_SENSOR = Settings.model_fields["freshness_sensor"].default
#: Seconds between evaluations: a late day shows within a minute of its deadline.
INTERVAL_SECONDS = 60
_STATUS = {"running": dg.DefaultSensorStatus.RUNNING,
           "stopped": dg.DefaultSensorStatus.STOPPED}


def default_status(value: str | None) -> dg.DefaultSensorStatus:
    """The sensor's status until someone toggles it in the UI, from ``FRESHNESS_SENSOR``."""
    name = (value or DEFAULT_SENSOR).strip().lower()
    if name not in _STATUS:
        raise ValueError(f"{SENSOR_ENV}={value!r}: use running or stopped")
    return _STATUS[name]


def build_freshness_sensor(checks: Sequence[dg.AssetChecksDefinition],
                           status: dg.DefaultSensorStatus) -> dg.SensorDefinition:
    with warnings.catch_warnings():
        # Superseded in 1.13 by FreshnessPolicy, which is not partition-aware
        # (assets/freshness.py says why the checks are kept).
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        return dg.build_sensor_for_freshness_checks(
            freshness_checks=checks, name="freshness_sensor",
            minimum_interval_seconds=INTERVAL_SECONDS, default_status=status)


freshness_sensor = build_freshness_sensor(freshness_checks,
                                          default_status(SETTINGS.freshness_sensor))
