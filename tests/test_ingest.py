"""The raw contract on bad landing files: quarantine with a reason, or a clear error that
names the file; rows in = rows kept + rows quarantined; nothing valid lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from fraudkit import lake
from fraudkit.batch import (
    DuplicateIdError,
    Tables,
    features_for_days,
    ids_on_several_days,
    ingest_days,
)
from fraudkit.schema import QUARANTINE_SCHEMA, RAW_SCHEMA, LandingFileError, validate_raw

DAY = "2026-05-01"


def tables(root: Path) -> Tables:
    t = Tables(raw=str(root / "raw"), quarantine=str(root / "quarantine"),
               features=str(root / "features"), predictions=str(root / "predictions"))
    lake.ensure_table(t.raw, RAW_SCHEMA)
    lake.ensure_table(t.quarantine, QUARANTINE_SCHEMA)
    return t


def good_rows(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": np.arange(1, n + 1, dtype="int64"),
            "tx_datetime": pd.date_range(f"{DAY} 08:00", periods=n, freq="h", tz="UTC"),
            "customer_id": np.arange(n, dtype="int64") % 3,
            "terminal_id": np.arange(n, dtype="int64") % 2,
            "tx_amount": np.linspace(10, 60, n),
            "tx_fraud": np.zeros(n, dtype="int8"),
        }
    )


def test_bad_rows_are_quarantined_with_reasons(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    frame = good_rows(10)
    frame["tx_amount"] = frame["tx_amount"].astype(float)
    frame.loc[1, "tx_amount"] = np.nan
    frame.loc[2, "tx_amount"] = -5.0
    frame.loc[3, "transaction_id"] = 1  # duplicate of row 0
    frame["customer_id"] = frame["customer_id"].astype("Int64")
    frame.loc[4, "customer_id"] = pd.NA
    frame.loc[5, "tx_datetime"] = pd.Timestamp("2026-05-02 01:00", tz="UTC")  # wrong day
    frame.loc[6, "tx_amount"] = np.inf
    frame.to_parquet(landing / f"transactions_{DAY}.parquet")
    # A CSV of the same day, with an unparseable timestamp and a label that is not 0/1.
    csv = good_rows(3).assign(transaction_id=[101, 102, 103])
    csv["tx_datetime"] = csv["tx_datetime"].astype(str)
    csv.loc[0, "tx_datetime"] = "yesterday-ish"
    csv["tx_fraud"] = csv["tx_fraud"].astype(int)
    csv.loc[1, "tx_fraud"] = 3
    csv.to_csv(landing / f"extra_{DAY}.csv", index=False)

    t = tables(tmp_path)
    stats = ingest_days([DAY], str(landing), t)["days"][DAY]
    assert stats == {
        "files": 2, "rows_in": 13, "kept": 5, "quarantined": 8,
        "reasons": {
            "null tx_amount": 1,  # NaN counts as missing
            "tx_amount is not a finite number": 1,
            "tx_amount is not positive": 1,
            "duplicate transaction_id": 1,
            "null customer_id": 1,
            f"tx_datetime is outside the file's day {DAY}": 1,
            "tx_datetime is not a parseable timestamp": 1,
            "tx_fraud is not 0 or 1": 1,
        },
    }
    raw = lake.dataset(t.raw).to_table().to_pandas()
    quarantine = lake.dataset(t.quarantine).to_table().to_pandas()
    assert len(raw) + len(quarantine) == 13
    assert set(raw["transaction_id"]) == {1, 8, 9, 10, 103}
    row = quarantine[quarantine["reason"] == "tx_datetime is not a parseable timestamp"].iloc[0]
    assert row["source_file"].endswith(f"extra_{DAY}.csv")
    assert row["row_number"] == 0 and row["tx_datetime"] == "yesterday-ish"


def test_missing_column_is_an_error_naming_the_file(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    good_rows().drop(columns=["terminal_id"]).to_parquet(landing / f"tx_{DAY}.parquet")
    with pytest.raises(LandingFileError, match=rf"tx_{DAY}\.parquet: missing column\(s\) "
                                               r"terminal_id"):
        ingest_days([DAY], str(landing), tables(tmp_path))


def test_unreadable_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / f"tx_{DAY}.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(LandingFileError, match=rf"tx_{DAY}\.parquet: cannot be read"):
        ingest_days([DAY], str(landing), tables(tmp_path))


def test_rerun_replaces_the_day(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    good_rows().to_parquet(landing / f"transactions_{DAY}.parquet")
    t = tables(tmp_path)
    ingest_days([DAY], str(landing), t)
    ingest_days([DAY], str(landing), t)
    assert len(lake.dataset(t.raw).to_table().to_pandas()) == 6


def test_a_broken_first_copy_does_not_cost_the_valid_one() -> None:
    frame = good_rows(3)
    frame["tx_amount"] = frame["tx_amount"].astype(float)
    frame.loc[0, "tx_amount"] = np.nan
    frame.loc[1, "transaction_id"] = 1  # same id as the broken row 0: the valid copy
    frame.loc[2, "transaction_id"] = 1  # a true duplicate of row 1
    result = validate_raw(frame, DAY, "f.parquet")
    assert result.valid["transaction_id"].tolist() == [1]
    assert result.valid["tx_amount"].iloc[0] == frame.loc[1, "tx_amount"]
    assert result.quarantine["reason"].tolist() == ["null tx_amount", "duplicate transaction_id"]


def test_ids_outside_int64_are_quarantined_not_wrapped() -> None:
    text = good_rows(4).astype({"transaction_id": str, "customer_id": str})
    text.loc[0, "transaction_id"] = "99999999999999999999"  # > int64: not wrapped around
    text.loc[1, "customer_id"] = "18446744073709551615"  # 2**64 - 1 would wrap to -1
    text.loc[2, "transaction_id"] = "-9223372036854775808"  # int64's minimum is valid
    unsigned = good_rows(2).astype({"terminal_id": "uint64"})
    unsigned.loc[0, "terminal_id"] = np.uint64(2**63)
    kept_text = validate_raw(text, DAY, "f.csv")
    kept_unsigned = validate_raw(unsigned, DAY, "g.parquet")
    assert kept_text.valid["transaction_id"].tolist() == [-(2**63), 4]
    assert kept_text.quarantine["reason"].tolist() == [
        "transaction_id is not an int64 integer", "customer_id is not an int64 integer"]
    assert kept_text.quarantine["transaction_id"].iloc[0] == "99999999999999999999"
    assert kept_unsigned.quarantine["reason"].tolist() == ["terminal_id is not an int64 integer"]
    assert kept_unsigned.valid["transaction_id"].tolist() == [2]


def test_ids_on_several_days_are_found_across_the_table(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    day2 = "2026-05-02"
    good_rows(3).to_parquet(landing / f"transactions_{DAY}.parquet")
    second = good_rows(3).assign(transaction_id=[3, 4, 5],  # 3 is also on DAY
                                 tx_datetime=lambda f: f["tx_datetime"] + pd.Timedelta(days=1))
    second.to_parquet(landing / f"transactions_{day2}.parquet")
    t = tables(tmp_path)
    ingest_days([DAY], str(landing), t)
    ingest_days([day2], str(landing), t)
    version = DeltaTable(t.raw).version()
    found = ids_on_several_days([day2], t, version)
    assert (found["ids"], found["examples"]) == (1, {3: [DAY, day2]})
    assert ids_on_several_days(["2026-05-03"], t, version)["ids"] == 0  # not in these days
    both = ids_on_several_days([DAY, day2], t, version)  # both days in the run
    assert (both["ids"], both["examples"]) == (1, {3: [DAY, day2]})
    with pytest.raises(DuplicateIdError, match=r"\{3: \['2026-05-01', '2026-05-02'\]\}"):
        features_for_days(["2026-05-03"], t, version, 7)  # the duplicate is in its history
    second.assign(transaction_id=[6, 4, 5]).to_parquet(landing / f"transactions_{day2}.parquet")
    ingest_days([day2], str(landing), t)  # the fixed file, re-run: nothing left
    assert ids_on_several_days([DAY, day2], t, DeltaTable(t.raw).version())["ids"] == 0


def test_zero_amounts_are_kept_and_bad_amounts_quarantined(tmp_path: Path) -> None:
    """A zero-amount authorization (a card verification) is a transaction: kept in
    raw_transactions from Parquet and CSV alike, "-0.00" included (it is zero). Negative,
    NaN and infinite amounts still go to quarantine with their reasons."""
    landing = tmp_path / "landing"
    landing.mkdir()
    parquet = good_rows(8)
    parquet["tx_amount"] = [0.0, -0.0, 12.5, -5.0, -1e-9, np.nan, np.inf, -np.inf]
    parquet.to_parquet(landing / f"transactions_{DAY}.parquet")
    csv = good_rows(7).assign(transaction_id=np.arange(101, 108))
    csv["tx_amount"] = ["0", "0.00", "-0.00", "-0.01", "NaN", "inf", "-inf"]
    csv.to_csv(landing / f"extra_{DAY}.csv", index=False)

    t = tables(tmp_path)
    stats = ingest_days([DAY], str(landing), t)["days"][DAY]
    assert stats["rows_in"] == 15 and stats["kept"] == 6 and stats["quarantined"] == 9
    assert stats["reasons"] == {
        "tx_amount is not positive": 3,  # -5, -1e-9, -0.01
        "null tx_amount": 1,  # NaN in Parquet counts as missing
        "tx_amount is not a finite number": 5,  # ±inf (Parquet), NaN and ±inf (CSV text)
    }
    raw = lake.dataset(t.raw).to_table().to_pandas().set_index("transaction_id")
    assert sorted(raw.index) == [1, 2, 3, 101, 102, 103]
    assert raw.loc[[1, 2, 101, 102, 103], "tx_amount"].tolist() == [0.0] * 5
    assert raw.loc[3, "tx_amount"] == 12.5
    quarantine = lake.dataset(t.quarantine).to_table().to_pandas()
    by_value = dict(zip(quarantine["tx_amount"], quarantine["reason"], strict=True))
    assert by_value["-5.0"] == by_value["-0.01"] == "tx_amount is not positive"
    assert by_value["inf"] == by_value["-inf"] == "tx_amount is not a finite number"
