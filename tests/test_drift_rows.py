"""The drift_metrics rows a report summary becomes: a prediction drift that was not measured
(no score column in the report) is stored as null, not as "no drift"."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from fraudkit import lake
from fraudkit.features import FEATURE_COLUMNS
from fraudkit.monitoring.drift import (
    DRIFT_METRICS_SCHEMA,
    ColumnDrift,
    DriftSummary,
    summary_rows,
)

AT = dt.datetime(2026, 7, 2, tzinfo=dt.UTC)


def summary(prediction_drift: bool | None) -> DriftSummary:
    """A day's summary with every feature undrifted and, unless the prediction drift is
    unknown, the score column too."""
    columns = [ColumnDrift(c, "feature", "wasserstein", 0.2, 0.05, False, True)
               for c in FEATURE_COLUMNS]
    if prediction_drift is not None:
        columns.append(ColumnDrift("score", "prediction", "wasserstein", 0.2,
                                   0.3 if prediction_drift else 0.05, prediction_drift, False))
    return DriftSummary(columns=columns, drift_share=0.0, drifted_features=0,
                        monitored_features=len(FEATURE_COLUMNS), dataset_drift=False,
                        prediction_drift=prediction_drift, current_rows=100,
                        current_rows_used=100, reference_rows=100)


@pytest.mark.parametrize("prediction_drift", [None, False, True])
def test_prediction_drift_is_stored_as_measured(prediction_drift: bool | None) -> None:
    rows = summary_rows(summary(prediction_drift), "2026-07-01", "v0001", "", AT)
    assert rows.schema == DRIFT_METRICS_SCHEMA
    assert set(rows.column("prediction_drift").to_pylist()) == {prediction_drift}


def test_an_unknown_prediction_drift_reads_back_as_null(tmp_path: Path) -> None:
    uri = str(tmp_path / "drift_metrics")
    lake.ensure_table(uri, DRIFT_METRICS_SCHEMA)
    lake.replace_days(uri, summary_rows(summary(None), "2026-07-01", "v0001", "", AT),
                      ["2026-07-01"])
    stored = lake.read_days(uri, ["2026-07-01"], ["prediction_drift"])
    assert stored.column("prediction_drift").null_count == len(FEATURE_COLUMNS)
