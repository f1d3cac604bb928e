"""
rl-zoo3 integration: the ``sb3-natgrad`` command end to end, each call in a real subprocess.

Budget: a few hundred environment steps per call (the runs check plumbing, not learning).
"""

from __future__ import annotations

import glob
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

pytest.importorskip("rl_zoo3")

from sb3_natgrad import ACKTR
from sb3_natgrad.zoo import (
    ZOO_ALGORITHMS,
    ZooAlgorithm,
    default_config,
    load_algorithm,
    register,
    unavailable_algorithms,
)
from sb3_natgrad.zoo.hyperparams_opt import convert_acktr_params, sample_acktr_params

_SCRIPT = os.path.join(os.path.dirname(sys.executable), "sb3-natgrad")
#: The console script when installed, else the module (same code).
CLI = [_SCRIPT] if os.path.isfile(_SCRIPT) else [sys.executable, "-m", "sb3_natgrad"]
ENV = "CartPole-v1"
TIMEOUT = 300


def _environ(extra_path: str | None = None) -> dict[str, str]:
    environ = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SDL_VIDEODRIVER="dummy")
    environ.pop("SB3_NATGRAD_DEBUG", None)
    if extra_path is not None:
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [extra_path, environ.get("PYTHONPATH")]))
    return environ


