"""
KFRELAX's argument checks: the ranges of its own arguments, and what acting through stored noise requires of the
policy class and the rollout buffer class (errors that name the bad value and say what to use instead).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from sb3_natgrad.common.checks import ArgumentCheck, check_choice, check_int, check_number
from sb3_natgrad.kfrelax.buffers import NOISY_BUFFERS
from sb3_natgrad.kfrelax.policies import KFRELAXPolicy

CV_OPTIMIZERS = ("kfac", "adam")
CV_LOSSES = ("exact", "proxy")
TARGETS = ("advantage", "return")

#: the checks of KFRELAX's own arguments (the arguments it shares with ACKTR and SMAC are checked in common)
ARGUMENT_CHECKS: dict[str, ArgumentCheck] = {
    "max_kl": partial(check_number, low=0.0, low_inclusive=False, allow_none=True),
    "target": partial(check_choice, choices=TARGETS),
    "cv_optimizer": partial(check_choice, choices=CV_OPTIMIZERS),
    "cv_loss": partial(check_choice, choices=CV_LOSSES),
    "cv_learning_rate": partial(check_number, low=0.0, allow_none=True),
    "cv_scalar_learning_rate": partial(check_number, low=0.0, allow_none=True),
    "cv_damping": partial(check_number, low=0.0, low_inclusive=False),
    "cv_kl_clip": partial(check_number, low=0.0, low_inclusive=False),
    "cv_momentum": partial(check_number, low=0.0, high=1.0, high_inclusive=False),
    "cv_stat_decay": partial(check_number, low=0.0, high=1.0, high_inclusive=False),
    "cv_inverse_interval": partial(check_int, low=1),
}


def check_noise_arguments(owner: str, arguments: dict[str, Any]) -> None:
    """
    No gSDE, and a rollout buffer class that stores the acting noise.

    :param owner: the class named in the errors
    :param arguments: the algorithm's arguments by name
    :raises ValueError: naming the bad argument
    """
    if arguments["use_sde"]:
        raise ValueError(f"{owner}: invalid use_sde=True, gSDE is not supported (LAX needs a = mu + sigma * eps)")
    buffer_class = arguments["rollout_buffer_class"]
    if buffer_class is not None and not (isinstance(buffer_class, type) and issubclass(buffer_class, NOISY_BUFFERS)):
        raise ValueError(
            f"{owner}: invalid rollout_buffer_class={buffer_class!r}, it must store the acting noise: use "
            "NoisyRolloutBuffer / NoisyDictRolloutBuffer (sb3_natgrad.kfrelax.buffers) or a subclass"
        )


def check_policy_class(owner: str, policy_class: Any) -> None:
    """
    A policy class derived from :class:`~sb3_natgrad.kfrelax.policies.KFRELAXPolicy`.

    :param owner: the class named in the error
    :param policy_class: the policy class (an alias already resolved)
    :raises ValueError: saying what the policy must provide and how to derive one
    """
    if not (isinstance(policy_class, type) and issubclass(policy_class, KFRELAXPolicy)):
        given = getattr(policy_class, "__name__", policy_class)
        raise ValueError(
            f"{owner} needs a policy class derived from KFRELAXPolicy, got {given!r}: "
            "KFRELAX acts through noise that it stores (the policy's pop_acting_noise, actions_from_noise and "
            "relax_forward) and trains a control variate that the policy owns. Derive the class from "
            "sb3_natgrad.kfrelax.KFRELAXPolicy (or sb3_natgrad.kfrelax.CnnPolicy / MultiInputPolicy) instead of "
            "ActorCriticPolicy; the networks are set through policy_kwargs (net_arch, features_extractor_class, "
            "cv_net_arch, ...)"
        )
