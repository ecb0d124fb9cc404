"""An in-memory index of recent stream rows, by customer and by terminal.

The SQLite store keeps its rows in append order (see :mod:`fraudkit.store.sqlite`) and each
worker tails them into one of these, so feature reads cost a dictionary lookup instead of a
random B-tree search, and a write costs an append instead of two random index inserts.

Rows live in one bucket per UTC day of their ``tx_datetime``; inside a bucket they are keyed
by ``transaction_id`` per entity, so a retried transaction replaces its earlier copy
instead of counting twice. Buckets older than ``retention_days`` before the newest row are
dropped whole, so memory stays bounded without any sweep on the request path.
"""

from __future__ import annotations

from collections.abc import Iterable

from fraudkit.features import US_PER_DAY
from fraudkit.store import Span, StreamRow, StreamRows

#: by customer, by terminal (entity -> {id: row}), and by id
_Bucket = tuple[dict[int, dict[int, StreamRow]], dict[int, dict[int, StreamRow]],
                dict[int, StreamRow]]


class RecentRows:
    """See the module docstring."""

    def __init__(self, retention_days: int) -> None:
        self.retention_days = retention_days
        self.buckets: dict[int, _Bucket] = {}  # day -> (by customer, by terminal, by id)
        self.newest_day: int | None = None

    def __len__(self) -> int:
        return sum(len(bucket[2]) for bucket in self.buckets.values())

    def add(self, rows: Iterable[StreamRow]) -> None:
        for row in rows:
            day = row[1] // US_PER_DAY
            bucket = self.buckets.get(day)
            if bucket is None:
                if self.newest_day is not None and day < self.newest_day - self.retention_days:
                    continue  # older than any window of the newest rows can see
                bucket = self.buckets[day] = ({}, {}, {})
                if self.newest_day is None or day > self.newest_day:
                    self.newest_day = day
                    horizon = day - self.retention_days
                    for old in [d for d in self.buckets if d < horizon]:
                        del self.buckets[old]
            by_customer, by_terminal, by_id = bucket
            earlier = by_id.get(row[0])
            if earlier is not None:  # a retry replaces its copy, whatever it changed
                by_customer[earlier[2]].pop(earlier[0], None)
                by_terminal[earlier[3]].pop(earlier[0], None)
            by_id[row[0]] = row
            by_customer.setdefault(row[2], {})[row[0]] = row
            by_terminal.setdefault(row[3], {})[row[0]] = row

    def rows_for(self, customers: list[int], customer_span: Span, terminals: list[int],
                 terminal_span: Span) -> StreamRows:
        """Rows of these customers within ``customer_span`` and of these terminals within
        ``terminal_span`` (``lo < time <= hi``; a row may come twice)."""
        out: list[StreamRow] = []
        for (lo, hi), keys, index in ((customer_span, customers, 0),
                                      (terminal_span, terminals, 1)):
            first, last = lo // US_PER_DAY, hi // US_PER_DAY
            for day, bucket in self.buckets.items():
                if day < first or day > last:
                    continue
                by_entity = bucket[index]
                for key in keys:
                    rows = by_entity.get(key)
                    if rows:
                        out.extend(r for r in rows.values() if lo < r[1] <= hi)
        return StreamRows.from_tuples(out)
