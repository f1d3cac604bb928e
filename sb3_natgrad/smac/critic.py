"""SMAC's critic step: minibatch regression of the value on the returns (Huo et al. 2026, §4.3), and its batch size."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn
from torch.nn import functional as F


def warn_if_batch_exceeds_rollout(batch_size: int | None, rollout_size: int, algorithm: str) -> None:
    """
    As SB3's PPO: a ``batch_size`` larger than the rollout is a warning, and each epoch is one (truncated) minibatch.

    :param batch_size: the critic's minibatch size (``None``: the whole rollout)
    :param rollout_size: ``n_steps * n_envs``
    :param algorithm: the algorithm's name, for the warning
    """
    if batch_size is not None and batch_size > rollout_size:
        warnings.warn(
            f"{algorithm}: batch_size={batch_size} is larger than the rollout (n_steps * n_envs = {rollout_size}): each "
            f"critic epoch is one minibatch of {rollout_size} samples",
            UserWarning,
            stacklevel=3,  # the caller of the algorithm's _setup_model
        )


def fit_critic(
    policy: ActorCriticPolicy,
    rollout_buffer: RolloutBuffer,
    critic_params: Sequence[nn.Parameter],
    n_epochs: int,
    batch_size: int | None,
    max_grad_norm: float | None,
    algorithm: str,
) -> float:
    """
    Minimise ``mean((R_i - V(s_i))^2)`` over the critic's own parameters with ``policy.optimizer``, for ``n_epochs``
    epochs of minibatches. A minibatch with a non-finite loss or gradient is skipped (one ``RuntimeWarning`` counts
    them).

    :param policy: the policy, whose ``optimizer`` holds the critic's parameters
    :param rollout_buffer: the rollout, with its returns
    :param critic_params: the critic's own parameters (shared parameters belong to the actor)
    :param n_epochs: SMAC's ``n_critic_updates``
    :param batch_size: the minibatch size (``None``: the whole rollout)
    :param max_grad_norm: clip the gradient norm (``None``: no clipping)
    :param algorithm: the algorithm's name, for the warning
    :return: the mean loss of the minibatches (all skipped: the loss on the whole rollout)
    """
    value_losses = []
    nonfinite = 0
    for _ in range(n_epochs):
        for rollout_data in rollout_buffer.get(batch_size):
            values = policy.predict_values(rollout_data.observations).flatten()
            value_loss = F.mse_loss(rollout_data.returns, values)
            if not th.isfinite(value_loss):
                nonfinite += 1
                continue
            grads = th.autograd.grad(value_loss, critic_params, allow_unused=True)
            if not all(grad is None or bool(th.isfinite(grad).all()) for grad in grads):
                nonfinite += 1
                continue
            for param, grad in zip(critic_params, grads, strict=True):
                param.grad = grad
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(critic_params, max_grad_norm)
            policy.optimizer.step()
            value_losses.append(value_loss.item())
    if nonfinite:
        warnings.warn(
            f"{algorithm}: {nonfinite} critic minibatch(es) with a non-finite loss or gradient were skipped", RuntimeWarning
        )
    if not value_losses:
        with th.no_grad():
            data = next(iter(rollout_buffer.get(batch_size=None)))
            return float(F.mse_loss(data.returns, policy.predict_values(data.observations).flatten()))
    return float(np.mean(value_losses))
