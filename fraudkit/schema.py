"""The raw transaction contract and its enforcement (DESIGN.md, "Raw transaction contract").

A landing file either fits the contract's columns or is rejected as a whole with an error
that names the file and what is missing; inside a well-formed file, each row that breaks a
rule goes to quarantine with a reason, so rows in = rows kept + rows quarantined, always.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

RAW_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "tx_datetime",
    "customer_id",
    "terminal_id",
    "tx_amount",
    "tx_fraud",
)
#: The online request carries the raw contract without the label.
REQUEST_COLUMNS: tuple[str, ...] = RAW_COLUMNS[:-1]
PARTITION_COLUMN = "day"

RAW_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.int64()),
        ("tx_datetime", pa.timestamp("us", tz="UTC")),
        ("customer_id", pa.int64()),
        ("terminal_id", pa.int64()),
        ("tx_amount", pa.float64()),
        ("tx_fraud", pa.int8()),
        (PARTITION_COLUMN, pa.string()),
    ]
)
#: A landing file in the raw contract: the raw table's columns without the partition.
LANDING_SCHEMA = pa.schema([f for f in RAW_SCHEMA if f.name != PARTITION_COLUMN])
QUARANTINE_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("row_number", pa.int64()),
        ("reason", pa.string()),
        ("transaction_id", pa.string()),
        ("tx_datetime", pa.string()),
        ("customer_id", pa.string()),
        ("terminal_id", pa.string()),
        ("tx_amount", pa.string()),
        ("tx_fraud", pa.string()),
        (PARTITION_COLUMN, pa.string()),
    ]
)

_DAY_IN_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})")
LANDING_SUFFIXES = (".parquet", ".csv")


class LandingFileError(ValueError):
    """A landing file that cannot be read as the raw contract at all."""


def day_of_file(path: Path) -> str | None:
    """The day a landing file belongs to: the ``YYYY-MM-DD`` in its name."""
    match = _DAY_IN_NAME.search(path.name)
    return match.group(1) if match else None


def landing_files_for_day(landing_dir: Path, day: str) -> list[Path]:
    """Landing files of one day, in name order (``*<day>*.parquet`` or ``.csv``)."""
    if not landing_dir.exists():
        return []
    return sorted(
        p
        for p in landing_dir.rglob(f"*{day}*")
        if p.is_file() and p.suffix in LANDING_SUFFIXES and day_of_file(p) == day
    )


def landed_days(landing_dir: Path) -> list[str]:
    """Every day that has at least one landing file."""
    if not landing_dir.exists():
        return []
    days = {day_of_file(p) for p in landing_dir.rglob("*") if p.suffix in LANDING_SUFFIXES}
    return sorted(d for d in days if d)


def _require_columns(path: Path, columns: Iterable[str]) -> None:
    missing = [c for c in RAW_COLUMNS if c not in set(columns)]
    if missing:
        raise LandingFileError(
            f"{path}: missing column(s) {', '.join(missing)}; a landing file needs "
            f"{', '.join(RAW_COLUMNS)}"
        )


def check_landing_file(path: Path) -> None:
    """Read only a landing file's header (Parquet footer, CSV first line) and raise
    :class:`LandingFileError` if it cannot be read or lacks a column: cheap enough to check
    every file of a back-fill before any of it is written."""
    try:
        if path.suffix == ".parquet":
            columns = pq.read_schema(path).names
        else:
            columns = pd.read_csv(path, nrows=0).columns
    except Exception as exc:  # noqa: BLE001 - any reader error means the same thing here
        raise LandingFileError(f"{path}: cannot be read as {path.suffix[1:]}: {exc}") from exc
    _require_columns(path, columns)


def read_landing_file(path: Path) -> pd.DataFrame:
    """Read one Parquet/CSV landing file with every contract column as text-or-native values.

    Raises :class:`LandingFileError` naming the file when it is unreadable or lacks a column.
    """
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as exc:  # noqa: BLE001 - any reader error means the same thing here
        raise LandingFileError(f"{path}: cannot be read as {path.suffix[1:]}: {exc}") from exc
    _require_columns(path, frame.columns)
    return frame[list(RAW_COLUMNS)]


@dataclass
class ValidationResult:
    valid: pd.DataFrame
    quarantine: pd.DataFrame

    @property
    def rows_in(self) -> int:
        return len(self.valid) + len(self.quarantine)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _as_int(series: pd.Series) -> pd.Series:
    """Parse int64 values exactly (no float round trip). Anything else becomes <NA>,
    including integers outside the int64 range, which a plain cast would wrap around."""
    if pd.api.types.is_unsigned_integer_dtype(series):
        values = series.astype("UInt64")
        ok = (values <= INT64_MAX).fillna(False).to_numpy(dtype=bool)
        data = np.where(ok, values.to_numpy(dtype="uint64", na_value=0), 0).astype(np.int64)
        return pd.Series(pd.arrays.IntegerArray(data, ~ok), index=series.index)
    if pd.api.types.is_integer_dtype(series):
        return series.astype("Int64")
    if pd.api.types.is_float_dtype(series):
        whole = series.where(np.isfinite(series) & (series == np.floor(series))
                             & (series >= INT64_MIN) & (series < 2.0**63))
        return whole.astype("Int64")
    text = series.astype("string").str.strip()
    # Up to 18 digits always fits int64, and pandas parses those exactly in C; longer
    # digit strings go through Python ints, range-checked, and are assigned at once.
    short = text.str.fullmatch(r"[+-]?\d{1,18}", na=False)
    parsed = pd.to_numeric(text.where(short), errors="coerce").astype("Int64")
    long = text.str.fullmatch(r"[+-]?\d{19,}", na=False).to_numpy()
    if long.any():
        values = [int(digits) for digits in text[long]]
        parsed[long] = pd.array([v if INT64_MIN <= v <= INT64_MAX else None for v in values],
                                dtype="Int64")
    return parsed


def _as_utc(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    if pd.api.types.is_datetime64_dtype(series):
        return series.dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    parsed = pd.to_datetime(series.astype("string"), utc=True, errors="coerce", format="ISO8601")
    return parsed.astype("datetime64[us, UTC]")


def validate_raw(
    frame: pd.DataFrame,
    day: str,
    source: str | pd.Series,
    row_number: np.ndarray | None = None,
) -> ValidationResult:
    """Split one day's landing rows into contract-valid rows and quarantined rows.

    ``source`` names the file of each row (one name or one per row) and ``row_number`` its
    position in that file, so every quarantined row can be traced back.

    Reasons, first match wins: a null field, an unparseable value, a non-positive or
    non-finite amount, a label outside {0, 1}, a timestamp outside ``day``, and a
    ``transaction_id`` seen before in the same day (the first valid occurrence is kept).
    """
    n = len(frame)
    reason = pd.Series(pd.NA, index=frame.index, dtype="string")

    def flag(mask: pd.Series | np.ndarray, text: str) -> None:
        mask = pd.Series(mask, index=frame.index).fillna(False).astype(bool)
        reason[mask & reason.isna()] = text

    for col in RAW_COLUMNS:
        flag(frame[col].isna(), f"null {col}")

    ids = _as_int(frame["transaction_id"])
    customers = _as_int(frame["customer_id"])
    terminals = _as_int(frame["terminal_id"])
    labels = _as_int(frame["tx_fraud"])
    times = _as_utc(frame["tx_datetime"])
    amounts = pd.to_numeric(frame["tx_amount"], errors="coerce").astype("float64")

    flag(ids.isna(), "transaction_id is not an int64 integer")
    flag(times.isna(), "tx_datetime is not a parseable timestamp")
    flag(customers.isna(), "customer_id is not an int64 integer")
    flag(terminals.isna(), "terminal_id is not an int64 integer")
    flag(~np.isfinite(amounts.to_numpy()), "tx_amount is not a finite number")
    flag(amounts <= 0, "tx_amount is not positive")
    flag(~labels.isin([0, 1]), "tx_fraud is not 0 or 1")
    day_start = pd.Timestamp(day, tz="UTC")
    outside = (times < day_start) | (times >= day_start + pd.Timedelta(days=1))
    flag(outside, f"tx_datetime is outside the file's day {day}")
    # Among rows that are otherwise valid, so a broken first copy never costs a good one.
    valid_so_far = reason.isna()
    flag(ids.where(valid_so_far).duplicated(keep="first") & valid_so_far,
         "duplicate transaction_id")

    bad = reason.notna().to_numpy()
    sources = (
        np.full(n, source, dtype=object) if isinstance(source, str) else np.asarray(source)
    )
    positions = np.arange(n) if row_number is None else np.asarray(row_number)
    valid = pd.DataFrame(
        {
            "transaction_id": ids[~bad].astype("int64"),
            "tx_datetime": times[~bad],
            "customer_id": customers[~bad].astype("int64"),
            "terminal_id": terminals[~bad].astype("int64"),
            "tx_amount": amounts[~bad],
            "tx_fraud": labels[~bad].astype("int8"),
            PARTITION_COLUMN: day,
        }
    ).reset_index(drop=True)
    rejected = frame[bad]
    quarantine = pd.DataFrame(
        {
            "source_file": sources[bad].astype(str),
            "row_number": positions[bad].astype("int64"),
            "reason": reason[bad].astype(str).to_numpy(),
            **{c: rejected[c].astype("string").to_numpy() for c in RAW_COLUMNS},
            PARTITION_COLUMN: day,
        }
    )
    assert len(valid) + len(quarantine) == n
    return ValidationResult(valid=valid, quarantine=quarantine)


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)


def parse_day(day: str) -> dt.date:
    try:
        return dt.date.fromisoformat(day)
    except ValueError as exc:
        raise ValueError(f"{day!r} is not a day; use YYYY-MM-DD") from exc
