"""Where data lives and every setting the parts must agree on: one model, read from the
environment (pydantic-settings), used by the Dagster code location, the BentoML service and
the scripts alike.

Everything the pipeline writes goes under ``DATA_DIR`` (default ``data/`` in the checkout):
landing files, one folder per Delta table (named after its asset), the model registry, the
drift reports and the embedded online store. ``TABLES_URI``, ``LANDING_URI``,
``REGISTRY_URI`` and ``REPORTS_URI`` move those parts to an object store. Both serving
paths build their view of the tables from the same :class:`Settings` (including
``DELTA_STORAGE_OPTIONS``), so pointing ``DATA_DIR`` somewhere else moves both. The
README's "Configuration" table lists every variable.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: The label (``tx_fraud``) of a transaction becomes known this many days after it.
DEFAULT_LABEL_DELAY_DAYS = 7
#: First and last (inclusive) day of the default daily partitions. The simulator's 180 days
#: start on 2026-05-01; later days are room for new data (the drift demo lands some there).
#: The day in progress is a partition too (the landing sensor's micro-batches replace it as
#: its files land); the drift report and the freshness checks wait for a day to end.
#: The default fairness segments (FAIRNESS_SEGMENTS; fraudkit/monitoring/fairness.py):
#: amount band, new vs established customer, night vs day.
DEFAULT_SEGMENTS = (
    '{"amount_band": {"column": "tx_amount", "bins": [10, 50, 200], '
    '"labels": ["<10", "10-50", "50-200", ">=200"]}, '
    '"customer": {"column": "customer_nb_tx_30d", "bins": [4], '
    '"labels": ["new (<=3 tx in 30 days)", "established"]}, '
    '"time_of_day": {"column": "tx_during_night", "bins": [1], "labels": ["day", "night"]}}'
)
DEFAULT_START_DATE = "2026-05-01"
DEFAULT_END_DATE = "2026-12-31"


def _build(cls: type[BaseSettings], what: str, overrides: dict[str, Any]) -> Any:
    """``cls(**overrides)``, its validation errors as one ``ValueError`` that names each
    variable, the value given and what is expected."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            shown = f"{name}={error['input']!r}: " if name else ""
            problems.append(f"{shown}{error['msg'].removeprefix('Value error, ')}")
        raise ValueError(f"{what}: " + "; ".join(problems)) from exc


#: URI schemes of the object stores delta-rs writes to (Azure Blob, S3, Google Cloud Storage).
OBJECT_STORE_SCHEMES = frozenset({"az", "azure", "abfs", "abfss", "s3", "s3a", "gs"})


def _store_root(variable: str, value: str | None, default: Path) -> str:
    """``value`` (of ``variable``, e.g. ``TABLES_URI``) as a root: an absolute local folder
    (a plain path or ``file://``), or an object-store URI kept as given without a trailing
    slash."""
    value = (value or "").strip()
    if not value:
        return str(default.resolve())
    parts = urlsplit(value)
    if parts.scheme in OBJECT_STORE_SCHEMES:
        if not parts.netloc:
            raise ValueError(f"{variable}={value!r} names no container or bucket: use "
                             f"{parts.scheme}://<container>/<path>")
        return value.rstrip("/")
    if parts.scheme == "file":
        return str(Path(unquote(parts.path)).resolve())
    if parts.scheme and len(parts.scheme) > 1:  # "C:" is a drive, not a scheme
        raise ValueError(f"{variable}={value!r}: {parts.scheme}:// is not a supported store; "
                         f"use a local folder or one of "
                         f"{', '.join(sorted(OBJECT_STORE_SCHEMES))}")
    return str(Path(value).resolve())


def table_under(root: str, asset_name: str) -> str:
    """The URI of the table ``asset_name`` under ``root`` (a local folder or a URI)."""
    if "://" in root:
        return f"{root.rstrip('/')}/{asset_name}"
    return str(Path(root) / asset_name)


def _env(name: str) -> Any:
    """The field reads environment variable ``name``; in code it is set by its own name."""
    return AliasChoices(name)


