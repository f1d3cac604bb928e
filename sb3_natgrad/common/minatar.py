"""
MinAtar (Young & Tian 2019): the network of the MinAtar paper as a features extractor, and env registration.

MinAtar's games are 10x10 grids with one boolean channel per object type, channels last (``Box(bool)`` of shape
``(10, 10, C)``), so Stable-Baselines3's image checks (uint8) do not apply and ``NatureCNN`` cannot be used. The
package itself (``pip install "sb3-natgrad[minatar]"``, GPL-3.0) is optional and imported only when a MinAtar env
is made; this module does not import it.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import gymnasium as gym
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

MINATAR_NAMESPACE = "MinAtar"
MINATAR_EXTRA_HINT = 'pip install "sb3-natgrad[minatar]"'


class MinAtarCnn(BaseFeaturesExtractor):
    """
    The MinAtar paper's network (Young & Tian 2019, §4): one 3x3 convolution with 16 filters and stride 1, then a
    fully connected layer of 128 units, ReLU after both. The observation is ``[H, W, C]`` (channels last, as
    MinAtar returns it; ``channels_last=False`` for ``[C, H, W]``) and any dtype (MinAtar's bool becomes 0/1).

    :param observation_space: a 3-dimensional ``Box``
    :param features_dim: units of the fully connected layer
    :param channels_last: whether the channel axis is the last one
    """

    def __init__(self, observation_space: spaces.Space, features_dim: int = 128, channels_last: bool = True) -> None:
        if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 3:
            raise ValueError(
                f"MinAtarCnn needs a 3-dimensional Box observation space ([H, W, C] grids), got {observation_space!r}"
            )
        super().__init__(observation_space, features_dim)
        self.channels_last = channels_last
        shape = observation_space.shape
        height, width, channels = shape if channels_last else (shape[1], shape[2], shape[0])
        if height < 3 or width < 3:
            raise ValueError(f"MinAtarCnn needs grids of at least 3x3 for its 3x3 convolution, got {observation_space.shape}")
        self.cnn = nn.Sequential(nn.Conv2d(channels, 16, kernel_size=3, stride=1), nn.ReLU(), nn.Flatten())
        self.linear = nn.Sequential(nn.Linear(16 * (height - 2) * (width - 2), features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        x = observations.float()
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return self.linear(self.cnn(x))


class MinAtarPolicy(ActorCriticPolicy):
    """
    ``ActorCriticPolicy`` with :class:`MinAtarCnn` and, unless ``net_arch`` is given, no further hidden layer (the
    policy and value heads read the 128 shared features, as in the MinAtar paper's actor-critic). Available as
    ``"MinAtarPolicy"`` in ACKTR and SMAC (KFRELAX has its own, :class:`~sb3_natgrad.kfrelax.policies.KFRELAXMinAtarPolicy`).

    :param observation_space: MinAtar's observation space
    :param action_space: action space
    :param lr_schedule: learning-rate schedule
    :param net_arch: hidden layers after the features extractor (default: none)
    :param kwargs: the other arguments of ``ActorCriticPolicy``
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        features_extractor_class: type[BaseFeaturesExtractor] = MinAtarCnn,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[] if net_arch is None else net_arch,
            features_extractor_class=features_extractor_class,
            **kwargs,
        )


def is_minatar_id(env_id: Any) -> bool:
    """Whether ``env_id`` names a MinAtar env (``"MinAtar/<Game>-v<k>"``)."""
    return isinstance(env_id, str) and env_id.split("/", 1)[0] == MINATAR_NAMESPACE and "/" in env_id


def register_minatar_envs() -> None:
    """
    Register the ``MinAtar/*`` ids with gymnasium through the MinAtar package's own ``gymnasium.envs`` entry point
    (gymnasium 1.x no longer loads plugin entry points by itself). Does nothing if they are registered already.

    :raises ModuleNotFoundError: naming the extra to install, if MinAtar is not installed
    """
    if any(env_id.startswith(MINATAR_NAMESPACE + "/") for env_id in gym.registry):
        return
    entry_points = [ep for ep in importlib.metadata.entry_points(group="gymnasium.envs") if ep.name == MINATAR_NAMESPACE]
    if not entry_points:
        raise ModuleNotFoundError(
            f"MinAtar environments need the MinAtar package, which is not installed: {MINATAR_EXTRA_HINT} "
            "(MinAtar is GPL-3.0 and therefore an optional extra)"
        )
    entry_points[0].load()()


def ensure_registered(env_id: Any) -> None:
    """
    Register the env family of ``env_id`` if our package knows how (today: MinAtar); other ids are left alone.

    :param env_id: a gymnasium id
    """
    if is_minatar_id(env_id):
        register_minatar_envs()
