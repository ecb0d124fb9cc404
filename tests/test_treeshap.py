"""fraudkit.treeshap directly: its tables equal LightGBM's own TreeSHAP on trees deep
enough to use both widths of table rows (paths of more than 8 distinct features)."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np

from fraudkit.treeshap import TreeShapTables


def test_tables_equal_pred_contrib_on_both_row_widths() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4000, 15))
    y = (x[:, :12].sum(axis=1) + rng.normal(size=4000) > 0).astype(int)
    booster = lgb.train({"objective": "binary", "num_leaves": 128, "min_data_in_leaf": 5,
                         "verbose": -1, "seed": 1}, lgb.Dataset(x, y), num_boost_round=20)
    tables = TreeShapTables(booster.dump_model(), 15)
    assert {b.width for b in tables._buckets} == {8, 16}  # both kinds of leaf are tested
    rows = rng.normal(size=(200, 15))
    ours = tables.contributions(rows)
    reference = booster.predict(rows, pred_contrib=True)
    assert np.max(np.abs(ours - reference)) < 1e-10
    # a row explained alone gets the same bits as in a batch (online vs batch)
    assert np.array_equal(tables.contributions(rows[5:6])[0], ours[5])
