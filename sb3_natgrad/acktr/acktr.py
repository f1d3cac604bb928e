"""ACKTR: Actor-Critic using Kronecker-factored Trust Region (Wu et al. 2017, seed 001)."""

from __future__ import annotations

import io
import pathlib
import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, BasePolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from sb3_natgrad.common.checks import (
    check_choice,
    check_int,
    check_learning_rate,
    check_not_recurrent,
    check_number,
    check_spaces,
)
from sb3_natgrad.common.distributions import distribution_and_values, policy_kl, sampled_log_prob
from sb3_natgrad.common.log_schedule import LogScheduleMixin
from sb3_natgrad.common.minatar import MinAtarPolicy
from sb3_natgrad.common.save_util import check_saved_algorithm
from sb3_natgrad.common.schedules import LinearDecay
from sb3_natgrad.optim import KFAC
from sb3_natgrad.optim.kfac import DAMPING_TYPES, INVERSE_METHODS, STATS_DTYPES, resolve_conv_factors, resolve_stats_dtype
from sb3_natgrad.optim.kronecker import CONV_FACTORS

SelfACKTR = TypeVar("SelfACKTR", bound="ACKTR")


class ACKTR(LogScheduleMixin, OnPolicyAlgorithm):
    """
    Actor-Critic using Kronecker-factored Trust Region (ACKTR).

    Paper: https://arxiv.org/abs/1708.05144 (seed 001). A2C's losses, optimised with K-FAC natural gradients
    for both the actor and the critic and a trust region on the step size.

    Every update (one per rollout, full batch):

    1. one training-mode forward pass gives the action distribution and the values (and K-FAC's input factors);
    2. the sampled Fisher loss (seed 001 §3.1) gives K-FAC's output-gradient factors: ``mean log pi(a~|s)`` with
       ``a~`` drawn from the current policy (the true Fisher, not the empirical one), plus
       ``vf_fisher_coef * mean log N(v~ | V(s), sigma^2)`` with ``v~ = V(s) + sigma * eps`` — the Gauss–Newton
       metric of the critic (``sigma = 1``, or the Bellman-error standard deviation with
       ``adaptive_gauss_newton=True``, appendix D). When actor and critic share layers the two terms form the
       joint Fisher of ``p(a, v | s) = pi(a|s) p(v|s)``;
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

    Deviations from the reference code, on purpose: biases use the homogeneous coordinate (not a separate
    block); the value Fisher term is the exact unit-variance Gaussian log-likelihood (the OpenAI code's
    ``-(V - sg(V + eps))^2`` equals ``vf_fisher_coef=2`` here); Fisher actions are freshly sampled rather than
    the rollout actions (the same distribution, one update per rollout).

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or an ``ActorCriticPolicy`` subclass
    :param env: the environment (or its Gymnasium id)
    :param learning_rate: maximum step size ``eta_max``; a float is constant, a callable of the remaining progress
        is a schedule. Default: 0.25 decayed linearly to 0 (paper and reference code)
    :param n_steps: steps per environment per update (batch = ``n_steps * n_envs``; the paper uses 20 x 32 on Atari)
    :param gamma: discount factor
    :param gae_lambda: GAE lambda; 1.0 gives the paper's k-step returns
    :param ent_coef: entropy coefficient
    :param vf_coef: value loss coefficient on ``mean((R - V)^2)`` (see above)
    :param vf_fisher_coef: weight of the critic's log-likelihood in the sampled Fisher loss
    :param max_grad_norm: gradient-norm clip during the warm-up updates
    :param kfac_clip: trust-region radius ``delta`` (seed 001 §3.2)
    :param damping: K-FAC Tikhonov damping ``lambda``
    :param momentum: K-FAC momentum
    :param stat_decay: EMA decay of the Kronecker factors
    :param stats_interval: update the factors every ``stats_interval`` updates (the sampled-Fisher pass is skipped
        in between)
    :param inverse_interval: recompute the factor decompositions every ``inverse_interval`` updates
    :param inverse_method: ``"eigen"`` (reference) or ``"cholesky"`` (cheaper on a CPU, factored damping)
    :param damping_type: ``"kronecker"`` (reference, eigen only) or ``"factored"`` (paper text); ``None`` picks the
        method's natural one
    :param warmup_steps: number of first-order warm-up updates
    :param weight_decay: L2 coefficient (also added to the damping)
    :param stats_batch_size: use at most this many samples of each batch for the factor statistics (``None``: all)
    :param stats_dtype: dtype of the per-batch factor products (``"bfloat16"``: several times faster on hardware
        with native bfloat16 matrix products, e.g. CPUs with AVX512-BF16 or AMX and Ampere GPUs; ``None``: float32)
    :param conv_factors: Kronecker factors of the convolutions (``CnnPolicy``): ``"expand"`` (KFC, the paper's;
        every output position is a row) or ``"reduce"`` (Eschenhagen et al. 2023: per sample, the mean input patch
        and the summed output gradient, ``Oh * Ow`` times fewer rows; exact for the reduce setting of a policy
        network, see :mod:`sb3_natgrad.optim.kronecker`), or a mapping from layer names to these. No effect
        without convolutions
    :param async_inverse: recompute decompositions in a background thread (seed 001 §3.1); results then depend on
        thread timing
    :param adaptive_gauss_newton: use the running Bellman-error variance as the critic's output variance in the
        Fisher (seed 001 appendix D) instead of 1
    :param normalize_advantage: standardise the advantages of each batch
    :param use_sde: generalised State-Dependent Exploration (Box actions)
    :param sde_sample_freq: resample the gSDE noise matrix every n steps (-1: once per rollout)
    :param rollout_buffer_class: rollout buffer class (default: chosen from the observation space)
    :param rollout_buffer_kwargs: keyword arguments of the rollout buffer
    :param stats_window_size: window for the rollout logging averages
    :param tensorboard_log: TensorBoard log directory (None: no logging)
    :param policy_kwargs: keyword arguments of the policy
    :param verbose: 0 none, 1 training information, 2 debug
    :param seed: random seed
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda"``
    :param _init_setup_model: build the network at creation
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
        "MinAtarPolicy": MinAtarPolicy,
    }
    policy: ActorCriticPolicy

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
        name = type(self).__name__
        check_not_recurrent(name, policy)
        check_learning_rate(name, "learning_rate", learning_rate)
        check_int(name, "n_steps", n_steps, low=1)
        check_number(name, "gamma", gamma, low=0.0, high=1.0)
        check_number(name, "gae_lambda", gae_lambda, low=0.0, high=1.0)
        check_number(name, "ent_coef", ent_coef)
        check_number(name, "vf_coef", vf_coef, low=0.0)
        check_number(name, "vf_fisher_coef", vf_fisher_coef, low=0.0)
        check_number(name, "max_grad_norm", max_grad_norm, low=0.0, low_inclusive=False)
        check_number(name, "kfac_clip", kfac_clip, low=0.0, low_inclusive=False)
        check_number(name, "damping", damping, low=0.0)
        check_number(name, "momentum", momentum, low=0.0, high=1.0, high_inclusive=False)
        check_number(name, "stat_decay", stat_decay, low=0.0, high=1.0, high_inclusive=False)
        check_int(name, "stats_interval", stats_interval, low=1)
        check_int(name, "inverse_interval", inverse_interval, low=1)
        check_choice(name, "inverse_method", inverse_method, INVERSE_METHODS)
        if damping_type is not None:
            check_choice(name, "damping_type", damping_type, DAMPING_TYPES)
            if inverse_method == "cholesky" and damping_type == "kronecker":
                raise ValueError(f"{name}: invalid damping_type='kronecker' with inverse_method='cholesky', use 'factored'")
        check_int(name, "warmup_steps", warmup_steps, low=0)
        check_number(name, "weight_decay", weight_decay, low=0.0)
        check_int(name, "stats_batch_size", stats_batch_size, low=1, allow_none=True)
        try:
            resolve_stats_dtype(stats_dtype)
        except ValueError:
            expected = f"None or one of {tuple(STATS_DTYPES)}"
            raise ValueError(f"{name}: invalid stats_dtype={stats_dtype!r}, expected {expected}") from None
        try:
            resolve_conv_factors(conv_factors)
        except ValueError:
            expected = f"one of {CONV_FACTORS} or a mapping from convolution names to one of them"
            raise ValueError(f"{name}: invalid conv_factors={conv_factors!r}, expected {expected}") from None
        if env is not None and hasattr(env, "observation_space") and hasattr(env, "action_space"):
            check_spaces(name, env.observation_space, env.action_space)

        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=None,  # checked by check_spaces with a clearer error
        )
        if self.env is not None:
            check_spaces(name, self.observation_space, self.action_space)

        self.vf_fisher_coef = vf_fisher_coef
        self.kfac_clip = kfac_clip
        self.damping = damping
        self.momentum = momentum
        self.stat_decay = stat_decay
        self.stats_interval = stats_interval
        self.inverse_interval = inverse_interval
        self.inverse_method = inverse_method
        self.damping_type = damping_type
        self.warmup_steps = warmup_steps
        self.weight_decay = weight_decay
        self.stats_batch_size = stats_batch_size
        self.stats_dtype = stats_dtype
        self.conv_factors = conv_factors
        self.async_inverse = async_inverse
        self.adaptive_gauss_newton = adaptive_gauss_newton
        self.normalize_advantage = normalize_advantage
        # Running variance of the Bellman error (adaptive Gauss-Newton, seed 001 appendix D).
        self.bellman_error_var: float | None = None
        # learn()'s log interval, to compute the KL only for updates whose logs are written

        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        check_spaces(type(self).__name__, self.observation_space, self.action_space)
        super()._setup_model()
        if not isinstance(self.policy, ActorCriticPolicy):
            raise ValueError(f"{type(self).__name__} needs an ActorCriticPolicy, got {type(self.policy).__name__}")
        # Replace the first-order optimizer the policy built by K-FAC over the whole policy (actor + critic).
        self.policy.optimizer = KFAC(
            self.policy,
            lr=self.lr_schedule(1),
            momentum=self.momentum,
            damping=self.damping,
            weight_decay=self.weight_decay,
            kl_clip=self.kfac_clip,
            stat_decay=self.stat_decay,
            stats_interval=self.stats_interval,
            inverse_interval=self.inverse_interval,
            inverse_method=self.inverse_method,
            damping_type=self.damping_type,
            warmup_steps=self.warmup_steps,
            warmup_max_grad_norm=self.max_grad_norm,
            stats_batch_size=self.stats_batch_size,
            stats_dtype=self.stats_dtype,
            conv_factors=self.conv_factors,
            async_inverse=self.async_inverse,
        )

    @property
    def kfac(self) -> KFAC:
        """The K-FAC optimizer of the policy."""
        assert isinstance(self.policy.optimizer, KFAC)
        return self.policy.optimizer

    def _fisher_loss(self, distribution: Any, values: th.Tensor, returns: th.Tensor) -> th.Tensor:
        """The sampled Fisher loss of seed 001 §3.1 (a batch mean of log-likelihoods)."""
        pg_fisher = sampled_log_prob(distribution).mean()
        variance = 1.0
        if self.adaptive_gauss_newton:
            batch_var = float(th.mean((returns - values.detach()) ** 2))
            if np.isfinite(batch_var):
                if self.bellman_error_var is None:
                    self.bellman_error_var = batch_var
                else:
                    self.bellman_error_var = self.stat_decay * self.bellman_error_var + (1 - self.stat_decay) * batch_var
            variance = max(self.bellman_error_var or 1.0, 1e-8)
        # log N(v~ | V, sigma^2) with v~ = V + sigma * eps, up to a constant: -(v~ - V)^2 / (2 sigma^2)
        sampled_values = values.detach() + np.sqrt(variance) * th.randn_like(values)
        vf_fisher = -((values - sampled_values) ** 2).mean() / (2.0 * variance)
        return pg_fisher + self.vf_fisher_coef * vf_fisher

    def train(self) -> None:
        """One ACKTR update on the whole rollout buffer."""
        self.policy.set_training_mode(True)
        kfac = self.kfac
        self._update_learning_rate(kfac)
        # batch_size=None: the whole rollout in one batch, one K-FAC step per rollout (like A2C)
        rollout_data = next(iter(self.rollout_buffer.get(batch_size=None)))
        actions = rollout_data.actions
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()

        distribution, values = distribution_and_values(self.policy, rollout_data.observations)
        old_distribution = distribution.distribution  # snapshot: SB3 reuses the distribution object
        values = values.flatten()
        log_prob = distribution.log_prob(actions)
        entropy = distribution.entropy()

        advantages = rollout_data.advantages
        if self.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        policy_loss = -(advantages * log_prob).mean()
        value_loss = F.mse_loss(rollout_data.returns, values)
        entropy_loss = -th.mean(-log_prob) if entropy is None else -th.mean(entropy)
        loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

        if not th.isfinite(loss):
            warnings.warn(
                f"{type(self).__name__}: non-finite loss ({float(loss.detach())}), the update was skipped", RuntimeWarning
            )
            kfac.counters["skipped_steps"] += 1
            kfac._release_records()
            self.logger.record("train/kfac_skipped_updates", kfac.counters["skipped_steps"])
            return

        if kfac.stats_due:
            kfac.record_fisher(self._fisher_loss(distribution, values, rollout_data.returns))
        kfac.zero_grad()
        loss.backward()
        kfac.step()

        self._n_updates += 1
        self._iterations_in_learn += 1
        if self._logs_written_after_this_update():
            # exact KL(old || new) on the batch: one more actor forward, only when the value will be logged
            with th.no_grad():
                new_distribution = self.policy.get_distribution(rollout_data.observations)
                kl = float(policy_kl(old_distribution, new_distribution).mean())
            self.logger.record("train/kl", kl)

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        info = kfac.last_step_info
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/explained_variance", explained_var)
        self.logger.record("train/entropy_loss", entropy_loss.item())
        self.logger.record("train/policy_loss", policy_loss.item())
        self.logger.record("train/value_loss", value_loss.item())
        self.logger.record("train/step_size", info.get("step_size", 0.0))
        self.logger.record("train/natural_grad_norm", info.get("natural_grad_norm", float("nan")))
        self.logger.record("train/vFv", info.get("vFv", float("nan")))
        self.logger.record("train/kfac_warmup", info.get("warmup", 0.0))
        self.logger.record("train/kfac_skipped_updates", kfac.counters["skipped_steps"])
        self.logger.record("train/kfac_inverse_fallbacks", kfac.counters["inverse_fallbacks"])
        if self.adaptive_gauss_newton and self.bellman_error_var is not None:
            self.logger.record("train/bellman_error_std", float(np.sqrt(self.bellman_error_var)))
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfACKTR],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfACKTR:
        """
        Load a saved ACKTR model (policy, K-FAC state and all settings); refuses files saved by other algorithms.

        See ``stable_baselines3.common.base_class.BaseAlgorithm.load`` for the arguments.
        """
        check_saved_algorithm(path, cls.__name__, ("kfac_clip", "vf_fisher_coef"))
        return super().load(
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )

    def learn(
        self: SelfACKTR,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 100,
        tb_log_name: str = "ACKTR",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfACKTR:
        self._start_log_schedule(log_interval)
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
