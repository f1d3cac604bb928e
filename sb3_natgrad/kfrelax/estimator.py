"""
The RELAX / LAX estimate of KFRELAX's policy gradient, from a rollout whose acting noise was stored.

**Stored noise.** The policy acts through explicit noise that the rollout buffer stores
(:class:`~sb3_natgrad.kfrelax.policies.KFRELAXPolicy`, :mod:`~sb3_natgrad.kfrelax.buffers`): uniforms ``u`` for
discrete spaces (Gumbel-max / logistic, Grathwohl et al. 2018, App. B) and standard normals ``eps`` for Box
(``a = mu + sigma eps``; stored rather than recovered as ``(a - mu) / sigma``, which is exact only up to rounding). At
train time ``z(theta, u)`` is rebuilt with the same ``theta`` and must reproduce the stored action (``argmax`` / sign;
:func:`action_mismatch`). On on-policy data the mismatch rate is 0 up to floating-point ties: mismatched samples
(near-ties where the batched forward pass rounds differently) fall back to the score-function term ``f log pi``
(:func:`per_sample_objective`); above :data:`ACTION_MISMATCH_TOLERANCE` the data are not on-policy and KFRELAX skips
the update.

**Estimate.** ``g_hat = d mean_t(obj_t) / d theta`` over the actor's parameters (the ascent direction), with the
per-sample surrogate ``obj_t`` of :func:`per_sample_objective`: RELAX for discrete actions (Grathwohl et al. 2018,
App. C, second theorem; Firouzi 2018, §4.2.1), LAX for Box actions (App. C, first theorem). The equations are in
:mod:`~sb3_natgrad.kfrelax.control_variate`. ``g_hat`` is taken together with the control variate's loss, which
differentiates it again (:func:`~sb3_natgrad.kfrelax.control_variate_training.control_variate_loss`), and handed to
the policy's optimizer by :func:`set_policy_gradient`.
"""

from __future__ import annotations

import torch as th
from gymnasium import spaces
from torch import nn

from sb3_natgrad.common.gradients import flatten_grads
from sb3_natgrad.kfrelax.control_variate import SurrogateTerms, lax_surrogate, relax_objective, relax_surrogate
from sb3_natgrad.kfrelax.policies import KFRELAXPolicy, RelaxForward
from sb3_natgrad.kfrelax.relaxations import DiagGaussianReparameterization, DiscreteRelaxation

#: above this fraction of samples whose stored noise does not reproduce the stored action, the update is skipped
ACTION_MISMATCH_TOLERANCE = 0.01
#: relative tolerance for Box actions rebuilt as mu + sigma * eps from the stored noise
BOX_ACTION_RTOL = 1e-4
#: number of random sub-batches for the logged estimator-variance diagnostic
VARIANCE_GROUPS = 8


def relaxation_actions(action_space: spaces.Space, actions: th.Tensor) -> th.Tensor:
    """
    Buffer actions in the layout of the relaxations.

    :param action_space: the action space
    :param actions: the rollout buffer's actions (float32, ``[N, action_dim]``)
    :return: ``[N]`` integers (Discrete), ``[N, n]`` integers (MultiDiscrete), ``[N, d]`` floats (MultiBinary, Box)
    """
    if isinstance(action_space, spaces.Discrete):
        return actions.long().flatten()
    if isinstance(action_space, spaces.MultiDiscrete):
        return actions.long()
    return actions.reshape(actions.shape[0], -1)


def action_mismatch(policy: KFRELAXPolicy, out: RelaxForward, actions: th.Tensor, noise: th.Tensor) -> th.Tensor:
    """
    Per sample: does the stored noise, with the current ``theta``, fail to reproduce the stored action?

    :param policy: the policy that acted
    :param out: its training forward pass on the rollout's observations
    :param actions: the stored actions, in the layout of the relaxations
    :param noise: the stored acting noise ``[N, noise_dim]``
    :return: bool ``[N]``
    """
    with th.no_grad():
        rebuilt = policy.actions_from_noise(out.params.detach(), noise)
        if isinstance(policy.relaxation, DiagGaussianReparameterization):
            return ((rebuilt - actions).abs() > BOX_ACTION_RTOL * (1.0 + actions.abs())).any(dim=-1)
        different = rebuilt.to(actions.dtype) != actions
        return different.reshape(different.shape[0], -1).any(dim=-1)


