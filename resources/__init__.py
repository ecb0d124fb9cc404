"""How the pipeline reaches its infrastructure: Dask, the Delta tables, landing files and
the model registry. Each is a Dagster ``ConfigurableResource`` whose defaults are the
embedded, no-setup versions (a ``LocalCluster``, folders under ``DATA_DIR``)."""

from resources.dask import DaskResource
from resources.monitoring import MonitoringResource
from resources.online import OnlineStoreResource
from resources.storage import DeltaLakeResource, LandingZoneResource, ModelRegistryResource

__all__ = [
    "DaskResource",
    "DeltaLakeResource",
    "LandingZoneResource",
    "ModelRegistryResource",
    "MonitoringResource",
    "OnlineStoreResource",
]
