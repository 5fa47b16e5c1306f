"""Serve optuna-dashboard on a study's storage with its artifact store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from taskgraph.exceptions import StorageError, TaskGraphError

__all__ = ["PortInUseError", "check_port", "serve"]


class PortInUseError(TaskGraphError):
    """The dashboard's address cannot be listened on (another process holds the port, or no such address)."""


def check_port(host: str, port: int) -> None:
    """Raise :class:`PortInUseError` unless this process could listen on ``host:port`` now.

    Binds a probe socket the way the dashboard's server will (``SO_REUSEADDR``, so a port
    whose last connection is only in TIME_WAIT counts as free) and closes it at once.
    """
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise PortInUseError(f"--host must be an address of this machine; {host!r} does not resolve: "
                             f"{e.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(addr)
        except OSError as e:
            raise PortInUseError(_port_message(host, port, e)) from None


def _port_message(host: str, port: int, e: OSError) -> str:
    import errno

    if e.errno == errno.EADDRINUSE:
        return (f"--port {port} must be free on {host}, but another process listens there (another dashboard?); "
                f"pass a free --port")
    return f"the dashboard must be able to listen on {host}:{port}; got {e.strerror or e}"


def serve(storage: str, *, artifact_dir: str | None = None, host: str = "127.0.0.1", port: int = 8080,
          echo: Callable[[str], None] = print) -> None:
    """Run optuna-dashboard (blocking) on ``storage`` (an RDB URL, a ``.db`` file or a study folder).

    Raises:
        StorageError: the storage cannot be found or opened.
        PortInUseError: ``host:port`` cannot be listened on (checked before anything is printed).
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
    check_port(host, port)  # before "open http://...": nothing to open when the port is taken
    echo(f"optuna-dashboard on {mask_url(url)} ({len(studies)} study(ies): {', '.join(studies)}); artifacts: {art}")
    echo(f"open http://{host}:{port}/dashboard  (Ctrl-C stops it)")
    try:
        optuna_dashboard.run_server(rdb, host=host, port=port, artifact_store=store)
    except OSError as e:  # taken between the check and the server's own bind
        raise PortInUseError(_port_message(host, port, e)) from None
