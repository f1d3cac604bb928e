"""
Rollout buffers that also store the noise each action was taken with (RELAX / LAX need it at train time).

Stable-Baselines3's ``collect_rollouts`` is used unchanged: it calls the policy (which draws and keeps the noise,
see :meth:`~sb3_natgrad.kfrelax.policies.KFRELAXPolicy.forward`) and then ``buffer.add(...)``, where these buffers
take the policy's kept noise through their :attr:`noise_source`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.type_aliases import TensorDict
from stable_baselines3.common.vec_env import VecNormalize

from sb3_natgrad.kfrelax.relaxations import make_relaxation


class NoisyRolloutBufferSamples(NamedTuple):
    """``RolloutBufferSamples`` plus the acting noise (``u`` or ``eps``) of each sample, ``[batch, noise_dim]``."""

    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    noise: th.Tensor


# same fields as NoisyRolloutBufferSamples but Dict observations: a NamedTuple cannot extend another (as in SB3)
class NoisyDictRolloutBufferSamples(NamedTuple):
    """``DictRolloutBufferSamples`` plus the acting noise of each sample, ``[batch, noise_dim]``."""

    observations: TensorDict
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    noise: th.Tensor


class _NoiseStorage:
    """
    Mixin for SB3 rollout buffers: ``noise`` ``[buffer_size, n_envs, noise_dim]`` filled at every ``add``.

    :attr:`noise_source` is a callable returning the noise of the last action batch (the algorithm connects it to
    ``policy.pop_acting_noise`` after building the policy). :attr:`used_for_update` marks a rollout that a policy
    update has consumed (KFRELAX is strictly on-policy: one update per rollout); ``reset`` clears it.
    """

    buffer_size: int
    n_envs: int
    pos: int
    action_space: spaces.Space
    generator_ready: bool
    noise: np.ndarray

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        gae_lambda: float = 1,
        gamma: float = 0.99,
        n_envs: int = 1,
    ):
        # Before the base constructor, which calls reset().
        self.noise_dim = make_relaxation(action_space).noise_dim
        self.noise_source: Callable[[], th.Tensor | None] | None = None
        self.used_for_update = False
        super().__init__(  # type: ignore[call-arg]
            buffer_size, observation_space, action_space, device, gae_lambda=gae_lambda, gamma=gamma, n_envs=n_envs
        )

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]
        self.noise = np.zeros((self.buffer_size, self.n_envs, self.noise_dim), dtype=np.float32)
        self.used_for_update = False

    def add(self, *args: Any, **kwargs: Any) -> None:
        self._store_noise()
        super().add(*args, **kwargs)  # type: ignore[misc]

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:
        if not self.generator_ready:
            self.noise = self.swap_and_flatten(self.noise)  # type: ignore[attr-defined]
        yield from super().get(batch_size)  # type: ignore[misc]

    def _store_noise(self) -> None:
        sampled = None if self.noise_source is None else self.noise_source()
        if sampled is None:
            raise RuntimeError(
                f"{type(self).__name__}.add(): no acting noise to store. KFRELAX needs the noise each action was sampled "
                "with: fill this buffer through a KFRELAX policy's stochastic forward() (SB3's collect_rollouts does)"
            )
        self.noise[self.pos] = sampled.detach().cpu().numpy().reshape(self.n_envs, self.noise_dim)


class NoisyRolloutBuffer(_NoiseStorage, RolloutBuffer):
    """
    ``RolloutBuffer`` that also stores the acting noise; ``get()`` yields :class:`NoisyRolloutBufferSamples`.

    Same arguments as ``RolloutBuffer``.
    """

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> NoisyRolloutBufferSamples:  # type: ignore[override]
        base = super()._get_samples(batch_inds, env)
        return NoisyRolloutBufferSamples(*base, noise=self.to_torch(self.noise[batch_inds]))


class NoisyDictRolloutBuffer(_NoiseStorage, DictRolloutBuffer):
    """
    ``DictRolloutBuffer`` that also stores the acting noise; ``get()`` yields :class:`NoisyDictRolloutBufferSamples`.

    Same arguments as ``DictRolloutBuffer``.
    """

    def _get_samples(  # type: ignore[override]
        self, batch_inds: np.ndarray, env: VecNormalize | None = None
    ) -> NoisyDictRolloutBufferSamples:
        base = super()._get_samples(batch_inds, env)
        return NoisyDictRolloutBufferSamples(*base, noise=self.to_torch(self.noise[batch_inds]))


NOISY_BUFFERS = (NoisyRolloutBuffer, NoisyDictRolloutBuffer)
