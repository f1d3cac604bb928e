"""KFRELAX: RELAX / LAX policy gradients with a K-FAC-trained control variate (Firouzi 2018; RELAX, Grathwohl et al. 2018)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ClassVar, cast

import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from torch import nn
from torch.nn import functional as F

from sb3_natgrad.common.checks import ArgumentCheck
from sb3_natgrad.common.distributions import mean_entropy
from sb3_natgrad.common.on_policy import NaturalGradientAlgorithm, own_arguments
from sb3_natgrad.kfrelax.buffers import NoisyDictRolloutBuffer, NoisyRolloutBuffer, NoisyRolloutBufferSamples
from sb3_natgrad.kfrelax.checks import ARGUMENT_CHECKS, check_noise_arguments, check_policy_class
from sb3_natgrad.kfrelax.control_variate import SurrogateTerms
from sb3_natgrad.kfrelax.control_variate_training import ControlVariateTrainingMixin, control_variate_loss
from sb3_natgrad.kfrelax.estimator import (
    ACTION_MISMATCH_TOLERANCE,
    action_mismatch,
    grad_variance,
    per_sample_objective,
    relaxation_actions,
    set_policy_gradient,
)
from sb3_natgrad.kfrelax.policies import (
    KFRELAXCnnPolicy,
    KFRELAXMinAtarPolicy,
    KFRELAXMultiInputPolicy,
    KFRELAXPolicy,
    RelaxForward,
)
from sb3_natgrad.optim.validation import all_finite


class KFRELAX(ControlVariateTrainingMixin, NaturalGradientAlgorithm):
    """
    KFRELAX: RELAX (discrete actions) / LAX (Box actions) policy gradients whose control variate ``c_phi`` is trained by
    K-FAC on the estimator's variance (KF-RELAX / KF-LAX, Firouzi 2018, Alg. 1-2), or by Adam
    (``cv_optimizer="adam"``: plain RELAX / LAX, Grathwohl et al. 2018, Alg. 1-2).

    Papers: https://arxiv.org/abs/1812.04181 (KF-LAX), https://arxiv.org/abs/1711.00123 (RELAX).

    **Strictly on-policy**: exactly one update per rollout, on the whole batch (``N = n_steps * n_envs``); a second
    ``train()`` on the same rollout is refused. The policy acts through noise that the rollout buffer stores
    (:class:`~sb3_natgrad.kfrelax.policies.KFRELAXPolicy`), and the update rebuilds each action from it: the share of
    samples where it does not is logged (``train/action_mismatch``, 0 on on-policy data up to floating-point ties);
    above 1% the data are not on-policy and the update is skipped with a warning (:mod:`~sb3_natgrad.kfrelax.estimator`).

    **Update** (one per rollout, :meth:`train`):

    1. ``f_t`` (``target``): the GAE(``gae_lambda``) advantage of the learned value ``V`` (default: ``c_phi`` then only
       models the action-dependent residual ``c^`` of ``c = V + c^``, RELAX App. C) or the ``gae_lambda``-return (the
       paper's discrete setting, no value baseline in the estimator; with ``gae_lambda=1`` the discounted return-to-go,
       bootstrapped with ``V`` at the rollout cut and at time limits).
    2. The RELAX / LAX estimate ``g_hat = d mean_t(obj_t) / d theta`` over the actor's parameters, ``obj_t`` the
       per-sample surrogate (RELAX App. C; Firouzi 2018, §4.2.1; :mod:`~sb3_natgrad.kfrelax.estimator`).
    3. The control variate's loss ``N * ||g_hat||^2`` (RELAX §3, eq. "vargrad"; ``cv_loss="exact"``, by double
       backprop) or a logit-level proxy (``cv_loss="proxy"``): :mod:`~sb3_natgrad.kfrelax.control_variate_training`.
    4. Policy: ``theta.grad = -g_hat - ent_coef * d entropy / d theta + vf_coef * d mean((R - V)^2) / d theta`` (the
       entropy bonus and the value loss are NOT in the variance loss), optional global gradient-norm clip
       ``max_grad_norm``, then a step of the policy's optimizer (any SB3 ``optimizer_class``; Adam by default, as the
       RELAX code). Capped update (Firouzi 2018, §4.2.1, "parameter updates capped at an upper bound"): while the exact
       batch-mean ``KL(pi_old || pi_new)`` exceeds ``max_kl``, the actor's part of the update is shrunk (the rule
       shared with SMAC and ACKTR, :meth:`~sb3_natgrad.common.on_policy.NaturalGradientAlgorithm._backtrack_to_kl`,
       at least halving each time, at most 10 times). A policy that is still not finite is reverted and the update
       counted in ``train/skipped_updates``.
    5. Control variate: a step of K-FAC (``cv_optimizer="kfac"``, damping ``cv_damping``, trust region ``cv_kl_clip``)
       or of Adam on ``c_phi``'s layers, and of Adam on its temperature and output scale.

    Logged besides A2C's keys: ``train/cv_loss``, ``train/grad_variance`` and ``train/grad_variance_no_cv`` (on updates
    whose logs are written; :func:`~sb3_natgrad.kfrelax.estimator.grad_variance`), ``train/temperature``,
    ``train/cv_scale``, ``train/kl`` (exact, on logged updates or always with ``max_kl``), ``train/update_scale``,
    ``train/action_mismatch`` and the K-FAC counters.

    **Defaults.** ``ent_coef=0.01``, ``gamma=0.99`` and Adam for the policy: RELAX App. E and KF-RELAX §4.2.1;
    ``vf_coef``, ``max_grad_norm``, ``gae_lambda``: SB3's A2C; ``learning_rate``, ``n_steps``, ``max_kl``: tuned on
    CartPole-v1; ``c_phi``: 64-64 ELU with a zero output layer (the estimator starts as A2C's); K-FAC on ``c_phi``
    with strong damping (``cv_damping=1``, ``cv_kl_clip=1e-3``). Sources and the studies behind them:
    ``benchmarks/results/kfrelax/defaults.md``.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a :class:`KFRELAXPolicy` subclass
    :param learning_rate: learning rate of the policy's (actor + critic) optimizer; float or schedule
    :param n_steps: steps per environment per update (batch ``N = n_steps * n_envs``)
    :param gae_lambda: GAE lambda (also the lambda of the ``"return"`` target)
    :param ent_coef: entropy bonus coefficient (RELAX / KF-RELAX experiments: 0.01)
    :param vf_coef: value loss coefficient on ``mean((R - V)^2)``
    :param max_grad_norm: global norm clip of the policy gradient (``None``: no clipping)
    :param max_kl: cap on the exact batch-mean ``KL(pi_old || pi_new)`` of one update (``None``: no cap)
    :param target: ``"advantage"`` or ``"return"``: the ``f_t`` of the estimator
    :param normalize_advantage: standardise ``f_t`` over the batch (also with ``target="return"``)
    :param cv_optimizer: ``"kfac"`` (KF-RELAX) or ``"adam"`` (RELAX)
    :param cv_loss: ``"exact"`` (double backprop) or ``"proxy"`` (logit-level proxy)
    :param cv_learning_rate: step size of ``c_phi``'s optimizer: K-FAC's maximum step size or Adam's learning rate
        (``None``: 0.1 for K-FAC, 1e-3 for Adam)
    :param cv_scalar_learning_rate: Adam learning rate of ``log tau`` and the output scale (``None``:
        ``cv_learning_rate`` with Adam, 1e-3 with K-FAC)
    :param cv_damping: K-FAC Tikhonov damping of ``c_phi`` (KF-RELAX grid: 0.1 to 5e-4; see the defaults above)
    :param cv_kl_clip: K-FAC trust region of ``c_phi`` (bound on ``lr^2 g^T F^-1 g``: the mean squared change of
        ``c_phi``'s outputs, in units of ``f^2``)
    :param cv_momentum: K-FAC momentum
    :param cv_stat_decay: EMA decay of ``c_phi``'s Kronecker factors
    :param cv_inverse_interval: recompute the factor decompositions every this many updates
    :param use_sde: not supported (must be ``False``)
    :param rollout_buffer_class: a noise-storing buffer (default: :class:`NoisyRolloutBuffer` /
        :class:`NoisyDictRolloutBuffer` from the observation space)
    :param policy_kwargs: keyword arguments of the policy (``cv_net_arch``, ``cv_activation_fn``, ``cv_output_gain``,
        ``cv_input``, ... for ``c_phi``; see :class:`KFRELAXPolicy`)
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": KFRELAXPolicy,
        "CnnPolicy": KFRELAXCnnPolicy,
        "MultiInputPolicy": KFRELAXMultiInputPolicy,
        "MinAtarPolicy": KFRELAXMinAtarPolicy,
    }
    argument_checks: ClassVar[dict[str, ArgumentCheck]] = ARGUMENT_CHECKS
    saved_markers = ("cv_optimizer", "cv_loss")

    policy: KFRELAXPolicy
    rollout_buffer: NoisyRolloutBuffer | NoisyDictRolloutBuffer  # type: ignore[assignment]
    max_kl: float | None
    target: str
    normalize_advantage: bool
    # the cv_* arguments, c_phi's optimizers and cv_skipped_updates: see ControlVariateTrainingMixin

    def __init__(
        self,
        policy: str | type[KFRELAXPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 8,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        ent_coef: float = 0.01,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = 0.5,
        max_kl: float | None = 0.01,
        target: str = "advantage",
        normalize_advantage: bool = True,
        max_consecutive_skips: int | None = 10,
        cv_optimizer: str = "kfac",
        cv_loss: str = "exact",
        cv_learning_rate: float | None = None,
        cv_scalar_learning_rate: float | None = None,
        cv_damping: float = 1.0,
        cv_kl_clip: float = 0.001,
        cv_momentum: float = 0.9,
        cv_stat_decay: float = 0.95,
        cv_inverse_interval: int = 5,
        # SB3's own arguments, spelled out (not **kwargs) so that the signature documents them, as SB3's A2C and PPO do
        use_sde: bool = False,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(**own_arguments(locals()))

    def _check_argument_combinations(self, arguments: dict[str, Any]) -> None:
        check_noise_arguments(type(self).__name__, arguments)

    # -- set-up --------------------------------------------------------------------------------------------------

    def _setup_model(self) -> None:
        if self.rollout_buffer_class is None:
            self.rollout_buffer_class = (
                NoisyDictRolloutBuffer if isinstance(self.observation_space, spaces.Dict) else NoisyRolloutBuffer
            )
        check_policy_class(type(self).__name__, self.policy_class)
        super()._setup_model()
        assert isinstance(self.policy, KFRELAXPolicy)
        self.rollout_buffer.noise_source = self.policy.pop_acting_noise
        self._setup_control_variate()

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        # Both control-variate optimizers' states are weights_only-loadable (KFAC keeps tensors and plain values).
        return ["policy", "policy.optimizer", "cv_net_optimizer", "cv_scalar_optimizer"], []

    # -- training ------------------------------------------------------------------------------------------------

    def train(self) -> None:
        """
        One KFRELAX update on the whole rollout: steps 1-5 of the class docstring, in the order of Grathwohl et al. 2018,
        Alg. 1 (LAX) / Alg. 2 (RELAX), with the control variate's step of Firouzi 2018, Alg. 1-2.
        """
        policy, buffer, kfac = self.policy, self.rollout_buffer, self.kfac
        self._begin_update(policy.optimizer)
        if buffer.used_for_update:
            self._skip_update(
                "this rollout was already used for an update (KFRELAX is strictly on-policy: one update per rollout)"
            )
            return
        buffer.used_for_update = True
        samples, actions = self._whole_batch()
        data = cast(NoisyRolloutBufferSamples, samples)  # the noise-storing buffer's samples

        # 1. f_t
        targets = self._standardized(data.advantages if self.target == "advantage" else data.returns)
        # 2. the per-sample surrogate obj_t, from the stored noise (these c_phi forwards are not K-FAC statistics)
        with kfac.no_statistics() if kfac is not None else nullcontext():
            out = policy.relax_forward(data.observations)
            old_distribution = out.distribution.distribution  # snapshot: SB3 reuses its distribution objects
            mismatch = self._action_mismatch(out, actions, data.noise)
            mismatch_rate = float(mismatch.float().mean())
            self.logger.record("train/action_mismatch", mismatch_rate)
            if mismatch_rate > ACTION_MISMATCH_TOLERANCE:
                self._skip_update(
                    f"{mismatch_rate:.1%} of the stored noise does not reproduce the stored actions with the current policy "
                    "(the rollout was not collected by this policy, or the policy changed since)"
                )
                return
            per_sample, log_prob, terms = self._per_sample_objective(out, actions, data.noise, targets, ~mismatch)
        objective = per_sample.mean()
        # the entropy bonus and the value loss of step 4 (A2C's)
        entropy = out.distribution.entropy()
        entropy_loss = -mean_entropy(entropy, log_prob)
        value_loss = F.mse_loss(data.returns, out.values)
        aux_loss = self.ent_coef * entropy_loss + self.vf_coef * value_loss
        if not (th.isfinite(objective) and th.isfinite(aux_loss)):
            self._skip_update(
                f"non-finite loss (objective {objective.detach().item()}, entropy/value loss {aux_loss.detach().item()})"
            )
            return
        actor_params, policy_params = policy.actor_parameters(), policy.actor_critic_parameters()
        cv_params = [p for p in self.control_variate.parameters() if p.requires_grad]
        log_this_update = self._logs_written_after_this_update()
        if log_this_update:
            variance, variance_no_cv = self._grad_variance(per_sample, log_prob, targets, actor_params)
            self.logger.record("train/grad_variance", variance)
            self.logger.record("train/grad_variance_no_cv", variance_no_cv)

        # 2.-3. the estimate g_hat = d mean_t(obj_t) / d theta, the control variate's loss N ||g_hat||^2, its phi-gradient
        aux_grads = th.autograd.grad(aux_loss, policy_params, retain_graph=True, allow_unused=True)
        cv_loss, g_hat = control_variate_loss(objective, actor_params, out, self.cv_loss)
        cv_grads = th.autograd.grad(cv_loss, cv_params, allow_unused=True)
        g_hat = [g.detach() for g in g_hat]
        if not all_finite(g_hat) or not all_finite([g for g in aux_grads if g is not None]):
            self._skip_update("non-finite policy gradient")
            return
        # 4. theta: a step of the policy's optimizer on -g_hat + d aux_loss / d theta, capped by max_kl
        policy.optimizer.zero_grad(set_to_none=True)
        set_policy_gradient(policy_params, actor_params, g_hat, aux_grads, self.max_grad_norm)
        before = [p.detach().clone() for p in actor_params]
        before_policy = [p.detach().clone() for p in policy_params]
        policy.optimizer.step()
        kl, update_scale = self._cap_update(data.observations, old_distribution, actor_params, before)
        if not self._keep_if_finite(policy_params, before_policy, kl):
            return
        # 5. phi: a step of K-FAC (or Adam) on the control variate's loss
        self._cv_step(cv_params, cv_grads, terms, out.cv_obs)

        self._finish_update(
            policy_loss=-objective.detach().item(),
            value_loss=value_loss.detach().item(),
            entropy_loss=entropy_loss.detach().item(),
            kl=kl,
            update_scale=update_scale,
            **self._control_variate_logs(cv_loss),
        )

    def _cap_update(
        self,
        obs: Any,
        old_distribution: Any,
        actor_params: list[nn.Parameter],
        before: list[th.Tensor],
    ) -> tuple[float | None, float]:
        """
        Trust region of Firouzi 2018, §4.2.1: shrink the actor's update until the exact ``KL(pi_old || pi_new) <= max_kl``.

        (:meth:`~sb3_natgrad.common.on_policy.NaturalGradientAlgorithm._bound_kl`).

        :return: the final KL (``None`` if neither capped nor logged) and the factor applied to the actor's update
        """
        scale, kl = self._bound_kl(actor_params, before, old_distribution, obs)
        return kl, scale

    # -- the estimator's pieces for this algorithm (:mod:`~sb3_natgrad.kfrelax.estimator`) ---------------------------

    def _training_actions(self, actions: th.Tensor) -> th.Tensor:
        """:func:`~sb3_natgrad.kfrelax.estimator.relaxation_actions` of this action space."""
        return relaxation_actions(self.action_space, actions)

    def _action_mismatch(self, out: RelaxForward, actions: th.Tensor, noise: th.Tensor) -> th.Tensor:
        """:func:`~sb3_natgrad.kfrelax.estimator.action_mismatch` of this policy."""
        return action_mismatch(self.policy, out, actions, noise)

    def _per_sample_objective(
        self, out: RelaxForward, actions: th.Tensor, noise: th.Tensor, targets: th.Tensor, valid: th.Tensor | None
    ) -> tuple[th.Tensor, th.Tensor, SurrogateTerms]:
        """:func:`~sb3_natgrad.kfrelax.estimator.per_sample_objective` of this policy."""
        return per_sample_objective(self.policy, out, actions, noise, targets, valid)

    def _grad_variance(
        self, per_sample: th.Tensor, log_prob: th.Tensor, targets: th.Tensor, params: list[nn.Parameter]
    ) -> tuple[float, float]:
        """:func:`~sb3_natgrad.kfrelax.estimator.grad_variance` (log-only)."""
        return grad_variance(per_sample, log_prob, targets, params)
