"""
Parameter documentation written once for the arguments that several algorithms share, merged into each class's
docstring (in signature order) when the class is created, so that ``help(ACKTR)`` and Sphinx show every argument.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Callable, Mapping

#: the arguments of Stable-Baselines3's on-policy algorithms that ACKTR, SMAC and KFRELAX take with SB3's meaning
SHARED_PARAMETER_DOCS: Mapping[str, str] = {
    "policy": '``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or an ``ActorCriticPolicy`` subclass',
    "env": "the environment (or its Gymnasium id)",
    "gamma": "discount factor",
    "normalize_advantage": "standardise the advantages of each batch",
    "max_consecutive_skips": "stop with an error that says what is not finite after this many skipped updates in a row "
    "(``None``: never)",
    "use_sde": "generalised State-Dependent Exploration (Box actions)",
    "sde_sample_freq": "resample the gSDE noise matrix every n steps (-1: once per rollout)",
    "rollout_buffer_class": "rollout buffer class (default: chosen from the observation space)",
    "rollout_buffer_kwargs": "keyword arguments of the rollout buffer",
    "stats_window_size": "window for the rollout logging averages",
    "tensorboard_log": "TensorBoard log directory (None: no logging)",
    "policy_kwargs": "keyword arguments of the policy",
    "verbose": "0 none, 1 training information, 2 debug",
    "seed": "random seed",
    "device": '``"auto"``, ``"cpu"`` or ``"cuda"``',
    "_init_setup_model": "build the network at creation",
}

_PARAM = re.compile(r"^:param (\w+):")


def documented_parameters(docstring: str) -> list[str]:
    """
    :param docstring: a reST docstring
    :return: the names of its ``:param name:`` entries, in order (with repeats)
    """
    return [match.group(1) for line in inspect.cleandoc(docstring).splitlines() if (match := _PARAM.match(line))]


def merge_parameter_docs(docstring: str, function: Callable, tables: tuple[Mapping[str, str], ...]) -> str:
    """
    The docstring with a ``:param`` entry for every argument of ``function``, in the signature's order: the entries the
    docstring has (they take precedence), then those of the first table that documents the argument.

    The docstring's ``:param`` entries must be its last section (apart from other ``:field:`` entries, which stay
    after them); arguments documented nowhere are left out (the tests of this package check there are none).

    :param docstring: the class's own docstring
    :param function: the ``__init__`` whose arguments are documented
    :param tables: argument name -> one-paragraph description
    :return: the completed docstring (cleaned by :func:`inspect.cleandoc`)
    """
    lines = inspect.cleandoc(docstring).splitlines()
    first = next((i for i, line in enumerate(lines) if _PARAM.match(line)), len(lines))
    prelude, own, other_fields = lines[:first], {}, []
    name = None
    for line in lines[first:]:
        if match := _PARAM.match(line):
            name = match.group(1)
            own[name] = [line]
        elif line.startswith(":"):  # another field (:raises: ...) ends the parameter entries
            name = None
            other_fields.append(line)
        elif name is not None and line.strip():
            own[name].append(line)
        elif name is None and line.strip():
            other_fields.append(line)
    entries = []
    for argument in list(inspect.signature(function).parameters)[1:]:
        if argument in own:
            entries.extend(own.pop(argument))
            continue
        text = next((table[argument] for table in tables if argument in table), None)
        if text is not None:
            entries.extend(textwrap.wrap(f":param {argument}: {text}", width=120, subsequent_indent="    "))
    # entries of names that are not arguments (none in this package) keep their place at the end
    entries.extend(line for extra in own.values() for line in extra)
    while prelude and not prelude[-1].strip():
        prelude.pop()
    return "\n".join([*prelude, "", *entries, *other_fields]) + "\n"
