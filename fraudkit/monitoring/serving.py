"""The batch-vs-real-time report: what each serving path did for a day, on this model and data.

For one day, per path:

* **batch**: the ``batch_predictions`` run that scored the day (its Dask tasks' wall time
  and their worker processes' CPU time, shared out by rows when the run scored several
  days): throughput, CPU-seconds, cost per 1,000 predictions, and the latency of a batch
  prediction, from the transaction to ``scored_at``.
* **online**: the service's decision log (``online_predictions``): decisions, latency p50
  and p99 (received to decided, in the worker), mean and peak (busiest second) rate. Its
  CPU-seconds are measured by re-scoring the day's logged requests in this process with the
  service's own scoring code (:class:`fraudkit.online.OnlineScorer`: features, model and the
  decision log, on a temporary SQLite store), in the drains the service actually formed
  (rows one worker decided at the same instant); HTTP parsing and answer encoding are not
  in it, so it is the floor of the service's cost.

And across paths: how old the batch prediction is that ``/customers/{id}/risk`` serves at
the moment of each online request (the customer's newest batch-scored transaction of an
earlier day), against the online answer's own inputs (the request itself, decided in
``latency_ms``), and the share of online decisions that differ from the batch decision for
the same transaction (split by whether the same model version made both).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def _us(times: pd.Series) -> np.ndarray:
    """Microseconds since the epoch, whatever the column's unit (Delta reads give
    datetime64[us], parsed strings datetime64[ns])."""
    return ((times - _EPOCH) // pd.Timedelta(microseconds=1)).to_numpy(np.int64)

SERVING_SCHEMA = pa.schema(
    [
        ("day", pa.string()),
        ("path", pa.string()),  # "batch" or "online"
        ("predictions", pa.int64()),
        ("throughput_per_s", pa.float64()),  # batch: rows per task second; online: mean rate
        ("peak_per_s", pa.float64()),  # online: the busiest second; batch: null
        ("latency_p50_ms", pa.float64()),
        ("latency_p99_ms", pa.float64()),
        ("cpu_seconds", pa.float64()),
        ("cost_per_1000", pa.float64()),
        ("staleness_p50_h", pa.float64()),  # age of what the path serves at request time
        ("staleness_p99_h", pa.float64()),
        ("decisions_differing", pa.float64()),  # online vs batch, same transaction
        ("note", pa.string()),
    ]
)


def cost_per_1000(cpu_seconds: float | None, predictions: int, per_cpu_hour: float
                  ) -> float | None:
    if cpu_seconds is None or not predictions:
        return None
    return cpu_seconds / 3600 * per_cpu_hour / predictions * 1000


def drains(logged: pd.DataFrame) -> list[np.ndarray]:
    """Row positions of each drain, in decision order: rows one worker decided at the same
    instant (``received_at`` + ``latency_ms`` is the drain's decision time)."""
    received = _us(logged["received_at"])
    decided = received + np.rint(logged["latency_ms"].to_numpy() * 1000).astype(np.int64)
    keys = pd.DataFrame({"worker": logged["worker"].to_numpy(), "decided": decided})
    groups = keys.groupby(["decided", "worker"], sort=True).indices
    return [np.sort(groups[k]) for k in sorted(groups)]


def online_latency(logged: pd.DataFrame) -> dict[str, Any]:
    """Decisions, latency p50/p99 (ms), mean rate over the day's active span, peak rate."""
    n = len(logged)
    if not n:
        return {"predictions": 0}
    received = _us(logged["received_at"])
    span_s = max((received.max() - received.min()) / 1e6, 1.0)
    per_second = np.unique(received // 1_000_000, return_counts=True)[1]
    return {"predictions": n,
            "latency_p50_ms": float(np.percentile(logged["latency_ms"], 50)),
            "latency_p99_ms": float(np.percentile(logged["latency_ms"], 99)),
            "throughput_per_s": n / span_s, "peak_per_s": float(per_second.max())}


def rescore_cpu(settings: Any, logged: pd.DataFrame, day_before: str,
                max_rows: int = 20_000) -> tuple[float, int]:
    """CPU-seconds the service's scoring code spends on the logged requests, re-scored in
    this process in their drains (see the module docstring); scaled up from the first
    ``max_rows`` rows' drains for a larger day. Returns (cpu_seconds, drains)."""
    from fraudkit.online import OnlineScorer, Requests

    logged = logged.sort_values(["received_at", "transaction_id"], kind="stable")
    logged = logged.reset_index(drop=True)
    groups = drains(logged)
    with tempfile.TemporaryDirectory(prefix="serving-report-") as folder:
        scorer = OnlineScorer(settings.model_copy(update={
            "online_store_url": f"sqlite:///{Path(folder) / 'store.sqlite3'}",
            "online_store_cutoff": day_before}))
        try:
            scorer.load()
            times = _us(logged["tx_datetime"])
            rows_done, cpu = 0, 0.0
            for idx in groups:
                if rows_done >= max_rows:
                    break
                part = logged.iloc[idx]
                req = Requests(part["transaction_id"].to_numpy(np.int64), times[idx],
                               part["customer_id"].to_numpy(np.int64),
                               part["terminal_id"].to_numpy(np.int64),
                               part["tx_amount"].to_numpy(np.float64))
                req = _distinct(req)
                started = time.process_time()
                scorer.score(req)
                cpu += time.process_time() - started
                rows_done += len(idx)
        finally:
            scorer.stop()
            scorer.decisions.store.close()
    return cpu * len(logged) / max(rows_done, 1), len(groups)


def _distinct(req: Any) -> Any:
    """A drain holds distinct ids (the service scores a retry in a drain of its own)."""
    _, first = np.unique(req.transaction_id, return_index=True)
    if len(first) == len(req):
        return req
    keep = np.sort(first)
    return type(req)(*(getattr(req, f)[keep] for f in (
        "transaction_id", "tx_time_us", "customer_id", "terminal_id", "tx_amount")))


def batch_staleness(online: pd.DataFrame, earlier: pd.DataFrame) -> dict[str, Any]:
    """Age (hours) of the batch prediction ``/customers/{id}/risk`` serves at each online
    request: the customer's newest batch-scored transaction of an earlier day (``earlier``:
    ``customer_id``, ``tx_datetime``). Requests of customers without one are counted."""
    if online.empty:
        return {}
    newest = earlier.groupby("customer_id")["tx_datetime"].max()
    served = online["customer_id"].map(newest)
    known = served.notna()
    # At the transaction's own time (= when it was requested, in live traffic; a replay of
    # past days keeps the days' clock this way).
    age_h = ((online.loc[known, "tx_datetime"] - served[known]).dt.total_seconds() / 3600)
    if not len(age_h):
        return {"without_batch_prediction": int((~known).sum())}
    return {"staleness_p50_h": float(np.percentile(age_h, 50)),
            "staleness_p99_h": float(np.percentile(age_h, 99)),
            "without_batch_prediction": int((~known).sum())}


def decisions_differing(online: pd.DataFrame, batch: pd.DataFrame) -> dict[str, Any]:
    """Share of online decisions whose batch decision for the same transaction differs,
    over all joined transactions and over those the same model version decided."""
    joined = online[["transaction_id", "decision", "model_version"]].merge(
        batch[["transaction_id", "decision", "model_version"]], on="transaction_id",
        suffixes=("", "_batch"))
    if joined.empty:
        return {"joined": 0}
    differ = joined["decision"] != joined["decision_batch"]
    same = joined["model_version"] == joined["model_version_batch"]
    return {"joined": len(joined), "differing": float(differ.mean()),
            "differing_same_model": float(differ[same].mean()) if same.any() else None,
            "same_model": int(same.sum())}


def batch_latency(predictions: pd.DataFrame) -> dict[str, Any]:
    """From each transaction to its batch prediction (``scored_at`` - ``tx_datetime``)."""
    if predictions.empty:
        return {}
    age_ms = (predictions["scored_at"] - predictions["tx_datetime"]).dt.total_seconds() * 1000
    return {"latency_p50_ms": float(np.percentile(age_ms, 50)),
            "latency_p99_ms": float(np.percentile(age_ms, 99))}


#: The plotly script the serving reports load from their own folder (one copy, not 4 MB in
#: each report).
PLOTLY_SCRIPT = "plotly.min.js"


def plotly_script() -> str:
    """The content of :data:`PLOTLY_SCRIPT`, to store once beside the reports."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def report_html(rows: pd.DataFrame, title: str) -> str:
    """The per-day figures of both paths as an HTML page with plotly charts; it loads
    :data:`PLOTLY_SCRIPT` from its own folder."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    charts = [("cost_per_1000", "cost per 1,000 predictions"),
              ("latency_p99_ms", "p99 latency, ms (log)"),
              ("cpu_seconds", "CPU-seconds"),
              ("staleness_p50_h", "median age of what is served, hours")]
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in charts])
    for i, (column, _) in enumerate(charts):
        for path_name in ("batch", "online"):
            part = rows[rows["path"] == path_name]
            fig.add_trace(go.Bar(x=part["day"], y=part[column], name=path_name,
                                 legendgroup=path_name, showlegend=i == 0),
                          row=i // 2 + 1, col=i % 2 + 1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(title=title, barmode="group", height=700)
    table = rows.to_html(index=False, float_format=lambda v: f"{v:,.4g}", na_rep="–")
    return (f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            + fig.to_html(full_html=False, include_plotlyjs="directory") + table
            + "</body></html>")
