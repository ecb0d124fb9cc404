"""The code location's asset graph: which assets each asset reads. The ``deps`` name asset
definitions and keys rather than strings; this pins the edges they must produce, so a
refactor of the imports (or a multi-asset named whole, which would add its quarantine
output) cannot move an edge unnoticed."""

from __future__ import annotations

import dagster as dg

from definitions import defs

#: Every asset's upstream assets.
EXPECTED_UPSTREAM: dict[str, set[str]] = {
    "raw_transactions": set(),
    "quarantined_transactions": set(),
    "transaction_features": {"raw_transactions"},
    "training_set": {"transaction_features", "raw_transactions"},
    "model": {"training_set"},
    "batch_predictions": {"transaction_features", "model"},
    "drift_report": {"batch_predictions", "transaction_features"},
    "model_performance": {"batch_predictions", "raw_transactions"},
    "retrained_model": {"transaction_features", "raw_transactions"},
    "online_predictions": set(),
    "online_drift_report": {"online_predictions"},
    "shadow_verdict": {"online_predictions", "raw_transactions"},
    "serving_report": {"batch_predictions", "online_predictions"},
    "online_consistency": {"online_predictions", "transaction_features", "batch_predictions"},
}


def test_each_asset_reads_exactly_its_upstream_assets() -> None:
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    upstream = {key.to_user_string(): {p.to_user_string() for p in graph.get(key).parent_keys}
                for key in graph.get_all_asset_keys()}
    assert upstream == EXPECTED_UPSTREAM


def test_features_look_back_over_raw_transactions() -> None:
    graph = defs.resolve_asset_graph()
    mapping = graph.get_partition_mapping(dg.AssetKey("transaction_features"),
                                          dg.AssetKey("raw_transactions"))
    assert isinstance(mapping, dg.TimeWindowPartitionMapping)
    assert mapping.start_offset < 0 and mapping.allow_nonexistent_upstream_partitions
