"""Forward passes and distribution helpers for Stable-Baselines3 actor-critic policies."""

from __future__ import annotations

import torch as th
from stable_baselines3.common.distributions import (
    BernoulliDistribution,
    CategoricalDistribution,
    DiagGaussianDistribution,
    Distribution,
    MultiCategoricalDistribution,
    StateDependentNoiseDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs


def distribution_and_values(policy: ActorCriticPolicy, obs: PyTorchObs) -> tuple[Distribution, th.Tensor]:
    """
    One forward pass of an actor-critic policy returning the action distribution and the values.

    The same computation as ``ActorCriticPolicy.evaluate_actions``, but it keeps the distribution
    object, so a sampled-Fisher loss and the training loss can share one forward pass (and one set of
    K-FAC input statistics).

    :param policy: the policy
    :param obs: a batch of observations (already a tensor / dict of tensors)
    :return: (distribution, values of shape ``[batch, 1]``)
    """
    features = policy.extract_features(obs)
    if policy.share_features_extractor:
        latent_pi, latent_vf = policy.mlp_extractor(features)
    else:
        pi_features, vf_features = features
        latent_pi = policy.mlp_extractor.forward_actor(pi_features)
        latent_vf = policy.mlp_extractor.forward_critic(vf_features)
    distribution = policy._get_action_dist_from_latent(latent_pi)
    values = policy.value_net(latent_vf)
    return distribution, values


def sampled_log_prob(distribution: Distribution) -> th.Tensor:
    """
    ``log pi(a~|s)`` for fresh actions ``a~`` drawn from ``distribution`` (no gradient through the sample).

    Its batch mean is the policy part of the sampled (true) Fisher loss of seed 001 §3.1.

    :param distribution: an SB3 action distribution
    :return: per-sample log-probabilities, shape ``[batch]``
    """
    with th.no_grad():
        actions = distribution.sample()
    return distribution.log_prob(actions.detach())


def policy_kl(old: Distribution, new: Distribution) -> th.Tensor:
    """
    Exact ``KL(old || new)`` per sample, summed over independent action dimensions.

    :param old: distribution before the update
    :param new: distribution after the update (same type)
    :return: KL divergence per sample, shape ``[batch]``
    """
    if type(old) is not type(new):
        raise TypeError(f"cannot compare distributions of types {type(old).__name__} and {type(new).__name__}")
    if isinstance(old, MultiCategoricalDistribution):
        assert isinstance(new, MultiCategoricalDistribution)
        return th.stack([th.distributions.kl_divergence(p, q) for p, q in zip(old.distribution, new.distribution)], dim=1).sum(
            dim=1
        )
    if isinstance(old, CategoricalDistribution):
        return th.distributions.kl_divergence(old.distribution, new.distribution)
    if isinstance(old, (DiagGaussianDistribution, StateDependentNoiseDistribution, BernoulliDistribution)):
        # Independent dimensions (a tanh-squashed Gaussian has the KL of its underlying Gaussian).
        kl = th.distributions.kl_divergence(old.distribution, new.distribution)
        return kl.sum(dim=-1) if kl.dim() > 1 else kl
    raise NotImplementedError(f"no KL divergence for {type(old).__name__}")
