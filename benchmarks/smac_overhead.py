"""
Throughput of SMAC against A2C with the same networks and batch, measured in the same process.

For each environment, A2C (``n_steps=1000``, one environment, SB3's default 64-64 MlpPolicy) and SMAC in each
``fisher`` mode learn the same number of timesteps; runs are interleaved (A2C, SMAC-mean, SMAC-batch, ... A2C, ...)
and repeated, so a load change on the shared machine hits every variant alike. The ratio is
``steps/s(SMAC) / steps/s(A2C)`` of the median run time. Two SMAC critic settings are measured:

* ``defaults``: SMAC's own critic training (``n_critic_updates=10`` epochs of minibatches of 250, Adam);
* ``critic=A2C``: one full-batch critic step per rollout (``n_critic_updates=1, batch_size=None``), the same amount
  of critic work as A2C's single update, so the ratio isolates the natural-gradient actor step.

The time of one ``train()`` call (actor step + critic) is reported separately (median over the run's updates), and
so is a load-robust ratio: ``(rollout + train_A2C) / (rollout + train_SMAC)`` per update, with the median rollout
time of the same run (rollouts are the same code for both algorithms: the same policy network and environment).

    python benchmarks/smac_overhead.py                                  # CartPole-v1 and HalfCheetah-v5
    python benchmarks/smac_overhead.py --envs CartPole-v1 --timesteps 20000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch as th
from provenance import provenance

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "smac")


def make(algo: str, env_id: str, seed: int) -> Any:
    from stable_baselines3 import A2C

    from sb3_natgrad.smac import SMAC

    if algo == "A2C":
        return A2C("MlpPolicy", env_id, n_steps=1000, gae_lambda=0.9, seed=seed)
    fisher, critic = algo.split("/")
    kwargs: dict[str, Any] = dict(n_critic_updates=1, batch_size=None) if critic == "critic=A2C" else {}
    return SMAC("MlpPolicy", env_id, fisher=fisher, seed=seed, **kwargs)


def timed_learn(algo: str, env_id: str, timesteps: int, seed: int) -> tuple[float, float, float]:
    """:return: (wall seconds of ``learn``, median seconds of one ``train()`` call, rollout seconds per update)"""
    model = make(algo, env_id, seed)
    train_times: list[float] = []
    original_train = model.train

    def train() -> None:
        start = time.perf_counter()
        original_train()
        train_times.append(time.perf_counter() - start)

    model.train = train  # type: ignore[method-assign]
    model.learn(1000)  # warm-up (first-call allocations, lazy imports)
    train_times.clear()
    start = time.perf_counter()
    model.learn(timesteps, reset_num_timesteps=False)
    wall = time.perf_counter() - start
    rollout = (wall - sum(train_times)) / max(len(train_times), 1)
    return wall, float(np.median(train_times)), rollout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "HalfCheetah-v5"])
    parser.add_argument("--timesteps", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fishers", nargs="+", default=["mean", "batch", "sample"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: the shared 2-core machine)")
    args = parser.parse_args()
    th.set_num_threads(args.threads)
    variants = ["A2C"] + [f"{fisher}/{critic}" for fisher in args.fishers for critic in ("defaults", "critic=A2C")]
    print(f"torch {th.__version__}, {th.get_num_threads()} thread(s), {args.timesteps} timesteps x {args.repeats} repeats")

    results = []
    for env_id in args.envs:
        walls: dict[str, list[float]] = {v: [] for v in variants}
        trains: dict[str, list[float]] = {v: [] for v in variants}
        rollouts: list[float] = []
        for repeat in range(args.repeats):
            for variant in variants:
                if variant.startswith("sample") and repeat > 0:
                    continue  # seconds per update: one repeat is enough
                wall, train, rollout = timed_learn(variant, env_id, args.timesteps, seed=repeat)
                walls[variant].append(wall)
                trains[variant].append(train)
                rollouts.append(rollout)
        a2c = float(np.median(walls["A2C"]))
        rollout = float(np.median(rollouts))
        a2c_train = float(np.median(trains["A2C"]))
        for variant in variants:
            wall = float(np.median(walls[variant]))
            row = {
                "env": env_id,
                "algo": "A2C" if variant == "A2C" else f"SMAC fisher={variant.split('/')[0]} ({variant.split('/')[1]})",
                "steps_per_s": args.timesteps / wall,
                "ratio_to_A2C": a2c / wall,
                "train_call_ms": 1000 * float(np.median(trains[variant])),
                "rollout_ms": 1000 * rollout,
                "ratio_per_update": (rollout + a2c_train) / (rollout + float(np.median(trains[variant]))),
                "runs": len(walls[variant]),
            }
            results.append(row)
    print("| env | algorithm | steps/s | ratio to A2C (wall) | one train() [ms] | ratio per update (rollout + train) |")
    print("|---|---|---|---|---|---|")
    for row in results:
        print(
            f"| {row['env']} | {row['algo']} | {row['steps_per_s']:.0f} | {row['ratio_to_A2C']:.3f} | "
            f"{row['train_call_ms']:.1f} | {row['ratio_per_update']:.3f} (rollout {row['rollout_ms']:.0f} ms) |"
        )
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "overhead.json"), "w") as handle:
        record = {"threads": th.get_num_threads(), "timesteps": args.timesteps, "rows": results}
        record["provenance"] = provenance()
        json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()
