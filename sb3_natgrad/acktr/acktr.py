"""ACKTR: Actor-Critic using Kronecker-factored Trust Region (Wu et al. 2017)."""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from torch.nn import functional as F

from sb3_natgrad.acktr.fisher import sampled_fisher_loss, updated_bellman_error_var
from sb3_natgrad.acktr.kfac_options import OPTION_DOCS, check_acktr_kfac_arguments, make_kfac
from sb3_natgrad.acktr.step_size import adapted_step_scale
from sb3_natgrad.common.checks import ArgumentCheck, check_number
from sb3_natgrad.common.distributions import distribution_and_values, mean_entropy
from sb3_natgrad.common.on_policy import NaturalGradientAlgorithm, own_arguments
from sb3_natgrad.common.schedules import LinearDecay
from sb3_natgrad.optim import KFAC


class ACKTR(NaturalGradientAlgorithm):
    """
    Actor-Critic using Kronecker-factored Trust Region (ACKTR).

    Paper: https://arxiv.org/abs/1708.05144 . A2C's losses, optimised with K-FAC natural gradients
    for both the actor and the critic and a trust region on the step size.

    Every update (one per rollout, full batch):

    1. one training-mode forward pass gives the action distribution and the values (and K-FAC's input factors);
    2. the sampled Fisher loss (Wu et al. 2017, §3.1; :mod:`sb3_natgrad.acktr.fisher`) gives K-FAC's output-gradient
       factors: the log-likelihood of actions drawn from the current policy plus ``vf_fisher_coef`` times the critic's
       Gaussian log-likelihood (unit variance, or the Bellman-error variance with ``adaptive_gauss_newton=True``);
    3. the A2C loss ``-mean(A log pi(a|s)) - ent_coef * entropy + vf_coef * mean((R - V)^2)`` is back-propagated
       and K-FAC takes the step ``lr * nu * F^-1 g`` with ``nu = min(1, sqrt(kfac_clip / (lr^2 g^T F^-1 g)))``
       (§3.2, summed over actor and critic) and momentum.

    The first ``warmup_steps`` updates are momentum SGD on gradients clipped to ``max_grad_norm`` while the
    curvature statistics accumulate (as in the OpenAI and SB2 code); ``max_grad_norm`` is not applied afterwards.

    *Reward scale matters.* The trust region is shared by actor and critic, and the critic's Gauss–Newton term of
    ``g^T F^-1 g`` grows with the squared return error. With returns in the hundreds (CartPole, MuJoCo) that term
    dominates ``nu`` and the actor barely moves (``train/step_size`` far below ``learning_rate``); normalise the
    rewards (``VecNormalize(norm_reward=True)``, ``normalize`` in rl-zoo3), as our packaged hyperparameters do, or
    lower ``vf_coef``. Atari rewards are clipped, so the paper's setting is not affected.

    ``vf_coef`` multiplies the *mean squared error* ``mean((R - V)^2)``. The default 0.25 equals the paper's
    ``0.5 * 1/2 (R - V)^2`` and SB2's ACKTR (``vf_coef=0.25``); OpenAI's refactored baselines and ikostrikov's
    code use ``0.5 * MSE``, i.e. ``vf_coef=0.5`` here.

    :param learning_rate: maximum step size ``eta_max``; a float is constant, a callable of the remaining progress
        is a schedule. Default: 0.25 decayed linearly to 0 (paper and reference code). With ``kl_target`` it is
        multiplied by the adapted factor
    :param n_steps: steps per environment per update (batch = ``n_steps * n_envs``; the paper uses 20 x 32 on Atari)
    :param gae_lambda: GAE lambda; 1.0 gives the paper's k-step returns
    :param ent_coef: entropy coefficient
    :param vf_coef: value loss coefficient on ``mean((R - V)^2)`` (see above)
    :param vf_fisher_coef: weight of the critic's log-likelihood in the sampled Fisher loss
    :param max_grad_norm: gradient-norm clip during the warm-up updates
    :param kfac_clip: trust-region radius ``delta`` (Wu et al. 2017, §3.2)
    :param max_kl: also bound the exact batch-mean ``KL(pi_old || pi_new)`` of each update: the step (actor and critic)
        is shrunk until it holds (:meth:`~sb3_natgrad.common.on_policy.NaturalGradientAlgorithm._backtrack_to_kl`).
        ``kfac_clip`` bounds K-FAC's quadratic model of the joint Fisher, which the real KL can exceed many times
        (``benchmarks/results/smac/trust_region.md``); ``None`` (default): the paper's trust region alone
    :param kl_target: adapt the step size to the exact batch-mean KL of each update, as the continuous-control code of
        Wu et al. 2017 did (:func:`~sb3_natgrad.acktr.step_size.adapted_step_scale`): the learning rate is multiplied
        by a factor that starts at 1 and is divided by 1.5 after an update whose KL exceeds ``2 * kl_target``,
        multiplied by 1.5 after one below ``kl_target / 2``, and kept within ``[1e-8, 1]`` as a step size
        (``train/learning_rate`` logs the product, ``train/kl_step_scale`` the factor; the factor is saved with
        the model). ``kfac_clip`` and ``max_kl`` still bound each step. ``None`` (default): the learning rate alone
    :param adaptive_gauss_newton: use the running Bellman-error variance as the critic's output variance in the
        Fisher (Wu et al. 2017, appendix D) instead of 1
    """

    argument_checks: ClassVar[dict[str, ArgumentCheck]] = {
        "vf_fisher_coef": partial(check_number, low=0.0),
        "max_grad_norm": partial(check_number, low=0.0, low_inclusive=False),  # the warm-up needs a clip
        "kfac_clip": partial(check_number, low=0.0, low_inclusive=False),
        "max_kl": partial(check_number, low=0.0, low_inclusive=False, allow_none=True),
        "kl_target": partial(check_number, low=0.0, low_inclusive=False, allow_none=True),
    }
    saved_markers = ("kfac_clip", "vf_fisher_coef")
    #: K-FAC's options are documented in kfac_options, the arguments shared with SMAC, KFRELAX and SB3 in
    #: common.parameter_docs; both are merged into the docstring when the class is created
    parameter_docs = (OPTION_DOCS,)

    vf_fisher_coef: float
    kfac_clip: float
    #: a class default: models saved before the option existed load without the exact-KL bound
    max_kl: float | None = None
    #: class defaults too: models saved before the option existed load with a fixed step size
    kl_target: float | None = None
    #: the factor on the learning rate that ``kl_target`` adapts
    kl_step_scale: float = 1.0
    # K-FAC's options (kfac_options.OPTION_NAMES) are attributes too, read by make_kfac
    stat_decay: float
    adaptive_gauss_newton: bool
    normalize_advantage: bool
    #: running variance of the Bellman error (adaptive Gauss-Newton, Wu et al. 2017 appendix D)
    bellman_error_var: float | None = None

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = LinearDecay(0.25),  # noqa: B008 (immutable, picklable)
        n_steps: int = 20,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        ent_coef: float = 0.01,
        vf_coef: float = 0.25,
        vf_fisher_coef: float = 1.0,
        max_grad_norm: float = 0.5,
        kfac_clip: float = 0.001,
        max_kl: float | None = None,
        kl_target: float | None = None,
        damping: float = 0.01,
        momentum: float = 0.9,
        stat_decay: float = 0.99,
        stats_interval: int = 1,
        inverse_interval: int = 10,
        inverse_method: str = "eigen",
        damping_type: str | None = None,
        warmup_steps: int = 10,
        weight_decay: float = 0.0,
        stats_batch_size: int | None = None,
        stats_dtype: str | th.dtype | None = None,
        conv_factors: str | dict[str, str] = "expand",
        async_inverse: bool = False,
        adaptive_gauss_newton: bool = False,
        normalize_advantage: bool = False,
        max_consecutive_skips: int | None = 10,
        # SB3's own arguments, spelled out (not **kwargs) so that the signature documents them, as SB3's A2C and PPO do
        use_sde: bool = False,
        sde_sample_freq: int = -1,
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
        check_acktr_kfac_arguments(type(self).__name__, arguments)

    def _setup_model(self) -> None:
        super()._setup_model()
        # K-FAC over the whole policy (actor + critic) instead of the first-order optimizer the policy built.
        self.policy.optimizer = make_kfac(self.policy, self.lr_schedule(1), self)

    @property
    def kfac(self) -> KFAC:
        """The K-FAC optimizer of the policy."""
        assert isinstance(self.policy.optimizer, KFAC)
        return self.policy.optimizer

    def _fisher_loss(self, distribution: Any, values: th.Tensor, returns: th.Tensor) -> th.Tensor:
        variance = 1.0
        if self.adaptive_gauss_newton:
            self.bellman_error_var = updated_bellman_error_var(self.bellman_error_var, values, returns, self.stat_decay)
            variance = max(self.bellman_error_var or 1.0, 1e-8)
        return sampled_fisher_loss(distribution, values, self.vf_fisher_coef, variance)

    def train(self) -> None:
        """One ACKTR update on the whole rollout (Wu et al. 2017, §3)."""
        kfac = self.kfac
        self._begin_update(kfac)
        learning_rate = self.lr_schedule(self._current_progress_remaining)
        if self.kl_target is not None:
            self._scale_learning_rate(kfac, learning_rate)
        data, actions = self._whole_batch()
        # 1. one training-mode forward pass: the distribution, the values, K-FAC's input factors
        distribution, values = distribution_and_values(self.policy, data.observations)
        old_distribution = distribution.distribution  # snapshot: SB3 reuses the distribution object
        values = values.flatten()
        log_prob = distribution.log_prob(actions)
        entropy = distribution.entropy()
        # A2C's loss
        policy_loss = -(self._standardized(data.advantages) * log_prob).mean()
        value_loss = F.mse_loss(data.returns, values)
        entropy_loss = -mean_entropy(entropy, log_prob)
        loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
        if not th.isfinite(loss):
            kfac.discard_statistics()
            self._skip_update(f"non-finite loss ({float(loss.detach())})")
            return
        # 2. the sampled Fisher loss gives the output-gradient factors
        if kfac.stats_due:
            kfac.record_fisher(self._fisher_loss(distribution, values, data.returns))
        # 3. the natural-gradient step inside the trust region
        params = list(self.policy.parameters())
        before = [p.detach().clone() for p in params] if self.max_kl is not None else []
        kfac.zero_grad()
        loss.backward()
        kfac.step()
        info = kfac.last_step_info
        if info.get("skipped"):
            self._skip_update("K-FAC refused a non-finite gradient or update")
            return
        # the optional exact-KL bound on top of the paper's trust region (or the KL for the log)
        update_scale, kl = self._bound_kl(params, before, old_distribution, data.observations)
        logged = {"update_scale": update_scale} if self.max_kl is not None else {}
        if self.kl_target is not None:
            if kl is None:
                kl = self._exact_kl(old_distribution, data.observations)
            self.kl_step_scale = adapted_step_scale(self.kl_step_scale, kl, self.kl_target, learning_rate)
        if self.adaptive_gauss_newton and self.bellman_error_var is not None:
            logged["bellman_error_std"] = float(np.sqrt(self.bellman_error_var))
        self._finish_update(
            policy_loss=policy_loss.item(),
            value_loss=value_loss.item(),
            entropy_loss=entropy_loss.item(),
            kl=kl,
            step_size=info.get("step_size", 0.0),
            natural_grad_norm=info.get("natural_grad_norm", float("nan")),
            vFv=info.get("vFv", float("nan")),
            kfac_warmup=info.get("warmup", 0.0),
            kfac_inverse_fallbacks=kfac.counters["inverse_fallbacks"],
            **logged,
        )

    def _scale_learning_rate(self, kfac: KFAC, learning_rate: float) -> None:
        """This update's step size with ``kl_target``: the schedule's learning rate times :attr:`kl_step_scale`."""
        for group in kfac.param_groups:
            group["lr"] = learning_rate * self.kl_step_scale
        self.logger.record("train/learning_rate", learning_rate * self.kl_step_scale)
        self.logger.record("train/kl_step_scale", self.kl_step_scale)
