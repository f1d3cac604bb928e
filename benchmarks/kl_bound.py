"""
Does each algorithm's trust region bound the real KL? The exact batch-mean ``KL(pi_old || pi_new)`` of every update.

For every run: the number of updates, the radius (SMAC / KFRELAX ``max_kl``, ACKTR ``kfac_clip``, a bound on
``lr^2 g^T F^-1 g``), the largest and 95th-percentile logged ``train/kl``, how many updates exceed 1.5x the radius,
SMAC's mean line-search fraction and the mean return of the last 100 episodes. Runs one process, one thread::

    python benchmarks/kl_bound.py --steps 20000 --out benchmarks/results/smac/trust_region.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

import numpy as np
import torch as th
from provenance import provenance
from stable_baselines3.common.callbacks import BaseCallback

from sb3_natgrad import ACKTR, KFRELAX, SMAC

#: (algorithm, env, extra arguments): the issue's stress setting (one env, 64 steps, a narrow initial Gaussian on
#: Pendulum) and the class defaults on CartPole
RUNS: list[tuple[type, str, dict[str, Any]]] = [
    (SMAC, "Pendulum-v1", dict(n_steps=64, policy_kwargs=dict(log_std_init=-2))),
    (SMAC, "Pendulum-v1", dict(n_steps=64, policy_kwargs=dict(log_std_init=-2), line_search_max_iter=0)),
    (SMAC, "CartPole-v1", {}),
    (SMAC, "CartPole-v1", dict(line_search_max_iter=0)),
    (ACKTR, "Pendulum-v1", dict(n_steps=64, policy_kwargs=dict(log_std_init=-2))),
    (ACKTR, "CartPole-v1", {}),
    (ACKTR, "Pendulum-v1", dict(n_steps=64, policy_kwargs=dict(log_std_init=-2), max_kl=0.01)),
    (ACKTR, "CartPole-v1", dict(max_kl=0.01)),
    (KFRELAX, "Pendulum-v1", dict(n_steps=64, policy_kwargs=dict(log_std_init=-2))),
    (KFRELAX, "CartPole-v1", {}),
]


class LoggedKL(BaseCallback):
    """``train/kl`` (and SMAC's line-search fraction) of every update, read before the next rollout."""

    def __init__(self) -> None:
        super().__init__()
        self.kls: list[float] = []
        self.fractions: list[float] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        logged = self.model.logger.name_to_value
        if "train/kl" in logged:
            self.kls.append(float(logged["train/kl"]))
            self.fractions.append(float(logged.get("train/line_search_fraction", np.nan)))


def run(algo: type, env_id: str, kwargs: dict[str, Any], steps: int, seed: int) -> dict[str, Any]:
    model = algo("MlpPolicy", env_id, seed=seed, device="cpu", **kwargs)
    callback = LoggedKL()
    start = time.process_time()
    model.learn(steps, callback=callback, log_interval=1)
    kls = np.asarray(callback.kls)
    radius = float(model.kfac_clip if algo is ACKTR and model.max_kl is None else model.max_kl)
    fractions = np.asarray(callback.fractions)
    return {
        "algo": algo.__name__,
        "env": env_id,
        "kwargs": {k: v for k, v in kwargs.items()},
        "seed": seed,
        "steps": steps,
        "updates": int(kls.size),
        "radius": radius,
        "kl_max": float(kls.max()),
        "kl_p95": float(np.percentile(kls, 95)),
        "updates_above_1.5x": int((kls > 1.5 * radius).sum()),
        "line_search_fraction_mean": float(np.nanmean(fractions)) if np.isfinite(fractions).any() else None,
        "last_100_episode_mean": float(np.mean([e["r"] for e in model.ep_info_buffer])),
        "cpu_seconds": time.process_time() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/smac/trust_region.json")
    parser.add_argument("--only", nargs="+", default=None, help="run only these rows (indices into RUNS)")
    args = parser.parse_args()
    th.set_num_threads(1)
    stamp = provenance()  # before the runs: the code that runs
    rows = []
    for index, (algo, env_id, kwargs) in enumerate(RUNS):
        if args.only is not None and str(index) not in args.only:
            continue
        row = run(algo, env_id, kwargs, args.steps, args.seed)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"command": stamp["command"], "commit": stamp["commit"], "provenance": stamp, "runs": rows}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
