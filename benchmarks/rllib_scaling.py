"""
ACKTR on Ray RLlib (``sb3_natgrad.rllib``): throughput with 1 and 2 env runners, sample efficiency against RLlib's PPO on
CartPole-v1, and the learner's cost per update at the batch sizes a cluster would use.

    python benchmarks/rllib_scaling.py throughput      # env steps/s, ACKTR and PPO, 1 and 2 env runners
    python benchmarks/rllib_scaling.py learning        # timesteps to a 100-episode mean of 475, 3 seeds each
    python benchmarks/rllib_scaling.py learner-time    # seconds per learner update, batch 640 ... 64000
    python benchmarks/rllib_scaling.py summarize       # benchmarks/results/rllib/README.md

Every command writes ``benchmarks/results/rllib/<command>.json`` after each finished entry and skips entries already
there, so an interrupted run continues where it stopped. One thread per process (``torch.set_num_threads(1)``); Ray
gets ``--cpus`` logical CPUs (default 2: a 2-core machine).

PPO is RLlib's tuned CartPole example (``rllib/tuned_examples/ppo/cartpole_ppo.py``: lr 3e-4, 6 epochs, vf_loss_coeff
0.01, one linear 32-unit layer shared by actor and critic, batch 4000 in minibatches of 128). ACKTR is
``ACKTRConfig`` with its defaults, ``normalize_rewards=True`` and a batch of 8 envs x 20 steps (SB2's CartPole entry),
on RLlib's default network (two 256-unit tanh layers, separate actor and critic).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time
from typing import Any

import numpy as np
from provenance import provenance

OUT = pathlib.Path("benchmarks/results/rllib")
THRESHOLD = 475.0


def _load(name: str) -> dict[str, Any]:
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {"entries": {}, "provenance": []}


def _save(name: str, data: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / f"{name}.json.tmp"
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, OUT / f"{name}.json")


def _begin(name: str) -> dict[str, Any]:
    """One torch thread, and the results of ``name`` so far."""
    import torch

    torch.set_num_threads(1)
    return _load(name)


def _finish(name: str, data: dict[str, Any]) -> None:
    """Record this command's provenance with the results."""
    data["provenance"].append(provenance())
    _save(name, data)


def _start_ray(cpus: int) -> None:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, object_store_memory=300 * 1024**2)


def algo_config(algo: str, seed: int, env_runners: int) -> Any:
    """The benchmark's configuration of ``algo`` (``"acktr"`` or ``"ppo"``)."""
    if algo.startswith("acktr"):
        from sb3_natgrad.rllib import ACKTRConfig

        # "acktr": SB2's CartPole batch (8 envs x 20 steps); "acktr4000": PPO's batch, for the throughput comparison
        batch = 4000 if algo == "acktr4000" else 160
        config = ACKTRConfig().training(normalize_rewards=True, train_batch_size=batch)
    else:
        from ray.rllib.algorithms.ppo import PPOConfig

        config = (
            PPOConfig()
            .training(lr=3e-4, num_epochs=6, vf_loss_coeff=0.01)
            .rl_module(model_config={"fcnet_hiddens": [32], "fcnet_activation": "linear", "vf_share_layers": True})
        )
    return (
        config.environment("CartPole-v1")
        .env_runners(num_env_runners=env_runners, num_envs_per_env_runner=8)
        .debugging(seed=seed)
    )


def _steps(result: dict[str, Any]) -> int:
    return int(result.get("num_env_steps_sampled_lifetime") or result["env_runners"]["num_env_steps_sampled_lifetime"])


def throughput(args: argparse.Namespace) -> None:

    data = _begin("throughput")
    _start_ray(args.cpus)
    for runners in (1, 2):
        for algo in ("ppo", "acktr", "acktr4000"):
            key = f"{algo}/{runners}"
            if key in data["entries"]:
                continue
            algo_obj = algo_config(algo, 0, runners).build_algo()
            try:
                for _ in range(args.warmup):
                    algo_obj.train()
                start_steps, began = _steps(algo_obj.train()), time.perf_counter()
                while time.perf_counter() - began < args.seconds:
                    result = algo_obj.train()
                elapsed = time.perf_counter() - began
                steps = _steps(result) - start_steps
            finally:
                algo_obj.stop()
            data["entries"][key] = {"env_runners": runners, "algo": algo, "steps": steps, "seconds": elapsed}
            print(f"{key}: {steps / elapsed:.0f} env steps/s", flush=True)
            _save("throughput", data)
    _finish("throughput", data)


