"""Forward passes and distribution helpers for Stable-Baselines3 actor-critic policies."""

from __future__ import annotations

import torch as th
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs

TorchDistributions = th.distributions.Distribution | list[th.distributions.Distribution]


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


def mean_entropy(entropy: th.Tensor | None, log_prob: th.Tensor) -> th.Tensor:
    """
    The batch-mean entropy, or its estimate ``-mean(log pi(a|s))`` for distributions without a closed form (SB3's A2C
    and PPO do the same).

    :param entropy: per-sample entropies, or ``None``
    :param log_prob: per-sample log-probabilities of the batch's actions
    :return: a scalar
    """
    return -th.mean(log_prob) if entropy is None else th.mean(entropy)


def sampled_log_prob(distribution: Distribution) -> th.Tensor:
    """
    ``log pi(a~|s)`` for fresh actions ``a~`` drawn from ``distribution`` (no gradient through the sample).

    Its batch mean is the policy part of the sampled (true) Fisher loss of Wu et al. 2017, §3.1.

    :param distribution: an SB3 action distribution
    :return: per-sample log-probabilities, shape ``[batch]``
    """
    with th.no_grad():
        actions = distribution.sample()
    return distribution.log_prob(actions.detach())


def policy_kl(old: Distribution | TorchDistributions, new: Distribution | TorchDistributions) -> th.Tensor:
    """
    Exact ``KL(old || new)`` per sample, summed over independent action dimensions.

    SB3 distribution objects are reused (``proba_distribution`` returns ``self``), so snapshot the *torch*
    distribution of the old policy (``dist.distribution``, a list for MultiDiscrete) before running the policy
    again, and pass that snapshot here.

    :param old: the torch distribution(s) of the policy before the update (or an SB3 distribution not reused since)
    :param new: the same after the update
    :return: KL divergence per sample, shape ``[batch]``
    """
    old_dist = old.distribution if isinstance(old, Distribution) else old
    new_dist = new.distribution if isinstance(new, Distribution) else new
    if isinstance(old_dist, (list, tuple)):
        assert isinstance(new_dist, (list, tuple))
        return th.stack([th.distributions.kl_divergence(p, q) for p, q in zip(old_dist, new_dist)], dim=1).sum(dim=1)
    assert not isinstance(new_dist, (list, tuple))
    kl = th.distributions.kl_divergence(old_dist, new_dist)
    if isinstance(old_dist, th.distributions.Categorical):
        return kl
    # Independent dimensions: Normal (diagonal Gaussian, gSDE, and tanh-squashed Gaussians, whose KL is that of the
    # underlying Gaussian) and Bernoulli.
    return kl.sum(dim=-1) if kl.dim() > 1 else kl
