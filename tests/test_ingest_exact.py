"""Landing values reach the raw table exactly: int64 ids bit for bit whatever else is in
the column (a null, another file of the day), and timestamps in microseconds, so a
year-3000 row beside a nanosecond file is one quarantined row, not a failed run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fraudkit.schema as schema
from fraudkit import lake
from fraudkit.batch import ingest_days
from fraudkit.schema import LandingFileError, read_landing_file, validate_raw
from tests.test_ingest import DAY, tables

BIG = 2**53  # the first int64 that float64 cannot tell from its neighbour
INT_TYPES = {"transaction_id": pa.int64(), "customer_id": pa.int64(),
             "terminal_id": pa.int64(), "tx_fraud": pa.int8()}
AT_8 = pd.Timestamp(f"{DAY} 08:00", tz="UTC")


def landing_table(n: int, start_id: int = 1, **columns: pa.Array) -> pa.Table:
    """``n`` valid rows of DAY in the landing schema, with some columns replaced."""
    data = {
        "transaction_id": pa.array(range(start_id, start_id + n), pa.int64()),
        "tx_datetime": pa.array([AT_8 + pd.Timedelta(minutes=i) for i in range(n)],
                                pa.timestamp("us", tz="UTC")),
        "customer_id": pa.array([7] * n, pa.int64()),
        "terminal_id": pa.array([9] * n, pa.int64()),
        "tx_amount": pa.array([12.5] * n, pa.float64()),
        "tx_fraud": pa.array([0] * n, pa.int8()),
    }
    data.update(columns)
    return pa.table(data)


def write_csv(table: pa.Table, path: Path) -> None:
    """A landing table as CSV text, integers exact (pandas' default would write floats)."""
    nullable = {pa.int64(): pd.Int64Dtype(), pa.int8(): pd.Int8Dtype()}
    table.to_pandas(types_mapper=nullable.get).to_csv(path, index=False)


def ingest(landing: Path, root: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    t = tables(root)
    stats = ingest_days([DAY], str(landing), t)["days"][DAY]
    raw = lake.dataset(t.raw).to_table().to_pandas().sort_values("transaction_id",
                                                                 ignore_index=True)
    quarantine = lake.dataset(t.quarantine).to_table().to_pandas()
    assert stats["rows_in"] == len(raw) + len(quarantine) == stats["kept"] + stats["quarantined"]
    return stats, raw, quarantine


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


def test_parquet_ids_next_to_a_null_stay_exact(landing: Path, tmp_path: Path) -> None:
    """The issue's file: ids [2**53, 2**53+1, null], a customer 2**60+1."""
    pq.write_table(landing_table(
        3,
        transaction_id=pa.array([BIG, BIG + 1, None], pa.int64()),
        customer_id=pa.array([2**60 + 1, 2**63 - 1, -(2**63)], pa.int64()),
    ), landing / f"tx_{DAY}.parquet")
    stats, raw, quarantine = ingest(landing, tmp_path)
    assert stats["reasons"] == {"null transaction_id": 1}
    assert raw["transaction_id"].tolist() == [BIG, BIG + 1]
    assert raw["customer_id"].tolist() == [2**60 + 1, 2**63 - 1]
    assert quarantine[["row_number", "transaction_id", "customer_id"]].values.tolist() == [
        [2, None, str(-(2**63))]]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("column", list(INT_TYPES))
def test_every_integer_column_is_exact_beside_a_null(
    landing: Path, tmp_path: Path, fmt: str, column: str
) -> None:
    values = {"tx_fraud": [1, 0, None]}.get(column, [BIG + 1, 2**62 + 3, None])
    table = landing_table(3, **{column: pa.array(values, INT_TYPES[column])})
    if column != "transaction_id":
        table = table.set_column(0, "transaction_id", pa.array([BIG + 5, BIG + 7, BIG + 9]))
    if fmt == "parquet":
        pq.write_table(table, landing / f"tx_{DAY}.parquet")
    else:
        write_csv(table, landing / f"tx_{DAY}.csv")
    stats, raw, quarantine = ingest(landing, tmp_path)
    assert stats["reasons"] == {f"null {column}": 1}
    assert raw[column].tolist() == values[:2]
    assert raw["transaction_id"].tolist() == table["transaction_id"].to_pylist()[:2]
    assert quarantine["row_number"].tolist() == [2]


def test_a_parquet_and_a_csv_of_one_day_stay_exact(landing: Path, tmp_path: Path) -> None:
    """Files of one day are concatenated before validation: an exact Int64 column beside a
    text one, or beside a float or uint64 one, must not meet in float64."""
    pq.write_table(landing_table(2, transaction_id=pa.array([BIG + 1, None], pa.int64())),
                   landing / f"a_{DAY}.parquet")
    write_csv(landing_table(1, transaction_id=pa.array([BIG + 3])), landing / f"b_{DAY}.csv")
    # Floats: whole ids below 2**53 are exact and kept; 2**53 + 2 might be 2**53 + 1 or 3,
    # so it is rejected, and kept as a float's text.
    pq.write_table(landing_table(3, transaction_id=pa.array([5.0, float(BIG + 2), 6.5])),
                   landing / f"c_{DAY}.parquet")
    pq.write_table(landing_table(2, transaction_id=pa.array([BIG + 11, 2**64 - 1],
                                                            pa.uint64())),
                   landing / f"d_{DAY}.parquet")
    stats, raw, quarantine = ingest(landing, tmp_path)
    assert raw["transaction_id"].tolist() == [5, BIG + 1, BIG + 3, BIG + 11]
    assert stats["reasons"] == {"null transaction_id": 1,
                                "transaction_id is not an int64 integer": 3}
    rejected = quarantine.set_index("source_file")["transaction_id"]
    assert rejected[str(landing / f"d_{DAY}.parquet")] == str(2**64 - 1)
    assert sorted(rejected[str(landing / f"c_{DAY}.parquet")]) == ["6.5", "9.007199254740994e+15"]


def test_float_ids_beyond_2_53_are_not_taken_as_ids() -> None:
    frame = pd.DataFrame({
        "transaction_id": [1.0, float(BIG), float(BIG - 1), np.nan],
        "tx_datetime": [AT_8] * 4, "customer_id": [1] * 4, "terminal_id": [1] * 4,
        "tx_amount": [1.0] * 4, "tx_fraud": [0] * 4,
    })
    result = validate_raw(frame, DAY, "f.parquet")
    assert result.valid["transaction_id"].tolist() == [1, BIG - 1]
    assert result.quarantine["reason"].tolist() == [
        "transaction_id is not an int64 integer", "null transaction_id"]


def test_year_3000_beside_a_nanosecond_file(landing: Path, tmp_path: Path) -> None:
    """The issue's day: microseconds with one year-3000 row, and a nanosecond file."""
    far = pd.Timestamp("3000-01-01 12:00", tz="UTC")
    pq.write_table(landing_table(3, tx_datetime=pa.array([AT_8, far, AT_8],
                                                         pa.timestamp("us", tz="UTC"))),
                   landing / f"a_{DAY}.parquet")
    fine = AT_8 + pd.Timedelta(nanoseconds=123_456_789)
    pq.write_table(landing_table(2, start_id=10, tx_datetime=pa.array(
        [fine.value, fine.value], pa.timestamp("ns", tz="UTC"))), landing / f"b_{DAY}.parquet")
    # Seconds and naive milliseconds too; year 300,000 fits no microsecond timestamp.
    pq.write_table(landing_table(2, start_id=20, tx_datetime=pa.array(
        [AT_8.value // 10**9, 300_000 * 365 * 86_400], pa.timestamp("s", tz="UTC"))),
        landing / f"c_{DAY}.parquet")
    pq.write_table(landing_table(1, start_id=30, tx_datetime=pa.array(
        [AT_8.value // 10**6], pa.timestamp("ms"))), landing / f"d_{DAY}.parquet")
    stats, raw, quarantine = ingest(landing, tmp_path)
    assert stats["reasons"] == {f"tx_datetime is outside the file's day {DAY}": 1,
                                "tx_datetime is not a parseable timestamp": 1}
    assert raw["transaction_id"].tolist() == [1, 3, 10, 11, 20, 30]
    assert raw["tx_datetime"].tolist()[2] == AT_8 + pd.Timedelta(microseconds=123_456)
    far_row = quarantine[quarantine["reason"].str.contains("outside")].iloc[0]
    assert (far_row["source_file"], far_row["row_number"]) == (str(landing / f"a_{DAY}.parquet"),
                                                               1)
    assert far_row["tx_datetime"].startswith("3000-01-01 12:00:00")


def test_year_3000_in_text_is_outside_the_day(landing: Path, tmp_path: Path) -> None:
    """ISO text with a year pandas' nanoseconds cannot hold still gets its real value,
    alone or next to a Parquet file (whose timestamps then meet the text)."""
    text = landing_table(4, start_id=40).to_pandas()
    text["tx_datetime"] = [f"{DAY}T08:00:00Z", "3000-01-01T00:00:00Z", "1500-02-29",
                           f"{DAY} 23:59:59.999999"]
    text.to_csv(landing / f"b_{DAY}.csv", index=False)
    far = pd.Timestamp("3000-01-01", tz="UTC")
    pq.write_table(landing_table(2, tx_datetime=pa.array([far, AT_8],
                                                         pa.timestamp("us", tz="UTC"))),
                   landing / f"a_{DAY}.parquet")
    stats, raw, quarantine = ingest(landing, tmp_path)
    assert stats["reasons"] == {f"tx_datetime is outside the file's day {DAY}": 2,
                                "tx_datetime is not a parseable timestamp": 1}  # 1500: no Feb 29
    assert raw["transaction_id"].tolist() == [2, 40, 43]


def test_text_outside_the_nanosecond_years_parses_exactly() -> None:
    text = pd.Series(["3000-01-01T00:00:00.123456Z", "2400-02-29 12:00", "0001-01-01",
                      "9999-12-31T23:59:59.999999+01:00", "1500-02-29", "3000-13-01", None],
                     dtype="string")
    expected = ["3000-01-01T00:00:00.123456", "2400-02-29T12:00", "0001-01-01",
                "9999-12-31T22:59:59.999999", None, None, None]
    parsed = schema._parse_times(text)
    assert str(parsed.dtype) == "datetime64[us, UTC]"
    got = parsed.dt.tz_localize(None).to_numpy()
    want = np.array([np.datetime64(v, "us") if v else np.datetime64("NaT") for v in expected])
    assert np.array_equal(got, want, equal_nan=True)


def test_read_landing_file_normalizes_each_parquet_file(landing: Path) -> None:
    path = landing / f"tx_{DAY}.parquet"
    pq.write_table(landing_table(2, tx_datetime=pa.array([1, 2], pa.timestamp("ns", "Asia/Tokyo")),
                                 tx_fraud=pa.array([0, None], pa.int8())), path)
    frame = read_landing_file(path)
    assert {c: str(t) for c, t in frame.dtypes.items() if c != "tx_amount"} == {
        "transaction_id": "Int64", "tx_datetime": "datetime64[us, UTC]",
        "customer_id": "Int64", "terminal_id": "Int64", "tx_fraud": "Int64"}


def test_an_error_that_escapes_names_the_file(landing: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pq.write_table(landing_table(2), landing / f"a_{DAY}.parquet")
    text = landing_table(2, start_id=5).to_pandas()
    text.to_csv(landing / f"b_{DAY}.csv", index=False)
    parse = schema._parse_times

    def broken(values: pd.Series) -> pd.Series:  # stands for any bug in text parsing
        if values.str.contains("+", regex=False).any():
            raise OverflowError("boom")
        return parse(values)

    monkeypatch.setattr(schema, "_parse_times", broken)
    with pytest.raises(LandingFileError, match=rf"b_{DAY}\.csv: the rows for {DAY} cannot "
                                               r"be validated: OverflowError: boom") as info:
        ingest_days([DAY], str(landing), tables(tmp_path))
    assert f"a_{DAY}.parquet" not in str(info.value)
