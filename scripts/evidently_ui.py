"""``evidently ui`` on the project's workspace, wherever it is.

    python -m scripts.evidently_ui [--workspace W] [--host H] [--port P]

The same as ``evidently ui``, with two differences: the workspace defaults to the one the
drift reports write to (``EVIDENTLY_WORKSPACE``, default ``DATA_DIR/evidently``), and a
workspace on an object store (``az://…``, ``s3://…``, ``gs://…``) is opened through
``obstore``'s fsspec with ``DELTA_STORAGE_OPTIONS`` and the environment's credentials, as
the drift assets open it (plain ``evidently ui`` would look for ``adlfs``/``s3fs``).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from evidently.cli import app

    from resources.monitoring import MonitoringResource

    args = list(sys.argv[1:] if argv is None else argv)
    if "--workspace" in args:
        at = args.index("--workspace") + 1
        resource = MonitoringResource.from_settings().model_copy(
            update={"workspace": args[at]})
    else:
        resource = MonitoringResource.from_settings()
        workspace = resource.workspace_dir()
        if workspace is None:
            raise SystemExit("EVIDENTLY_WORKSPACE=none: there is no workspace to show")
        args = ["--workspace", str(workspace), *args]
    resource.workspace_dir()  # registers the object store's fsspec, if it is one
    sys.argv = ["evidently", "ui", *args]
    app()


if __name__ == "__main__":
    main()
