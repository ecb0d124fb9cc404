"""Which files are landing files: one rule (fraudkit.schema.is_landing_file) for the
ingest and the landing sensor, suffixes in any case, gzip-compressed CSV read, and every
other file in the landing folder named in a warning instead of skipped silently."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import Mock

import dagster as dg
import pandas as pd
import pytest

import sensors.landing as landing_module
from fraudkit import lake
from fraudkit.batch import ingest_days
from fraudkit.schema import (
    LandingFileError,
    check_landing_file,
    is_landing_file,
    landed_days,
    landing_files_for_day,
    skipped_files,
)
from resources import DeltaLakeResource, LandingZoneResource
from sensors.landing import LandingState, landing_sensor, warn_skipped
from tests.test_ingest import DAY, good_rows, tables

DAY2 = "2026-05-02"


def land_every_kind(landing: Path) -> dict[str, int]:
    """One file per accepted spelling, ids apart, and the rows each holds."""
    rows = {}
    for i, name in enumerate([f"a_{DAY}.CSV", f"b_{DAY}.csv.gz", f"c_{DAY}.Csv.GZ",
                              f"d_{DAY}.PARQUET", f"e_{DAY}.parquet"]):
        frame = good_rows(2 + i).assign(transaction_id=lambda f, i=i: f["transaction_id"]
                                        + 100 * i)
        path = landing / name
        if ".parquet" in name.lower():
            frame.to_parquet(path)
        elif name.lower().endswith(".gz"):
            with gzip.open(path, "wt") as out:
                frame.to_csv(out, index=False)
        else:
            frame.to_csv(path, index=False)
        rows[name] = len(frame)
    return rows


def land_strays(landing: Path) -> list[str]:
    """Files that are not landing files: each must be named, none read."""
    (landing / "nested").mkdir()
    strays = [f"a_{DAY}.txt", f"b_{DAY}.parquet.tmp", f"c_{DAY}.csv.bz2", "notes.csv",
              f"nested/d_{DAY}.json", f"e_{DAY2}.xlsx"]
    for name in strays:
        (landing / name).write_text("not a landing file")
    return strays


def test_every_spelling_is_read(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    rows = land_every_kind(landing)
    land_strays(landing)
    assert [p.name for p in landing_files_for_day(landing, DAY)] == list(rows)
    for path in landing_files_for_day(landing, DAY):
        check_landing_file(path)
    t = tables(tmp_path)
    stats = ingest_days([DAY], str(landing), t)["days"][DAY]
    assert (stats["files"], stats["rows_in"], stats["kept"]) == (5, sum(rows.values()),
                                                                 sum(rows.values()))
    assert len(lake.dataset(t.raw).to_table().to_pandas()) == sum(rows.values())
    assert landed_days(landing) == [DAY]


def test_the_files_skipped_are_listed(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    land_every_kind(landing)
    strays = land_strays(landing)
    assert [str(p.relative_to(landing)) for p in skipped_files(landing)] == sorted(strays)
    # A run of DAY: its own strays and those of no day; e_<DAY2>.xlsx is DAY2's business.
    assert {p.name for p in skipped_files(landing, [DAY])} == {
        f"a_{DAY}.txt", f"b_{DAY}.parquet.tmp", f"c_{DAY}.csv.bz2", "notes.csv",
        f"d_{DAY}.json"}
    assert not any(is_landing_file(landing / s) for s in strays)


def test_a_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / f"tx_{DAY}.csv.gz"
    path.write_bytes(b"not gzip")
    with pytest.raises(LandingFileError, match=rf"tx_{DAY}\.csv\.gz: cannot be read as csv\.gz"):
        check_landing_file(path)


def test_the_sensor_agrees_with_the_ingest(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    resources = {"landing": LandingZoneResource(path=str(landing)),
                 "delta": DeltaLakeResource(root=str(tmp_path / "tables"))}
    monkeypatch.setattr(landing_module, "now",
                        lambda: dt.datetime.fromisoformat(f"{DAY2}T12:00:00+00:00"))
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(resources=resources, instance=instance)
        landing_sensor(context)  # baseline of an empty folder
        rows = land_every_kind(landing)
        strays = land_strays(landing)
        context = dg.build_sensor_context(cursor=context.cursor, resources=resources,
                                          instance=instance)
        request = landing_sensor(context)
    assert (request.job_name, request.partition_key) == ("micro_batch", DAY)
    assert request.tags["landing/files"] == ", ".join(
        p.name for p in landing_files_for_day(landing, DAY)) == ", ".join(sorted(rows))
    warned = json.loads(context.cursor)["skipped"]
    assert sorted(Path(p).relative_to(landing).as_posix() for p in warned) == sorted(strays)


def test_the_sensor_warns_once_per_skipped_file(tmp_path: Path) -> None:
    stray = tmp_path / f"tx_{DAY}.txt"
    stray.write_text("x")
    state = LandingState()
    context = SimpleNamespace(log=Mock())
    warn_skipped(context, state, [(1, stray)])
    (message,), _ = context.log.warning.call_args
    assert message.startswith(f"tx_{DAY}.txt: skipped, not a landing file")
    context = SimpleNamespace(log=Mock())
    warn_skipped(context, state, [(1, stray)])
    context.log.warning.assert_not_called()  # the same file again: no second warning
    warn_skipped(context, state, [(2, stray)])  # changed: warned again
    context.log.warning.assert_called_once()


@pytest.mark.timeout(300)
def test_the_asset_warns_and_conserves_rows(tmp_path: Path) -> None:
    """raw_transactions end to end on a LocalCluster: a year-3000 row beside a nanosecond
    file, ids next to a null, upper-case and gzip names; strays named in a warning."""
    from assets.ingest import raw_transactions
    from resources import DaskResource, DeltaLakeResource

    landing = tmp_path / "landing"
    landing.mkdir()
    rows = land_every_kind(landing)
    land_strays(landing)
    far = good_rows(3).assign(transaction_id=pd.array([2**53 + 1, 2**53 + 3, None],
                                                      dtype="Int64"))
    far["tx_datetime"] = far["tx_datetime"].astype("datetime64[us, UTC]")
    far.loc[1, "tx_datetime"] = pd.Timestamp("3000-01-01", tz="UTC")
    far.to_parquet(landing / f"f_{DAY}.parquet")
    near = good_rows(2).assign(transaction_id=[2**60 + 1, 2**60 + 2])
    near["tx_datetime"] = near["tx_datetime"].astype("datetime64[ns, UTC]")
    near.to_parquet(landing / f"g_{DAY}.parquet")
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [raw_transactions], partition_key=DAY, instance=instance,
            resources={"dask": DaskResource(n_workers=1, memory_limit="2GiB"),
                       "delta": DeltaLakeResource(root=str(tmp_path / "tables")),
                       "landing": LandingZoneResource(path=str(landing))},
        )
        logs = [e for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"rows_conserved": True, "ids_unique_across_days": True}
    (warning,) = [e.user_message for e in logs if "skipped" in e.user_message]
    for name in [f"a_{DAY}.txt", f"b_{DAY}.parquet.tmp", "notes.csv", f"nested/d_{DAY}.json"]:
        assert name in warning
    assert f"e_{DAY2}" not in warning
    metadata = result.asset_materializations_for_node("raw_transactions")[0].metadata
    assert "notes.csv: no day (YYYY-MM-DD) in its name" in metadata["skipped_files"].value
    raw = lake.dataset(str(tmp_path / "tables" / "raw_transactions")).to_table().to_pandas()
    quarantine = lake.dataset(
        str(tmp_path / "tables" / "quarantined_transactions")).to_table().to_pandas()
    assert {2**53 + 1, 2**60 + 1, 2**60 + 2} <= set(raw["transaction_id"])
    assert len(raw) == sum(rows.values()) + 3
    assert sorted(quarantine["reason"]) == ["null transaction_id",
                                            f"tx_datetime is outside the file's day {DAY}"]
