"""Feature extractors."""

from __future__ import annotations

import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class ACKTRCnn(BaseFeaturesExtractor):
    """
    The Atari network of the ACKTR paper (Wu et al. 2017, appendix A.1): conv 32 8x8/4, conv 64 4x4/2,
    conv **32** 3x3/1, fully connected 512, ReLU.

    It differs from Stable-Baselines3's ``NatureCNN`` (default) only in the third convolution, which the
    paper cut to 32 filters so the fully connected layer's K-FAC input factor is 1569x1569 instead of
    3137x3137 (four to eight times cheaper to invert and to precondition with). Use it to reproduce the
    paper, whose policy and value heads are linear on the 512 features::

        ACKTR("CnnPolicy", env, policy_kwargs=dict(features_extractor_class=ACKTRCnn, net_arch=[]))

    Keep ``net_arch=[]``: for every extractor other than its own ``NatureCNN``, SB3 adds two 64-unit tanh layers to
    each head, which saturate on Atari (the same action distribution in every state).

    :param observation_space: an image observation space (channel-first after SB3's automatic transpose)
    :param features_dim: size of the fully connected layer
    :param normalized_image: whether images are already normalised to [0, 1] (as in SB3's ``NatureCNN``)
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 512, normalized_image: bool = False) -> None:
        if not is_image_space(observation_space, check_channels=False, normalized_image=normalized_image):
            raise ValueError(f"ACKTRCnn needs an image observation space, got {observation_space!r}")
        super().__init__(observation_space, features_dim)
        n_input_channels = observation_space.shape[0]
        self.cnn = nn.Sequential(
            nn.Conv2d(n_input_channels, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 32, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with th.no_grad():
            n_flatten = self.cnn(th.as_tensor(observation_space.sample()[None]).float()).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flatten, features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))
