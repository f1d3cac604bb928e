"""
How KFRELAX trains its control variate ``c_phi`` on the variance of the RELAX / LAX estimate: the loss
(:func:`control_variate_loss`), and the optimizers and their step (:class:`ControlVariateTrainingMixin`, a base class
of :class:`~sb3_natgrad.kfrelax.KFRELAX`).

**Loss.** ``E[g_hat]`` does not depend on ``phi``, so ``d Var / d phi = d E||g_hat||^2 / d phi`` (Grathwohl et al.
2018, §3, eq. "vargrad"; :func:`~sb3_natgrad.kfrelax.control_variate.estimator_variance_loss`). KFRELAX minimises
``N * ||g_hat||^2`` with ``g_hat`` over all the actor's parameters, by double backprop (``cv_loss="exact"``), or the
cheaper per-sample logit-level PROXY ``N * sum_t ||d obj_t / d psi_t||^2`` over the distribution parameters
``psi_t`` (``cv_loss="proxy"``, :func:`~sb3_natgrad.kfrelax.control_variate.logit_proxy_variance_loss`: not the
variance of the parameter gradient). The factor ``N`` (the batch size) puts the loss on a per-sample scale, so K-FAC's
damping and trust region do not depend on the batch size (Adam is scale invariant). The entropy bonus and the value
loss of the policy update are not in it.

**Optimizers.** ``cv_optimizer="kfac"`` (KF-RELAX / KF-LAX, Firouzi 2018, Alg. 1-2; K-FAC, Martens & Grosse 2015)
preconditions the true gradient of the ``nn.Linear`` layers of ``c_phi`` with K-FAC factors of ``c_phi``'s own output
Fisher: the Gauss-Newton matrix of a unit-variance regressor over the ``2N`` inputs ``z``, ``z~`` (the ``N`` actions
for LAX; Wu et al. 2017, §3.1; :func:`~sb3_natgrad.kfrelax.control_variate.record_control_variate_fisher`), with
damping ``cv_damping``, trust region ``cv_kl_clip`` on the change of ``c_phi``'s outputs and momentum.
``cv_optimizer="adam"`` (plain RELAX / LAX, Grathwohl et al. 2018) uses Adam on the layers. Either way ``log tau`` and
the output scale are trained by Adam.
"""

from __future__ import annotations

import warnings

import torch as th
from torch import nn

from sb3_natgrad.kfrelax.control_variate import (
    ControlVariate,
    SurrogateTerms,
    estimator_variance_loss,
    logit_proxy_variance_loss,
    record_control_variate_fisher,
)
from sb3_natgrad.kfrelax.policies import KFRELAXPolicy, RelaxForward
from sb3_natgrad.kfrelax.relaxations import DiagGaussianReparameterization
from sb3_natgrad.optim import KFAC
from sb3_natgrad.optim.validation import all_finite

#: default step size of c_phi's optimizer (K-FAC's maximum step size, or Adam's learning rate)
DEFAULT_CV_LEARNING_RATE = {"kfac": 0.1, "adam": 1e-3}
#: Adam learning rate of log tau and the output scale with K-FAC (K-FAC step sizes are not Adam learning rates)
DEFAULT_KFAC_SCALAR_LEARNING_RATE = 1e-3


def control_variate_loss(
    objective: th.Tensor, actor_params: list[nn.Parameter], out: RelaxForward, cv_loss: str
) -> tuple[th.Tensor, list[th.Tensor]]:
    """
    The estimate ``g_hat = d objective / d theta`` and the control variate's loss, ``N * ||g_hat||^2`` or its proxy.

    :param objective: ``mean_t(obj_t)``, the batch mean of the per-sample surrogate
    :param actor_params: the actor's parameters ``theta``
    :param out: the policy's training forward pass (the distribution parameters, for the proxy)
    :param cv_loss: ``"exact"`` or ``"proxy"``
    :return: the loss (differentiable in ``phi``) and ``g_hat``, one tensor per parameter
    """
    if cv_loss == "exact":
        variance_loss, g_hat = estimator_variance_loss(objective, actor_params)
    else:
        grads = th.autograd.grad(objective, actor_params, retain_graph=True, allow_unused=True)
        g_hat = [th.zeros_like(p) if g is None else g for p, g in zip(actor_params, grads)]
        dist_params = [out.params] if out.log_std is None else [out.params, out.log_std]
        variance_loss = logit_proxy_variance_loss(objective, dist_params)
    return out.params.shape[0] * variance_loss, g_hat


