"""Sampled-Fisher log-likelihoods for actor-critic models (Wu et al. 2017, §3.1), framework-free."""

from __future__ import annotations

import math

import torch


def critic_sampled_log_likelihood(values: torch.Tensor, variance: float = 1.0) -> torch.Tensor:
    """
    The critic's term of the sampled Fisher loss: ``log N(v~ | V(s), sigma^2)`` up to a constant, with
    ``v~ = V(s) + sigma * eps`` drawn without gradient, so that its gradient's second moment is the Gauss–Newton
    matrix of the squared value error (Wu et al. 2017, §3.1; ``sigma^2`` = 1, or the Bellman-error variance of their
    appendix D).

    :param values: the critic's outputs ``V(s)`` (with gradient), any shape
    :param variance: the output variance ``sigma^2 > 0``
    :return: per-sample log-likelihoods, the shape of ``values``
    """
    sampled = values.detach() + math.sqrt(variance) * torch.randn_like(values)
    return -((values - sampled) ** 2) / (2.0 * variance)
