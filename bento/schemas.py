"""The request and response models of the HTTP routes, and their OpenAPI documentation.

``Transaction`` and ``ScoreBatch`` validate what the hot routes receive (parsed straight
from bytes, see :mod:`bento.api`); ``Transaction.row`` turns one into the plain tuple the
batching and the features take (:data:`fraudkit.store.StreamRow`). The response models only
document the answers: the routes build them as plain dicts, which is cheaper per request.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    create_model,
    field_validator,
)

from bento.settings import MAX_BATCH
from fraudkit.features import FEATURES
from fraudkit.online import FALLBACK_VERSION, check_not_future, to_time_us
from fraudkit.schema import INT64_MAX, INT64_MIN, MIN_TX_AMOUNT
from fraudkit.store import StreamRow

#: The example request shown in the OpenAPI document.
EXAMPLE = {"transaction_id": 1, "tx_datetime": "2026-05-01T10:15:00Z", "customer_id": 42,
           "terminal_id": 7, "tx_amount": 57.3}

#: Marks a JSON Schema integer as int64 (ids, here and in the route parameters).
INT64_SCHEMA = {"format": "int64"}
Id = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX, description="int64",
                                json_schema_extra=INT64_SCHEMA)]


class Transaction(BaseModel):
    """One raw transaction without its label (docs/contracts.md, "Raw transaction contract")."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

    transaction_id: Id
    tx_datetime: dt.datetime = Field(
        description="ISO 8601; a time without offset is taken as UTC; at most a day after "
        "the service's clock")
    customer_id: Id
    terminal_id: Id
    #: The raw contract's amount rule (:data:`fraudkit.schema.MIN_TX_AMOUNT`), the same bound
    #: the batch ingest quarantines by: 0 is a card verification and is scored.
    tx_amount: Annotated[StrictFloat, Field(
        ge=MIN_TX_AMOUNT, allow_inf_nan=False,
        description=f">= {MIN_TX_AMOUNT:g} and finite (0: a card verification)")]

    @field_validator("tx_datetime", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("tx_datetime must be an ISO 8601 string such as "
                             "2026-05-01T10:15:00Z")
        return value

    @field_validator("tx_datetime")
    @classmethod
    def _not_future(cls, value: dt.datetime) -> dt.datetime:
        return check_not_future(value)

    def row(self) -> StreamRow:
        """The transaction as the batching and the features take it (a plain tuple)."""
        return (self.transaction_id, to_time_us(self.tx_datetime), self.customer_id,
                self.terminal_id, self.tx_amount)


class ScoreBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    transactions: list[Transaction] = Field(min_length=1, max_length=MAX_BATCH)


#: The features of an answer, one documented field each, derived from
#: :data:`fraudkit.features.FEATURES` (counts and flags are whole numbers sent as numbers).
Features = create_model(
    "Features", __doc__="The online features the model scored (equal to the batch ones).",
    **{f.name: (float, Field(description=f.description)) for f in FEATURES},
)


class Reason(BaseModel):
    """One feature behind a review or decline."""

    feature: str = Field(description="a feature name of `features`")
    contribution: float = Field(description="its TreeSHAP contribution to the score, in "
                                "log-odds (positive: towards fraud)")


class ScoreResult(BaseModel):
    """Answer for one transaction (documentation of the response)."""

    transaction_id: int
    score: float
    decision: str = Field(description="approve, review or decline")
    model_version: str = Field(description=f"registry version, or {FALLBACK_VERSION!r}")
    thresholds: dict[str, float] | None
    fallback: bool = Field(description="true when the rules decided (no usable model)")
    degraded: bool = Field(description="true when the online store could not be read or "
                           "written: the customer windows may miss recent transactions and "
                           "the decision waits in the worker's memory until the store is back")
    reasons: list[Reason] | None = Field(
        description="for a review or decline, the features that pushed the score up the "
        "most (REASON_CODES, default 3), largest first, from the model that scored it; "
        "equal to batch_predictions.reasons. null for an approval, the fallback rules, or a "
        "model version registered without an explainer")
    features: Features


class ScoreBatchResult(BaseModel):
    results: list[ScoreResult]


class CustomerRisk(BaseModel):
    """The latest batch prediction of a customer (documentation of the response)."""

    customer_id: int
    transaction_id: int
    tx_datetime: str = Field(description="ISO 8601, UTC")
    score: float
    decision: str = Field(description="approve, review or decline")
    model_version: str
    day: str
    predictions_table_version: int | None


class Problem(BaseModel):
    field: str = Field(description="the field's path, e.g. transactions.0.tx_amount")
    problem: str
    type: str | None = None


class ApiErrorBody(BaseModel):
    """Every 4xx/5xx answer of the routes (documentation of the response)."""

    error: str = Field(description="what was wrong and what to do")
    problems: list[Problem] = Field(default_factory=list,
                                    description="each invalid field (422 only)")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error codes, all with :class:`ApiErrorBody`."""
    meaning = {401: "FRAUD_API_KEY is set and the request does not carry it",
               404: "no batch prediction for this customer",
               422: "invalid request: each field and what is wrong with it",
               503: "the service is still starting"}
    return {code: {"model": ApiErrorBody, "description": meaning[code]} for code in codes}

