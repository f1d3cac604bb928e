"""Environments with spaces the algorithms refuse, shared by the tests of all three."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class TupleActionEnv(gym.Env):
    """A Tuple action space (no SB3 distribution for it)."""

    observation_space = spaces.Box(-1, 1, (2,))
    action_space = spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3)))

    def reset(self, seed=None, options=None):
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


class NestedDictEnv(TupleActionEnv):
    """A Dict observation inside a Dict observation (SB3's MultiInputPolicy takes one level)."""

    observation_space = spaces.Dict({"a": spaces.Dict({"b": spaces.Box(-1, 1, (2,))})})
    action_space = spaces.Discrete(2)


class UnboundedBoxEnv(TupleActionEnv):
    """A Box action space without finite bounds (actions are clipped to them)."""

    action_space = spaces.Box(-np.inf, np.inf, (2,))
