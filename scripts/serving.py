"""Start, stop and crash the real servers: ``bentoml serve`` of the fraud service and a
``redis-server`` for the online store. One implementation for ``replay_parity --crash-at``,
the benchmarks and the tests.

A BentoML worker runs in a session of its own, so signalling the process group of
``bentoml serve`` leaves the worker serving on the port. :meth:`BentoServer.kill` therefore
signals the whole process tree (found with psutil), children first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import psutil

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: How many fresh ports a server's first start tries. A port from :func:`free_port` is free
#: when it is picked, not when the server binds it: in between, another test's outgoing
#: connection can take it as its local port (the load tests open thousands), and the server
#: exits with "address already in use" (the likeliest cause of the one Azurite start that
#: failed in CI, 2026-11-29; CI printed only that it exited, so errors now carry the log).
PORT_TRIES = 3
T = TypeVar("T")


def log_since(path: Path, offset: int, limit: int = 3000) -> str:
    """What a server wrote to its log ``path`` after byte ``offset`` (its last ``limit``
    characters): the words an error about that server should carry."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")[-limit:]
    except FileNotFoundError:
        return ""


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def start_on_a_free_port(server: BentoServer | RedisServer | PostgresServer | AzuriteServer,
                         launch: Callable[[], T], log_path: Path) -> T:
    """Run ``launch`` (start ``server`` and wait for it); when the server exits because its
    port was taken meanwhile (its log says "address already in use", in the words of Node,
    Redis, PostgreSQL or Python), give it a fresh port and try again, :data:`PORT_TRIES`
    times in all."""
    for _ in range(PORT_TRIES - 1):
        offset = log_size(log_path)
        try:
            return launch()
        except RuntimeError:
            log = log_since(log_path, offset)
            if "EADDRINUSE" not in log and "Address already in use" not in log:
                raise
        server.port = free_port()
    return launch()


def process_tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and every process below it, children first (a BentoML worker or a
    Dagster run worker in a session of its own included)."""
    try:
        root = psutil.Process(pid)
        return [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return []


def kill_tree(procs: list[psutil.Process], sig: int = signal.SIGTERM,
              timeout: float = 20) -> None:
    """Signal ``procs`` (a :func:`process_tree`), children first, and wait until every one is
    gone; a graceful stop that hangs past ``timeout`` ends as a SIGKILL."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)


