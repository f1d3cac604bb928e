"""
Checks of rl-zoo3 hyperparameter files: clear one-line errors instead of tracebacks deep inside rl-zoo3.

No rl-zoo3 import here: the checks only need PyYAML and the algorithm's constructor signature.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from sb3_natgrad.zoo import ZooError

#: Keys that rl-zoo3's ``ExperimentManager`` consumes itself (rl_zoo3 2.9 ``_preprocess_hyperparams``,
#: ``_preprocess_normalization``, ``_preprocess_action_noise``); every other key is passed to the algorithm's
#: constructor, so it must be one of its arguments.
ZOO_KEYS = frozenset(
    {
        "n_timesteps",
        "n_envs",
        "normalize",
        "frame_stack",
        "env_wrapper",
        "vec_env_wrapper",
        "callback",
        "env_kwargs",
        "monitor_kwargs",
        "noise_type",
        "noise_std",
    }
)

#: Constructor arguments that rl-zoo3 passes itself (from the command line): a config may not set them.
ZOO_SET_ARGUMENTS = frozenset({"env", "seed", "verbose", "device", "tensorboard_log", "_init_setup_model"})

#: Keys every entry needs (rl-zoo3 reads ``n_timesteps`` even when ``-n`` overrides it).
REQUIRED_KEYS = ("n_timesteps", "policy")

# What PyYAML (YAML 1.1) reads as a string although a user means a number: 1e6, 3e-4, 1.0e6, .5e3, 1_000e3 ...
_NUMBER = re.compile(r"^[-+]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)([eE][-+]?\d+)?$")


class HyperparamsError(ZooError, ValueError):
    """An invalid hyperparameter file or entry."""


def one_line(text: object) -> str:
    """
    :param text: any message
    :return: the message on one line (whitespace runs collapsed)
    """
    return " ".join(str(text).split())


def load_yaml_config(path: str) -> dict[str, Any]:
    """
    Read an rl-zoo3 hyperparameter file the way rl-zoo3 does (``yaml.safe_load``), with clear errors.

    :param path: a ``.yml`` / ``.yaml`` file
    :return: ``{entry key: {hyperparameter: value}}``
    """
    try:
        with open(path) as file:
            table = yaml.safe_load(file)
    except FileNotFoundError:
        raise HyperparamsError(f"hyperparameter file not found: {path} (pass another one with -conf/--conf-file)") from None
    except yaml.YAMLError as exc:
        raise HyperparamsError(f"malformed YAML in {path}: {one_line(exc)}") from None
    if not isinstance(table, dict):
        raise HyperparamsError(f"malformed hyperparameter file {path}: expected a mapping of env ids to entries")
    for key, entry in table.items():
        if not isinstance(entry, dict):
            raise HyperparamsError(
                f"malformed hyperparameter file {path}: entry {key!r} must be a mapping of hyperparameters, "
                f"got {type(entry).__name__}"
            )
    return table


def select_entry(table: Mapping[str, Any], env_id: str, is_atari: bool, path: str = "") -> str:
    """
    The entry rl-zoo3 uses for an environment: the env id, else ``atari`` for Atari games, else ``default``.

    :param table: the hyperparameter file
    :param env_id: Gymnasium id
    :param is_atari: whether the env is an ALE game
    :param path: file name for messages
    :return: the key of the entry
    """
    if env_id in table:
        return env_id
    if is_atari:
        if "atari" in table:
            return "atari"
        raise HyperparamsError(f"{path}: no entry {env_id!r} and no 'atari' entry for this Atari game")
    if "default" in table:
        return "default"
    raise HyperparamsError(f"{path}: no entry for {env_id!r} and no 'default' entry (entries: {', '.join(map(str, table))})")


def constructor_arguments(algo_class: type) -> set[str] | None:
    """
    Keyword arguments the constructor accepts, following ``**kwargs`` up the class hierarchy.

    :param algo_class: an algorithm class
    :return: the argument names, or ``None`` if the constructor accepts any keyword
    """
    names: set[str] = set()
    for klass in algo_class.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
        names.update(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            names.discard("self")
            return names
    return None


def numeric_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """
    Strings that look like numbers (PyYAML reads ``1e6`` and ``3e-4`` as strings; write ``!!float 1e6``).

    :param value: a hyperparameter value (nested dicts and lists are searched)
    :param path: name of ``value`` for the messages
    :return: ``(path, string)`` pairs
    """
    if isinstance(value, str):
        if _NUMBER.match(value.strip()):
            yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from numeric_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from numeric_strings(item, f"{path}[{index}]")


def check_entry(algo_class: type, entry: Mapping[str, Any], where: str, overrides: Mapping[str, Any] | None = None) -> None:
    """
    Raise a :class:`HyperparamsError` naming the problem unless every key of ``entry`` is an rl-zoo3 key or a
    constructor argument of ``algo_class``, the required keys are there, and no value is a number written as a string.

    :param algo_class: the algorithm class
    :param entry: the hyperparameters (one entry of a file, possibly with command-line overrides)
    :param where: where the entry comes from, for the message (e.g. ``"acktr.yml [CartPole-v1]"``)
    :param overrides: the ``-params`` command-line overrides, to name them as the source of a bad key
    """
    overrides = overrides or {}
    allowed = constructor_arguments(algo_class)
    for key in entry:
        source = "-params" if key in overrides else where
        if not isinstance(key, str):
            raise HyperparamsError(f"{source}: invalid key {key!r} (keys are hyperparameter names)")
        if key in ZOO_SET_ARGUMENTS:
            raise HyperparamsError(f"{source}: key {key!r} cannot be set in a config, rl-zoo3 sets it from the command line")
        if key in ZOO_KEYS or allowed is None or key in allowed:
            continue
        candidates = sorted((allowed - ZOO_SET_ARGUMENTS) | ZOO_KEYS)
        close = difflib.get_close_matches(key, candidates, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise HyperparamsError(
            f"{source}: unknown key {key!r} (neither a {algo_class.__name__} argument nor an rl-zoo3 key){hint}"
        )
    for key in REQUIRED_KEYS:
        if key not in entry:
            raise HyperparamsError(f"{where}: missing required key {key!r}")
    for path, text in numeric_strings(dict(entry)):
        if path.split(".")[0] in overrides:
            continue  # -params values are Python expressions, a string there is deliberate
        raise HyperparamsError(f"{where}: {path}: {text!r} is read as a string by YAML, write !!float {text}")
