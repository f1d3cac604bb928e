"""
ACKTR's sampled Fisher loss (Wu et al. 2017, §3.1): its backward pass gives K-FAC the output-gradient factors.

``mean log pi(a~|s) + vf_fisher_coef * mean log N(v~ | V(s), sigma^2)``, with ``a~`` drawn from the current policy
(the true Fisher, not the empirical one of the rollout actions) and ``v~ = V(s) + sigma * eps`` (the Gauss–Newton
metric of the critic). ``sigma^2`` is 1, or the running variance of the Bellman error with
``adaptive_gauss_newton=True`` (appendix D). When actor and critic share layers, the two terms are the Fisher of the
joint model ``p(a, v | s) = pi(a|s) p(v|s)``.

Deviations from the reference code, on purpose: the value term is the exact Gaussian log-likelihood (the OpenAI
code's ``-(V - sg(V + eps))^2`` equals ``vf_fisher_coef=2`` here); the Fisher actions are freshly sampled rather than
the rollout actions (the same distribution, one update per rollout). K-FAC gives biases the homogeneous coordinate of
their layer's input rather than a separate block (:mod:`sb3_natgrad.optim.kronecker`).
"""

from __future__ import annotations

import math

import torch as th
from stable_baselines3.common.distributions import Distribution

from sb3_natgrad.common.distributions import sampled_log_prob
from sb3_natgrad.optim.fisher import critic_sampled_log_likelihood


def sampled_fisher_loss(
    distribution: Distribution, values: th.Tensor, vf_fisher_coef: float, variance: float = 1.0
) -> th.Tensor:
    """
    :param distribution: the policy's action distribution on the batch (with gradient)
    :param values: the critic's values on the batch (with gradient), shape ``[batch]``
    :param vf_fisher_coef: weight of the critic's term
    :param variance: the critic's output variance ``sigma^2``
    :return: the batch-mean sampled Fisher loss, a scalar
    """
    return sampled_log_prob(distribution).mean() + vf_fisher_coef * critic_sampled_log_likelihood(values, variance).mean()


def updated_bellman_error_var(running: float | None, values: th.Tensor, returns: th.Tensor, decay: float) -> float | None:
    """
    The running (exponential moving average) variance of the Bellman error ``R - V(s)`` (Wu et al. 2017, appendix D).

    :param running: the variance so far (``None``: no batch yet)
    :param values: the critic's values on the batch
    :param returns: the batch's returns
    :param decay: the moving average's decay
    :return: the new running variance (unchanged when the batch's is not finite)
    """
    batch_var = float(th.mean((returns - values.detach()) ** 2))
    if not math.isfinite(batch_var):
        return running
    return batch_var if running is None else decay * running + (1 - decay) * batch_var
