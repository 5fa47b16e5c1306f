"""Serve optuna-dashboard on a study's storage with its artifact store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from taskgraph.exceptions import StorageError, TaskGraphError

__all__ = ["serve"]


def serve(storage: str, *, artifact_dir: str | None = None, host: str = "127.0.0.1", port: int = 8080,
          echo: Callable[[str], None] = print) -> None:
    """Run optuna-dashboard (blocking) on ``storage`` (an RDB URL, a ``.db`` file or a study folder).

    Raises:
        StorageError: the storage cannot be found or opened.
        TaskGraphError: optuna-dashboard is not installed (the ``dashboard`` extra).
    """
    try:
        import optuna_dashboard
    except ImportError:
        raise TaskGraphError("the dashboard needs optuna-dashboard: pip install 'taskgraph-mtl[dashboard]'") \
            from None
    from taskgraph.runners.storage import artifact_store, mask_url, open_storage, storage_from_arg

    url, default_art = storage_from_arg(storage)
    rdb = open_storage(url, key=None)
    art = artifact_dir or default_art
    store = None
    if art is not None:
        if not Path(art).is_dir():
            raise StorageError(f"--artifact-dir must be the study's artifact folder; nothing at {art!r}")
        store = artifact_store(art)
    studies = [s.study_name for s in rdb.get_all_studies()]
    echo(f"optuna-dashboard on {mask_url(url)} ({len(studies)} study(ies): {', '.join(studies)}); artifacts: {art}")
    echo(f"open http://{host}:{port}/dashboard  (Ctrl-C stops it)")
    optuna_dashboard.run_server(rdb, host=host, port=port, artifact_store=store)
