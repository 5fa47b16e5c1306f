"""A storage URL's password: masked wherever a URL is shown or stored, used only to connect."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from taskgraph.exceptions import StorageError
from taskgraph.runners.storage import in_memory_sqlite, mask_url, open_storage, scrub, storage_from_arg
from taskgraph.search import StudySpec

ROOT = Path(__file__).resolve().parents[3]
SPACE = str(ROOT / "search_spaces" / "default.toml")
PW = "SECRETPW"


@pytest.mark.parametrize(("url", "shown"), [
    (f"postgresql://optuna:{PW}@db:5432/studies", "postgresql://optuna:***@db:5432/studies"),
    (f"postgresql+psycopg://optuna:{PW}@db/studies?sslmode=require",
     "postgresql+psycopg://optuna:***@db/studies?sslmode=require"),
    (f"mysql+pymysql://u:{PW}%40x@h/db", "mysql+pymysql://u:***@h/db"),  # percent-encoded '@'
    (f"postgresql://db/studies?password={PW}", "postgresql://db/studies?password=***"),
    (f"weird://u:{PW}@[not a url", "weird://u:***@[not a url"),  # SQLAlchemy cannot parse it
])
def test_mask_url_hides_the_password_and_keeps_the_rest(url, shown):
    assert mask_url(url) == shown
    assert PW not in mask_url(url)
    assert PW not in scrub(f"could not connect to {url}", url)


@pytest.mark.parametrize("url", ["sqlite:////tmp/study.db", "sqlite:///runs/x.db", "postgresql://optuna@db/studies",
                                 "sqlite:///:memory:"])
def test_mask_url_leaves_a_url_without_password_unchanged(url):
    assert mask_url(url) == url


@pytest.mark.parametrize(("url", "memory"), [
    ("sqlite://", True), ("sqlite:///:memory:", True), ("sqlite+pysqlite://", True),
    ("sqlite:///file:x?mode=memory&uri=true", True), ("sqlite:///x.db", False), ("sqlite:////abs/x.db", False),
    ("postgresql://u@h/db", False),
])
def test_in_memory_sqlite(url, memory):
    assert in_memory_sqlite(url) is memory


def test_an_unreachable_storage_error_never_shows_the_password():
    url = f"postgresql://user:{PW}@127.0.0.1:1/db"
    with pytest.raises(StorageError, match=r"postgresql://user:\*\*\*@127\.0\.0\.1:1/db.* must be reachable") as e:
        open_storage(url, file="s.toml")
    assert PW not in str(e.value) and "s.toml" in str(e.value)


def test_in_memory_storage_argument_is_refused():
    with pytest.raises(StorageError, match="in-memory SQLite"):
        storage_from_arg("sqlite://")


def test_a_study_spec_shows_stores_and_pickles_no_password(tmp_path):
    url = f"postgresql://user:{PW}@127.0.0.1:1/db"
    spec = StudySpec.from_dict({"dataset": {"name": "planted-clusters", "options": {"n_tasks": 4, "n_clusters": 2}},
                                "search": {"space": SPACE}}, file="s.toml", runs_root=tmp_path, storage=url)
    assert spec.storage.url == url  # the real one, for opening the storage
    assert PW not in repr(spec)
    assert PW not in str(spec.to_dict())  # the study's stored config
    assert spec.storage.shown == "postgresql://user:***@127.0.0.1:1/db"
    public = spec.without_secrets()
    assert PW not in str(pickle.dumps(public)) and public.fingerprint() == spec.fingerprint()


def test_a_ray_job_gets_the_storage_url_in_its_environment_not_its_command_line(tmp_path):
    from taskgraph.runners.submit import STORAGE_ENV, job_command

    url = f"postgresql://user:{PW}@db/studies"
    spec = StudySpec.from_dict({"dataset": {"name": "planted-clusters", "options": {"n_tasks": 4, "n_clusters": 2}},
                                "search": {"space": SPACE}}, file="s.toml", runs_root=tmp_path, storage=url)
    entrypoint, env = job_command(spec, resume=True)
    assert PW not in entrypoint and "--storage" not in entrypoint and entrypoint.endswith("--resume")
    assert env[STORAGE_ENV] == url  # what `taskgraph run` reads as --storage


@pytest.mark.parametrize("url", ["postgresql://u:p@127.0.0.1:1/db", "postgresql://db/studies?password=p&sslmode=off",
                                 "weird://u:p@[not a url"])
def test_a_one_character_password_is_masked_only_where_it_stands_as_the_password(url):
    text = (f"psycopg.OperationalError: connection to {url} failed: password=p (user 'optuna', pg_hba.conf); "
            f"retry with postgresql://u:p@other/db")
    out = scrub(text, url)
    assert out.startswith("psycopg.OperationalError: connection to ")  # the letter p elsewhere is left alone
    assert "pg_hba.conf" in out and "'optuna'" in out
    assert mask_url(url) in out and url not in out
    assert "password=***" in out and "u:***@other" in out
    assert ":p@" not in out and "password=p" not in out


def test_an_unreachable_storage_with_a_one_character_password_keeps_the_error_readable():
    with pytest.raises(StorageError, match=r"postgresql://user:\*\*\*@127\.0\.0\.1:1/db.* must be reachable; "
                                           r"got OperationalError: .*127\.0\.0\.1") as e:
        open_storage("postgresql://user:p@127.0.0.1:1/db", file="s.toml")
    assert "***" not in str(e.value).replace("user:***@", "")
