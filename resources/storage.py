"""Where data lives: Delta tables, landing files and the model registry."""


import os
from pathlib import Path

import dagster as dg

from fraudkit.batch import Tables
from fraudkit.config import Settings, table_under
from fraudkit.registry import ModelRegistry


class DeltaLakeResource(dg.ConfigurableResource):
    """A root under which each asset's Delta table is a folder named after the asset.

    ``root`` may be a local folder or an object-store URI (with ``storage_options``).
    """

    root: str
    storage_options: dict[str, str] | None = None

    def uri(self, asset_name: str) -> str:
        return table_under(self.root, asset_name)

    def tables(self) -> Tables:
        return Tables(
            raw=self.uri("raw_transactions"),
            quarantine=self.uri("quarantined_transactions"),
            features=self.uri("transaction_features"),
            predictions=self.uri("batch_predictions"),
            storage_options=self.storage_options,
        )


class LandingZoneResource(dg.ConfigurableResource):
    """The folder of landing files (``*<YYYY-MM-DD>*`` ending ``.parquet``, ``.csv`` or
    ``.csv.gz`` in any case, one day each; see :func:`fraudkit.schema.is_landing_file`)."""

    path: str

    def ensure(self) -> Path:
        path = Path(self.path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"landing folder {path} does not exist: run `make demo` (it simulates data) "
                "or set LANDING_DIR to a folder of your own files"
            )
        return path


class ReportsResource(dg.ConfigurableResource):
    """The folder of the HTML reports the monitoring assets write (``DATA_DIR/reports``),
    one sub-folder per kind (``drift/``), so a report's path follows DATA_DIR like every
    table instead of the environment the code location was imported with."""

    root: str

    def folder(self, kind: str) -> Path:
        path = Path(self.root) / kind
        path.mkdir(parents=True, exist_ok=True)
        return path


class ModelRegistryResource(dg.ConfigurableResource):
    root: str

    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.root)


def default_resources(settings: Settings | None = None) -> dict[str, dg.ConfigurableResource]:
    """Resources built from :class:`~fraudkit.config.Settings` (default: this process's
    environment), the one settings model the online service and the scripts read too (so
    both serving paths see the same tables); tests pass settings of a temporary DATA_DIR."""
    from resources.dask import DaskResource
    from resources.monitoring import MonitoringResource
    from resources.online import OnlineStoreResource

    from_env = settings is None
    settings = settings or Settings.from_env()
    return {
        "dask": DaskResource(scheduler_address=settings.dask_scheduler_address,
                             n_workers=settings.dask_n_workers),
        "delta": DeltaLakeResource(root=settings.tables_uri,
                                   storage_options=settings.storage_options),
        "landing": LandingZoneResource(path=str(settings.landing_dir)),
        "registry": ModelRegistryResource(root=str(settings.registry_dir)),
        "reports": ReportsResource(root=str(settings.reports_dir)),
        # EnvVar keeps a Redis password out of the launchpad and the run's config.
        "online_store": OnlineStoreResource(
            url=dg.EnvVar("ONLINE_STORE_URL") if from_env and os.environ.get("ONLINE_STORE_URL")
            else settings.online_store_url),
        "monitoring": MonitoringResource.from_settings(project=settings),
    }
