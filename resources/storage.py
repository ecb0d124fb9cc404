"""Where data lives: Delta tables, landing files and the model registry."""


import os
from pathlib import Path

import dagster as dg

from fraudkit.batch import Tables
from fraudkit.blobs import is_remote, open_blobs
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
    ``.csv.gz`` in any case, one day each; see :func:`fraudkit.schema.is_landing_file`), or
    a prefix on an object store (``LANDING_URI``, read with ``storage_options``)."""

    path: str
    storage_options: dict[str, str] | None = None

    def ensure(self) -> Path | str:
        """The folder (checked to exist) or the object-store URI (a prefix exists once a
        file is under it: an empty one reads as no files)."""
        if is_remote(self.path):
            return self.path.rstrip("/")
        path = Path(self.path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"landing folder {path} does not exist: run `make demo` (it simulates data) "
                "or set LANDING_DIR to a folder of your own files"
            )
        return path


class ReportsResource(dg.ConfigurableResource):
    """Where the monitoring assets write their HTML reports (``REPORTS_URI``, default
    ``DATA_DIR/reports``): a local folder or an object-store URI (with ``storage_options``),
    one sub-folder per kind (``drift/``), so a report follows the settings like every table
    instead of the environment the code location was imported with."""

    root: str
    storage_options: dict[str, str] | None = None

    def write(self, kind: str, name: str, content: str | bytes) -> str:
        """Store report ``name`` of ``kind`` whole (a reader never sees half a file); its
        path or URI."""
        data = content.encode() if isinstance(content, str) else content
        blobs = open_blobs(self.root, self.storage_options)
        blobs.put(f"{kind}/{name}", data)
        return blobs.where(f"{kind}/{name}")

    def exists(self, kind: str, name: str) -> bool:
        return open_blobs(self.root, self.storage_options).stamp(f"{kind}/{name}") is not None

    @staticmethod
    def link(location: str) -> str:
        """A link a person can open: ``file://`` for a local file, else the URI itself."""
        return location if is_remote(location) else f"file://{location}"



class ModelRegistryResource(dg.ConfigurableResource):
    """The model registry: a local folder, or an object-store URI (``REGISTRY_URI``) whose
    versions are copied, checked, into ``cache_dir`` for the steps that read them."""

    root: str
    cache_dir: str | None = None
    storage_options: dict[str, str] | None = None

    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.root, storage_options=self.storage_options,
                             cache_dir=Path(self.cache_dir) if self.cache_dir else None)


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
        "landing": LandingZoneResource(path=settings.landing_uri,
                                       storage_options=settings.storage_options),
        "registry": ModelRegistryResource(root=settings.registry_uri,
                                          cache_dir=str(settings.registry_dir),
                                          storage_options=settings.storage_options),
        "reports": ReportsResource(root=settings.reports_uri,
                                   storage_options=settings.storage_options),
        # EnvVar keeps a Redis password out of the launchpad and the run's config.
        "online_store": OnlineStoreResource(
            url=dg.EnvVar("ONLINE_STORE_URL") if from_env and os.environ.get("ONLINE_STORE_URL")
            else settings.online_store_url),
        "monitoring": MonitoringResource.from_settings(project=settings),
    }
