"""KFRELAX: RELAX / LAX policy gradients with a K-FAC-trained control variate (Firouzi 2018; RELAX, Grathwohl et al. 2018)."""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from functools import partial
from typing import Any, ClassVar, cast

import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from torch import nn
from torch.nn import functional as F

from sb3_natgrad.common.checks import ArgumentCheck, check_choice, check_int, check_number
from sb3_natgrad.common.gradients import flatten_grads
from sb3_natgrad.common.on_policy import (
    KL_SHRINKING_FACTOR,
    MAX_KL_BACKTRACKS,
    NaturalGradientAlgorithm,
    own_arguments,
)
from sb3_natgrad.kfrelax.buffers import (
    NOISY_BUFFERS,
    NoisyDictRolloutBuffer,
    NoisyRolloutBuffer,
    NoisyRolloutBufferSamples,
)
from sb3_natgrad.kfrelax.control_variate import (
    ControlVariate,
    estimator_variance_loss,
    lax_surrogate,
    logit_proxy_variance_loss,
    record_control_variate_fisher,
    relax_surrogate,
)
from sb3_natgrad.kfrelax.policies import (
    KFRELAXCnnPolicy,
    KFRELAXMinAtarPolicy,
    KFRELAXMultiInputPolicy,
    KFRELAXPolicy,
    RelaxForward,
)
from sb3_natgrad.kfrelax.relaxations import DiagGaussianReparameterization, DiscreteRelaxation
from sb3_natgrad.optim import KFAC
from sb3_natgrad.optim.validation import all_finite

CV_OPTIMIZERS = ("kfac", "adam")
CV_LOSSES = ("exact", "proxy")
TARGETS = ("advantage", "return")
#: default step size of c_phi's optimizer (K-FAC's maximum step size, or Adam's learning rate)
DEFAULT_CV_LEARNING_RATE = {"kfac": 0.1, "adam": 1e-3}
#: Adam learning rate of log tau and the output scale with K-FAC (K-FAC step sizes are not Adam learning rates)
DEFAULT_KFAC_SCALAR_LEARNING_RATE = 1e-3
#: above this fraction of samples whose stored noise does not reproduce the stored action, the update is skipped
ACTION_MISMATCH_TOLERANCE = 0.01
#: relative tolerance for Box actions rebuilt as mu + sigma * eps from the stored noise
BOX_ACTION_RTOL = 1e-4
#: number of random sub-batches for the logged estimator-variance diagnostic
VARIANCE_GROUPS = 8


