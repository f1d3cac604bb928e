"""
The agents shipped in ``sb3_natgrad/pretrained/``: :func:`pretrained_agents` lists them, :func:`load_pretrained`
returns one with its environment, ready for ``evaluate_policy``; :func:`load_folder` loads any packaged folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib.resources import files
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

from sb3_natgrad.zoo.manifest import HubError, _identify, verify
from sb3_natgrad.zoo.packaging import _INFERENCE_OBJECTS, _algo_class, _import_env_packages, _read_yaml, make_env, model_name

#: Name of the index of the shipped agents, in :func:`pretrained_dir`.
INDEX = "index.json"


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


# Same parameters as load_pretrained, which forwards them here: both public signatures spell them out for the docs.
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
    # SB3 wraps image envs in VecTransposeImage when it attaches them: hand out the env the model acts in
    attached = model.get_env()
    assert attached is not None
    return model, attached
