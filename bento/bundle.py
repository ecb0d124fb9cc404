"""Packaging: copy the registry's champion into ``bento/registry`` for ``bentoml build``.

``DATA_DIR=... python bento/bundle.py bundle-champion`` (``make bento``) runs before
``bentoml build -f bento/bentofile.yaml .``, which packs ``bento/registry`` into the Bento.
A built Bento serves that champion when its DATA_DIR has no registry (a container with
only the tables mounted; see ``FraudService`` in :mod:`bento.service`).

It imports only fraudkit, not the service: packaging needs neither BentoML's service nor
its start-up checks (a reachable online store), and it runs as a plain script.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from fraudkit.config import Settings

#: The champion packed by `bentoml build` (see :func:`bundle_champion`); a Bento sets
#: FRAUD_BUNDLED_REGISTRY=1 (bentofile envs) to serve it when DATA_DIR has no registry.
BUNDLED_REGISTRY = Path(__file__).resolve().parent / "registry"


def bundle_champion(target: Path = BUNDLED_REGISTRY) -> str:
    """Copy the registry's champion (model.onnx, manifest, champion.json) into ``bento/registry``
    so `bentoml build` packs it; returns its version. Run before `bentoml build`."""
    from fraudkit.registry import ModelRegistry

    registry = ModelRegistry.of(Settings.from_env())
    champion = registry.champion()
    champion.verify()
    shutil.rmtree(target, ignore_errors=True)
    dest = target / "versions" / champion.version
    dest.mkdir(parents=True)
    for name in ("model.onnx", "manifest.json"):
        shutil.copy2(champion.path / name, dest / name)
    (target / "champion.json").write_text(json.dumps(
        {"version": champion.version, "history": [], "reason": "bundled by bentoml build"}))
    return champion.version


if __name__ == "__main__":
    if sys.argv[1:] != ["bundle-champion"]:
        raise SystemExit("usage: python bento/bundle.py bundle-champion")
    print(f"bundled champion {bundle_champion()} into {BUNDLED_REGISTRY}")
