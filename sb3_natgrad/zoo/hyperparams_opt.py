"""
Optuna search spaces for ``sb3-natgrad train -optimize``, in rl-zoo3's format.

A *sampler* ``sample_<algo>_params(trial, n_actions, n_envs, additional_args)`` draws raw trial parameters and
returns constructor keyword arguments; rl-zoo3 applies them after its own preprocessing, so they are final
objects (a learning-rate schedule is a callable). A *converter* ``convert_<algo>_params(params)`` turns the raw
parameters of a stored trial back into hyperparameters for ``--storage --study-name --trial-id``; rl-zoo3 applies
those *before* preprocessing, so they use the YAML forms (a linear schedule is the string ``"lin_<value>"``).
"""

from __future__ import annotations

from typing import Any

import optuna
from torch import nn

from sb3_natgrad.common.schedules import LinearDecay

NET_ARCHS = {
    "small": dict(pi=[64, 64], vf=[64, 64]),
    "medium": dict(pi=[256, 256], vf=[256, 256]),
}
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def _convert(params: dict[str, Any], for_trial: bool) -> dict[str, Any]:
    hyperparams = dict(params)
    hyperparams["gamma"] = 1.0 - hyperparams.pop("one_minus_gamma")
    learning_rate = hyperparams.pop("learning_rate")
    if hyperparams.pop("lr_schedule") == "linear":
        hyperparams["learning_rate"] = LinearDecay(learning_rate) if for_trial else f"lin_{learning_rate}"
    else:
        hyperparams["learning_rate"] = learning_rate
    hyperparams["policy_kwargs"] = dict(
        net_arch=NET_ARCHS[hyperparams.pop("net_arch")],
        activation_fn=ACTIVATIONS[hyperparams.pop("activation_fn")],
    )
    if "log_std_init" in hyperparams:  # drawn for Box actions only (trials stored before 2026-12-05 have none)
        hyperparams["policy_kwargs"]["log_std_init"] = hyperparams.pop("log_std_init")
    return hyperparams


def _suggest_network(trial: optuna.Trial, n_actions: int) -> dict[str, Any]:
    """
    rl-zoo3's network choices (keys of :data:`NET_ARCHS` and :data:`ACTIVATIONS`), the last draws of every sampler,
    and for a Box action space the initial log standard deviation of the Gaussian policy, -4 to 1 (a standard
    deviation of 0.02 to 2.7; rl-zoo3's samplers leave it out, but its tuned A2C and PPO continuous-control entries
    set -3.29 to 0, mostly -2, and so does our SMAC Pendulum-v1 entry).

    :param trial: the Optuna trial
    :param n_actions: size of a Box action space, 0 for other spaces (rl-zoo3 passes 0 for those)
    :return: the raw ``net_arch`` and ``activation_fn`` parameters, and ``log_std_init`` for Box actions
    """
    network: dict[str, Any] = {
        "net_arch": trial.suggest_categorical("net_arch", ["small", "medium"]),
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
    }
    if n_actions > 0:
        network["log_std_init"] = trial.suggest_float("log_std_init", -4.0, 1.0)
    return network


def _sampled(trial: optuna.Trial, params: dict[str, Any]) -> dict[str, Any]:
    """
    End of a sampler: record ``gamma`` on the trial (as rl-zoo3's samplers do) and build the keyword arguments.

    :param trial: the Optuna trial
    :param params: the raw parameters drawn
    :return: constructor keyword arguments
    """
    trial.set_user_attr("gamma", 1.0 - params["one_minus_gamma"])
    return _convert(params, for_trial=True)


# One converter and one sampler per algorithm, as in rl-zoo3: same shape, different search spaces (shared: the helpers above).
def convert_acktr_params(params: dict[str, Any]) -> dict[str, Any]:
    """
    Hyperparameters of a stored ACKTR trial, in the YAML form rl-zoo3 preprocesses (``--trial-id``).

    :param params: ``trial.params`` of a trial drawn by :func:`sample_acktr_params`
    :return: hyperparameters
    """
    return _convert(params, for_trial=False)


