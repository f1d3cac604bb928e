"""Reward normalisation as an RLlib learner connector (RLlib's new API stack has none)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns


class NormalizeRewards(ConnectorV2):
    """
    Divide the rewards of the train batch by the running standard deviation of the discounted return, before the
    advantages and value targets are computed: the idea of Stable-Baselines3's ``VecNormalize(norm_reward=True)``, on
    the learner. ACKTR's trust region is shared by actor and critic, and large returns let the critic's term use it up
    (see :class:`~sb3_natgrad.rllib.ACKTRConfig`).

    Unlike ``VecNormalize``, the discounted return restarts at 0 at the start of each episode chunk of the batch, so
    with chunks much shorter than ``1 / (1 - gamma)`` steps the scale is smaller and the scaled rewards larger. With
    several learners (``torch.distributed``) the statistics of every learner's share are summed, so all learners use
    the same scale. The env runners' episode returns (``env_runners/episode_return_mean``) stay unnormalised.

    :param gamma: discount of the return whose scale is tracked
    :param epsilon: added to the variance
    :param clip: rewards are clipped to ``[-clip, clip]`` after scaling (``None``: no clipping)
    """

    def __init__(
        self,
        input_observation_space: Any = None,
        input_action_space: Any = None,
        *,
        gamma: float = 0.99,
        epsilon: float = 1e-8,
        clip: float | None = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.gamma = gamma
        self.epsilon = epsilon
        self.clip = clip
        self.count = 0
        self.mean = 0.0
        self.var = 1.0

    def _update(self, returns: np.ndarray) -> None:
        """Merge a batch of returns (of every learner) into the running mean and variance (Chan et al.'s formula)."""
        moments = torch.tensor([returns.size, returns.sum(), np.square(returns).sum()], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(moments)
        n = int(moments[0])
        if n == 0:
            return
        batch_mean = float(moments[1]) / n
        batch_var = max(float(moments[2]) / n - batch_mean**2, 0.0)
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total

    def __call__(self, *, rl_module: Any, batch: dict[str, Any], episodes: list[Any], **kwargs: Any) -> Any:
        lengths = [len(e) for e in self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False)]
        for module_batch in batch.values():
            if Columns.REWARDS not in module_batch:
                continue
            rewards = module_batch[Columns.REWARDS]
            values = (
                rewards.detach().cpu().numpy().astype(np.float64) if isinstance(rewards, torch.Tensor) else np.asarray(rewards)
            )
            if values.ndim != 1 or values.shape[0] != sum(lengths):
                raise ValueError(
                    f"NormalizeRewards: expected a flat batch of {sum(lengths)} rewards (one per episode step), got shape "
                    f"{values.shape}; recurrent modules are not supported"
                )
            returns = np.empty_like(values)
            start = 0
            for length in lengths:
                running = 0.0
                for t in range(start, start + length):
                    running = running * self.gamma + values[t]
                    returns[t] = running
                start += length
            self._update(returns)
            scaled = values / np.sqrt(self.var + self.epsilon)
            if self.clip is not None:
                scaled = np.clip(scaled, -self.clip, self.clip)
            if isinstance(rewards, torch.Tensor):
                module_batch[Columns.REWARDS] = torch.as_tensor(scaled, dtype=rewards.dtype, device=rewards.device)
            else:
                module_batch[Columns.REWARDS] = scaled.astype(np.float32)
        return batch

    def get_state(self, components: Any = None, *, not_components: Any = None, **kwargs: Any) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "var": self.var}

    def set_state(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.var = int(state["count"]), float(state["mean"]), float(state["var"])
