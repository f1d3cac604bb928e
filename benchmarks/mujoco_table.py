"""
The MuJoCo table of ``benchmarks/results/sample_efficiency/README.md`` from the runs of ``benchmarks/mujoco_1m.sh``.

For each of Wu et al. (2017)'s eight tasks: every seed's final 100-episode training mean after 1M steps, per
algorithm, the median over the finished seeds, and whether ACKTR's median is at or above A2C's (the issue's target:
on at least 6 of 8 tasks). A run still under way is shown with its last checkpoint's mean when ``--checkpoint-dir``
is given; it counts in no median.

    python benchmarks/mujoco_table.py --checkpoint-dir logs/se_checkpoints

``--results`` takes several files (a sweep and the runs it is compared with); a run (label, task, seed) found in two
of them with different results is refused.

    cd benchmarks/results/sample_efficiency
    python ../../mujoco_table.py --labels acktr acktr-tr01 --seeds 0 1 \
        --results mujoco_acktr_tr_sweep.json mujoco_hc_sweep.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics

TASKS = (
    "InvertedPendulum-v5",
    "InvertedDoublePendulum-v5",
    "Reacher-v5",
    "Swimmer-v5",
    "Hopper-v5",
    "HalfCheetah-v5",
    "Walker2d-v5",
    "Ant-v5",
)


def _cell(results: dict, checkpoints: pathlib.Path | None, label: str, env: str, seed: int) -> tuple[str, float | None]:
    final = results.get((label, env, seed))
    if final is not None:
        return f"{final:.1f}", final
    if checkpoints is not None:
        state = checkpoints / f"{label}_{env}_{seed}" / "current" / "state.json"
        if state.exists():
            timesteps, mean = json.loads(state.read_text())["curve"][-1]
            return f"({mean:.1f} at {timesteps // 1000}k)", None
    return "-", None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", nargs="+", default=["benchmarks/results/sample_efficiency/mujoco_1m.json"])
    parser.add_argument("--checkpoint-dir", default=None, help="show runs under way from their last checkpoint")
    parser.add_argument(
        "--labels", nargs="+", default=["a2c", "acktr-envs8"], help="the baseline's label first, then those compared with it"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[10, 11, 12])
    args = parser.parse_args()
    if len(args.labels) < 2:
        parser.error(f"--labels {' '.join(args.labels)}: give the baseline and at least one label to compare with it")

    results: dict[tuple[str, str, int], float] = {}
    for name in args.results:
        path = pathlib.Path(name)
        if not path.is_file():
            parser.error(f"--results {name}: no such file")
        for run in json.loads(path.read_text()):
            key, final = (run["algo"], run["env"], run["seed"]), run["final_100_episode_mean"]
            if results.setdefault(key, final) != final:
                parser.error(f"--results: the run {key} is in two files with different results ({results[key]} and {final})")
    checkpoints = pathlib.Path(args.checkpoint_dir) if args.checkpoint_dir else None
    known = sorted({label for label, _, _ in results})
    for label in args.labels:
        under_way = checkpoints is not None and any(checkpoints.glob(f"{label}_*"))
        if label not in known and not under_way:
            parser.error(f"--labels: no run labelled {label!r} in {' '.join(args.results)} (labels there: {', '.join(known)})")
    baseline, others = args.labels[0], args.labels[1:]
    seeds = " / ".join(str(seed) for seed in args.seeds)
    columns = [f"{label}, seeds {seeds} | median" for label in args.labels] + [f"{label} ≥ {baseline}" for label in others]
    print(f"| task | {' | '.join(columns)} |")
    print("|---|" + "---:|---:|" * len(args.labels) + "---|" * len(others))
    wins = dict.fromkeys(others, 0)
    compared = dict.fromkeys(others, 0)
    for env in TASKS:
        cells_out, medians = [], {}
        for label in args.labels:
            cells = [_cell(results, checkpoints, label, env, seed) for seed in args.seeds]
            finished = [value for _, value in cells if value is not None]
            median_text = "-"
            if finished:
                medians[label] = statistics.median(finished)
                median_text = f"{medians[label]:.1f}"
                if len(finished) < len(args.seeds):
                    median_text += f" ({len(finished)} of {len(args.seeds)})"
            cells_out += [" / ".join(text for text, _ in cells), median_text]
        for label in others:
            verdict = ""
            if label in medians and baseline in medians:
                compared[label] += 1
                wins[label] += medians[label] >= medians[baseline]
                verdict = "yes" if medians[label] >= medians[baseline] else "**no**"
            cells_out.append(verdict)
        print(f"| {env} | {' | '.join(cells_out)} |")
    print()
    for label in others:
        tally = f"{wins[label]} of the {compared[label]} tasks"
        print(f"{label}'s median is at or above {baseline}'s on {tally} where both have a finished run.")


if __name__ == "__main__":
    main()
