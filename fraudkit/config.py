"""Where data lives and the few settings both serving paths must agree on.

Everything the pipeline writes goes under ``DATA_DIR`` (default ``data/`` in the checkout):
landing files, one folder per Delta table (named after its asset), the model registry and
the drift reports. Both the Dagster code location and the BentoML service read the same
environment, so pointing ``DATA_DIR`` somewhere else moves both.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: The label (``tx_fraud``) of a transaction becomes known this many days after it.
DEFAULT_LABEL_DELAY_DAYS = 7
#: First and last (inclusive) day of the default daily partitions. The simulator's 180 days
#: start on 2026-05-01; later days are room for new data (the drift demo lands some there).
#: Dagster offers no partition for a day that has not ended yet.
DEFAULT_START_DATE = "2026-05-01"
DEFAULT_END_DATE = "2026-12-31"


def _env_date(name: str, default: str) -> str:
    value = os.environ.get(name, default)
    try:
        dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{name}={value!r} is not a date; use YYYY-MM-DD") from exc
    return value


@dataclass(frozen=True)
class Settings:
    """Paths and calendar, read from the environment once per process."""

    data_dir: Path
    start_date: str
    end_date: str
    label_delay_days: int

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(os.environ.get("DATA_DIR", PROJECT_ROOT / "data")).resolve()
        delay = int(os.environ.get("LABEL_DELAY_DAYS", DEFAULT_LABEL_DELAY_DAYS))
        if delay < 1:
            raise ValueError(
                f"LABEL_DELAY_DAYS={delay}: must be at least 1, or labels would leak into "
                "the terminal risk windows"
            )
        start = _env_date("FRAUD_START_DATE", DEFAULT_START_DATE)
        end = _env_date("FRAUD_END_DATE", DEFAULT_END_DATE)
        if end < start:
            raise ValueError(f"FRAUD_END_DATE={end} is before FRAUD_START_DATE={start}")
        return cls(data_dir=data_dir, start_date=start, end_date=end, label_delay_days=delay)

    @property
    def landing_dir(self) -> Path:
        return Path(os.environ.get("LANDING_DIR", self.data_dir / "landing")).resolve()

    @property
    def tables_dir(self) -> Path:
        return self.data_dir / "tables"

    @property
    def registry_dir(self) -> Path:
        return self.data_dir / "registry"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def online_store_url(self) -> str:
        """``ONLINE_STORE_URL``, or the embedded SQLite file under ``DATA_DIR/online``."""
        return (os.environ.get("ONLINE_STORE_URL", "").strip()
                or f"sqlite:///{self.data_dir / 'online' / 'store.sqlite3'}")

    def table_uri(self, asset_name: str) -> str:
        """Each Delta table is a folder named after the asset that writes it."""
        return str(self.tables_dir / asset_name)
