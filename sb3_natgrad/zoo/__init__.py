"""
rl-zoo3 integration: register the sb3_natgrad algorithms with rl-zoo3 and run its tools.

rl-zoo3 has no plugin hook: its algorithms live in the plain dict ``rl_zoo3.ALGOS`` and its Optuna search spaces in
``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER``. :func:`register` adds ours to those
dicts; the ``sb3-natgrad`` command (:mod:`sb3_natgrad.zoo.cli`) calls it and then runs rl-zoo3's own ``train``,
``enjoy``, ``record_video`` and plot scripts, with the packaged hyperparameter files as default ``--conf-file``.

Importing this module does not import rl_zoo3 (nor does importing ``sb3_natgrad``); only :func:`register` does.

Adding an algorithm is one row of :data:`ZOO_ALGORITHMS`. Rows whose module does not exist (yet) are skipped.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm


#: set this environment variable to 1 to see the traceback behind a one-line error of the ``sb3-natgrad`` command
DEBUG_ENV_VAR = "SB3_NATGRAD_DEBUG"


class ZooError(Exception):
    """Bad input to the ``sb3-natgrad`` command (unknown algorithm, env, configuration, missing model...)."""


@dataclass(frozen=True)
class ZooAlgorithm:
    """
    One algorithm of the rl-zoo3 table.

    :param name: the ``--algo`` name; by the rl-zoo3 / Hugging Face convention, the class name in lower case
    :param module: module that defines the class, imported only when registering
    :param class_name: class name in that module
    :param sampler: name of the Optuna sampler in :mod:`sb3_natgrad.zoo.hyperparams_opt` (``None``: no ``-optimize``)
    :param converter: name of the matching converter (trial parameters -> hyperparameters, for ``--trial-id``)
    """

    name: str
    module: str
    class_name: str
    sampler: str | None = None
    converter: str | None = None


#: The algorithms sb3_natgrad adds to rl-zoo3, in ``--algo`` order.
ZOO_ALGORITHMS: tuple[ZooAlgorithm, ...] = (
    ZooAlgorithm("acktr", "sb3_natgrad.acktr", "ACKTR", sampler="sample_acktr_params", converter="convert_acktr_params"),
    ZooAlgorithm(
        "kfrelax", "sb3_natgrad.kfrelax", "KFRELAX", sampler="sample_kfrelax_params", converter="convert_kfrelax_params"
    ),
    ZooAlgorithm("smac", "sb3_natgrad.smac", "SMAC", sampler="sample_smac_params", converter="convert_smac_params"),
)

# Why a row could not be loaded, by name (filled by load_algorithm).
_UNAVAILABLE: dict[str, str] = {}


def load_algorithm(entry: ZooAlgorithm) -> type[BaseAlgorithm] | None:
    """
    Import the class of one table row.

    :param entry: the row
    :return: the class, or ``None`` when its module does not exist or fails to import (the reason is kept for
        :func:`unavailable_algorithms`)
    """
    try:
        spec = importlib.util.find_spec(entry.module)
    except ImportError:
        spec = None
    if spec is None:
        _UNAVAILABLE[entry.name] = f"module {entry.module} does not exist in this version of sb3_natgrad"
        return None
    try:
        algo_class = getattr(importlib.import_module(entry.module), entry.class_name)
    except Exception as exc:  # a module being written may fail in any way; never break the other algorithms
        _UNAVAILABLE[entry.name] = f"importing {entry.module}.{entry.class_name} failed ({type(exc).__name__}: {exc})"
        return None
    _UNAVAILABLE.pop(entry.name, None)
    return algo_class


def available_algorithms() -> dict[str, type[BaseAlgorithm]]:
    """
    The algorithms of :data:`ZOO_ALGORITHMS` that import, without touching rl-zoo3.

    :return: ``{name: class}``
    """
    found = {}
    for entry in ZOO_ALGORITHMS:
        algo_class = load_algorithm(entry)
        if algo_class is not None:
            found[entry.name] = algo_class
    return found


def unavailable_algorithms() -> dict[str, str]:
    """
    :return: ``{name: reason}`` for the rows that the last :func:`register` / :func:`available_algorithms` skipped
    """
    return dict(_UNAVAILABLE)


def register() -> dict[str, type[BaseAlgorithm]]:
    """
    Add the sb3_natgrad algorithms to ``rl_zoo3.ALGOS`` and their Optuna samplers and converters to
    ``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER``.

    Idempotent. rl-zoo3's modules share these dicts, so everything imported before or after sees the change.
    Rows whose module does not exist or does not import are skipped silently (see :func:`unavailable_algorithms`).

    :return: the registered ``{name: class}``
    """
    from rl_zoo3 import hyperparams_opt as zoo_hyperparams_opt
    from rl_zoo3.utils import ALGOS

    from sb3_natgrad.zoo import hyperparams_opt

    registered = {}
    for entry in ZOO_ALGORITHMS:
        algo_class = load_algorithm(entry)
        if algo_class is None:
            continue
        existing = ALGOS.get(entry.name)
        if existing is not None and existing is not algo_class and not existing.__module__.startswith("sb3_natgrad"):
            warnings.warn(
                f"rl-zoo3 already has --algo {entry.name} ({existing.__module__}.{existing.__qualname__}); "
                f"sb3_natgrad's {entry.class_name} replaces it",
                stacklevel=2,
            )
        ALGOS[entry.name] = algo_class
        if entry.sampler is not None:
            zoo_hyperparams_opt.HYPERPARAMS_SAMPLER[entry.name] = getattr(hyperparams_opt, entry.sampler)
        if entry.converter is not None:
            zoo_hyperparams_opt.HYPERPARAMS_CONVERTER[entry.name] = getattr(hyperparams_opt, entry.converter)
        registered[entry.name] = algo_class
    return registered


def hyperparams_dir() -> str:
    """
    :return: the folder of the packaged rl-zoo3 hyperparameter files (``<algo>.yml``)
    """
    return str(files("sb3_natgrad") / "hyperparams")


def default_config(algo: str) -> str | None:
    """
    :param algo: an ``--algo`` name
    :return: path of the packaged hyperparameter file of ``algo``, or ``None`` if there is none
    """
    path = os.path.join(hyperparams_dir(), f"{algo}.yml")
    return path if os.path.isfile(path) else None


__all__ = [
    "ZOO_ALGORITHMS",
    "ZooAlgorithm",
    "ZooError",
    "available_algorithms",
    "default_config",
    "hyperparams_dir",
    "load_algorithm",
    "register",
    "unavailable_algorithms",
]
