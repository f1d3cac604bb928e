"""
Share trained agents in the Hugging Face Hub layout of rl-zoo3, offline first.

- :func:`package` turns an rl-zoo3 run (``logs/<algo>/<Env>_<N>/``) into a folder laid out exactly like an rl-zoo3
  Hugging Face repository (``<algo>-<Env>.zip``, ``config.yml``, ``args.yml``, ``env_kwargs.yml``,
  ``vec_normalize.pkl`` when the run normalized, ``train_eval_metrics.zip``, ``results.json`` from a fresh
  evaluation, ``README.md`` model card, ``replay.mp4`` when a video backend is installed), plus ``MANIFEST.json``
  with the sha256 digest of every file and the library versions. No network.
- :func:`load` rebuilds the rl-zoo3 run layout from such a folder (verified against its manifest first) or from a
  Hub repository (opt-in: ``trust_remote_code``), so ``sb3-natgrad enjoy`` / ``record-video`` / ``train -i`` work.
- :func:`push` uploads a folder to the Hub (``HfApi.create_repo`` + ``upload_folder``).
- :func:`load_pretrained` returns one of the agents shipped in ``sb3_natgrad/pretrained/`` with its environment,
  ready for ``evaluate_policy``; :func:`pretrained_agents` lists them.

Importing this module does not import rl_zoo3 or huggingface_hub. Errors are :class:`HubError` (a
:class:`~sb3_natgrad.zoo.ZooError`) with a one-line message; :class:`ManifestError` names the file that does not
match the manifest.

Never imports ``rl_zoo3.push_to_hub`` (broken with current ``huggingface_sb3``) and never calls
``huggingface_sb3.load_from_hub``: the Hub is reached through ``huggingface_hub`` directly.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib
import io
import json
import math
import os
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from copy import deepcopy
from importlib.resources import files
from pprint import pformat
from typing import TYPE_CHECKING, Any

from sb3_natgrad.zoo import ZooError, available_algorithms
from sb3_natgrad.zoo.config import one_line

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

#: Name of the manifest written by :func:`package`.
MANIFEST = "MANIFEST.json"
#: Version of the manifest format.
MANIFEST_FORMAT = 1
#: Files of a Hub repository that are bookkeeping of the Hub itself, not part of the agent (never verified).
HUB_BOOKKEEPING = frozenset({".gitattributes"})
#: Name of the index of the shipped agents, in :func:`pretrained_dir`.
INDEX = "index.json"
#: Default number of evaluation episodes of :func:`package` (rl-zoo3's ``push_to_hub`` default).
DEFAULT_EVAL_EPISODES = 10
#: Default number of steps of ``replay.mp4`` (rl-zoo3's default).
DEFAULT_VIDEO_LENGTH = 1000
#: Set this environment variable to get the full traceback instead of the one-line error for Hub failures.
DEBUG_ENV_VAR = "SB3_NATGRAD_DEBUG"
#: Distributions whose versions :func:`package` records in the manifest.
RECORDED_DISTRIBUTIONS = (
    "sb3-natgrad",
    "stable-baselines3",
    "sb3-contrib",
    "rl-zoo3",
    "torch",
    "gymnasium",
    "numpy",
)

# rl-zoo3 / Hugging Face repository id: ORG/NAME, letters, digits, "-", "_", ".".
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Learning-rate schedules are not needed to run an agent; rl-zoo3's enjoy replaces them the same way, so a model
# trained with an rl-zoo3 schedule (pickled rl_zoo3 object) loads without it.
_INFERENCE_OBJECTS: dict[str, Any] = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}


class HubError(ZooError, ValueError):
    """
    Packaging, loading or publishing an agent failed; the message is one line.

    ``exit_code`` is the exit code of the ``sb3-natgrad`` command: 2 for bad input, 1 for an unreachable Hub or a
    missing token (the command was right, the environment was not).
    """

    exit_code = 2


class HubUnreachableError(HubError):
    """The Hugging Face Hub could not be reached (offline, no token, server error)."""

    exit_code = 1


class ManifestError(HubError):
    """A folder does not match its ``MANIFEST.json`` (a changed, missing or extra file)."""


# ---------------------------------------------------------------------------------------------------------------------
# Small helpers


def env_name(env_id: str) -> str:
    """
    :param env_id: Gymnasium id, e.g. ``ALE/Pong-v5``
    :return: the name rl-zoo3 and Hugging Face use in file and repository names (``/`` replaced by ``-``)
    """
    return env_id.replace("/", "-")


def model_name(algo: str, env_id: str) -> str:
    """
    :param algo: ``--algo`` name
    :param env_id: Gymnasium id
    :return: ``<algo>-<Env>``: the model file stem and the default repository name
    """
    return f"{algo}-{env_name(env_id)}"


def sha256_file(path: str) -> str:
    """
    :param path: a file
    :return: its sha256 digest (hex)
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """
    :return: ``{distribution: version}`` of the libraries that matter to load an agent, and ``python``
    """
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": sys.version.split()[0]}
    for distribution in RECORDED_DISTRIBUTIONS:
        with contextlib.suppress(PackageNotFoundError):
            versions[distribution] = version(distribution)
    return versions


