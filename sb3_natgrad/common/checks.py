"""Argument and space checks shared by the sb3_natgrad algorithms: clear errors that name the bad value."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
from gymnasium import spaces

from sb3_natgrad.optim.validation import invalid, is_int, is_number

SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)
_FLAT_OBSERVATION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def check_number(
    algo: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    allow_none: bool = False,
) -> None:
    """
    Raise a ``ValueError`` naming ``name`` unless ``value`` is a finite number in the given interval.

    :param algo: algorithm name used in the message
    :param name: argument name
    :param value: the value given
    :param low: lower bound (``None``: unbounded)
    :param high: upper bound (``None``: unbounded)
    :param low_inclusive: whether ``low`` itself is allowed
    :param high_inclusive: whether ``high`` itself is allowed
    :param allow_none: accept ``None``
    """
    if value is None and allow_none:
        return
    ok = is_number(value)
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        left = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        right = "inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        extra = " or None" if allow_none else ""
        raise invalid(algo, name, value, f"a finite number in {left}, {right}{extra}")


def check_int(algo: str, name: str, value: Any, *, low: int = 0, allow_none: bool = False) -> None:
    """
    Raise a ``ValueError`` naming ``name`` unless ``value`` is an integer ``>= low``.

    :param algo: algorithm name used in the message
    :param name: argument name
    :param value: the value given
    :param low: smallest allowed value
    :param allow_none: accept ``None``
    """
    if value is None and allow_none:
        return
    if not is_int(value, low):
        extra = " or None" if allow_none else ""
        raise invalid(algo, name, value, f"an integer >= {low}{extra}")


def check_learning_rate(algo: str, name: str, value: Any) -> None:
    """
    A learning rate is a non-negative number or a schedule (a callable of the remaining progress).

    :param algo: algorithm name used in the message
    :param name: argument name
    :param value: the value given
    """
    if callable(value):
        return
    check_number(algo, name, value, low=0.0)


def check_choice(algo: str, name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """
    Raise a ``ValueError`` naming ``name`` unless ``value`` is one of ``choices``.

    :param algo: algorithm name used in the message
    :param name: argument name
    :param value: the value given
    :param choices: allowed values
    """
    if value not in choices:
        raise invalid(algo, name, value, f"one of {choices}")


def check_spaces(algo: str, observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """
    Reject what the algorithms cannot handle with an error that names the space.

    Actions: Box, Discrete, MultiDiscrete, MultiBinary. Observations: those four, or a Dict of them
    (one level, as Stable-Baselines3's ``MultiInputPolicy`` expects).

    :param algo: algorithm name used in the message
    :param observation_space: the environment's observation space
    :param action_space: the environment's action space
    """
    if not isinstance(action_space, SUPPORTED_ACTION_SPACES):
        names = ", ".join(cls.__name__ for cls in SUPPORTED_ACTION_SPACES)
        raise ValueError(f"{algo} does not support the action space {action_space!r}: supported action spaces are {names}")
    if isinstance(action_space, spaces.Box) and not (action_space.is_bounded("both")):
        raise ValueError(
            f"{algo} needs finite bounds on a Box action space (actions are clipped to them), got {action_space!r}"
        )
    if isinstance(observation_space, spaces.Dict):
        for key, sub in observation_space.spaces.items():
            if not isinstance(sub, _FLAT_OBSERVATION_SPACES):
                raise ValueError(
                    f"{algo} does not support the nested observation space {sub!r} under key {key!r} of "
                    f"{observation_space!r}: a Dict observation may only hold Box, Discrete, MultiDiscrete "
                    "or MultiBinary spaces"
                )
    elif not isinstance(observation_space, _FLAT_OBSERVATION_SPACES):
        raise ValueError(
            f"{algo} does not support the observation space {observation_space!r}: use Box, Discrete, MultiDiscrete, "
            "MultiBinary or a Dict of them"
        )


def check_not_recurrent(algo: str, policy: Any) -> None:
    """
    Recurrent policies are out of scope (K-FAC has no factors for LSTM layers; KFRELAX and SMAC assume a
    feed-forward policy): say so clearly instead of failing deep inside SB3.

    :param algo: algorithm name used in the message
    :param policy: the ``policy`` argument (alias string or class)
    """
    name = policy if isinstance(policy, str) else getattr(policy, "__name__", type(policy).__name__)
    recurrent = "lstm" in str(name).lower() or "recurrent" in str(name).lower()
    if not recurrent and not isinstance(policy, str):
        from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy  # sb3-contrib is a dependency

        recurrent = isinstance(policy, type) and issubclass(policy, RecurrentActorCriticPolicy)
    if recurrent:
        raise ValueError(
            f"{algo} does not support recurrent policies (got policy={name!r}): use MlpPolicy, CnnPolicy or "
            "MultiInputPolicy, and frame stacking for memory"
        )


def check_bool(algo: str, name: str, value: Any) -> None:
    """
    Raise a ``ValueError`` naming ``name`` unless ``value`` is ``True`` or ``False`` (NumPy's ``bool_`` included).

    :param algo: algorithm name used in the message
    :param name: argument name
    :param value: the value given
    """
    if not isinstance(value, (bool, np.bool_)):
        raise invalid(algo, name, value, "True or False")


#: ``check(algo, name, value)`` raises a ``ValueError`` naming ``name`` if ``value`` is bad
ArgumentCheck = Callable[[str, str, Any], None]

#: The checks of the arguments every sb3_natgrad algorithm takes from ``OnPolicyAlgorithm``. An algorithm adds its
#: own in ``argument_checks`` (and may override one of these, e.g. to forbid ``None``).
SHARED_ARGUMENT_CHECKS: dict[str, ArgumentCheck] = {
    "learning_rate": check_learning_rate,
    "n_steps": partial(check_int, low=1),
    "gamma": partial(check_number, low=0.0, high=1.0),
    "gae_lambda": partial(check_number, low=0.0, high=1.0),
    "ent_coef": check_number,
    "vf_coef": partial(check_number, low=0.0),
    "max_grad_norm": partial(check_number, low=0.0, low_inclusive=False, allow_none=True),
    "normalize_advantage": check_bool,
    "use_sde": check_bool,
    "sde_sample_freq": partial(check_int, low=-1),
    "stats_window_size": partial(check_int, low=1),
    "max_consecutive_skips": partial(check_int, low=1, allow_none=True),
}


def check_arguments(algo: str, checks: Mapping[str, ArgumentCheck], arguments: Mapping[str, Any]) -> None:
    """
    Check every argument that has a check.

    :param algo: algorithm name used in the messages
    :param checks: argument name -> check
    :param arguments: argument name -> value given
    :raises ValueError: naming the first bad argument
    """
    for name, check in checks.items():
        if name in arguments:
            check(algo, name, arguments[name])