def learning(args: argparse.Namespace) -> None:

    data = _begin("learning")
    _start_ray(args.cpus)
    for algo in args.algos:
        for seed in args.seeds:
            key = f"{algo}/{seed}"
            if key in data["entries"]:
                continue
            algo_obj = algo_config(algo, seed, 1).build_algo()
            curve, reached, began = [], None, time.perf_counter()
            try:
                while True:
                    result = algo_obj.train()
                    steps, mean = _steps(result), result["env_runners"].get("episode_return_mean")
                    if mean is not None and np.isfinite(mean):
                        curve.append((steps, float(mean)))
                        if mean >= THRESHOLD:
                            reached = steps
                            break
                    if steps >= args.budget:
                        break
            finally:
                algo_obj.stop()
            data["entries"][key] = {
                "reached": reached,
                "curve": curve[::5] + curve[-1:],
                "seconds": time.perf_counter() - began,
            }
            print(f"{key}: {'reached 475 at ' + str(reached) if reached else 'not reached'} steps", flush=True)
            _save("learning", data)
    _finish("learning", data)


def learner_time(args: argparse.Namespace) -> None:
    """Seconds per ``learner.update`` on a synthetic CartPole batch (no Ray actors: the learner runs here)."""
    import gymnasium as gym
    from ray.rllib.core.columns import Columns
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    data = _begin("learner-time")
    obs_space, act_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32), gym.spaces.Discrete(2)
    rng = np.random.default_rng(0)
    for algo in ("ppo", "acktr"):
        config = algo_config(algo, 0, 0).environment(observation_space=obs_space, action_space=act_space)
        if algo == "ppo":  # PPO's work per batch: 6 epochs of minibatches of 128 through the same default network
            config = config.rl_module(model_config={})
        learner = config.build_learner(spaces={"default_policy": (obs_space, act_space)})
        for batch_size in args.batch_sizes:
            key = f"{algo}/{batch_size}"
            if key in data["entries"]:
                continue
            batch = {
                Columns.OBS: rng.normal(size=(batch_size, 4)).astype(np.float32),
                Columns.ACTIONS: rng.integers(0, 2, batch_size),
                "advantages": rng.normal(size=batch_size).astype(np.float32),
                "value_targets": rng.normal(size=batch_size).astype(np.float32),
                Columns.ACTION_DIST_INPUTS: np.zeros((batch_size, 2), np.float32),
                Columns.ACTION_LOGP: np.full(batch_size, np.log(0.5), np.float32),
            }
            kwargs = {} if algo == "acktr" else {"num_epochs": 6, "minibatch_size": 128}
            times = []
            for _ in range(args.repeats + 2):
                began = time.perf_counter()
                learner.update(
                    batch=MultiAgentBatch({"default_policy": SampleBatch(dict(batch))}, env_steps=batch_size), **kwargs
                )
                times.append(time.perf_counter() - began)
            data["entries"][key] = {"algo": algo, "batch_size": batch_size, "seconds": float(np.median(times[2:]))}
            print(f"{key}: {np.median(times[2:]) * 1000:.1f} ms per update", flush=True)
            _save("learner-time", data)
    _finish("learner-time", data)


