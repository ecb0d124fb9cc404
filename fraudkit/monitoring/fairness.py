"""Segment fairness: do the model's errors fall evenly on different kinds of transactions?

A *segment* splits the scored rows by one column: numeric columns by bin edges (an amount
band, new vs established customers by their 30-day count, night vs day by the 0/1 flag),
any other column by its values (a categorical column a user's data adds). Per segment value
on matured labels: recall, precision and false-positive rate of the model's alarms (a
``review`` or a ``decline``), the decline rate, and each as a ratio to the overall rate (the
*disparity*). ``model_performance`` reports them and warns when a segment's false-positive
rate exceeds the overall one by more than ``FAIRNESS_MAX_RATIO``; the retrain gate refuses a
challenger whose worst disparity is worse than the champion's by more than
``FAIRNESS_GATE_TOLERANCE`` on the same held-out rows.

A segment value is judged only with at least ``FAIRNESS_MIN_FALSE_POSITIVES`` false alarms,
seen or expected at the overall rate: a ratio of rates built on a handful of alarms is noise
(with 50, its spread is about 1/sqrt(50), 0.14). Smaller segment values are reported, not
judged.

The gate refuses a challenger only when its worst disparity is worse than the champion's
beyond the tolerance *and* that segment value's own false-positive rate got worse: a
challenger that lowers every segment's false alarms but the overall rate most has a larger
ratio, yet harms no one (the simulator's high amounts are such a segment).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from fraudkit.config import DEFAULT_SEGMENTS

METRICS = ("recall", "precision", "fpr", "decline_rate")
#: The ``segment_performance`` table (written by ``model_performance``): a row per day,
#: segment and value.
SEGMENT_SCHEMA = pa.schema(
    [("segment", pa.string()), ("value", pa.string()), ("rows", pa.int64()),
     ("frauds", pa.int64()), ("negatives", pa.int64()),
     *[(m, pa.float64()) for m in METRICS], *[(f"{m}_ratio", pa.float64()) for m in METRICS],
     ("model_version", pa.string()), ("day", pa.string())]
)


@dataclass(frozen=True)
class Segment:
    """One way to split rows: ``column`` cut at ``bins`` (value < bins[0] is labels[0], ...,
    value >= bins[-1] is labels[-1]), or by its values when ``bins`` is empty."""

    name: str
    column: str
    bins: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.bins and len(self.labels) not in (0, len(self.bins) + 1):
            raise ValueError(f"segment {self.name!r}: {len(self.bins)} bin edge(s) need "
                             f"{len(self.bins) + 1} labels, got {len(self.labels)}")
        if list(self.bins) != sorted(self.bins):
            raise ValueError(f"segment {self.name!r}: bin edges must increase: {self.bins}")

    def assign(self, frame: pd.DataFrame) -> pd.Series:
        """The segment value of each row, as text."""
        values = frame[self.column]
        if not self.bins:
            return values.astype(str)
        labels = self.labels or tuple(
            [f"<{self.bins[0]:g}"]
            + [f"{a:g}-{b:g}" for a, b in zip(self.bins, self.bins[1:], strict=False)]
            + [f">={self.bins[-1]:g}"])
        index = np.searchsorted(np.asarray(self.bins, dtype=np.float64),
                                values.to_numpy(dtype=np.float64), side="right")
        return pd.Series(np.asarray(labels, dtype=object)[index], index=frame.index)


def parse_segments(text: str, variable: str = "FAIRNESS_SEGMENTS") -> tuple[Segment, ...]:
    """Segments from their JSON (``{"name": {"column": ..., "bins": [...], "labels":
    [...]}}``); a bad one is a ``ValueError`` that names the variable."""
    try:
        spec = json.loads(text)
        if not isinstance(spec, dict):
            raise ValueError("expected a JSON object of segments by name")
        return tuple(Segment(name, str(s["column"]), tuple(float(b) for b in s.get("bins", [])),
                             tuple(str(x) for x in s.get("labels", [])))
                     for name, s in spec.items())
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{variable}: {exc}; e.g. {DEFAULT_SEGMENTS}") from exc


def _rates(tx_fraud: np.ndarray, decision: np.ndarray) -> dict[str, float]:
    fraud = tx_fraud.astype(bool)
    flagged = decision != "approve"
    frauds, negatives = int(fraud.sum()), int((~fraud).sum())
    alarms = int(flagged.sum())
    return {
        "rows": len(fraud), "frauds": frauds, "negatives": negatives,
        "recall": (flagged & fraud).sum() / frauds if frauds else math.nan,
        "precision": (flagged & fraud).sum() / alarms if alarms else math.nan,
        "fpr": (flagged & ~fraud).sum() / negatives if negatives else math.nan,
        "decline_rate": float((decision == "decline").mean()) if len(fraud) else math.nan,
    }


def segment_table(frame: pd.DataFrame, segments: tuple[Segment, ...]) -> pd.DataFrame:
    """Per segment value: rows, frauds, negatives, recall, precision, fpr, decline_rate and
    their ratios to the overall rates (``*_ratio``). ``frame`` has ``tx_fraud``,
    ``decision`` and every segment's column."""
    missing = sorted({s.column for s in segments} - set(frame.columns))
    if missing:
        raise ValueError(f"segment column(s) {', '.join(missing)} are not in the scored rows "
                         f"(columns: {', '.join(map(str, frame.columns))}); fix "
                         "FAIRNESS_SEGMENTS")
    overall = _rates(frame["tx_fraud"].to_numpy(), frame["decision"].to_numpy())
    rows: list[dict] = []
    for segment in segments:
        for value, part in frame.groupby(segment.assign(frame), sort=True):
            rates = _rates(part["tx_fraud"].to_numpy(), part["decision"].to_numpy())
            rows.append({"segment": segment.name, "value": str(value), **rates, **{
                f"{m}_ratio": rates[m] / overall[m] if overall[m] else math.nan
                for m in METRICS}})
    columns = ["segment", "value", "rows", "frauds", "negatives", *METRICS,
               *(f"{m}_ratio" for m in METRICS)]
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class Disparity:
    """The largest false-positive-rate ratio among the judged segment values."""

    ratio: float
    segment: str
    value: str

    def __str__(self) -> str:
        if not math.isfinite(self.ratio):
            return "none judged"
        return f"{self.ratio:.2f}x ({self.segment} = {self.value})"


