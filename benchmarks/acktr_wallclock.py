"""
Wall clock: steps/s of ACKTR divided by steps/s of A2C, same network, same n_envs x n_steps, same process.

Steady-state throughput is measured over ``--measure`` iterations (rollout + update) after ``--skip`` iterations
(ACKTR's first iterations are its cheap SGD warm-up, so they are excluded). Runs alternate between algorithms.

    python benchmarks/acktr_wallclock.py --env CartPole-v1 --n-envs 8 --n-steps 20
    python benchmarks/acktr_wallclock.py --env PongNoFrameskip-v4 --n-envs 32 --n-steps 20 --measure 15
    python benchmarks/acktr_wallclock.py --env PongNoFrameskip-v4 --variant "inverse_method='cholesky'" \\
        --variant "stats_batch_size=128" --variant "async_inverse=True"
"""

from __future__ import annotations

import argparse
import ast
import time
from typing import Any

import numpy as np
import torch
from stable_baselines3 import A2C
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack

from sb3_natgrad import ACKTR, ACKTRCnn


class IterationTimer(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.starts: list[float] = []

    def _on_rollout_start(self) -> None:
        self.starts.append(time.perf_counter())

    def _on_step(self) -> bool:
        return True


def make_env(env_id: str, n_envs: int, seed: int) -> VecEnv:
    if "NoFrameskip" in env_id or env_id.startswith("ALE/"):
        import ale_py
        import gymnasium

        gymnasium.register_envs(ale_py)
        return VecFrameStack(make_atari_env(env_id, n_envs=n_envs, seed=seed), n_stack=4)
    return make_vec_env(env_id, n_envs=n_envs, seed=seed)


def steps_per_second(algo: type, env: VecEnv, n_steps: int, skip: int, measure: int, **kwargs: Any) -> float:
    policy = "CnnPolicy" if len(env.observation_space.shape) == 3 else "MlpPolicy"
    model = algo(policy, env, n_steps=n_steps, seed=0, **kwargs)
    timer = IterationTimer()
    batch = n_steps * env.num_envs
    model.learn((skip + measure + 1) * batch, callback=timer)
    starts = timer.starts
    return measure * batch / (starts[skip + measure] - starts[skip])


def literal_kwargs(text: str) -> dict[str, Any]:
    """``"a=1, b='x'"`` as ``{"a": 1, "b": "x"}``: keyword arguments with literal values only (no code runs)."""
    call = ast.parse(f"f({text})", mode="eval").body
    if not isinstance(call, ast.Call) or call.args:
        raise SystemExit(f"--variant {text!r}: expected keyword arguments, e.g. stats_interval=5, inverse_interval=50")
    return {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords if keyword.arg is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--n-steps", type=int, default=20)
    parser.add_argument("--skip", type=int, default=12)
    parser.add_argument("--measure", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variant", action="append", default=[], help='ACKTR keyword arguments, e.g. "inverse_interval=50"')
    parser.add_argument("--paper-cnn", action="store_true", help="use the paper's 32-64-32 CNN for both algorithms")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    common: dict[str, Any] = {}
    if args.paper_cnn:
        # linear heads as in the paper (results before 2026-12-04 had SB3's two 64-unit tanh layers per head)
        common["policy_kwargs"] = dict(features_extractor_class=ACKTRCnn, net_arch=[])
    variants = {"ACKTR (defaults)": {}}
    for text in args.variant:
        variants[f"ACKTR {text}"] = literal_kwargs(text)
    env = make_env(args.env, args.n_envs, seed=0)
    threads = torch.get_num_threads()
    print(f"{args.env}: {args.n_envs} envs x {args.n_steps} steps, torch {torch.__version__} with {threads} threads")
    results: dict[str, list[float]] = {"A2C": []}
    for name in variants:
        results[name] = []
    for _ in range(args.repeats):
        results["A2C"].append(steps_per_second(A2C, env, args.n_steps, args.skip, args.measure, **common))
        for name, kwargs in variants.items():
            results[name].append(steps_per_second(ACKTR, env, args.n_steps, args.skip, args.measure, **common, **kwargs))
    a2c = float(np.mean(results["A2C"]))
    print(f"{'algorithm':<45} {'steps/s':>9} {'ratio to A2C':>13}")
    for name, values in results.items():
        mean = float(np.mean(values))
        print(f"{name:<45} {mean:>9.0f} {mean / a2c:>13.2f}")


if __name__ == "__main__":
    main()