class ControlVariateTrainingMixin:
    """
    The control variate's part of :class:`~sb3_natgrad.kfrelax.KFRELAX`, whose policy owns ``c_phi``: the optimizers
    of ``c_phi``, built from the ``cv_*`` arguments by :meth:`_setup_control_variate` and saved with the model, their
    step (:meth:`_cv_step`) and the logged values of ``c_phi``.
    """

    policy: KFRELAXPolicy
    cv_optimizer: str
    cv_loss: str
    cv_learning_rate: float | None
    cv_scalar_learning_rate: float | None
    cv_damping: float
    cv_kl_clip: float
    cv_momentum: float
    cv_stat_decay: float
    cv_inverse_interval: int
    cv_net_optimizer: th.optim.Optimizer
    cv_scalar_optimizer: th.optim.Adam
    #: control-variate updates skipped for a non-finite gradient (the policy update itself may still be taken)
    cv_skipped_updates: int = 0

    @property
    def control_variate(self) -> ControlVariate:
        """The control variate ``c_phi`` (a module of the policy)."""
        return self.policy.control_variate

    @property
    def resolved_cv_learning_rate(self) -> float:
        """``cv_learning_rate``, or its default for ``cv_optimizer``."""
        return DEFAULT_CV_LEARNING_RATE[self.cv_optimizer] if self.cv_learning_rate is None else self.cv_learning_rate

    @property
    def resolved_cv_scalar_learning_rate(self) -> float:
        """``cv_scalar_learning_rate``, or its default for ``cv_optimizer``."""
        if self.cv_scalar_learning_rate is not None:
            return self.cv_scalar_learning_rate
        return self.resolved_cv_learning_rate if self.cv_optimizer == "adam" else DEFAULT_KFAC_SCALAR_LEARNING_RATE

    @property
    def kfac(self) -> KFAC | None:
        """The K-FAC optimizer of the control variate (``None`` with ``cv_optimizer="adam"``)."""
        return self.cv_net_optimizer if isinstance(self.cv_net_optimizer, KFAC) else None

    def _setup_control_variate(self) -> None:
        """Build ``c_phi``'s optimizers (once the policy is built): K-FAC or Adam on its layers, Adam on its scalars."""
        cv = self.control_variate
        lr = self.resolved_cv_learning_rate
        if self.cv_optimizer == "kfac":
            self.cv_net_optimizer = KFAC(
                cv.kfac_module(),
                lr=lr,
                momentum=self.cv_momentum,
                damping=self.cv_damping,
                kl_clip=self.cv_kl_clip,
                stat_decay=self.cv_stat_decay,
                stats_interval=1,
                inverse_interval=self.cv_inverse_interval,
            )
        else:
            self.cv_net_optimizer = th.optim.Adam(cv.kfac_module().parameters(), lr=lr)
        self.cv_scalar_optimizer = th.optim.Adam(cv.first_order_parameters(), lr=self.resolved_cv_scalar_learning_rate)

    def _cv_step(
        self,
        cv_params: list[nn.Parameter],
        cv_grads: tuple[th.Tensor | None, ...],
        terms: SurrogateTerms | None,
        cv_obs: th.Tensor | None,
    ) -> None:
        """
        One step of ``c_phi``'s optimizers with the gradient of its loss; a gradient that is not finite changes nothing
        and is counted in :attr:`cv_skipped_updates`.

        :param cv_params: the parameters ``phi`` that ``cv_grads`` belong to
        :param cv_grads: ``d loss / d phi`` (``None`` for a parameter the loss does not reach)
        :param terms: the surrogate's parts (their inputs ``z``, ``z~`` give K-FAC's statistics)
        :param cv_obs: ``c_phi``'s state input
        """
        grads = [th.zeros_like(p) if g is None else g.detach() for p, g in zip(cv_params, cv_grads)]
        if not all_finite(grads):
            # KFAC would skip by itself, but the scalars' Adam would not: skip both (before recording statistics).
            self.cv_skipped_updates += 1
            warnings.warn(
                f"{type(self).__name__}: non-finite control-variate gradient, the control variate was not updated",
                RuntimeWarning,
            )
            return
        kfac = self.kfac
        if kfac is not None:
            assert terms is not None
            # Gauss-Newton statistics of c_phi (a unit-variance regressor) on its 2N inputs z, z~ (the N actions for LAX).
            lax = isinstance(self.policy.relaxation, DiagGaussianReparameterization)
            z_tilde = terms.z_tilde[:0] if lax else terms.z_tilde
            record_control_variate_fisher(kfac, self.control_variate, terms.z, z_tilde, obs=cv_obs)
        grad_of = {id(p): g for p, g in zip(cv_params, grads)}
        for optimizer in (self.cv_net_optimizer, self.cv_scalar_optimizer):
            optimizer.zero_grad(set_to_none=True)
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = grad_of.get(id(p), th.zeros_like(p)).clone()
            optimizer.step()

    def _control_variate_logs(self, cv_loss: th.Tensor) -> dict[str, float]:
        """
        The logged values of ``c_phi``: its loss, its output scale, its temperature (discrete spaces), its skipped
        updates and K-FAC's step size and counters.

        :param cv_loss: this update's loss of ``c_phi``
        :return: values by ``train/`` key
        """
        logged = {"cv_loss": cv_loss.detach().item(), "cv_scale": self.control_variate.scale.detach().item()}
        temperature = self.control_variate.temperature
        if temperature is not None:
            logged["temperature"] = temperature.detach().item()
        logged["cv_skipped_updates"] = self.cv_skipped_updates
        kfac = self.kfac
        if kfac is not None:
            logged.update(
                cv_step_size=kfac.last_step_info.get("step_size", 0.0),
                cv_kfac_skipped_updates=kfac.counters["skipped_steps"],
                cv_kfac_inverse_fallbacks=kfac.counters["inverse_fallbacks"],
            )
        return logged
