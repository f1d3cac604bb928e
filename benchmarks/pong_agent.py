"""
The Pong agent: ACKTR's packaged ``atari`` entry on PongNoFrameskip-v4, trained with ``sb3-natgrad train`` in chunks
that survive the end of a session, until its 100-episode training mean reaches the target (Wu et al. 2017, Table 1
and Figure 1: ACKTR reaches about 20 on Pong; the target here is 18).

    python benchmarks/pong_agent.py run --minutes 120        # start, or continue from the last chunk's model
    python benchmarks/pong_agent.py summarize                # curve, timesteps to the target, README.md

Each chunk is one real ``sb3-natgrad train`` command, the first one

    sb3-natgrad train --algo acktr --env PongNoFrameskip-v4 --seed 0 -f logs/pong --eval-freq -1 \\
        --save-freq 640000 --log-interval 10 --num-threads N

and every later one the same with ``-i <out>/checkpoint.zip -n <T - t>`` (``T``: the entry's ``n_timesteps``, ``t``:
the checkpoint's timesteps), so that ``num_timesteps`` and the linear learning-rate decay continue where the last
chunk stopped (``sb3-natgrad train -i`` continues the timestep count). ``--params KEY:VALUE ...`` (train's
``-params``) overrides entry values; the first chunk fixes them for every later chunk of the same ``--out``. A chunk
ends after ``--minutes`` or once the training mean reaches ``--stop-at``: the script sends SIGINT, the command saves
the model, and the script copies it to ``<out>/checkpoint.zip`` (kept in git, so the next session continues from it)
and the chunk's output to ``<out>/chunk<k>.log``. The training mean is SB3's ``rollout/ep_rew_mean`` (the last 100
finished games, full games: the Monitor sits inside the Atari wrapper), read from the command's own log every
``--log-interval`` updates.

A resumed chunk restarts the 32 games (the envs are new) from the saved weights, K-FAC state and RNG states; its curve
continues the previous one (``summarize`` draws the chunks in one plot with their boundaries).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from typing import Any

from provenance import provenance

DEFAULT_OUT = "benchmarks/results/pong"
ALGO, ENV = "acktr", "PongNoFrameskip-v4"
ROW = re.compile(r"^\|\s+(\S+)\s+\|\s+(\S+)\s+\|$")


def model_timesteps(path: pathlib.Path) -> int:
    """``num_timesteps`` stored in an SB3 model file."""
    with zipfile.ZipFile(path) as archive:
        return int(json.loads(archive.read("data"))["num_timesteps"])


def planned_timesteps() -> int:
    """The ``n_timesteps`` of the packaged ``atari`` entry."""
    import yaml

    import sb3_natgrad

    entry = yaml.safe_load((pathlib.Path(sb3_natgrad.__file__).parent / "hyperparams" / f"{ALGO}.yml").read_text())["atari"]
    return int(float(entry["n_timesteps"]))


def parse_log(text: str) -> list[tuple[int, float]]:
    """``(total_timesteps, ep_rew_mean)`` of every SB3 log table in a ``train`` output that has both."""
    points, table = [], {}
    for line in text.splitlines():
        match = ROW.match(line.strip())
        if match:
            table[match.group(1)] = match.group(2)
        elif line.startswith("---") and table:
            if "total_timesteps" in table and "ep_rew_mean" in table:
                points.append((int(table["total_timesteps"]), float(table["ep_rew_mean"])))
            table = {}
    return points


def _status(out: pathlib.Path) -> dict[str, Any]:
    path = out / "status.json"
    return json.loads(path.read_text()) if path.exists() else {"chunks": []}


def _write_json(path: pathlib.Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def run(args: argparse.Namespace) -> None:
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status = _status(out)
    checkpoint = out / "checkpoint.zip"
    total = planned_timesteps()
    command = [args.cli, "train", "--algo", ALGO, "--env", ENV, "--seed", str(args.seed), "-f", args.logs]
    command += ["--eval-freq", "-1", "--save-freq", str(args.save_freq), "--log-interval", "10"]
    command += ["--num-threads", str(args.num_threads)]
    params = status.get("params", []) if status["chunks"] else list(args.params)
    if status["chunks"] and args.params and list(args.params) != params:
        sys.exit(
            f"{out} was trained with --params {' '.join(params) or '(none)'}; "
            f"a chunk cannot change them to {' '.join(args.params)}"
        )
    if params:
        command += ["-params", *params]
    start = 0
    if status["chunks"]:
        if not checkpoint.exists():
            sys.exit(f"{out}/status.json lists {len(status['chunks'])} chunks but {checkpoint} is missing")
        start = model_timesteps(checkpoint)
        if start >= total:
            sys.exit(f"{checkpoint} is at {start} of {total} steps: the run is complete")
        command += ["-i", str(checkpoint), "-n", str(total - start)]
    index = len(status["chunks"]) + 1
    log_path = out / f"chunk{index}.log"
    print(f"chunk {index} from {start} steps: {' '.join(command)}", flush=True)
    began = time.time()
    deadline = began + 60 * args.minutes
    env = dict(os.environ, OMP_NUM_THREADS=str(args.num_threads), MKL_NUM_THREADS=str(args.num_threads))
    code, run_folder, reason = _train(command, env, log_path, deadline, args.stop_at, args.minutes)
    if code not in (0, 130) or run_folder is None:
        sys.exit(f"chunk {index} failed with exit code {code}; see {log_path}")
    saved = run_folder / f"{ENV}.zip"
    if not saved.exists():
        sys.exit(f"chunk {index}: {saved} was not written; see {log_path}")
    end = model_timesteps(saved)
    if end <= start:
        sys.exit(f"chunk {index}: {saved} is at {end} steps, not beyond the checkpoint's {start}")
    tmp = checkpoint.with_suffix(".zip.tmp")
    shutil.copyfile(saved, tmp)
    os.replace(tmp, checkpoint)
    status["params"] = params
    status.setdefault("provenance", []).append(provenance())
    status["chunks"].append(
        {
            "log": log_path.name,
            "command": " ".join(command),
            "start_timesteps": start,
            "end_timesteps": end,
            "wall_seconds": round(time.time() - began, 1),
            "ended": reason,
        }
    )
    _write_json(out / "status.json", status)
    print(f"chunk {index}: {start} -> {end} steps in {time.time() - began:.0f} s ({reason}); model in {checkpoint}")


def _train(
    command: list[str], env: dict[str, str], log_path: pathlib.Path, deadline: float, stop_at: float, minutes: float
) -> tuple[int, pathlib.Path | None, str]:
    """
    Run one ``train`` command, its output into ``log_path``; SIGINT it (it then saves at the next env step) at the
    deadline, once the training mean reaches ``stop_at``, or when this script gets Ctrl-C / SIGTERM / SIGHUP.

    :return: the exit code, the run folder (``Log path:`` of the output) and why the chunk ended
    """
    reason = "finished"
    # Its own session: a Ctrl-C or hang-up meant for this script reaches the training only as the one SIGINT sent
    # below.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    run_folder: pathlib.Path | None = None
    interrupted = False

    def stop(why: str) -> None:
        nonlocal interrupted, reason
        if not interrupted:
            reason, interrupted = why, True
            print(f"stopping: {why}", flush=True)
            process.send_signal(signal.SIGINT)

    def terminated(signum: int, frame: Any) -> None:
        stop(f"signal {signal.Signals(signum).name} to this script")

    for name in ("SIGTERM", "SIGHUP"):
        signal.signal(getattr(signal, name), terminated)
    assert process.stdout is not None
    with open(log_path, "w") as log:
        tail: list[str] = []
        while True:
            try:
                line = process.stdout.readline()
            except KeyboardInterrupt:
                stop("Ctrl-C to this script")
                continue
            if not line:
                break
            log.write(line)
            log.flush()
            tail = [*tail[-59:], line]
            if line.startswith("Log path:"):
                run_folder = pathlib.Path(line.split(":", 1)[1].strip())
            if interrupted or not line.startswith("---"):
                continue
            points = parse_log("".join(tail))
            if points and points[-1][1] >= stop_at:
                stop(f"training mean {points[-1][1]} >= {stop_at}")
            elif time.time() > deadline:
                stop(f"time limit of {minutes} minutes")
    return process.wait(), run_folder, reason


def summarize(args: argparse.Namespace) -> None:
    out = pathlib.Path(args.out)
    status = _status(out)
    curve: list[tuple[int, float]] = []
    rows = []
    for number, chunk in enumerate(status["chunks"], start=1):
        points = parse_log((out / chunk["log"]).read_text())
        curve += points
        steps = chunk["end_timesteps"] - chunk["start_timesteps"]
        running = chunk["wall_seconds"] - chunk.get("paused_seconds", 0.0)  # a chunk paused by hand records how long
        rate = steps / running if running > 0 else float("nan")
        last = f"{points[-1][1]:.1f}" if points else "-"
        rows.append(
            f"| {number} | {chunk['start_timesteps']:,} | {chunk['end_timesteps']:,} | {chunk['wall_seconds'] / 60:.0f} "
            f"| {rate:.0f} | {last} | {chunk['ended']} |"
        )
    reached = next((t for t, mean in curve if mean >= args.target), None)
    lines = [
        f"# ACKTR on {ENV}: the shipped agent's training run",
        "",
        "Written by `python benchmarks/pong_agent.py summarize` from the chunk logs below (`status.json` has each chunk's "
        "command, provenance and timesteps). Training mean = SB3's `rollout/ep_rew_mean`, the last 100 finished games.",
        "",
        f"Timesteps to a training mean of {args.target}: **{f'{reached:,}' if reached is not None else 'not reached yet'}**"
        f" (last point: {curve[-1][1]:.1f} at {curve[-1][0]:,})."
        if curve
        else "No chunk has run yet.",
        "",
        "| chunk | from | to | minutes | steps/s (wall, without pauses) | last training mean | ended |",
        "|---|---:|---:|---:|---:|---:|---|",
        *rows,
        "",
        "![training curve](curve.png)",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))
    if curve:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(7, 4))
        axis.plot([t for t, _ in curve], [mean for _, mean in curve], label="ACKTR (atari entry), seed 0")
        for chunk in status["chunks"][1:]:
            axis.axvline(chunk["start_timesteps"], color="grey", linewidth=0.5, linestyle=":")
        axis.axhline(args.target, color="black", linewidth=0.5)
        axis.set_xlabel("timesteps (4 frames each)")
        axis.set_ylabel("100-game training mean")
        axis.set_title(ENV)
        axis.legend(loc="lower right")
        figure.tight_layout()
        figure.savefig(out / "curve.png", dpi=100)
    print((out / "README.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train one chunk (start or continue)")
    run_parser.add_argument("--minutes", type=float, required=True, help="wall-clock length of the chunk")
    run_parser.add_argument("--stop-at", type=float, default=19.0, help="end the chunk once the training mean reaches this")
    run_parser.add_argument("--seed", type=int, default=0)
    run_parser.add_argument("--num-threads", type=int, default=1)
    run_parser.add_argument("--save-freq", type=int, default=640_000, help="steps between rl-zoo3 checkpoints")
    run_parser.add_argument("--logs", default="logs/pong", help="train's -f folder")
    run_parser.add_argument("--cli", default="sb3-natgrad")
    run_parser.add_argument("--out", default=DEFAULT_OUT)
    run_parser.add_argument(
        "--params", nargs="+", default=[], metavar="KEY:VALUE", help="train's -params, fixed by the first chunk of --out"
    )
    summary = commands.add_parser("summarize", help="README.md and curve.png from the chunk logs")
    summary.add_argument("--target", type=float, default=18.0)
    summary.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args()
    run(args) if args.command == "run" else summarize(args)


if __name__ == "__main__":
    main()
