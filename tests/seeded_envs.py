"""Identity environments whose data does not depend on the global random state.

SB3's identity envs draw their states from ``action_space.sample()``, and neither ``VecEnv.seed`` nor the model's
``seed`` reaches the spaces of each sub-environment. Without this, every test run trains on different data.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import gymnasium as gym


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
