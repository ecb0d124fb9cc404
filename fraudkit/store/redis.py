"""The shared online store: a real ``redis-server`` (``redis://[:password@]host:port/db``).

Why Redis: every worker and replica reads and writes one store with sub-millisecond round
trips, as Feast's production online store does. Run it with ``appendonly yes`` and
``appendfsync everysec``: Redis has written each command to the OS before it replies, so a
``kill -9`` of redis-server loses no answered request; a power loss can lose about one
second. :meth:`RedisStore.open` refuses a server whose AOF is off.

Keys (``<prefix>`` is ``fraud`` unless the URL says ``?prefix=...``):

* ``<prefix>:c:<customer>`` and ``<prefix>:t:<terminal>``: sorted sets of stream rows,
  score = ``tx_time_us``, member = ``"<id> <time_us> <customer> <terminal> <amount>"``
  (exact decimal text; ids are never turned into Lua's doubles);
* ``<prefix>:m``: hash ``transaction_id -> "<day> <member>"``, so a retried id replaces its
  earlier row;
* ``<prefix>:d:<day>``: hash ``transaction_id -> decision`` (a JSON array in
  :data:`~fraudkit.store.DECISION_COLUMNS` order), and ``<prefix>:w:<day>`` its write count;
* ``<prefix>:days`` (set) and ``<prefix>:delivered`` (hash ``day -> "<writes> <rows>"``).

A write is one ``EVALSHA`` of a Lua script: atomic, one round trip per drain.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pyarrow as pa
import redis

from fraudkit.features import US_PER_DAY
from fraudkit.store import (
    DECISION_COLUMNS,
    OnlineStore,
    StoreError,
    StoreUnavailable,
    StreamRows,
    day_start_us,
    rows_to_table,
)

_IDX = {name: i for i, name in enumerate(DECISION_COLUMNS)}
#: Fields per row in the write script's ARGV.
_ARGS_PER_ROW = 7

# KEYS[1] = prefix; ARGV[1] = horizon (rows of a touched entity older than it are dropped:
# no window of this or a later request sees them), then 7 values per row.
_WRITE_LUA = """
local p = KEYS[1]
local horizon = ARGV[1]
local j = 2
while j < #ARGV do
  local id, t, c, term, day, member, rec =
    ARGV[j], ARGV[j+1], ARGV[j+2], ARGV[j+3], ARGV[j+4], ARGV[j+5], ARGV[j+6]
  j = j + 7
  local tagged = day .. ' ' .. member
  local old = redis.call('HGET', p .. ':m', id)
  if old ~= tagged then
    if old then
      local oday = string.match(old, '^(%S+) ')
      local omember = string.sub(old, #oday + 2)
      local _, _, oc, oterm = string.match(omember, '^(%S+) (%S+) (%S+) (%S+) ')
      redis.call('ZREM', p .. ':c:' .. oc, omember)
      redis.call('ZREM', p .. ':t:' .. oterm, omember)
      if oday ~= day then
        redis.call('HDEL', p .. ':d:' .. oday, id)
        redis.call('INCR', p .. ':w:' .. oday)
      end
    end
    redis.call('HSET', p .. ':m', id, tagged)
    redis.call('ZADD', p .. ':c:' .. c, t, member)
    redis.call('ZADD', p .. ':t:' .. term, t, member)
    redis.call('ZREMRANGEBYSCORE', p .. ':c:' .. c, '-inf', '(' .. horizon)
    redis.call('ZREMRANGEBYSCORE', p .. ':t:' .. term, '-inf', '(' .. horizon)
  end
  redis.call('HSET', p .. ':d:' .. day, id, rec)
  redis.call('INCR', p .. ':w:' .. day)
  redis.call('SADD', p .. ':days', day)
end
return 1
"""


def mask(url: str) -> str:
    """The URL without its password, for messages and /status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _member(row: tuple) -> str:
    t = row[_IDX["tx_datetime"]]
    return (f"{row[0]} {t} {row[_IDX['customer_id']]} {row[_IDX['terminal_id']]} "
            f"{float(row[_IDX['tx_amount']])!r}")


class RedisStore(OnlineStore):
    """See the module docstring."""

    backend = "redis"

    def __init__(self, client: redis.Redis, prefix: str, location: str,
                 retention_days: int) -> None:
        self.client = client
        self.prefix = prefix
        self.location = location
        self.retention_us = retention_days * US_PER_DAY
        self._write = client.register_script(_WRITE_LUA)

    @classmethod
    def open(cls, url: str, setting: str = "ONLINE_STORE_URL",
             retention_days: int = 39) -> RedisStore:
        """Connect, check AOF and one write; ``retention_days`` bounds what a write keeps
        of a touched customer's or terminal's rows (the windows' reach)."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        prefix = query.pop("prefix", ["fraud"])[0]
        clean = urlunsplit((parts.scheme, parts.netloc, parts.path,
                            "&".join(f"{k}={v[0]}" for k, v in query.items()), ""))
        shown = mask(url)
        try:
            client = redis.Redis.from_url(clean, socket_timeout=1.0,
                                          socket_connect_timeout=2.0, decode_responses=True)
            client.ping()
            config = client.config_get("append*")
            aof, fsync = config.get("appendonly"), config.get("appendfsync")
            client.set(f"{prefix}:meta:opened", "1")
        except redis.AuthenticationError as exc:
            raise StoreError(f"{setting}={shown}: Redis refused the authentication ({exc}); "
                             "put the right password in the URL "
                             "(redis://:PASSWORD@host:port/0)") from exc
        except redis.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise StoreError(f"{setting}={shown}: Redis wants a password ({exc}); use "
                                 "redis://:PASSWORD@host:port/0") from exc
            raise StoreError(f"{setting}={shown}: Redis answered {exc}") from exc
        except (redis.ConnectionError, redis.TimeoutError, ValueError) as exc:
            raise StoreError(f"{setting}={shown}: cannot reach Redis ({exc}); start "
                             "redis-server or fix the host, port or database") from exc
        # A server that refuses CONFIG (some managed services) is taken at its word.
        if (aof is not None and aof != "yes") or (fsync is not None and fsync == "no"):
            raise StoreError(f"{setting}={shown}: this redis-server runs with appendonly "
                             f"{aof}, appendfsync {fsync}, so a restart or a power loss would "
                             "lose answered requests; start it with --appendonly yes "
                             "--appendfsync everysec")
        return cls(client, prefix, shown, retention_days)

    def _call(self, fn):
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            raise StoreUnavailable(f"online store {self.location}: {exc}") from exc

    def write(self, rows: list[tuple]) -> None:
        if not rows:
            return
        args: list = [0]
        newest = 0
        for row in rows:
            t = row[_IDX["tx_datetime"]]
            newest = max(newest, t)
            args += [row[0], t, row[_IDX["customer_id"]], row[_IDX["terminal_id"]],
                     row[_IDX["day"]], _member(row), json.dumps(row, separators=(",", ":"))]
        args[0] = newest - self.retention_us
        self._call(lambda: self._write(keys=[self.prefix], args=args))

    def stream_rows(self, customers: list[int], terminals: list[int], lo_us: int,
                    hi_us: int) -> StreamRows:
        def do() -> list:
            pipe = self.client.pipeline(transaction=False)
            lo = f"({lo_us}"
            for c in customers:
                pipe.zrangebyscore(f"{self.prefix}:c:{c}", lo, hi_us)
            for t in terminals:
                pipe.zrangebyscore(f"{self.prefix}:t:{t}", lo, hi_us)
            return pipe.execute()

        found = self._call(do)
        rows = []
        for members in found:
            for m in members:
                i, t, c, term, amount = m.split(" ")
                rows.append((int(i), int(t), int(c), int(term), float(amount)))
        return StreamRows.from_tuples(rows)

    def day_decisions(self, day: str) -> pa.Table:
        values = self._call(lambda: self.client.hvals(f"{self.prefix}:d:{day}"))
        return rows_to_table([tuple(json.loads(v)) for v in values])

    def day_counts(self) -> dict[str, int]:
        days = sorted(self._call(lambda: self.client.smembers(f"{self.prefix}:days")))
        pipe = self.client.pipeline(transaction=False)
        for day in days:
            pipe.hlen(f"{self.prefix}:d:{day}")
        counts = self._call(pipe.execute)
        return {d: n for d, n in zip(days, counts, strict=True) if n}

    def mark_delivered(self, day: str, rows: int) -> None:
        """Delivered as of the day's write count now: a later write (a retry after the
        export) keeps the day until it is exported again."""
        writes = self._call(lambda: self.client.get(f"{self.prefix}:w:{day}")) or "0"
        self._call(lambda: self.client.hset(f"{self.prefix}:delivered", day,
                                            f"{writes} {rows}"))

    def delivered_days(self) -> dict[str, int]:
        found = self._call(lambda: self.client.hgetall(f"{self.prefix}:delivered"))
        return {day: int(v.split()[1]) for day, v in sorted(found.items())}

    def prune(self, retention_days: int) -> int:
        """Drop delivered days older than the windows' reach, then trim every entity."""
        p = self.prefix
        days = sorted(self._call(lambda: self.client.smembers(f"{p}:days")))
        if not days:
            return 0
        horizon = day_start_us(days[-1]) + US_PER_DAY - retention_days * US_PER_DAY
        delivered = self._call(lambda: self.client.hgetall(f"{p}:delivered"))
        removed = 0
        for day in days:
            if day_start_us(day) + US_PER_DAY > horizon or day not in delivered:
                continue
            writes = self._call(lambda d=day: self.client.get(f"{p}:w:{d}")) or "0"
            if delivered[day].split()[0] != writes:
                continue  # written again since its export: keep until the next one
            ids = self._call(lambda d=day: self.client.hkeys(f"{p}:d:{d}"))
            pipe = self.client.pipeline(transaction=True)
            for start in range(0, len(ids), 10_000):
                pipe.hdel(f"{p}:m", *ids[start:start + 10_000])
            pipe.delete(f"{p}:d:{day}", f"{p}:w:{day}")
            pipe.srem(f"{p}:days", day)
            self._call(pipe.execute)
            removed += len(ids)
        for pattern in (f"{p}:c:*", f"{p}:t:*"):
            for key in self.client.scan_iter(match=pattern, count=1000):
                self.client.zremrangebyscore(key, "-inf", f"({horizon}")
        return removed

    def ping(self) -> None:
        self._call(self.client.ping)

    def size_bytes(self) -> int:
        def do() -> int:
            total = 0
            for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000):
                total += self.client.memory_usage(key, samples=0) or 0
            return total

        return self._call(do)

    def close(self) -> None:
        self.client.close()
