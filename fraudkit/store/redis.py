"""The shared online store: a real ``redis-server`` (``redis://[:password@]host:port/db``).

Why Redis: every worker and replica reads and writes one store with sub-millisecond round
trips, as Feast's production online store does. Run it with ``appendonly yes`` and
``appendfsync everysec``: Redis writes each command to the OS before it replies, so a
``kill -9`` of redis-server loses no answered request, except while its once-a-second
background fsync is still running. Then Redis postpones the write (up to 2 s) but still
replies (``flushAppendOnlyFile`` in its ``aof.c``), and a ``kill -9`` loses what it
postponed; an fsync takes about 0.3 ms on a quiet disk, so the window is small but real.
A power loss can lose one to two seconds. Each worker closes both gaps while it lives: it
keeps the rows of the writes answered in its last :data:`RESEND_S` and writes again those
Redis no longer holds once a lost connection is back (:meth:`RedisStore._resend`; every
restart breaks the connection). ``appendfsync always`` closes them even when the worker dies
too, at one fsync per Redis event-loop pass (measured cost in the README).
:meth:`RedisStore.open` refuses a server whose AOF is off.

Keys (``<prefix>`` is ``fraud`` unless the URL says ``?prefix=...``):

* ``<prefix>:s``: a Redis stream of scored transactions in the order they were written, one
  field ``r = "<id> <time_us> <customer> <terminal> <amount>"`` (exact decimal text; ids
  never become Lua's doubles). Each worker tails it (a Lua script: the entries after the
  last one it saw, as one string; one round trip per feature lookup) into an in-memory
  :class:`~fraudkit.store.recent.RecentRows`, as the SQLite store tails its table: reads
  are dictionary lookups and a write is an append, not sorted-set updates per entity
  (measured: the sorted sets cost a third of the service's throughput);
* ``<prefix>:d:<day>``: hash ``transaction_id -> decision`` (a JSON array in
  :data:`~fraudkit.store.DECISION_COLUMNS` order), and ``<prefix>:w:<day>`` its write count;
* ``<prefix>:m``: hash ``transaction_id -> day``, so a retry dated on another day moves its
  decision there;
* ``<prefix>:days`` (set) and ``<prefix>:delivered`` (hash ``day -> "<writes> <rows>"``).

A write is one ``EVALSHA`` of a Lua script: atomic, one round trip per drain.

The two calls of every drain (tail, write) go over a connection of their own, command in,
reply out, without redis-py's pool, retry and reply callbacks, which doubled their cost
(in process, a drain of 5 transactions: Redis added 1.0 ms over SQLite through them, 0.55 ms
without). Everything else (upkeep, export, pruning) uses the client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pyarrow as pa
import redis
from pydantic_core import to_json

from fraudkit.features import US_PER_DAY
from fraudkit.store import (
    DECISION_COLUMNS,
    OnlineStore,
    Span,
    StoreError,
    StoreUnavailable,
    StreamRow,
    StreamRows,
    day_start_us,
    rows_to_table,
)
from fraudkit.store.recent import RecentRows

log = logging.getLogger("fraudkit.store")

_IDX = {name: i for i, name in enumerate(DECISION_COLUMNS)}
#: Stream entries read per XREAD/XRANGE call while catching up.
_CHUNK = 10_000

# One row's write, shared by the write and the resend scripts: ``old`` is the day the
# store holds the transaction_id under (false: none); a retry dated on another day moves there.
_PUT_LUA = """
local function put(p, id, day, row, rec, old)
  if old ~= day then
    if old then
      redis.call('HDEL', p .. ':d:' .. old, id)
      redis.call('INCR', p .. ':w:' .. old)
    end
    redis.call('HSET', p .. ':m', id, day)
  end
  redis.call('HSET', p .. ':d:' .. day, id, rec)
  redis.call('XADD', p .. ':s', '*', 'r', row)
