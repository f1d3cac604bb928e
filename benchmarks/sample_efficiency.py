"""
Sample efficiency: timesteps until the 100-episode training mean return reaches a threshold.

Each algorithm runs with its rl-zoo3 hyperparameters: A2C/PPO from rl-zoo3's own ``hyperparams/*.yml`` (the
installed package), our algorithms from the YAML shipped in ``sb3_natgrad/hyperparams``. Seeds run in parallel
worker processes with one torch thread each. Results go to a JSON file and a Markdown table.

    python benchmarks/sample_efficiency.py --env CartPole-v1 --algos a2c acktr --seeds 0 1 2 --workers 2
    python benchmarks/sample_efficiency.py --env Acrobot-v1 LunarLander-v3 --algos a2c acktr --seeds 0 1 2

``--set acktr:kfac_clip=0.01`` overrides a hyperparameter (repeatable), to compare variants.

An environment without a threshold in :data:`THRESHOLDS` (MuJoCo) trains the whole budget and reports the final
100-episode training mean (Wu et al. 2017, Figure 3: the return at 1M steps):

    python benchmarks/sample_efficiency.py --env Hopper-v5 --algos a2c acktr --seeds 10 --budget 1000000 \
        --checkpoint-dir logs/se_checkpoints --out benchmarks/results/sample_efficiency/mujoco_1m.json --resume

``--checkpoint-dir`` saves each run (model, ``VecNormalize`` statistics, the last 100 training episodes, the last
100-episode mean) every ``--checkpoint-every`` timesteps, and a run started again with the same arguments goes on
from its last checkpoint, so runs longer than a session survive it. A resumed run restarts its environments (the
episodes under way are lost) and its random streams: it is not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import multiprocessing as mp
import os
import pathlib
import shutil
import time
from collections import deque
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


def zoo_hyperparams(algo: str, env_id: str, entry: str | None = None) -> dict[str, Any]:
    """
    The rl-zoo3 entry for (algo, env): rl-zoo3's files for SB3/contrib algorithms, ours for sb3_natgrad's.

    :param entry: the entry's name in the file (default: :func:`zoo_entry_name` of ``env_id``)
    """
    table = _zoo_table(algo)
    return dict(table[entry or zoo_entry_name(algo, env_id)])


def zoo_entry_name(algo: str, env_id: str) -> str:
    """
    The entry of ``env_id`` in the algorithm's file: its own, else the newest other version of the same environment
    (rl-zoo3 lists MuJoCo as ``-v4``, which gymnasium 1.x keeps with the same dynamics as ``-v5`` up to fixes), else
    the file's ``default``.
    """
    table = _zoo_table(algo)
    if env_id in table:
        return env_id
    name = env_id.rpartition("-v")[0]
    versions = [key for key in table if key.rpartition("-v")[0] == name and key.rpartition("-v")[2].isdigit()]
    if versions:
        return max(versions, key=lambda key: int(key.rpartition("-v")[2]))
    if "default" in table:
        return "default"
    raise KeyError(f"no entry for {env_id!r} in {algo}'s hyperparameter file, and no 'default' entry")


def _zoo_table(algo: str) -> dict[str, Any]:
    if algo in ("acktr", "smac", "kfrelax"):
        path = pathlib.Path(importlib.import_module("sb3_natgrad").__file__).parent / "hyperparams" / f"{algo}.yml"
    else:
        path = pathlib.Path(importlib.import_module("rl_zoo3").__file__).parent / "hyperparams" / f"{algo}.yml"
    with open(path) as file:
        return yaml.safe_load(file)


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
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    algo, env_id, seed, budget, threshold = job["algo"], job["env"], job["seed"], job["budget"], job["threshold"]
    entry = job.get("entry") or zoo_entry_name(algo, env_id)
    hyperparams = zoo_hyperparams(algo, env_id, entry)
    hyperparams.update(job["overrides"])
    n_envs = int(hyperparams.get("n_envs", 1))
    checkpoint = Checkpoint.of(job)
    state = checkpoint.load_state() if checkpoint is not None else None
    env = make_env(env_id, hyperparams, n_envs, seed)
    if hyperparams.get("normalize"):
        if state is not None:
            env = VecNormalize.load(str(checkpoint.folder / "vecnormalize.pkl"), env)  # type: ignore[union-attr]
        else:
            normalize = hyperparams["normalize"]
            normalize_kwargs = eval(normalize) if isinstance(normalize, str) else ({} if normalize is True else normalize)
            env = VecNormalize(env, gamma=hyperparams.get("gamma", 0.99), **normalize_kwargs)

    class Threshold(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.hit: int | None = None
            self.episodes: int | None = None
            self.curve: list[tuple[int, float]] = []
            self.episodes_before = 0  # episodes of the run before its last resume
            self.saved_at = 0

        def _on_rollout_end(self) -> None:
            buffer = self.model.ep_info_buffer
            if len(buffer) >= 100:
                mean = float(np.mean([info["r"] for info in buffer]))
                self.curve.append((self.num_timesteps, mean))
                if self.hit is None and threshold is not None and mean >= threshold:
                    self.hit = self.num_timesteps
                    self.episodes = self.episodes_before + sum(
                        len(m.get_episode_rewards()) for m in _monitors(self.training_env)
                    )

        def _on_rollout_start(self) -> None:
            # before collecting: the model has been updated on every rollout counted in num_timesteps
            if checkpoint is not None and self.num_timesteps - self.saved_at >= job["checkpoint_every"]:
                self.saved_at = self.num_timesteps
                checkpoint.save(self.model, self.state(time.perf_counter() - start + seconds_before))

        def state(self, seconds: float) -> dict[str, Any]:
            episodes = self.episodes_before + sum(len(m.get_episode_rewards()) for m in _monitors(self.training_env))
            return dict(
                hit=self.hit,
                episodes=self.episodes,
                curve=self.curve[-1:],  # only the last point is reported (a full curve is one point per rollout)
                episodes_before=episodes,
                seconds=seconds,
                ep_info_buffer=[{k: float(v) for k, v in info.items()} for info in self.model.ep_info_buffer],
            )

        def _on_step(self) -> bool:
            return self.hit is None or not job["stop_at_threshold"]

    callback = Threshold()
    seconds_before = 0.0
    if state is None:
        model = load_class(algo)(hyperparams.get("policy", "MlpPolicy"), env, seed=seed, **to_constructor_kwargs(hyperparams))
    else:
        model = load_class(algo).load(checkpoint.folder / "model.zip", env=env, device="cpu")  # type: ignore[union-attr]
        model.ep_info_buffer = deque(state["ep_info_buffer"], maxlen=model._stats_window_size)
        callback.hit, callback.episodes = state["hit"], state["episodes"]
        callback.curve = [tuple(point) for point in state["curve"]]
        callback.episodes_before, callback.saved_at = state["episodes_before"], int(model.num_timesteps)
        seconds_before = state["seconds"]
    resumed_from = int(model.num_timesteps)
    start = time.perf_counter()
    if job["stop_at_threshold"] and callback.hit is not None:
        remaining = 0  # the checkpoint was saved after the threshold was reached
    else:
        remaining = budget - resumed_from
    if remaining > 0:
        model.learn(remaining, callback=callback, reset_num_timesteps=state is None)
    elapsed = time.perf_counter() - start + seconds_before
    return {
        "algo": job["label"],
        "env": env_id,
        "seed": seed,
        "zoo_entry": entry,
        "timesteps_to_threshold": callback.hit,
        "episodes_to_threshold": callback.episodes,
        "final_100_episode_mean": callback.curve[-1][1] if callback.curve else None,
        "timesteps_run": int(model.num_timesteps),
        "resumed_from": resumed_from,
        "seconds": round(elapsed, 1),
        "steps_per_second": round(model.num_timesteps / elapsed, 1) if elapsed > 0 else None,
        "hyperparams": {
            k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)) for k, v in hyperparams.items()
        },
    }


class Checkpoint:
    """
    The checkpoint of one run (``--checkpoint-dir``): ``<dir>/<label>_<env>_<seed>/current/`` holds ``model.zip``,
    ``vecnormalize.pkl`` (normalised entries) and ``state.json`` (the threshold callback's state and the last 100
    training episodes). A new checkpoint is written beside it and swapped in by renames, so an interrupted save leaves
    the previous one whole.
    """

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root

    @classmethod
    def of(cls, job: dict[str, Any]) -> Checkpoint | None:
        if not job.get("checkpoint_dir"):
            return None
        return cls(pathlib.Path(job["checkpoint_dir"]) / f"{job['label']}_{job['env']}_{job['seed']}")

    @property
    def folder(self) -> pathlib.Path:
        return self.root / "current"

    def load_state(self) -> dict[str, Any] | None:
        old = self.root / "old"
        if not (self.folder / "state.json").exists() and (old / "state.json").exists():
            old.rename(self.folder)  # interrupted between the two renames of save()
        path = self.folder / "state.json"
        return json.loads(path.read_text()) if path.exists() else None

    def save(self, model: Any, state: dict[str, Any]) -> None:
        new, old = self.root / "new", self.root / "old"
        for folder in (new, old):
            shutil.rmtree(folder, ignore_errors=True)
        new.mkdir(parents=True)
        model.save(new / "model.zip")
        normalize = model.get_vec_normalize_env()
        if normalize is not None:
            normalize.save(str(new / "vecnormalize.pkl"))
        (new / "state.json").write_text(json.dumps(state))
        if self.folder.exists():
            self.folder.rename(old)
        new.rename(self.folder)
        shutil.rmtree(old, ignore_errors=True)


def make_env(env_id: str, hyperparams: dict[str, Any], n_envs: int, seed: int) -> Any:
    """
    The training ``VecEnv`` of an entry as rl-zoo3 builds it, before normalisation: ``env_wrapper`` (rl-zoo3's
    ``get_wrapper_class``, e.g. the ``TimeFeatureWrapper`` of ACKTR's MuJoCo entries), ``env_kwargs`` and
    ``frame_stack``; ``vec_env_wrapper`` and ``callback`` are refused (this script does not build them).
    """
    from rl_zoo3.utils import get_wrapper_class
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    unsupported = sorted({"vec_env_wrapper", "callback"} & hyperparams.keys())
    if unsupported:
        raise ValueError(f"{env_id}: the entry's {unsupported} are not supported by this script")
    env_kwargs = hyperparams.get("env_kwargs") or {}
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed, wrapper_class=get_wrapper_class(hyperparams), env_kwargs=env_kwargs)
    if hyperparams.get("frame_stack"):
        env = VecFrameStack(env, int(hyperparams["frame_stack"]))
    return env


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
    parser.add_argument(
        "--entry", action="append", default=[], help="algo:name, the entry of the algorithm's file to use (default: the env's)"
    )
    parser.add_argument("--checkpoint-dir", default=None, help="save each run there and resume it from its last checkpoint")
    parser.add_argument("--checkpoint-every", type=int, default=100_000, help="timesteps between checkpoints")
    args = parser.parse_args()

    overrides: dict[str, dict[str, Any]] = {}
    for item in args.set:
        algo, _, assignment = item.partition(":")
        key, equals, value = assignment.partition("=")
        if not equals or not key:
            parser.error(f"--set {item!r}: expected algo:key=value")
        try:
            overrides.setdefault(algo, {})[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            hint = "quote zoo strings such as policy_kwargs: \"'dict(...)'\""
            parser.error(f"--set {item!r}: {value!r} is not a Python literal ({hint})")
    for item in args.entry:
        if ":" not in item:
            parser.error(f"--entry {item!r}: expected algo:entry_name")
    entries = dict(item.split(":", 1) for item in args.entry)
    jobs = []
    for env_id in args.env:
        for algo in args.algos:
            entry = entries.get(algo)
            budget = args.budget or int(float(zoo_hyperparams(algo, env_id, entry).get("n_timesteps", 1e6)))
            label = algo if algo not in overrides or args.label is None else f"{algo}-{args.label}"
            for seed in args.seeds:
                jobs.append(
                    dict(
                        algo=algo,
                        label=label,
                        env=env_id,
                        seed=seed,
                        budget=budget,
                        threshold=THRESHOLDS.get(env_id),
                        overrides=overrides.get(algo, {}),
                        entry=entry,
                        stop_at_threshold=not args.keep_going,
                        checkpoint_dir=args.checkpoint_dir,
                        checkpoint_every=args.checkpoint_every,
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

    print("\n| env | algo | median timesteps to threshold | per seed | median episodes to threshold | final means | steps/s |")
    print("|---|---|---|---|---|---|---|")
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
            fps = np.mean([r["steps_per_second"] or 0.0 for r in rows])
            finals = [r["final_100_episode_mean"] for r in sorted(rows, key=lambda r: r["seed"])]
            finals_text = " / ".join("-" if f is None else f"{f:.0f}" for f in finals)
            print(f"| {env_id} | {label} | {median:.0f} | {hits} | {median_episodes:.0f} | {finals_text} | {fps:.0f} |")


if __name__ == "__main__":
    main()
