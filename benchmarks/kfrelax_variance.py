"""
How much KFRELAX's control variate reduces the variance of its policy-gradient estimate during training, with the
K-FAC-trained ``c_phi`` (``cv_optimizer="kfac"``, KFRELAX) and the Adam-trained one (``"adam"``, RELAX), from the
packaged entry of ``sb3_natgrad/hyperparams/kfrelax.yml``.

KFRELAX logs, on every update whose logs are written, ``train/grad_variance`` (the estimator's variance over random
sub-batches, with ``c_phi``) and ``train/grad_variance_no_cv`` (the same samples, score-function estimator with the
value baseline only; :func:`sb3_natgrad.kfrelax.estimator.grad_variance`). Their ratio is 1 where ``c_phi`` does
nothing, below 1 where it helps. This script trains one run per optimizer and reports the ratio's median over the
run and over its quarters, with the 100-episode training mean at the end of each quarter.

    python benchmarks/kfrelax_variance.py --env Pendulum-v1 --seed 10 --budget 200000 \
        --out benchmarks/results/kfrelax/pendulum_variance.json

``--set key=value`` overrides an entry value for both optimizers (a Python literal, as in sample_efficiency.py).
"""

from __future__ import annotations

import argparse
import ast
import json
import tempfile
from typing import Any

import numpy as np
from provenance import provenance
from sample_efficiency import THRESHOLDS, make_env, to_constructor_kwargs, zoo_hyperparams


def run(env_id: str, seed: int, budget: int, cv_optimizer: str, overrides: dict[str, Any], log_interval: int) -> dict:
    import pandas as pd
    import torch
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_natgrad import KFRELAX

    torch.set_num_threads(1)
    hyperparams = zoo_hyperparams("kfrelax", env_id)
    hyperparams.update(overrides)
    hyperparams["cv_optimizer"] = cv_optimizer
    env = make_env(env_id, hyperparams, int(hyperparams.get("n_envs", 1)), seed)  # the entry's wrappers, as rl-zoo3
    if hyperparams.get("normalize"):
        env = VecNormalize(env, gamma=hyperparams.get("gamma", 0.99))
    model = KFRELAX(hyperparams.get("policy", "MlpPolicy"), env, seed=seed, **to_constructor_kwargs(hyperparams))
    with tempfile.TemporaryDirectory() as folder:
        model.set_logger(configure(folder, ["csv"]))
        model.learn(budget, log_interval=log_interval)
        logs = pd.read_csv(f"{folder}/progress.csv")
    ratio = (logs["train/grad_variance"] / logs["train/grad_variance_no_cv"]).to_numpy()
    returns = logs["rollout/ep_rew_mean"].to_numpy()
    quarters = np.array_split(np.arange(len(logs)), 4)
    threshold = THRESHOLDS.get(env_id)
    above = np.flatnonzero(returns >= threshold) if threshold is not None else np.array([], dtype=int)
    return {
        "cv_optimizer": cv_optimizer,
        "seed": seed,
        "timesteps": int(model.num_timesteps),
        "logged_updates": len(logs),
        # first logged update whose 100-episode training mean reaches the threshold (resolution: --log-interval)
        "timesteps_to_threshold": int(logs["time/total_timesteps"].iloc[above[0]]) if len(above) else None,
        "median_variance_ratio": float(np.median(ratio)),
        "quarters": [
            {
                "until_timestep": int(logs["time/total_timesteps"].iloc[q[-1]]),
                "median_variance_ratio": float(np.median(ratio[q])),
                "ep_rew_mean": None if np.isnan(returns[q[-1]]) else float(returns[q[-1]]),
            }
            for q in quarters
        ],
        "final_cv_scale": float(logs["train/cv_scale"].iloc[-1]),
        "final_std": float(logs["train/std"].iloc[-1]) if "train/std" in logs else None,
        "hyperparams": {
            k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)) for k, v in hyperparams.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--budget", type=int, default=200_000)
    parser.add_argument("--set", action="append", default=[], help="key=value override (a Python literal)")
    parser.add_argument("--log-interval", type=int, default=50, help="updates between logged (and measured) updates")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = ast.literal_eval(value)
    results = [run(args.env, args.seed, args.budget, opt, overrides, args.log_interval) for opt in ("kfac", "adam")]
    for r in results:
        quarters = " / ".join(
            f"{q['median_variance_ratio']:.2f} ({q['ep_rew_mean'] or float('nan'):.0f})" for q in r["quarters"]
        )
        print(
            f"{r['cv_optimizer']:5s} median Var ratio {r['median_variance_ratio']:.3f}; by quarter (return): {quarters}; "
            f"threshold at {r['timesteps_to_threshold']}"
        )
    if args.out:
        with open(args.out, "w") as file:
            json.dump({"env": args.env, "overrides": overrides, "runs": results, "provenance": provenance()}, file, indent=1)


if __name__ == "__main__":
    main()