end
"""

# KEYS[1] = prefix; ARGV[1] = n, the number of distinct days, then n (day, rows) pairs,
# then 4 values per row (id, day, stream row, decision).
_WRITE_LUA = _PUT_LUA + """
local p = KEYS[1]
local n = tonumber(ARGV[1])
for j = 2, 2 * n, 2 do
  redis.call('SADD', p .. ':days', ARGV[j])
  redis.call('INCRBY', p .. ':w:' .. ARGV[j], ARGV[j+1])
end
for j = 2 * n + 2, #ARGV, 4 do
  local id = ARGV[j]
  put(p, id, ARGV[j+1], ARGV[j+2], ARGV[j+3], redis.call('HGET', p .. ':m', id))
end
return 1
"""

# KEYS[1] = stream; ARGV[1] = start (exclusive "(id", or "-"), ARGV[2] = most entries.
# Returns {last id, the entries' rows joined by spaces}, or {"", ""} when there is none.
_TAIL_LUA = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local n = #entries
if n == 0 then return {'', ''} end
local rows = {}
for i = 1, n do rows[i] = entries[i][2][2] end
return {entries[n][1], table.concat(rows, ' ')}
"""

# The rows of recent writes, sent again after a lost connection (RedisStore._resend): each row
# is written only where the store does not hold that transaction_id decided as late or
# later. ARGV: 4 values per row, as the write's. Returns the rows written.
_RESEND_LUA = _PUT_LUA + """
local p = KEYS[1]
local function decided(rec)
  local r = cjson.decode(rec)
  return r[RECEIVED] + r[LATENCY] * 1000
end
local added = 0
for j = 1, #ARGV, 4 do
  local id, day, row, rec = ARGV[j], ARGV[j+1], ARGV[j+2], ARGV[j+3]
  local old = redis.call('HGET', p .. ':m', id)
  local cur = old and redis.call('HGET', p .. ':d:' .. old, id)
  if not cur or (cur ~= rec and decided(cur) < decided(rec)) then
    redis.call('SADD', p .. ':days', day)
    redis.call('INCR', p .. ':w:' .. day)
    put(p, id, day, row, rec, old)
    added = added + 1
  end
end
return added
""".replace("RECEIVED", str(_IDX["received_at"] + 1)).replace(
    "LATENCY", str(_IDX["latency_ms"] + 1))
_SHA = {lua: hashlib.sha1(lua.encode()).hexdigest()
        for lua in (_WRITE_LUA, _TAIL_LUA, _RESEND_LUA)}
#: How long a write's rows are kept to be sent again after a lost connection. Redis holds
#: an answered write back from its AOF for at most 2 s (module docstring).
RESEND_S = 5.0
#: Rows per script call when sending them again.
_RESEND_CHUNK = 2_000


