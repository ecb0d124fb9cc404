"""The monitoring loop's thresholds as a Dagster resource, shared by its assets and sensors.

Each field, its default, its environment variable and its meaning are declared once, in
:class:`fraudkit.config.MonitoringSettings`; this resource takes them from there, so the
Dagster UI shows the same descriptions and a deployment changes a value through its
variable (README, "Configuration").
"""

import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from fraudkit.blobs import is_remote, register_fsspec
from fraudkit.config import MonitoringSettings, Settings
from fraudkit.features import lookback_days
from fraudkit.monitoring.drift import DriftConfig
from fraudkit.monitoring.fairness import Segment, parse_segments
from fraudkit.monitoring.gate import EVIDENCE, GateConfig
from fraudkit.monitoring.trigger import TriggerConfig


def _setting(name: str) -> Any:
    """The resource field for ``name``: the settings model's default and description."""
    declared = MonitoringSettings.model_fields[name]
    return Field(default=declared.default, description=declared.description)


class MonitoringResource(dg.ConfigurableResource):
    """Thresholds of the monitoring loop (README, "The monitoring loop"); build it with
    :meth:`from_settings`. Fields: see :class:`fraudkit.config.MonitoringSettings`."""

    feature_threshold: float = _setting("feature_threshold")
    drift_share: float = _setting("drift_share")
    performance_metric: str = _setting("performance_metric")
    performance_floor: float | None = _setting("performance_floor")
    consistency_floor: float = _setting("consistency_floor")
    cooldown_seconds: float = _setting("cooldown_seconds")
    gate_metric: str = _setting("gate_metric")
    gate_evidence: str = _setting("gate_evidence")
    gate_tolerance: float = _setting("gate_tolerance")
    fairness_segments: str = _setting("fairness_segments")
    fairness_max_ratio: float = _setting("fairness_max_ratio")
    fairness_gate_tolerance: float = _setting("fairness_gate_tolerance")
    fairness_min_false_positives: int = _setting("fairness_min_false_positives")
    reference: str = _setting("reference")
    reference_rows: int = _setting("reference_rows")
    max_current_rows: int = _setting("max_current_rows")
    retrain_train_days: int = _setting("retrain_train_days")
    retrain_test_days: int = _setting("retrain_test_days")
    retrain_warmup_days: int | None = _setting("retrain_warmup_days")
    workspace: str | None = _setting("workspace")
    storage_options: dict[str, str] | None = Field(
        default=None, description="Object-store options (DELTA_STORAGE_OPTIONS) for a "
                                  "workspace on an object store.")
    evidently_ui_port: int = _setting("evidently_ui_port")

    @classmethod
    def from_settings(cls, settings: MonitoringSettings | None = None,
                      project: Settings | None = None) -> "MonitoringResource":
        """The resource of ``settings`` (default: this process's environment). What they
        leave unset follows ``project`` (default: the environment's): the Evidently
        workspace is its ``DATA_DIR/evidently`` and the retraining warm-up the windows'
        look-back for its label delay. A value that breaks a rule between values is a
        ``ValueError`` naming the variables set."""
        settings = settings or MonitoringSettings.from_env()
        project = project or Settings.from_env()
        values = settings.model_dump()
        if values["workspace"] is None:
            values["workspace"] = str(project.data_dir / "evidently")
        values["storage_options"] = project.storage_options
        if values["retrain_warmup_days"] is None:
            values["retrain_warmup_days"] = lookback_days(project.label_delay_days)
        resource = cls(**values)
        try:  # the rules between values, which the domain configs check
            resource.drift_config(), resource.trigger_config(), resource.gate_config()
        except ValueError as exc:
            variables = [MonitoringSettings.variable(f) for f in MonitoringSettings.model_fields]
            given = ", ".join(f"{v}={os.environ[v]!r}" for v in variables
                              if os.environ.get(v, "").strip())
            raise ValueError(f"monitoring settings from the environment: {exc} "
                             f"(set: {given or 'none'})") from exc
        return resource

    def warmup_days(self) -> int:
        """Warm-up days before a retraining window (default: the windows' look-back)."""
        if self.retrain_warmup_days is not None:
            return self.retrain_warmup_days
        return lookback_days(Settings.from_env().label_delay_days)

    def drift_config(self) -> DriftConfig:
        return DriftConfig(threshold=self.feature_threshold, drift_share=self.drift_share,
                           max_current_rows=self.max_current_rows)

    def trigger_config(self) -> TriggerConfig:
        return TriggerConfig(drift_share=self.drift_share,
                             performance_metric=self.performance_metric,
                             performance_floor=self.performance_floor,
                             cooldown_seconds=self.cooldown_seconds)

    def gate_config(self) -> GateConfig:
        if self.gate_evidence not in EVIDENCE:
            raise ValueError(f"gate evidence {self.gate_evidence!r} is not one of {EVIDENCE}")
        return GateConfig(metric=self.gate_metric, tolerance=self.gate_tolerance,
                          segments=self.segments(),
                          fairness_tolerance=self.fairness_gate_tolerance,
                          fairness_min_false_positives=self.fairness_min_false_positives)

    def segments(self) -> tuple[Segment, ...]:
        return parse_segments(self.fairness_segments)

    def workspace_dir(self) -> Path | str | None:
        """The Evidently workspace: a folder, an object-store URI (``az://…``, opened
        through ``obstore``'s fsspec with :attr:`storage_options`), or None when off."""
        if self.workspace and self.workspace.lower() == "none":
            return None
        if self.workspace and is_remote(self.workspace):
            register_fsspec(self.workspace, self.storage_options)
            return self.workspace
        if self.workspace:
            return Path(self.workspace)
        return Settings.from_env().data_dir / "evidently"