class KFRELAX(NaturalGradientAlgorithm):
    """
    KFRELAX: RELAX (discrete actions) / LAX (Box actions) policy gradients whose control variate ``c_phi`` is trained by
    K-FAC on the estimator's variance (KF-RELAX / KF-LAX, Firouzi 2018, Alg. 1-2), or by Adam
    (``cv_optimizer="adam"``: plain RELAX / LAX, Grathwohl et al. 2018).

    Papers: https://arxiv.org/abs/1812.04181 (KF-LAX), https://arxiv.org/abs/1711.00123 (RELAX).

    **Strictly on-policy**: exactly one update per rollout, on the whole batch (``N = n_steps * n_envs``); a second
    ``train()`` on the same rollout is refused. The policy acts through explicit noise, which the rollout buffer
    stores (:class:`~sb3_natgrad.kfrelax.policies.KFRELAXPolicy`, :mod:`~sb3_natgrad.kfrelax.buffers`): uniforms ``u``
    for discrete spaces (Gumbel-max / logistic, RELAX App. B) and standard normals ``eps`` for Box (``a = mu + sigma
    eps``; stored rather than recovered as ``(a - mu) / sigma``, which is exact only up to rounding). At train time
    ``z(theta, u)`` is rebuilt with the same ``theta`` and must reproduce the stored action (``argmax`` / sign); the
    mismatch rate is logged (``train/action_mismatch``, 0 on on-policy data up to floating-point ties). Mismatched
    samples (near-ties where the batched forward pass rounds differently) fall back to the score-function term
    ``f log pi``; if more than 1% mismatch, the data are not on-policy and the update is skipped with a warning.

    **Update** (one per rollout):

    1. Per sample the surrogate ``obj_t = (f_t - c_phi(s_t, z~_t.detach())) log pi(b_t|s_t) + c_phi(s_t, z_t) -
       c_phi(s_t, z~_t)`` with ``z_t = z(theta, u_t)`` and ``z~_t ~ p(z | b_t, theta)`` (exact conditional sampler,
       fresh ``v``), whose ``theta``-gradient is the RELAX estimate (RELAX App. C, second theorem; Firouzi 2018, §4.2.1).
       LAX: ``obj_t = (f_t - c_phi(s_t, a_t.detach())) log pi(a_t|s_t) + c_phi(s_t, a_t(theta, eps_t))`` (App. C,
       first theorem). ``g_hat = d mean_t(obj_t) / d theta`` over the actor's parameters (ascent direction).
    2. ``f_t`` (``target``): the GAE(``gae_lambda``) advantage of the learned value ``V`` (default) or the
       ``gae_lambda``-return (``gae_lambda=1``: the discounted return-to-go, bootstrapped with ``V`` at the rollout
       cut and at time limits). With advantages ``c_phi`` plays the role of ``c^`` in ``c = V + c^`` (RELAX App. C,
       as in its continuous experiments): the state-dependent part is fitted cheaply by regression and ``c_phi`` only
       has to model the action-dependent residual, so at initialisation the estimator is already A2C's instead of
       raw REINFORCE. ``target="return"`` is the paper's discrete setting (no value baseline in the estimator).
    3. Control variate: the variance loss ``N * ||g_hat||^2`` (RELAX eq. "vargrad": ``E[g_hat]`` does not depend on
       ``phi``, so ``d Var / d phi = d E||g_hat||^2 / d phi``), by double backprop over all actor parameters
       (``cv_loss="exact"``), or the cheaper per-sample logit-level PROXY ``sum_t ||d obj_t / d psi_t||^2`` over the
       distribution parameters ``psi_t`` (``cv_loss="proxy"``: not the variance of the parameter gradient). The
       factor ``N`` puts the loss on a per-sample scale, so K-FAC's damping and trust region do not depend on the
       batch size (Adam is scale invariant). ``cv_optimizer="kfac"`` preconditions the true gradient of the
       ``nn.Linear`` layers of ``c_phi`` with K-FAC factors of ``c_phi``'s own output Fisher (Gauss-Newton of a
       unit-variance regressor over the ``2N`` inputs ``z``, ``z~``), damping ``cv_damping``,
       trust region ``cv_kl_clip`` on the change of ``c_phi``'s outputs, momentum; ``log tau`` and the output scale
       use Adam. ``cv_optimizer="adam"``: Adam on all of ``phi``.
    4. Policy: ``theta.grad = -g_hat - ent_coef * d entropy / d theta + vf_coef * d mean((R - V)^2) / d theta`` (the
       entropy bonus and the value loss are NOT in the variance loss), optional global gradient-norm clip
       ``max_grad_norm``, then a step of the policy's optimizer (any SB3 ``optimizer_class``; Adam by default, as the
       RELAX code). Capped update (Firouzi 2018, §4.2.1, "parameter updates capped at an upper bound"): while the exact
       batch-mean ``KL(pi_old || pi_new)`` exceeds ``max_kl``, the actor's part of the update is shrunk (the rule
       shared with SMAC and ACKTR, :meth:`~sb3_natgrad.common.on_policy.NaturalGradientAlgorithm._backtrack_to_kl`,
       at least halving each time, at most 10 times). A policy that is still not finite is reverted and the update
       counted in ``train/skipped_updates``.

    Logged besides A2C's keys: ``train/cv_loss``, ``train/grad_variance`` (per-parameter average of the per-sample
    variance of the RELAX/LAX estimate ``g_hat_t``, from ``8`` random sub-batches: ``m * sum_k ||g_k - g||^2 /
    ((K - 1) P)`` with ``m`` samples per sub-batch, ``P`` actor parameters; samples treated as independent) and
    ``train/grad_variance_no_cv`` (the same for the estimator without control variate, ``f log pi``): both only on
    updates whose logs are written; ``train/temperature``, ``train/cv_scale``, ``train/kl`` (exact, on logged
    updates or always with ``max_kl``), ``train/update_scale``, ``train/action_mismatch`` and the K-FAC counters.

    **Defaults.** ``ent_coef=0.01``, ``gamma=0.99`` and Adam for the policy: RELAX App. E and KF-RELAX §4.2.1;
    ``vf_coef``, ``max_grad_norm``, ``gae_lambda``: SB3's A2C; ``learning_rate``, ``n_steps``, ``max_kl``: tuned on
    CartPole-v1; ``c_phi``: 64-64 ELU with a zero output layer (the estimator starts as A2C's); K-FAC on ``c_phi``
    with strong damping (``cv_damping=1``, ``cv_kl_clip=1e-3``). Sources and the studies behind them:
    ``benchmarks/results/kfrelax/defaults.md``.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or a :class:`KFRELAXPolicy` subclass
    :param env: the environment (or its Gymnasium id)
    :param learning_rate: learning rate of the policy's (actor + critic) optimizer; float or schedule
    :param n_steps: steps per environment per update (batch ``N = n_steps * n_envs``)
    :param gamma: discount factor
    :param gae_lambda: GAE lambda (also the lambda of the ``"return"`` target)
    :param ent_coef: entropy bonus coefficient (RELAX / KF-RELAX experiments: 0.01)
    :param vf_coef: value loss coefficient on ``mean((R - V)^2)``
    :param max_grad_norm: global norm clip of the policy gradient (``None``: no clipping)
    :param max_kl: cap on the exact batch-mean ``KL(pi_old || pi_new)`` of one update (``None``: no cap)
    :param target: ``"advantage"`` or ``"return"``: the ``f_t`` of the estimator
    :param normalize_advantage: standardise ``f_t`` over the batch (also with ``target="return"``)
    :param max_consecutive_skips: stop with an error that says what is not finite after this many skipped updates in
        a row (``None``: never)
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
    :param rollout_buffer_kwargs: keyword arguments of the rollout buffer
    :param stats_window_size: window for the rollout logging averages
    :param tensorboard_log: TensorBoard log directory (None: no logging)
    :param policy_kwargs: keyword arguments of the policy (``cv_net_arch``, ``cv_activation_fn``, ``cv_output_gain``,
        ``cv_input``, ... for ``c_phi``; see :class:`KFRELAXPolicy`)
    :param verbose: 0 none, 1 training information, 2 debug
    :param seed: random seed
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda"``
    :param _init_setup_model: build the network at creation
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": KFRELAXPolicy,
        "CnnPolicy": KFRELAXCnnPolicy,
        "MultiInputPolicy": KFRELAXMultiInputPolicy,
        "MinAtarPolicy": KFRELAXMinAtarPolicy,
    }
    argument_checks: ClassVar[dict[str, ArgumentCheck]] = {
        "max_kl": partial(check_number, low=0.0, low_inclusive=False, allow_none=True),
        "target": partial(check_choice, choices=TARGETS),
        "cv_optimizer": partial(check_choice, choices=CV_OPTIMIZERS),
        "cv_loss": partial(check_choice, choices=CV_LOSSES),
        "cv_learning_rate": partial(check_number, low=0.0, allow_none=True),
        "cv_scalar_learning_rate": partial(check_number, low=0.0, allow_none=True),
        "cv_damping": partial(check_number, low=0.0, low_inclusive=False),
        "cv_kl_clip": partial(check_number, low=0.0, low_inclusive=False),
        "cv_momentum": partial(check_number, low=0.0, high=1.0, high_inclusive=False),
        "cv_stat_decay": partial(check_number, low=0.0, high=1.0, high_inclusive=False),
        "cv_inverse_interval": partial(check_int, low=1),
    }
    saved_markers = ("cv_optimizer", "cv_loss")

    policy: KFRELAXPolicy
    rollout_buffer: NoisyRolloutBuffer | NoisyDictRolloutBuffer  # type: ignore[assignment]
    max_kl: float | None
    target: str
    normalize_advantage: bool
    cv_optimizer: str
    cv_loss: str
    cv_learning_rate: float | None
    cv_scalar_learning_rate: float | None
    cv_damping: float
    cv_kl_clip: float
    cv_momentum: float
    cv_stat_decay: float
    cv_inverse_interval: int
    #: control-variate updates skipped for a non-finite gradient (the policy update itself may still be taken)
    cv_skipped_updates: int = 0

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
        name = type(self).__name__
        if arguments["use_sde"]:
            raise ValueError(f"{name}: invalid use_sde=True, gSDE is not supported (LAX needs a = mu + sigma * eps)")
        buffer_class = arguments["rollout_buffer_class"]
        if buffer_class is not None and not (isinstance(buffer_class, type) and issubclass(buffer_class, NOISY_BUFFERS)):
            raise ValueError(
                f"{name}: invalid rollout_buffer_class={buffer_class!r}, it must store the acting noise: use "
                "NoisyRolloutBuffer / NoisyDictRolloutBuffer (sb3_natgrad.kfrelax.buffers) or a subclass"
            )

    # -- set-up --------------------------------------------------------------------------------------------------

    def _setup_model(self) -> None:
        name = type(self).__name__
        if self.rollout_buffer_class is None:
            self.rollout_buffer_class = (
                NoisyDictRolloutBuffer if isinstance(self.observation_space, spaces.Dict) else NoisyRolloutBuffer
            )
        if not (isinstance(self.policy_class, type) and issubclass(self.policy_class, KFRELAXPolicy)):
            given = getattr(self.policy_class, "__name__", self.policy_class)
            raise ValueError(
                f"{name} needs a policy class derived from KFRELAXPolicy, got {given!r}: "
                "KFRELAX acts through noise that it stores (the policy's pop_acting_noise, actions_from_noise and "
                "relax_forward) and trains a control variate that the policy owns. Derive the class from "
                "sb3_natgrad.kfrelax.KFRELAXPolicy (or sb3_natgrad.kfrelax.CnnPolicy / MultiInputPolicy) instead of "
                "ActorCriticPolicy; the networks are set through policy_kwargs (net_arch, features_extractor_class, "
                "cv_net_arch, ...)"
            )
        super()._setup_model()
        assert isinstance(self.policy, KFRELAXPolicy)
        self.rollout_buffer.noise_source = self.policy.pop_acting_noise
        cv = self.control_variate
        lr = self.resolved_cv_learning_rate
        if self.cv_optimizer == "kfac":
            self.cv_net_optimizer: th.optim.Optimizer = KFAC(
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

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        # Both control-variate optimizers' states are weights_only-loadable (KFAC keeps tensors and plain values).
        return ["policy", "policy.optimizer", "cv_net_optimizer", "cv_scalar_optimizer"], []

    # -- the estimator -------------------------------------------------------------------------------------------

    def _training_actions(self, actions: th.Tensor) -> th.Tensor:
        """Buffer actions (float32, ``[N, action_dim]``) in the layout of the relaxations."""
        if isinstance(self.action_space, spaces.Discrete):
            return actions.long().flatten()
        if isinstance(self.action_space, spaces.MultiDiscrete):
            return actions.long()
        return actions.reshape(actions.shape[0], -1)

    def _action_mismatch(self, out: RelaxForward, actions: th.Tensor, noise: th.Tensor) -> th.Tensor:
        """Per sample: does the stored noise, with the current ``theta``, fail to reproduce the stored action?"""
        with th.no_grad():
            rebuilt = self.policy.actions_from_noise(out.params.detach(), noise)
            if isinstance(self.policy.relaxation, DiagGaussianReparameterization):
                return ((rebuilt - actions).abs() > BOX_ACTION_RTOL * (1.0 + actions.abs())).any(dim=-1)
            different = rebuilt.to(actions.dtype) != actions
            return different.reshape(different.shape[0], -1).any(dim=-1)

    def _per_sample_objective(
        self, out: RelaxForward, actions: th.Tensor, noise: th.Tensor, targets: th.Tensor, valid: th.Tensor | None
    ) -> tuple[th.Tensor, th.Tensor, Any]:
        """
        Per-sample RELAX / LAX surrogate ``obj_t`` (its batch-mean's ``theta``-gradient is the estimate), ``log pi`` and
        the :class:`~sb3_natgrad.kfrelax.control_variate.SurrogateTerms`.

        ``valid`` (optional, bool ``[N]``): samples whose stored noise reproduces the stored action; the others keep only
        the score-function term ``f_t log pi_t``.
        """
        relaxation = self.policy.relaxation
        cv = self.control_variate
        if isinstance(relaxation, DiagGaussianReparameterization):
            assert out.log_std is not None
            terms = lax_surrogate(
                cv, relaxation, out.params, out.log_std, noise, targets, obs=out.cv_obs, reduction="sum"
            )  # LAX, RELAX App. C first theorem
            c_pathwise, c_tilde = terms.c_z, th.zeros_like(terms.c_z)
        else:
            assert isinstance(relaxation, DiscreteRelaxation)
            v = relaxation.sample_noise(noise.shape[0], device=noise.device, dtype=noise.dtype)  # fresh noise for z~
            terms = relax_surrogate(
                cv, relaxation, out.params, actions, targets, noise, v, obs=out.cv_obs, reduction="sum"
            )  # RELAX App. C second theorem
            c_pathwise, c_tilde = terms.c_z, terms.c_z_tilde
        c_coef = terms.c_coef
        if valid is not None and not bool(valid.all()):
            mask = valid.to(c_coef.dtype)
            c_pathwise, c_tilde, c_coef = c_pathwise * mask, c_tilde * mask, c_coef * mask
        # obj_t = (f_t - c(z~_t).detach-in-theta) log pi_t + c(z_t) - c(z~_t)   (Firouzi 2018, §4.2.1)
        per_sample = (targets.detach() - c_coef) * terms.log_prob + c_pathwise - c_tilde
        return per_sample, terms.log_prob, terms

    def _grad_variance(
        self, per_sample: th.Tensor, log_prob: th.Tensor, targets: th.Tensor, params: list[nn.Parameter]
    ) -> tuple[float, float]:
        """
        Per-parameter mean of the per-sample variance of ``g_hat_t``, with and without the control variate, from
        ``VARIANCE_GROUPS`` random sub-batches (the rollout buffer permutes the samples). Log-only.
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

    # -- training ------------------------------------------------------------------------------------------------

    def train(self) -> None:
        """One KFRELAX update on the whole rollout buffer (exactly one per rollout)."""
        policy = self.policy
        self._begin_update(policy.optimizer)
        buffer = self.rollout_buffer
        if buffer.used_for_update:
            self._skip_update(
                "this rollout was already used for an update (KFRELAX is strictly on-policy: one update per rollout)"
            )
            return
        buffer.used_for_update = True
        kfac = self.kfac

        samples, actions = self._whole_batch()
        data = cast(NoisyRolloutBufferSamples, samples)  # the noise-storing buffer's samples
        n = data.returns.shape[0]
        targets = self._standardized(data.advantages if self.target == "advantage" else data.returns)

        # The estimator's three c_phi forwards are not K-FAC statistics (those come from one dedicated pass below).
        stats_pause = kfac.no_statistics() if kfac is not None else nullcontext()
        with stats_pause:
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
        entropy = out.distribution.entropy()
        entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
        value_loss = F.mse_loss(data.returns, out.values)
        aux_loss = self.ent_coef * entropy_loss + self.vf_coef * value_loss
        if not (th.isfinite(objective) and th.isfinite(aux_loss)):
            self._skip_update(
                f"non-finite loss (objective {objective.detach().item()}, entropy/value loss {aux_loss.detach().item()})"
            )
            return

        actor_params = policy.actor_parameters()
        policy_params = policy.actor_critic_parameters()
        cv_params = [p for p in self.control_variate.parameters() if p.requires_grad]
        log_this_update = self._logs_written_after_this_update()
        if log_this_update:
            grad_variance, grad_variance_no_cv = self._grad_variance(per_sample, log_prob, targets, actor_params)
            self.logger.record("train/grad_variance", grad_variance)
            self.logger.record("train/grad_variance_no_cv", grad_variance_no_cv)

        aux_grads = th.autograd.grad(aux_loss, policy_params, retain_graph=True, allow_unused=True)
        if self.cv_loss == "exact":
            # ||g_hat||^2 over all actor parameters, g_hat built with create_graph (RELAX eq. "vargrad").
            variance_loss, g_hat = estimator_variance_loss(objective, actor_params)
        else:
            g_hat = list(th.autograd.grad(objective, actor_params, retain_graph=True, allow_unused=True))
            g_hat = [th.zeros_like(p) if g is None else g for p, g in zip(actor_params, g_hat)]
            dist_params = [out.params] if out.log_std is None else [out.params, out.log_std]
            variance_loss = logit_proxy_variance_loss(objective, dist_params)
        # per-sample scale: N ||mean_t g_t||^2 (see the class docstring)
        cv_loss = n * variance_loss
        cv_grads = th.autograd.grad(cv_loss, cv_params, allow_unused=True)
        g_hat = [g.detach() for g in g_hat]
        if not all_finite(g_hat) or not all_finite([g for g in aux_grads if g is not None]):
            self._skip_update("non-finite policy gradient")
            return

        # ---- policy step: theta.grad = -g_hat + grad(ent_coef * entropy_loss + vf_coef * value_loss)
        stepped = self._policy_step(
            data.observations, old_distribution, actor_params, policy_params, g_hat, aux_grads, log_this_update
        )
        if stepped is None:
            return
        kl, update_scale = stepped

        # ---- control-variate step
        self._cv_step(cv_params, cv_grads, terms, out.cv_obs)

        logged = {"cv_loss": cv_loss.detach().item(), "cv_scale": self.control_variate.scale.detach().item()}
        temperature = self.control_variate.temperature
        if temperature is not None:
            logged["temperature"] = temperature.detach().item()
        logged.update(update_scale=update_scale, cv_skipped_updates=self.cv_skipped_updates)
        if kfac is not None:
            logged.update(
                cv_step_size=kfac.last_step_info.get("step_size", 0.0),
                cv_kfac_skipped_updates=kfac.counters["skipped_steps"],
                cv_kfac_inverse_fallbacks=kfac.counters["inverse_fallbacks"],
            )
        self._finish_update(
            policy_loss=-objective.detach().item(),
            value_loss=value_loss.detach().item(),
            entropy_loss=entropy_loss.detach().item(),
            kl=kl,
            **logged,
        )

    def _policy_step(
        self,
        obs: Any,
        old_distribution: Any,
        actor_params: list[nn.Parameter],
        policy_params: list[nn.Parameter],
        g_hat: list[th.Tensor],
        aux_grads: tuple[th.Tensor | None, ...],
        log_this_update: bool,
    ) -> tuple[float | None, float] | None:
        """
        Step of the policy's optimizer with ``theta.grad = -g_hat + aux_grads`` (optionally norm-clipped), then the
        capped update; a policy that is not finite afterwards is reverted and the update skipped.

        :return: ``(kl, update_scale)`` of :meth:`_cap_update`, or ``None`` when the update was reverted
        """
        optimizer = self.policy.optimizer
        optimizer.zero_grad(set_to_none=True)
        for p, g in zip(policy_params, aux_grads):
            p.grad = th.zeros_like(p) if g is None else g.detach().clone()
        for p, g in zip(actor_params, g_hat):
            assert p.grad is not None
            p.grad.sub_(g)
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(policy_params, self.max_grad_norm)
        before = [p.detach().clone() for p in actor_params]
        before_policy = [p.detach().clone() for p in policy_params]
        optimizer.step()
        kl, update_scale = self._cap_update(obs, old_distribution, actor_params, before, log_this_update)
        if not self._keep_if_finite(policy_params, before_policy, kl):
            return None
        return kl, update_scale

    # same shape as _policy_step's signature: a subset of its arguments, passed through
    def _cap_update(
        self,
        obs: Any,
        old_distribution: Any,
        actor_params: list[nn.Parameter],
        before: list[th.Tensor],
        log_this_update: bool,
    ) -> tuple[float | None, float]:
        """
        Trust region of Firouzi 2018, §4.2.1: shrink the actor's update until the exact ``KL(pi_old || pi_new) <= max_kl``.

        :return: the final KL (``None`` if neither capped nor logged) and the factor applied to the actor's update
        """
        if self.max_kl is None and not log_this_update:
            return None, 1.0

        if self.max_kl is None:
            return self._exact_kl(old_distribution, obs), 1.0
        scale, kl = self._backtrack_to_kl(
            actor_params, before, old_distribution, obs, self.max_kl, KL_SHRINKING_FACTOR, MAX_KL_BACKTRACKS
        )
        return kl, scale

    def _cv_step(
        self, cv_params: list[nn.Parameter], cv_grads: tuple[th.Tensor | None, ...], terms: Any, cv_obs: th.Tensor
    ) -> None:
        """Apply the variance-loss gradient to ``c_phi`` (K-FAC or Adam on the layers, Adam on ``log tau`` and scale)."""
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
            # Gauss-Newton statistics of c_phi (a unit-variance regressor) on its 2N inputs z, z~ (the N actions for LAX).
            z_tilde = (
                terms.z_tilde[:0] if isinstance(self.policy.relaxation, DiagGaussianReparameterization) else terms.z_tilde
            )
            record_control_variate_fisher(kfac, self.control_variate, terms.z, z_tilde, obs=cv_obs)
        grad_of = {id(p): g for p, g in zip(cv_params, grads)}
        for optimizer in (self.cv_net_optimizer, self.cv_scalar_optimizer):
            optimizer.zero_grad(set_to_none=True)
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = grad_of.get(id(p), th.zeros_like(p)).clone()
            optimizer.step()
