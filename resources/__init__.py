"""How the pipeline reaches its infrastructure: Dask, the Delta tables, landing files, the
model registry, the reports folder, the monitoring thresholds and the online store. Each is
a Dagster ``ConfigurableResource`` whose defaults are the embedded, no-setup versions (a
``LocalCluster``, folders under ``DATA_DIR``)."""

from resources.dask import DaskResource
from resources.monitoring import MonitoringResource
from resources.online import OnlineStoreResource
from resources.storage import (
    DeltaLakeResource,
    LandingZoneResource,
    ModelRegistryResource,
    ReportsResource,
)

__all__ = [
    "DaskResource",
    "DeltaLakeResource",
    "LandingZoneResource",
    "ModelRegistryResource",
    "MonitoringResource",
    "OnlineStoreResource",
    "ReportsResource",
]
