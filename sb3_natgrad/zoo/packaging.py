"""
Turn an rl-zoo3 run (``logs/<algo>/<Env>_<N>/``) into a folder laid out like an rl-zoo3 Hugging Face repository
(:func:`package`): the model, its configuration, a fresh evaluation (:func:`evaluate`), a model card, a replay when a
video backend is installed, and the manifest. No network; rl_zoo3 and huggingface_hub are imported only when used.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import io
import json
import os
import shlex
import shutil
import statistics
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from copy import deepcopy
from pprint import pformat
from typing import TYPE_CHECKING, Any

from sb3_natgrad.zoo import DEBUG_ENV_VAR, available_algorithms
from sb3_natgrad.zoo.config import one_line

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

from sb3_natgrad.zoo.manifest import (
    MANIFEST,
    HubError,
    ManifestError,
    _folder_files,
    library_versions,
    read_manifest,
    write_manifest,
)

#: Default number of evaluation episodes of :func:`package` (rl-zoo3's ``push_to_hub`` default).
DEFAULT_EVAL_EPISODES = 10
#: Default number of steps of ``replay.mp4`` (rl-zoo3's default).
DEFAULT_VIDEO_LENGTH = 1000
#: Set this environment variable to get the full traceback instead of the one-line error for Hub failures.
# Learning-rate schedules are not needed to run an agent; rl-zoo3's enjoy replaces them the same way, so a model
# trained with an rl-zoo3 schedule (pickled rl_zoo3 object) loads without it.
_INFERENCE_OBJECTS: dict[str, Any] = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}


#: Data entries of a model file that only continue its rollout (the last observations of the training envs);
#: a policy-only package drops them, and ``learn()`` then starts from a fresh ``env.reset()`` as for a new model.
_ROLLOUT_DATA = ("_last_obs", "_last_original_obs", "_last_episode_starts")


def _write_policy_only(model: BaseAlgorithm, source: str, target: str) -> list[str]:
    """
    Copy the model file ``source`` to ``target`` with every optimizer state replaced by a new optimizer's (K-FAC's
    factors, decompositions and momentum; Adam's moments) and without the last rollout observations.

    The policy, the hyperparameters, the schedules and every other entry are copied byte for byte, so the agent acts
    exactly as before and still loads with ``<Algorithm>.load``; continued training starts its curvature (and the
    K-FAC warm-up) afresh. For ACKTR on Atari this drops about 85% of the file (20 MB of K-FAC state).

    :param model: ``source`` loaded (its optimizers are reset in place)
    :param source: the trained model file
    :param target: the file to write
    :return: the names of the optimizer states that were reset
    """
    import operator

    import torch

    reset = {}
    for name in model._get_torch_save_params()[0]:
        optimizer = operator.attrgetter(name)(model)
        if not isinstance(optimizer, torch.optim.Optimizer):
            continue
        if hasattr(optimizer, "reset"):
            optimizer.reset()
        else:
            optimizer.state.clear()
        buffer = io.BytesIO()
        torch.save(optimizer.state_dict(), buffer)
        reset[f"{name}.pth"] = buffer.getvalue()
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as stripped:
        for item in original.infolist():
            content = original.read(item)
            if item.filename == "data":
                data = {key: value for key, value in json.loads(content).items() if key not in _ROLLOUT_DATA}
                content = json.dumps(data, indent=4).encode()
            elif item.filename in reset:
                content = reset[item.filename]
            item.compress_type = zipfile.ZIP_DEFLATED  # writestr keeps the ZipInfo's own (SB3 stores uncompressed)
            stripped.writestr(item, content)
    return sorted(name[: -len(".pth")] for name in reset)


def _ship_policy_only(
    model: BaseAlgorithm, model_path: str, shipped: str, env: VecEnv, device: str
) -> tuple[BaseAlgorithm, list[str]]:
    """
    :func:`_write_policy_only` into ``shipped``, then that file loaded (the evaluation runs the file that is shipped,
    which also proves that it loads); closes ``env`` on failure.

    :return: the loaded model and the names of the optimizer states that were reset
    """
    try:
        reset_states = _write_policy_only(model, model_path, shipped)
        return type(model).load(shipped, env=env, device=device, custom_objects=_INFERENCE_OBJECTS), reset_states
    except (OSError, ValueError, RuntimeError, KeyError, zipfile.BadZipFile) as exc:
        env.close()
        raise HubError(f"cannot write a policy-only copy of {model_path}: {one_line(exc)}") from None


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers


def env_name(env_id: str) -> str:
    """
    :param env_id: Gymnasium id, e.g. ``ALE/Pong-v5``
    :return: the name rl-zoo3 and Hugging Face use in file and repository names (``/`` replaced by ``-``):
        huggingface_sb3's ``EnvironmentName``
    """
    from huggingface_sb3 import EnvironmentName

    return str(EnvironmentName(env_id))


def model_name(algo: str, env_id: str) -> str:
    """
    :param algo: ``--algo`` name
    :param env_id: Gymnasium id
    :return: ``<algo>-<Env>``: the model file stem and the default repository name (huggingface_sb3's ``ModelName``)
    """
    from huggingface_sb3 import EnvironmentName, ModelName

    return str(ModelName(algo, EnvironmentName(env_id)))


def _debug() -> bool:
    return bool(os.environ.get(DEBUG_ENV_VAR))


def _read_yaml(path: str) -> Any:
    # rl-zoo3 writes config.yml / args.yml with yaml.dump of an OrderedDict: reading them needs the unsafe loader,
    # as rl-zoo3's own get_saved_hyperparams. Only called on files verified against a manifest or explicitly trusted.
    import yaml

    with open(path) as file:
        return yaml.load(file, Loader=yaml.UnsafeLoader)


def _import_env_packages(packages: Sequence[str]) -> None:
    """Register the envs rl-zoo3 registers (ALE, its own) and those of ``--gym-packages``."""
    with contextlib.suppress(ImportError):
        importlib.import_module("rl_zoo3.import_envs")
    for module in packages:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise HubError(f"cannot import the env package {module!r} the agent was trained with ({one_line(exc)})") from None


def _algo_class(algo: str) -> type[BaseAlgorithm]:
    """The class of ``--algo algo``: an sb3_natgrad algorithm, or any rl-zoo3 one."""
    ours = available_algorithms()
    if algo in ours:
        return ours[algo]
    try:
        from rl_zoo3.utils import ALGOS
    except ImportError:
        ALGOS = {}
    if algo in ALGOS:
        return ALGOS[algo]
    names = sorted({*ours, *ALGOS})
    raise HubError(f"unknown --algo {algo!r}; choose from: {', '.join(names)}")


@contextlib.contextmanager
def _quiet(verbose: int, stderr: bool = False) -> Iterator[None]:
    """Silence rl-zoo3's prints (and with ``stderr``, progress bars) unless ``verbose`` > 1."""
    if verbose > 1:
        yield
        return
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()) if stderr else contextlib.nullcontext(),
    ):
        yield


