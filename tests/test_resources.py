"""Settings of the monitoring loop read from the environment, as a deployment sets them."""

from __future__ import annotations

import pytest

from resources import MonitoringResource


def test_environment_overrides_and_none(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MONITOR_DRIFT_SHARE", "0.3")
    monkeypatch.setenv("MONITOR_PERFORMANCE_FLOOR", "none")  # turns the floor off
    monkeypatch.setenv("EVIDENTLY_WORKSPACE", "none")  # turns the workspace off
    resource = MonitoringResource.from_env()
    assert resource.drift_share == 0.3 and resource.trigger_config().drift_share == 0.3
    assert resource.performance_floor is None
    assert resource.workspace_dir() is None
    monkeypatch.setenv("EVIDENTLY_WORKSPACE", str(tmp_path / "ws"))
    assert MonitoringResource.from_env().workspace_dir() == tmp_path / "ws"


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
        MonitoringResource.from_env()
    assert message in str(info.value) and f"{name}={value!r}" in str(info.value)
