"""A folder of named files, on the local disk or on an object store, with the one primitive
a registry needs there: a conditional write.

Why: on one machine the model registry replaces ``champion.json`` under an ``fcntl`` lock.
An object store has no lock and no rename, but Azure Blob, S3 and GCS all do a *conditional
write*: create an object only if it is absent (``If-None-Match: *``), or replace it only if
it is still the version read (``If-Match: <etag>``). :meth:`Blobs.put` with ``expect=`` is
that compare-and-swap; a loser gets :class:`Conflict`, reads again and retries, so a
promotion stays one atomic step with any number of writers. The local folder does the same
under its lock (its stamp is the file's inode, mtime and size: ``os.replace`` changes it).

Object stores are reached through ``obstore`` (the Rust ``object_store`` crate delta-rs
uses too), so the same URIs, environment variables and options work for tables and files.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

#: ``expect`` for an unconditional write.
ANY = object()

#: Storage options that configure the HTTP client, not the store (``obstore``'s split).
_CLIENT_OPTIONS = frozenset({
    "allow_http", "allow_invalid_certificates", "connect_timeout", "default_content_type",
    "pool_idle_timeout", "pool_max_idle_per_host", "proxy_url", "proxy_ca_certificate",
    "proxy_excludes", "randomize_addresses", "read_timeout", "timeout", "user_agent"})


@dataclass(frozen=True)
class Entry:
    """A file found by :meth:`Blobs.entries`."""

    #: its full path (local) or URI (object store), what readers open
    location: str
    key: str
    mtime_ns: int
    size: int
    #: changes whenever the file is rewritten: its mtime (local) or ETag (object store)
    stamp: str


class Conflict(RuntimeError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


class Blobs(Protocol):
    """Named byte strings under one root; keys are relative POSIX paths."""

    location: str

    def get(self, key: str) -> tuple[bytes, str] | None:
        """The content and its stamp, or None when absent."""

    def stamp(self, key: str) -> str | None:
        """A value that changes whenever ``key`` is written (None when absent)."""

    def put(self, key: str, data: bytes, *, expect: Any = ANY) -> str:
        """Write ``key`` whole (readers see the old content or the new); returns its stamp.
        ``expect``: ANY, None (only if absent) or the stamp read (only if unchanged);
        raises :class:`Conflict` when that does not hold."""

    def delete(self, key: str, *, expect: Any = ANY) -> None:
        """Remove ``key`` (no error when absent); ``expect`` as for :meth:`put`."""

    def keys(self, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (a folder, ending in ``/``, or ``""``), sorted."""

    def entries(self, prefix: str = "") -> list[Entry]:
        """:meth:`keys` with each file's location, time, size and stamp."""

    def exclusive(self) -> AbstractContextManager[None]:
        """A lock for read-modify-write sequences where the store has one (local), else
        nothing: on an object store the conditional writes are the only guard."""

    def where(self, key: str) -> str:
        """``key``'s full path or URI, for messages."""


class LocalBlobs:
    """A local folder. Writes go to a temporary file that replaces the target."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self._mutex = threading.RLock()
        self._depth = 0

    def where(self, key: str) -> str:
        return str(self.root / key)

    @staticmethod
    def _stamp_of(st: os.stat_result) -> str:
        return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"

    def get(self, key: str) -> tuple[bytes, str] | None:
        try:
            with open(self.root / key, "rb") as handle:
                return handle.read(), self._stamp_of(os.fstat(handle.fileno()))
        except FileNotFoundError:
            return None

    def stamp(self, key: str) -> str | None:
        try:
            return self._stamp_of(os.stat(self.root / key))
        except FileNotFoundError:
            return None

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """``flock`` on ``.lock`` across processes; re-entrant within this object (a
        conditional :meth:`put` inside a registry operation that holds it already)."""
        with self._mutex:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / ".lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _check(self, key: str, expect: Any) -> None:
        if expect is ANY:
            return
        current = self.stamp(key)
        if current != expect:
            raise Conflict(f"{self.where(key)} changed since it was read "
                           f"({'absent' if expect is None else 'stamp ' + expect} expected, "
                           f"{'absent' if current is None else 'stamp ' + current} found)")

    def put(self, key: str, data: bytes, *, expect: Any = ANY) -> str:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            os.fchmod(fd, 0o644)  # as a file written in place (mkstemp makes it 0600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            with nullcontext() if expect is ANY else self.exclusive():
                self._check(key, expect)
                os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._stamp_of(os.stat(path))

    def delete(self, key: str, *, expect: Any = ANY) -> None:
        with nullcontext() if expect is ANY else self.exclusive():
            self._check(key, expect)
            (self.root / key).unlink(missing_ok=True)

    def keys(self, prefix: str = "", hidden: bool = False) -> list[str]:
        """Files under ``prefix``; with ``hidden``, also those whose name (or a folder's)
        starts with a dot, which the registry's own temporary files do."""
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and (hidden or not any(
                          part.startswith(".") for part in p.relative_to(base).parts)))

    def entries(self, prefix: str = "", hidden: bool = False) -> list[Entry]:
        found = []
        for key in self.keys(prefix, hidden):
            with suppress(FileNotFoundError):  # removed since it was listed
                st = os.stat(self.root / key)
                found.append(Entry(str(self.root / key), key, st.st_mtime_ns, st.st_size,
                                   str(st.st_mtime_ns)))
        return found


#: Options only delta-rs knows (its S3 locking), which ``obstore`` would refuse.
_DELTA_ONLY = ("aws_s3_locking_provider", "delta_dynamo_table_name", "dynamodb_",
               "aws_s3_allow_unsafe_rename")


