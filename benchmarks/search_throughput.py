"""Search throughput: the same 16-trial search, local runner vs Ray Tune with 2 concurrent trials.

(a) the local runner (Optuna alone) runs the trials one after the other, 1 CPU each;
(b) the Ray Tune runner runs them 2 at a time on a local Ray with 2 CPUs, 1 CPU each.
Both use the same study (a fixed random sampler seed, no early stopping, so every trial does
the same amount of work) in separate storages. Printed: the trial phase's wall time (first
trial start → last trial end, read from the storage), trials per hour, and the parallel
efficiency = (Ray's trials/hour ÷ local's) ÷ 2 (goal ≥ 80 %). After them, what the machine
itself gives: the same training (the all-in-one model, the trial's size) alone and as two separate
processes at once, 1 thread each (``--skip-pair`` leaves it out). Then (c) the quickstart's wall
time as the README runs it: ``python -m taskgraph run studies/quickstart.toml`` (goal ≤ 5 min).

Usage:
    python benchmarks/search_throughput.py                 # all three parts
    python benchmarks/search_throughput.py --skip-quickstart --trials 16 --epochs 10,40
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE = """
[params.grouping]
type = "grouping"
top_m = 0
references = ["all-in-one", "single-task"]
[params.lr]
type = "float"
low = 1e-3
high = 1e-2
log = true
"""


def _study(tmp: Path, name: str, trials: int, epochs: int, n_samples: int):
    from taskgraph.search import StudySpec

    (tmp / "space.toml").write_text(SPACE)
    text = f"""
name = "{name}"
[dataset]
name = "planted-clusters"
options = {{ n_tasks = 6, n_clusters = 3, n_samples = {n_samples} }}
[trunk]
hidden = [256, 128]
[search]
space = "space.toml"
sampler = "random"
[budget]
trials = {trials}
epochs = {epochs}
early_stopping = "none"
[train]
batch_size = 64
[affinity]
epochs = 1
every = 8
[resources]
cpus = 1
concurrent = 2
"""
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return StudySpec.load(path, runs_root=tmp / "runs")


def _trial_phase(spec, slots: int) -> tuple[float, int, float, float, float]:
    """Read the study back: (first start → last end in s, trials done, median seconds inside one
    trial's training loop, median per-trial overhead (ask → tell minus training loop) of the first
    trial of each slot, the same for the other trials)."""
    import optuna

    study = optuna.load_study(study_name=spec.name, storage=spec.storage.url)
    done = sorted((t for t in study.get_trials() if t.datetime_complete is not None), key=lambda t: t.datetime_start)
    start = min(t.datetime_start for t in done)
    end = max(t.datetime_complete for t in done)
    inside = [float(t.user_attrs.get("seconds", "nan")) for t in done]
    over = [(t.datetime_complete - t.datetime_start).total_seconds() - s for t, s in zip(done, inside)]
    return ((end - start).total_seconds(), len(done), statistics.median(inside), statistics.median(over[:slots]),
            statistics.median(over[slots:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--epochs", default="10,40", help="epochs per trial; a comma list runs one search per value")
    ap.add_argument("--n-samples", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=1, help="repeat (a) and (b); medians are printed")
    ap.add_argument("--skip-quickstart", action="store_true")
    ap.add_argument("--skip-pair", action="store_true", help="leave out the two-processes-at-once line")
    ap.add_argument("--only-quickstart", action="store_true", help="time only the quickstart (part c)")
    args = ap.parse_args()
    for k, v in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                 "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}.items():
        os.environ.setdefault(k, v)
    import torch

    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, allocator: default (glibc malloc); "
          f"load average at start {os.getloadavg()[0]:.2f}")
    if not args.only_quickstart:
        _throughput(args)
    if not args.skip_quickstart:
        _quickstart()


def _throughput(args) -> None:
    for epochs in (int(e) for e in str(args.epochs).split(",")):
        _throughput_one(args, epochs)


_PAIR_CHILD = """
import json, sys, time
import torch
torch.set_num_threads(1)
from taskgraph.data import planted_clusters
from taskgraph.models import MultiTaskModel, mlp
from taskgraph.training import TrainConfig, train
epochs, n_samples, go = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
data = planted_clusters(n_tasks=6, n_clusters=3, n_samples=n_samples, seed=0)
torch.manual_seed(0)
model = MultiTaskModel(mlp(data.input_shape[0], (256, 128)), data.tasks, input_shape=data.input_shape)
while time.time() < go:
    time.sleep(0.001)
t = time.perf_counter()
train(model, data.tasks, data.train.loader(64, shuffle=True, seed=0), config=TrainConfig(epochs=epochs, seed=0),
      val_loader=data.val.loader(256))
