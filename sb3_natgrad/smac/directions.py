"""
The natural direction ``d = F^-1 g`` of one SMAC actor update: one function per Fisher mode (SMAC's ``fisher``).

``g`` is the ascent gradient of the A2C objective over the actor parameters ``theta`` (one flat vector, in the
order of the parameters) and ``F`` the damped empirical Fisher of the scores ``psi_i = grad log pi(a_i|s_i)`` of
the batch (Huo et al. 2026, §4.1), with damping ``lambda``:

``"mean"`` (:func:`mean_fisher_direction`; Huo et al. 2026, §5.1, the paper's experiments)
    ``F = lambda I + psi psi^T`` with ``psi`` the mean score ``grad mean_i log pi(a_i|s_i)``, inverted by the
    Sherman–Morrison formula (§3 eq. (3)): ``d = (g - psi (psi^T g) / (lambda + psi^T psi)) / lambda``. Two backward
    passes and ``O(d)`` extra time and memory. ``fisher_samples=1`` gives the paper's one-sample Fisher
    ``psi = grad log pi(a_k|s_k)`` of a random sample (§4.1 eqs. (4)-(5)).
``"sample"`` (:func:`sample_fisher_direction`)
    ``F = lambda I + (1/M) sum_i psi_i psi_i^T`` inverted by ``M`` incremental rank-1 Sherman–Morrison updates (the
    WoodFisher recursion quoted in §4.1), in float64; per-sample scores via ``torch.func``, ``O(M^2 d)`` time,
    ``O(M d)`` memory.
``"batch"``, kernel form (:func:`batch_kernel_direction`)
    The same matrix through the Woodbury identity: with the Gram matrix ``K_ij = psi_i . psi_j`` (recorded layer by
    layer during the forward pass, no per-sample gradients) and ``g = (1/M) sum_i a_i psi_i``,
    ``d = sum_i w_i psi_i`` with ``w = (K + M lambda I)^-1 a``, i.e. one more backward of ``sum_i w_i log pi_i``.
``"batch"``, general Woodbury form (:func:`batch_woodbury_direction`)
    For a ``g`` that is not a combination of the Fisher's scores ``U = [psi_1 .. psi_k]`` (see *Entropy* and
    *Fisher sub-sampling*): ``d = (g - U (K + k lambda I)^-1 U^T g) / lambda``, ``U^T g`` by double backward.

*Which ``fisher``?* With a large batch the mean score of ``"mean"`` is tiny (``E_a[grad log pi] = 0``), so its
step is plain normalised gradient ascent; ``"batch"`` uses the whole empirical Fisher of the batch and is the mode
that behaves like a natural gradient, for one ``M x M`` Gram matrix and solve per update; ``"sample"`` computes
the same direction incrementally (a cross-check). ``train/fisher_correction = |lambda d - g| / |g|`` (0 for
SGD) shows how far a step is from SGD. Measurements: ``benchmarks/results/smac/fisher_modes.md``.

*Fisher sub-sampling.* ``fisher_samples=k`` builds the empirical Fisher from ``k`` random samples of the batch
(:func:`fisher_subset`; ``"mean"``: ``psi`` is their mean score) while ``g`` always uses the whole batch;
``"batch"`` then solves with the general Woodbury form.

*Entropy.* With ``ent_coef != 0`` the exact entropy gradient is preconditioned in every mode (``"batch"``
switches from the kernel form to the general Woodbury form for it). Distributions without a closed-form
entropy use ``-mean(log pi)``, whose gradient is folded into the kernel coefficients exactly.

Each function returns the preconditioner's step (:class:`~sb3_natgrad.optim.sherman_morrison.ShermanMorrison`
also sets the step size and the statistics) with the direction and its ``fisher_correction``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch as th
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_natgrad.common.gradients import flat_grad
from sb3_natgrad.optim.sherman_morrison import NaturalGradientStep, ShermanMorrison, kernel_weights, score_projections
from sb3_natgrad.smac.scores import ActorGram, index_obs, policy_scores


@dataclass
class NaturalDirection:
    """
    The natural direction of one actor update.

    :param step: the preconditioner's step size and statistics; ``skipped`` (with a ``reason``): leave the actor as it is
    :param direction: the flat direction ``d = F^-1 g`` (``None`` if skipped)
    :param fisher_correction: ``|lambda d - g| / |g|``, how far the step is from plain SGD (``None`` if skipped)
    """

    step: NaturalGradientStep
    direction: th.Tensor | None = None
    fisher_correction: float | None = None

    @classmethod
    def skipped(cls, reason: str) -> NaturalDirection:
        """A skipped update found before the preconditioner ran (which therefore does not count it)."""
        return cls(NaturalGradientStep(direction=None, step_size=0.0, skipped=True, reason=reason))

    @classmethod
    def from_step(
        cls, step: NaturalGradientStep, direction: th.Tensor | None, grad: th.Tensor, damping: float
    ) -> NaturalDirection:
        """
        :param step: the preconditioner's step
        :param direction: its direction ``d``, in the dtype of ``grad``
        :param grad: ``g``
        :param damping: ``lambda``
        :return: the direction with its ``fisher_correction`` (for a step that was not skipped)
        """
        if step.skipped or direction is None:
            return cls(step)
        correction = float(th.linalg.vector_norm(damping * direction - grad) / grad.norm().clamp_min(1e-30))
        return cls(step, direction, correction)


def fisher_subset(num: int, fisher_samples: int | None, device: th.device) -> th.Tensor | None:
    """
    :param num: the batch size ``M``
    :param fisher_samples: SMAC's ``fisher_samples`` ``k``
    :param device: the batch's device
    :return: the indices of ``k`` random samples of the batch that make the Fisher (``None``: the whole batch)
    """
    if fisher_samples is None or fisher_samples >= num:
        return None
    return th.randperm(num, device=device)[:fisher_samples]


def mean_fisher_direction(
    preconditioner: ShermanMorrison,
    objective: th.Tensor,
    fisher_log_prob: th.Tensor,
    params: Sequence[nn.Parameter],
    damping: float,
) -> NaturalDirection:
    """
    ``"mean"``: ``F = lambda I + psi psi^T``, ``psi`` the mean score of the Fisher's samples (Huo et al. 2026, §5.1).

    :param preconditioner: the ``"mean"`` preconditioner
    :param objective: the A2C objective of the batch (its graph is kept for the second backward pass)
    :param fisher_log_prob: ``log pi(a_i|s_i)`` of the Fisher's samples
    :param params: the actor parameters
    :param damping: ``lambda``
    """
    grad = flat_grad(objective, params, retain_graph=True)
    score = flat_grad(fisher_log_prob.mean(), params)
    step = preconditioner.compute(grad, score)
    return NaturalDirection.from_step(step, step.direction, grad, damping)


def sample_fisher_direction(
    preconditioner: ShermanMorrison,
    objective: th.Tensor,
    policy: ActorCriticPolicy,
    fisher_obs: PyTorchObs,
    fisher_actions: th.Tensor,
    params: Sequence[nn.Parameter],
    damping: float,
) -> NaturalDirection:
    """
    ``"sample"``: the WoodFisher recursion over the per-sample scores (Huo et al. 2026, §4.1, incremental
    Sherman–Morrison), in float64.

    :param preconditioner: the ``"sample"`` preconditioner
    :param objective: the A2C objective of the batch
    :param policy: the policy
    :param fisher_obs: the observations of the Fisher's samples
    :param fisher_actions: their actions
    :param params: the actor parameters
    :param damping: ``lambda``
    """
    grad = flat_grad(objective, params)
    scores = policy_scores(policy, fisher_obs, fisher_actions, params)
    step = preconditioner.compute(grad.double(), scores.double())
    direction = None if step.direction is None else step.direction.to(grad.dtype)
    return NaturalDirection.from_step(step, direction, grad, damping)


def batch_kernel_direction(
    preconditioner: ShermanMorrison,
    gram: ActorGram,
    distribution: Distribution,
    log_prob: th.Tensor,
    obs: PyTorchObs,
    actions: th.Tensor,
    advantages: th.Tensor,
    ent_coef: float,
    params: Sequence[nn.Parameter],
    damping: float,
) -> NaturalDirection:
    """
    ``"batch"``, kernel form (Woodbury identity): ``g = (1/M) U a``, so ``F^-1 g = U (K + M lambda I)^-1 a``.
    For a ``g`` that is such a combination only: the whole batch makes the Fisher, and the entropy term (if any)
    is ``-mean(log pi)``.

    :param preconditioner: the ``"batch"`` preconditioner
    :param gram: the actor's Gram matrix, recorded during the forward pass of ``distribution``
    :param distribution: the batch's action distribution
    :param log_prob: ``log pi(a_i|s_i)`` of the batch
    :param obs: the batch's observations
    :param actions: the batch's actions
    :param advantages: the advantages ``A_i`` of the objective
    :param ent_coef: the coefficient of the objective's ``-mean(log pi)`` entropy term (0: none)
    :param params: the actor parameters
    :param damping: ``lambda``
    """
    num = advantages.shape[0]
    coefficients = advantages.detach()
    if ent_coef != 0.0:
        coefficients = coefficients - ent_coef  # grad of -ent_coef * mean(log pi) = (1/M) U (-ent_coef)
    gram_matrix = gram.gram(distribution, log_prob, obs, actions)
    step = preconditioner.compute_kernel(gram_matrix, coefficients)
    if step.skipped:
        return NaturalDirection(step)
    assert step.weights is not None
    direction = flat_grad((step.weights.detach().to(log_prob.dtype) * log_prob).sum(), params)
    # |lambda d - g| / |g| from K alone: lambda d - g = U (lambda w - a / M).
    residual = damping * step.weights.double() - coefficients.double() / num
    gram64 = gram_matrix.double()
    correction_sq = float(residual @ gram64 @ residual)
    grad_sq = float(coefficients.double() @ gram64 @ coefficients.double()) / num**2
    return NaturalDirection(step, direction, math.sqrt(max(correction_sq, 0.0) / grad_sq) if grad_sq > 0 else 0.0)


def batch_woodbury_direction(
    preconditioner: ShermanMorrison,
    gram: ActorGram,
    objective: th.Tensor,
    distribution: Distribution,
    log_prob: th.Tensor,
    obs: PyTorchObs,
    actions: th.Tensor,
    subset: th.Tensor | None,
    params: Sequence[nn.Parameter],
    damping: float,
) -> NaturalDirection:
    """
    ``"batch"``, general Woodbury form for an arbitrary ``g`` (an exact entropy gradient, or a sub-sampled Fisher):
    ``F^-1 g = (g - U (K + k lambda I)^-1 U^T g) / lambda``, ``U^T g`` by double backward.

    :param preconditioner: the ``"batch"`` preconditioner
    :param gram: the actor's Gram matrix, recorded during the forward pass of ``distribution`` if ``subset`` is
        ``None`` (its policy makes the forward pass of the subset otherwise)
    :param objective: the A2C objective of the batch (its graph is kept)
    :param distribution: the batch's action distribution
    :param log_prob: ``log pi(a_i|s_i)`` of the batch
    :param obs: the batch's observations
    :param actions: the batch's actions
    :param subset: the Fisher's samples (:func:`fisher_subset`; ``None``: the whole batch), whose forward pass is
        recorded here
    :param params: the actor parameters
    :param damping: ``lambda``
    """
    grad = flat_grad(objective, params, retain_graph=True)
    if subset is None:
        fisher_dist, fisher_log_prob, fisher_obs, fisher_actions = distribution, log_prob, obs, actions
    else:
        fisher_obs, fisher_actions = index_obs(obs, subset), actions[subset]
        with gram.recording():
            fisher_dist = copy.copy(gram.policy.get_distribution(fisher_obs))
        fisher_log_prob = fisher_dist.log_prob(fisher_actions)
    gram_matrix = gram.gram(fisher_dist, fisher_log_prob, fisher_obs, fisher_actions)
    if not th.isfinite(grad).all() or not th.isfinite(gram_matrix).all():
        return NaturalDirection.skipped("non-finite gradient or Gram matrix")
    projections = score_projections(fisher_log_prob, params, grad)
    weights = kernel_weights(gram_matrix, projections, damping).detach()
    direction = (grad - flat_grad((weights * fisher_log_prob).sum(), params)) / damping
    step = preconditioner.step_from_direction(grad, direction)
    return NaturalDirection.from_step(step, step.direction, grad, damping)
