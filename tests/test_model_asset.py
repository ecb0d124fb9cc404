"""The `model` asset's "first model" rule against a registry that lost its champion record:
only an empty registry makes the new model champion without a gate."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

from assets.training import model
from fraudkit.registry import ModelRegistry
from resources import DeltaLakeResource, ModelRegistryResource

#: The weakest model LightGBM builds: far worse than the small pipeline's champion.
WEAK = {"ops": {"model": {"config": {"n_estimators": 1, "num_leaves": 2}}}}


def train(data_dir: Path) -> dg.ExecuteInProcessResult:
    """The `train` job's model step, in process, on ``data_dir``'s training_set."""
    return dg.materialize(
        [model], run_config=WEAK, raise_on_error=False,
        resources={"delta": DeltaLakeResource(root=str(data_dir / "tables")),
                   "registry": ModelRegistryResource(root=str(data_dir / "registry"))})


def test_lost_champion_file_does_not_let_a_model_in_without_the_gate(
    small_pipeline: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(small_pipeline / "registry", data_dir / "registry")
    shutil.copytree(small_pipeline / "tables" / "training_set",
                    data_dir / "tables" / "training_set")
    registry = ModelRegistry(data_dir / "registry")
    champion = registry.champion().version
    registry.champion_file.unlink()

    result = train(data_dir)
    assert result.success
    metadata = result.asset_materializations_for_node("model")[0].metadata
    new = metadata["model_version"].value
    assert new != champion and metadata["champion"].value == champion
    assert registry.champion().version == champion  # recovered from events.jsonl
    assert not [e for e in registry.events() if e["event"] == "promoted" and
                e["version"] == new]

    # No champion recorded anywhere while versions exist: refused, and nothing registered.
    registry.events_file.unlink()
    before = registry.versions()
    result = train(data_dir)
    assert not result.success
    [failure] = result.get_step_failure_events()
    message = failure.step_failure_data.error.to_string()  # with its cause, the RegistryError
    assert "no champion is recorded" in message and "fraudkit.registry promote" in message
    assert registry.versions() == before
    assert not registry.champion_file.exists()
