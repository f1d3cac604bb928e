"""
The ``sb3-natgrad`` command (also ``python -m sb3_natgrad``): rl-zoo3's tools with the sb3_natgrad algorithms.

Each sub-command registers the algorithms (:func:`sb3_natgrad.zoo.register`) and runs the rl-zoo3 script of the
same name with the same flags, so rl-zoo3's documentation applies with ``--algo acktr`` (or ``kfrelax``, ``smac``)::

    sb3-natgrad train --algo acktr --env CartPole-v1                # = python -m rl_zoo3.train ...
    sb3-natgrad enjoy --algo acktr --env CartPole-v1 -f logs/       # = python -m rl_zoo3.enjoy ...
    sb3-natgrad record-video --algo acktr --env CartPole-v1 -f logs/ -n 1000
    sb3-natgrad plot-train -a acktr -e CartPole-v1 -f logs/
    sb3-natgrad all-plots -a acktr -e CartPole-v1 -f logs/ -o results
    sb3-natgrad plot-from-file -i results.pkl -o results.png --format png

Sharing agents (:mod:`sb3_natgrad.zoo.hub`; rl-zoo3's ``push_to_hub`` / ``load_from_hub`` need the network first)::

    sb3-natgrad package --algo acktr --env CartPole-v1 -f logs/ -o acktr-CartPole-v1   # offline, Hub layout
    sb3-natgrad load --from acktr-CartPole-v1 -f logs/       # or --from ORG/REPO --trust-remote-code
    sb3-natgrad push acktr-CartPole-v1 --repo ORG/acktr-CartPole-v1

Differences from rl-zoo3: ``--algo`` defaults to ``acktr``; an sb3_natgrad algorithm reads the packaged
hyperparameter file unless ``-conf``/``--conf-file`` is given; bad input (unknown algorithm or env, malformed
or unknown hyperparameters, no trained model, missing optional dependency) ends with one ``error:`` line and a
non-zero exit code; ``plot-train`` and ``all-plots`` accept ``--save-fig FILE``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import glob
import importlib
import io
import os
import re
import runpy
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sb3_natgrad.common.minatar import ensure_registered
from sb3_natgrad.zoo import ZOO_ALGORITHMS, ZooError, register, unavailable_algorithms
from sb3_natgrad.zoo.config import one_line

PROG = "sb3-natgrad"
#: ``--algo`` when none is given (rl-zoo3's default is ``ppo``).
DEFAULT_ALGO = "acktr"
#: rl-zoo3's default ``--env``.
DEFAULT_ENV = "CartPole-v1"
#: rl-zoo3's default model folder for ``enjoy`` / ``record_video`` (its pretrained agents).
DEFAULT_FOLDER = "rl-trained-agents"

# Which pyproject extra brings a module that may be missing.
_EXTRAS = {
    "rl_zoo3": "zoo",
    "optuna": "zoo",
    "yaml": "zoo",
    "requests": "zoo",
    "huggingface_sb3": "zoo",
    "huggingface_hub": "hub",
    "pytablewriter": "zoo",
    "seaborn": "plots",
    "scipy": "plots",
    "pandas": "plots",
    "matplotlib": "plots",
    "moviepy": "zoo",
    "ale_py": "atari",
    "cv2": "atari",
    "mujoco": "mujoco",
    "Box2D": "box2d",
}


@dataclass(frozen=True)
class Command:
    """
    A sub-command.

    :param handler: called with the arguments after the sub-command name
    :param help: one-line description for ``sb3-natgrad --help``
    """

    handler: Callable[[list[str]], None]
    help: str


# ---------------------------------------------------------------------------------------------------------------------
# Helpers


@contextlib.contextmanager
def _script_argv(command: str, argv: Sequence[str]) -> Iterator[None]:
    """Run an rl-zoo3 script as if called as ``sb3-natgrad <command> <argv>``."""
    saved = sys.argv
    sys.argv = [f"{PROG} {command}", *argv]
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, saved)


def _wants_help(argv: Sequence[str]) -> bool:
    return "-h" in argv or "--help" in argv


def _pre_parse(argv: Sequence[str], options: Sequence[tuple[tuple[str, ...], dict[str, Any]]]) -> argparse.Namespace | None:
    """
    Read the few flags the checks need, leaving everything else to rl-zoo3's own parser.

    :return: the flags, or ``None`` when they do not parse (rl-zoo3's parser then reports the problem)
    """
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    for flags, kwargs in options:
        parser.add_argument(*flags, **kwargs)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            known, _ = parser.parse_known_args(list(argv))
    except (argparse.ArgumentError, SystemExit):
        return None
    return known


_ALGO_ENV_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--algo",), dict(default=None)),
    (("--env",), dict(default=DEFAULT_ENV)),
    (("--gym-packages",), dict(nargs="+", default=[])),
]
_TRAIN_OPTIONS = [
    *_ALGO_ENV_OPTIONS,
    (("-i", "--trained-agent"), dict(default="")),
    (("-n", "--n-timesteps"), dict(type=int, default=-1)),  # rl-zoo3's default -1: the entry's n_timesteps
    (("-params", "--hyperparams"), dict(nargs="+", default=None)),
    (("--trial-id",), dict(type=int, default=None)),
    (("-optimize", "--optimize-hyperparameters"), dict(action="store_true", dest="optimize_hyperparameters")),
    (("--n-jobs",), dict(type=int, default=1)),
    (("--pruner",), dict(default="median")),  # rl-zoo3's default
]
_LOAD_OPTIONS = [
    *_ALGO_ENV_OPTIONS,
    (("-f", "--folder"), dict(default=DEFAULT_FOLDER)),
    (("--exp-id",), dict(type=int, default=0)),
    (("--load-best",), dict(action="store_true")),
    (("--load-checkpoint",), dict(type=int, default=None)),
    (("--load-last-checkpoint",), dict(action="store_true")),
]


def _with_default_algo(argv: list[str], known: argparse.Namespace | None) -> list[str]:
    # Put the default first: a later --algo (even abbreviated, which only rl-zoo3's parser understands) wins.
    if known is not None and known.algo is None:
        return ["--algo", DEFAULT_ALGO, *argv]
    return argv


def _flag_given(argv: Sequence[str], flag: str) -> bool:
    """Whether ``flag`` is in ``argv``, also abbreviated as rl-zoo3's parser accepts it (``--study`` for ``--study-name``)."""
    names = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--") and len(arg.split("=", 1)[0]) > 3}
    return any(flag.startswith(name) for name in names)


def _check_algo(algo: str) -> None:
    from rl_zoo3.utils import ALGOS

    if algo in ALGOS:
        return
    reasons = unavailable_algorithms()
    if algo in reasons:
        raise ZooError(f"--algo {algo} is not available: {reasons[algo]}")
    close = difflib.get_close_matches(algo, list(ALGOS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ZooError(f"unknown --algo {algo!r}{hint}; choose from: {', '.join(ALGOS)}")


def _check_env(env_id: str, gym_packages: Sequence[str]) -> None:
    import gymnasium as gym
    import rl_zoo3.import_envs  # noqa: F401 (registers the ALE and rl-zoo3's own envs, as rl-zoo3 does)

    for module in gym_packages:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ZooError(f"--gym-packages: cannot import {module!r} ({one_line(exc)})") from None
    try:
        ensure_registered(env_id)  # MinAtar: through the package's own gymnasium entry point
    except ModuleNotFoundError as exc:
        raise ZooError(f"--env {env_id!r}: {one_line(exc)}") from None
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ZooError(
        f"unknown environment id {env_id!r} (not registered in Gymnasium{hint}); register custom envs with --gym-packages"
    )


def _check_model(known: argparse.Namespace, algo: str) -> None:
    from huggingface_sb3 import EnvironmentName
    from rl_zoo3.utils import get_model_path

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            _, model_path, _ = get_model_path(
                known.exp_id,
                known.folder,
                algo,
                EnvironmentName(known.env),
                known.load_best,
                known.load_checkpoint,
                known.load_last_checkpoint,
            )
    except (AssertionError, ValueError) as exc:
        hint = " (pass the log folder of train with -f, e.g. -f logs/)" if known.folder == DEFAULT_FOLDER else ""
        raise ZooError(f"no trained {algo} model for {known.env} in {known.folder!r}: {one_line(exc)}{hint}") from None
    _check_model_file(model_path, algo)


def _check_model_file(path: str, algo: str) -> None:
    """
    Refuse, in one line naming the file, a model file that cannot be an ``algo`` agent: not a zip (truncated, empty,
    text), an entry that fails its CRC (a flipped byte), no SB3 ``data`` / ``policy.pth`` inside, or a file another
    algorithm saved; before rl-zoo3 builds anything (its own load would end in a traceback).
    """
    import zipfile

    from rl_zoo3.utils import ALGOS

    from sb3_natgrad.common.on_policy import NaturalGradientAlgorithm
    from sb3_natgrad.common.save_util import check_saved_algorithm, damaged_entry

    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            corrupted = damaged_entry(archive)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ZooError(f"{path}: not a model file saved by train ({one_line(exc)})") from None
    if corrupted is not None:
        raise ZooError(f"{path}: corrupted file ({corrupted} inside fails its checksum)")
    missing = sorted({"data", "policy.pth"} - names)
    if missing:
        raise ZooError(f"{path}: not a model file saved by train (no {' or '.join(missing)} inside)")
    algo_class = ALGOS.get(algo)
    if isinstance(algo_class, type) and issubclass(algo_class, NaturalGradientAlgorithm):
        try:
            check_saved_algorithm(path, algo_class.__name__, algo_class.saved_markers)
        except ValueError as exc:
            raise ZooError(one_line(exc)) from None


def _prepare(argv: list[str], options: list[tuple[tuple[str, ...], dict[str, Any]]]) -> tuple[list[str], Any]:
    """Register the algorithms, add the default ``--algo``, check the algorithm and env."""
    register()
    if _wants_help(argv):
        return _with_default_algo(argv, _pre_parse(argv, options)), None
    known = _pre_parse(argv, options)
    argv = _with_default_algo(argv, known)
    if known is not None:
        known.algo = known.algo or DEFAULT_ALGO
        _check_algo(known.algo)
        _check_env(known.env, known.gym_packages)
    return argv, known


# ---------------------------------------------------------------------------------------------------------------------
# Sub-commands


def _check_hyperparams_flag(items: Sequence[str]) -> None:
    """
    ``-params key:value ...`` as rl-zoo3 reads it (the value is evaluated as Python, in ``rl_zoo3.utils``), with a
    one-line error for an item without a colon, a value that does not evaluate, or ``n_envs`` below 1: rl-zoo3
    fails on them with a traceback (or later, deep inside SB3).
    """
    import rl_zoo3.utils

    for item in items:
        key, colon, text = item.partition(":")
        if not colon or not key:
            raise ZooError(f"-params {item!r}: expected key:value, e.g. n_envs:8 or policy_kwargs:'dict(net_arch=[64])'")
        try:
            value = eval(text, vars(rl_zoo3.utils))  # what rl-zoo3's StoreDict does with it
        except Exception as exc:
            raise ZooError(
                f"-params {item!r}: cannot read the value {text!r} ({type(exc).__name__}: {one_line(exc)}); "
                "numbers as they are, strings in Python quotes that survive the shell, e.g. learning_rate:\"'lin_0.25'\""
            ) from None
        if key == "n_envs" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ZooError(f"-params {item!r}: n_envs must be an integer >= 1")


def train(argv: list[str]) -> None:
    """
    ``rl_zoo3.train`` (training, ``-optimize`` hyperparameter search, ``-i`` continued training).

    :param argv: rl-zoo3 ``train`` flags
    """
    import rl_zoo3.train

    from sb3_natgrad.zoo.experiment import NatgradExperimentManager

    argv, objective, repeats = _pop_optimization_options(argv)
    argv, known = _prepare(argv, _TRAIN_OPTIONS)
    if objective != "eval" and known is not None:
        if not known.optimize_hyperparameters:
            raise ZooError(f"--optimization-objective {objective}: only used with -optimize")
        if known.n_jobs != 1:
            raise ZooError(
                f"--optimization-objective {objective} with --n-jobs {known.n_jobs}: run one job per process instead "
                "(several processes can share a study through --storage)"
            )
    if repeats != 1 and known is not None:
        if objective != "training":
            raise ZooError(f"--trial-repeats {repeats}: only used with --optimization-objective training")
        if known.pruner != "none":
            # the pruner would judge the later runs of a trial by the evaluations of its first
            raise ZooError(f"--trial-repeats {repeats} with --pruner {known.pruner}: add --pruner none")
    if known is not None and known.n_timesteps != -1 and known.n_timesteps <= 0:
        # rl-zoo3 would silently train the entry's n_timesteps instead
        raise ZooError(
            f"-n/--n-timesteps {known.n_timesteps}: expected a number of steps > 0 (leave it out for the entry's n_timesteps)"
        )
    if known is not None and known.hyperparams:
        _check_hyperparams_flag(known.hyperparams)
    if known is not None and known.trial_id is not None:
        # rl-zoo3 ignores --trial-id without a study to read it from, and reads study.trials[-1] for -1
        if known.trial_id < 0:
            raise ZooError(f"--trial-id {known.trial_id}: expected a trial number >= 0")
        if not (_flag_given(argv, "--storage") and _flag_given(argv, "--study-name")):
            raise ZooError(f"--trial-id {known.trial_id} needs --storage and --study-name: the study that holds the trial")
    if known is not None and known.trained_agent:
        if not known.trained_agent.endswith(".zip"):
            raise ZooError(f"--trained-agent {known.trained_agent!r}: expected a .zip file saved by train")
        if not os.path.isfile(known.trained_agent):
            raise ZooError(f"--trained-agent {known.trained_agent!r}: file not found")
        _check_model_file(known.trained_agent, known.algo)
    with (
        _patched(rl_zoo3.train, "ExperimentManager", NatgradExperimentManager),
        _patched(NatgradExperimentManager, "optimization_objective", objective),
        _patched(NatgradExperimentManager, "trial_repeats", repeats),
        _script_argv("train", argv),
    ):
        rl_zoo3.train.train()


def _pop_optimization_options(argv: list[str]) -> tuple[list[str], str, int]:
    """
    Take our ``--optimization-objective {eval,training}`` and ``--trial-repeats N`` out of the arguments (rl-zoo3's
    parser knows neither).

    :return: the other arguments, the objective (default ``"eval"``, rl-zoo3's) and the runs per trial (default 1)
    """
    from sb3_natgrad.zoo.experiment import OPTIMIZATION_OBJECTIVES

    rest, objective, repeats = [], "eval", 1
    items = iter(argv)
    for item in items:
        flag = item.partition("=")[0]
        if flag not in ("--optimization-objective", "--trial-repeats"):
            rest.append(item)
            continue
        value = item.partition("=")[2] if "=" in item else next(items, None)
        if flag == "--optimization-objective":
            if value not in OPTIMIZATION_OBJECTIVES:
                raise ZooError(f"--optimization-objective {value!r}: expected one of {', '.join(OPTIMIZATION_OBJECTIVES)}")
            objective = value
        else:
            if value is None or not value.isdigit() or int(value) < 1:
                raise ZooError(f"--trial-repeats {value!r}: expected a number of runs >= 1")
            repeats = int(value)
    return rest, objective, repeats


def _import_enjoy() -> types.ModuleType:
    """
    Import ``rl_zoo3.enjoy``. It imports ``rl_zoo3.load_from_hub`` (and so ``requests``) only to download rl-zoo3's
    pretrained agents; without ``requests``, a stand-in module lets ``enjoy`` run on local models.
    """
    try:
        return importlib.import_module("rl_zoo3.enjoy")
    except ModuleNotFoundError as exc:
        if exc.name != "requests":
            raise
    stand_in = types.ModuleType("rl_zoo3.load_from_hub")

    def download_from_hub(*args: Any, **kwargs: Any) -> None:
        raise ZooError("downloading pretrained agents needs the 'requests' package (pip install requests)")

    stand_in.download_from_hub = download_from_hub  # type: ignore[attr-defined]
    sys.modules["rl_zoo3.load_from_hub"] = stand_in
    return importlib.import_module("rl_zoo3.enjoy")


def enjoy(argv: list[str]) -> None:
    """
    ``rl_zoo3.enjoy``: load a trained agent and run it.

    :param argv: rl-zoo3 ``enjoy`` flags
    """
    argv, known = _prepare(argv, _LOAD_OPTIONS)
    ours = {entry.name for entry in ZOO_ALGORITHMS}
    # rl-zoo3 downloads its own algorithms' agents when they are not in rl-trained-agents/; there are none of ours.
    if known is not None and (known.algo in ours or DEFAULT_FOLDER not in known.folder):
        _check_model(known, known.algo)
    if known is not None and _headless():
        _quiet_sdl()
        if "--no-render" not in argv:
            # rendering to no screen runs at ~25 steps/s and ignores SIGTERM
            print("No display: running without rendering (as with --no-render)")
            argv = [*argv, "--no-render"]
    module = _import_enjoy()
    with _script_argv("enjoy", argv):
        module.enjoy()


def _headless() -> bool:
    """A Linux machine without a display (no ``DISPLAY`` nor ``WAYLAND_DISPLAY``)."""
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _quiet_sdl() -> None:
    """
    Without a display, SDL (pygame, the classic-control renderer) prints ``error: XDG_RUNTIME_DIR is invalid``, which
    reads like this command's own error line: use SDL's dummy drivers, as for off-screen rendering.
    """
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


def record_video(argv: list[str]) -> None:
    """
    ``rl_zoo3.record_video``: record an mp4 of a trained agent (``<log folder>/videos/`` by default).

    :param argv: rl-zoo3 ``record_video`` flags
    """
    argv, known = _prepare(argv, _LOAD_OPTIONS)
    if known is not None:
        _check_model(known, known.algo)
        if _headless():
            _quiet_sdl()
    if not _wants_help(argv):
        importlib.import_module("moviepy")  # VecVideoRecorder's backend: fail before loading anything
    with _script_argv("record-video", argv):
        runpy.run_module("rl_zoo3.record_video", run_name="__main__", alter_sys=False)


def _save_figures(path: str) -> None:
    import matplotlib.pyplot as plt

    numbers = plt.get_fignums()
    if not numbers:
        raise ZooError("--save-fig: no figure was drawn")
    root, extension = os.path.splitext(path)
    for number in numbers:
        figure = plt.figure(number)
        target = path
        if len(numbers) > 1:
            label = re.sub(r"[^A-Za-z0-9.-]+", "_", str(figure.get_label()))
            target = f"{root}_{label or number}{extension}"
        figure.savefig(target)
        print(f"Saved figure to {target}")
    plt.close("all")


def _plot(module_name: str, command: str, argv: list[str], save_option: bool) -> None:
    save_fig = None
    if save_option and not _wants_help(argv):
        parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        parser.add_argument("--save-fig", default=None)
        known, argv = parser.parse_known_args(argv)
        save_fig = known.save_fig
    if save_fig is not None:
        import matplotlib

        matplotlib.use("Agg")
    function = getattr(importlib.import_module(f"rl_zoo3.plots.{module_name}"), module_name)
    with _script_argv(command, argv), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*non-interactive.*cannot be shown")
        function()
    if save_fig is not None:
        _save_figures(save_fig)


def plot_train(argv: list[str]) -> None:
    """
    ``rl_zoo3.plots.plot_train``: training episode rewards from the monitor files; ``--save-fig FILE`` saves it.

    :param argv: rl-zoo3 ``plot_train`` flags
    """
    _plot("plot_train", "plot-train", argv, save_option=True)


def all_plots(argv: list[str]) -> None:
    """
    ``rl_zoo3.plots.all_plots``: evaluation curves and a results table; ``--save-fig FILE`` saves the figures.

    :param argv: rl-zoo3 ``all_plots`` flags
    """
    if not _wants_help(argv):
        _check_experiment_folders(argv)
    _plot("all_plots", "all-plots", argv, save_option=True)


def _check_experiment_folders(argv: list[str]) -> None:
    """
    ``all_plots`` skips folders that do not exist and prints a table of ``0.0 +/- 0.0`` with exit code 0 when
    nothing matches: require every ``-f`` folder to exist and at least one run with evaluations among them.
    """
    known = _pre_parse(
        argv,
        [
            (("-a", "--algos"), dict(nargs="+", default=[])),
            (("-e", "--env"), dict(nargs="+", default=[])),
            (("-f", "--exp-folders"), dict(nargs="+", default=[])),
        ],
    )
    if known is None:
        return  # rl-zoo3's parser reports it
    missing = [folder for folder in known.exp_folders if not os.path.isdir(folder)]
    if missing:
        raise ZooError(f"-f/--exp-folders: no such folder: {', '.join(missing)}")
    found = [
        path
        for folder in known.exp_folders
        for algo in known.algos
        for env in known.env
        for path in glob.glob(os.path.join(folder, algo.lower(), f"*{env}*", "evaluations.npz"))
    ]
    if known.exp_folders and known.algos and known.env and not found:
        raise ZooError(
            f"no evaluations.npz for --algos {' '.join(known.algos)} and --env {' '.join(known.env)} under "
            f"{', '.join(known.exp_folders)} (train with --eval-freq to write them)"
        )


def _check_results_file(argv: list[str]) -> None:
    """
    ``plot_from_file`` fails with ``min() arg is an empty sequence`` when no environment of the file has two runs or
    more (rl-zoo3 2.9 skips single runs, then takes the minimum over nothing): say so instead.
    """
    import pickle

    import numpy as np

    known = _pre_parse(argv, [(("-i", "--input"), dict(default=None)), (("--merge",), dict(nargs="+", default=[]))])
    if known is None or known.input is None:
        return
    for filename in [known.input if known.input.endswith(".pkl") else f"{known.input}.pkl", *known.merge]:
        try:
            with open(filename, "rb") as file:
                results = pickle.load(file)
        except OSError as exc:
            raise ZooError(f"cannot read {filename}: {one_line(exc)}") from None
        runs = [
            np.ndim(curve.get("last_evals", 0.0))
            for env, curves in results.items()
            if env != "results_table" and isinstance(curves, dict)
            for curve in curves.values()
            if isinstance(curve, dict)
        ]
        if any(ndim > 0 for ndim in runs):
            return
    raise ZooError(
        f"{known.input}: every curve has a single run; plot-from-file needs two runs or more of an environment "
        "(train more seeds, or use plot-train / all-plots --save-fig)"
    )


def plot_from_file(argv: list[str]) -> None:
    """
    ``rl_zoo3.plots.plot_from_file``: plots from an ``all-plots -o`` file (``-o`` saves the figure).

    :param argv: rl-zoo3 ``plot_from_file`` flags
    """
    if not _wants_help(argv):
        _check_results_file(argv)
    _plot("plot_from_file", "plot-from-file", argv, save_option=False)


# ---------------------------------------------------------------------------------------------------------------------
# Sharing agents (sb3_natgrad.zoo.hub): package, load, push


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one-line :class:`ZooError` (exit code 2) instead of usage + exit."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise ZooError(message)


def _parser(command: str, description: str) -> _Parser:
    return _Parser(prog=f"{PROG} {command}", description=description, allow_abbrev=False)


def package(argv: list[str]) -> None:
    """
    ``sb3-natgrad package``: write a trained agent in the Hugging Face repository layout of rl-zoo3, with a fresh
    evaluation, a model card and a manifest of sha256 digests (no network; see :func:`sb3_natgrad.zoo.hub.package`).

    :param argv: the flags
    """
    if _headless():
        _quiet_sdl()  # the replay video renders off-screen
    parser = _parser("package", "Package an rl-zoo3 run into the Hugging Face repository layout of rl-zoo3 (offline).")
    parser.add_argument("--algo", default=DEFAULT_ALGO, help=f"algorithm (default: {DEFAULT_ALGO})")
    parser.add_argument("--env", required=True, help="environment id")
    parser.add_argument("-f", "--folder", required=True, help="log folder of train")
    parser.add_argument("--exp-id", type=int, default=0, help="run number (default: 0, the latest)")
    parser.add_argument("--load-best", action="store_true", help="package best_model.zip instead of the final model")
    parser.add_argument("--load-checkpoint", type=int, default=None, help="package the checkpoint of this step")
    parser.add_argument("-o", "--output", required=True, help="folder to write (refused if not empty, unless --force)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--n-eval-episodes", type=int, default=10, help="evaluation episodes (default: 10)")
    parser.add_argument("--eval-seed", type=int, default=0, help="episode i is reset with seed eval_seed + i (default: 0)")
    policy = parser.add_mutually_exclusive_group()
    policy.add_argument(
        "--deterministic", dest="deterministic", action="store_true", default=None, help="deterministic actions"
    )
    policy.add_argument("--stochastic", dest="deterministic", action="store_false", default=None, help="stochastic actions")
    parser.add_argument("--no-video", action="store_true", help="do not write replay.mp4")
    parser.add_argument(
        "--policy-only",
        action="store_true",
        help="reset the optimizer states (K-FAC's curvature) in the packaged model file: same agent, a fraction of the size",
    )
    parser.add_argument("--video-length", type=int, default=1000, help="steps of replay.mp4 (default: 1000)")
    parser.add_argument("--device", default="auto", help="PyTorch device (default: auto)")
    parser.add_argument("--num-threads", type=int, default=-1, help="PyTorch threads (default: -1, PyTorch's choice)")
    args = parser.parse_args(argv)
    register()
    _check_algo(args.algo)
    # The env is checked by hub.package, after importing the run's --gym-packages (custom envs) from its args.yml.
    if args.num_threads > 0:
        import torch

        torch.set_num_threads(args.num_threads)
    from sb3_natgrad.zoo import hub

    # Same shape as hub.load's call below and KFRELAXPolicy._get_constructor_parameters: keywords of other APIs, no logic.
    hub.package(
        args.algo,
        args.env,
        args.folder,
        args.output,
        exp_id=args.exp_id,
        load_best=args.load_best,
        load_checkpoint=args.load_checkpoint,
        n_eval_episodes=args.n_eval_episodes,
        eval_seed=args.eval_seed,
        deterministic=args.deterministic,
        video=not args.no_video,
        video_length=args.video_length,
        force=args.force,
        device=args.device,
        policy_only=args.policy_only,
    )


def load(argv: list[str]) -> None:
    """
    ``sb3-natgrad load``: rebuild the rl-zoo3 run layout from a packaged agent (a local folder, verified against its
    manifest, or a Hub repository with ``--trust-remote-code``), for ``enjoy`` / ``record-video`` / ``train -i``.

    :param argv: the flags
    """
    parser = _parser("load", "Rebuild the rl-zoo3 run layout (logs/<algo>/<Env>_<N>/) from a packaged agent.")
    parser.add_argument("--from", dest="source", required=True, help="folder written by package, or ORG/REPO on the Hub")
    parser.add_argument("-f", "--folder", required=True, help="log folder to write into")
    parser.add_argument("--exp-id", type=int, default=0, help="run number (default: 0, a new run)")
    parser.add_argument("--force", action="store_true", help="replace an existing run folder")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow downloading from the Hub (model files contain pickled objects, which can run code)",
    )
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit")
    parser.add_argument("--algo", default=None, help="expected algorithm (required for a Hub repo without manifest)")
    parser.add_argument("--env", default=None, help="expected environment id (same)")
    args = parser.parse_args(argv)
    from sb3_natgrad.zoo import hub

    hub.load(
        args.source,
        args.folder,
        exp_id=args.exp_id,
        algo=args.algo,
        env_id=args.env,
        force=args.force,
        trust_remote_code=args.trust_remote_code,
        revision=args.revision,
    )


def push(argv: list[str]) -> None:
    """
    ``sb3-natgrad push``: upload a packaged agent to the Hugging Face Hub (token from ``HF_TOKEN`` or
    ``hf auth login``).

    :param argv: the flags
    """
    parser = _parser("push", "Upload a folder written by package to the Hugging Face Hub.")
    parser.add_argument("output", help="folder written by package")
    parser.add_argument("--repo", required=True, help="repository id ORG/NAME (rl-zoo3: ORG/<algo>-<Env>)")
    parser.add_argument("-m", "--commit-message", default=None, help="commit message")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    args = parser.parse_args(argv)
    from sb3_natgrad.zoo import hub

    hub.push(args.output, args.repo, commit_message=args.commit_message, private=args.private)


#: Sub-command name -> command.
COMMANDS: dict[str, Command] = {
    "train": Command(train, "train an agent, tune hyperparameters (-optimize) or continue training (-i)"),
    "enjoy": Command(enjoy, "run a trained agent"),
    "record-video": Command(record_video, "record an mp4 of a trained agent"),
    "plot-train": Command(plot_train, "plot training rewards (monitor files)"),
    "all-plots": Command(all_plots, "plot evaluation results and print a results table"),
    "plot-from-file": Command(plot_from_file, "plot the results saved by all-plots -o"),
    "package": Command(package, "write a trained agent in the Hugging Face Hub layout (offline)"),
    "load": Command(load, "rebuild the run layout from a packaged agent or a Hub repository"),
    "push": Command(push, "upload a packaged agent to the Hugging Face Hub"),
}


# ---------------------------------------------------------------------------------------------------------------------
# Entry point


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} <command> [options]   ({PROG} <command> -h for the options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    names = ", ".join(entry.name for entry in ZOO_ALGORITHMS)
    lines += ["", f"Flags and output layout are rl-zoo3's; sb3_natgrad adds --algo {names} (default {DEFAULT_ALGO})."]
    return "\n".join(lines)


def _error(command: str, message: str) -> None:
    print(f"{PROG} {command}: error: {one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run ``sb3-natgrad <command> [options]``.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    :return: the exit code: 0 on success, 2 for bad input, 1 for a missing dependency
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from sb3_natgrad import __version__

        print(f"sb3_natgrad {__version__}")
        return 0
    name = args[0].replace("_", "-")
    if name not in COMMANDS:
        _error(name, f"unknown command {args[0]!r}; choose from: {', '.join(COMMANDS)}")
        return 2
    try:
        COMMANDS[name].handler(args[1:])
    except ZooError as exc:
        _error(name, str(exc))
        return getattr(exc, "exit_code", 2)
    except OSError as exc:  # a file or folder given on the command line (or the disk) failed: say which, in one line
        _error(name, one_line(exc))
        return 2
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        top = missing.split(".")[0]
        extra = _EXTRAS.get(top)
        hint = f" (pip install 'sb3-natgrad[{extra}]')" if extra else ""
        _error(name, f"missing Python module '{missing}'{hint}")
        return 1
    except ImportError as exc:  # e.g. optuna without the driver of a --storage database URL
        hint = " (the --storage URL needs its database driver, e.g. pip install mysqlclient)" if "--storage" in args else ""
        _error(name, f"{one_line(exc)}{hint}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
