"""Dask: a LocalCluster by default, or an existing cluster by ``scheduler_address``.

``distributed`` is imported when a step asks for a client, not with the code location: the
daemon, the code server and the steps that use no cluster then skip its second of import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

if TYPE_CHECKING:
    from distributed import Client, LocalCluster


class DaskResource(dg.ConfigurableResource):
    """Where the heavy batch work runs.

    With ``scheduler_address`` unset, the first step that asks for a client starts a
    ``LocalCluster`` of ``n_workers`` single-threaded worker processes (spawned, never
    forked: deltalake's runtime does not survive a fork), and it is closed when Dagster
    tears the resource down: after the run, as the code location's jobs use the in-process
    executor (under a multiprocess executor, after each step). Why: starting a cluster costs
    seconds of CPU (each worker imports pandas, pyarrow and deltalake), once per run rather
    than once per step of ingest, features and scoring. Used outside a Dagster run, each
    :meth:`client` block starts and closes its own cluster. Set ``scheduler_address`` (env
    ``DASK_SCHEDULER_ADDRESS``) to use a running cluster whose workers have this project
    installed.
    """

    scheduler_address: str | None = None
    n_workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "6GiB"

    _in_run: bool = PrivateAttr(default=False)
    _cluster: LocalCluster | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._in_run = True

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def _local_cluster(self) -> LocalCluster:
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=self.n_workers,
            threads_per_worker=self.threads_per_worker,
            processes=True,
            memory_limit=self.memory_limit,
            dashboard_address=":0",
        )

    @contextmanager
    def client(self) -> Iterator[Client]:
        from distributed import Client

        if self.scheduler_address:
            with Client(self.scheduler_address) as client:
                yield client
            return
        if not self._in_run:
            with self._local_cluster() as cluster, Client(cluster) as client:
                yield client
            return
        if self._cluster is None:
            self._cluster = self._local_cluster()
        with Client(self._cluster) as client:
            yield client

    def map_with_progress(
        self,
        context: dg.AssetExecutionContext,
        fn: Callable[..., dict],
        chunks: list[list[str]],
        what: str,
        client: Client | None = None,
        **kwargs: Any,
    ) -> list[dict]:
        """Run ``fn(chunk, **kwargs)`` for every chunk of days on the cluster, logging each
        finished chunk so a long back-fill shows its progress in the run's log. Pass the
        ``client`` of an open :meth:`client` block to submit more work to the same cluster."""
        if client is None:
            with self.client() as own:
                return self.map_with_progress(context, fn, chunks, what, own, **kwargs)
        results: list[dict] = []
        context.log.info(
            f"{what}: {len(chunks)} task(s) on the Dask cluster at "
            f"{client.scheduler.address} (dashboard: {client.dashboard_link or 'none'})"
        )
        from distributed import as_completed

        futures = {client.submit(fn, chunk, **kwargs, pure=False): chunk for chunk in chunks}
        for done, future in enumerate(as_completed(futures), start=1):
            chunk = futures[future]
            result = future.result()
            result["first_day"], result["last_day"] = chunk[0], chunk[-1]
            results.append(result)
            context.log.info(
                f"{what}: {done}/{len(chunks)} done ({chunk[0]}..{chunk[-1]}, "
                f"{result.get('seconds', 0):.1f}s)"
            )
        return sorted(results, key=lambda r: r["first_day"])