class BentoServer:
    """``bentoml serve service:FraudService`` on a localhost port, its log in a file.

    Each server gets a ``BENTOML_HOME`` of its own (beside its log, removed by :meth:`stop`)
    unless ``env`` names one: BentoML empties ``$BENTOML_HOME/prometheus_multiproc_dir``
    whenever a server starts, so a second server sharing the folder would wipe the first
    one's /metrics samples.
    """

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None,
                 target: str = "service:FraudService",
                 cwd: Path = PROJECT_ROOT / "bento") -> None:
        self.port = port or free_port()
        self.port_given = port is not None
        self.own_home = (None if "BENTOML_HOME" in env
                         else log_path.parent / f"bentoml_home_{self.port}")
        self.env = {**env, **({"BENTOML_HOME": str(self.own_home)} if self.own_home else {})}
        self.log_path = log_path
        self.target, self.cwd = target, cwd
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The service's base URL: read it after :meth:`start`, which may move a port that
        was taken meanwhile."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready: bool = True, timeout: float = 120) -> float:
        """Start and wait for ``/readyz`` (or ``/healthz``) 200; the seconds it took. The
        first start on a port of its own choosing moves to a fresh one if the port was
        taken meanwhile; a given port, or a restart, stays."""
        if self.proc is None and not self.port_given:
            return start_on_a_free_port(self, lambda: self._start(ready, timeout),
                                        self.log_path)
        return self._start(ready, timeout)

    def _start(self, ready: bool, timeout: float) -> float:
        started = time.perf_counter()
        bentoml = str(Path(sys.executable).parent / "bentoml")
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [bentoml, "serve", self.target, "--port", str(self.port)], cwd=self.cwd,
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        path = "/readyz" if ready else "/healthz"
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the service exited:\n{self.log_tail()}")
                try:
                    if httpx.get(self.url + path, timeout=2).status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"the service was not ready after {timeout:.0f}s:\n"
                                       f"{self.log_tail()}")
                time.sleep(0.2)
        except BaseException:
            # Not ready, or the caller interrupted (Ctrl-C, a SIGTERM turned into SystemExit
            # by the demo): a half-started tree must not outlive the caller, whose ``with``
            # block (and its stop) was never entered.
            self.kill(signal.SIGKILL)
            raise

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text()[-chars:]
        except OSError:
            return "(no log)"

    def tree(self) -> list[psutil.Process]:
        """``bentoml serve`` and every process below it (workers, in their own sessions)."""
        return process_tree(self.proc.pid) if self.proc is not None else []

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 20) -> None:
        """Signal the whole tree, children first, and wait until every process is gone."""
        kill_tree(self.tree(), sig, timeout)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        """A graceful stop (SIGTERM to the tree), a kill after 20 s; then the BENTOML_HOME
        made for this server goes (a :meth:`kill` keeps it, for a restart)."""
        self.kill(signal.SIGTERM)
        if self.own_home is not None:
            shutil.rmtree(self.own_home, ignore_errors=True)

    def __enter__(self) -> BentoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """A ``redis-server`` with AOF on (``appendfsync everysec``), as the README asks for;
    ``fsync="always"`` fsyncs before every reply instead (what that costs:
    ``benchmarks/online.py --with-fsync-always``).

    ``kill()`` is a SIGKILL of the server; ``start()`` again reuses its folder, so the AOF
    written before the kill is what the restarted server loads. With ``unix_socket`` it
    also listens on a Unix socket, and :attr:`url` is a ``unix://`` URL (a socket path must
    stay under 108 bytes, so it lives in a short temporary folder of its own).
    """

    def __init__(self, folder: Path, password: str | None = None,
                 fsync: str = "everysec", unix_socket: bool = False) -> None:
        self.folder = folder
        self.port = free_port()
        self.password = password
        self.fsync = fsync
        self.socket_path = (Path(tempfile.mkdtemp(prefix="redis-")) / "redis.sock"
                            if unix_socket else None)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            auth = f"&password={self.password}" if self.password else ""
            return f"unix://{self.socket_path}?db=0{auth}"
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, appendonly: bool = True) -> None:
        """Start and wait until it accepts connections. The first start moves to a fresh
        port when its port was taken meanwhile (:data:`PORT_TRIES`); a restart keeps the
        port, as clients already hold :attr:`url`."""
        if self.proc is None:
            start_on_a_free_port(self, lambda: self._start(appendonly),
                                 self.folder / "redis.log")
        else:
            self._start(appendonly)

    def _start(self, appendonly: bool) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed: `make test` installs it "
                               "(apt-get install -y redis-server)")
        offset = log_size(self.folder / "redis.log")
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--appendonly", "yes" if appendonly else "no", "--appendfsync", self.fsync,
                "--save", "", "--daemonize", "no", "--logfile", str(self.folder / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        if self.socket_path is not None:
            args += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                # A reply to PING (PONG, or an error such as NOAUTH or LOADING) proves that
                # this server answers on the port, not another process that took it.
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64)[:1] in (b"+", b"-"):
                        return
                    raise OSError("no Redis reply")
            except OSError as exc:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited (code {self.proc.returncode}); its log "
                        f"{self.folder / 'redis.log'} says:\n"
                        f"{log_since(self.folder / 'redis.log', offset)}") from exc
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start within 15 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.socket_path is not None:
            shutil.rmtree(self.socket_path.parent, ignore_errors=True)