class Settings(BaseSettings):
    """Paths, calendar, the online service and the Dask cluster, from the environment.

    Build it with :meth:`from_env` (errors name the variable) or, in tests and scripts, with
    keyword arguments by field name (unset fields still come from the environment).
    An empty variable counts as unset.
    """

    model_config = SettingsConfigDict(env_ignore_empty=True, populate_by_name=True,
                                      extra="ignore", validate_default=True)

    # where data lives ---------------------------------------------------------------------
    data_dir: Path = Field(PROJECT_ROOT / "data", validation_alias=_env("DATA_DIR"),
                           description="Root of landing files, tables, registry, reports.")
    landing_dir: Path | None = Field(
        None, validation_alias=_env("LANDING_DIR"),
        description="Folder of landing files (default DATA_DIR/landing).")
    landing_uri: str | None = Field(
        None, validation_alias=_env("LANDING_URI"),
        description="Where landing files are read from (default LANDING_DIR): a local "
                    "folder or an object-store URI like TABLES_URI.")
    registry_dir: Path | None = Field(
        None, validation_alias=_env("FRAUD_REGISTRY_DIR"),
        description="The model registry (default DATA_DIR/registry); with REGISTRY_URI on an "
                    "object store, the verified local copies of its versions.")
    registry_uri: str | None = Field(
        None, validation_alias=_env("REGISTRY_URI"),
        description="Where the registry lives (default FRAUD_REGISTRY_DIR): a local folder "
                    "or an object-store URI like TABLES_URI; promotion is a conditional "
                    "write of champion.json there.")
    tables_uri: str | None = Field(
        None, validation_alias=_env("TABLES_URI"),
        description="Root of the Delta tables (default DATA_DIR/tables): a local folder or "
                    "an object-store URI, az://container/path (Azure Blob, Azurite), "
                    "s3://bucket/path or gs://bucket/path, with DELTA_STORAGE_OPTIONS.")
    reports_uri: str | None = Field(
        None, validation_alias=_env("REPORTS_URI"),
        description="Where the HTML reports go (default DATA_DIR/reports): a local folder "
                    "or an object-store URI like TABLES_URI.")
    storage_options: dict[str, str] | None = Field(
        None, validation_alias=_env("DELTA_STORAGE_OPTIONS"),
        description="Object-store options (JSON object, delta-rs keys) for the tables, the "
                    "registry and the reports there; both serving paths use them.")
    # the calendar -------------------------------------------------------------------------
    start_date: str = Field(DEFAULT_START_DATE, validation_alias=_env("FRAUD_START_DATE"),
                            description="First day of the daily partitions (YYYY-MM-DD).")
    end_date: str = Field(DEFAULT_END_DATE, validation_alias=_env("FRAUD_END_DATE"),
                          description="Last day of the daily partitions (YYYY-MM-DD).")
    label_delay_days: int = Field(
        DEFAULT_LABEL_DELAY_DAYS, ge=1, validation_alias=_env("LABEL_DELAY_DAYS"),
        description="Days until a transaction's label is known; at least 1, or labels would "
                    "leak into the terminal risk windows.")
    reason_codes: int = Field(
        3, ge=0, le=15, validation_alias=_env("REASON_CODES"),
        description="Reasons (top TreeSHAP features) given with each review and decline, "
                    "on both paths; 0 turns them off. Set it alike for batch and service.")
    # the online service -------------------------------------------------------------------
    online_store_url: str = Field(
        "", validation_alias=_env("ONLINE_STORE_URL"),
        description="sqlite:///path or redis://[:password@]host:port/db (default: SQLite "
                    "under DATA_DIR/online).")
    online_workers: int = Field(1, gt=0, validation_alias=_env("ONLINE_WORKERS"),
                                description="Worker processes of one service on one host.")
    online_store_cutoff: str | None = Field(
        None, validation_alias=_env("ONLINE_STORE_CUTOFF"),
        description="Load the feature history up to this day only (replays of past days).")
    api_key: str | None = Field(None, repr=False, validation_alias=_env("FRAUD_API_KEY"),
                                description="When set, requests need X-API-Key.")
    champion_poll_s: float = Field(0.5, gt=0, validation_alias=_env("ONLINE_CHAMPION_POLL_S"),
                                   description="Seconds between reads of champion.json.")
    table_poll_s: float = Field(10.0, gt=0, validation_alias=_env("ONLINE_TABLE_POLL_S"),
                                description="Seconds between checks for new table versions.")
    max_batch: int = Field(1000, gt=0, validation_alias=_env("ONLINE_MAX_BATCH"),
                           description="Most transactions in one POST /score_batch.")
    # the batch path -----------------------------------------------------------------------
    dask_scheduler_address: str | None = Field(
        None, validation_alias=_env("DASK_SCHEDULER_ADDRESS"),
        description="A running Dask cluster (default: a LocalCluster per run).")
    dask_n_workers: int = Field(2, gt=0, validation_alias=_env("DASK_N_WORKERS"),
                                description="Worker processes of the LocalCluster.")
    # when sensors run -----------------------------------------------------------------------
    monitor_sensor_interval_s: int = Field(
        30, gt=0, validation_alias=_env("MONITOR_SENSOR_INTERVAL"),
        description="Seconds between evaluations of the drift and landing sensors.")
    run_sweep_interval_s: int = Field(
        30, gt=0, validation_alias=_env("RUN_SWEEP_INTERVAL"),
        description="Seconds between sweeps for runs whose process died.")
    landing_sensor: str = Field(
        "stopped", validation_alias=_env("LANDING_SENSOR"),
        description="landing_sensor's status until someone toggles it: running or stopped.")
    # what the serving report prices ------------------------------------------------------
    cost_per_cpu_hour: float = Field(
        0.05, ge=0, validation_alias=_env("COST_PER_CPU_HOUR"),
        description="Price of one CPU core for an hour (any currency), for serving_report's "
                    "cost per 1,000 predictions.")
    # freshness of the daily assets (assets/freshness.py checks the values) ------------------
    freshness_deadline: str = Field(
        "06:00", validation_alias=_env("FRESHNESS_DEADLINE"),
        description="When yesterday's partition must exist: HH:MM (daily) or a cron string.")
    freshness_timezone: str = Field(
        "UTC", validation_alias=_env("FRESHNESS_TIMEZONE"),
        description="IANA time zone of the deadline (the partitions stay UTC days).")
    freshness_severity: str = Field(
        "warn", validation_alias=_env("FRESHNESS_SEVERITY"),
        description="How a late day shows in the UI: warn or error.")
    freshness_sensor: str = Field(
        "stopped", validation_alias=_env("FRESHNESS_SENSOR"),
        description="freshness_sensor's status until someone toggles it: running or stopped.")

    @field_validator("start_date", "end_date", "online_store_cutoff")
    @classmethod
    def _a_day(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                dt.date.fromisoformat(value)
            except ValueError as exc:
                raise ValueError("is not a day; use YYYY-MM-DD") from exc
        return value

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        """Absolute paths, and the folders that default to places under ``DATA_DIR``."""
        if self.end_date < self.start_date:
            raise ValueError(f"FRAUD_END_DATE={self.end_date} is before "
                             f"FRAUD_START_DATE={self.start_date}")
        self.data_dir = self.data_dir.resolve()
        self.landing_dir = (self.landing_dir or self.data_dir / "landing").resolve()
        self.registry_dir = (self.registry_dir or self.data_dir / "registry").resolve()
        self.tables_uri = _store_root("TABLES_URI", self.tables_uri, self.data_dir / "tables")
        self.registry_uri = _store_root("REGISTRY_URI", self.registry_uri, self.registry_dir)
        self.landing_uri = _store_root("LANDING_URI", self.landing_uri, self.landing_dir)
        self.reports_uri = _store_root("REPORTS_URI", self.reports_uri,
                                       self.data_dir / "reports")
        self.online_store_url = (self.online_store_url.strip() or
                                 f"sqlite:///{self.data_dir / 'online' / 'store.sqlite3'}")
        return self

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """The settings of this process; a bad value is a ``ValueError`` that names the
        variable, the value and what is expected."""
        return _build(cls, "settings from the environment", overrides)

    def report_location(self, kind: str) -> str:
        """Where reports of ``kind`` (``drift``, ``serving``) go: a folder or a URI."""
        return table_under(self.reports_uri, kind)

    def table_uri(self, asset_name: str) -> str:
        """Each Delta table is a folder named after the asset that writes it, under
        ``TABLES_URI``."""
        return table_under(self.tables_uri, asset_name)


#: Environment values that switch an optional monitoring setting off (e.g. the floor).
_OFF = frozenset({"none", "off"})


class MonitoringSettings(BaseSettings):
    """The monitoring loop's thresholds, shared by its assets and sensors (so what a report
    calls "drifted" is exactly what the sensor acts on). The one declaration of each:
    its variable, default and meaning; :class:`resources.MonitoringResource` takes its fields
    from here. The defaults suit the full simulation (thousands of transactions a day)."""

    model_config = SettingsConfigDict(env_ignore_empty=True, populate_by_name=True,
                                      extra="ignore", validate_default=True)

    feature_threshold: float = Field(
        0.2, gt=0, validation_alias=_env("MONITOR_FEATURE_THRESHOLD"),
        description="A feature drifts when its distance (normed Wasserstein, Jensen-Shannon) "
                    "reaches this.")
    drift_share: float = Field(
        0.2, validation_alias=_env("MONITOR_DRIFT_SHARE"),
        description="A day is drifted when this share of monitored features drifts; a "
                    "drifted day triggers retraining.")
    performance_metric: str = Field(
        "average_precision", validation_alias=_env("MONITOR_PERFORMANCE_METRIC"),
        description="The realized metric compared with the floor.")
    performance_floor: float | None = Field(
        0.5, validation_alias=_env("MONITOR_PERFORMANCE_FLOOR"),
        description="Retrain when a matured day's realized metric falls below this "
                    "(none: never).")
    consistency_floor: float = Field(
        1.0, ge=0, le=1, validation_alias=_env("MONITOR_CONSISTENCY_FLOOR"),
        description="online_consistency's check fails on a day whose share of online "
                    "decisions matching the batch features (and score) is below this.")
    cooldown_seconds: float = Field(
        3600.0, ge=0, validation_alias=_env("MONITOR_COOLDOWN_SECONDS"),
        description="After a retraining launch, no other launch for this long.")
    gate_metric: str = Field(
        "average_precision", validation_alias=_env("GATE_METRIC"),
        description="The metric the champion/challenger gate compares.")
    gate_evidence: str = Field(
        "holdout", validation_alias=_env("GATE_EVIDENCE"),
        description="'holdout': a retrained challenger that passes the gate on held-out days "
                    "is promoted; 'shadow': it goes into shadow instead, and judge_shadow "
                    "promotes it on the live traffic it scored.")
    gate_tolerance: float = Field(
        0.0, validation_alias=_env("GATE_TOLERANCE"),
        description="Promote when challenger >= champion - tolerance on gate_metric (same "
                    "held-out days).")
    fairness_segments: str = Field(
        DEFAULT_SEGMENTS, validation_alias=_env("FAIRNESS_SEGMENTS"),
        description="Segments for fairness (JSON: name -> column, bin edges, labels; a "
                    "column without bins is split by its values).")
    fairness_max_ratio: float = Field(
        1.25, ge=1, validation_alias=_env("FAIRNESS_MAX_RATIO"),
        description="model_performance warns when a segment's false-positive rate exceeds "
                    "the overall one by more than this ratio.")
    fairness_gate_tolerance: float = Field(
        0.25, ge=0, validation_alias=_env("FAIRNESS_GATE_TOLERANCE"),
        description="The gate refuses a challenger whose worst segment disparity exceeds "
                    "the champion's by more than this.")
    fairness_min_false_positives: int = Field(
        50, gt=0, validation_alias=_env("FAIRNESS_MIN_FALSE_POSITIVES"),
        description="A segment value is judged only with at least this many false alarms, "
                    "seen or expected at the overall rate (fewer are noise).")
    reference: str = Field(
        "holdout", validation_alias=_env("MONITOR_REFERENCE"),
        description="'holdout': the features of the champion's held-out days; 'stored': "
                    "its reference.parquet.")
    reference_rows: int = Field(20_000, gt=0, validation_alias=_env("MONITOR_REFERENCE_ROWS"),
                                description="Reference rows sampled for a drift report.")
    max_current_rows: int = Field(
        200_000, gt=0, validation_alias=_env("MONITOR_MAX_CURRENT_ROWS"),
        description="A day's rows sampled for its drift report, at most.")
    retrain_train_days: int = Field(90, gt=0, validation_alias=_env("RETRAIN_TRAIN_DAYS"),
                                    description="Days a challenger trains on.")
    retrain_test_days: int = Field(14, gt=0, validation_alias=_env("RETRAIN_TEST_DAYS"),
                                   description="Held-out days the gate compares on.")
    retrain_warmup_days: int | None = Field(
        None, gt=0, validation_alias=_env("RETRAIN_WARMUP_DAYS"),
        description="Days before the training window whose rows only warm the feature "
                    "windows (default: the windows' look-back for LABEL_DELAY_DAYS).")
    workspace: str | None = Field(
        None, validation_alias=_env("EVIDENTLY_WORKSPACE"),
        description="Evidently workspace folder (default DATA_DIR/evidently); 'none' "
                    "disables it.")
    evidently_ui_port: int = Field(8000, gt=0, validation_alias=_env("EVIDENTLY_UI_PORT"),
                                   description="Port of `evidently ui` in the links the drift "
                                               "report's metadata shows.")

    @field_validator("fairness_segments")
    @classmethod
    def _segments(cls, value: str) -> str:
        from fraudkit.monitoring.fairness import parse_segments

        parse_segments(value)
        return value

    @field_validator("performance_floor", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in _OFF else value

    @classmethod
    def from_env(cls, **overrides: Any) -> MonitoringSettings:
        """The monitoring settings of this process; a bad value is a ``ValueError`` that
        names the variable and the value."""
        return _build(cls, "monitoring settings from the environment", overrides)

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of ``field`` (for messages)."""
        alias = cls.model_fields[field].validation_alias
        return alias.choices[0] if isinstance(alias, AliasChoices) else field.upper()
