"""How the pipeline reaches the online store that the BentoML service writes its decisions to."""

import dagster as dg
from pydantic import Field

from fraudkit.store import OnlineStore, open_store


class OnlineStoreResource(dg.ConfigurableResource):
    """The online store (``ONLINE_STORE_URL``): SQLite under ``DATA_DIR/online`` by default,
    or the service's shared ``redis://`` server."""

    url: str = Field(description="sqlite:////absolute/path/store.sqlite3 or "
                     "redis://[:password@]host:port/db, the same URL the service uses")

    def open(self) -> OnlineStore:
        return open_store(self.url)
