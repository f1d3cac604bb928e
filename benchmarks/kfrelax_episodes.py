"""
Episodes until the 100-episode training mean return crosses a threshold: A2C vs RELAX vs KFRELAX.

The protocol of the RELAX paper (App. E, "episodes to solve": mean of the last 100 training episodes above the
threshold; CartPole 195, LunarLander 200) plus CartPole 475 and Acrobot -100. Algorithms:

* ``a2c``: Stable-Baselines3 A2C with its rl-zoo3 hyperparameters for the environment (the established baseline);
* ``relax``: :class:`~sb3_natgrad.KFRELAX` with ``cv_optimizer="adam"`` (RELAX / plain variance-trained control variate);
* ``kfrelax``: :class:`~sb3_natgrad.KFRELAX` with its K-FAC-trained control variate (the default);
* ``nocv``: ablation, KFRELAX's exact settings with ``c_phi = 0`` fixed (zero output layer, zero learning rates):
  the same actor-critic without a control variate, to separate the control variate's effect from the other settings.

RELAX, KFRELAX and nocv share the per-environment settings in ``SETTINGS`` below. Every run records, for every
threshold of its environment, the number of finished episodes (and timesteps) when the 100-episode mean first
reaches it, and its steps per second; the table gives mean +- standard error over seeds and the steps/s relative to
A2C in the same invocation. Seeds run in parallel worker processes with one torch thread each.

    nice -n 10 python benchmarks/kfrelax_episodes.py --env CartPole-v1 --algos a2c relax kfrelax --seeds 0 1 2 3 4
    nice -n 10 python benchmarks/kfrelax_episodes.py --env LunarLander-v3 --seeds 0 1 2 --budget 1500000

``--set kfrelax:cv_kl_clip=0.05`` overrides a setting (repeatable; the value is a Python literal).
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import multiprocessing as mp
import os
import pathlib
import time
from typing import Any

import numpy as np
from provenance import provenance
from sample_efficiency import ZOO_KEYS_NOT_FOR_CONSTRUCTOR, to_constructor_kwargs, zoo_hyperparams

THRESHOLDS: dict[str, tuple[float, ...]] = {
    "CartPole-v1": (195.0, 475.0),
    "Acrobot-v1": (-100.0,),
    "LunarLander-v3": (200.0,),
}
BUDGETS = {"CartPole-v1": 300_000, "Acrobot-v1": 500_000, "LunarLander-v3": 3_000_000}

# Shared settings of relax / kfrelax / nocv per environment: n_envs, VecNormalize (True, or a dict of its keyword
# arguments) and KFRELAX keyword arguments.
SETTINGS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(n_envs=8, normalize=False, kwargs=dict()),
    "Acrobot-v1": dict(n_envs=8, normalize=True, kwargs=dict()),
    "LunarLander-v3": dict(n_envs=8, normalize=False, kwargs=dict(gamma=0.995)),
}
PUBLISHED = {
    # RELAX paper (Grathwohl et al. 2018) Table 2 and its Oct-2017 draft, episodes to solve (CartPole-v0 at 195)
    ("CartPole-v1", 195.0): "paper (CartPole-v0): A2C 1152 +- 90, RELAX 472 +- 114",
    ("LunarLander-v3", 200.0): "paper draft (LunarLander-v2): A2C 11204 +- 788, RELAX 4244 +- 1549",
}


def zoo_a2c(env_id: str) -> dict[str, Any]:
    """rl-zoo3's A2C entry for the environment (the installed package's ``hyperparams/a2c.yml``), in YAML form."""
    entry = zoo_hyperparams("a2c", env_id)
    kwargs = {key: value for key, value in entry.items() if key not in ZOO_KEYS_NOT_FOR_CONSTRUCTOR}
    return dict(n_envs=int(entry.get("n_envs", 1)), normalize=entry.get("normalize", False), kwargs=kwargs)


def algo_config(algo: str, env_id: str, overrides: dict[str, Any]) -> dict[str, Any]:
    if algo == "a2c":
        config = zoo_a2c(env_id)
    else:
        setting = SETTINGS[env_id]
        config = dict(n_envs=setting["n_envs"], normalize=setting["normalize"], kwargs=dict(setting["kwargs"]))
        if algo == "relax":
            config["kwargs"]["cv_optimizer"] = "adam"
        elif algo == "nocv":
            config["kwargs"].update(cv_optimizer="adam", cv_learning_rate=0.0, cv_scalar_learning_rate=0.0)
            policy_kwargs = dict(config["kwargs"].get("policy_kwargs", {}))
            policy_kwargs["cv_output_gain"] = 0.0
            config["kwargs"]["policy_kwargs"] = policy_kwargs
    for key, value in overrides.items():
        if key in ("n_envs", "normalize"):
            config[key] = value
        else:
            config["kwargs"][key] = value
    config["kwargs"] = to_constructor_kwargs(config["kwargs"])  # rl-zoo3's preprocessing ("lin_0.01": linear decay)
    return config


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from stable_baselines3 import A2C
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_natgrad.kfrelax import KFRELAX

    torch.set_num_threads(1)
    algo, env_id, seed = job["algo"], job["env"], job["seed"]
    thresholds = THRESHOLDS[env_id]
    config = algo_config(algo, env_id, job["overrides"])
    env = make_vec_env(env_id, n_envs=config["n_envs"], seed=seed)
    if config["normalize"]:
        normalize_kwargs = config["normalize"] if isinstance(config["normalize"], dict) else {}
        env = VecNormalize(env, gamma=config["kwargs"].get("gamma", 0.99), **normalize_kwargs)

    class Episodes(BaseCallback):
        """Counts finished episodes (Monitor infos, raw returns) and notes when the 100-episode mean crosses each threshold."""

        def __init__(self) -> None:
            super().__init__()
            self.returns: collections.deque[float] = collections.deque(maxlen=100)
            self.episodes = 0
            self.hits: dict[float, tuple[int, int]] = {}

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                episode = info.get("episode")
                if episode is None:
                    continue
                self.episodes += 1
                self.returns.append(float(episode["r"]))
                if len(self.returns) == 100:
                    mean = float(np.mean(self.returns))
                    for threshold in thresholds:
                        if threshold not in self.hits and mean >= threshold:
                            self.hits[threshold] = (self.episodes, self.num_timesteps)
            return len(self.hits) < len(thresholds)

    algo_class = A2C if algo == "a2c" else KFRELAX
    model = algo_class("MlpPolicy", env, seed=seed, **config["kwargs"])
    callback = Episodes()
    start = time.perf_counter()
    model.learn(job["budget"], callback=callback)
    elapsed = time.perf_counter() - start
    return {
        "algo": job["label"],
        "env": env_id,
        "seed": seed,
        "episodes_to_threshold": {str(t): callback.hits.get(t, (None, None))[0] for t in thresholds},
        "timesteps_to_threshold": {str(t): callback.hits.get(t, (None, None))[1] for t in thresholds},
        "episodes_run": callback.episodes,
        "final_100_episode_mean": float(np.mean(callback.returns)) if callback.returns else None,
        "timesteps_run": int(model.num_timesteps),
        "seconds": round(elapsed, 1),
        "steps_per_second": round(model.num_timesteps / elapsed, 1),
        "settings": {k: repr(v) for k, v in config["kwargs"].items()}
        | {"n_envs": config["n_envs"], "normalize": config["normalize"]},
    }


def summarize(results: list[dict[str, Any]]) -> str:
    lines = [
        "| env | threshold | algo | episodes to threshold (mean +- s.e.) | per seed | timesteps (mean) | steps/s vs A2C |",
        "|---|---|---|---|---|---|---|",
    ]
    for env_id in dict.fromkeys(r["env"] for r in results):
        rows_env = [r for r in results if r["env"] == env_id]
        a2c_fps = [r["steps_per_second"] for r in rows_env if r["algo"] == "a2c"]
        for threshold in THRESHOLDS[env_id]:
            key = str(threshold)
            for label in dict.fromkeys(r["algo"] for r in rows_env):
                rows = sorted((r for r in rows_env if r["algo"] == label), key=lambda r: r["seed"])
                episodes = [r["episodes_to_threshold"][key] for r in rows]
                steps = [r["timesteps_to_threshold"][key] for r in rows]
                solved = [e for e in episodes if e is not None]
                if solved:
                    mean = np.mean(solved)
                    err = np.std(solved, ddof=1) / np.sqrt(len(solved)) if len(solved) > 1 else float("nan")
                    cell = f"{mean:.0f} +- {err:.0f}" + (
                        "" if len(solved) == len(rows) else f" ({len(solved)}/{len(rows)} solved)"
                    )
                    steps_cell = f"{np.mean([s for s in steps if s is not None]):.0f}"
                else:
                    cell, steps_cell = f"not solved (0/{len(rows)})", "-"
                fps = np.mean([r["steps_per_second"] for r in rows])
                relative = f"{fps / np.mean(a2c_fps):.2f}" if a2c_fps else "-"
                per_seed = ", ".join("-" if e is None else str(e) for e in episodes)
                lines.append(f"| {env_id} | {threshold:g} | {label} | {cell} | {per_seed} | {steps_cell} | {relative} |")
            if (env_id, threshold) in PUBLISHED:
                lines.append(f"| {env_id} | {threshold:g} | published | {PUBLISHED[(env_id, threshold)]} | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", nargs="+", default=["CartPole-v1"], choices=sorted(THRESHOLDS))
    parser.add_argument("--algos", nargs="+", default=["a2c", "relax", "kfrelax"], choices=["a2c", "relax", "kfrelax", "nocv"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=None, help="timesteps per run (default: per environment)")
    parser.add_argument("--set", action="append", default=[], help="algo:key=value override (value is a Python literal)")
    parser.add_argument("--label", default=None, help="suffix for the labels of overridden algorithms")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/kfrelax/episodes.json")
    args = parser.parse_args()

    overrides: dict[str, dict[str, Any]] = {}
    for item in args.set:
        algo, assignment = item.split(":", 1)
        key, value = assignment.split("=", 1)
        overrides.setdefault(algo, {})[key] = ast.literal_eval(value)
    jobs = []
    for env_id in args.env:
        for seed in args.seeds:
            for algo in args.algos:
                label = algo if algo not in overrides or args.label is None else f"{algo}-{args.label}"
                budget = args.budget or BUDGETS[env_id]
                jobs.append(
                    dict(algo=algo, label=label, env=env_id, seed=seed, budget=budget, overrides=overrides.get(algo, {}))
                )
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = []
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for result in pool.imap_unordered(run_one, jobs):
            print(json.dumps({k: v for k, v in result.items() if k != "settings"}), flush=True)
            results.append(result)

    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else []
    stamp = provenance()
    out.write_text(json.dumps(previous + [{**result, "provenance": stamp} for result in results], indent=1))
    print()
    print(summarize(results))


if __name__ == "__main__":
    main()
