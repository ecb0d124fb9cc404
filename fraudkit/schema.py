"""The raw transaction contract and its enforcement (docs/contracts.md, "Raw transaction contract").

A landing file either fits the contract's columns or is rejected as a whole with an error
that names the file and what is missing; inside a well-formed file, each row that breaks a
rule goes to quarantine with a reason, so rows in = rows kept + rows quarantined, always.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fraudkit.blobs import Entry, LocalBlobs, ObjectBlobs, is_remote, open_file

RAW_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "tx_datetime",
    "customer_id",
    "terminal_id",
    "tx_amount",
    "tx_fraud",
)
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
#: What counts as a landing file, for the ingest and the landing sensor alike: a name that
#: ends in one of these, in any case (``.CSV``, ``.Parquet``); ``.csv.gz`` is gzip-compressed
#: CSV. Every other file in the landing folder is skipped, with a warning naming it.
LANDING_SUFFIXES = (".parquet", ".csv", ".csv.gz")
#: The contract's integer columns: read and checked as exact int64, never through float.
INT_COLUMNS = ("transaction_id", "customer_id", "terminal_id", "tx_fraud")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: The smallest ``tx_amount`` the contract accepts (it must also be finite): the one
#: statement of the amount rule, which the batch validation (:func:`validate_raw`, quarantine)
#: and the service's request model (``bento.schemas.Transaction``, 422) both enforce, so the
#: two paths never disagree on which transactions exist. Zero is allowed because a
#: zero-amount authorization (a card verification) is a real transaction, and one that card
#: testers use: it is kept, featured and scored like any other. Nothing divides by an
#: amount, so a zero is an ordinary value in the features.
MIN_TX_AMOUNT = 0.0


class LandingFileError(ValueError):
    """A landing file that cannot be read as the raw contract at all."""


#: A landing file: a local path, or the URI of an object (``LANDING_URI=az://…``).
Location = Path | str


def file_name(path: Location) -> str:
    """The last part of a path or URI."""
    return path.name if isinstance(path, Path) else str(path).rstrip("/").rsplit("/", 1)[-1]


def day_of_file(path: Location) -> str | None:
    """The day a landing file belongs to: the ``YYYY-MM-DD`` in its name."""
    match = _DAY_IN_NAME.search(file_name(path))
    return match.group(1) if match else None


def landing_suffix(path: Location) -> str | None:
    """The :data:`LANDING_SUFFIXES` entry that ``path``'s name ends with (case-insensitive),
    or None when it is not a landing file."""
    name = file_name(path).lower()
    return next((s for s in LANDING_SUFFIXES if name.endswith(s)), None)


def is_landing_file(path: Location) -> bool:
    """Whether ingest reads ``path``: a landing suffix and a day in its name. The landing
    sensor and the ingest asset both decide with this."""
    return landing_suffix(path) is not None and day_of_file(path) is not None


def skip_reason(path: Location) -> str:
    """Why ingest does not read ``path`` (a file that is not :func:`is_landing_file`)."""
    if landing_suffix(path) is None:
        return (f"not a landing file (the name must end in "
                f"{', '.join(LANDING_SUFFIXES)}, in any case)")
    return "no day (YYYY-MM-DD) in its name"


def landing_entries(landing_dir: Location, options: dict[str, str] | None = None
                    ) -> list[Entry]:
    """Every file under the landing folder or object-store prefix (``options``: the
    store's, as ``DELTA_STORAGE_OPTIONS``), with its time, size and stamp."""
    if is_remote(landing_dir):
        return ObjectBlobs(str(landing_dir), options).entries()
    # every file, hidden ones too: ingest names each file it does not read
    return LocalBlobs(Path(str(landing_dir).removeprefix("file://"))).entries(hidden=True)


def _files(landing_dir: Location, options: dict[str, str] | None,
           entries: list[Entry] | None) -> list[Location]:
    """The files of :func:`landing_entries` (or of ``entries``, listed already): Paths in a
    folder, URIs on a store."""
    remote = is_remote(landing_dir)
    listed = landing_entries(landing_dir, options) if entries is None else entries
    return [e.location if remote else Path(e.location) for e in listed]


def landing_files_for_day(landing_dir: Location, day: str,
                          options: dict[str, str] | None = None,
                          entries: list[Entry] | None = None) -> list[Location]:
    """Landing files of one day, in name order (``*<day>*`` with a landing suffix)."""
    return sorted((p for p in _files(landing_dir, options, entries)
                   if is_landing_file(p) and day_of_file(p) == day), key=str)


def skipped_files(landing_dir: Location, days: Iterable[str] | None = None,
                  options: dict[str, str] | None = None,
                  entries: list[Entry] | None = None) -> list[Location]:
    """Files in the landing folder that ingest does not read (see :func:`skip_reason`), in
    name order. With ``days``, only those that name one of them or no day at all: the
    files a run of these days should have read, or that no run ever reads."""
    wanted = None if days is None else set(days)
    return sorted(
        (p for p in _files(landing_dir, options, entries)
         if not is_landing_file(p)
         and (wanted is None or day_of_file(p) is None or day_of_file(p) in wanted)), key=str)


def landed_days(landing_dir: Location, options: dict[str, str] | None = None) -> list[str]:
    """Every day that has at least one landing file."""
    return sorted({day for p in _files(landing_dir, options, None)
                   if is_landing_file(p) and (day := day_of_file(p)) is not None})


def _require_columns(path: Location, columns: Iterable[str]) -> None:
    missing = [c for c in RAW_COLUMNS if c not in set(columns)]
    if missing:
        raise LandingFileError(
            f"{path}: missing column(s) {', '.join(missing)}; a landing file needs "
            f"{', '.join(RAW_COLUMNS)}"
        )


def _format(path: Location) -> str:
    suffix = landing_suffix(path)
    if suffix is None:
        raise LandingFileError(f"{path}: {skip_reason(path)}")
    return suffix[1:]


@contextmanager
def _opened(path: Location, options: dict[str, str] | None) -> Iterator[Location | BinaryIO]:
    """What the readers take: a local path as it is (Arrow and pandas read it natively),
    an object opened through fsspec."""
    if not is_remote(path):
        yield path
        return
    with open_file(path, options) as source:
        yield source


def _read_csv(source: Location | BinaryIO, path: Location, **kwargs: Any) -> pd.DataFrame:
    compression = "gzip" if landing_suffix(path) == ".csv.gz" else None
    return pd.read_csv(source, compression=compression, **kwargs)


def check_landing_file(path: Location, options: dict[str, str] | None = None) -> None:
    """Read only a landing file's header (Parquet footer, CSV first line) and raise
    :class:`LandingFileError` if it cannot be read or lacks a column: cheap enough to check
    every file of a back-fill before any of it is written (on an object store, a ranged
    read or two)."""
    fmt = _format(path)
    try:
        with _opened(path, options) as source:
            if fmt == "parquet":
                columns = pq.read_schema(source).names
            else:
                columns = _read_csv(source, path, nrows=0).columns
    except Exception as exc:  # noqa: BLE001 - any reader error means the same thing here
        raise LandingFileError(f"{path}: cannot be read as {fmt}: {exc}") from exc
    _require_columns(path, columns)


# The range of int64s that a float64 holds exactly: a float id beyond it may be a rounded
# neighbour of the real one (2**53 + 1 reads as 2**53), so it is not taken as an id.
_FLOAT_EXACT = 2.0**53


def _int_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """An integer contract column as int64 where that is exact; otherwise as text, which
    :func:`validate_raw` parses exactly (and rejects what is not an int64). Never float:
    pandas would turn a mix of int64 and float columns into float64."""
    kind = column.type
    if pa.types.is_integer(kind):
        if kind == pa.uint64():
            top = pc.max(column).as_py()
            if top is not None and top > INT64_MAX:
                return column.cast(pa.string())
        return column.cast(pa.int64())
    if pa.types.is_floating(kind):
        kind = pa.float64()
        column = column.cast(kind)  # float16/32 fit exactly
        # NaN is a missing value, as pandas has always read it.
        column = pc.if_else(pc.is_nan(column), pa.scalar(None, kind), column)
        whole = pc.and_(pc.equal(pc.floor(column), column),
                        pc.less(pc.abs(column), pa.scalar(_FLOAT_EXACT, kind)))
        if pc.all(whole).as_py() in (True, None):
            return column.cast(pa.int64())
        # Text then: the exact ids as digits, any other float as a float ("1.5",
        # "9.007199254740994e+15", "inf"; ".0" added should a float print without a point),
        # which validation rejects, the value kept for the quarantine.
        digits = column.cast(pa.int64(), safe=False).cast(pa.string())
        text = column.cast(pa.string())
        text = pc.if_else(pc.match_substring_regex(text, r"[.eEnN]"), text,
                          pc.binary_join_element_wise(text, ".0", ""))
        return pc.if_else(whole, digits, text)
    return column


def _time_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Timestamps (any unit, naive = UTC, any zone) and dates as ``timestamp[us, UTC]``,
    so the files of one day concatenate without a unit change (pandas would widen a
    microsecond and a nanosecond file to nanoseconds, and fail on a year-3000 row). Values
    that microseconds cannot hold become text, and :func:`validate_raw` quarantines them."""
    kind = column.type
    if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
        return column
    target = pa.timestamp("us", tz="UTC")
    try:
        if pa.types.is_timestamp(kind) and kind.unit == "ns":
            # Nanoseconds always fit in microseconds; the sub-microsecond part is dropped.
            return column.cast(pa.timestamp("us", tz=kind.tz), safe=False).cast(target)
        return column.cast(pa.timestamp("us", tz=getattr(kind, "tz", None))).cast(target)
    except pa.ArrowInvalid:  # out of the microsecond range (beyond the year 294,000)
        return column.cast(pa.string())


def _landing_frame(table: pa.Table) -> pd.DataFrame:
    """A landing table as pandas, with the contract columns normalized column by column
    in Arrow (int64 kept exact as pandas' nullable Int64, timestamps as microseconds)."""
    columns = {}
    for name in RAW_COLUMNS:
        column = table[name]
        if pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        if name in INT_COLUMNS:
            column = _int_column(column)
        elif name == "tx_datetime":
            column = _time_column(column)
        columns[name] = column
    return pa.table(columns).to_pandas(
        types_mapper={pa.int64(): pd.Int64Dtype()}.get, self_destruct=True
    )


def read_landing_file(path: Location, options: dict[str, str] | None = None) -> pd.DataFrame:
    """Read one Parquet/CSV landing file with every contract column as text-or-native values.

    Parquet columns come normalized (:func:`_landing_frame`): integers as exact nullable
    Int64 (a null in the column no longer turns the ids into float64), timestamps as
    ``datetime64[us, UTC]``; CSV columns come as text. Either way the files of a day
    concatenate without losing a digit. Raises :class:`LandingFileError` naming the file
    when it is unreadable or lacks a column.
    """
    fmt = _format(path)
    try:
        with _opened(path, options) as source:
            if fmt == "parquet":
                parquet = pq.ParquetFile(source)
                _require_columns(path, parquet.schema_arrow.names)
                return _landing_frame(parquet.read(columns=list(RAW_COLUMNS)))
            frame = _read_csv(source, path, dtype=str, keep_default_na=False, na_values=[""])
    except LandingFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader error means the same thing here
        raise LandingFileError(f"{path}: cannot be read as {fmt}: {exc}") from exc
    _require_columns(path, frame.columns)
    return frame[list(RAW_COLUMNS)]


@dataclass
class ValidationResult:
    valid: pd.DataFrame
    quarantine: pd.DataFrame

    @property
    def rows_in(self) -> int:
        return len(self.valid) + len(self.quarantine)


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
        # Only where a float is exact: beyond 2**53 it may be a rounded neighbour of the id.
        whole = series.where(np.isfinite(series) & (series == np.floor(series))
                             & (series.abs() < _FLOAT_EXACT))
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
    return _parse_times(series.astype("string"))


# The Gregorian calendar repeats every 400 years (146,097 days), whole weeks included.
_US_PER_400_YEARS = 146_097 * 86_400 * 1_000_000
_ISO_YEAR = r"^(\s*)(\d{4})(-.*)$"


def _parse_times(text: pd.Series) -> pd.Series:
    """ISO 8601 text as ``datetime64[us, UTC]`` (no offset = UTC); what does not parse is
    NaT. pandas parses text in nanoseconds, so years 1677-2262 only; a text with another
    four-digit year (3000-01-01) is parsed moved by whole 400-year cycles into that range
    and moved back in microseconds, so it gets its real value (and is then quarantined as
    outside the file's day, as the same value from Parquet is) instead of "unparseable"."""
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    parsed = parsed.astype("datetime64[us, UTC]")
    failed = (parsed.isna() & text.notna()).to_numpy()
    if not failed.any():
        return parsed
    parts = text[failed].str.extract(_ISO_YEAR)
    parts = parts[parts[1].notna()]
    if parts.empty:
        return parsed
    year = parts[1].astype("int64")
    cycles = (year - 1700) // 400
    moved = parts[0] + (year - 400 * cycles).astype(str).str.zfill(4) + parts[2]
    again = pd.to_datetime(moved, utc=True, errors="coerce", format="ISO8601")
    again = again.astype("datetime64[us, UTC]")
    ok = again.notna().to_numpy()
    if ok.any():
        micros = (again[ok].array.asi8
                  + cycles[ok].to_numpy(dtype=np.int64) * _US_PER_400_YEARS)
        values = pd.DatetimeIndex(micros.astype("datetime64[us]")).tz_localize("UTC")
        parsed.loc[again.index[ok]] = values
    return parsed


def validate_raw(
    frame: pd.DataFrame,
    day: str,
    source: str | pd.Series,
    row_number: np.ndarray | None = None,
) -> ValidationResult:
    """Split one day's landing rows into contract-valid rows and quarantined rows.

    ``source`` names the file of each row (one name or one per row) and ``row_number`` its
    position in that file, so every quarantined row can be traced back.

    Reasons, first match wins: a null field, an unparseable value, a non-finite amount or
    one below :data:`MIN_TX_AMOUNT` (a negative one; zero is kept), a label outside {0, 1},
    a timestamp outside ``day``, and a ``transaction_id`` seen before in the same day (the
    first valid occurrence is kept).
    Integers are checked exactly (never through float64), timestamps in microseconds.

    An unexpected error is raised again as :class:`LandingFileError` naming the file(s)
    whose rows cause it (each file of the day is retried alone to find them) and the day.
    """
    try:
        return _validate(frame, day, source, row_number)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file it came from
        sources = (pd.Series(source, index=frame.index) if not isinstance(source, str)
                   else pd.Series(source, index=frame.index, dtype=object))
        files = list(pd.unique(sources)) or ["(no rows)"]
        culprits = []
        for name in files:
            rows = (sources == name).to_numpy()
            try:  # the file's own column types again, as far as the values tell them
                _validate(frame[rows].infer_objects(), day, name)
            except Exception:  # noqa: BLE001
                culprits.append(name)
        raise LandingFileError(
            f"{', '.join(map(str, culprits or files))}: the rows for {day} cannot be "
            f"validated: {type(exc).__name__}: {exc}"
        ) from exc


def _validate(
    frame: pd.DataFrame,
    day: str,
    source: str | pd.Series,
    row_number: np.ndarray | None = None,
) -> ValidationResult:
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
    # The reason's text predates zero amounts (then quarantined too); it is kept so that
    # old and new quarantine rows of the same rule group together.
    flag(amounts < MIN_TX_AMOUNT, "tx_amount is not positive")
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