def run(*args: str, cwd: str | os.PathLike, ok: bool = True, extra_path: str | None = None, cli: list[str] | None = None):
    """Run ``sb3-natgrad *args``; with ``ok`` assert it succeeded."""
    result = subprocess.run(
        [*(cli or CLI), *args],
        cwd=cwd,
        env=_environ(extra_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if ok:
        assert result.returncode == 0, (
            f"{args} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


_MARK = "@@sb3-natgrad-results@@"
# Calls cli.main() for several argument lists in ONE process (the imports dominate a call's cost), each with its own
# stdout/stderr; a traceback ends up in that call's stderr. Also reports the imported modules.
_DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, sys, traceback
    from sb3_natgrad.zoo.cli import main
    results = []
    for args in json.loads(sys.argv[1]):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = -1
        if "matplotlib.pyplot" in sys.modules:  # as if each call were a new process
            sys.modules["matplotlib.pyplot"].close("all")
        results.append(dict(returncode=code, stdout=out.getvalue(), stderr=err.getvalue()))
    print(sys.argv[2] + json.dumps(dict(results=results, modules=sorted(sys.modules))))
    """
)


def run_in_one_process(calls: list[list[str]], cwd: str | os.PathLike) -> tuple[list[SimpleNamespace], list[str]]:
    """``sb3-natgrad <args>`` for each ``args`` of ``calls`` through ``cli.main`` in one subprocess."""
    result = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(calls), _MARK],
        cwd=cwd,
        env=_environ(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0 and _MARK in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.split(_MARK, 1)[1])
    return [SimpleNamespace(**call) for call in report["results"]], report["modules"]


def assert_ok(result: SimpleNamespace) -> None:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def assert_one_line_error(
    result: subprocess.CompletedProcess | SimpleNamespace, command: str, *needles: str, code: int | None = None
) -> None:
    """A non-zero exit, no traceback, and one ``error:`` line on stderr that names the problem."""
    assert result.returncode != 0, result.stdout[-2000:]
    if code is not None:
        assert result.returncode == code
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"sb3-natgrad {command}: error: "), errors[0]
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One short CartPole run with evaluation and checkpoints; returns the working directory (logs in ./logs)."""
    workdir = tmp_path_factory.mktemp("zoo")
    run(
        *f"train --algo acktr --env {ENV} -n 400 --eval-freq 200 --eval-episodes 2 --save-freq 200".split(),
        *"-f logs --seed 0 --num-threads 1".split(),
        cwd=workdir,
    )
    return str(workdir)


# ---------------------------------------------------------------------------------------------------------------------
# train / enjoy / record-video / continue training


def test_train_writes_rl_zoo3_layout(trained: str) -> None:
    run_dir = os.path.join(trained, "logs", "acktr", f"{ENV}_1")
    for name in [f"{ENV}.zip", "best_model.zip", "evaluations.npz", "rl_model_200_steps.zip", "rl_model_400_steps.zip"]:
        assert os.path.isfile(os.path.join(run_dir, name)), name
    # The CartPole-v1 entry of the packaged file has 8 envs: one monitor file each.
    assert len(glob.glob(os.path.join(run_dir, "*.monitor.csv"))) == 8
    for name in ["config.yml", "args.yml", "command.txt"]:
        assert os.path.isfile(os.path.join(run_dir, ENV, name)), name

    with open(os.path.join(run_dir, ENV, "config.yml")) as file:
        config = dict(yaml.load(file, Loader=yaml.UnsafeLoader))
    with open(default_config("acktr")) as file:
        packaged = yaml.safe_load(file)[ENV]
    assert config == packaged  # the packaged file was used, unchanged
    with open(os.path.join(run_dir, ENV, "args.yml")) as file:
        args = dict(yaml.load(file, Loader=yaml.UnsafeLoader))
    assert args["algo"] == "acktr"
    assert args["conf_file"].replace(os.sep, "/").endswith("hyperparams/acktr.yml")
    with open(os.path.join(run_dir, ENV, "command.txt")) as file:
        assert "train" in file.read()

    evaluations = np.load(os.path.join(run_dir, "evaluations.npz"))
    assert list(evaluations["timesteps"]) == [200, 400]
    assert evaluations["results"].shape == (2, 2)

    model = ACKTR.load(os.path.join(run_dir, f"{ENV}.zip"), device="cpu")
    assert model.n_envs == 8 and model.num_timesteps >= 400
    assert model.ent_coef == packaged["ent_coef"]
    assert os.path.isfile(os.path.join(run_dir, ENV, "vecnormalize.pkl")) == bool(packaged.get("normalize"))


def test_enjoy_without_a_display_does_not_render_and_prints_no_error_line(trained: str) -> None:
    environ = {key: value for key, value in _environ().items() if key not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    result = subprocess.run(
        [*CLI, "enjoy", "--algo", "acktr", "--env", ENV, "-f", "logs", "-n", "50"],
        cwd=trained,
        env=environ,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "No display: running without rendering" in result.stdout
    assert "error" not in result.stderr.lower(), result.stderr


def test_enjoy_runs_the_trained_agent(trained: str) -> None:
    result = run("enjoy", "--algo", "acktr", "--env", ENV, "-f", "logs", "--no-render", "-n", "300", cwd=trained)
    assert os.path.join("logs", "acktr", f"{ENV}_1", f"{ENV}.zip") in result.stdout
    assert "Episode Reward" in result.stdout  # an episode finished: the agent stepped the env


@pytest.mark.parametrize("algo", ["smac", "kfrelax"])
def test_train_then_enjoy_every_algorithm(algo: str, tmp_path) -> None:
    """SMAC and KFRELAX through the real command: their packaged CartPole-v1 entry, one short run, then enjoy."""
    algo_class = load_algorithm(next(entry for entry in ZOO_ALGORITHMS if entry.name == algo))
    run(*f"train --algo {algo} --env {ENV} -n 2000 --eval-freq 1000 --eval-episodes 2 -f logs --seed 0".split(), cwd=tmp_path)
    run_dir = tmp_path / "logs" / algo / f"{ENV}_1"
    assert (run_dir / f"{ENV}.zip").is_file() and (run_dir / "evaluations.npz").is_file()
    with open(run_dir / ENV / "config.yml") as file:
        config = dict(yaml.load(file, Loader=yaml.UnsafeLoader))
    with open(default_config(algo)) as file:
        assert config == yaml.safe_load(file)[ENV]
    model = algo_class.load(run_dir / f"{ENV}.zip", device="cpu")
    assert type(model) is algo_class and model.num_timesteps >= 2000
    result = run("enjoy", "--algo", algo, "--env", ENV, "-f", "logs", "--no-render", "-n", "600", cwd=tmp_path)
    assert "Episode Reward" in result.stdout


def test_record_video_writes_mp4(trained: str, tmp_path) -> None:
    pytest.importorskip("moviepy", reason="record-video needs moviepy (the video backend of VecVideoRecorder)")
    args = ["record-video", "--algo", "acktr", "--env", ENV, "-f", "logs", "-n", "40", "--load-best", "-o", str(tmp_path)]
    result = run(*args, cwd=trained)
    videos = glob.glob(os.path.join(tmp_path, "*.mp4"))
    assert len(videos) == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert os.path.basename(videos[0]).startswith("best-model-acktr-CartPole-v1")  # --load-best: best_model.zip
    assert os.path.getsize(videos[0]) > 1000


def test_continue_training_with_normalization(tmp_path) -> None:
    # Acrobot-v1 uses VecNormalize: its statistics must be saved and reloaded by -i.
    common = ["--algo", "acktr", "--env", "Acrobot-v1", "-n", "320", "--eval-freq", "-1", "-f", "logs", "--num-threads", "1"]
    run("train", *common, "--seed", "1", cwd=tmp_path)
    first = tmp_path / "logs" / "acktr" / "Acrobot-v1_1"
    assert (first / "Acrobot-v1" / "vecnormalize.pkl").is_file()
    result = run("train", *common, "--seed", "2", "-i", str(first / "Acrobot-v1.zip"), cwd=tmp_path)
    assert "Loading pretrained agent" in result.stdout
    assert "Loading saved VecNormalize stats" in result.stdout
    assert (tmp_path / "logs" / "acktr" / "Acrobot-v1_2" / "Acrobot-v1.zip").is_file()
    # -i continues the timestep count (rl-zoo3 restarts it at 0), so the learning-rate schedule goes on from there
    first_model = ACKTR.load(first / "Acrobot-v1.zip", device="cpu")
    second_model = ACKTR.load(tmp_path / "logs" / "acktr" / "Acrobot-v1_2" / "Acrobot-v1.zip", device="cpu")
    assert second_model.num_timesteps == first_model.num_timesteps + 320
    updates = 320 // (first_model.n_steps * first_model.n_envs)  # the entry's rollouts in 320 steps
    assert updates >= 1 and second_model.kfac.steps == first_model.kfac.steps + updates


# ---------------------------------------------------------------------------------------------------------------------
# Hyperparameter optimization

_OPTIMIZE = (
    f"train --algo acktr --env {ENV} -optimize -n 200 --n-evaluations 1 --eval-episodes 1 --sampler random "
    "--pruner none --no-optim-plots --num-threads 1 -params n_envs:1"
).split()


def test_optimize_two_trials(tmp_path) -> None:
    run(*_OPTIMIZE, "--n-trials", "2", "-f", "logs", "--seed", "0", cwd=tmp_path)
    reports = glob.glob(str(tmp_path / "logs" / "acktr" / f"report_{ENV}_2-trials-200-random-none_*.csv"))
    assert len(reports) == 1
    import pandas as pd

    report = pd.read_csv(reports[0])
    assert len(report) == 2
    assert set(report["state"]) == {"COMPLETE"}
    assert {"params_n_steps", "params_learning_rate", "params_kfac_clip"} <= set(report.columns)


def test_optimize_on_the_training_curve(tmp_path) -> None:
    """--optimization-objective training: each trial's value is its training curve's area, not the last evaluation."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = [*_OPTIMIZE, "--n-trials", "2", "-f", "logs", "--seed", "0", "--storage", storage, "--study-name", "curve"]
    run(*[a if a != "200" else "600" for a in args], "--optimization-objective", "training", cwd=tmp_path)
    trials = optuna.load_study(study_name="curve", storage=storage).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in trials:
        evaluation = trial.intermediate_values[max(trial.intermediate_values)]
        assert 8.0 <= trial.value <= 500.0  # a CartPole return
        assert trial.value != evaluation


def test_trial_repeats_average_several_runs_of_one_trial(tmp_path) -> None:
    """--trial-repeats 2: one trial trains two models with its hyperparameters; its value is the mean of their areas."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = [*_OPTIMIZE, "--n-trials", "1", "-f", "logs", "--seed", "0", "--storage", storage, "--study-name", "repeats"]
    run(
        *[a if a != "200" else "600" for a in args],
        "--optimization-objective",
        "training",
        "--trial-repeats",
        "2",
        cwd=tmp_path,
    )
    (trial,) = optuna.load_study(study_name="repeats", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    areas = trial.user_attrs["training_areas"]
    assert len(areas) == 2 and all(8.0 <= area <= 500.0 for area in areas)  # CartPole returns
    assert areas[0] != areas[1]  # unseeded runs: two different models
    assert trial.value == pytest.approx(sum(areas) / 2)


def test_training_curve_is_the_mean_of_the_training_means() -> None:
    from stable_baselines3.common.callbacks import BaseCallback

    from sb3_natgrad import ACKTR
    from sb3_natgrad.zoo.experiment import TrainingCurve

    seen: list[float] = []

    class Watch(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            if self.model.ep_info_buffer:
                seen.append(sum(e["r"] for e in self.model.ep_info_buffer) / len(self.model.ep_info_buffer))

    model = ACKTR("MlpPolicy", ENV, n_steps=32, seed=0, device="cpu")
    model.learn(640, callback=[TrainingCurve("watched"), Watch()])
    assert len(seen) >= 10
    assert TrainingCurve.finished.pop("watched") == pytest.approx(sum(seen) / len(seen))


def test_distributed_optimization_shares_one_study(tmp_path) -> None:
    optuna = pytest.importorskip("optuna")
    storage = str(tmp_path / "study.log")
    workers = [
        subprocess.Popen(
            [
                *CLI,
                *_OPTIMIZE,
                "--n-trials",
                "1",
                "--storage",
                storage,
                "--study-name",
                "natgrad",
                "-uuid",
                "-f",
                "logs",
                "--seed",
                str(seed),
            ],
            cwd=tmp_path,
            env=_environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=TIMEOUT)
        assert worker.returncode == 0, stdout[-2000:] + stderr[-2000:]

    backend = optuna.storages.journal.JournalFileBackend(storage)
    study = optuna.load_study(study_name="natgrad", storage=optuna.storages.JournalStorage(backend))
    assert len(study.trials) == 2
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials)

    # --trial-id 0 trains with that trial's hyperparameters (rl-zoo3 itself ignores trial 0).
    params = study.trials[0].params
    run(
        *f"train --algo acktr --env {ENV} -n 16 --eval-freq -1 --storage".split(),
        storage,
        *"--study-name natgrad --trial-id 0 -f loaded --num-threads 1 -params n_envs:1".split(),
        cwd=tmp_path,
    )
    with open(tmp_path / "loaded" / "acktr" / f"{ENV}_1" / ENV / "config.yml") as file:
        config = dict(yaml.load(file, Loader=yaml.UnsafeLoader))
    assert config["n_steps"] == params["n_steps"]
    assert config["kfac_clip"] == params["kfac_clip"]
    assert config["gamma"] == pytest.approx(1 - params["one_minus_gamma"])
    expected_lr = f"lin_{params['learning_rate']}" if params["lr_schedule"] == "linear" else params["learning_rate"]
    assert config["learning_rate"] == expected_lr


# ---------------------------------------------------------------------------------------------------------------------
# Plots


def test_plots_write_files(trained: str, tmp_path) -> None:
    workdir = tmp_path / "work"
    shutil.copytree(os.path.join(trained, "logs"), workdir / "logs")
    # A second run of the same env (a copy is enough for plotting): plot-from-file needs two.
    shutil.copytree(workdir / "logs" / "acktr" / f"{ENV}_1", workdir / "logs" / "acktr" / f"{ENV}_2")
    out = str(tmp_path)
    results, _ = run_in_one_process(
        [
            ["all-plots", "-a", "acktr", "-e", ENV, "-f", "logs", "--no-display", "--save-fig", f"{out}/eval.png", "-o",
             f"{out}/results"],
            ["plot-from-file", "-i", f"{out}/results.pkl", "-o", f"{out}/results.png", "--format", "png"],
            ["plot-train", "-a", "acktr", "-e", ENV, "-f", "logs", "-w", "1", "--save-fig", f"{out}/train.png"],
        ],
        cwd=workdir,
    )  # fmt: skip
    for result in results:
        assert_ok(result)
    for name in ["eval.png", "results.png", "train.png"]:
        with open(tmp_path / name, "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n", name

    # With a single run, all-plots stores a scalar as last evaluation and rl-zoo3's plot_from_file crashes on it.
    with open(tmp_path / "results.pkl", "rb") as file:
        saved = pickle.load(file)
    for curve in saved[ENV].values():
        curve["last_evals"] = np.float64(np.mean(curve["last_evals"]))
    with open(tmp_path / "single.pkl", "wb") as file:
        pickle.dump(saved, file)
    result = run("plot-from-file", "-i", str(tmp_path / "single.pkl"), cwd=workdir, ok=False)
    assert_one_line_error(result, "plot-from-file", "single run", code=2)


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: one clear line, non-zero exit code


_BAD_YAML = "CartPole-v1:\n  n_timesteps: [1000\n  policy: 'MlpPolicy'\n"
_TYPO_YAML = "CartPole-v1:\n  n_timesteps: !!float 1e5\n  policy: 'MlpPolicy'\n  learnig_rate: 0.1\n"
_STRING_NUMBER_YAML = "CartPole-v1:\n  n_timesteps: 1e5\n  policy: 'MlpPolicy'\n"


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


#: Stand-ins for broken model files: the checks read only the zip structure and the ``data`` entry.
_ACKTR_DATA = json.dumps({"kfac_clip": 0.001, "vf_fisher_coef": 1.0}).encode()
_GOOD_ZIP = _zip_bytes({"data": _ACKTR_DATA, "policy.pth": b"weights" * 20})
_FLIPPED_ZIP = _GOOD_ZIP.replace(b"weights" * 20, b"weighTs" + b"weights" * 19)  # the CRC no longer matches
_A2C_ZIP = _zip_bytes({"data": json.dumps({"n_steps": 5}).encode(), "policy.pth": b"weights"})
_NOT_A_MODEL_ZIP = _zip_bytes({"notes.txt": b"hello"})


def _run_model(folder: str) -> str:
    """Where ``enjoy --env CartPole-v1 -f <folder>`` finds the final ACKTR model."""
    return f"{folder}/acktr/{ENV}_1/{ENV}.zip"


def _enjoy_case(case: str, content: bytes, needles: list[str]) -> Any:
    return pytest.param(
        ["enjoy", "--env", ENV, "-f", case, "--no-render"], {_run_model(case): content}, needles, id=f"enjoy-{case}"
    )


BAD_INPUTS = [
    pytest.param(["train", "--algo", "acktrr"], {}, ["unknown --algo 'acktrr'", "did you mean 'acktr'"], id="algo"),
    pytest.param(["train", "--env", "CartPol-v1"], {}, ["unknown environment id 'CartPol-v1'"], id="env"),
    pytest.param(["train", "-n", "-5"], {}, ["-n/--n-timesteps -5", "expected a number of steps > 0"], id="n-negative"),
    pytest.param(["train", "-n", "0"], {}, ["-n/--n-timesteps 0"], id="n-zero"),
    pytest.param(["train", "-params", "kfac_clip:abc"], {}, ["-params 'kfac_clip:abc'", "cannot read the value"], id="p-name"),
    pytest.param(["train", "-params", "learning_rate:lin_abc"], {}, ["cannot read the value 'lin_abc'"], id="p-lin"),
    pytest.param(["train", "-params", "n_steps"], {}, ["-params 'n_steps'", "expected key:value"], id="p-colon"),
    pytest.param(["train", "-params", "n_envs:0"], {}, ["n_envs must be an integer >= 1"], id="p-n-envs"),
    pytest.param(
        ["all_plots", "-a", "acktr", "-e", "CartPole-v1", "-f", "nowhere", "--no-display"],
        {},
        ["no such folder: nowhere"],
        id="plots-dir",
    ),
    pytest.param(
        ["all_plots", "-a", "acktr", "-e", "CartPole-v1", "-f", ".", "--no-display"],
        {},
        ["no evaluations.npz"],
        id="plots-empty",
    ),
    pytest.param(["train", "-conf", "bad.yml"], {"bad.yml": _BAD_YAML}, ["malformed YAML", "bad.yml"], id="yaml"),
    pytest.param(
        ["train", "-conf", "typo.yml", "-n", "10"],
        {"typo.yml": _TYPO_YAML},
        ["typo.yml [CartPole-v1]", "unknown key 'learnig_rate'", "did you mean 'learning_rate'"],
        id="yaml-key",
    ),
    pytest.param(
        ["train", "-conf", "str.yml", "-n", "10"],
        {"str.yml": _STRING_NUMBER_YAML},
        ["n_timesteps", "'1e5'", "!!float"],
        id="yaml-string-number",
    ),
    pytest.param(
        ["train", "-n", "10", "-params", "learnig_rate:0.1"], {}, ["-params", "unknown key 'learnig_rate'"], id="key"
    ),
    pytest.param(["train", "-n", "10", "-params", "n_steps:-1"], {}, ["n_steps=-1"], id="value"),
    pytest.param(["train", "-n", "10", "-i", "missing.zip"], {}, ["missing.zip", "file not found"], id="trained-agent"),
    pytest.param(
        ["enjoy", "--env", ENV, "-f", "nowhere", "--no-render"],
        {},
        ["no trained acktr model for CartPole-v1", "nowhere"],
        id="enjoy",
    ),
    pytest.param(["record-video", "--env", ENV, "-f", "nowhere"], {}, ["no trained acktr model"], id="record-video"),
    pytest.param(["plot_trains"], {}, ["unknown command 'plot_trains'"], id="command"),
    # Broken or foreign model files: one line naming the file, before rl-zoo3 builds anything (it used to end in
    # SB3's or torch's traceback).
    _enjoy_case("text", b"this is not a model", [_run_model("text"), "not a model file saved by train"]),
    _enjoy_case("empty", b"", [_run_model("empty"), "not a model file saved by train"]),
    _enjoy_case("truncated", _GOOD_ZIP[: len(_GOOD_ZIP) // 2], [_run_model("truncated"), "not a model file"]),
    _enjoy_case("flipped", _FLIPPED_ZIP, [_run_model("flipped"), "corrupted file", "policy.pth"]),
    _enjoy_case("foreign", _A2C_ZIP, [_run_model("foreign"), "is not a ACKTR model", "'kfac_clip'"]),
    _enjoy_case("no-data", _NOT_A_MODEL_ZIP, [_run_model("no-data"), "no data or policy.pth inside"]),
    pytest.param(
        ["record-video", "--env", ENV, "-f", "video"],
        {_run_model("video"): b""},
        ["not a model file"],
        id="record-video-empty",
    ),
    pytest.param(["train", "-n", "10", "--trial-id", "0"], {}, ["--trial-id 0 needs --storage and --study-name"], id="trial"),
    pytest.param(
        ["train", "-optimize", "--optimization-objective", "reward"],
        {},
        ["--optimization-objective 'reward': expected one of eval, training"],
        id="objective-value",
    ),
    pytest.param(
        ["train", "--optimization-objective", "training"], {}, ["training: only used with -optimize"], id="objective-alone"
    ),
    pytest.param(
        ["train", "-optimize", "--n-jobs", "2", "--optimization-objective", "training"],
        {},
        ["with --n-jobs 2: run one job per process"],
        id="objective-jobs",
    ),
    pytest.param(
        ["train", "-optimize", "--optimization-objective", "training", "--trial-repeats", "0", "--pruner", "none"],
        {},
        ["--trial-repeats '0': expected a number of runs >= 1"],
        id="repeats-value",
    ),
    pytest.param(
        ["train", "-optimize", "--trial-repeats", "3", "--pruner", "none"],
        {},
        ["--trial-repeats 3: only used with --optimization-objective training"],
        id="repeats-objective",
    ),
    pytest.param(
        ["train", "-optimize", "--optimization-objective", "training", "--trial-repeats", "3"],
        {},
        ["--trial-repeats 3 with --pruner median: add --pruner none"],
        id="repeats-pruner",
    ),
    pytest.param(
        ["train", "-n", "10", "--trial-id", "0", "--study", "x"], {}, ["needs --storage and --study-name"], id="trial-study"
    ),
    pytest.param(  # abbreviated as rl-zoo3 accepts them: the trial is looked up (and is missing)
        ["train", "-n", "10", "--trial-id", "0", "--stor", "s.log", "--study", "x"],
        {},
        ["cannot load trial 0 of study 'x' from s.log"],
        id="trial-abbreviated",
    ),
    pytest.param(
        ["train", "-n", "10", "--trial-id", "-1", "--storage", "s.log", "--study-name", "x"],
        {},
        ["--trial-id -1: expected a trial number >= 0"],
        id="trial-negative",
    ),
    pytest.param(["train", "-n", "10", "-i", "text.zip"], {"text.zip": b"text"}, ["text.zip", "not a model"], id="i-text"),
    pytest.param(["train", "-n", "10", "-i", "a2c.zip"], {"a2c.zip": _A2C_ZIP}, ["is not a ACKTR model"], id="i-foreign"),
]


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SimpleNamespace]:
    """Every bad input of BAD_INPUTS, run in one process; by test id."""
    workdir = tmp_path_factory.mktemp("bad")
    for param in BAD_INPUTS:
        for name, content in param.values[1].items():
            (workdir / name).parent.mkdir(parents=True, exist_ok=True)
            (workdir / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    results, _ = run_in_one_process([list(param.values[0]) for param in BAD_INPUTS], cwd=workdir)
    return {param.id: result for param, result in zip(BAD_INPUTS, results)}


@pytest.mark.bad_input
@pytest.mark.parametrize("args, files, needles", BAD_INPUTS)
def test_bad_input_fails_with_one_clear_line(args, files, needles, bad_input_results, request) -> None:
    # --algo defaults to acktr.
    result = bad_input_results[request.node.callspec.id]
    assert_one_line_error(result, args[0].replace("_", "-"), *needles, code=2)


def test_module_entry_point(tmp_path) -> None:
    result = run("--help", cwd=tmp_path, cli=[sys.executable, "-m", "sb3_natgrad"])
    for command in ["train", "enjoy", "record-video", "plot-train", "all-plots", "plot-from-file"]:
        assert command in result.stdout
    assert_one_line_error(
        run("train", "--algo", "nope", cwd=tmp_path, ok=False, cli=[sys.executable, "-m", "sb3_natgrad"]),
        "train",
        "unknown --algo 'nope'",
    )


# ---------------------------------------------------------------------------------------------------------------------
# Missing optional modules: a package on PYTHONPATH that raises ModuleNotFoundError stands for an absent one.


def _hide_modules(root, *names: str) -> str:
    for name in names:
        package = root / "hidden" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n")
    return str(root / "hidden")


@pytest.mark.bad_input
def test_missing_plot_dependency_is_one_line(trained: str, tmp_path) -> None:
    hidden = _hide_modules(tmp_path, "seaborn")
    result = run("plot-train", "-a", "acktr", "-e", ENV, "-f", "logs", cwd=trained, ok=False, extra_path=hidden)
    assert_one_line_error(result, "plot-train", "missing Python module 'seaborn'", "sb3-natgrad[plots]", code=1)


@pytest.mark.bad_input
def test_missing_rl_zoo3_is_one_line(tmp_path) -> None:
    hidden = _hide_modules(tmp_path, "rl_zoo3")
    result = run("train", "--algo", "acktr", cwd=tmp_path, ok=False, extra_path=hidden)
    assert_one_line_error(result, "train", "missing Python module 'rl_zoo3'", "sb3-natgrad[zoo]", code=1)


def test_enjoy_works_without_requests(trained: str, tmp_path) -> None:
    # rl_zoo3.enjoy imports requests only to download its own pretrained agents.
    hidden = _hide_modules(tmp_path, "requests")
    result = run(
        "enjoy", "--algo", "acktr", "--env", ENV, "-f", "logs", "--no-render", "-n", "50", cwd=trained, extra_path=hidden
    )
    assert f"{ENV}.zip" in result.stdout


def test_push_to_hub_is_never_imported(trained: str) -> None:
    # rl_zoo3.push_to_hub is broken with current huggingface_sb3; no command may import it.
    code = textwrap.dedent(
        """
        import sys
        from sb3_natgrad.zoo.cli import main
        assert main(["enjoy", "--algo", "acktr", "--env", "CartPole-v1", "-f", "logs", "--no-render", "-n", "5"]) == 0
        assert main(["train", "--algo", "acktr", "-n", "16", "--eval-freq", "-1", "-f", "logs2", "-params", "n_envs:1"]) == 0
        assert "rl_zoo3.enjoy" in sys.modules and "rl_zoo3.train" in sys.modules
        assert "rl_zoo3.push_to_hub" not in sys.modules
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=trained, env=_environ(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr[-3000:]


# ---------------------------------------------------------------------------------------------------------------------
# Registration (in-process, cheap)


def test_importing_sb3_natgrad_does_not_import_rl_zoo3() -> None:
    code = "import sys, sb3_natgrad, sb3_natgrad.zoo, sb3_natgrad.zoo.cli; assert 'rl_zoo3' not in sys.modules, 'rl_zoo3'"
    result = subprocess.run([sys.executable, "-c", code], env=_environ(), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr


def test_register_is_idempotent() -> None:
    from rl_zoo3 import ALGOS
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

    first = register()
    sizes = (len(ALGOS), len(HYPERPARAMS_SAMPLER), len(HYPERPARAMS_CONVERTER))
    assert register() == first
    assert (len(ALGOS), len(HYPERPARAMS_SAMPLER), len(HYPERPARAMS_CONVERTER)) == sizes
    assert first["acktr"] is ACKTR and ALGOS["acktr"] is ACKTR
    assert HYPERPARAMS_SAMPLER["acktr"] is sample_acktr_params
    assert HYPERPARAMS_CONVERTER["acktr"] is convert_acktr_params
    for name, algo_class in first.items():
        assert ALGOS[name] is algo_class


def test_table_rows_follow_the_zoo_naming_convention() -> None:
    # rl-zoo3 maps a model card's class name to --algo by lower-casing it.
    for entry in ZOO_ALGORITHMS:
        assert entry.class_name.lower() == entry.name
        algo_class = load_algorithm(entry)
        if algo_class is not None:
            assert algo_class.__name__ == entry.class_name


def test_register_skips_missing_and_broken_modules(monkeypatch, tmp_path) -> None:
    from rl_zoo3 import ALGOS

    import sb3_natgrad.zoo as zoo

    (tmp_path / "natgrad_broken_algo.py").write_text("raise RuntimeError('half written')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = (
        *ZOO_ALGORITHMS,
        ZooAlgorithm("missing", "sb3_natgrad.not_written_yet", "MISSING"),
        ZooAlgorithm("broken", "natgrad_broken_algo", "BROKEN"),
    )
    monkeypatch.setattr(zoo, "ZOO_ALGORITHMS", rows)
    monkeypatch.setattr(zoo, "_UNAVAILABLE", {})
    registered = zoo.register()
    assert "acktr" in registered and "missing" not in registered and "broken" not in registered
    assert "missing" not in ALGOS and "broken" not in ALGOS
    reasons = unavailable_algorithms()
    assert "does not exist" in reasons["missing"]
    assert "half written" in reasons["broken"]


WITH_SAMPLER = [entry for entry in ZOO_ALGORITHMS if entry.sampler is not None]


def _sampler_setup(entry: ZooAlgorithm, seed: int) -> tuple[type, Any, Any, Any]:
    """The algorithm class, sampler and converter of ``entry`` and a seeded random-sampler study (skips if unavailable)."""
    optuna = pytest.importorskip("optuna")
    from sb3_natgrad.zoo import hyperparams_opt

    algo_class = load_algorithm(entry)
    if algo_class is None:
        pytest.skip(f"{entry.name} is not available")
    sampler, converter = getattr(hyperparams_opt, entry.sampler), getattr(hyperparams_opt, entry.converter)
    return algo_class, sampler, converter, optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))


@pytest.mark.parametrize("entry", WITH_SAMPLER, ids=lambda e: e.name)
def test_sampler_and_converter_build_the_algorithm(entry: ZooAlgorithm) -> None:
    algo_class, sampler, converter, study = _sampler_setup(entry, seed=0)
    from rl_zoo3.exp_manager import ExperimentManager

    for index in range(4):
        trial = study.ask()
        kwargs = sampler(trial, 0, 1, {})
        model = algo_class("MlpPolicy", "CartPole-v1", device="cpu", **kwargs)
        if index == 0:
            model.learn(model.n_steps)  # one update with the sampled values
        assert model.gamma == pytest.approx(trial.user_attrs["gamma"])
        assert model.n_steps == trial.params["n_steps"]
        # The converter gives the YAML form that rl-zoo3 preprocesses into the same schedule.
        converted = ExperimentManager._preprocess_schedules(converter(trial.params))
        assert converted["learning_rate"](0.5) == pytest.approx(model.lr_schedule(0.5))
        assert converted["policy_kwargs"] == kwargs["policy_kwargs"]
        assert set(converted) == set(kwargs)


@pytest.mark.parametrize("entry", WITH_SAMPLER, ids=lambda e: e.name)
def test_sampler_draws_the_initial_log_std_for_box_actions_only(entry: ZooAlgorithm) -> None:
    algo_class, sampler, converter, study = _sampler_setup(entry, seed=1)
    discrete = study.ask()
    assert "log_std_init" not in sampler(discrete, 0, 1, {})["policy_kwargs"]
    assert "log_std_init" not in discrete.params
    trial = study.ask()
    kwargs = sampler(trial, 1, 1, {})  # rl-zoo3 passes the size of a Box action space
    log_std_init = trial.params["log_std_init"]
    assert -4.0 <= log_std_init <= 1.0
    model = algo_class("MlpPolicy", "Pendulum-v1", device="cpu", **kwargs)
    assert model.policy.log_std.detach().numpy() == pytest.approx([log_std_init])
    assert converter(trial.params)["policy_kwargs"]["log_std_init"] == log_std_init
    # A trial stored before the parameter existed still converts, to the policy's default.
    old = {key: value for key, value in trial.params.items() if key != "log_std_init"}
    assert "log_std_init" not in converter(old)["policy_kwargs"]


def test_acktr_sampler_draws_the_kl_target_and_it_reaches_the_model() -> None:
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = set()
    for _ in range(24):
        trial = study.ask()
        kwargs = sample_acktr_params(trial, 0, 1, {})
        drawn.add(trial.params["kl_target"])
        assert ACKTR("MlpPolicy", "CartPole-v1", device="cpu", **kwargs).kl_target == trial.params["kl_target"]
        assert convert_acktr_params(trial.params)["kl_target"] == trial.params["kl_target"]
    assert drawn == {None, 0.001, 0.002, 0.005}
    # a trial stored before the parameter existed converts without it (the default: no adaptation)
    assert "kl_target" not in convert_acktr_params({k: v for k, v in trial.params.items() if k != "kl_target"})


def _train_then_ctrl_c(cwd, *extra: str, process_group: bool = False) -> tuple[int, str, str]:
    """Start a long ``train`` in ``cwd``, send SIGINT (to its process group, as a terminal does) once it is in learn()."""
    command = ["train", "--algo", "acktr", "--env", "CartPole-v1", "-n", "10000000", "-f", "logs", "--eval-freq", "-1"]
    process = subprocess.Popen(
        [*CLI, *command, *extra],
        cwd=cwd,
        env=_environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=process_group,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("Log path"):
                break
        time.sleep(3)  # inside learn()
        if process_group:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL) if process_group else process.kill()
    return process.returncode, stdout, stderr


@pytest.mark.bad_input
def test_ctrl_c_saves_the_model_and_says_how_to_continue(tmp_path) -> None:
    returncode, stdout, stderr = _train_then_ctrl_c(tmp_path)
    saved = "logs/acktr/CartPole-v1_1/CartPole-v1.zip"
    result = SimpleNamespace(returncode=returncode, stdout=stdout, stderr=stderr)
    assert_one_line_error(result, "train", "interrupted at", f"the model was saved to {saved}", f"-i {saved}", code=130)
    done = ACKTR.load(tmp_path / saved, device="cpu").num_timesteps
    assert done > 0
    assert f" -n {10_000_000 - done}" in stderr  # the steps still to go: the schedules end where they were planned to


@pytest.mark.bad_input
def test_ctrl_c_in_a_terminal_with_subprocess_envs_still_saves_the_model(tmp_path) -> None:
    # A terminal's Ctrl-C reaches the whole process group: SubprocVecEnv's workers die too, and the next env step of
    # the main process fails with EOFError / BrokenPipeError, which rl-zoo3 does not catch (nothing was saved).
    returncode, _, stderr = _train_then_ctrl_c(tmp_path, "--vec-env", "subproc", process_group=True)
    saved = "logs/acktr/CartPole-v1_1/CartPole-v1.zip"
    assert returncode == 130, stderr[-3000:]
    assert f"the model was saved to {saved}" in stderr
    assert ACKTR.load(tmp_path / saved, device="cpu").num_timesteps > 0


@pytest.mark.bad_input
def test_ctrl_c_never_stops_inside_an_update() -> None:
    # SIGINT arriving while train() runs lets that update finish (every layer moved, K-FAC's step counted) and ends
    # learn() at the next env step; a second SIGINT interrupts at once.
    import gymnasium as gym

    from sb3_natgrad.zoo.experiment import StopOnInterrupt

    model = ACKTR("MlpPolicy", gym.make("CartPole-v1"), n_steps=8, seed=0, device="cpu")
    original = model.train
    calls = []

    def train() -> None:
        calls.append(model.num_timesteps)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # delivered at once, inside this update
        original()

    model.train = train  # type: ignore[method-assign]
    stop = StopOnInterrupt()
    with stop.installed():
        model.learn(10_000, callback=stop)
    assert stop.interrupted and len(calls) == 2
    assert model.policy.optimizer.steps == 2 and model._n_updates == 2
    assert model.num_timesteps == 2 * 8 + 1  # one env step of the third rollout, which is not trained on
    with stop.installed(), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.bad_input
def test_a_failed_train_leaves_no_empty_run_folder_for_enjoy(tmp_path) -> None:
    args = ["train", "--algo", "acktr", "--env", "CartPole-v1", "-f", "logs", "-params", "n_steps:-3"]
    failed = run(*args, cwd=tmp_path, ok=False)
    assert_one_line_error(failed, "train", "invalid n_steps=-3", code=2)
    assert not (tmp_path / "logs" / "acktr" / "CartPole-v1_1").exists()
    enjoy = run("enjoy", "--algo", "acktr", "--env", "CartPole-v1", "-f", "logs", "--no-render", cwd=tmp_path, ok=False)
    assert_one_line_error(enjoy, "enjoy", "no trained acktr model")


@pytest.mark.bad_input
def test_a_storage_without_its_database_driver_is_one_line(tmp_path) -> None:
    args = ["train", "-optimize", "--storage", "mysql://user@localhost/db", "-n", "100", "--n-trials", "1", "-f", "logs"]
    result = run(*args, cwd=tmp_path, ok=False)
    needles = ["Failed to import DB access module", "--storage URL needs its database driver"]
    assert_one_line_error(result, "train", *needles, code=1)


@pytest.mark.bad_input
def test_two_workers_can_start_together_on_a_new_sqlite_storage(tmp_path) -> None:
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = [*CLI, *_OPTIMIZE, "--n-trials", "1", "--storage", storage, "--study-name", "natgrad", "-uuid", "-f", "logs"]
    workers = [
        subprocess.Popen(
            [*args, "--seed", str(seed)],
            cwd=tmp_path,
            env=_environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=TIMEOUT)
        assert worker.returncode == 0, stdout[-2000:] + stderr[-2000:]
    study = optuna.load_study(study_name="natgrad", storage=storage)
    assert len(study.trials) == 2