print(json.dumps(time.perf_counter() - t))
"""


def _pair(epochs: int, n_samples: int, repeats: int = 3) -> tuple[float, float]:
    """Median training seconds of one process alone and of each of two processes started together."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def together(k: int) -> list[float]:
        go = time.time() + 3  # both start training at the same moment, after their imports
        procs = [subprocess.Popen([sys.executable, "-c", _PAIR_CHILD, str(epochs), str(n_samples), str(go)],
                                  stdout=subprocess.PIPE, text=True, env=env) for _ in range(k)]
        return [float(p.communicate()[0]) for p in procs]

    alone, pair = [], []
    for _ in range(repeats):
        alone += together(1)
        pair += together(2)
    return statistics.median(alone), statistics.median(pair)


def _throughput_one(args, epochs: int) -> None:
    from taskgraph.runners.local import run_local
    from taskgraph.runners.ray_tune import init_ray, run_ray

    rows = {"local (sequential)": [], "ray tune (2 concurrent)": []}
    with tempfile.TemporaryDirectory(prefix="tgbench") as d:
        tmp = Path(d)
        os.environ.setdefault("RAY_TMPDIR", str(tmp / "ray"))
        (tmp / "ray").mkdir(exist_ok=True)
        for r in range(args.repeats):
            spec = _study(tmp, f"local{r}", args.trials, epochs, args.n_samples)
            t0 = time.perf_counter()
            run_local(spec, log=lambda s: None)
            e2e = time.perf_counter() - t0
            rows["local (sequential)"].append((*_trial_phase(spec, 1), e2e, os.getloadavg()[0]))
            spec = _study(tmp, f"ray{r}", args.trials, epochs, args.n_samples).replace(concurrent=2)
            init_ray(num_cpus=2)
            t0 = time.perf_counter()
            run_ray(spec, log=lambda s: None)
            e2e = time.perf_counter() - t0
            import ray

            ray.shutdown()
            rows["ray tune (2 concurrent)"].append((*_trial_phase(spec, 2), e2e, os.getloadavg()[0]))
    print(f"\n{args.trials}-trial search, {epochs} epochs/trial, planted-clusters 6 tasks x {args.n_samples} "
          f"samples, MLP 256-128, 1 CPU per trial; medians of {args.repeats} run(s)")
    print(f"{'runner':<26}{'trials':>7}{'trial phase s':>15}{'trials/hour':>13}{'train s/trial':>15}"
          f"{'1st overhead s':>16}{'overhead s':>12}{'end-to-end s':>14}{'load avg':>10}")
    thr = {}
    for name, vals in rows.items():
        phase = statistics.median(v[0] for v in vals)
        n = vals[0][1]
        med = [statistics.median(v[i] for v in vals) for i in range(2, 7)]
        thr[name] = n / phase * 3600
        print(f"{name:<26}{n:>7}{phase:>15.1f}{thr[name]:>13.0f}{med[0]:>15.2f}{med[1]:>16.2f}{med[2]:>12.2f}"
              f"{med[3]:>14.1f}{med[4]:>10.2f}")
    print("(train s/trial: median time inside one trial's training loop; 1st overhead: median (ask -> tell) minus "
          "training loop of each slot's first trial -- for Ray, placing the trial actor in a worker process "
          "Ray booted, which imported torch and Ray Tune while the study was prepared, and the trial's first "
          "set-up; overhead: the same for the other trials)")
    eff = thr["ray tune (2 concurrent)"] / thr["local (sequential)"] / 2
    print(f"speed-up {2 * eff:.2f}x on 2 workers -> parallel efficiency {100 * eff:.0f}% (goal >= 80%)")
    if not args.skip_pair:
        alone, pair = _pair(epochs, args.n_samples)
        print(f"the machine itself: the all-in-one training ({epochs} epochs) takes {alone:.2f} s alone and "
              f"{pair:.2f} s as each of two processes at once ({pair / alone - 1:+.0%}; medians of 3 x 1 and 3 x 2)")


def _quickstart() -> None:
    with tempfile.TemporaryDirectory(prefix="tgquick") as d:
        env = dict(os.environ, RAY_TMPDIR=str(Path(d) / "ray"), PYTHONPATH=str(ROOT))
        (Path(d) / "ray").mkdir()
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "taskgraph", "run", str(ROOT / "studies" / "quickstart.toml"),
                            "--runs-root", str(Path(d) / "runs")], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    tail = [line for line in r.stdout.splitlines() if line.startswith(("study", "best trial", "  groups"))]
    print(f"\nquickstart (taskgraph run studies/quickstart.toml, ray backend): exit {r.returncode}, "
          f"wall {wall:.0f} s ({wall / 60:.1f} min; goal <= 5 min); load average {os.getloadavg()[0]:.2f}")
    for line in tail[-3:]:
        print("  " + line)


if __name__ == "__main__":
    main()
