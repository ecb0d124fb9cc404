"""`bentoml build` packs the service code and the registry's champion; the built Bento
serves that champion even where DATA_DIR has no registry (a container with only the
tables mounted)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fraudkit.registry import ModelRegistry
from tests.conftest import ROOT, pipeline_env
from tests.test_service_support import running_service

pytestmark = pytest.mark.slow


def test_built_bento_serves_the_bundled_champion(small_pipeline: Path, tmp_path: Path) -> None:
    # A copy of the build context, so the checkout's bento/registry is left alone.
    context = tmp_path / "context"
    shutil.copytree(ROOT / "bento", context / "bento",
                    ignore=shutil.ignore_patterns("registry", "__pycache__"))
    shutil.copytree(ROOT / "fraudkit", context / "fraudkit",
                    ignore=shutil.ignore_patterns("__pycache__"))
    bin_dir = Path(sys.executable).parent
    env = {**pipeline_env(small_pipeline), "BENTOML_HOME": str(tmp_path / "bentoml")}
    bundled = subprocess.run([sys.executable, "bento/bundle.py", "bundle-champion"],
                             cwd=context, env=env, capture_output=True, text=True, timeout=120)
    assert bundled.returncode == 0, bundled.stderr[-2000:]
    champion = ModelRegistry(small_pipeline / "registry").champion().version
    assert f"bundled champion {champion}" in bundled.stdout

    built = subprocess.run([str(bin_dir / "bentoml"), "build", "-f", "bento/bentofile.yaml",
                            ".", "--output", "tag"], cwd=context, env=env,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith("fraud_service:"), built.stdout[-500:]
    bento_dir = Path(env["BENTOML_HOME"]) / "bentos" / tag.replace(":", "/")
    assert (bento_dir / "src" / "bento" / "registry" / "versions" / champion /
            "model.onnx").exists()
    assert (bento_dir / "src" / "fraudkit" / "features.py").exists()

    # Serve it against the tables only: no registry in DATA_DIR.
    data_dir = tmp_path / "data"
    shutil.copytree(small_pipeline / "tables", data_dir / "tables")
    with running_service(data_dir, {"BENTOML_HOME": env["BENTOML_HOME"]}, target=tag,
                         cwd=tmp_path) as url:
        answer = httpx.post(f"{url}/score", json={
            "transaction_id": 1, "tx_datetime": "2026-06-25T10:15:00Z", "customer_id": 42,
            "terminal_id": 7, "tx_amount": 57.3}, timeout=10).json()
    assert answer["model_version"] == champion and answer["fallback"] is False
