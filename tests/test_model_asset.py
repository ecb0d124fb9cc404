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


def test_a_window_above_max_rows_is_a_uniform_sample_of_both_splits(
    small_pipeline: Path, tmp_path: Path
) -> None:
    """The train step's memory stays flat as the data grows: above ``max_rows`` the window
    is sampled as it is read, at one rate for both splits, by a hash of transaction_id."""
    import pandas as pd
    from deltalake import DeltaTable

    from assets.training import SAMPLE_KEY, load_labelled, training_set

    delta = DeltaLakeResource(root=str(small_pipeline / "tables"))
    whole, _ = load_labelled(delta, *days_of(small_pipeline))
    assert whole.attrs["sample_rate"] == 1.0
    half = len(whole) // 2
    sampled, _ = load_labelled(delta, *days_of(small_pipeline), max_rows=half)
    assert sampled.attrs["sample_rate"] == half / len(whole)
    assert abs(len(sampled) - half) < 0.05 * half
    assert set(sampled["transaction_id"]) <= set(whole["transaction_id"])
    for split in ("train", "test"):  # one rate for both splits
        share = (sampled["split"] == split).sum() / (whole["split"] == split).sum()
        assert abs(share - 0.5) < 0.08, (split, share)
    again, _ = load_labelled(delta, *days_of(small_pipeline), max_rows=half)
    pd.testing.assert_frame_equal(again, sampled)  # the same rows every time

    data_dir = tmp_path / "data"
    shutil.copytree(small_pipeline / "tables", data_dir / "tables")
    result = dg.materialize(
        [training_set], raise_on_error=False,
        run_config={"ops": {"training_set": {"config": {
            "train_days": 21, "test_days": 7, "warmup_days": 7, "max_rows": 3_000}}}},
        resources={"delta": DeltaLakeResource(root=str(data_dir / "tables"))})
    assert result.success
    metadata = result.asset_materializations_for_node("training_set")[0].metadata
    rate = metadata["sample_rate"].value
    assert 0 < rate < 1 and abs(metadata["dagster/row_count"].value - 3_000) < 300
    table = DeltaTable(str(data_dir / "tables" / "training_set"))
    assert float(table.history(1)[0][SAMPLE_KEY]) == rate
    registry = data_dir / "registry"
    shutil.copytree(small_pipeline / "registry", registry)
    assert train(data_dir).success
    version = ModelRegistry(registry).versions()[-1]
    manifest = ModelRegistry(registry).get(version).manifest
    assert manifest["training_data"]["sample_rate"] == rate


def days_of(data_dir: Path) -> tuple[list[str], list[str]]:
    """The small pipeline's training window (train and test days) from its manifest."""
    from fraudkit import lake

    data = ModelRegistry(data_dir / "registry").champion().manifest["training_data"]
    return lake.day_range(*data["train_range"]), lake.day_range(*data["test_range"])
