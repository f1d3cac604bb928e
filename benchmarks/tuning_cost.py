"""
CPU time spent on the hyperparameter work of issue "Hyperparameters that win", from the records it left.

- ``benchmarks/results/tuning/*.db``: each Optuna trial ran as one single-threaded process, so its wall time
  (``datetime_complete - datetime_start``) stands for the CPU time of one core; pruned and failed trials count too.
- ``benchmarks/results/sample_efficiency/*.json``: the ``seconds`` of each run (one thread per run).

Not in these files: interrupted runs that were not saved, the shipped agents' training and the evaluations. Where
more single-threaded jobs ran than there were cores (three on two, at times), their wall time overstates the CPU
time they got.

Usage::

    python benchmarks/tuning_cost.py
"""

import json
import pathlib

import optuna

RESULTS = pathlib.Path(__file__).parent / "results"


def study_hours(path: pathlib.Path) -> dict[str, tuple[int, float]]:
    """Per study in one storage file: (number of trials, core-hours)."""
    storage = f"sqlite:///{path}"
    hours = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        seconds = sum(
            (trial.datetime_complete - trial.datetime_start).total_seconds()
            for trial in study.trials
            if trial.datetime_start is not None and trial.datetime_complete is not None
        )
        hours[summary.study_name] = (len(study.trials), seconds / 3600)
    return hours


def run_hours(path: pathlib.Path) -> tuple[int, float]:
    """(number of runs, core-hours) of one sample_efficiency output file."""
    runs = json.loads(path.read_text())
    return len(runs), sum(run.get("seconds", 0.0) for run in runs) / 3600


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    total = 0.0
    print("| record | runs or trials | core-hours |\n|---|---:|---:|")
    for path in sorted((RESULTS / "tuning").glob("*.db")):
        for name, (count, hours) in study_hours(path).items():
            print(f"| study `{name}` ({path.name}) | {count} | {hours:.1f} |")
            total += hours
    for path in sorted((RESULTS / "sample_efficiency").glob("*.json")):
        count, hours = run_hours(path)
        print(f"| `sample_efficiency/{path.name}` | {count} | {hours:.1f} |")
        total += hours
    print(f"| **total** | | **{total:.1f}** |")


if __name__ == "__main__":
    main()
