"""DAGSTER_HOME's dagster.yaml (scripts/instance.py): SQLite by default, PostgreSQL storage
when DAGSTER_POSTGRES_URL is set, hand edits kept until a source changes. The instance on a
real PostgreSQL server runs in tests/test_sensors.py (daemon, webserver, run queue)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest
import yaml

from scripts.instance import (
    BASE,
    POSTGRES,
    POSTGRES_URL,
    InstanceConfigError,
    postgres_url_from_env,
    prepare_instance,
    write_instance,
)


def test_the_default_is_the_checkout_s_settings_on_sqlite(tmp_path: Path) -> None:
    target = write_instance(tmp_path, postgres=False)
    assert target.read_text() == BASE.read_text()
    settings = yaml.safe_load(target.read_text())
    assert "storage" not in settings  # SQLite under DAGSTER_HOME
    assert settings["concurrency"]["pools"] == {"granularity": "run", "default_limit": 1}


def test_postgres_storage_names_the_variable_not_the_password(tmp_path: Path) -> None:
    target = write_instance(tmp_path, postgres=True)
    settings = yaml.safe_load(target.read_text())
    assert settings["storage"] == {"postgres": {"postgres_url": {"env": POSTGRES_URL}}}
    assert settings["concurrency"] == yaml.safe_load(BASE.read_text())["concurrency"]


def test_a_hand_edit_is_kept_until_the_storage_changes(tmp_path: Path) -> None:
    target = write_instance(tmp_path, postgres=False)
    edited = target.read_text() + "\nretention:\n  schedule:\n    purge_after_days: 90\n"
    target.write_text(edited)
    newest = max(BASE.stat().st_mtime, POSTGRES.stat().st_mtime)
    os.utime(target, (newest + 10,) * 2)
    assert write_instance(tmp_path, postgres=False).read_text() == edited
    write_instance(tmp_path, postgres=True)
    assert "postgres" in yaml.safe_load(target.read_text())["storage"]
    [backup] = tmp_path.glob("dagster.yaml.bak-*")
    assert backup.read_text() == edited


@pytest.mark.parametrize(("url", "says"), [
    ("sqlite:///x.db", "must be a PostgreSQL URL"),
    ("localhost:5432/dagster", "must be a PostgreSQL URL"),
    ("postgres://u:p@h/d", "write postgresql:// instead"),  # SQLAlchemy has no such dialect
])
def test_a_url_that_is_not_postgresql_is_refused_by_name(url: str, says: str) -> None:
    with pytest.raises(InstanceConfigError, match=f"{POSTGRES_URL} .*{says}"):
        postgres_url_from_env({POSTGRES_URL: url})
    assert postgres_url_from_env({}) is None
    for good in ("postgresql://u:p@h/d", "postgresql+psycopg2://u:p@h/d"):
        assert postgres_url_from_env({POSTGRES_URL: good}) == good


def test_prepare_gives_the_training_pool_its_limit_before_any_run(tmp_path: Path) -> None:
    """The queue must block a second training run from its very first pass."""
    prepare_instance(tmp_path, postgres=False)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        limits = {p.name: p.limit for p in instance.event_log_storage.get_pool_limits()}
    assert limits == {"model_training": 1}
