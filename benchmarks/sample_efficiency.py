"""
Sample efficiency: timesteps until the 100-episode training mean return reaches a threshold.

Each algorithm runs with its rl-zoo3 hyperparameters: A2C/PPO from rl-zoo3's own ``hyperparams/*.yml`` (the
installed package), our algorithms from the YAML shipped in ``sb3_natgrad/hyperparams``. Seeds run in parallel
worker processes with one torch thread each. Results go to a JSON file and a Markdown table.

    python benchmarks/sample_efficiency.py --env CartPole-v1 --algos a2c acktr --seeds 0 1 2 --workers 2
    python benchmarks/sample_efficiency.py --env Acrobot-v1 LunarLander-v3 --algos a2c acktr --seeds 0 1 2

``--set acktr:kfac_clip=0.01`` overrides a hyperparameter (repeatable), to compare variants.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import multiprocessing as mp
import os
import pathlib
import time
from typing import Any

import numpy as np
import yaml
from provenance import provenance

from sb3_natgrad.zoo.config import ZOO_KEYS

THRESHOLDS = {
    "CartPole-v1": 475.0,
    "Acrobot-v1": -100.0,
    "LunarLander-v3": 200.0,
    "Pendulum-v1": -200.0,
    "MountainCar-v0": -110.0,
    "MountainCarContinuous-v0": 90.0,
    "LunarLanderContinuous-v3": 200.0,
}
ALGO_CLASSES = {
    "a2c": "stable_baselines3:A2C",
    "ppo": "stable_baselines3:PPO",
    "trpo": "sb3_contrib:TRPO",
    "acktr": "sb3_natgrad:ACKTR",
    "smac": "sb3_natgrad:SMAC",
    "kfrelax": "sb3_natgrad:KFRELAX",
}
#: rl-zoo3's own keys (not constructor arguments: sb3_natgrad.zoo.config.ZOO_KEYS) and the policy, passed apart
ZOO_KEYS_NOT_FOR_CONSTRUCTOR = ZOO_KEYS | {"policy"}


def load_class(algo: str) -> Any:
    module, name = ALGO_CLASSES[algo].split(":")
    return getattr(importlib.import_module(module), name)


def zoo_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    """The rl-zoo3 entry for (algo, env): rl-zoo3's files for SB3/contrib algorithms, ours for sb3_natgrad's."""
    if algo in ("acktr", "smac", "kfrelax"):
        path = pathlib.Path(importlib.import_module("sb3_natgrad").__file__).parent / "hyperparams" / f"{algo}.yml"
    else:
        path = pathlib.Path(importlib.import_module("rl_zoo3").__file__).parent / "hyperparams" / f"{algo}.yml"
    with open(path) as file:
        table = yaml.safe_load(file)
    return dict(table.get(env_id, table.get("default", {})))


def to_constructor_kwargs(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """
    The constructor's keyword arguments of a zoo entry, preprocessed as rl-zoo3's ``ExperimentManager`` does: its own
    ``_preprocess_schedules`` for the schedules, and the Python expression of a ``policy_kwargs`` string evaluated
    (as rl-zoo3 does with the trusted YAML files).
    """
    from rl_zoo3.exp_manager import ExperimentManager
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike  # noqa: F401 (rl-zoo3's a2c atari)
    from torch import nn  # noqa: F401  (used by eval of policy_kwargs strings)

    kwargs = ExperimentManager._preprocess_schedules(
        {k: v for k, v in hyperparams.items() if k not in ZOO_KEYS_NOT_FOR_CONSTRUCTOR}
    )
    if isinstance(kwargs.get("policy_kwargs"), str):
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"])
    return kwargs


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    algo, env_id, seed, budget, threshold = job["algo"], job["env"], job["seed"], job["budget"], job["threshold"]
    hyperparams = zoo_hyperparams(algo, env_id)
    hyperparams.update(job["overrides"])
    n_envs = int(hyperparams.get("n_envs", 1))
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    if hyperparams.get("normalize"):
        normalize = hyperparams["normalize"]
        normalize_kwargs = eval(normalize) if isinstance(normalize, str) else ({} if normalize is True else normalize)
        env = VecNormalize(env, gamma=hyperparams.get("gamma", 0.99), **normalize_kwargs)

    class Threshold(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.hit: int | None = None
            self.episodes: int | None = None
            self.curve: list[tuple[int, float]] = []

        def _on_rollout_end(self) -> None:
            buffer = self.model.ep_info_buffer
            if len(buffer) >= 100:
                mean = float(np.mean([info["r"] for info in buffer]))
                self.curve.append((self.num_timesteps, mean))
                if self.hit is None and mean >= threshold:
                    self.hit = self.num_timesteps
                    self.episodes = sum(len(m.get_episode_rewards()) for m in _monitors(self.training_env))

        def _on_step(self) -> bool:
            return self.hit is None or not job["stop_at_threshold"]

    model = load_class(algo)(hyperparams.get("policy", "MlpPolicy"), env, seed=seed, **to_constructor_kwargs(hyperparams))
    callback = Threshold()
    start = time.perf_counter()
    model.learn(budget, callback=callback)
    elapsed = time.perf_counter() - start
    return {
        "algo": job["label"],
        "env": env_id,
        "seed": seed,
        "timesteps_to_threshold": callback.hit,
        "episodes_to_threshold": callback.episodes,
        "final_100_episode_mean": callback.curve[-1][1] if callback.curve else None,
        "timesteps_run": int(model.num_timesteps),
        "seconds": round(elapsed, 1),
        "steps_per_second": round(model.num_timesteps / elapsed, 1),
        "hyperparams": {
            k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)) for k, v in hyperparams.items()
        },
    }


def _monitors(env: Any) -> list[Any]:
    from stable_baselines3.common.monitor import Monitor

    while hasattr(env, "venv"):
        env = env.venv
    return [e for e in getattr(env, "envs", []) if isinstance(e, Monitor)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", nargs="+", default=["CartPole-v1"])
    parser.add_argument("--algos", nargs="+", default=["a2c", "acktr"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=int, default=None, help="timesteps per run (default: the zoo entry's n_timesteps)")
    parser.add_argument("--set", action="append", default=[], help="algo:key=value override (value is a Python literal)")
    parser.add_argument("--label", default=None, help="suffix for the algo label of overridden runs")
    parser.add_argument("--keep-going", action="store_true", help="train the full budget even after the threshold")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/sample_efficiency.json")
    parser.add_argument(
        "--resume", action="store_true", help="skip the runs (label, env, seed) already in --out and tabulate all of them"
    )
    args = parser.parse_args()

    overrides: dict[str, dict[str, Any]] = {}
    for item in args.set:
        algo, assignment = item.split(":", 1)
        key, value = assignment.split("=", 1)
        overrides.setdefault(algo, {})[key] = ast.literal_eval(value)
    jobs = []
    for env_id in args.env:
        for algo in args.algos:
            budget = args.budget or int(float(zoo_hyperparams(algo, env_id).get("n_timesteps", 1e6)))
            label = algo if algo not in overrides or args.label is None else f"{algo}-{args.label}"
            for seed in args.seeds:
                jobs.append(
                    dict(
                        algo=algo,
                        label=label,
                        env=env_id,
                        seed=seed,
                        budget=budget,
                        threshold=THRESHOLDS[env_id],
                        overrides=overrides.get(algo, {}),
                        stop_at_threshold=not args.keep_going,
                    )
                )
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else []
    if args.resume:
        done = {(r["algo"], r["env"], r["seed"]) for r in previous}
        jobs = [job for job in jobs if (job["label"], job["env"], job["seed"]) not in done]
        print(f"resuming: {len(jobs)} runs left, {len(done)} in {out}", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    stamp = provenance()
    results = [r for r in previous if args.resume]
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for result in pool.imap_unordered(run_one, jobs):
            print(json.dumps({k: v for k, v in result.items() if k != "hyperparams"}), flush=True)
            results.append(result)
            # every finished run is saved at once (a replaced file, never a half-written one), so --resume can go on;
            # the file is read again first: another benchmark process may have added its runs meanwhile
            saved = json.loads(out.read_text()) if out.exists() else []
            partial = out.with_name(f"{out.name}.{os.getpid()}.partial")
            partial.write_text(json.dumps([*saved, {**result, "provenance": stamp}], indent=1))
            partial.replace(out)

    print("\n| env | algo | median timesteps to threshold | per seed | median episodes to threshold | steps/s |")
    print("|---|---|---|---|---|---|")
    for env_id in args.env:
        for label in dict.fromkeys(r["algo"] for r in results):
            rows = [r for r in results if r["env"] == env_id and r["algo"] == label]
            if not rows:
                continue
            hits = [r["timesteps_to_threshold"] for r in sorted(rows, key=lambda r: r["seed"])]
            finite = [h if h is not None else float("inf") for h in hits]
            median = float(np.median(finite))
            episodes = [r["episodes_to_threshold"] for r in rows]
            median_episodes = float(np.median([e if e is not None else float("inf") for e in episodes]))
            fps = np.mean([r["steps_per_second"] for r in rows])
            print(f"| {env_id} | {label} | {median:.0f} | {hits} | {median_episodes:.0f} | {fps:.0f} |")


if __name__ == "__main__":
    main()
