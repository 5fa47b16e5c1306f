"""`taskgraph dashboard` on a port in use: one line, exit 1, before it prints where to open it."""

from __future__ import annotations

import socket

import optuna
import pytest
from click.testing import CliRunner

from taskgraph.cli import cli
from taskgraph.runners.dashboard import PortInUseError, check_port
from taskgraph.runners.storage import open_storage


@pytest.fixture
def listening():
    """A port on 127.0.0.1 that another socket listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_port(listening):
    check_port("127.0.0.1", _free_port())  # free: no error
    with pytest.raises(PortInUseError, match=f"--port {listening} must be free on 127.0.0.1"):
        check_port("127.0.0.1", listening)
    with pytest.raises(PortInUseError, match="--host must be an address of this machine"):
        check_port("no-such-host.invalid", 8080)


def test_dashboard_on_a_port_in_use_is_one_line_and_exit_1(tmp_path, listening):
    db = tmp_path / "study.db"
    optuna.create_study(storage=open_storage(f"sqlite:///{db}"), study_name="s")
    (tmp_path / "artifacts").mkdir()
    r = CliRunner().invoke(cli, ["dashboard", str(db), "--port", str(listening)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert r.stdout == ""  # nothing printed before the refusal: no "open http://..."
    err = r.stderr.strip()
    assert "\n" not in err and err.startswith("error: ") and f"--port {listening} must be free" in err, err
