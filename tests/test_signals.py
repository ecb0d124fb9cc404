"""A Dagster run in process leaves SIGTERM as the process had it (scripts.jobs.sigterm_kept).

Without that, a demo started in the background (SIGINT ignored) ignored ``kill`` after its
first job, and every process it started afterwards inherited the ignored SIGTERM."""

from __future__ import annotations

import signal

import dagster as dg

from scripts.jobs import sigterm_kept


@dg.op
def _one() -> int:
    return 1


@dg.job
def _tiny() -> None:
    _one()


def test_a_run_in_process_keeps_sigterm_even_where_sigint_is_ignored() -> None:
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a process started with `&`
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        assert _tiny.execute_in_process().success
        # What Dagster leaves behind: SIGTERM follows SIGINT, here into being ignored.
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with sigterm_kept():
            assert _tiny.execute_in_process().success
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
