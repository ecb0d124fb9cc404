"""``evidently ui`` on the project's workspace, wherever it is.

    python -m scripts.evidently_ui [--workspace W] [--host H] [--port P]

The same as ``evidently ui``, with two differences: the workspace defaults to the one the
drift reports write to (``EVIDENTLY_WORKSPACE``, default ``DATA_DIR/evidently``), and a
workspace on an object store (``az://…``, ``s3://…``, ``gs://…``) is opened through
``obstore``'s fsspec with ``DELTA_STORAGE_OPTIONS`` and the environment's credentials, as
the drift assets open it (plain ``evidently ui`` would look for ``adlfs``/``s3fs``).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    from evidently.cli import app

    from resources.monitoring import MonitoringResource

    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--workspace")
    known, rest = parser.parse_known_args(args)  # --workspace X and --workspace=X alike
    resource = MonitoringResource.from_settings()
    if known.workspace:
        resource = resource.model_copy(update={"workspace": known.workspace})
    workspace = resource.workspace_dir()
    if workspace is None:
        raise SystemExit("EVIDENTLY_WORKSPACE=none: there is no workspace to show")
    args = ["--workspace", str(workspace), *rest]
    sys.argv = ["evidently", "ui", *args]
    app()


if __name__ == "__main__":
    main()
