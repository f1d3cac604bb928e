"""
The packaged rl-zoo3 hyperparameter files (``hyperparams/<algo>.yml``).

Every entry is built and trained through rl-zoo3's ``ExperimentManager`` (as ``sb3-natgrad train`` does, so env
wrappers, VecNormalize and frame stacking are the real ones) for every env whose dependencies are installed.
Test-only changes, to keep it short: ``n_timesteps`` = two rollouts and ``warmup_steps: 1`` so that the second
update is a K-FAC natural-gradient step; in the default run the Atari entry uses 4 envs instead of its 32 (the
run with all 32 is marked slow). The default run trains every entry except the Ant, Humanoid and HumanoidStandup
ones (built in the default run, trained with ``-m slow``), so every family (classic control, Box2D, MuJoCo, Atari)
is trained by default.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import inspect
import math
import os
from typing import Any

import pytest
import yaml

from sb3_natgrad.common.minatar import is_minatar_id, register_minatar_envs
from sb3_natgrad.zoo import ZOO_ALGORITHMS, hyperparams_dir, load_algorithm
from sb3_natgrad.zoo.config import HyperparamsError, check_entry

FILES = sorted(glob.glob(os.path.join(hyperparams_dir(), "*.yml")))
ALGO_BY_NAME = {entry.name: entry for entry in ZOO_ALGORITHMS}
#: An env without its own entry in any file, to exercise ``default``.
DEFAULT_ENV = "CartPole-v0"
#: The representative Atari game for the ``atari`` entry.
ATARI_ENV = "PongNoFrameskip-v4"
#: Entries whose training runs only with ``-m slow`` (the most expensive envs; they are still built in the default run).
SLOW_TRAINING = {"Ant-v5", "Ant-v4", "Humanoid-v5", "Humanoid-v4", "HumanoidStandup-v5", "HumanoidStandup-v4"}


def _load(path: str) -> dict[str, Any]:
    with open(path) as file:
        return yaml.safe_load(file)


def _entries() -> list[tuple[str, str]]:
    return [(path, key) for path in FILES for key in _load(path)]


def _id(path: str, key: str) -> str:
    return f"{os.path.basename(path)}:{key}"


def _params(slow: set[str] | frozenset[str] = frozenset()) -> list:
    """``(path, key)`` for every entry of every file; the keys in ``slow`` are marked slow."""
    return [
        pytest.param(path, key, id=_id(path, key), marks=[pytest.mark.slow] if key in slow else []) for path, key in _entries()
    ]


def _algo(path: str) -> tuple[str, type]:
    name = os.path.splitext(os.path.basename(path))[0]
    assert name in ALGO_BY_NAME, f"{path}: no algorithm {name!r} in sb3_natgrad.zoo.ZOO_ALGORITHMS"
    algo_class = load_algorithm(ALGO_BY_NAME[name])
    if algo_class is None:
        pytest.skip(f"{name} is not available in this version")
    return name, algo_class


def _walk(value: Any, path: str = ""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")
    else:
        yield path, value


def test_there_are_files() -> None:
    assert any(path.endswith(os.sep + "acktr.yml") for path in FILES), FILES


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_file_parses_and_has_default_and_atari(path: str) -> None:
    table = _load(path)
    assert isinstance(table, dict)
    assert "default" in table and "atari" in table
    for key, entry in table.items():
        assert isinstance(entry, dict), key


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_numbers_are_numbers(path: str) -> None:
    # PyYAML reads 1e6 and 3e-4 as strings: such values must be written !!float 1e6.
    for key, entry in _load(path).items():
        for where, value in _walk(entry, key):
            if isinstance(value, str):
                try:
                    float(value.replace("_", ""))
                except ValueError:
                    continue
                pytest.fail(f"{path}: {where} = {value!r} is a string that looks like a number, write !!float {value}")
            elif isinstance(value, float):
                assert math.isfinite(value), where


@pytest.mark.parametrize("path, key", _params())
def test_entry_uses_known_keys(path: str, key: str) -> None:
    _, algo_class = _algo(path)
    check_entry(algo_class, _load(path)[key], f"{os.path.basename(path)} [{key}]")


@pytest.mark.bad_input
def test_check_entry_catches_typos() -> None:
    from sb3_natgrad import ACKTR

    entry = _load(os.path.join(hyperparams_dir(), "acktr.yml"))["CartPole-v1"]
    check_entry(ACKTR, entry, "ok")
    for bad in [{"n_env": 8}, {"learnig_rate": 0.1}, {"seed": 1}, {"n_timesteps": "1e6"}]:
        with pytest.raises(HyperparamsError):
            check_entry(ACKTR, {**entry, **bad}, "bad")
    without_policy = {k: v for k, v in entry.items() if k != "policy"}
    with pytest.raises(HyperparamsError, match="policy"):
        check_entry(ACKTR, without_policy, "bad")


def _env_for(key: str) -> str:
    return {"default": DEFAULT_ENV, "atari": ATARI_ENV}.get(key, key)


def _skip_without_dependencies(env_id: str) -> None:
    import gymnasium as gym

    if env_id == ATARI_ENV:
        ale_py = pytest.importorskip("ale_py", reason="Atari needs ale-py")
        gym.register_envs(ale_py)
    if is_minatar_id(env_id):
        pytest.importorskip("minatar", reason="MinAtar envs need minatar")
        register_minatar_envs()
    entry_point = str(gym.spec(env_id).entry_point)
    if "mujoco" in entry_point:
        pytest.importorskip("mujoco", reason="MuJoCo envs need mujoco")
    if "box2d" in entry_point:
        pytest.importorskip("Box2D", reason="Box2D envs need box2d")


def build_and_train(path: str, key: str, tmp_path, train: bool, n_envs: int | None = None) -> None:
    """Build one entry with rl-zoo3's ExperimentManager, as ``sb3-natgrad train`` does, then train it briefly."""
    pytest.importorskip("rl_zoo3")
    os.chdir(tmp_path)  # (restored by the fixture) MuJoCo writes MUJOCO_LOG.TXT to the working directory
    from stable_baselines3.common.vec_env import VecFrameStack, is_vecenv_wrapped
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv

    from sb3_natgrad.zoo import register
    from sb3_natgrad.zoo.experiment import NatgradExperimentManager

    algo, algo_class = _algo(path)
    env_id = _env_for(key)
    _skip_without_dependencies(env_id)
    register()
    entry = _load(path)[key]
    overrides: dict[str, Any] = {}
    if "warmup_steps" in inspect.signature(algo_class.__init__).parameters:
        overrides["warmup_steps"] = 1
    if n_envs is not None:
        overrides["n_envs"] = n_envs
    n_steps = entry.get("n_steps", inspect.signature(algo_class.__init__).parameters["n_steps"].default)
    batch = n_steps * overrides.get("n_envs", entry.get("n_envs", 1))
    manager = NatgradExperimentManager(
        argparse.Namespace(algo=algo, env=env_id, conf_file=path),
        algo,
        env_id,
        str(tmp_path),
        n_timesteps=2 * batch,
        eval_freq=-1,
        hyperparams=overrides,
        config=path,
        seed=0,
        log_interval=-1,  # train's default (ExperimentManager's own default, 0, is not usable)
        verbose=0,
        device="cpu",
    )
    model, saved = manager.setup_experiment()
    try:
        assert type(model) is algo_class
        # The entry that rl-zoo3 picked is this one.
        assert dict(saved) == {**entry, **overrides}
        env = model.get_env()
        assert isinstance(env, VecEnv)
        assert env.num_envs == overrides.get("n_envs", entry.get("n_envs", 1))
        assert (model.get_vec_normalize_env() is not None) == bool(entry.get("normalize", False))
        assert is_vecenv_wrapped(env, VecFrameStack) == ("frame_stack" in entry)
        net_arch = model.policy_kwargs.get("net_arch")
        if isinstance(net_arch, dict):  # SB3 ignores other keys silently
            assert set(net_arch) <= {"pi", "vf"}, net_arch
        if "features_extractor_class" in model.policy_kwargs:
            # SB3 puts two 64-unit tanh layers on each head for every extractor but its NatureCNN unless net_arch is
            # given: an entry must say which heads it wants (they saturated ACKTR's Pong run)
            assert "net_arch" in model.policy_kwargs, f"{key}: features_extractor_class without net_arch"
        for wrapper in entry.get("env_wrapper", []):
            name = wrapper if isinstance(wrapper, str) else next(iter(wrapper))
            assert all(env.env_is_wrapped(_import(name))), name
        if train:
            manager.learn(model)
            assert model.num_timesteps == 2 * batch
            assert model._n_updates >= 2
            if algo == "acktr":  # the second update was a natural-gradient step, not the warm-up
                assert model.kfac.last_step_info.get("warmup") == 0.0, model.kfac.last_step_info
            manager.save_trained_model(model)
            assert os.path.isfile(os.path.join(manager.save_path, f"{env_id.replace('/', '-')}.zip"))
    finally:
        if model.env is not None:
            model.env.close()


def _import(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.fixture(autouse=True)
def _restore_cwd():
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


@pytest.mark.parametrize("path, key", _params())
def test_entry_builds(path: str, key: str, tmp_path) -> None:
    build_and_train(path, key, tmp_path, train=False, n_envs=4 if key == "atari" else None)


@pytest.mark.parametrize("path, key", _params(slow=SLOW_TRAINING))
def test_entry_trains(path: str, key: str, tmp_path) -> None:
    build_and_train(path, key, tmp_path, train=True, n_envs=4 if key == "atari" else None)


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_atari_entry_trains_with_all_its_envs(path: str, tmp_path) -> None:
    build_and_train(path, "atari", tmp_path, train=True)