def per_sample_objective(
    policy: KFRELAXPolicy,
    out: RelaxForward,
    actions: th.Tensor,
    noise: th.Tensor,
    targets: th.Tensor,
    valid: th.Tensor | None,
) -> tuple[th.Tensor, th.Tensor, SurrogateTerms]:
    """
    The per-sample RELAX / LAX surrogate ``obj_t``, whose batch mean's ``theta``-gradient is the estimate ``g_hat``.

    The surrogate of :func:`~sb3_natgrad.kfrelax.control_variate.relax_objective` (Grathwohl et al. 2018, App. C,
    second theorem) with ``z_t = z(theta, u_t)`` from the stored noise and ``z~_t ~ p(z | b_t, theta)`` from fresh
    noise ``v`` (exact conditional sampler); for Box actions LAX's (App. C, first theorem), the same without the ``z~``
    terms, ``z_t`` being the action ``a_t(theta, eps_t)``.

    :param policy: the policy that acted (its relaxation and control variate ``c_phi``)
    :param out: its training forward pass on the rollout's observations
    :param actions: the stored actions, in the layout of the relaxations
    :param noise: the stored acting noise ``[N, noise_dim]``
    :param targets: ``f_t`` ``[N]``
    :param valid: samples whose stored noise reproduces the stored action (bool ``[N]``; ``None``: all); the others
        keep only the score-function term ``f_t log pi_t``
    :return: ``obj_t`` ``[N]``, ``log pi`` ``[N]`` and the surrogate's parts
    """
    relaxation = policy.relaxation
    cv = policy.control_variate
    if isinstance(relaxation, DiagGaussianReparameterization):
        assert out.log_std is not None
        terms = lax_surrogate(cv, relaxation, out.params, out.log_std, noise, targets, obs=out.cv_obs, reduction="sum")
        c_pathwise, c_tilde = terms.c_z, th.zeros_like(terms.c_z)  # LAX is RELAX without the z~ terms
    else:
        assert isinstance(relaxation, DiscreteRelaxation)
        v = relaxation.sample_noise(noise.shape[0], device=noise.device, dtype=noise.dtype)  # fresh noise for z~
        terms = relax_surrogate(cv, relaxation, out.params, actions, targets, noise, v, obs=out.cv_obs, reduction="sum")
        c_pathwise, c_tilde = terms.c_z, terms.c_z_tilde
    c_coef = terms.c_coef
    if valid is not None and not bool(valid.all()):
        mask = valid.to(c_coef.dtype)
        c_pathwise, c_tilde, c_coef = c_pathwise * mask, c_tilde * mask, c_coef * mask
    per_sample = relax_objective(terms.log_prob, targets, c_pathwise, c_tilde, c_coef, reduction="none")
    return per_sample, terms.log_prob, terms


def grad_variance(
    per_sample: th.Tensor, log_prob: th.Tensor, targets: th.Tensor, params: list[nn.Parameter]
) -> tuple[float, float]:
    """
    Log-only diagnostic: the per-parameter average of the per-sample variance of the estimate ``g_hat_t``, with the
    control variate (``obj_t``) and without it (``f_t log pi_t``, plain REINFORCE).

    From ``K = VARIANCE_GROUPS`` sub-batches of ``m`` consecutive samples (the rollout buffer has permuted them) with
    gradients ``g_k`` and mean ``g``: ``m * sum_k ||g_k - g||^2 / ((K - 1) P)`` for ``P`` parameters, treating the
    samples as independent.

    :param per_sample: ``obj_t`` ``[N]`` (on the graph)
    :param log_prob: ``log pi_t`` ``[N]`` (on the graph)
    :param targets: ``f_t`` ``[N]``
    :param params: the actor's parameters ``theta``
    :return: the variance with and without the control variate (``nan`` for fewer than 2 samples)
    """
    n = per_sample.shape[0]
    groups = min(VARIANCE_GROUPS, n)
    if groups < 2:
        return float("nan"), float("nan")
    size = n // groups
    n_params = sum(p.numel() for p in params)
    results = []
    for values in (per_sample, targets.detach() * log_prob):
        means = []
        for k in range(groups):
            chunk = values[k * size : (k + 1) * size].mean()
            grads = th.autograd.grad(chunk, params, retain_graph=True, allow_unused=True)
            means.append(flatten_grads(grads, params))
        stacked = th.stack(means).detach()
        spread = ((stacked - stacked.mean(dim=0)) ** 2).sum() / (groups - 1)
        results.append(float(size * spread / n_params))
    return results[0], results[1]


def set_policy_gradient(
    policy_params: list[nn.Parameter],
    actor_params: list[nn.Parameter],
    g_hat: list[th.Tensor],
    aux_grads: tuple[th.Tensor | None, ...],
    max_grad_norm: float | None,
) -> None:
    """
    ``theta.grad = -g_hat + aux_grads`` for the policy's (minimising) optimizer, optionally norm-clipped.

    :param policy_params: the actor's and the critic's parameters (what the policy's optimizer updates)
    :param actor_params: the actor's parameters, the part of them that ``g_hat`` covers
    :param g_hat: the estimate, an ascent direction, one tensor per actor parameter
    :param aux_grads: the gradient of the entropy and value losses, one tensor (or ``None``) per policy parameter
    :param max_grad_norm: clip the global norm of the gradient to this (``None``: no clipping)
    """
    for p, g in zip(policy_params, aux_grads):
        p.grad = th.zeros_like(p) if g is None else g.detach().clone()
    for p, g in zip(actor_params, g_hat):
        assert p.grad is not None
        p.grad.sub_(g)
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_(policy_params, max_grad_norm)
