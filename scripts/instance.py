"""Write ``$DAGSTER_HOME/dagster.yaml``: the checkout's ``dagster.yaml`` (SQLite storage under
DAGSTER_HOME, the run queue and its pools), plus the storage block of
``deploy/dagster-postgres.yaml`` when ``DAGSTER_POSTGRES_URL`` is set.

One implementation for the Makefile (``make demo``, ``make dev``, ``make up``) and the tests
that run ``dagster-daemon`` and ``dagster-webserver``; it also creates the instance's storage
and the limits of its pools (:func:`prepare_instance`). An existing file is replaced when one of
its sources is newer or its storage is not the one asked for; the replaced file is kept as
``dagster.yaml.bak-<time>`` so that a setting of your own can be merged back.

    python -m scripts.instance            # DAGSTER_HOME from the environment
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "dagster.yaml"
POSTGRES = ROOT / "deploy" / "dagster-postgres.yaml"
POSTGRES_URL = "DAGSTER_POSTGRES_URL"


class InstanceConfigError(ValueError):
    """A setting of the Dagster instance is wrong; the message names it."""


def postgres_url_from_env(env: dict[str, str] | None = None) -> str | None:
    """``DAGSTER_POSTGRES_URL``, checked for its scheme; ``None`` when unset (SQLite)."""
    url = (env if env is not None else os.environ).get(POSTGRES_URL, "").strip()
    if not url:
        return None
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "postgres":
        raise InstanceConfigError(f"{POSTGRES_URL} starts with postgres://, which SQLAlchemy "
                                  f"does not open: write postgresql:// instead")
    if scheme not in ("postgresql", "postgresql+psycopg2"):
        raise InstanceConfigError(
            f"{POSTGRES_URL} must be a PostgreSQL URL such as "
            f"postgresql://dagster:secret@db.internal:5432/dagster, not {url.split('@')[-1]!r}; "
            f"unset it to keep Dagster's storage in SQLite under DAGSTER_HOME")
    return url


def instance_yaml(postgres: bool) -> str:
    """The instance settings: dagster.yaml, and the Postgres storage block if asked."""
    text = BASE.read_text()
    return text + ("\n" + POSTGRES.read_text() if postgres else "")


def write_instance(home: Path, postgres: bool) -> Path:
    """Write ``home/dagster.yaml`` when it is missing, older than its sources, or on the
    other storage; the path."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    text = instance_yaml(postgres)
    if target.exists():
        current = target.read_text()
        if current == text:
            return target
        on_postgres = "postgres" in (yaml.safe_load(current) or {}).get("storage", {})
        newest_source = max(BASE.stat().st_mtime, POSTGRES.stat().st_mtime)
        if on_postgres == postgres and target.stat().st_mtime >= newest_source:
            return target  # edited by hand after the last change of the sources: kept
        backup = target.with_name(f"dagster.yaml.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(target, backup)
        print(f"{target}: rewritten ({'PostgreSQL' if postgres else 'SQLite'} storage); "
              f"the previous file is {backup}")
    tmp = target.with_name("dagster.yaml.tmp")  # a process starting now reads old or new
    tmp.write_text(text)
    tmp.replace(target)
    return target


def prepare_instance(home: Path, postgres: bool) -> None:
    """Write the settings (:func:`write_instance`), create the storage (SQLite files under
    ``home`` or the PostgreSQL schema) and give every pool of the project its limit.

    Both happen here, in one process, before a daemon, a webserver or a run opens the
    instance: processes that create the storage at the same moment race in its schema
    migration (alembic: "Version table 'alembic_version' has more than one head present"),
    and Dagster gives a pool its ``default_limit`` only in the queue's first pass that meets
    one of its runs, which dequeues every run of that pass unblocked (two trainings at once).
    """
    import dagster as dg

    from assets.common import TRAINING_POOL

    write_instance(home, postgres)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        for pool in (TRAINING_POOL,):
            if pool not in storage.get_concurrency_keys():
                storage.initialize_concurrency_limit_to_default(pool)


def main() -> int:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        print("DAGSTER_HOME is not set: the Makefile sets it to .dagster_home", file=sys.stderr)
        return 2
    try:
        postgres = postgres_url_from_env() is not None
    except InstanceConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    prepare_instance(Path(home), postgres)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