def postgres_bindir() -> Path:
    """The newest server binaries of Debian's ``postgresql`` package (or on PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL's server is not installed: `make test` installs it "
                           "(apt-get install -y postgresql)")
    return Path(initdb).parent


class PostgresServer:
    """A throwaway PostgreSQL server for Dagster's instance: ``initdb`` into a folder of its
    own, password authentication (scram-sha-256), one database, 127.0.0.1 on a free port.

    PostgreSQL refuses to run as root; as root (sessions and CI) the server runs as the
    ``postgres`` user that Debian's package creates, so its folder is made under the system's
    temporary directory (a pytest folder is not readable by another user) and removed by
    :meth:`stop`. :meth:`kill` is a SIGKILL of the server; :meth:`start` again reuses the
    folder, as after a crash.
    """

    def __init__(self, database: str = "dagster", user: str = "dagster",
                 password: str = "fraudkit-test") -> None:
        import tempfile

        self.database, self.user, self.password = database, user, password
        self.port = free_port()
        self.bindir = postgres_bindir()
        self.folder = Path(tempfile.mkdtemp(prefix="fraudkit-postgres-"))
        self.data = self.folder / "data"
        self.as_user = "postgres" if os.geteuid() == 0 else None
        self.proc: subprocess.Popen | None = None
        self.database_made = False

    @property
    def url(self) -> str:
        return (f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/"
                f"{self.database}")

    @property
    def log_path(self) -> Path:
        return self.folder / "postgres.log"

    def _initdb(self) -> None:
        if self.as_user:
            shutil.chown(self.folder, self.as_user, self.as_user)
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_user:
            shutil.chown(pwfile, self.as_user, self.as_user)
        done = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
             "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8",
             "--no-instructions"],
            user=self.as_user, capture_output=True, text=True, cwd=self.folder)
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

    def start(self, timeout: float = 30) -> None:
        """Start (``initdb`` and the database the first time) and wait until it accepts
        connections; on any failure the server is stopped, its folder removed, and the
        error carries PostgreSQL's own words."""
        try:
            if self.proc is None:  # a port taken meanwhile moves the first start
                start_on_a_free_port(self, lambda: self._start(timeout), self.log_path)
            else:
                self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        if not self.data.exists():
            self._initdb()
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", str(self.folder)],
                user=self.as_user, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder)
        env = {**os.environ, "PGPASSWORD": self.password}
        deadline = time.monotonic() + timeout
        while subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p",
                              str(self.port), "-U", self.user], env=env).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start:\n"
                                   f"{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        if not self.database_made:
            made = subprocess.run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p",
                                   str(self.port), "-U", self.user, self.database],
                                  env=env, capture_output=True, text=True)
            if made.returncode != 0:
                raise RuntimeError(f"createdb {self.database} failed: {made.stderr.strip()}")
            self.database_made = True

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, remove: bool = True) -> None:
        """A fast shutdown (SIGINT: roll back open transactions, stop), then the folder goes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Azurite's well-known development account (public, documented by Microsoft for the
#: emulator only; it opens nothing but a local Azurite).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")


class AzuriteServer:
    """Azurite's Blob service (``azurite-blob``, npm ``azurite@3.37.0``; ``make test``
    installs it) on a free localhost port, its data in ``folder``.

    Why Azurite: Azure Blob Storage is an object store delta-rs commits to safely with
    several writers and no lock service (a commit is a create-if-absent of the log entry,
    which Blob Storage does atomically), and Azurite answers those conditional requests as
    Azure does. 3.35 (npm's default for Node.js 20) ignores List Blobs' start marker and
    breaks a table from its third commit; 3.37.0 does not.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    @property
    def storage_options(self) -> dict[str, str]:
        """delta-rs storage options (``DELTA_STORAGE_OPTIONS``) for ``az://`` URIs here."""
        return {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY,
                "azure_storage_endpoint": self.endpoint, "allow_http": "true"}

    def start(self) -> None:
        """Start and wait until it answers; a port taken meanwhile means a fresh port
        (:data:`PORT_TRIES`), any other exit an error with Azurite's own words."""
        start_on_a_free_port(self, self._start, self.folder / "azurite.log")

    def _start(self) -> None:
        exe = shutil.which("azurite-blob")
        if exe is None:
            raise RuntimeError("azurite-blob is not installed: `make test` installs it "
                               "(npm install -g azurite@3.37.0)")
        self.folder.mkdir(parents=True, exist_ok=True)
        offset = log_size(self.folder / "azurite.log")
        with open(self.folder / "azurite.log", "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "--location", str(self.folder), "--blobHost", "127.0.0.1",
                 "--blobPort", str(self.port), "--skipApiVersionCheck", "--disableTelemetry",
                 "--silent"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"azurite-blob exited (code {self.proc.returncode}); its log "
                    f"{self.folder / 'azurite.log'} says:\n"
                    f"{log_since(self.folder / 'azurite.log', offset)}")
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{self.endpoint}?comp=list", timeout=1)
                return
            time.sleep(0.1)
        raise RuntimeError("azurite-blob did not answer within 30 s")

    def filesystem(self):
        """pyarrow's Azure file system on this server (lists and creates containers)."""
        from pyarrow import fs

        authority = f"127.0.0.1:{self.port}"
        return fs.AzureFileSystem(AZURITE_ACCOUNT, account_key=AZURITE_KEY,
                                  blob_storage_authority=authority,
                                  dfs_storage_authority=authority,
                                  blob_storage_scheme="http", dfs_storage_scheme="http")

    def create_container(self, name: str) -> None:
        self.filesystem().create_dir(name)

    def stop(self) -> None:
        if self.proc is not None:
            kill_tree(process_tree(self.proc.pid), signal.SIGTERM, 10)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