def judged(table: pd.DataFrame, min_false_positives: int) -> pd.Series:
    """Which rows of a :func:`segment_table` have the evidence to be judged: at least
    ``min_false_positives`` false alarms, expected at the overall rate or seen."""
    overall_fpr = table["fpr"] / table["fpr_ratio"]
    evidence = table["negatives"] * np.maximum(overall_fpr, table["fpr"])
    return (evidence >= min_false_positives) & table["fpr_ratio"].notna()


def worst_disparity(table: pd.DataFrame, min_false_positives: int) -> Disparity:
    judged_rows = table[judged(table, min_false_positives)] if len(table) else table
    if judged_rows.empty:
        return Disparity(math.nan, "", "")
    row = judged_rows.loc[judged_rows["fpr_ratio"].idxmax()]
    return Disparity(float(row["fpr_ratio"]), str(row["segment"]), str(row["value"]))


def over_ratio(table: pd.DataFrame, max_ratio: float, min_false_positives: int
               ) -> pd.DataFrame:
    """The judged segment values whose false-positive rate exceeds the overall one by more
    than ``max_ratio``."""
    if table.empty:
        return table
    return table[judged(table, min_false_positives) & (table["fpr_ratio"] > max_ratio)]


def fairness_verdict(challenger: pd.DataFrame, champion: pd.DataFrame, tolerance: float,
                     min_false_positives: int) -> tuple[bool, str, Disparity, Disparity]:
    """Whether the challenger's worst disparity is within ``tolerance`` of the champion's
    (both measured on the same rows), and why."""
    new = worst_disparity(challenger, min_false_positives)
    old = worst_disparity(champion, min_false_positives)
    if not math.isfinite(new.ratio):
        return (True, "fairness not judged: no segment value of the challenger has enough "
                f"false alarms (FAIRNESS_MIN_FALSE_POSITIVES {min_false_positives})", new, old)
    if not math.isfinite(old.ratio):
        # The champion alarms too rarely to judge any segment: compare with its own ratio in
        # the challenger's worst segment value (1.0, parity, when it has none there).
        row = champion[(champion["segment"] == new.segment) & (champion["value"] == new.value)]
        ratio = float(row["fpr_ratio"].iat[0]) if len(row) else math.nan
        old = Disparity(ratio if math.isfinite(ratio) else 1.0, new.segment, new.value)
    if new.ratio > old.ratio + tolerance:
        fpr_new = _fpr_of(challenger, new)
        fpr_old = _fpr_of(champion, new)
        if not fpr_new > fpr_old:
            return (True, f"worst segment disparity {new} vs the champion's {old}, but its "
                    f"false-positive rate fell ({fpr_old:.2%} -> {fpr_new:.2%}): the ratio "
                    "grew because the overall rate fell more", new, old)
        return (False, f"worst segment false-positive disparity {new} against the champion's "
                f"{old}, and its false-positive rate rose ({fpr_old:.2%} -> {fpr_new:.2%}): "
                f"worse by more than FAIRNESS_GATE_TOLERANCE {tolerance:g}", new, old)
    return True, f"worst segment disparity {new} vs the champion's {old}", new, old


def _fpr_of(table: pd.DataFrame, where: Disparity) -> float:
    row = table[(table["segment"] == where.segment) & (table["value"] == where.value)]
    return float(row["fpr"].iat[0]) if len(row) else math.nan