def sample_acktr_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for ACKTR.

    The SB2 rl-zoo ACKTR search space (``gamma``, ``n_steps``, learning rate and its schedule, ``ent_coef``,
    ``vf_coef``) plus the trust-region radius ``kfac_clip``, the KL-adaptive step size ``kl_target``, GAE lambda
    (1.0 = the paper's k-step returns), advantage normalisation (SB2 always normalised for Box actions) and rl-zoo3's
    network choices.

    :param trial: the Optuna trial
    :param n_actions: size of a Box action space (0 for other spaces): draws ``log_std_init`` when positive
    :param n_envs: number of environments (unused: the batch is ``n_steps * n_envs``)
    :param additional_args: rl-zoo3's extra arguments (unused)
    :return: ACKTR keyword arguments
    """
    params: dict[str, Any] = {
        # ACKTR takes one step per rollout of n_steps x n_envs: SB2's choices up to 2048 gave a handful of updates in
        # a classic-control budget; the paper used 20 (x 32 envs)
        "n_steps": trial.suggest_categorical("n_steps", [5, 8, 10, 16, 20, 32, 64, 128, 256]),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.1, log=True),
        "gae_lambda": trial.suggest_categorical("gae_lambda", [0.9, 0.95, 0.98, 0.99, 1.0]),
        "learning_rate": trial.suggest_float("learning_rate", 0.001, 1.0, log=True),
        "lr_schedule": trial.suggest_categorical("lr_schedule", ["linear", "constant"]),
        "kfac_clip": trial.suggest_float("kfac_clip", 0.0001, 0.01, log=True),
        # the KL-adaptive step size (None: off; 0.002 is the continuous-control reference code's target, which took
        # ACKTR's HalfCheetah-v5 from 490 to 2540 after 1M steps, benchmarks/results/tuning/README.md)
        "kl_target": trial.suggest_categorical("kl_target", [None, 0.001, 0.002, 0.005]),
        "ent_coef": trial.suggest_float("ent_coef", 0.00000001, 0.1, log=True),
        "vf_coef": trial.suggest_float("vf_coef", 0.0, 1.0),
        "normalize_advantage": trial.suggest_categorical("normalize_advantage", [False, True]),
        **_suggest_network(trial, n_actions),
    }
    return _sampled(trial, params)


def convert_smac_params(params: dict[str, Any]) -> dict[str, Any]:
    """
    Hyperparameters of a stored SMAC trial (``--trial-id``).

    :param params: ``trial.params`` of a trial drawn by :func:`sample_smac_params`
    :return: hyperparameters
    """
    return _convert(params, for_trial=False)


def sample_smac_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for SMAC.

    The actor's natural-gradient step (empirical Fisher mode, damping, trust region and maximum step), the critic's
    Adam learning rate (``learning_rate``, optionally decayed linearly), epochs and minibatch size, GAE and the
    network choices of rl-zoo3's on-policy samplers.

    :param trial: the Optuna trial
    :param n_actions: size of a Box action space (0 for other spaces): draws ``log_std_init`` when positive
    :param n_envs: number of environments (unused: the batch is ``n_steps * n_envs``)
    :param additional_args: rl-zoo3's extra arguments (unused)
    :return: SMAC keyword arguments
    """
    params: dict[str, Any] = {
        # 16-64 per env: the batch of the entries with 4-16 envs (Pendulum, MountainCar); 1000: the paper's N.
        "n_steps": trial.suggest_categorical("n_steps", [16, 32, 64, 128, 256, 512, 1000, 2048]),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 250, 512]),
        "n_critic_updates": trial.suggest_int("n_critic_updates", 1, 20),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.1, log=True),
        "gae_lambda": trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.95, 0.98, 1.0]),
        "learning_rate": trial.suggest_float("learning_rate", 0.00001, 0.01, log=True),
        "lr_schedule": trial.suggest_categorical("lr_schedule", ["linear", "constant"]),
        "fisher": trial.suggest_categorical("fisher", ["mean", "batch"]),
        "damping": trial.suggest_float("damping", 0.001, 10.0, log=True),
        "max_kl": trial.suggest_float("max_kl", 0.001, 0.1, log=True),
        "actor_step_size": trial.suggest_float("actor_step_size", 0.01, 10.0, log=True),
        "ent_coef": trial.suggest_float("ent_coef", 0.00000001, 0.1, log=True),
        "normalize_advantage": trial.suggest_categorical("normalize_advantage", [False, True]),
        **_suggest_network(trial, n_actions),
    }
    return _sampled(trial, params)


def convert_kfrelax_params(params: dict[str, Any]) -> dict[str, Any]:
    """
    Hyperparameters of a stored KFRELAX trial (``--trial-id``).

    :param params: ``trial.params`` of a trial drawn by :func:`sample_kfrelax_params`
    :return: hyperparameters
    """
    return _convert(params, for_trial=False)


def sample_kfrelax_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """
    Sampler for KFRELAX.

    The A2C-style knobs (``n_steps``, ``gamma``, GAE lambda, learning rate and schedule, ``ent_coef``, ``vf_coef``,
    the KL cap), the estimator's target and advantage normalisation, and the K-FAC step of the control variate
    (damping and trust region), with rl-zoo3's network choices for the actor and critic.

    :param trial: the Optuna trial
    :param n_actions: size of a Box action space (0 for other spaces): draws ``log_std_init`` when positive
    :param n_envs: number of environments (unused: the batch is ``n_steps * n_envs``)
    :param additional_args: rl-zoo3's extra arguments (unused)
    :return: KFRELAX keyword arguments
    """
    params: dict[str, Any] = {
        "n_steps": trial.suggest_categorical("n_steps", [8, 16, 32, 64, 128, 256]),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.1, log=True),
        "gae_lambda": trial.suggest_categorical("gae_lambda", [0.9, 0.95, 0.98, 1.0]),
        "learning_rate": trial.suggest_float("learning_rate", 0.00001, 0.01, log=True),
        "lr_schedule": trial.suggest_categorical("lr_schedule", ["linear", "constant"]),
        "ent_coef": trial.suggest_float("ent_coef", 0.00000001, 0.1, log=True),
        "vf_coef": trial.suggest_float("vf_coef", 0.0, 1.0),
        "max_kl": trial.suggest_float("max_kl", 0.001, 0.1, log=True),
        "target": trial.suggest_categorical("target", ["advantage", "return"]),
        "normalize_advantage": trial.suggest_categorical("normalize_advantage", [False, True]),
        "cv_damping": trial.suggest_float("cv_damping", 0.01, 1.0, log=True),
        "cv_kl_clip": trial.suggest_float("cv_kl_clip", 0.001, 0.1, log=True),
        **_suggest_network(trial, n_actions),
    }
    return _sampled(trial, params)


__all__ = [
    "convert_acktr_params",
    "convert_kfrelax_params",
    "convert_smac_params",
    "sample_acktr_params",
    "sample_kfrelax_params",
    "sample_smac_params",
]
