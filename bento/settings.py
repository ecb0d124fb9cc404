"""The service's settings, read once per process and shared by every module of ``bento/``.

They come from :class:`fraudkit.config.Settings`, the same model the batch path reads. They
live in a module of their own, below the others, because the request models
(:mod:`bento.schemas`) need the batch limit at import time, the routes (:mod:`bento.api`)
the API key, and the service (:mod:`bento.service`) the workers and the store; none of those
changes while the process runs.
"""

from __future__ import annotations

from fraudkit.config import Settings

#: The service's settings, read from the environment once per process.
CONFIG = Settings.from_env()
#: Most transactions one ``/score_batch`` request may carry (``ONLINE_MAX_BATCH``).
MAX_BATCH = CONFIG.max_batch