def _debug() -> bool:
    return bool(os.environ.get(DEBUG_ENV_VAR))


def _read_yaml(path: str) -> Any:
    # rl-zoo3 writes config.yml / args.yml with yaml.dump of an OrderedDict: reading them needs the unsafe loader,
    # as rl-zoo3's own get_saved_hyperparams. Only called on files verified against a manifest or explicitly trusted.
    import yaml

    with open(path) as file:
        return yaml.load(file, Loader=yaml.UnsafeLoader)


def _is_atari(env_id: str) -> bool:
    import gymnasium as gym

    return "AtariEnv" in str(gym.spec(env_id).entry_point)


def _is_minigrid(env_id: str) -> bool:
    import gymnasium as gym

    return "minigrid" in str(gym.spec(env_id).entry_point).lower()


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
# Manifest


def _folder_files(folder: str) -> list[str]:
    """Relative POSIX paths of the files in ``folder`` (Hub bookkeeping and the manifest excluded)."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            relative = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            if relative != MANIFEST and relative not in HUB_BOOKKEEPING:
                found.append(relative)
    return found


def write_manifest(folder: str, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """
    Write ``MANIFEST.json``: the sha256 digest and size of every file of ``folder`` and the library versions.

    :param folder: a packaged agent
    :param metadata: extra fields (``algo``, ``env_id``, ``class_name``, ``train_command``...)
    :return: the manifest
    """
    manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, **(metadata or {})}
    manifest["versions"] = library_versions()
    manifest["files"] = {
        name: {"sha256": sha256_file(os.path.join(folder, name)), "size": os.path.getsize(os.path.join(folder, name))}
        for name in _folder_files(folder)
    }
    with open(os.path.join(folder, MANIFEST), "w") as file:
        json.dump(manifest, file, indent=2, sort_keys=False)
        file.write("\n")
    return manifest


def read_manifest(folder: str) -> dict[str, Any]:
    """
    :param folder: a packaged agent
    :return: its manifest (not verified: see :func:`verify`)
    """
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise ManifestError(f"{folder}: no {MANIFEST} (not a folder written by 'sb3-natgrad package'), refusing to load it")
    try:
        with open(path) as file:
            manifest = json.load(file)
        entries = manifest["files"]
        if not isinstance(entries, dict) or not all(isinstance(entry["sha256"], str) for entry in entries.values()):
            raise TypeError("malformed 'files'")
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{path}: malformed manifest ({one_line(exc)})") from None
    for name in entries:
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or "\\" in name:
            raise ManifestError(f"{path}: invalid file name {name!r}")
    for key in ("algo", "env_id"):
        if key in manifest:
            _check_identifier(key, manifest[key], path, ManifestError)
    model_file = manifest.get("model_file")
    if model_file is not None and model_file not in entries:
        raise ManifestError(f"{path}: model_file {model_file!r} is not one of the listed files")
    return manifest


#: An algorithm name as rl-zoo3 uses it (``--algo``) and a Gymnasium env id (``[namespace/]Name-vN``): nothing that can
#: climb out of a folder when joined into a path.
_ALGO_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_ENV_ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.:-]*(/[A-Za-z0-9_-][A-Za-z0-9_.:-]*)?")


def _check_identifier(key: str, value: Any, where: str, error: type[HubError]) -> None:
    """``algo`` / ``env_id`` values become path components: refuse anything but plain names."""
    pattern = _ALGO_PATTERN if key == "algo" else _ENV_ID_PATTERN
    if not isinstance(value, str) or not pattern.fullmatch(value) or ".." in value:
        raise error(f"{where}: invalid {key} {value!r}")


def verify(folder: str) -> dict[str, Any]:
    """
    Check ``folder`` against its ``MANIFEST.json``: every listed file is there with the same sha256, and there is
    no other file (Hub bookkeeping such as ``.gitattributes`` aside).

    :param folder: a packaged agent
    :return: the manifest
    :raises ManifestError: naming the first changed, missing or extra file
    """
    manifest = read_manifest(folder)
    listed = manifest["files"]
    present = set(_folder_files(folder))
    for name in sorted(listed):
        if name not in present:
            raise ManifestError(f"{folder}: {name} is missing (listed in {MANIFEST}), refusing to load it")
    for name in sorted(present - set(listed)):
        raise ManifestError(f"{folder}: unexpected file {name} (not in {MANIFEST}), refusing to load it")
    for name in sorted(listed):
        if sha256_file(os.path.join(folder, name)) != listed[name]["sha256"]:
            raise ManifestError(f"{folder}: {name} was changed (its sha256 differs from {MANIFEST}), refusing to load it")
    return manifest


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
        deterministic = not (_is_atari(env_id) or _is_minigrid(env_id))
    vec_normalize = os.path.join(stats_dir, "vecnormalize.pkl")
    vec_normalize_path = vec_normalize if os.path.isfile(vec_normalize) else None

    def make(render_mode: str | None = None, seed: int = eval_seed) -> VecEnv:
        return make_env(env_id, config, vec_normalize_path, env_kwargs, seed=seed, render_mode=render_mode, verbose=verbose)

    _say(verbose, f"Packaging {model_path} into {out}")
    with _building(out) as build:
        stem = model_name(algo, env_id)
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
        with open(os.path.join(build, "README.md"), "w") as file:
            file.write(_model_card(info, config, env_kwargs))
        manifest_info = {key: value for key, value in info.items() if key != "results"}
        manifest_info["packaged_from"] = os.path.relpath(model_path, folder)
        write_manifest(build, manifest_info)
        _move_into_place(build, out)
    _say(verbose, f"Wrote {out} ({', '.join(sorted(os.listdir(out)))})")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# load


def is_repo_id(source: str) -> bool:
    """
    :param source: ``--from`` value
    :return: whether it has the form of a Hub repository id (``ORG/NAME``)
    """
    return bool(_REPO_ID.match(source))


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Errors of a failed Hub call: huggingface_hub's (OSError subclasses) and the HTTP client's (httpx2 for 2.x)."""
    errors: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError]
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        with contextlib.suppress(ImportError, AttributeError):
            errors.append(getattr(importlib.import_module(module), name))
    with contextlib.suppress(ImportError):
        from huggingface_hub.errors import HFValidationError

        errors.append(HFValidationError)
    return tuple(errors)


