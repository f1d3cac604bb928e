"""
Pixels on a CPU: MinAtar (Young & Tian 2019), A2C and PPO against ACKTR (expand, reduce, cheap curvature), SMAC, KFRELAX.

Every algorithm uses the MinAtar paper's network (one 3x3 convolution with 16 filters, 128 units; ``MinAtarPolicy``)
and no frame stack. Hyperparameters and their sources:

* ``a2c``, ``ppo``: rl-zoo3's ``atari`` entries (the installed ``rl_zoo3/hyperparams/{a2c,ppo}.yml``: A2C 16 envs x 5
  steps, RMSprop(eps=1e-5), vf_coef 0.25, entropy 0.01; PPO 8 envs x 128 steps, 4 epochs of 256, lr and clip
  2.5e-4 / 0.1 decayed linearly), without the Atari wrapper and frame stack;
* ``acktr``, ``smac``, ``kfrelax``: our packaged ``hyperparams/<algo>.yml`` MinAtar entries (each states its source);
  ``acktr`` there uses ``conv_factors="expand"`` (KFC);
* ``acktr-reduce``: ``acktr`` with ``conv_factors="reduce"`` (Eschenhagen et al. 2023);
* ``acktr-cheap``: ``acktr-reduce`` with ``stats_interval=5``, ``inverse_interval=50`` (float32 statistics:
  ``stats_dtype="bfloat16"`` pays only on CPUs with native bfloat16 products, and is slower on an AVX2-only CPU).

Runs are independent worker processes with one torch thread each. Each run saves a checkpoint (the model and its
finished episodes) every ``--checkpoint`` steps into ``<out>/runs/<game>/<variant>/seed<k>/`` and a ``status.json``
when it is done; starting the same command again skips finished runs and continues unfinished ones from their last
checkpoint (the learning-rate schedules continue: ``learn(budget - t, reset_num_timesteps=False)``; the envs
restart their episodes). Steps per second are measured on the process's CPU time, so a paused run or a busy
neighbour does not distort them. ``summarize`` writes ``results.json`` (per run: final 100-episode mean, timesteps
to the threshold, steps/s; the commit, library versions and command), ``README.md`` (tables) and one PNG of curves
per game. The threshold of a game is A2C's final return there (the mean over seeds of its last 100-episode training
mean), the issue's target being "ACKTR reaches A2C's final return in <= 0.5x its steps".

    python benchmarks/pixels.py run --games Breakout SpaceInvaders --seeds 0 1 2 --budget 2000000 --workers 2
    python benchmarks/pixels.py run --games Breakout --variants smac kfrelax --seeds 0 1 2 --budget 2000000
    python benchmarks/pixels.py summarize
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import multiprocessing as mp
import os
import pathlib
import sys
import time
import warnings
from typing import Any

import numpy as np
import yaml
from provenance import provenance
from sample_efficiency import to_constructor_kwargs  # the same rl-zoo3 entry -> constructor translation

DEFAULT_OUT = "benchmarks/results/pixels"
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "a2c": ("a2c", {}),
    "ppo": ("ppo", {}),
    "acktr": ("acktr", {}),
    "acktr-reduce": ("acktr", {"conv_factors": "reduce"}),
    "acktr-cheap": (
        "acktr",
        {"conv_factors": "reduce", "stats_interval": 5, "inverse_interval": 50},
    ),
    "smac": ("smac", {}),
    "kfrelax": ("kfrelax", {}),
}
ALGO_CLASSES = {
    "a2c": "stable_baselines3:A2C",
    "ppo": "stable_baselines3:PPO",
    "acktr": "sb3_natgrad:ACKTR",
    "smac": "sb3_natgrad:SMAC",
    "kfrelax": "sb3_natgrad:KFRELAX",
}
WINDOW = 100  # episodes in the training-return mean, as rl-zoo3 / SB3 log it


def env_id(game: str) -> str:
    return f"MinAtar/{game}-v1"


def hyperparams(variant: str, game: str) -> dict[str, Any]:
    """The zoo entry of the variant (see the module docstring), before schedule strings are turned into schedules."""
    algo, overrides = VARIANTS[variant]
    if algo in ("a2c", "ppo"):
        path = pathlib.Path(importlib.import_module("rl_zoo3").__file__).parent / "hyperparams" / f"{algo}.yml"
        entry = dict(yaml.safe_load(path.read_text())["atari"])
    else:
        path = pathlib.Path(importlib.import_module("sb3_natgrad").__file__).parent / "hyperparams" / f"{algo}.yml"
        entry = dict(yaml.safe_load(path.read_text())[env_id(game)])
    entry.update(overrides)
    return entry


def run_dir(out: pathlib.Path, game: str, variant: str, seed: int) -> pathlib.Path:
    return out / "runs" / game / variant / f"seed{seed}"


def _write_json(path: pathlib.Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def run_one(job: dict[str, Any]) -> str:
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_natgrad.common.minatar import MinAtarPolicy, register_minatar_envs

    torch.set_num_threads(1)
    register_minatar_envs()
    game, variant, seed, budget = job["game"], job["variant"], job["seed"], job["budget"]
    folder = run_dir(pathlib.Path(job["out"]), game, variant, seed)
    folder.mkdir(parents=True, exist_ok=True)
    status_path, episodes_path, checkpoint = folder / "status.json", folder / "episodes.json", folder / "checkpoint.zip"
    status = json.loads(status_path.read_text()) if status_path.exists() else {}
    if status.get("done") and status.get("budget") == budget:
        return f"{game} {variant} seed {seed}: done already"

    algo = VARIANTS[variant][0]
    entry = hyperparams(variant, game)
    module, name = ALGO_CLASSES[algo].split(":")
    cls = getattr(importlib.import_module(module), name)
    env = make_vec_env(env_id(game), n_envs=int(entry["n_envs"]), seed=seed)
    if checkpoint.exists() and status.get("checkpoint_timesteps"):
        model = cls.load(checkpoint, env=env, device="cpu")
        episodes = [e for e in json.loads(episodes_path.read_text()) if e[0] <= model.num_timesteps]
    else:
        policy = MinAtarPolicy if algo in ("a2c", "ppo") else entry.get("policy", "MinAtarPolicy")
        model = cls(policy, env, seed=seed, device="cpu", **to_constructor_kwargs(entry))
        episodes, status = [], {"cpu_seconds": 0.0, "wall_seconds": 0.0, "commit": provenance()["commit"]}

    class Recorder(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_checkpoint = (model.num_timesteps // job["checkpoint"] + 1) * job["checkpoint"]
            self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    episodes.append((self.num_timesteps, float(info["episode"]["r"]), int(info["episode"]["l"])))
            return True

        def save(self, done: bool) -> None:
            cpu, wall = time.process_time(), time.perf_counter()
            status["cpu_seconds"] += cpu - self.cpu0
            status["wall_seconds"] += wall - self.wall0
            self.cpu0, self.wall0 = cpu, wall
            if not done:
                tmp = folder / "checkpoint.tmp.zip"
                self.model.save(tmp)
                os.replace(tmp, checkpoint)
            _write_json(episodes_path, episodes)
            status.update(checkpoint_timesteps=int(self.num_timesteps), budget=budget, done=done, hyperparams=_jsonable(entry))
            _write_json(status_path, status)

        def _on_rollout_end(self) -> None:
            if self.num_timesteps >= self.next_checkpoint:
                self.next_checkpoint += job["checkpoint"]
                self.save(done=False)

    recorder = Recorder()
    remaining = budget - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=recorder, reset_num_timesteps=False, log_interval=10**9)
    recorder.num_timesteps = model.num_timesteps
    recorder.save(done=True)
    if checkpoint.exists():
        checkpoint.unlink()  # the finished run keeps only its episodes and status
    return (
        f"{game} {variant} seed {seed}: {model.num_timesteps} steps, {model.num_timesteps / status['cpu_seconds']:.0f} steps/s"
    )


def _jsonable(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)) for k, v in entry.items()}


# ---------------------------------------------------------------------------------------------------------- summary


def running_mean(episodes: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """(timesteps, mean return of the last WINDOW episodes) after each episode, from the 10th on."""
    if len(episodes) < 10:
        return np.zeros(0), np.zeros(0)
    steps = np.array([e[0] for e in episodes], dtype=float)
    returns = np.array([e[1] for e in episodes], dtype=float)
    csum = np.concatenate([[0.0], np.cumsum(returns)])
    idx = np.arange(1, len(returns) + 1)
    lo = np.maximum(0, idx - WINDOW)
    means = (csum[idx] - csum[lo]) / (idx - lo)
    return steps[9:], means[9:]


def first_crossing(steps: np.ndarray, means: np.ndarray, threshold: float) -> int | None:
    hit = np.nonzero(means >= threshold)[0]
    return int(steps[hit[0]]) if len(hit) else None


def summarize(out: pathlib.Path, command: str) -> None:
    runs = []
    for status_path in sorted(out.glob("runs/*/*/seed*/status.json")):
        status = json.loads(status_path.read_text())
        episodes = json.loads((status_path.parent / "episodes.json").read_text())
        game, variant, seed = status_path.parts[-4], status_path.parts[-3], int(status_path.parts[-2][4:])
        steps, means = running_mean(episodes)
        runs.append(
            dict(
                game=game,
                variant=variant,
                seed=seed,
                done=bool(status.get("done")),
                timesteps=int(status["checkpoint_timesteps"]),
                budget=int(status["budget"]),
                episodes=len(episodes),
                final_mean=float(means[-1]) if len(means) else None,
                steps_per_second_cpu=status["checkpoint_timesteps"] / max(status["cpu_seconds"], 1e-9),
                hyperparams=status.get("hyperparams"),
                curve=[
                    [int(s), round(float(m), 3)]
                    for s, m in zip(steps[:: max(1, len(steps) // 400)], means[:: max(1, len(steps) // 400)])
                ],
                _steps=steps,
                _means=means,
            )
        )
    games = sorted({r["game"] for r in runs})
    order = [v for v in VARIANTS if any(r["variant"] == v for r in runs)]
    lines = [
        "# MinAtar: A2C / PPO against ACKTR (expand, reduce, cheap), SMAC, KFRELAX",
        "",
        "Written by `python benchmarks/pixels.py summarize` from the runs below (`results.json` has every run's curve, "
        "the hyperparameters, the commit and the library versions). Final = the last 100-episode training mean; "
        "threshold = A2C's final mean (mean over its finished seeds); steps to it: median over seeds (a seed that "
        "never reaches it counts as infinite; '-' when the median is infinite); steps/s on process CPU time, one "
        "thread per run, ratio to A2C on the same game in the same benchmark run. Unfinished runs are marked with "
        "their timesteps and are left out of the medians.",
        "",
        f"Command: `{command}`",
        "",
    ]
    summary: dict[str, Any] = {}
    for game in games:
        rows = [r for r in runs if r["game"] == game]
        a2c_final = [r["final_mean"] for r in rows if r["variant"] == "a2c" and r["done"] and r["final_mean"] is not None]
        threshold = float(np.mean(a2c_final)) if a2c_final else None
        a2c_sps = [r["steps_per_second_cpu"] for r in rows if r["variant"] == "a2c"]
        lines += [
            f"## {game} (threshold {threshold:.2f})" if threshold is not None else f"## {game} (no finished A2C run yet)",
            "",
            "| variant | seeds done | final (per seed) | final mean | steps to threshold (per seed) | median | vs A2C | "
            "steps/s | vs A2C |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        medians: dict[str, float] = {}
        for variant in order:
            vrows = sorted([r for r in rows if r["variant"] == variant], key=lambda r: r["seed"])
            if not vrows:
                continue
            done = [r for r in vrows if r["done"]]
            for r in vrows:
                r["steps_to_threshold"] = (
                    first_crossing(r["_steps"], r["_means"], threshold) if threshold is not None else None
                )
            finals = " / ".join(
                (f"{r['final_mean']:.2f}" if r["final_mean"] is not None else "-")
                + ("" if r["done"] else f" (at {r['timesteps']})")
                for r in vrows
            )
            final_mean = np.mean([r["final_mean"] for r in done]) if done else float("nan")
            hits = [r["steps_to_threshold"] for r in done]
            median = float(np.median([h if h is not None else np.inf for h in hits])) if done else float("nan")
            medians[variant] = median
            sps = np.mean([r["steps_per_second_cpu"] for r in vrows])
            sps_ratio = sps / np.mean(a2c_sps) if a2c_sps else float("nan")
            hits_text = " / ".join(
                ("-" if r["steps_to_threshold"] is None else f"{r['steps_to_threshold'] / 1e6:.2f}M")
                + ("" if r["done"] else " (running)")
                for r in vrows
            )
            median_text = "-" if not np.isfinite(median) else f"{median / 1e6:.2f}M"
            lines.append(
                f"| {variant} | {len(done)}/{len(vrows)} | {finals} | {final_mean:.2f} | {hits_text} | {median_text} | "
                f"RATIO_{variant} | {sps:.0f} | {sps_ratio:.2f} |"
            )
        a2c_median = medians.get("a2c", float("nan"))
        for variant, median in medians.items():
            ratio = median / a2c_median if np.isfinite(median) and np.isfinite(a2c_median) and a2c_median > 0 else None
            text = f"{ratio:.2f}" if ratio is not None else ("-" if variant != "a2c" else "1.00")
            lines = [line.replace(f"RATIO_{variant} |", f"{text} |") for line in lines]
        lines += ["", f"![{game}](curves_{game}.png)", ""]
        summary[game] = {"threshold": threshold}
        _plot(out, game, rows, order, threshold)
    for r in runs:
        del r["_steps"], r["_means"]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(
        json.dumps(dict(command=command, provenance=provenance(), games=summary, runs=runs), indent=1)
    )
    print("\n".join(lines))


def _plot(out: pathlib.Path, game: str, rows: list[dict[str, Any]], order: list[str], threshold: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant in order:
        vrows = [r for r in rows if r["variant"] == variant and len(r["_steps"])]
        if not vrows:
            continue
        grid = np.linspace(0, max(r["budget"] for r in vrows), 200)
        curves = [np.interp(grid, r["_steps"], r["_means"], left=np.nan, right=np.nan) for r in vrows]
        stacked = np.vstack(curves)
        with warnings.catch_warnings():  # grid points that no seed has reached yet are NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, low, high = np.nanmean(stacked, axis=0), np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)
        (line,) = ax.plot(grid, mean, label=f"{variant} ({len(vrows)} seeds)")
        ax.fill_between(grid, low, high, alpha=0.15, color=line.get_color())
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=0.8, label="A2C final")
    ax.set_xlabel("timesteps")
    ax.set_ylabel("100-episode training mean return")
    ax.set_title(f"MinAtar {game} (mean, min-max over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"curves_{game}.png", dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--games", nargs="+", default=["Breakout", "SpaceInvaders"])
    run.add_argument("--variants", nargs="+", default=["a2c", "ppo", "acktr", "acktr-reduce", "acktr-cheap"], choices=VARIANTS)
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    run.add_argument("--budget", type=int, default=2_000_000)
    run.add_argument("--checkpoint", type=int, default=250_000, help="steps between checkpoints")
    run.add_argument("--workers", type=int, default=2)
    run.add_argument("--out", default=DEFAULT_OUT)
    summary = sub.add_parser("summarize")
    summary.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.log"  # every run command, with its start time: the summary records them
    if args.command == "summarize":
        commands = dict.fromkeys(line.split("\t")[1] for line in log.read_text().splitlines()) if log.exists() else {}
        summarize(out, " ; ".join(commands))
        return
    with open(log, "a") as file:
        file.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\tpython benchmarks/pixels.py {' '.join(sys.argv[1:])}\n")
    jobs = [
        dict(game=game, variant=variant, seed=seed, budget=args.budget, checkpoint=args.checkpoint, out=str(out))
        for seed in args.seeds
        for game in args.games
        for variant in args.variants
    ]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with mp.get_context("spawn").Pool(args.workers, maxtasksperchild=1) as pool:
        for message in pool.imap_unordered(run_one, jobs):
            print(message, flush=True)


if __name__ == "__main__":
    main()
