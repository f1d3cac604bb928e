"""
The learned control variate ``c_phi(s, relaxed action)`` of RELAX / LAX and the estimator / variance-loss helpers.

References: Grathwohl et al. 2018 (RELAX; §3 eq. "vargrad", Alg. 1-2, App. C, App. E), Firouzi 2018
(KF-LAX / KF-RELAX; §3, §4.2.1, Alg. 1-2), the released RELAX RL code (wgrathwohl/BackpropThroughTheVoidRL
``baselines/a2c/a2c.py`` and ``baselines/a2c/policies.py``), Wu et al. 2017, §3.1 (Gauss-Newton curvature of a
Gaussian-output regressor, used for the K-FAC statistics of ``c_phi``).

Sign convention: the *objective* built here is maximised (``f`` is a return or an advantage); its
gradient with respect to the policy parameters ``theta`` is the ascent direction ``g_hat``. With a
minimising optimizer set ``theta.grad = -g_hat``.

**Surrogate objective (RELAX, discrete actions).** Per sample ``t`` (RELAX App. C, second theorem;
Firouzi 2018, §4.2.1)::

    obj_t = (f_t - c_phi(s_t, z~_t^coef)) * log pi(b_t | s_t) + c_phi(s_t, z_t) - c_phi(s_t, z~_t)

* ``z_t = z(theta, u_t)`` and ``z~_t = z~(theta, b_t, v_t)`` carry their ``theta``-dependence, so
  ``d/dtheta`` of the last two terms is ``grad c_phi(z_t) - grad c_phi(z~_t)`` (both reparameterised).
* ``z~_t^coef`` is ``z~_t.detach()``: the coefficient ``c_phi(z~_t)`` of the score is a constant for
  ``theta`` (otherwise ``d obj / d theta`` would pick up ``log pi * grad c_phi(z~)``), but it is a full
  function of ``phi`` (weights, output scale and temperature), so the double-backprop gradient of the
  variance loss sees ``phi`` in every place it appears: the coefficient *and* both reparameterisation
  terms. It costs one extra forward of ``c_phi``.
* ``f_t`` is a constant (detached).

Then ``d/dtheta mean_t obj_t = (1/N) sum_t g_hat_t`` with
``g_hat_t = grad log pi(b_t|s_t) [f_t - c_phi(z~_t, s_t)] - grad c_phi(z~_t, s_t) + grad c_phi(z_t, s_t)``
(``reduction="sum"`` drops the ``1/N``; the released RELAX code sums over time steps).

**Surrogate objective (LAX, Gaussian actions).** RELAX App. C, first theorem::

    obj_t = (f_t - c_phi(s_t, a_t.detach())) * log pi(a_t | s_t) + c_phi(s_t, a_t(theta, eps_t))

where ``a_t(theta, eps_t) = mu_theta(s_t) + sigma_theta * eps_t`` is rebuilt from the rollout's noise
and ``log pi(a_t|s_t)`` is evaluated at the *detached* stored action (a score, not a pathwise term).

**Variance loss.** ``E[g_hat]`` does not depend on ``phi``, so ``d Var(g_hat) / d phi = d E||g_hat||^2 / d phi``
(RELAX eq. "vargrad"): the single-batch loss is ``L(phi) = ||g_hat||^2``, the squared norm of the
``theta``-gradient of the objective over ALL policy parameters (as in BackpropThroughTheVoidRL
``baselines/a2c/a2c.py``), built with ``create_graph=True`` and differentiated in ``phi`` by double backprop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from sb3_natgrad.kfrelax.relaxations import DiagGaussianReparameterization, DiscreteRelaxation, Relaxation

if TYPE_CHECKING:
    from sb3_natgrad.optim.kfac import KFAC

REDUCTIONS = ("mean", "sum", "none")


class ControlVariate(nn.Module):
    """
    Control variate ``c_phi(s, y) = scale * MLP([s, y])`` with ``y = relax(z, tau)`` (RELAX §3, App. E).

    ``phi`` = the MLP weights (plain ``nn.Linear`` layers in :attr:`net`, so :class:`~sb3_natgrad.optim.KFAC`
    can cover them), a learned ``log tau`` (init 0, i.e. ``tau = 1``; only for discrete relaxations) and
    a learned output ``scale`` (init 1), as ``vf_log_temp`` and ``vf_scale`` in the released RELAX code
    (wgrathwohl/BackpropThroughTheVoidRL ``baselines/a2c/policies.py``). The temperature and the scale are plain
    first-order parameters (:meth:`first_order_parameters`); build K-FAC on :attr:`net` only (:meth:`kfac_module`).

    Defaults: two hidden layers of 64 ELU units. The RELAX experiments used 10-10 ReLU (discrete) and
    64-64 ELU (continuous); a smooth activation is preferable because the estimator contains
    ``d c_phi / d z`` and the variance loss differentiates it again in ``phi`` (with ReLU ``d c/d z`` is
    piecewise constant). KF-RELAX (Firouzi 2018, §6) reports that more than three layers increased the
    estimator variance.

    :param obs_dim: width of the (already extracted / flattened) observation features; 0 for none
    :param relaxation: the action space's :class:`~sb3_natgrad.kfrelax.relaxations.Relaxation`
    :param net_arch: hidden layer widths
    :param activation_fn: activation class of the hidden layers
    :param ortho_init: orthogonal initialisation (gain ``sqrt(2)`` for hidden layers, ``output_gain`` for
        the output layer, zero biases) as in Stable-Baselines3; ``False`` keeps PyTorch's default init
    :param output_gain: gain of the output layer's orthogonal init; ``0.0`` makes ``c_phi = 0`` at
        initialisation, so the estimator starts as plain REINFORCE (only with ``ortho_init``)
    :param init_log_temperature: initial ``log tau``
    :param init_scale: initial output scale
    """

    def __init__(
        self,
        obs_dim: int,
        relaxation: Relaxation,
        net_arch: Sequence[int] = (64, 64),
        activation_fn: type[nn.Module] = nn.ELU,
        ortho_init: bool = True,
        output_gain: float = 1.0,
        init_log_temperature: float = 0.0,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if obs_dim < 0:
            raise ValueError(f"obs_dim must be >= 0, got {obs_dim}")
        self.obs_dim = int(obs_dim)
        self.relaxation = relaxation
        layers: list[nn.Module] = []
        last = self.obs_dim + relaxation.relaxed_dim
        for width in net_arch:
            layers += [nn.Linear(last, int(width)), activation_fn()]
            last = int(width)
        layers.append(nn.Linear(last, 1))
        self.net = nn.Sequential(*layers)
        if ortho_init:
            linears = [m for m in self.net if isinstance(m, nn.Linear)]
            for i, layer in enumerate(linears):
                gain = output_gain if i == len(linears) - 1 else 2**0.5
                nn.init.orthogonal_(layer.weight, gain=gain)
                nn.init.zeros_(layer.bias)
        self.log_temperature: nn.Parameter | None
        if relaxation.uses_temperature:
            self.log_temperature = nn.Parameter(torch.tensor(float(init_log_temperature)))
        else:
            self.register_parameter("log_temperature", None)
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))

    @property
    def temperature(self) -> torch.Tensor | None:
        """``tau = exp(log tau)`` (``None`` for Gaussian/LAX inputs, which are not relaxed)."""
        return None if self.log_temperature is None else torch.exp(self.log_temperature)

    def relax(self, z: torch.Tensor) -> torch.Tensor:
        """
        The relaxed action ``softmax(z / tau)`` / ``sigmoid(z / tau)`` (the action itself for LAX).

        :param z: ``[..., noise_dim]``
        :return: ``[..., relaxed_dim]``
        """
        return self.relaxation.relax(z, self.temperature)

    def forward(self, obs: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
        """
        ``c_phi(s, relax(z))``.

        :param obs: observation features ``[N, obs_dim]`` (or ``None`` when ``obs_dim == 0``)
        :param z: the reparameterised variable ``z`` / ``z~`` (discrete) or the action ``a(theta, eps)``
            (Gaussian), ``[N, noise_dim]``
        :return: ``[N]``
        """
        relaxed = self.relax(z)
        if self.obs_dim > 0:
            if obs is None:
                raise ValueError("this control variate takes observation features (obs_dim > 0), got obs=None")
            inputs = torch.cat([obs.reshape(obs.shape[0], -1).to(relaxed.dtype), relaxed], dim=-1)
        else:
            inputs = relaxed
        return self.net(inputs).squeeze(-1) * self.scale

    def kfac_module(self) -> nn.Module:
        """The sub-module whose ``nn.Linear`` layers K-FAC should cover: ``KFAC(cv.kfac_module(), ...)``."""
        return self.net

    def first_order_parameters(self) -> list[nn.Parameter]:
        """``log tau`` (if any) and the output scale: to be updated with a first-order optimizer (e.g. Adam)."""
        return [p for p in (self.log_temperature, self.scale) if p is not None]


# --------------------------------------------------------------------------- surrogate objective


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def relax_objective(
    log_prob: torch.Tensor,
    returns: torch.Tensor,
    c_z: torch.Tensor,
    c_z_tilde: torch.Tensor,
    c_coef: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """
    RELAX surrogate whose ``theta``-gradient is the RELAX estimate (module docstring; RELAX App. C).

    ``obj = reduce_t[(f_t - c_coef_t) * log pi_t + c_z_t - c_z~_t]``.

    :param log_prob: ``log pi(b_t | s_t)`` ``[N]`` (differentiable in ``theta``)
    :param returns: ``f_t`` ``[N]`` (returns or advantages; detached here)
    :param c_z: ``c_phi(s_t, z_t(theta))`` ``[N]``
    :param c_z_tilde: ``c_phi(s_t, z~_t(theta))`` ``[N]``
    :param c_coef: ``c_phi(s_t, z~_t.detach())`` ``[N]`` — constant in ``theta``, differentiable in ``phi``
    :param reduction: ``"mean"`` or ``"sum"`` over samples, or ``"none"`` (per sample)
    :return: the objective (to be maximised): a scalar, or ``[N]`` with ``reduction="none"``
    """
    per_sample = (returns.detach() - c_coef) * log_prob + c_z - c_z_tilde
    return _reduce(per_sample, reduction)


def lax_objective(
    log_prob: torch.Tensor,
    returns: torch.Tensor,
    c_action: torch.Tensor,
    c_coef: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """
    LAX surrogate whose ``theta``-gradient is the LAX estimate (RELAX App. C first theorem; Firouzi 2018, Alg. 1).

    ``obj = reduce_t[(f_t - c_coef_t) * log pi(a_t|s_t) + c_action_t]``.

    :param log_prob: ``log pi(a_t | s_t)`` at the *detached* stored action ``[N]``
    :param returns: ``f_t`` ``[N]`` (detached here)
    :param c_action: ``c_phi(s_t, a_t(theta, eps_t))`` ``[N]`` (reparameterised action)
    :param c_coef: ``c_phi(s_t, a_t.detach())`` ``[N]``
    :param reduction: ``"mean"`` or ``"sum"`` over samples, or ``"none"`` (per sample)
    :return: the objective (to be maximised): a scalar, or ``[N]`` with ``reduction="none"``
    """
    per_sample = (returns.detach() - c_coef) * log_prob + c_action
    return _reduce(per_sample, reduction)


@dataclass
class SurrogateTerms:
    """
    Everything :func:`relax_surrogate` / :func:`lax_surrogate` computed.

    ``z`` / ``z_tilde`` are the reparameterised inputs (for LAX both are the action ``a(theta, eps)``);
    pass them to :func:`record_control_variate_fisher`.
    """

    objective: torch.Tensor
    log_prob: torch.Tensor
    c_z: torch.Tensor
    c_z_tilde: torch.Tensor
    c_coef: torch.Tensor
    z: torch.Tensor
    z_tilde: torch.Tensor


def relax_surrogate(
    control_variate: ControlVariate,
    relaxation: DiscreteRelaxation,
    params: torch.Tensor,
    actions: torch.Tensor,
    returns: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    obs: torch.Tensor | None = None,
    log_prob: torch.Tensor | None = None,
    reduction: str = "mean",
) -> SurrogateTerms:
    """
    Build the RELAX surrogate for a batch of discrete actions (RELAX App. C, second theorem).

    ``z = z(theta, u)`` with the stored acting noise ``u`` (so ``H(z) = b`` when ``theta`` is the acting
    policy), ``z~ = z~(theta, b, v)``, then three forwards of ``c_phi``: at ``z``, at ``z~`` and at
    ``z~.detach()`` (the score coefficient). Checks ``H(z) == b`` is the caller's job (on-policy data).

    :param control_variate: ``c_phi``
    :param relaxation: the action space's discrete relaxation
    :param params: policy logits ``[N, noise_dim]`` (differentiable in ``theta``)
    :param actions: the actions ``b`` taken
    :param returns: ``f_t`` ``[N]``
    :param u: the noise that produced ``b`` ``[N, noise_dim]``
    :param v: fresh uniform noise for ``z~`` ``[N, noise_dim]``
    :param obs: observation features ``[N, obs_dim]`` for ``c_phi`` (detached here)
    :param log_prob: ``log pi(b|s)`` ``[N]`` if already computed by the policy's distribution; by default
        ``relaxation.log_prob(params, actions)``
    :param reduction: ``"mean"`` or ``"sum"`` over samples
    :return: the objective and its parts
    """
    obs = None if obs is None else obs.detach()
    z = relaxation.z(params, u)
    z_tilde = relaxation.conditional_z(params, actions, v)
    if log_prob is None:
        log_prob = relaxation.log_prob(params, actions)
    c_z = control_variate(obs, z)
    c_z_tilde = control_variate(obs, z_tilde)
    c_coef = control_variate(obs, z_tilde.detach())
    objective = relax_objective(log_prob, returns, c_z, c_z_tilde, c_coef, reduction)
    return SurrogateTerms(objective, log_prob, c_z, c_z_tilde, c_coef, z, z_tilde)


# same shape as relax_surrogate's signature: other inputs (Gaussian mean, log-std, eps; no actions, no v)
def lax_surrogate(
    control_variate: ControlVariate,
    relaxation: DiagGaussianReparameterization,
    mean: torch.Tensor,
    log_std: torch.Tensor,
    noise: torch.Tensor,
    returns: torch.Tensor,
    obs: torch.Tensor | None = None,
    log_prob: torch.Tensor | None = None,
    reduction: str = "mean",
) -> SurrogateTerms:
    """
    Build the LAX surrogate for a batch of Gaussian actions.

    ``a(theta, eps) = mu + sigma * eps`` with the rollout's noise; ``c_phi`` is evaluated at it (pathwise
    term) and at its detached copy (score coefficient); ``log pi`` is evaluated at the detached action.

    :param control_variate: ``c_phi`` (built with a :class:`DiagGaussianReparameterization`)
    :param relaxation: the Gaussian reparameterisation
    :param mean: ``mu_theta(s)`` ``[N, d]``
    :param log_std: ``log sigma_theta``, broadcastable to ``mean``
    :param noise: the stored noise ``eps`` ``[N, d]`` (or :meth:`~DiagGaussianReparameterization.noise_from_action`)
    :param returns: ``f_t`` ``[N]``
    :param obs: observation features ``[N, obs_dim]`` (detached here)
    :param log_prob: ``log pi(a|s)`` ``[N]`` at the detached action, if already computed
    :param reduction: ``"mean"`` or ``"sum"`` over samples
    :return: the objective and its parts (``z`` and ``z_tilde`` are both the action)
    """
    obs = None if obs is None else obs.detach()
    action = relaxation.action_from_noise(mean, log_std, noise)
    if log_prob is None:
        log_prob = relaxation.log_prob(mean, log_std, action.detach())
    c_action = control_variate(obs, action)
    c_coef = control_variate(obs, action.detach())
    objective = lax_objective(log_prob, returns, c_action, c_coef, reduction)
    return SurrogateTerms(objective, log_prob, c_action, c_action, c_coef, action, action)


# --------------------------------------------------------------------------------- variance loss


def estimator_variance_loss(
    objective: torch.Tensor, policy_params: Iterable[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """
    ``L(phi) = ||g_hat||^2`` over all policy parameters, with ``g_hat = d objective / d theta`` (RELAX eq. "vargrad").

    ``g_hat`` is built with ``create_graph=True``, so ``L`` is differentiable in ``phi`` (double
    backprop) through the score coefficient and both reparameterisation terms. Take the ``phi``-gradient
    with ``torch.autograd.grad(L, phi)`` or ``L.backward(inputs=phi)`` (a plain ``L.backward()`` would
    also write ``theta.grad``). Use ``[g.detach() for g in grads]`` for the policy update.

    Scale: with ``reduction="mean"`` the loss is ``||sum_t g_hat_t||^2 / N^2``; Adam is invariant to this,
    K-FAC's damping and trust region are not.

    :param objective: scalar surrogate from :func:`relax_objective` / :func:`lax_objective`
    :param policy_params: the policy parameters ``theta`` (all of them that the estimate should cover)
    :return: the loss and the (graph-carrying) estimate ``g_hat``, one tensor per parameter
    """
    params = list(policy_params)
    grads = torch.autograd.grad(objective, params, create_graph=True, allow_unused=True)
    grads_list = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
    loss = sum((g.pow(2).sum() for g in grads_list), start=objective.new_zeros(()))
    return loss, grads_list


def logit_proxy_variance_loss(objective: torch.Tensor, dist_params: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """
    Cheaper PROXY of the variance loss: ``sum_t ||d obj_t / d psi_t||^2`` for the per-sample distribution parameters ``psi_t``.

    ``psi_t`` are the logits (or the mean and an expanded per-sample log-std) of sample ``t``, i.e. tensors
    ``[N, ...]`` on the graph between ``theta`` and the objective, where row ``t`` influences only
    ``obj_t``; then the gradient of the reduced objective with respect to them holds the per-sample
    output-level estimates (scaled by ``1/N`` for ``reduction="mean"``). This is NOT the variance of the
    parameter-gradient estimate: it ignores the Jacobian ``d psi / d theta`` and the covariances between
    samples (it equals the true loss only when ``theta`` is a free per-sample table of distribution
    parameters). The same idea appears in some public RELAX code (HEmile/storchastic ``storch/method/relax.py``;
    the ``mujoco`` branch of wgrathwohl/BackpropThroughTheVoidRL); it avoids back-propagating through the policy
    network twice.

    A log-std shared across the batch must be expanded to ``[N, d]`` (``log_std.expand_as(mean)``) *before*
    it is used, and that expanded tensor passed here; otherwise its gradient is summed over samples.

    :param objective: scalar surrogate
    :param dist_params: per-sample distribution parameter tensor(s) used to build ``objective``
    :return: the proxy loss, differentiable in ``phi``
    """
    tensors = [dist_params] if isinstance(dist_params, torch.Tensor) else list(dist_params)
    grads = torch.autograd.grad(objective, tensors, create_graph=True)
    return sum((g.pow(2).sum() for g in grads), start=objective.new_zeros(()))


# ------------------------------------------------------------------------------- K-FAC statistics


def record_control_variate_fisher(
    kfac: KFAC,
    control_variate: ControlVariate,
    z: torch.Tensor,
    z_tilde: torch.Tensor,
    obs: torch.Tensor | None = None,
) -> bool:
    """
    Record K-FAC Gauss-Newton statistics of ``c_phi`` itself (the Gaussian-output Fisher that Wu et al. 2017, §3.1
    use for the critic).

    ``c_phi`` is treated as a unit-variance Gaussian regressor: for every evaluation row ``r`` (the
    ``N`` inputs ``z`` and the ``N`` inputs ``z~``, ``2N`` rows) ``A_l = mean_r a~ a~^T`` and
    ``G_l = mean_r delta delta^T`` with ``delta = d c_phi / d s_l`` (``c_phi`` has a scalar output, so the
    per-row ``delta`` is exact and no sampling is needed). One train-mode forward of ``c_phi`` on the
    concatenated, detached inputs records ``a~``; ``kfac.record_fisher(sum of outputs, batch_averaged=False)``
    back-propagates to the recorded layer outputs only (no weight gradients). These factors
    precondition the TRUE variance-loss gradient (from double backprop): hooks on the variance-loss
    backward would only see its forward-path part.

    ``kfac`` must have been built on ``control_variate.kfac_module()`` (or on the whole control variate).
    Other train-mode forwards of ``c_phi`` in the same step (the estimator's) are recorded by the hooks
    too, but they do not reach this loss, so ``record_fisher`` drops them.

    :param kfac: the K-FAC optimizer of ``c_phi``
    :param control_variate: ``c_phi``
    :param z: the ``z`` inputs of the estimator ``[N, noise_dim]`` (detached here)
    :param z_tilde: the ``z~`` inputs ``[N, noise_dim]`` (detached here); for LAX pass the action twice
        or use ``z_tilde=z[:0]`` to record only ``N`` rows
    :param obs: observation features ``[N, obs_dim]``
    :return: whether statistics were recorded (``False`` when ``kfac.stats_due`` is ``False``)
    """
    if not kfac.stats_due:
        return False
    was_training = control_variate.training
    control_variate.train()
    try:
        with torch.enable_grad():
            inputs = torch.cat([z.detach(), z_tilde.detach()], dim=0)
            obs_rows = None
            if obs is not None:
                obs_rows = torch.cat([obs.detach(), obs.detach()[: z_tilde.shape[0]]], dim=0)
            outputs = control_variate(obs_rows, inputs)
            kfac.record_fisher(outputs.sum(), batch_averaged=False)
    finally:
        control_variate.train(was_training)
    return True
