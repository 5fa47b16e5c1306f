"""Two processes that open a new SQLite storage and study at the same instant end up on one study."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[3]

#: a driver's first steps: open the storage, create or join the study; once imported, it waits for the go file
_DRIVER = r"""
import json, os, sys, time
from types import SimpleNamespace

import optuna
import sqlalchemy

from taskgraph.runners.storage import open_storage, open_study

url, go = sys.argv[1], sys.argv[2]
spec = SimpleNamespace(name="s", file="s.toml", storage=SimpleNamespace(url=url, shown=url),
                       search=SimpleNamespace(objective="val_loss"), directions=lambda n: ["minimize"],
                       fingerprint=lambda: "f", to_dict=lambda: {"name": "s"})
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
try:
    study, created = open_study(spec, open_storage(url), n_tasks=2, resume=False, join=True)
    print(json.dumps({"created": created, "name": study.study_name}))
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
"""


def test_drivers_started_together_create_one_study(tmp_path):
    url, go = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _DRIVER, url, str(go)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()[-2000:]
    go.touch()  # both are imported and waiting: they open the storage within a millisecond of each other
    outs = [p.communicate(timeout=120) for p in procs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [r.get("error") for r in results] == [None, None], results
    assert sorted(r["created"] for r in results) == [False, True]  # one created it, the other joined it
    assert optuna.get_all_study_names(storage=url) == ["s"]
    assert optuna.load_study(study_name="s", storage=url).user_attrs["fingerprint"] == "f"
