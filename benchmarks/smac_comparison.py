"""
SMAC against first-order and conjugate-gradient actor-critics (the comparison of seed 004 §5-6, on a CPU budget).

Algorithms (seed 004 §5), all with ``n_steps=1000`` and one environment, ``gamma=0.99``, ``gae_lambda=0.9``
(seed 004 table A.5), MlpPolicy with SB3's default 64-64 tanh networks and standardised advantages:

``SMAC``     sb3_natgrad SMAC, defaults (``fisher="mean"``, trust region ``max_kl=0.01``); damping 0.1 on classic
             control, 1.0 on MuJoCo (seed 004 table A.5)
``SMAC-batch`` the same with ``fisher="batch"`` (full-batch empirical Fisher, kernel form)
``AC-SGD``   SB3 A2C, ``optimizer_class=torch.optim.SGD`` (lr 2.0; pilot on CartPole over {0.05, 0.5, 2.0})
``AC-Adam``  SB3 A2C, ``optimizer_class=torch.optim.Adam`` (lr 3e-3; pilot on CartPole over {1e-3, 3e-3})
``AC-CG``    sb3-contrib TRPO (conjugate gradient + line search, its defaults otherwise)

The learning rates of the paper's table are not readable in our copy (math stripped); the A2C learning rates above
are not tuned per task (a short CartPole pilot, see the report). MuJoCo tasks use ``VecNormalize`` (observations and
rewards) for every algorithm, as rl-zoo3 does for A2C/TRPO. Returns are the training episodes' undiscounted
returns (Monitor, before normalisation); "timesteps to threshold" is the first timestep at which the mean of the
last 10 training episodes reaches the threshold.

Experiments::

    # the comparison (resumable: finished runs are skipped), 2 worker processes, then tables and plots
    nice -n 10 python benchmarks/smac_comparison.py run --jobs 2
    python benchmarks/smac_comparison.py summarize

    # the "mean"-mode trap (notes §4.2): the rank-1 correction against the batch size
    python benchmarks/smac_comparison.py trap

Results go to ``benchmarks/results/smac/``: ``runs/<task>/<algo>_<seed>.csv`` (timestep, return),
``comparison.csv`` / ``comparison.json`` (the table), ``<task>.png`` (one plot per task), ``trap.csv``/``trap.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from provenance import provenance

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "smac")

# task -> (timesteps, threshold, damping of SMAC, VecNormalize)
TASKS: dict[str, tuple[int, float, float, bool]] = {
    "CartPole-v1": (100_000, 475.0, 0.1, False),
    "Acrobot-v1": (100_000, -100.0, 0.1, False),
    "Pendulum-v1": (100_000, -400.0, 0.1, False),
    "HalfCheetah-v5": (100_000, 500.0, 1.0, True),
    "Hopper-v5": (100_000, 500.0, 1.0, True),
}
ALGOS = ("SMAC", "SMAC-batch", "AC-SGD", "AC-Adam", "AC-CG")
COMMON: dict[str, Any] = dict(n_steps=1000, gamma=0.99, gae_lambda=0.9)


def make_model(algo: str, task: str, env: Any, seed: int) -> Any:
    import torch as th
    from sb3_contrib import TRPO
    from stable_baselines3 import A2C

    from sb3_natgrad.smac import SMAC

    damping = TASKS[task][2]
    if algo == "SMAC":
        return SMAC("MlpPolicy", env, damping=damping, seed=seed, **COMMON)
    if algo == "SMAC-batch":
        return SMAC("MlpPolicy", env, damping=damping, fisher="batch", seed=seed, **COMMON)
    if algo == "AC-SGD":
        kwargs = dict(optimizer_class=th.optim.SGD, optimizer_kwargs={})
        return A2C("MlpPolicy", env, learning_rate=2.0, normalize_advantage=True, policy_kwargs=kwargs, seed=seed, **COMMON)
    if algo == "AC-Adam":
        kwargs = dict(optimizer_class=th.optim.Adam, optimizer_kwargs={})
        return A2C("MlpPolicy", env, learning_rate=3e-3, normalize_advantage=True, policy_kwargs=kwargs, seed=seed, **COMMON)
    if algo == "AC-CG":
        return TRPO("MlpPolicy", env, seed=seed, **COMMON)
    raise ValueError(f"unknown algo {algo!r}")


def run_one(job: tuple[str, str, int, int | None]) -> str:
    """Train one (algo, task, seed) and write ``runs/<task>/<algo>_<seed>.csv``."""
    algo, task, seed, timesteps = job
    import torch as th

    th.set_num_threads(1)
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    steps = timesteps or TASKS[task][0]
    path = os.path.join(RESULTS, "runs", task, f"{algo}_{seed}.csv")
    if os.path.exists(path):
        return f"skip {path}"
    os.makedirs(os.path.dirname(path), exist_ok=True)

    class Episodes(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[tuple[int, float]] = []

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.rows.append((self.num_timesteps, float(info["episode"]["r"])))
            return True

    env = make_vec_env(task, n_envs=1, seed=seed)
    if TASKS[task][3]:
        env = VecNormalize(env, gamma=0.99)
    model = make_model(algo, task, env, seed)
    callback = Episodes()
    start = time.perf_counter()
    model.learn(steps, callback=callback)
    wall = time.perf_counter() - start
    with open(path + ".tmp", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestep", "return", f"wall={wall:.1f}"])
        writer.writerows(callback.rows)
    os.replace(path + ".tmp", path)
    return f"{algo} {task} seed {seed}: {len(callback.rows)} episodes, {wall:.0f} s"


def load_run(path: str) -> tuple[np.ndarray, np.ndarray, float]:
    with open(path) as handle:
        rows = list(csv.reader(handle))
    wall = float(rows[0][2].split("=")[1])
    data = np.array([[float(a), float(b)] for a, b in rows[1:]]) if len(rows) > 1 else np.zeros((0, 2))
    return data[:, 0], data[:, 1], wall


def rolling(returns: np.ndarray, window: int = 10) -> np.ndarray:
    out = np.empty_like(returns)
    for i in range(len(returns)):
        out[i] = returns[max(0, i - window + 1) : i + 1].mean()
    return out


def summarize(seeds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = []
    for task, (steps, threshold, _, _) in TASKS.items():
        if not any(os.path.exists(os.path.join(RESULTS, "runs", task, f"{a}_{s}.csv")) for a in ALGOS for s in seeds):
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        grid = np.linspace(0, steps, 51)[1:]
        for algo in ALGOS:
            curves, finals, hits, walls = [], [], [], []
            for seed in seeds:
                path = os.path.join(RESULTS, "runs", task, f"{algo}_{seed}.csv")
                if not os.path.exists(path):
                    continue
                ts, rets, wall = load_run(path)
                if len(rets) == 0:
                    continue
                smooth = rolling(rets)
                # Curve: mean of the last-10-episode return at each grid point (NaN before the first episode).
                idx = np.searchsorted(ts, grid, side="right") - 1
                curves.append(np.where(idx >= 0, smooth[np.clip(idx, 0, None)], np.nan))
                finals.append(float(rets[-10:].mean()))
                # Only full windows of 10 episodes count (one lucky first episode is not "reaching" the threshold).
                above = np.nonzero((smooth >= threshold) & (np.arange(len(smooth)) >= 9))[0]
                hits.append(float(ts[above[0]]) if len(above) else math.nan)
                walls.append(wall)
            if not curves:
                continue
            curves_arr = np.array(curves)
            mean, std = np.nanmean(curves_arr, axis=0), np.nanstd(curves_arr, axis=0)
            ax.plot(grid, mean, label=algo)
            ax.fill_between(grid, mean - std, mean + std, alpha=0.2)
            reached = [h for h in hits if not math.isnan(h)]
            table.append(
                {
                    "task": task,
                    "algo": algo,
                    "seeds": len(finals),
                    "timesteps": steps,
                    "final_return_mean": float(np.mean(finals)),
                    "final_return_std": float(np.std(finals)),
                    "threshold": threshold,
                    "seeds_reaching_threshold": len(reached),
                    "timesteps_to_threshold_mean": float(np.mean(reached)) if reached else None,
                    "wall_s_mean": float(np.mean(walls)),
                }
            )
        ax.axhline(threshold, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{task} ({len(seeds)} seeds, mean ± std of the last-10-episode return)")
        ax.set_xlabel("timesteps")
        ax.set_ylabel("return")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, f"{task}.png"), dpi=80)
        plt.close(fig)
    stamp = provenance()
    with open(os.path.join(RESULTS, "comparison.json"), "w") as handle:
        json.dump([{**row, "provenance": stamp} for row in table], handle, indent=1)
    if table:
        with open(os.path.join(RESULTS, "comparison.csv"), "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
    print("| task | algo | final return (mean ± std) | seeds ≥ threshold | timesteps to threshold | wall s |")
    print("|---|---|---|---|---|---|")
    for row in table:
        hit = row["timesteps_to_threshold_mean"]
        print(
            f"| {row['task']} | {row['algo']} | {row['final_return_mean']:.1f} ± {row['final_return_std']:.1f} | "
            f"{row['seeds_reaching_threshold']}/{row['seeds']} (≥ {row['threshold']:g}) | "
            f"{'-' if hit is None else f'{hit:,.0f}'} | {row['wall_s_mean']:.0f} |"
        )


def trap(updates: int, seed: int) -> None:
    """
    The "mean"-mode trap (notes §4.2): ``|lambda d - g| / |g|`` (how far the step is from SGD with learning rate
    ``alpha / lambda``) and ``cos(g, d)`` against the batch size, on CartPole-v1 during learning.
    """
    import torch as th

    th.set_num_threads(1)
    from stable_baselines3.common.logger import Logger

    from sb3_natgrad.smac import SMAC

    class Keep(Logger):
        def __init__(self) -> None:
            super().__init__(folder=None, output_formats=[])
            self.history: dict[str, list[float]] = {}

        def record(self, key: str, value: Any, exclude: Any = None) -> None:
            super().record(key, value, exclude)
            self.history.setdefault(key, []).append(value)

    rows = []
    variants = [("mean", None), ("mean", 1), ("batch", None)]
    for batch in (10, 100, 1000, 4000):
        for fisher, samples in variants:
            if fisher == "batch" and batch > 1000:
                continue
            model = SMAC("MlpPolicy", "CartPole-v1", n_steps=batch, fisher=fisher, fisher_samples=samples, seed=seed)
            logger = Keep()
            model.set_logger(logger)
            model.learn(batch * updates)
            corr = np.array(logger.history["train/fisher_correction"], dtype=float)
            align = np.array(logger.history["train/fisher_alignment"], dtype=float)
            name = fisher if samples is None else f"{fisher} (fisher_samples={samples})"
            row = {
                "fisher": name,
                "batch": batch,
                "updates": len(corr),
                "fisher_correction_median": float(np.nanmedian(corr)),
                "fisher_correction_max": float(np.nanmax(corr)),
                "fisher_alignment_median": float(np.nanmedian(align)),
                "1/(M*lambda)": 1.0 / (batch * model.damping),
            }
            rows.append(row)
            print(row, flush=True)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = provenance()
    with open(os.path.join(RESULTS, "trap.json"), "w") as handle:
        json.dump([{**row, "provenance": stamp} for row in rows], handle, indent=1)
    with open(os.path.join(RESULTS, "trap.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train every (task, algo, seed) not yet on disk")
    run.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    run.add_argument("--algos", nargs="+", default=list(ALGOS), choices=list(ALGOS))
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    run.add_argument("--timesteps", type=int, default=None, help="override every task's budget (smoke tests)")
    run.add_argument("--jobs", type=int, default=1)
    summary = sub.add_parser("summarize", help="tables and plots from the runs on disk")
    summary.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    trap_parser = sub.add_parser("trap", help="the mean-mode trap against the batch size")
    trap_parser.add_argument("--updates", type=int, default=20)
    trap_parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.command == "run":
        jobs = [(algo, task, seed, args.timesteps) for task in args.tasks for seed in args.seeds for algo in args.algos]
        if args.jobs <= 1:
            for job in jobs:
                print(run_one(job), flush=True)
        else:
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                for message in pool.map(run_one, jobs):
                    print(message, flush=True)
    elif args.command == "summarize":
        summarize(args.seeds)
    else:
        trap(args.updates, args.seed)


if __name__ == "__main__":
    main()