def _split_options(options: dict[str, str] | None) -> tuple[dict[str, str], dict[str, str]]:
    """delta-rs style options as ``obstore``'s (store config, HTTP client options), without
    the keys only delta-rs uses."""
    config = {k.lower(): v for k, v in (options or {}).items()
              if not k.lower().startswith(_DELTA_ONLY)}
    client = {k: v for k, v in config.items() if k in _CLIENT_OPTIONS}
    return {k: v for k, v in config.items() if k not in _CLIENT_OPTIONS}, client


#: scheme -> the options its fsspec class was registered with (:func:`register_fsspec`).
_REGISTERED: dict[str, str] = {}
_REGISTERED_LOCK = threading.Lock()


def register_fsspec(uri: str, options: dict[str, str] | None = None) -> None:
    """Make ``fsspec`` (which Evidently's workspace uses) open ``uri``'s scheme through
    ``obstore`` with ``options`` (and the environment's credentials), in this process."""
    import fsspec
    from obstore.fsspec import FsspecStore

    scheme = uri.split("://", 1)[0]
    config, client = _split_options(options)
    given = json.dumps([config, client], sort_keys=True)

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("config", config or None)
        kwargs.setdefault("client_options", client or None)
        FsspecStore.__init__(self, scheme, *args, **kwargs)

    with _REGISTERED_LOCK:
        if _REGISTERED.get(scheme) == given:
            return  # the same options: keep the class (and its cached stores, clients)
        store = type(f"FraudkitStore_{scheme}", (FsspecStore,),
                     {"protocol": scheme, "__init__": init})
        fsspec.register_implementation(scheme, store, clobber=True)
        _REGISTERED[scheme] = given


class ObjectBlobs:
    """A prefix on an object store (``az://container/path``, ``s3://bucket/path``,
    ``gs://bucket/path``). Credentials come from the environment the way delta-rs reads
    them (``AZURE_STORAGE_ACCOUNT_NAME``/``_KEY``, ``AWS_*``, ``GOOGLE_*``) or from
    ``options`` (the keys of ``DELTA_STORAGE_OPTIONS``)."""

    def __init__(self, uri: str, options: dict[str, str] | None = None) -> None:
        import obstore.store

        self.location = uri.rstrip("/")
        config, client = _split_options(options)
        self.store = obstore.store.from_url(self.location, config=config or None,
                                            client_options=client or None)

    def where(self, key: str) -> str:
        return f"{self.location}/{key}"

    def get(self, key: str) -> tuple[bytes, str] | None:
        import obstore

        try:
            result = obstore.get(self.store, key)
        except FileNotFoundError:
            return None
        return bytes(result.bytes()), str(result.meta["e_tag"])

    def stamp(self, key: str) -> str | None:
        import obstore

        try:
            return str(obstore.head(self.store, key)["e_tag"])
        except FileNotFoundError:
            return None

    def exclusive(self) -> AbstractContextManager[None]:
        return nullcontext()

    def put(self, key: str, data: bytes, *, expect: Any = ANY) -> str:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        mode: Any = ("overwrite" if expect is ANY else "create" if expect is None
                     else {"e_tag": expect})
        try:
            return str(obstore.put(self.store, key, data, mode=mode)["e_tag"])
        except (AlreadyExistsError, PreconditionError) as exc:
            raise Conflict(f"{self.where(key)} changed since it was read") from exc

    def delete(self, key: str, *, expect: Any = ANY) -> None:
        """``obstore`` has no conditional delete: the stamp is checked just before, which
        leaves a window of one request (the registry deletes only ``shadow.json``)."""
        import obstore

        if expect is not ANY and self.stamp(key) != expect:
            raise Conflict(f"{self.where(key)} changed since it was read")
        with suppress(FileNotFoundError):
            obstore.delete(self.store, key)

    def keys(self, prefix: str = "") -> list[str]:
        return [entry.key for entry in self.entries(prefix)]

    def entries(self, prefix: str = "") -> list[Entry]:
        import obstore

        found = obstore.list(self.store, prefix or None).collect()
        return sorted((Entry(self.where(str(m["path"])), str(m["path"]),
                             int(m["last_modified"].timestamp() * 1e9), int(m["size"]),
                             str(m["e_tag"])) for m in found), key=lambda e: e.key)


def open_file(location: str | Path, options: dict[str, str] | None = None) -> BinaryIO:
    """``location`` opened for reading: a local file, or an object through ``obstore``'s
    fsspec (seekable, read in ranges: a Parquet footer costs a request or two, not the
    file)."""
    if not is_remote(location):
        return open(str(location).removeprefix("file://"), "rb")
    import fsspec

    register_fsspec(str(location), options)
    return fsspec.open(str(location), "rb").open()


def is_transient(exc: BaseException) -> bool:
    """An error of the store's service or the network (a 5xx after the client's retries, a
    timeout, a reset connection) that a later try may not meet; not a missing, refused or
    changed object."""
    from obstore.exceptions import GenericError

    return isinstance(exc, GenericError | ConnectionError | TimeoutError)


def is_remote(root: str | Path) -> bool:
    """True when ``root`` is an object-store URI (``scheme://...``, not ``file://``)."""
    text = str(root)
    return "://" in text and not text.startswith("file://")


def open_blobs(root: str | Path, options: dict[str, str] | None = None) -> Blobs:
    """The store at ``root``: a local folder, or an object-store URI."""
    if is_remote(root):
        return ObjectBlobs(str(root), options)
    text = str(root)
    return LocalBlobs(Path(text.removeprefix("file://")))
