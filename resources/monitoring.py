"""Thresholds of the monitoring loop, shared by its assets and sensors."""

import os
from pathlib import Path

import dagster as dg

from fraudkit.config import Settings
from fraudkit.drift import DriftConfig, GateConfig, TriggerConfig
from fraudkit.features import lookback_days

_DEFAULT_WARMUP = lookback_days(Settings.from_env().label_delay_days)


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


class MonitoringResource(dg.ConfigurableResource):
    """Thresholds of the monitoring loop (README, "Monitoring loop"). Each has an
    environment variable so a deployment changes it without code; the defaults suit the
    full simulation (thousands of transactions a day)."""

    feature_threshold: float = 0.2
    """A feature drifts when its distance (normed Wasserstein, Jensen-Shannon) reaches this."""
    drift_share: float = 0.2
    """A day is drifted when this share of monitored features drifts: triggers retraining."""
    performance_metric: str = "average_precision"
    performance_floor: float | None = 0.5
    """Retrain when a matured day's realized metric falls below this (None: never)."""
    cooldown_seconds: float = 3600.0
    """After a retraining launch, no other launch for this long."""
    gate_metric: str = "average_precision"
    gate_tolerance: float = 0.0
    """Promote when challenger >= champion - tolerance on gate_metric (same held-out days)."""
    reference: str = "holdout"
    """'holdout': the features of the champion's held-out days; 'stored': reference.parquet."""
    reference_rows: int = 20_000
    max_current_rows: int = 200_000
    retrain_train_days: int = 90
    retrain_test_days: int = 14
    retrain_warmup_days: int = _DEFAULT_WARMUP
    workspace: str | None = None
    """Evidently workspace folder (default DATA_DIR/evidently); 'none' disables it."""
    evidently_ui_port: int = 8000
    """Port of `evidently ui` in the links the drift report's metadata shows."""

    @classmethod
    def from_env(cls) -> "MonitoringResource":
        floor = _env("MONITOR_PERFORMANCE_FLOOR", "0.5")
        return cls(
            feature_threshold=float(_env("MONITOR_FEATURE_THRESHOLD", "0.2")),
            drift_share=float(_env("MONITOR_DRIFT_SHARE", "0.2")),
            performance_metric=_env("MONITOR_PERFORMANCE_METRIC", "average_precision"),
            performance_floor=None if floor.lower() in ("", "none") else float(floor),
            cooldown_seconds=float(_env("MONITOR_COOLDOWN_SECONDS", "3600")),
            gate_metric=_env("GATE_METRIC", "average_precision"),
            gate_tolerance=float(_env("GATE_TOLERANCE", "0.0")),
            reference=_env("MONITOR_REFERENCE", "holdout"),
            retrain_train_days=int(_env("RETRAIN_TRAIN_DAYS", "90")),
            retrain_test_days=int(_env("RETRAIN_TEST_DAYS", "14")),
            retrain_warmup_days=int(_env("RETRAIN_WARMUP_DAYS",
                                         str(_DEFAULT_WARMUP))),
            workspace=os.environ.get("EVIDENTLY_WORKSPACE") or None,
            evidently_ui_port=int(_env("EVIDENTLY_UI_PORT", "8000")),
        )

    def drift_config(self) -> DriftConfig:
        return DriftConfig(threshold=self.feature_threshold, drift_share=self.drift_share,
                           max_current_rows=self.max_current_rows)

    def trigger_config(self) -> TriggerConfig:
        return TriggerConfig(drift_share=self.drift_share,
                             performance_metric=self.performance_metric,
                             performance_floor=self.performance_floor,
                             cooldown_seconds=self.cooldown_seconds)

    def gate_config(self) -> GateConfig:
        return GateConfig(metric=self.gate_metric, tolerance=self.gate_tolerance)

    def workspace_dir(self) -> Path | None:
        if self.workspace and self.workspace.lower() == "none":
            return None
        if self.workspace:
            return Path(self.workspace)
        return Settings.from_env().data_dir / "evidently"


