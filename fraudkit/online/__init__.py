"""The online path: features, the champion model, the decision log, the latest batch
predictions. Plain Python (no BentoML, no Dagster), so it can be tested and benchmarked on
its own; ``bento/`` only wires it to HTTP (routes in ``bento/api.py``).

One module per concern:

* :mod:`~fraudkit.online.history`: the last days of the Delta ``raw_transactions`` table,
  held read-only in memory by each worker;
* :mod:`~fraudkit.online.feature_store`: the features of request transactions;
* :mod:`~fraudkit.online.champion`: the registry's champion model and the fallback rules;
* :mod:`~fraudkit.online.predictions`: the latest batch prediction per customer;
* :mod:`~fraudkit.online.scorer`: settings, scoring, logging each decision, refreshing;
* the online store and its decision log live in :mod:`fraudkit.store`.

Features are computed by :func:`fraudkit.features.compute_features`, the one definition the
batch path uses too. For a request the feature store builds a small frame of:

* the request itself (its row wins for its ``transaction_id``),
* the customer's stored rows in ``(t - 30d, t]`` and the terminal's stored (labelled) rows
  in ``(t - d - 30d, t - d]``, from the last days of the Delta ``raw_transactions`` table,
* the transactions scored by any worker sharing the online store (the *stream*), so
  customer windows see what the service was asked about, not only what batch ingested,

de-duplicated by ``transaction_id`` (request, then stored row, then stream row), and asks for
the features of the request rows. The windows only count rows ordered at or before the
request by ``(tx_datetime, transaction_id)``, so rows "from the future" are harmless: a
replay of days that the store already holds gives the same numbers as a replay past it.

Every scored transaction is written to the online store before its answer is sent, so a
restarted worker (or another one) computes exact windows from its very first request.
Requests of one customer that are in flight at the same time may not see each other, on
one worker (a later one scored before an earlier one is parsed) or on two
(benchmarks/online_store.py measures how often).
"""

from fraudkit.online.champion import (
    FALLBACK_VERSION,
    ChampionWatcher,
    LoadedModel,
    fallback_scores,
)
from fraudkit.online.feature_store import (
    MAX_CLOCK_SKEW,
    OnlineFeatureStore,
    Requests,
    check_not_future,
    to_time_us,
)
from fraudkit.online.history import MARGIN_DAYS, EntityRows, HistorySnapshot, load_history
from fraudkit.online.predictions import PredictionIndex
from fraudkit.online.scorer import OnlineScorer, Scored

__all__ = [
    "FALLBACK_VERSION",
    "MARGIN_DAYS",
    "MAX_CLOCK_SKEW",
    "ChampionWatcher",
    "EntityRows",
    "HistorySnapshot",
    "LoadedModel",
    "OnlineFeatureStore",
    "OnlineScorer",
    "PredictionIndex",
    "Requests",
    "Scored",
    "check_not_future",
    "fallback_scores",
    "load_history",
    "to_time_us",
]
