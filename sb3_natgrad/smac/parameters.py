"""
Which parameters of an SB3 ``ActorCriticPolicy`` SMAC's actor step moves and which its critic regression (moving
them: :mod:`sb3_natgrad.common.parameters`).

They are told apart once, from the autograd graph: the actor is every trainable parameter ``log pi`` depends on;
the critic is every other parameter the value depends on. Parameters shared by both (``share_features_extractor=True``
with a CNN) belong to the actor and are moved by the natural step only (as in sb3-contrib's TRPO);
``share_features_extractor=False`` gives the critic its own extractor.
"""

from __future__ import annotations

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn


def split_actor_critic(policy: ActorCriticPolicy, algorithm: str) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """
    :param policy: the policy (its mode, training or evaluation, is restored)
    :param algorithm: the algorithm's name, for the errors
    :return: the actor's parameters and the critic's own, each in the order of ``policy.parameters()``
    :raises ValueError: if either is empty
    """
    params = [p for p in policy.parameters() if p.requires_grad]
    was_training = policy.training
    policy.set_training_mode(False)
    try:
        obs, _ = policy.obs_to_tensor(policy.observation_space.sample())
        with th.enable_grad():
            distribution = policy.get_distribution(obs)
            log_prob = distribution.log_prob(distribution.mode().detach())
            actor_grads = th.autograd.grad(log_prob.sum(), params, allow_unused=True)
            critic_grads = th.autograd.grad(policy.predict_values(obs).sum(), params, allow_unused=True)
    finally:
        policy.set_training_mode(was_training)
    actor = [p for p, g in zip(params, actor_grads, strict=True) if g is not None]
    critic = [p for p, g, ga in zip(params, critic_grads, actor_grads, strict=True) if g is not None and ga is None]
    if not actor:
        raise ValueError(f"{algorithm}: the policy has no trainable actor parameter")
    if not critic:
        raise ValueError(f"{algorithm}: the policy has no critic parameter separate from the actor")
    return actor, critic
