"""The exhaustive ground truth as Ray tasks on a real head on loopback, equal to the local build."""

from __future__ import annotations

import subprocess
import sys

import pytest

from taskgraph.evaluation import PROBLEMS, read_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = """
import sys
from taskgraph.evaluation import PROBLEMS, exhaust
gt = exhaust(PROBLEMS.get("tiny4"), sys.argv[1], seeds=(0, 1), backend="ray")
print("best", gt.ranking("val")[0][0])
"""


def test_ray_tasks_build_the_same_table_as_a_local_pool(ray_head, tmp_path):
    env = dict(ray_head["env"], RAY_ADDRESS=ray_head["gcs"])
    path = tmp_path / "ray.jsonl"
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    from taskgraph.evaluation import exhaust

    local = tmp_path / "local.jsonl"
    exhaust(PROBLEMS.get("tiny4"), local, seeds=(0, 1), workers=1)
    by_ray = {(tuple(x["subset"]), x["seed"]): x for x in read_records(path)}
    by_pool = {(tuple(x["subset"]), x["seed"]): x for x in read_records(local)}
    assert set(by_ray) == set(by_pool) and len(by_ray) == 30
    for key, rec in by_pool.items():
        assert by_ray[key]["val"] == pytest.approx(rec["val"], abs=1e-6), key
