"""Settings of the monitoring loop read from the environment, as a deployment sets them."""

from __future__ import annotations

import pytest

from fraudkit.config import MonitoringSettings
from resources import MonitoringResource


def test_environment_overrides_and_none(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MONITOR_DRIFT_SHARE", "0.3")
    monkeypatch.setenv("MONITOR_PERFORMANCE_FLOOR", "none")  # turns the floor off
    monkeypatch.setenv("EVIDENTLY_WORKSPACE", "none")  # turns the workspace off
    resource = MonitoringResource.from_settings()
    assert resource.drift_share == 0.3 and resource.trigger_config().drift_share == 0.3
    assert resource.performance_floor is None
    assert resource.workspace_dir() is None
    monkeypatch.setenv("EVIDENTLY_WORKSPACE", str(tmp_path / "ws"))
    assert MonitoringResource.from_settings().workspace_dir() == tmp_path / "ws"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("MONITOR_DRIFT_SHARE", "lots", "MONITOR_DRIFT_SHARE='lots'"),
     ("MONITOR_PERFORMANCE_METRIC", "auc", "performance metric 'auc' is not one of"),
     ("GATE_METRIC", "f1", "gate metric 'f1' is not one of"),
     ("MONITOR_DRIFT_SHARE", "1.5", "drift share 1.5 must be in (0, 1]")],
)
def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str,
                                        value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="monitoring settings from the environment") as info:
        MonitoringResource.from_settings()
    assert message in str(info.value) and f"{name}={value!r}" in str(info.value)


def test_the_resource_takes_every_field_from_the_settings_model() -> None:
    """One declaration: the resource's fields, defaults and descriptions (what the Dagster
    UI shows) are the settings model's, and every field has a variable of its own."""
    resource_fields = MonitoringResource.model_fields
    settings_fields = MonitoringSettings.model_fields
    # storage_options (for a workspace on an object store) is the project's
    # DELTA_STORAGE_OPTIONS, declared once in fraudkit.config.Settings
    assert [f for f in resource_fields if f != "storage_options"] == list(settings_fields)
    for name, declared in settings_fields.items():
        assert resource_fields[name].default == declared.default, name
        assert resource_fields[name].description == declared.description, name
        assert declared.description, name
    variables = [MonitoringSettings.variable(name) for name in settings_fields]
    assert len(set(variables)) == len(variables)


def test_off_unsets_the_floor_and_the_warm_up_follows_the_label_delay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITOR_PERFORMANCE_FLOOR", "off")
    monkeypatch.setenv("LABEL_DELAY_DAYS", "3")
    resource = MonitoringResource.from_settings()
    assert resource.performance_floor is None
    assert resource.warmup_days() == resource.retrain_warmup_days == 33  # 30 + 3
    assert MonitoringResource().warmup_days() == 33


def test_reports_and_the_workspace_follow_the_data_dir_given(tmp_path, monkeypatch) -> None:
    """Resources built for another DATA_DIR (a deployment's, a test's) write their reports
    there, not where the environment of the importing process points."""
    from fraudkit.config import Settings
    from resources.storage import default_resources

    monkeypatch.delenv("LABEL_DELAY_DAYS", raising=False)  # the environment says 7
    built = default_resources(Settings(data_dir=tmp_path / "data", label_delay_days=3))
    where = built["reports"].write("drift", "a.html", "<html></html>")
    assert where == str(tmp_path / "data" / "reports" / "drift" / "a.html")
    assert built["reports"].exists("drift", "a.html")
    assert (tmp_path / "data" / "reports" / "drift" / "a.html").read_text() == "<html></html>"
    assert built["monitoring"].workspace_dir() == tmp_path / "data" / "evidently"
    assert built["delta"].root == str(tmp_path / "data" / "tables")
    assert built["monitoring"].warmup_days() == 33  # the look-back for these settings' delay