def summarize(args: argparse.Namespace) -> None:
    lines = [
        "# ACKTR on Ray RLlib: throughput, sample efficiency, learner cost",
        "",
        "Written by `python benchmarks/rllib_scaling.py summarize` from the JSON files (each with its commands' "
        "provenance), measured with `python benchmarks/rllib_scaling.py learner-time`, `... throughput --seconds 45` "
        "(both alone on the machine) and `... learning --budget 400000` (beside other runs: it counts timesteps, not "
        "time).",
        "",
    ]
    tp = _load("throughput")["entries"]
    if tp:
        lines += [
            "## Env steps per second (CartPole-v1, 8 envs per env runner, local learner, 2-core CPU)",
            "",
            "| env runners | PPO (batch 4000) | ACKTR (batch 160) | ACKTR (batch 4000) | ACKTR 160 / PPO | ACKTR 4000 / PPO |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for runners in (1, 2):
            rate = {
                a: tp[f"{a}/{runners}"]["steps"] / tp[f"{a}/{runners}"]["seconds"]
                for a in ("ppo", "acktr", "acktr4000")
                if f"{a}/{runners}" in tp
            }
            if len(rate) == 3:
                lines.append(
                    f"| {runners} | {rate['ppo']:.0f} | {rate['acktr']:.0f} | {rate['acktr4000']:.0f} | "
                    f"{rate['acktr'] / rate['ppo']:.2f} | {rate['acktr4000'] / rate['ppo']:.2f} |"
                )
        lines.append("")
    ln = _load("learning")["entries"]
    if ln:
        lines += [
            "## Timesteps to a 100-episode mean return of 475 on CartPole-v1 (1 env runner)",
            "",
            "| algorithm | per seed | median |",
            "|---|---|---:|",
        ]
        for algo in ("ppo", "acktr"):
            runs = [v for k, v in sorted(ln.items()) if k.startswith(algo + "/")]
            if runs:
                reached = [r["reached"] for r in runs]
                text = " / ".join(f"{r:,}" if r else "not reached" for r in reached)
                ok = sorted(r if r else float("inf") for r in reached)
                median = ok[len(ok) // 2]
                lines.append(f"| {algo.upper()} | {text} | {'not reached' if median == float('inf') else f'{median:,}'} |")
        lines.append("")
    lt = _load("learner-time")["entries"]
    if lt:
        lines += [
            "## Learner seconds per update (one thread; PPO: 6 epochs of minibatches of 128)",
            "",
            "| batch | PPO | ACKTR | ACKTR / PPO |",
            "|---:|---:|---:|---:|",
        ]
        for size in sorted({v["batch_size"] for v in lt.values()}):
            p, a = lt.get(f"ppo/{size}"), lt.get(f"acktr/{size}")
            if p and a:
                lines.append(f"| {size:,} | {p['seconds']:.3f} | {a['seconds']:.3f} | {a['seconds'] / p['seconds']:.2f} |")
        lines.append("")
    if tp and lt and "acktr4000/1" in tp and "acktr/4000" in lt and "ppo/64000" in lt and "acktr/64000" in lt:
        iteration = tp["acktr4000/1"]["seconds"] / (tp["acktr4000/1"]["steps"] / 4000)
        sampling = 4000 / (iteration - lt["acktr/4000"]["seconds"])
        acktr_rate, ppo_rate = 64000 / lt["acktr/64000"]["seconds"], 64000 / lt["ppo/64000"]["seconds"]
        lines += [
            "## On a 64-CPU cluster (projection from the numbers above, not a measurement)",
            "",
            f"One env runner with 8 CartPole envs samples about {sampling:,.0f} steps/s here (an ACKTR iteration of 4000 "
            f"steps minus its learner time), so 60 env runners would sample about {60 * sampling:,.0f} steps/s. K-FAC's "
            "cost is all on the learner side and per batch: the factor products grow with the batch (O(B d^2) per layer), "
            "the decompositions do not (O(d^3) every `inverse_interval` updates), and there is one step per batch instead "
            f"of PPO's epochs of minibatches. At a batch of 64,000 one learner thread processes {acktr_rate:,.0f} steps/s "
            f"with ACKTR and {ppo_rate:,.0f} with PPO (6 epochs of minibatches of 128). With 60 env runners the learners "
            f"are the bottleneck for both: ACKTR would need about {60 * sampling / acktr_rate:.0f} learner threads (or "
            f"learners, whose K-FAC statistics are summed by one all-reduce per update) to keep up, PPO about "
            f"{60 * sampling / ppo_rate:.0f}. The all-reduce carries the factor sums, about the size of the factors "
            "(for two 256-unit layers: under 1 MB), once per update.",
            "",
        ]
    (OUT / "README.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--cpus", type=int, default=2)
    p.set_defaults(func=throughput)
    p = sub.add_parser("learning")
    p.add_argument("--algos", nargs="+", default=["acktr", "ppo"], choices=["acktr", "ppo"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=500_000)
    p.add_argument("--cpus", type=int, default=2)
    p.set_defaults(func=learning)
    p = sub.add_parser("learner-time")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[640, 4000, 16000, 64000])
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=learner_time)
    p = sub.add_parser("summarize")
    p.set_defaults(func=summarize)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
