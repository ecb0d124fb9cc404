"""The in-process test layer: Dagster jobs run in the test's own process, on temporary
resources built from :class:`~fraudkit.config.Settings` for a test's DATA_DIR.

Why: a headless run in a subprocess (``python -m scripts.run_job``) pays a fresh interpreter
and the import of Dagster and the code location (seconds of CPU) before its first step; an
in-process run pays it once per test session. The runs are the same jobs, assets, checks
and resources as the code location's (``definitions.defs``); only where the data lives
changes. The end-to-end tests (the demo, the daemon, the served Bento) keep starting the
real processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from fraudkit.config import Settings
from scripts.jobs import RANGE_END, RANGE_START, quiet_beta_warnings


def definitions_for(data_dir: Path, extra_jobs: Sequence[Any] = (),
                    **settings: Any) -> dg.Definitions:
    """The code location's assets, checks and jobs (plus ``extra_jobs``) with resources for
    ``data_dir`` (and any other :class:`~fraudkit.config.Settings` fields given, e.g. a Dask
    scheduler)."""
    from definitions import defs
    from resources.storage import default_resources

    quiet_beta_warnings()
    return dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks,
                          jobs=[*defs.jobs, *extra_jobs],
                          resources=default_resources(Settings(data_dir=data_dir, **settings)))


@dataclass(frozen=True)
class Run:
    """A finished in-process run: Dagster's result and its log as the UI shows it."""

    result: dg.ExecuteInProcessResult
    #: Every message of the run's log, ``context.log`` lines included, one per line.
    log: str

    @property
    def success(self) -> bool:
        return self.result.success


def run_in_process(data_dir: Path, job: str, first: str | None = None,
                   last: str | None = None,
                   run_config: dict[str, Any] | None = None,
                   assets: Sequence[str] | None = None, **settings: Any) -> Run:
    """Run ``job`` over the days ``first..last`` as one run (like ``scripts.run_job``), in
    this process, on an ephemeral instance; a failed run is returned, not raised. With
    ``assets``, ``job`` is a job of just those assets (not one of the code location's)."""
    tags = {RANGE_START: first, RANGE_END: last or first} if first else {}
    extra = [dg.define_asset_job(job, selection=list(assets))] if assets else []
    job_def = definitions_for(data_dir, extra, **settings).resolve_job_def(job)
    with dg.DagsterInstance.ephemeral() as instance:
        result = job_def.execute_in_process(instance=instance, tags=tags,
                                            run_config=run_config or {}, raise_on_error=False)
        log = "\n".join(entry.user_message for entry in instance.all_logs(result.run_id))
    return Run(result, log)


def failure_messages(run: Run) -> str:
    """Every failure's and check's message, error text and metadata, for assertions."""
    parts = []
    for event in run.result.all_events:
        if event.is_failure or event.event_type_value == "ASSET_CHECK_EVALUATION":
            parts.append(event.message or "")
            data = event.event_specific_data
            error = getattr(data, "error", None)
            if error is not None:
                parts.append(error.to_string())
            metadata = getattr(data, "metadata", None) or {}
            parts += [str(getattr(v, "value", v)) for v in metadata.values()]
    return "\n".join(parts)