def _say(verbose: int, message: str) -> None:
    if verbose > 0:
        print(message)


# ---------------------------------------------------------------------------------------------------------------------
# Environments and evaluation


def make_env(
    env_id: str,
    config: Mapping[str, Any],
    vec_normalize_path: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = 0,
    n_envs: int = 1,
    render_mode: str | None = None,
    verbose: int = 0,
) -> VecEnv:
    """
    The test environment rl-zoo3's ``enjoy`` builds for an agent (``rl_zoo3.utils.create_test_env``): the env
    wrappers of its saved hyperparameters, its VecNormalize statistics (frozen, rewards not normalized) and frame
    stacking.

    :param env_id: Gymnasium id
    :param config: the saved hyperparameters (``config.yml``)
    :param vec_normalize_path: the saved VecNormalize statistics, when the agent was trained with ``normalize``
    :param env_kwargs: keyword arguments of the env constructor (``env_kwargs.yml``)
    :param seed: seed of the first env (``None``: unseeded)
    :param n_envs: number of envs
    :param render_mode: ``"rgb_array"`` for videos
    :param verbose: 2 shows rl-zoo3's messages
    :return: the vectorized environment
    """
    from rl_zoo3.utils import create_test_env
    from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize

    hyperparams = deepcopy(dict(config))
    kwargs = dict(env_kwargs or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    with _quiet(verbose):
        # stats_path=None: no normalization or frame stacking yet (done below, from the hub-layout file names).
        env = create_test_env(
            env_id,
            n_envs=n_envs,
            stats_path=None,
            seed=seed if seed is not None else 0,
            log_dir=None,
            should_render=False,
            hyperparams=hyperparams,
            env_kwargs=kwargs,
        )
    if seed is None:
        env.seed(None)
    if hyperparams.get("normalize"):
        if vec_normalize_path is None or not os.path.isfile(vec_normalize_path):
            raise HubError(f"the agent was trained with normalize={hyperparams['normalize']!r} but has no VecNormalize file")
        env = VecNormalize.load(vec_normalize_path, env)
        env.training = False
        env.norm_reward = False
    n_stack = int(hyperparams.get("frame_stack", 0) or 0)
    if n_stack > 0:
        env = VecFrameStack(env, n_stack)
    return env


def evaluate(
    model: BaseAlgorithm, env: VecEnv, seeds: Sequence[int], deterministic: bool = True
) -> tuple[list[float], list[int]]:
    """
    Run one episode per seed: before episode ``i`` the env is reset with ``seeds[i]``, so each episode is
    reproducible on its own. Returns and lengths are the Monitor's (the true episode, not a life of an Atari game
    nor a normalized reward).

    :param model: the agent
    :param env: a one-env VecEnv built by :func:`make_env`
    :param seeds: one seed per episode
    :param deterministic: deterministic actions
    :return: the episode returns and lengths
    """
    import numpy as np
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.utils import set_random_seed

    if env.num_envs != 1:
        raise HubError(f"evaluation needs one env, got {env.num_envs}")
    monitored = env.env_is_wrapped(Monitor)[0]
    returns, lengths = [], []
    for seed in seeds:
        set_random_seed(seed)  # stochastic policies sample reproducibly
        env.seed(seed)
        observation = env.reset()
        state, episode_start = None, np.ones((1,), dtype=bool)
        total, length = 0.0, 0
        while True:
            # Same predict-and-step as _record_replay's loop, whose episode handling differs: two calls, too small to share.
            action, state = model.predict(
                observation,  # type: ignore[arg-type]
                state=state,
                episode_start=episode_start,
                deterministic=deterministic,
            )
            observation, reward, done, info = env.step(action)
            total += float(reward[0])
            length += 1
            episode_start = done
            if monitored and "episode" in info[0]:
                returns.append(float(info[0]["episode"]["r"]))
                lengths.append(int(info[0]["episode"]["l"]))
                break
            if not monitored and done[0]:
                returns.append(total)
                lengths.append(length)
                break
    return returns, lengths


def _record_replay(
    model: BaseAlgorithm, make: Any, path: str, length: int, deterministic: bool, seed: int, verbose: int
) -> str | None:
    """
    Write ``replay.mp4`` (SB3's VecVideoRecorder; moviepy encodes with imageio-ffmpeg's bundled ffmpeg).

    :return: ``None`` when written, else why not
    """
    for module in ("moviepy", "imageio_ffmpeg"):
        try:
            importlib.import_module(module)
        except ImportError:
            return f"{module} is not installed (pip install 'sb3-natgrad[hub]')"
    from stable_baselines3.common.vec_env import VecVideoRecorder

    with tempfile.TemporaryDirectory(prefix="sb3-natgrad-video-") as folder:
        try:
            env = make(render_mode="rgb_array", seed=seed)
            recorder = VecVideoRecorder(env, folder, record_video_trigger=lambda step: step == 0, video_length=length)
            with _quiet(verbose, stderr=True):  # moviepy's progress bar
                observation = recorder.reset()
                state, episode_start = None, None
                for _ in range(length + 1):
                    action, state = model.predict(
                        observation,  # type: ignore[arg-type]
                        state=state,
                        episode_start=episode_start,
                        deterministic=deterministic,
                    )
                    observation, _, episode_start, _ = recorder.step(action)
                recorder.close()
        except Exception as exc:  # rendering is optional: an env without rgb_array rendering, no OpenGL, no codec...
            if _debug():
                raise
            return f"recording failed ({type(exc).__name__}: {one_line(exc)})"
        videos = [name for name in os.listdir(folder) if name.endswith(".mp4")]
        if not videos:
            return "the recorder wrote no video"
        shutil.move(os.path.join(folder, videos[0]), path)
    return None


# ---------------------------------------------------------------------------------------------------------------------
# package


def _train_command(log_path: str, name: str) -> str | None:
    """
    The training command of a run, from rl-zoo3's ``command.txt`` (``" ".join(sys.orig_argv)``) without the
    interpreter's path: ``sb3-natgrad train ...`` or ``python -m ...``; the raw text when it is neither.
    """
    path = os.path.join(log_path, name, "command.txt")
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        tokens = file.read().strip().split(" ")
    for index, token in enumerate(tokens):
        if os.path.basename(token) == "sb3-natgrad":
            return " ".join(["sb3-natgrad", *tokens[index + 1 :]])
        if token == "-m" and index + 1 < len(tokens):
            return " ".join(["python", *tokens[index:]])
    return " ".join(tokens)


def _write_metrics_zip(log_path: str, target: str) -> list[str]:
    """``train_eval_metrics.zip`` as rl-zoo3: ``evaluations.npz`` and the monitor files; fixed timestamps."""
    names = []
    if os.path.isfile(os.path.join(log_path, "evaluations.npz")):
        names.append("evaluations.npz")
    names += sorted(name for name in os.listdir(log_path) if name.endswith(".csv"))
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(os.path.join(log_path, name), "rb") as file:
                archive.writestr(info, file.read())
    return names


def model_card_metadata(class_name: str, algo: str, env_id: str, mean_reward: float, std_reward: float) -> dict[str, Any]:
    """
    The model card metadata of rl-zoo3 / huggingface_sb3, as a plain dict: ``library_name``, ``tags`` and a
    ``model-index`` whose name is the class name (rl-zoo3's benchmark maps it to ``--algo`` by lower-casing it).

    :param class_name: e.g. ``ACKTR``
    :param algo: e.g. ``acktr``
    :param env_id: Gymnasium id
    :param mean_reward: evaluation mean return
    :param std_reward: its standard deviation
    :return: the metadata
    """
    from huggingface_hub import ModelCardData
    from huggingface_hub.repocard import metadata_eval_result

    tags = [env_id, "deep-reinforcement-learning", "reinforcement-learning", "stable-baselines3", "sb3-natgrad"]
    tags += ["natural-gradient", algo]
    evaluation = metadata_eval_result(
        model_pretty_name=class_name,
        task_pretty_name="reinforcement-learning",
        task_id="reinforcement-learning",
        metrics_pretty_name="mean_reward",
        metrics_id="mean_reward",
        metrics_value=f"{mean_reward:.2f} +/- {std_reward:.2f}",
        dataset_pretty_name=env_id,
        dataset_id=env_id,
    )
    # to_dict(): metadata_save / yaml.dump of the ModelCardData object itself would write Python-object YAML tags.
    return ModelCardData(library_name="stable-baselines3", tags=tags, **evaluation).to_dict()


def _model_card(info: Mapping[str, Any], config: Mapping[str, Any], env_kwargs: Mapping[str, Any]) -> str:
    algo, env_id, class_name = info["algo"], info["env_id"], info["class_name"]
    results = info["results"]
    seeds = results["eval_seeds"]
    name = model_name(algo, env_id)
    policy = "deterministic" if results["is_deterministic"] else "stochastic"
    metadata = model_card_metadata(class_name, algo, env_id, results["mean_reward"], results["std_reward"])
    import yaml

    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    lines = [
        "---",
        front.rstrip("\n"),
        "---",
        "",
        f"# **{class_name}** Agent playing **{env_id}**",
        "",
        f"This is a trained model of a **{class_name}** agent playing **{env_id}** using "
        "[sb3_natgrad](https://github.com/sb3-natgrad/sb3-natgrad) (natural-gradient algorithms for "
        "[Stable-Baselines3](https://github.com/DLR-RM/stable-baselines3)) and the "
        "[RL Zoo](https://github.com/DLR-RM/rl-baselines3-zoo) training framework.",
        "",
        "## Evaluation",
        "",
        f"Mean return **{results['mean_reward']:.2f} +/- {results['std_reward']:.2f}** over {len(seeds)} episodes "
        f"({policy} actions; episode *i* starts from `env.reset(seed={seeds[0]} + i)`, seeds {seeds[0]}-{seeds[-1]}), "
        f"evaluated on {results['eval_datetime']}. The returns and seeds of every episode are in `results.json`.",
        "",
        "## Usage (with sb3_natgrad)",
        "",
        "```bash",
        "pip install 'sb3-natgrad[zoo,hub]'",
        "# Download (needs --trust-remote-code: SB3 model files contain pickled objects) and verify against MANIFEST.json",
        f"sb3-natgrad load --from ORG/{name} --trust-remote-code -f logs/",
        f"sb3-natgrad enjoy --algo {algo} --env {env_id} -f logs/",
        "# From a local copy of this folder (no network)",
        f"sb3-natgrad load --from path/to/{name} -f logs/",
        "```",
        "",
        "## Training (with sb3_natgrad and the RL Zoo)",
        "",
        "```bash",
        info.get("train_command") or f"sb3-natgrad train --algo {algo} --env {env_id} -f logs/",
        info.get("package_command") or f"sb3-natgrad package --algo {algo} --env {env_id} -f logs/ -o {name}",
        f"sb3-natgrad push {name} --repo ORG/{name}",
        "```",
        "",
        f"Trained for {info['num_timesteps']} steps with seed {info.get('seed')}.",
    ]
    if "policy_only" in info:
        lines += [
            "",
            f"The model file holds the policy only: the optimizer states ({', '.join(info['policy_only']) or 'none'}) "
            "were reset when it was packaged (`--policy-only`), so it acts exactly as the trained agent, and training "
            "it further starts the curvature estimates afresh.",
        ]
    lines += [
        "",
        "## Hyperparameters",
        "",
        "```python",
        pformat(dict(config)),
        "```",
    ]
    if env_kwargs:
        lines += ["", "## Environment Arguments", "", "```python", pformat(dict(env_kwargs)), "```"]
    lines += [
        "",
        "## Files",
        "",
        f"`{MANIFEST}` lists the sha256 digest of every file and the library versions used: "
        f"{', '.join(f'{key} {value}' for key, value in library_versions().items())}.",
        "",
    ]
    return "\n".join(lines)


def _check_output(out: str, force: bool, protected: Sequence[str] = ()) -> None:
    """
    ``out`` may be written: it does not exist, is empty, or (``force``) holds an earlier output of :func:`package`
    (a valid manifest listing every file in it) that contains none of the ``protected`` paths, the working
    directory or the home directory.
    """
    if os.path.isfile(out) or os.path.islink(out):
        raise HubError(f"output {out!r} is a file, expected a folder")
    if not (os.path.isdir(out) and os.listdir(out)):
        return
    if not force:
        raise HubError(f"output folder {out!r} exists and is not empty; pass --force to replace it")
    absolute = os.path.abspath(out)
    for path in [*protected, os.getcwd(), os.path.expanduser("~")]:
        if os.path.commonpath([absolute, os.path.abspath(path)]) == absolute:
            raise HubError(f"output folder {out!r} contains {path!r}; --force replaces only an earlier package folder")
    try:
        listed = set(read_manifest(out)["files"])
    except ManifestError:
        listed = None
    if listed is None or set(_folder_files(out)) - listed:
        raise HubError(
            f"output folder {out!r} is not an earlier 'sb3-natgrad package' output (its files are not all listed in "
            f"a {MANIFEST}); --force replaces only those, choose another -o"
        )


def _move_into_place(built: str, out: str) -> None:
    """Replace ``out`` by the folder ``built`` (same file system): never a half-written ``out``."""
    out = os.path.abspath(out)
    if os.path.isdir(out):
        aside = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
        os.rmdir(aside)
        os.rename(out, aside)
        try:
            os.rename(built, out)
        except OSError:
            os.rename(aside, out)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.rename(built, out)


@contextlib.contextmanager
def _building(out: str) -> Iterator[str]:
    """A temporary folder next to ``out``, removed unless it was moved into place."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out))}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)  # mkdtemp makes it private; the result gets the usual permissions
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def package(
    algo: str,
    env_id: str,
    folder: str,
    out: str,
    exp_id: int = 0,
    load_best: bool = False,
    load_checkpoint: int | None = None,
    n_eval_episodes: int = DEFAULT_EVAL_EPISODES,
    eval_seed: int = 0,
    deterministic: bool | None = None,
    video: bool = True,
    video_length: int = DEFAULT_VIDEO_LENGTH,
    force: bool = False,
    device: str = "auto",
    verbose: int = 1,
    policy_only: bool = False,
) -> str:
    """
    Package an rl-zoo3 run into the Hugging Face repository layout of rl-zoo3, without network.

    The folder is built next to ``out`` and moved into place only when complete.

    :param algo: ``--algo`` name (``acktr``, ``smac``, ``kfrelax`` or any rl-zoo3 algorithm)
    :param env_id: Gymnasium id
    :param folder: the log folder of ``train`` (``-f``)
    :param out: the folder to write
    :param exp_id: run number (``<Env>_<exp_id>``); 0: the latest run
    :param load_best: package ``best_model.zip`` instead of the final model
    :param load_checkpoint: package the checkpoint of this step instead of the final model
    :param n_eval_episodes: episodes of the fresh evaluation written to ``results.json`` and the model card
    :param eval_seed: episode ``i`` of the evaluation is reset with seed ``eval_seed + i``
    :param deterministic: deterministic actions; ``None``: deterministic except for Atari and MiniGrid (rl-zoo3)
    :param video: write ``replay.mp4`` when moviepy and imageio-ffmpeg are installed (a notice otherwise)
    :param video_length: steps of the video
    :param force: replace a non-empty ``out``
    :param device: PyTorch device for the evaluation
    :param verbose: 0: silent, 1: progress, 2: also rl-zoo3's messages
    :param policy_only: ship the policy without the optimizer states (K-FAC's curvature) and the last rollout
        observations: the agent acts identically and much smaller (ACKTR on Atari: 25 MB -> 4 MB); continued training
        restarts the curvature. Recorded in the manifest and the model card
    :return: ``out``
    """
    from rl_zoo3.utils import get_model_path
    from yaml import dump as yaml_dump

    if n_eval_episodes < 1:
        raise HubError(f"--n-eval-episodes must be at least 1, got {n_eval_episodes}")
    if video_length < 1:
        raise HubError(f"--video-length must be at least 1, got {video_length}")
    algo_class = _algo_class(algo)
    name = env_name(env_id)
    try:
        with _quiet(verbose):
            found = get_model_path(exp_id, folder, algo, name, load_best, load_checkpoint, False)  # type: ignore[arg-type]
        _, model_path, log_path = found
    except (AssertionError, ValueError) as exc:
        raise HubError(f"no trained {algo} model for {env_id} in {folder!r}: {one_line(exc)}") from None
    stats_dir = os.path.join(log_path, name)
    for required in ("config.yml", "args.yml"):
        if not os.path.isfile(os.path.join(stats_dir, required)):
            raise HubError(f"{stats_dir}: no {required} (not a run written by 'sb3-natgrad train')")
    _check_output(out, force, protected=[folder, model_path])

    config = dict(_read_yaml(os.path.join(stats_dir, "config.yml")))
    args = dict(_read_yaml(os.path.join(stats_dir, "args.yml")))
    env_kwargs = dict(args.get("env_kwargs") or {})
    _import_env_packages(args.get("gym_packages") or [])
    if deterministic is None:
        from rl_zoo3.exp_manager import ExperimentManager

        deterministic = not (ExperimentManager.is_atari(env_id) or ExperimentManager.is_minigrid(env_id))
    vec_normalize = os.path.join(stats_dir, "vecnormalize.pkl")
    vec_normalize_path = vec_normalize if os.path.isfile(vec_normalize) else None

    def make(render_mode: str | None = None, seed: int = eval_seed) -> VecEnv:
        return make_env(env_id, config, vec_normalize_path, env_kwargs, seed=seed, render_mode=render_mode, verbose=verbose)

    _say(verbose, f"Packaging {model_path} into {out}")
    with _building(out) as build:
        stem = model_name(algo, env_id)
        if not policy_only:
            shutil.copyfile(model_path, os.path.join(build, f"{stem}.zip"))
        shutil.copyfile(os.path.join(stats_dir, "config.yml"), os.path.join(build, "config.yml"))
        shutil.copyfile(os.path.join(stats_dir, "args.yml"), os.path.join(build, "args.yml"))
        with open(os.path.join(build, "env_kwargs.yml"), "w") as file:
            yaml_dump(env_kwargs, file)
        if vec_normalize_path is not None:
            shutil.copyfile(vec_normalize_path, os.path.join(build, "vec_normalize.pkl"))
        _write_metrics_zip(log_path, os.path.join(build, "train_eval_metrics.zip"))

        env = make()
        try:
            model = algo_class.load(model_path, env=env, device=device, custom_objects=_INFERENCE_OBJECTS)
        except (OSError, ValueError, RuntimeError, KeyError, zipfile.BadZipFile) as exc:
            env.close()
            raise HubError(f"cannot load {model_path} as a {algo} model: {one_line(exc)}") from None
        reset_states: list[str] = []
        if policy_only:
            model, reset_states = _ship_policy_only(model, model_path, os.path.join(build, f"{stem}.zip"), env, device)
            _say(verbose, f"Policy only: reset {', '.join(reset_states) or 'no optimizer state'}")
        seeds = [eval_seed + index for index in range(n_eval_episodes)]
        _say(
            verbose, f"Evaluating on {n_eval_episodes} episodes (seeds {seeds[0]}-{seeds[-1]}, deterministic={deterministic})"
        )
        returns, lengths = evaluate(model, env, seeds, deterministic)
        env.close()
        mean, std = float(sum(returns) / len(returns)), float(statistics.pstdev(returns))
        results = {
            "mean_reward": mean,
            "std_reward": std,
            "is_deterministic": deterministic,
            "n_eval_episodes": n_eval_episodes,
            "eval_datetime": datetime.datetime.now().isoformat(timespec="seconds"),
            "env_id": env_id,
            "algo": algo,
            "eval_seeds": seeds,
            "episode_rewards": returns,
            "episode_lengths": lengths,
        }
        with open(os.path.join(build, "results.json"), "w") as file:
            json.dump(results, file, indent=2)
            file.write("\n")
        _say(verbose, f"Mean return {mean:.2f} +/- {std:.2f}")

        if video:
            reason = _record_replay(
                model, make, os.path.join(build, "replay.mp4"), video_length, deterministic, eval_seed, verbose
            )
            if reason is not None:
                _say(verbose, f"notice: no replay.mp4: {reason}")

        command = ["sb3-natgrad", "package", "--algo", algo, "--env", env_id, "-f", folder, "-o", os.path.basename(out)]
        command += ["--exp-id", str(exp_id)] if exp_id else []
        command += ["--load-best"] if load_best else []
        command += ["--load-checkpoint", str(load_checkpoint)] if load_checkpoint is not None else []
        command += ["--n-eval-episodes", str(n_eval_episodes), "--eval-seed", str(eval_seed)]
        command += [] if deterministic else ["--stochastic"]
        command += ["--policy-only"] if policy_only else []
        info = {
            "algo": algo,
            "env_id": env_id,
            "class_name": algo_class.__name__,
            "model_file": f"{stem}.zip",
            "num_timesteps": int(model.num_timesteps),
            "seed": args.get("seed"),
            "train_command": _train_command(log_path, name),
            "package_command": shlex.join(command),
            "results": results,
        }
        if policy_only:
            info["policy_only"] = reset_states
        with open(os.path.join(build, "README.md"), "w") as file:
            file.write(_model_card(info, config, env_kwargs))
        manifest_info = {key: value for key, value in info.items() if key != "results"}
        manifest_info["packaged_from"] = os.path.relpath(model_path, folder)
        write_manifest(build, manifest_info)
        _move_into_place(build, out)
    _say(verbose, f"Wrote {out} ({', '.join(sorted(os.listdir(out)))})")
    return out
