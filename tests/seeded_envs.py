"""Identity environments whose data does not depend on the global random state.

SB3's identity envs draw their states from ``action_space.sample()``, and neither ``VecEnv.seed`` nor the model's
``seed`` reaches the spaces of each sub-environment. Without this, every test run trains on different data.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import gymnasium as gym
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox, IdentityEnvMultiBinary, IdentityEnvMultiDiscrete

#: the action spaces of SB3's identity envs
IDENTITY_SPACES = ("Discrete", "MultiDiscrete", "MultiBinary", "Box")


def seeded(make_env: Callable[[], gym.Env], seed: int) -> Callable[[], gym.Env]:
    """Wrap an environment factory so that each environment it builds has seeded action and observation spaces.

    :param make_env: factory of the environment
    :param seed: seed of the first environment built; each further one gets the next integer
    :return: factory returning seeded environments
    """
    counter = itertools.count(seed)

    def factory() -> gym.Env:
        env = make_env()
        env_seed = next(counter)
        env.action_space.seed(env_seed)
        env.observation_space.seed(env_seed)
        return env

    return factory


def identity_env(space: str, size: int) -> Callable[[], gym.Env]:
    """A factory of SB3's identity env with one of :data:`IDENTITY_SPACES` as action space.

    :param space: ``"Discrete"`` (``size`` actions), ``"MultiDiscrete"`` (two sub-actions of ``size``),
        ``"MultiBinary"`` (``size`` bits) or ``"Box"`` (``IdentityEnvBox(eps=0.5)``; ``size`` is not used)
    :param size: size of the discrete space
    :return: factory of unseeded environments (see :func:`seeded`)
    """
    factories: dict[str, Callable[[], gym.Env]] = {
        "Discrete": lambda: IdentityEnv(size),
        "MultiDiscrete": lambda: IdentityEnvMultiDiscrete(size),
        "MultiBinary": lambda: IdentityEnvMultiBinary(size),
        "Box": lambda: IdentityEnvBox(eps=0.5),
    }
    return factories[space]
