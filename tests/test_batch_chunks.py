"""How a back-fill's days are split into Dask tasks (fraudkit.batch.chunk_days_by_rows): every
day once, in order, and a task's rows (its days and their look-back, and its own days')
bounded, so that a worker's memory follows a day's rows and not the length of the
back-fill."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fraudkit import lake
from fraudkit.batch import chunk_days, chunk_days_by_rows

DAYS = lake.day_range("2026-05-01", "2026-10-27")  # the demo's 180 days
LOOKBACK = 37


def history_rows(chunk: list[str], counts: dict[str, int]) -> int:
    days = lake.day_range(lake.shift_day(chunk[0], -LOOKBACK), chunk[-1])
    return sum(counts.get(day, 0) for day in days)


def test_the_demo_s_scale_keeps_its_45_day_tasks() -> None:
    counts = dict.fromkeys(DAYS, 9_700)  # about 1.75 M transactions over 180 days
    assert chunk_days_by_rows(DAYS, counts, 45, 4_500_000, LOOKBACK) == chunk_days(DAYS, 45)
    assert chunk_days_by_rows(DAYS, counts, 45, 4_500_000, LOOKBACK,
                              max_own_rows=1_500_000) == chunk_days(DAYS, 45)


def test_ten_times_the_rows_make_shorter_tasks_under_the_bound() -> None:
    counts = dict.fromkeys(DAYS, 97_000)  # 10x: 82 days of rows would be 8 M a task
    chunks = chunk_days_by_rows(DAYS, counts, 45, 4_500_000, LOOKBACK)
    assert [day for chunk in chunks for day in chunk] == DAYS
    assert all(history_rows(chunk, counts) <= 4_500_000 for chunk in chunks)
    # 46 days of rows a task: 9 days and their look-back; the first has no look-back
    # before the table's first day, so it takes 45 days.
    assert [len(chunk) for chunk in chunks] == [45] + [9] * 15


def test_the_first_task_of_a_back_fill_is_bounded_by_its_own_rows() -> None:
    """With no look-back before the table's first day, the row bound alone let the first
    task compute 45 days (4.4 M rows at 10x, a 4.3 GiB worker); its own rows are bounded
    too."""
    counts = dict.fromkeys(DAYS, 97_000)
    chunks = chunk_days_by_rows(DAYS, counts, 45, 4_500_000, LOOKBACK, max_own_rows=1_500_000)
    assert [day for chunk in chunks for day in chunk] == DAYS
    assert all(len(chunk) * 97_000 <= 1_500_000 for chunk in chunks)
    # 15 days while the look-back is short, then 9 days and their look-back (4.5 M rows)
    assert [len(chunk) for chunk in chunks][:4] == [15, 15, 15, 9]


def test_a_day_larger_than_the_bound_is_still_one_task() -> None:
    counts = {**dict.fromkeys(DAYS, 1_000), DAYS[10]: 5_000_000}
    chunks = chunk_days_by_rows(DAYS, counts, 45, 4_000_000, LOOKBACK)
    assert [DAYS[10]] in chunks or any(chunk[-1] == DAYS[10] for chunk in chunks)
    assert [day for chunk in chunks for day in chunk] == DAYS


@given(st.lists(st.integers(0, 200_000), min_size=1, max_size=120),
       st.integers(1, 60), st.integers(100_000, 5_000_000), st.integers(1, 3),
       st.one_of(st.none(), st.integers(50_000, 2_000_000)))
def test_every_day_once_in_order_and_each_task_bounded(
        rows: list[int], max_days: int, max_rows: int, min_chunks: int,
        max_own: int | None) -> None:
    days = DAYS[:len(rows)]
    counts = dict(zip(days, rows, strict=True))
    chunks = chunk_days_by_rows(days, counts, max_days, max_rows, LOOKBACK, min_chunks,
                                max_own_rows=max_own)
    assert [day for chunk in chunks for day in chunk] == days
    for chunk in chunks:
        assert 1 <= len(chunk) <= max_days
        assert len(chunk) == 1 or history_rows(chunk, counts) <= max_rows
        own = sum(counts[day] for day in chunk)
        assert len(chunk) == 1 or max_own is None or own <= max_own