def _hub_failure(action: str, exc: BaseException) -> HubUnreachableError:
    from huggingface_hub import constants

    message = one_line(exc) or type(exc).__name__
    if constants.HF_HUB_OFFLINE:
        message = "offline mode is enabled (HF_HUB_OFFLINE=1)"
    return HubUnreachableError(f"{action} failed: {type(exc).__name__}: {message}")


def download(repo_id: str, revision: str | None = None, cache_dir: str | None = None) -> str:
    """
    Download a Hub repository (all its files).

    :param repo_id: ``ORG/NAME``
    :param revision: branch, tag or commit
    :param cache_dir: huggingface_hub cache folder (default: its own)
    :return: the local snapshot folder
    """
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, library_name="sb3-natgrad")
    except _hub_errors() as exc:
        if _debug():
            raise
        raise _hub_failure(f"downloading {repo_id} from the Hugging Face Hub", exc) from None


def _safe_extract(archive_path: str, target: str) -> None:
    """Extract ``train_eval_metrics.zip``: plain file names only (no folders, no ``..``)."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            for member in archive.infolist():
                name = member.filename
                if member.is_dir() or "/" in name or "\\" in name or name in ("", ".", ".."):
                    raise HubError(f"{archive_path}: unexpected entry {name!r} (only plain file names), refusing to load it")
            archive.extractall(target)
    except zipfile.BadZipFile as exc:
        raise HubError(f"{archive_path}: not a zip file ({one_line(exc)})") from None


def _resolve_source(
    source: str, trust_remote_code: bool, revision: str | None, verbose: int
) -> tuple[str, dict[str, Any] | None]:
    """The local folder of ``--from`` (downloaded from the Hub if needed) and its verified manifest."""
    if os.path.isdir(source):
        return source, verify(source)
    if os.path.exists(source):
        raise HubError(f"--from {source!r} is a file, expected a folder written by 'sb3-natgrad package' or ORG/REPO")
    if not is_repo_id(source):
        raise HubError(f"--from {source!r}: no such folder (and not a Hub repository id ORG/REPO)")
    if not trust_remote_code:
        raise HubError(
            f"{source} is not a local folder; loading it from the Hugging Face Hub unpickles its model files, "
            "which can run code: pass --trust-remote-code if you trust this repository"
        )
    _say(verbose, f"Downloading {source} from the Hugging Face Hub")
    root = download(source, revision)
    if os.path.isfile(os.path.join(root, MANIFEST)):
        return root, verify(root)
    _say(verbose, f"notice: {source} has no {MANIFEST} (not packaged by sb3-natgrad): its files are not verified")
    return root, None


def _identify(source: str, manifest: dict[str, Any] | None, algo: str | None, env_id: str | None) -> tuple[str, str]:
    """The algorithm and env of a packaged agent: from its manifest (checked against the given ones) or given."""
    if manifest is None:
        if algo is None or env_id is None:
            raise HubError(f"{source} has no {MANIFEST}: pass --algo and --env")
        _check_identifier("algo", algo, source, HubError)
        _check_identifier("env_id", env_id, source, HubError)
        return algo, env_id
    for key, given in (("algo", algo), ("env_id", env_id)):
        if given is not None and manifest.get(key) != given:
            raise HubError(f"{source} holds {manifest.get('algo')} on {manifest.get('env_id')}, not {key} {given!r}")
    found_algo, found_env = manifest.get("algo"), manifest.get("env_id")
    if not isinstance(found_algo, str) or not isinstance(found_env, str):
        raise ManifestError(f"{source}: {MANIFEST} does not name the algorithm and env")
    return found_algo, found_env


def load(
    source: str,
    folder: str,
    exp_id: int = 0,
    algo: str | None = None,
    env_id: str | None = None,
    force: bool = False,
    trust_remote_code: bool = False,
    revision: str | None = None,
    verbose: int = 1,
) -> str:
    """
    Rebuild the rl-zoo3 run layout from a packaged agent, so ``sb3-natgrad enjoy --algo A --env E -f folder`` runs
    it: ``<folder>/<algo>/<Env>_<N>/<Env>.zip``, ``<Env>/config.yml``, ``args.yml``, ``env_kwargs.yml``,
    ``vecnormalize.pkl`` and the monitor / evaluation files of ``train_eval_metrics.zip``.

    A local folder must match its ``MANIFEST.json`` (a changed, missing or extra file is refused). A Hub repository
    is downloaded only with ``trust_remote_code`` (SB3 model files contain pickled objects, which can run code when
    loaded); it is verified against its manifest when it has one. The manifest detects corruption and accidental
    changes, not a deliberate attack (whoever changes a file can rewrite the manifest): load only agents whose
    source you trust, from a local copy as from the Hub.

    :param source: a folder written by :func:`package`, or a Hub repository id ``ORG/NAME``
    :param folder: the log folder to write into (``-f``)
    :param exp_id: run number; 0: one more than the latest run of this algorithm and env
    :param algo: expected ``--algo`` (checked against the manifest; needed for a Hub repository without manifest)
    :param env_id: expected env id (same)
    :param force: replace an existing run folder
    :param trust_remote_code: allow downloading from the Hub
    :param revision: Hub branch, tag or commit
    :param verbose: 0: silent
    :return: the run folder
    """
    root, manifest = _resolve_source(source, trust_remote_code, revision, verbose)
    algo, env_id = _identify(source, manifest, algo, env_id)
    name = env_name(env_id)
    stem = model_name(algo, env_id)
    for required in (f"{stem}.zip", "config.yml", "args.yml"):
        if not os.path.isfile(os.path.join(root, required)):
            raise HubError(f"{source}: no {required}")

    if os.path.exists(folder) and not os.path.isdir(folder):
        raise HubError(f"-f {folder!r} is a file, expected a log folder")
    algo_folder = os.path.join(folder, algo)
    if exp_id == 0:
        from rl_zoo3.utils import get_latest_run_id

        exp_id = get_latest_run_id(algo_folder, name) + 1  # type: ignore[arg-type]
    if exp_id < 0:
        raise HubError(f"--exp-id must be 0 (new run) or a run number, got {exp_id}")
    log_path = os.path.join(algo_folder, f"{name}_{exp_id}")
    if os.path.exists(log_path) and not force:
        raise HubError(f"{log_path} already exists; pass --force to replace it, or --exp-id 0 for a new run folder")

    with _building(log_path) as build:
        config_dir = os.path.join(build, name)
        os.makedirs(config_dir)
        shutil.copyfile(os.path.join(root, f"{stem}.zip"), os.path.join(build, f"{name}.zip"))
        for file_name in ("config.yml", "args.yml"):
            shutil.copyfile(os.path.join(root, file_name), os.path.join(config_dir, file_name))
        if os.path.isfile(os.path.join(root, "env_kwargs.yml")):
            shutil.copyfile(os.path.join(root, "env_kwargs.yml"), os.path.join(config_dir, "env_kwargs.yml"))
        if os.path.isfile(os.path.join(root, "vec_normalize.pkl")):
            shutil.copyfile(os.path.join(root, "vec_normalize.pkl"), os.path.join(config_dir, "vecnormalize.pkl"))
        if os.path.isfile(os.path.join(root, "train_eval_metrics.zip")):
            _safe_extract(os.path.join(root, "train_eval_metrics.zip"), build)
        _move_into_place(build, log_path)
    _say(verbose, f"Saved {algo} on {env_id} to {log_path}")
    _say(verbose, f"Run it with: sb3-natgrad enjoy --algo {algo} --env {env_id} -f {folder} --exp-id {exp_id}")
    return log_path


# ---------------------------------------------------------------------------------------------------------------------
# push


def push(
    out: str,
    repo_id: str,
    commit_message: str | None = None,
    private: bool = False,
    token: str | None = None,
    verbose: int = 1,
) -> str:
    """
    Upload a packaged agent to the Hugging Face Hub (``HfApi.create_repo(exist_ok=True)`` + ``upload_folder``).
    The folder is verified against its manifest first; the repository ends up with exactly its files (remote
    files that are not in the folder are deleted, ``.gitattributes`` aside).

    :param out: a folder written by :func:`package`
    :param repo_id: ``ORG/NAME`` (rl-zoo3's convention: ``ORG/<algo>-<Env>``)
    :param commit_message: commit message (default: names the agent)
    :param private: create the repository private
    :param token: Hugging Face token (default: huggingface_hub's, from ``HF_TOKEN`` or ``hf auth login``)
    :param verbose: 0: silent
    :return: the repository URL
    """
    if not os.path.isdir(out):
        raise HubError(f"{out!r}: no such folder (write one with 'sb3-natgrad package')")
    if not is_repo_id(repo_id):
        raise HubError(f"--repo {repo_id!r}: expected a repository id ORG/NAME")
    manifest = verify(out)
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise HubUnreachableError("no Hugging Face token: log in with 'hf auth login' or set HF_TOKEN")
    message = commit_message or f"{manifest.get('class_name', 'agent')} on {manifest.get('env_id', '?')} (sb3-natgrad package)"
    api = HfApi(token=token, library_name="sb3-natgrad")
    try:
        url = api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
        _say(verbose, f"Uploading {out} to {url}")
        api.upload_folder(repo_id=repo_id, folder_path=out, commit_message=message, delete_patterns="*")
    except _hub_errors() as exc:
        if _debug():
            raise
        raise _hub_failure(f"pushing to {repo_id}", exc) from None
    _say(verbose, f"Pushed to {url}")
    return str(url)


# ---------------------------------------------------------------------------------------------------------------------
# Shipped agents


def pretrained_dir() -> str:
    """
    :return: the folder of the agents shipped with sb3_natgrad (``sb3_natgrad/pretrained``)
    """
    return str(files("sb3_natgrad") / "pretrained")


def pretrained_agents() -> list[dict[str, Any]]:
    """
    The agents shipped with sb3_natgrad, from ``sb3_natgrad/pretrained/index.json``: ``algo``, ``env_id``,
    ``folder``, ``mean_reward``, ``std_reward``, ``n_eval_episodes``, ``eval_seeds``, ``num_timesteps``, ``seed``,
    ``train_command``, ``tolerance`` (the test's margin on a fresh evaluation).

    :return: one dict per agent
    """
    path = os.path.join(pretrained_dir(), INDEX)
    if not os.path.isfile(path):
        return []
    with open(path) as file:
        return list(json.load(file)["agents"])


def tolerance(std_reward: float, n_eval_episodes: int, mean_reward: float, n_test_episodes: int) -> float:
    """
    The margin a fresh evaluation of ``n_test_episodes`` (other seeds) may differ from the stated mean: three
    standard errors of the difference of the two means, at least 2% of the mean and 1.

    :param std_reward: stated standard deviation
    :param n_eval_episodes: stated number of episodes
    :param mean_reward: stated mean
    :param n_test_episodes: episodes of the new evaluation
    :return: the tolerance
    """
    spread = 3.0 * std_reward * math.sqrt(1.0 / n_eval_episodes + 1.0 / n_test_episodes)
    return round(max(spread, 0.02 * abs(mean_reward), 1.0), 2)


#: Episodes of the fresh evaluation the tests run on each shipped agent (their ``tolerance`` assumes it).
TEST_EPISODES = 10
#: First seed of that evaluation (the packaged evaluations use 1000-1019).
TEST_SEED = 5000


def write_index(folder: str | None = None) -> list[dict[str, Any]]:
    """
    Write ``index.json`` of a folder of packaged agents (one sub-folder each, named ``<algo>-<Env>``), from their
    manifests and ``results.json``; every agent is verified first.

    :param folder: default :func:`pretrained_dir`
    :return: the index entries
    """
    folder = folder or pretrained_dir()
    agents = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isdir(path) or name.startswith(("_", ".")):
            continue
        manifest = verify(path)
        with open(os.path.join(path, "results.json")) as file:
            results = json.load(file)
        size = sum(entry["size"] for entry in manifest["files"].values()) + os.path.getsize(os.path.join(path, MANIFEST))
        agents.append(
            {
                "name": name,
                "algo": manifest["algo"],
                "env_id": manifest["env_id"],
                "class_name": manifest["class_name"],
                "folder": name,
                "mean_reward": results["mean_reward"],
                "std_reward": results["std_reward"],
                "n_eval_episodes": results["n_eval_episodes"],
                "eval_seeds": results["eval_seeds"],
                "is_deterministic": results["is_deterministic"],
                "num_timesteps": manifest["num_timesteps"],
                "seed": manifest["seed"],
                "train_command": manifest["train_command"],
                "tolerance": tolerance(
                    results["std_reward"], results["n_eval_episodes"], results["mean_reward"], TEST_EPISODES
                ),
                "size_bytes": size,
            }
        )
    with open(os.path.join(folder, INDEX), "w") as file:
        json.dump({"test_episodes": TEST_EPISODES, "test_seed": TEST_SEED, "agents": agents}, file, indent=2)
        file.write("\n")
    return agents


def pretrained_path(algo: str, env_id: str) -> str:
    """
    :param algo: ``--algo`` name
    :param env_id: Gymnasium id
    :return: the folder of the shipped agent (hub layout), verified against its manifest
    :raises HubError: for an unknown pair, listing the shipped agents
    """
    for entry in pretrained_agents():
        if entry["algo"] == algo and entry["env_id"] == env_id:
            path = os.path.join(pretrained_dir(), entry["folder"])
            verify(path)
            return path
    available = ", ".join(f"({entry['algo']!r}, {entry['env_id']!r})" for entry in pretrained_agents()) or "none"
    raise HubError(f"no pretrained {algo} agent for {env_id} ships with sb3_natgrad; available: {available}")


def load_pretrained(
    algo: str,
    env_id: str,
    device: str = "auto",
    seed: int | None = 0,
    n_envs: int = 1,
    env_kwargs: Mapping[str, Any] | None = None,
    verbose: int = 0,
) -> tuple[BaseAlgorithm, VecEnv]:
    """
    Load an agent shipped with sb3_natgrad, with the environment it expects: the test environment of rl-zoo3's
    ``enjoy`` (its env wrappers, frame stacking, and its VecNormalize statistics, frozen and without reward
    normalization, so returns are the env's own). The model is attached to that env (``model.get_env()``)::

        from stable_baselines3.common.evaluation import evaluate_policy
        model, env = load_pretrained("acktr", "CartPole-v1")
        mean_reward, std_reward = evaluate_policy(model, env, n_eval_episodes=10)

    The model is loaded for inference, as rl-zoo3's ``enjoy`` does: its learning-rate schedule is replaced by 0. To
    continue training, rebuild the run with ``sb3-natgrad load --from <folder>`` and use ``sb3-natgrad train -i``.
    The files are checked against the agent's ``MANIFEST.json`` first.

    :param algo: ``--algo`` name, e.g. ``"acktr"``
    :param env_id: Gymnasium id, e.g. ``"CartPole-v1"``
    :param device: PyTorch device
    :param seed: seed of the env (``None``: unseeded)
    :param n_envs: number of envs
    :param env_kwargs: keyword arguments of the env constructor, on top of the saved ones (e.g. ``render_mode``)
    :param verbose: 2 shows rl-zoo3's messages
    :return: the model and its environment
    :raises HubError: for an unknown pair (the message lists the shipped agents) or a file that does not match
    """
    path = pretrained_path(algo, env_id)
    return load_folder(path, device=device, seed=seed, n_envs=n_envs, env_kwargs=env_kwargs, verbose=verbose)


def load_folder(
    path: str,
    device: str = "auto",
    seed: int | None = 0,
    n_envs: int = 1,
    env_kwargs: Mapping[str, Any] | None = None,
    verbose: int = 0,
) -> tuple[BaseAlgorithm, VecEnv]:
    """
    :func:`load_pretrained` for any folder written by :func:`package` (verified against its manifest first).

    :param path: the folder
    :param device: PyTorch device
    :param seed: seed of the env (``None``: unseeded)
    :param n_envs: number of envs
    :param env_kwargs: keyword arguments of the env constructor, on top of the saved ones
    :param verbose: 2 shows rl-zoo3's messages
    :return: the model and its environment
    """
    manifest = verify(path)
    algo, env_id = _identify(path, manifest, None, None)
    config = dict(_read_yaml(os.path.join(path, "config.yml")))
    args = dict(_read_yaml(os.path.join(path, "args.yml")))
    saved_kwargs = (
        _read_yaml(os.path.join(path, "env_kwargs.yml")) if os.path.isfile(os.path.join(path, "env_kwargs.yml")) else {}
    )
    kwargs = {**dict(saved_kwargs or {}), **dict(env_kwargs or {})}
    _import_env_packages(args.get("gym_packages") or [])
    vec_normalize = os.path.join(path, "vec_normalize.pkl")
    env = make_env(
        env_id,
        config,
        vec_normalize if os.path.isfile(vec_normalize) else None,
        kwargs,
        seed=seed,
        n_envs=n_envs,
        verbose=verbose,
    )
    model = _algo_class(algo).load(
        os.path.join(path, manifest.get("model_file", f"{model_name(algo, env_id)}.zip")),
        env=env,
        device=device,
        custom_objects=_INFERENCE_OBJECTS,
    )
    return model, env


__all__ = [
    "MANIFEST",
    "HubError",
    "HubUnreachableError",
    "ManifestError",
    "download",
    "env_name",
    "evaluate",
    "is_repo_id",
    "library_versions",
    "load",
    "load_folder",
    "load_pretrained",
    "make_env",
    "model_card_metadata",
    "model_name",
    "package",
    "pretrained_agents",
    "pretrained_dir",
    "pretrained_path",
    "push",
    "read_manifest",
    "sha256_file",
    "tolerance",
    "verify",
    "write_index",
    "write_manifest",
]
