"""fraudkit.config.Settings: the one settings model every part reads from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudkit.config import Settings


def test_defaults_derive_from_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LANDING_DIR", "FRAUD_REGISTRY_DIR", "ONLINE_STORE_URL", "TABLES_URI",
                 "REGISTRY_URI", "REPORTS_URI", "LANDING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "d"))
    s = Settings.from_env()
    assert s.data_dir == tmp_path / "d"
    assert s.landing_dir == tmp_path / "d" / "landing"
    assert s.registry_dir == tmp_path / "d" / "registry"
    assert s.online_store_url == f"sqlite:///{tmp_path / 'd' / 'online' / 'store.sqlite3'}"
    assert s.table_uri("raw_transactions") == str(tmp_path / "d" / "tables" / "raw_transactions")
    assert s.registry_uri == str(s.registry_dir) and s.landing_uri == str(s.landing_dir)
    assert s.report_location("drift") == str(tmp_path / "d" / "reports" / "drift")


def test_environment_overrides_and_empty_means_unset(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DELTA_STORAGE_OPTIONS", '{"AWS_REGION": "eu-west-1"}')
    monkeypatch.setenv("ONLINE_WORKERS", "2")
    monkeypatch.setenv("ONLINE_STORE_CUTOFF", "2026-06-20")
    monkeypatch.setenv("FRAUD_API_KEY", "")  # empty: no key
    monkeypatch.setenv("DASK_N_WORKERS", "3")
    s = Settings.from_env()
    assert s.storage_options == {"AWS_REGION": "eu-west-1"}
    assert (s.online_workers, s.online_store_cutoff, s.api_key, s.dask_n_workers) == (
        2, "2026-06-20", None, 3)
    assert "secret" not in repr(Settings.from_env(api_key="secret"))


@pytest.mark.parametrize(("name", "value", "said"), [
    ("LABEL_DELAY_DAYS", "0", "greater than or equal to 1"),
    ("FRAUD_START_DATE", "2026-13-01", "is not a day"),
    ("ONLINE_STORE_CUTOFF", "yesterday", "is not a day"),
    ("ONLINE_WORKERS", "two", "valid integer"),
    ("ONLINE_CHAMPION_POLL_S", "-1", "greater than 0"),
    ("DELTA_STORAGE_OPTIONS", "key=value", "DELTA_STORAGE_OPTIONS"),
    ("TABLES_URI", "ftp://host/tables", "ftp:// is not a supported store"),
    ("TABLES_URI", "az:///tables", "names no container or bucket"),
    ("REGISTRY_URI", "ftp://host/registry", "ftp:// is not a supported store"),
    ("REPORTS_URI", "s3:///reports", "names no container or bucket"),
    ("LANDING_URI", "gs://", "names no container or bucket"),
])
def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str,
                                        value: str, said: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(Exception, match=name) as caught:
        Settings.from_env()
    assert said in str(caught.value)


def test_end_before_start_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_START_DATE", "2026-06-01")
    monkeypatch.setenv("FRAUD_END_DATE", "2026-05-01")
    with pytest.raises(ValueError, match="FRAUD_END_DATE=2026-05-01 is before"):
        Settings.from_env()


def test_the_batch_resources_and_the_service_read_the_same_settings(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One source: the Dagster resources are built from the Settings the service reads,
    so both serving paths open the same tables with the same storage options."""
    from resources.storage import default_resources

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DELTA_STORAGE_OPTIONS", '{"timeout": "30s"}')
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:8786")
    settings = Settings.from_env()
    resources = default_resources()
    delta = resources["delta"]
    assert delta.uri("raw_transactions") == settings.table_uri("raw_transactions")
    assert delta.storage_options == settings.storage_options == {"timeout": "30s"}
    assert resources["dask"].scheduler_address == settings.dask_scheduler_address
    assert resources["landing"].path == str(settings.landing_dir)
    assert resources["registry"].root == str(settings.registry_dir)


@pytest.mark.parametrize(("given", "root"), [
    ("az://lake/tables/", "az://lake/tables"),
    ("s3://bucket/fraud/tables", "s3://bucket/fraud/tables"),
    ("file:///srv/fraud/tables", "/srv/fraud/tables"),
    ("/srv/fraud/tables/", "/srv/fraud/tables"),
])
def test_tables_uri_is_the_root_of_every_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               given: str, root: str) -> None:
    """TABLES_URI moves the tables (and only them) to a folder or an object store; the
    Dagster resource and the service get the same URI for every table."""
    from resources.storage import default_resources

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TABLES_URI", given)
    settings = Settings.from_env()
    assert settings.table_uri("batch_predictions") == f"{root}/batch_predictions"
    assert default_resources()["delta"].uri("batch_predictions") == \
        settings.table_uri("batch_predictions")
    assert settings.registry_dir == tmp_path / "registry"


def test_the_registry_reports_and_landing_follow_their_uris(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """REGISTRY_URI, REPORTS_URI and LANDING_URI move those parts to an object store; the
    resources get them with the store's options, and the registry keeps its local copies
    in FRAUD_REGISTRY_DIR."""
    from resources.storage import default_resources

    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REGISTRY_URI", "az://lake/registry/")
    monkeypatch.setenv("REPORTS_URI", "az://lake/reports")
    monkeypatch.setenv("LANDING_URI", "az://lake/landing")
    monkeypatch.setenv("DELTA_STORAGE_OPTIONS", '{"account_name": "a", "account_key": "k"}')
    settings = Settings.from_env()
    resources = default_resources()
    assert settings.registry_uri == resources["registry"].root == "az://lake/registry"
    assert resources["registry"].cache_dir == str(tmp_path / "registry")
    assert resources["reports"].root == "az://lake/reports"
    assert resources["landing"].path == "az://lake/landing"
    for name in ("registry", "reports", "landing"):
        assert resources[name].storage_options == {"account_name": "a", "account_key": "k"}
    assert settings.report_location("drift") == "az://lake/reports/drift"
