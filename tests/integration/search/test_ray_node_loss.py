"""A Ray cluster of two nodes on loopback loses one mid-study: nothing is lost, the study reaches its budget."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

pytest.importorskip("ray.tune")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


#: a two-node Ray cluster on loopback (Ray's documented test cluster, ``ray.cluster_utils.Cluster``): a head and a
#: worker node, each its own raylet, object manager and ports, 1 CPU each. ``ray start`` cannot start the second
#: node here: Ray refuses a second node while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (which pins nodes to loopback),
#: and with it on, ``ray start`` turns 127.0.0.1 into the machine's outward address, where a head bound to
#: loopback is not listening. Prints the head's address, the worker node's id and its processes; stops the
#: cluster when its stdin closes.
CLUSTER = """
import json, os, sys
from ray.cluster_utils import Cluster
os.makedirs(os.path.join(sys.argv[1], "ray"), exist_ok=True)  # where the cluster writes its address
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                        "temp_dir": sys.argv[1]})
worker = cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
pids = [p.process.pid for infos in worker.all_processes.values() for p in infos]
print(json.dumps({"address": cluster.address, "worker_node": worker.node_id, "worker_pids": pids}), flush=True)
sys.stdin.read()
cluster.shutdown()
"""


def _descendants(pids: set[int]) -> set[int]:
    """``pids`` and every process below them."""
    parent = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, grew = set(pids), True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in out and pid not in out:
                out.add(pid)
                grew = True
    return out


def test_a_worker_node_killed_mid_study_fails_its_trials_with_why_and_the_study_reaches_its_budget(tmp_path,
                                                                                                   study_file,
                                                                                                   local_ray_env,
                                                                                                   trials_so_far,
                                                                                                   cmdline, untraced):
    """Head and worker node (1 CPU each, separate processes and ports, see CLUSTER); two trials at a time, one per
    node; once trials have completed on both nodes and one trains on the worker, every process of the worker node
    is SIGKILLed. The trial(s) it ran are FAIL with Ray's reason, the rest run on the head, and the
    study ends with exactly its budget of finished trials and none RUNNING."""
    env = local_ray_env  # its Ray processes (under its short temp dir) are stopped by their PIDs at the end
    t_start = time.monotonic()
    # the cluster's processes run no measured code: kept out of coverage's tracer (the driver below stays measured)
    helper = subprocess.Popen([sys.executable, "-c", CLUSTER, env["RAY_TMPDIR"]], env=untraced(env),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = helper.stdout.readline()
        if not line:
            pytest.fail("the two-node cluster did not start")
        cluster = json.loads(line)
        space = tmp_path / "lr_space.toml"
        space.write_text('[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.01\nlog = true\n')
        path = study_file("nodeloss", space=space, trials=5, epochs=30, early="none", n_samples=1000, check_seeds=0,
                          affinity_epochs=1)  # about the trials: a short prepare stage
        db = tmp_path / "runs" / "nodeloss" / "study.db"
        driver = subprocess.Popen([sys.executable, "-m", "taskgraph", "run", str(path), "--backend", "ray",
                                   "--address", cluster["address"], "--runs-root", str(tmp_path / "runs")], env=env,
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            killed_at, deadline = None, time.time() + 240
            while killed_at is None and time.time() < deadline and driver.poll() is None:
                ts = trials_so_far(db, "nodeloss") or []
                nodes = {t.user_attrs.get("ray_node") for t in ts if t.state == TrialState.COMPLETE}
                node_pids = _descendants(set(cluster["worker_pids"]))
                busy = [p for p in node_pids if cmdline(p).startswith(b"ray::ImplicitFunc.train")]
                if cluster["worker_node"] in nodes and len(nodes) == 2 and busy:
                    # trials finished on both nodes, and one trains on the worker node now: kill every process of it
                    before = {t.number: t.state for t in ts}
                    for pid in node_pids:
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGKILL)
                    killed_at = time.monotonic()
                time.sleep(0.2)
            if killed_at is None:
                pytest.fail("never saw trials complete on both nodes with one training on the worker: "
                            + (driver.stderr.read()[-3000:] if driver.poll() is not None else "timeout"))
            out, err = driver.communicate(timeout=240)
            after_kill = time.monotonic() - killed_at
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait(timeout=30)
        wall = time.monotonic() - t_start
    finally:
        with contextlib.suppress(OSError):
            helper.stdin.close()
        try:
            helper.wait(timeout=60)
        except subprocess.TimeoutExpired:
            helper.kill()

    trials = optuna.load_study(study_name="nodeloss", storage=f"sqlite:///{db}").get_trials()
    summary = [(t.number, t.state.name, t.user_attrs.get("ray_node", "")[:8], t.user_attrs.get("fail_reason"))
               for t in trials]
    print(f"node loss: {wall:.0f} s in all, the driver ended {after_kill:.0f} s after the kill with exit "
          f"{driver.returncode}; worker node {cluster['worker_node'][:8]}; trials {summary}; RUNNING at the kill: "
          f"{[n for n, s in before.items() if s == TrialState.RUNNING]}")
    assert driver.returncode == 1, (out + err)[-4000:]  # Ray reported errored trials
    assert all(t.state in FINISHED for t in trials), summary
    skipped = [t for t in trials if str(t.user_attrs.get("fail_reason", "")).startswith("skipped:")]
    counted = [t for t in trials if t not in skipped]
    assert len(counted) == 5, summary
    failed = [t for t in counted if t.state == TrialState.FAIL]
    assert failed, summary
    for t in failed:  # Ray's reason: the trial's actor died, or became unreachable with its node
        assert re.match(r"RayTrialError: The actor .*(died|unavailable)", t.user_attrs["fail_reason"]), \
            t.user_attrs["fail_reason"]
    assert sum(t.state == TrialState.COMPLETE for t in counted) >= 3, summary  # 2 before the kill, 1+ after
    assert {t.user_attrs["ray_node"] for t in counted if t.state == TrialState.COMPLETE} >= {cluster["worker_node"]}
