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

``--update FILE`` writes the table into FILE between its ``<!-- mujoco-table -->`` and ``<!-- /mujoco-table -->``
lines instead of printing it (the README section is refreshed this way; ``--marker NAME`` picks other markers):

    python benchmarks/mujoco_table.py --labels a2c acktr-envs8 smac --update benchmarks/results/sample_efficiency/README.md
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import tempfile

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
    parser.add_argument("--update", default=None, help="write the table between the markers of this file")
    parser.add_argument("--marker", default="mujoco-table", help="the markers' name: <!-- NAME --> and <!-- /NAME -->")
    args = parser.parse_args()
    markers = (f"<!-- {args.marker} -->", f"<!-- /{args.marker} -->")
    if args.update is not None:
        _check_markers(parser, pathlib.Path(args.update), markers)
    if len(args.labels) < 2:
        parser.error(f"--labels {' '.join(args.labels)}: give the baseline and at least one label to compare with it")

    results = _load_results(parser, args.results)
    checkpoints = pathlib.Path(args.checkpoint_dir) if args.checkpoint_dir else None
    known = sorted({label for label, _, _ in results})
    for label in args.labels:
        under_way = checkpoints is not None and any(checkpoints.glob(f"{label}_*"))
        if label not in known and not under_way:
            parser.error(f"--labels: no run labelled {label!r} in {' '.join(args.results)} (labels there: {', '.join(known)})")
    lines = _table(results, checkpoints, args.labels, args.seeds)
    if args.update is None:
        print("\n".join(lines))
    else:
        _write_between_markers(pathlib.Path(args.update), lines, markers)
        print(f"wrote the table into {args.update}")


def _load_results(parser: argparse.ArgumentParser, names: list[str]) -> dict[tuple[str, str, int], float]:
    """The final means of every run (label, task, seed) of the files; a run in two files must agree."""
    results: dict[tuple[str, str, int], float] = {}
    for name in names:
        path = pathlib.Path(name)
        if not path.is_file():
            parser.error(f"--results {name}: no such file")
        for run in json.loads(path.read_text()):
            key, final = (run["algo"], run["env"], run["seed"]), run["final_100_episode_mean"]
            if results.setdefault(key, final) != final:
                parser.error(f"--results: the run {key} is in two files with different results ({results[key]} and {final})")
    return results


def _table(
    results: dict[tuple[str, str, int], float], checkpoints: pathlib.Path | None, labels: list[str], seeds_run: list[int]
) -> list[str]:
    """The Markdown table (one row per task, the baseline's label first) and the tallies below it."""
    baseline, others = labels[0], labels[1:]
    seeds = " / ".join(str(seed) for seed in seeds_run)
    columns = [f"{label}, seeds {seeds} | median" for label in labels] + [f"{label} ≥ {baseline}" for label in others]
    lines = [f"| task | {' | '.join(columns)} |", "|---|" + "---:|---:|" * len(labels) + "---|" * len(others)]
    wins = dict.fromkeys(others, 0)
    compared = dict.fromkeys(others, 0)
    for env in TASKS:
        cells_out, medians = [], {}
        for label in labels:
            cells = [_cell(results, checkpoints, label, env, seed) for seed in seeds_run]
            finished = [value for _, value in cells if value is not None]
            median_text = "-"
            if finished:
                medians[label] = statistics.median(finished)
                median_text = f"{medians[label]:.1f}"
                if len(finished) < len(seeds_run):
                    median_text += f" ({len(finished)} of {len(seeds_run)})"
            cells_out += [" / ".join(text for text, _ in cells), median_text]
        for label in others:
            verdict = ""
            if label in medians and baseline in medians:
                compared[label] += 1
                wins[label] += medians[label] >= medians[baseline]
                verdict = "yes" if medians[label] >= medians[baseline] else "**no**"
            cells_out.append(verdict)
        lines.append(f"| {env} | {' | '.join(cells_out)} |")
    lines.append("")
    for label in others:
        tally = f"{wins[label]} of the {compared[label]} tasks"
        lines.append(f"{label}'s median is at or above {baseline}'s on {tally} where both have a finished run.")
    return lines


def _check_markers(parser: argparse.ArgumentParser, path: pathlib.Path, markers: tuple[str, str]) -> None:
    if not path.is_file():
        parser.error(f"--update {path}: no such file")
    text = path.read_text().splitlines()
    for marker in markers:
        if text.count(marker) != 1:
            parser.error(f"--update {path}: needs exactly one line {marker!r}, found {text.count(marker)}")
    if text.index(markers[0]) > text.index(markers[1]):
        parser.error(f"--update {path}: {markers[1]!r} comes before {markers[0]!r}")


def _write_between_markers(path: pathlib.Path, lines: list[str], markers: tuple[str, str]) -> None:
    text = path.read_text().splitlines()
    start, end = text.index(markers[0]), text.index(markers[1])
    new = "\n".join([*text[: start + 1], *lines, *text[end:]]) + "\n"
    # write a temporary file beside it and rename it over the old one: an interruption leaves the old file whole
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w") as file:
        file.write(new)
    os.replace(temporary, path)


if __name__ == "__main__":
    main()