def mask(url: str) -> str:
    """The URL without its password (``redis://:PASSWORD@host`` or a ``unix://`` URL's
    ``?password=``), for messages and /status."""
    parts = urlsplit(url)
    query = "&".join(f"{k}=***" if k == "password" else f"{k}={v}"
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return _join(parts.scheme, netloc, parts.path, query)


def _join(scheme: str, netloc: str, path: str, query: str) -> str:
    """``urlunsplit`` without its one surprise: it drops the ``//`` of an empty host, and
    ``unix:/path`` is not a URL redis-py accepts (``unix:///path`` is)."""
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _stream_row(row: tuple) -> str:
    return (f"{row[0]} {row[_IDX['tx_datetime']]} {row[_IDX['customer_id']]} "
            f"{row[_IDX['terminal_id']]} {float(row[_IDX['tx_amount']])!r}")


def _parse(entries: list) -> list[StreamRow]:
    rows = []
    for _, fields in entries:
        i, t, c, term, amount = fields["r"].split(" ")
        rows.append((int(i), int(t), int(c), int(term), float(amount)))
    return rows


class RedisStore(OnlineStore):
    """See the module docstring."""

    backend = "redis"

    def __init__(self, client: redis.Redis, prefix: str, location: str,
                 retention_days: int) -> None:
        self.client = client
        self.prefix = prefix
        self.location = location
        self.retention_days = retention_days
        self.recent = RecentRows(retention_days)
        self._seen: str | None = None  # the last stream entry tailed into ``recent``
        pool = client.connection_pool
        self._hot = pool.connection_class(**pool.connection_kwargs)  # see module docstring
        self._hot_lock = threading.Lock()  # the loop, and a flush from the refresh thread
        #: (when, the write's row arguments) of the writes answered in the last RESEND_S
        #: before the latest one (a few MB at 2,000 decisions a second); sent again once a
        #: lost connection is back (:meth:`_resend`).
        self._answered: deque[tuple[float, list]] = deque()
        self._lost = False  # the hot connection failed since the last call that worked

    @classmethod
    def open(cls, url: str, setting: str = "ONLINE_STORE_URL",
             retention_days: int = 39) -> RedisStore:
        """Connect, check AOF and one write; ``retention_days`` (the windows' reach) bounds
        the days this process keeps in its in-memory index of the stream."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        prefix = query.pop("prefix", ["fraud"])[0]
        clean = _join(parts.scheme, parts.netloc, parts.path,
                      "&".join(f"{k}={v[0]}" for k, v in query.items()))
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

    def _script(self, lua: str, key: str, *args) -> object:
        """``EVALSHA`` of ``lua`` on the hot connection (loading it when the server does not
        know it, as after a restart); its reply."""
        sha = _SHA[lua]
        return self._hot_call(lambda conn: self._eval(conn, lua, sha, key, args))

    def _hot_call(self, call: Callable[[redis.connection.AbstractConnection], Any]) -> Any:
        """``call(connection)`` on the hot connection, under its lock.

        A connection that fails with a connection error is opened again and the call made
        once more, at once: after a restart of redis-server the old socket is dead though
        the server is back, and without this a worker that was idle during the restart
        answered its next drain degraded. A second failure, a timeout or an error reply is
        the store being unavailable. Sending a write twice is harmless: a transaction_id
        written again replaces its row, and the feature reads count it once. The first
        call over a connection opened again sends the recent writes first (:meth:`_resend`).
        """
        with self._hot_lock:
            conn = self._hot
            for attempt in (1, 2):
                try:
                    if self._lost:
                        try:
                            self._resend(conn)
                        except redis.ResponseError as exc:  # never block the store on it
                            log.error("online store %s: writing recent decisions again "
                                      "failed: %s", self.location, exc)
                        self._lost = False
                    return call(conn)
                except redis.ConnectionError as exc:
                    conn.disconnect()  # the next try connects again
                    self._lost = True
                    if attempt == 2 or isinstance(exc, redis.BusyLoadingError):
                        raise StoreUnavailable(f"online store {self.location}: {exc}") from exc
                except (redis.TimeoutError, redis.ResponseError) as exc:
                    conn.disconnect()  # the next call connects again
                    self._lost = True
                    raise StoreUnavailable(f"online store {self.location}: {exc}") from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _eval(conn: redis.connection.AbstractConnection, lua: str, sha: str, key: str,
              args: tuple | list) -> object:
        try:
            conn.send_command("EVALSHA", sha, 1, key, *args)
            return conn.read_response()
        except redis.exceptions.NoScriptError:
            conn.send_command("SCRIPT", "LOAD", lua)
            conn.read_response()
            conn.send_command("EVALSHA", sha, 1, key, *args)
            return conn.read_response()

    def _resend(self, conn: redis.connection.AbstractConnection) -> None:
        """Send the rows of the writes answered in the last :data:`RESEND_S` before the
        connection was lost again, before anything else goes over the new connection.

        Why: with ``appendfsync everysec`` Redis answers a write that it may hold back from
        its AOF for up to 2 s (module docstring), and a power loss takes the last second or
        two; a ``kill -9`` or a crash of redis-server then loses answered decisions. Every
        restart breaks this connection, so sending them again closes that gap as long as
        this process lives. The script writes a row only where the store lacks it (or holds
        an earlier answer of the same transaction), so nothing is counted twice."""
        answered = [arg for _, rows in list(self._answered) for arg in rows]
        per_row = 4
        for first in range(0, len(answered), _RESEND_CHUNK * per_row):
            chunk = answered[first:first + _RESEND_CHUNK * per_row]
            added = int(self._eval(conn, _RESEND_LUA, _SHA[_RESEND_LUA], self.prefix, chunk))
            if added:
                self.resent_rows += added
                log.warning("online store %s had lost %d answered decision(s) (a restart of "
                            "redis-server); written again", self.location, added)

    def write(self, rows: list[tuple]) -> None:
        if not rows:
            return
        days = Counter(row[_IDX["day"]] for row in rows)
        counts: list = [len(days)]
        for day, count in days.items():
            counts += [day, count]
        values: list = []
        for row in rows:
            values += [row[0], row[_IDX["day"]], _stream_row(row), to_json(row)]
        self._script(_WRITE_LUA, self.prefix, *counts, *values)
        now = time.monotonic()
        with self._hot_lock:
            answered = self._answered
            answered.append((now, values))
            while answered[0][0] < now - RESEND_S:
                answered.popleft()

    def _tail(self) -> None:
        """Add the stream entries written since the last tail (by any worker); the first
        read takes everything still in the stream, in chunks."""
        start = "-" if self._seen is None else f"({self._seen}"
        while True:
            last, text = self._script(_TAIL_LUA, f"{self.prefix}:s", start, _CHUNK)
            if not last:
                break
            parts = text.split(" ")
            self.recent.add([(int(parts[i]), int(parts[i + 1]), int(parts[i + 2]),
                              int(parts[i + 3]), float(parts[i + 4]))
                             for i in range(0, len(parts), 5)])
            self._seen = last
            if len(parts) < 5 * _CHUNK:
                break
            start = f"({last}"
        self._seen = self._seen or "0-0"

    def stream_rows(self, customers: list[int], customer_span: Span, terminals: list[int],
                    terminal_span: Span) -> StreamRows:
        self._tail()
        return self.recent.rows_for(customers, customer_span, terminals, terminal_span)

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
            for first in range(0, len(ids), _CHUNK):
                pipe.hdel(f"{p}:m", *ids[first:first + _CHUNK])
            pipe.delete(f"{p}:d:{day}", f"{p}:w:{day}")
            pipe.srem(f"{p}:days", day)
            self._call(pipe.execute)
            removed += len(ids)
        # The stream: drop its head up to the first entry within the windows' reach.
        start = "-"
        while True:
            entries = self._call(lambda s=start: self.client.xrange(f"{p}:s", s, "+",
                                                                    count=_CHUNK))
            keep = next((e for e, r in zip(entries, _parse(entries), strict=True)
                         if r[1] > horizon), None)
            if keep is not None:
                self._call(lambda k=keep: self.client.xtrim(f"{p}:s", minid=k[0]))
                break
            if len(entries) < _CHUNK:
                if entries:  # every entry is older than the reach
                    self._call(lambda: self.client.xtrim(f"{p}:s", maxlen=0))
                break
            start = f"({entries[-1][0]}"
        return removed

    def ping(self) -> None:
        """Over the hot connection, so that the background thread's check finds a restart
        of redis-server (and sends the recent writes again) on a worker with no traffic."""

        def do(conn: redis.connection.AbstractConnection) -> object:
            conn.send_command("PING")
            return conn.read_response()

        self._hot_call(do)

    def size_bytes(self) -> int:
        def do() -> int:
            total = 0
            for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000):
                total += self.client.memory_usage(key, samples=0) or 0
            return total

        return self._call(do)

    def close(self) -> None:
        with self._hot_lock:
            self._hot.disconnect()
        self.client.close()
