"""`make demo`'s whole story at the small scale, as a user runs it: batch back-fill, the
online service, drift → sensor → retraining → gate → both serving paths on the champion,
then a day landing as hourly micro-batches.

The batch half is `conftest.small_pipeline` (``scripts.demo --small --batch-only``), built
once per test session; the test runs the other half on a copy of it with ``--skip-batch``,
the same code `make demo` runs after its batch path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fraudkit import lake
from fraudkit.config import Settings
from fraudkit.registry import ModelRegistry
from scripts.demo import DEMO_MARKER, main, prepare_data_dir, require_batch_path
from tests.conftest import ROOT, pipeline_env, private_copy
from tests.inprocess import failure_messages, run_in_process


@pytest.mark.slow
def test_demo_tells_the_whole_story(small_pipeline: Path, tmp_path: Path) -> None:
    data_dir = private_copy(small_pipeline, tmp_path)
    (data_dir / "dagster_home").mkdir()
    env = {**pipeline_env(data_dir), "FRAUD_END_DATE": "2026-07-31"}
    result = subprocess.run([sys.executable, "-m", "scripts.demo", "--small", "--skip-batch"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
    # Normal days report no drift, drifted days do, and the sensor asks for one retraining.
    assert re.search(r"2026-06-29  drift share [\d.]+  score drift [\d.]+  ok", out), out
    assert "DRIFT" in out and "RunRequest run_key=retrain-drift-2026-" in out
    assert "next tick: 0 run(s)" in out
    # The gate promoted, and both paths serve the new champion.
    registry = ModelRegistry(data_dir / "registry")
    assert registry.champion().version == "v0002", out[-3000:]
    assert "the running service answers with v0002" in out
    last = lake.read_days(str(data_dir / "tables" / "batch_predictions"),
                          ["2026-07-24"]).to_pandas()
    assert set(last["model_version"]) == {"v0002"}
    seconds = re.search(r"to the online service answering with it (\d+)s", out)
    assert seconds and int(seconds.group(1)) < 180, out[-2000:]
    # The live day's answers used exactly the batch path's numbers, and the check says so.
    live = [int(n.replace(",", "")) for n in re.findall(
        r"([\d,]+) transactions of 2026-0(?:6-30|7-01|7-02) scored", out)]
    assert len(live) == 3, out[-4000:]
    total = f"{sum(live):,}"
    assert re.search(rf"{total}/{total} online decisions used exactly the "
                     r"batch features \(100\.00%", out), out[-3000:]
    assert "decided online but never landed: 0; landed but never decided online: 0" in out
    assert "check online_consistency:consistency_at_floor passed" in out, out[-3000:]
    # A declined transaction's top reasons, online and in batch_predictions: the same.
    why = re.search(r"was declined, TreeSHAP of v\d+ in log-odds:\n +online (.+)\n +batch  (.+)",
                    out)
    assert why and why.group(1) == why.group(2), out[-3000:]
    assert re.search(r"reasons of reviews and declines equal on both paths for "
                     r"([\d,]+)/\1 decisions", out), out[-3000:]
    # The drift report of the live traffic sees the first drifted day's larger amounts (its
    # share stays under the threshold at this scale: the windows drift over the next days).
    for day in ("2026-06-30", "2026-07-01", "2026-07-02"):  # the live days
        assert re.search(rf"{day} online  drift share [\d.]+  score drift [\d.]+  "
                         r"(ok   |DRIFT)  tx_amount", out), out[-3000:]
    # Both paths measured side by side on the live day; the same model decided alike.
    assert re.search(r"batch\s+[\d,]+ predictions, [\d.]+ CPU-s", out), out[-3000:]
    assert re.search(r"online\s+[\d,]+ predictions, [\d.]+ CPU-s", out), out[-3000:]
    assert "differing from the batch decision of the same transaction: 0.00%" in out
    # The next day lands as 24 hourly files; each is scored by a micro-batch within the day,
    # every row once, and the day closes with its drift report.
    delays = re.findall(r"\d\d:00-\d\d:59 +[\d,]+ tx  landed .* delay +([\d.]+)s  \(run \d+\)",
                        out)
    assert len(delays) == 24, out[-4000:]
    kept = re.search(r"raw_transactions of 2026-07-25: ([\d,]+) rows from ([\d,]+) landed, "
                     "each once", out)
    assert kept and kept.group(1) == kept.group(2), out[-3000:]
    assert "the day ended: micro_batch re-ran 2026-07-25 over its 24 files" in out
    # Fairness on the newest matured week: the segment table and its check.
    assert "fairness on matured labels: model_performance of 2026-07-12..2026-07-18" in out
    assert "check model_performance:segment_fpr_within_ratio" in out, out[-3000:]
    assert re.search(r"time_of_day +night +[\d,]+ +[\d.]+% +[\d.]+% +[\d.]+", out), out[-3000:]
    assert "2026-07-25" in {r["day"] for r in lake.read_days(
        str(data_dir / "tables" / "drift_metrics"), ["2026-07-25"], ["day"]).to_pylist()}

    # `make rollback` puts the previous champion back; the next batch partition uses it.
    rolled = subprocess.run([sys.executable, "-m", "fraudkit.registry", "rollback"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert rolled.returncode == 0 and "champion is now v0001" in rolled.stdout, rolled.stderr
    rescored = run_in_process(data_dir, "score", "2026-07-24")
    assert rescored.success, failure_messages(rescored)[-3000:]
    last = lake.read_days(str(data_dir / "tables" / "batch_predictions"),
                          ["2026-07-24"]).to_pandas()
    assert set(last["model_version"]) == {"v0001"}

    # The folder is marked as the demo's, so the next `make demo` may replace it
    # (test_a_second_demo_starts_afresh_and_a_foreign_folder_is_refused).
    assert (data_dir / DEMO_MARKER).exists()


def test_a_second_demo_starts_afresh_and_a_foreign_folder_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """`prepare_data_dir`, the demo's first step, in process: an earlier demo's data goes
    (the Dagster home inside DATA_DIR stays, so the UI keeps every run), anything else is
    refused with what to do."""
    data_dir = tmp_path / "data"
    home = data_dir / "dagster_home"
    (home / "storage").mkdir(parents=True)
    (data_dir / "tables" / "raw_transactions").mkdir(parents=True)
    (data_dir / "registry").mkdir()
    (data_dir / "registry" / "champion.json").write_text("{}")
    (data_dir / DEMO_MARKER).write_text("")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("LANDING_DIR", raising=False)
    prepare_data_dir(Settings(data_dir=data_dir))
    assert "starting afresh" in capsys.readouterr().out
    assert sorted(p.name for p in data_dir.iterdir()) == [DEMO_MARKER, "dagster_home"]
    assert (home / "storage").is_dir()

    foreign = tmp_path / "foreign"
    (foreign / "tables").mkdir(parents=True)
    with pytest.raises(SystemExit, match="did not write"):
        prepare_data_dir(Settings(data_dir=foreign))
    assert (foreign / "tables").is_dir()  # nothing removed

    monkeypatch.setenv("LANDING_DIR", str(tmp_path / "mine"))
    with pytest.raises(SystemExit, match="unset LANDING_DIR"):
        prepare_data_dir(Settings(data_dir=tmp_path / "empty"))


def test_skip_batch_needs_a_batch_only_demo_first(tmp_path: Path) -> None:
    """``--skip-batch`` on a folder without the demo's batch path says what to run first."""
    with pytest.raises(SystemExit, match="run `python -m scripts.demo"):
        require_batch_path(Settings(data_dir=tmp_path / "data"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / DEMO_MARKER).write_text("")
    with pytest.raises(SystemExit, match="champion.json"):
        require_batch_path(Settings(data_dir=tmp_path / "data"))


def test_skip_batch_refuses_another_scale(small_pipeline: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``--skip-batch`` without ``--small`` on the small batch path: the simulated days
    would not be the table's, so it stops and says to match the scale."""
    data_dir = private_copy(small_pipeline, tmp_path)
    for name, value in {**pipeline_env(data_dir), "FRAUD_END_DATE": "2026-12-31"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match="raw_transactions ends 2026-06-29, not 2026-10-27"):
        main(["--skip-batch"])
