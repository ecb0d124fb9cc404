"""Thresholds of the monitoring loop, shared by its assets and sensors."""

import os
from pathlib import Path

import dagster as dg
from pydantic import ValidationError

from fraudkit.config import Settings
from fraudkit.features import lookback_days
from fraudkit.monitoring.drift import DriftConfig
from fraudkit.monitoring.gate import GateConfig
from fraudkit.monitoring.trigger import TriggerConfig

_DEFAULT_WARMUP = lookback_days(Settings.from_env().label_delay_days)


#: The environment variable of each setting (README, "The monitoring loop").
ENV_VARS = {
    "feature_threshold": "MONITOR_FEATURE_THRESHOLD",
    "drift_share": "MONITOR_DRIFT_SHARE",
    "performance_metric": "MONITOR_PERFORMANCE_METRIC",
    "performance_floor": "MONITOR_PERFORMANCE_FLOOR",
    "cooldown_seconds": "MONITOR_COOLDOWN_SECONDS",
    "gate_metric": "GATE_METRIC",
    "gate_tolerance": "GATE_TOLERANCE",
    "reference": "MONITOR_REFERENCE",
    "retrain_train_days": "RETRAIN_TRAIN_DAYS",
    "retrain_test_days": "RETRAIN_TEST_DAYS",
    "retrain_warmup_days": "RETRAIN_WARMUP_DAYS",
    "workspace": "EVIDENTLY_WORKSPACE",
    "evidently_ui_port": "EVIDENTLY_UI_PORT",
}


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
        """The defaults above, overridden by the environment variables of :data:`ENV_VARS`
        that are set (``none`` unsets an optional one, e.g. the performance floor)."""
        values: dict[str, object] = {}
        for field, name in ENV_VARS.items():
            raw = os.environ.get(name, "").strip()
            if raw:
                # The workspace keeps its literal 'none' (it disables the workspace).
                unset = raw.lower() == "none" and field != "workspace"
                values[field] = None if unset else raw
        try:
            resource = cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{ENV_VARS[str(e['loc'][0])]}={values[str(e['loc'][0])]!r}: {e['msg']}"
                for e in exc.errors())
            raise ValueError(f"monitoring settings from the environment: {problems}") from exc
        try:  # the rules between values, which the domain configs check
            resource.drift_config(), resource.trigger_config(), resource.gate_config()
        except ValueError as exc:
            given = ", ".join(f"{ENV_VARS[f]}={v!r}" for f, v in values.items())
            raise ValueError(f"monitoring settings from the environment: {exc} "
                             f"(set: {given or 'none'})") from exc
        return resource

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


