"""ACKTR (Wu et al. 2017) as an RLlib algorithm: PPO's sampling, GAE and learner machinery with A2C's loss and K-FAC."""

from __future__ import annotations

import inspect
import os
from typing import Any

import ray
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.algorithms.ppo import PPO, PPOConfig
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.metrics import (
    ALL_MODULES,
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    NUM_MODULE_STEPS_TRAINED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)

from sb3_natgrad.acktr.acktr import ACKTR as SB3ACKTR
from sb3_natgrad.acktr.kfac_options import OPTION_NAMES, check_acktr_kfac_arguments
from sb3_natgrad.common.checks import check_number

#: the config's K-FAC options under ACKTR's (Stable-Baselines3) names, with the SB3 ACKTR's defaults
KFAC_OPTIONS: dict[str, Any] = {name: inspect.signature(SB3ACKTR.__init__).parameters[name].default for name in OPTION_NAMES}
#: ACKTR-specific options that are not K-FAC's (defaults: the SB3 ACKTR's, and rewards left as they are)
ACKTR_OPTIONS: dict[str, Any] = {
    "vf_fisher_coef": inspect.signature(SB3ACKTR.__init__).parameters["vf_fisher_coef"].default,
    "max_consecutive_skips": inspect.signature(SB3ACKTR.__init__).parameters["max_consecutive_skips"].default,
    "kl_target": inspect.signature(SB3ACKTR.__init__).parameters["kl_target"].default,
    "normalize_rewards": False,
}


class ACKTRConfig(PPOConfig):
    """
    Configuration of :class:`ACKTR` on RLlib's new API stack. Everything of ``PPOConfig`` applies (env runners,
    learners, the RLModule, ``lr`` as a float or an RLlib schedule ``[[timestep, value], ...]``, ``gamma``,
    ``lambda_``, ``vf_loss_coeff``, ``entropy_coeff``, ``train_batch_size``), except PPO's clipping, KL penalty,
    epochs and minibatches: ACKTR takes one natural-gradient step on each whole batch.

    Each update minimises A2C's loss ``-mean(A log pi(a|s)) + vf_loss_coeff * mean((R - V)^2) - entropy_coeff *
    entropy`` with K-FAC (:class:`~sb3_natgrad.optim.KFAC`) over actor and critic, the sampled Fisher of Wu et al. 2017
    §3.1 (actions drawn from the policy, plus ``vf_fisher_coef`` times the critic's Gaussian log-likelihood) and the
    trust region ``kfac_clip`` (§3.2). RLlib's added one-step-per-episode rows (``loss_mask``) enter neither the loss
    nor the factors. RLlib's GAE connector always standardises the advantages.

    Defaults are the Stable-Baselines3 ACKTR's (``vf_loss_coeff`` 0.25, ``entropy_coeff`` 0.01, ``lambda_`` 1.0,
    ``kfac_clip`` 0.001, 10 first-order warm-up steps clipped to ``max_grad_norm``), with a batch of 640 steps and
    ``lr`` 0.25 held constant (SB3 decays it linearly to 0: pass ``lr=[[0, 0.25], [total_steps, 0.0]]``), on RLlib's
    default network. Returns in the hundreds let the critic's Gauss-Newton term use up the shared trust region:
    ``normalize_rewards=True`` divides rewards by the running scale of the discounted return
    (:class:`~sb3_natgrad.rllib.NormalizeRewards`). ``kl_target`` (off by default) adapts the step size to the exact
    KL of each update as :class:`sb3_natgrad.ACKTR` does (:func:`~sb3_natgrad.acktr.step_size.adapted_step_scale`):
    the learner multiplies RLlib's ``lr`` (or its schedule's value) by a factor, reported as ``kl_step_scale`` next
    to the update's ``kl``, and checkpointed with the learner.

    With ``num_learners > 1`` the learners wrap the module in ``DistributedDataParallel`` (gradients averaged) and
    K-FAC sums its factor statistics over the learners (:func:`~sb3_natgrad.optim.all_reduce_sum`), so every learner
    holds the statistics of the whole batch; each learner then computes the same decompositions itself: on identical
    factors the results are identical, and this costs no more wall clock than computing them on one learner and
    broadcasting megabytes of eigenbases, which the others would wait for.

    Example::

        config = ACKTRConfig().environment("CartPole-v1").training(normalize_rewards=True)
        algo = config.build_algo()
        algo.train()
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or ACKTR)
        self.lr = 0.25
        self.train_batch_size = 640
        self.num_epochs = 1
        self.minibatch_size = None
        self.shuffle_batch_per_epoch = False
        self.use_kl_loss = False
        self.lambda_ = 1.0
        self.vf_loss_coeff = 0.25
        self.entropy_coeff = 0.01
        self.grad_clip = None
        # K-FAC skips a step with a non-finite gradient itself (RLlib's default would zero the NaNs and step)
        self.torch_skip_nan_gradients = True
        for key, value in {**KFAC_OPTIONS, **ACKTR_OPTIONS}.items():
            setattr(self, key, value)

    def training(self, **kwargs: Any) -> ACKTRConfig:  # type: ignore[override]
        """
        PPOConfig's ``training()`` plus ACKTR's options: ``kfac_clip``, ``vf_fisher_coef``, ``damping``,
        ``momentum``, ``stat_decay``, ``stats_interval``, ``inverse_interval``, ``inverse_method``, ``damping_type``,
        ``warmup_steps``, ``max_grad_norm`` (the warm-up's clip), ``weight_decay``, ``stats_batch_size``,
        ``stats_dtype``, ``conv_factors``, ``async_inverse``, ``normalize_rewards``, ``max_consecutive_skips`` and
        ``kl_target``, with the meaning they have in :class:`sb3_natgrad.ACKTR`.
        """
        own = {key: kwargs.pop(key) for key in list(kwargs) if key in KFAC_OPTIONS or key in ACKTR_OPTIONS}
        super().training(**kwargs)
        for key, value in own.items():
            if value is not NotProvided:
                setattr(self, key, value)
        return self

    def get_default_learner_class(self) -> type:
        from sb3_natgrad.rllib.learner import ACKTRTorchLearner

        return ACKTRTorchLearner

    def validate(self) -> None:
        # before PPO's checks, which assume the new API stack's minibatch settings
        if not (self.enable_rl_module_and_learner and self.enable_env_runner_and_connector_v2):
            self._value_error("ACKTR on RLlib runs on the new API stack only; keep config.api_stack() at its defaults")
        super().validate()
        if self.framework_str != "torch":
            self._value_error(f"ACKTR on RLlib needs framework='torch', got {self.framework_str!r}")
        if self.num_epochs != 1 or self.minibatch_size is not None:
            self._value_error(
                f"ACKTR takes one natural-gradient step per batch: num_epochs must be 1 and minibatch_size None, got "
                f"num_epochs={self.num_epochs}, minibatch_size={self.minibatch_size}"
            )
        if self.use_kl_loss:
            self._value_error("ACKTR's trust region is kfac_clip; use_kl_loss=True (PPO's KL penalty) is not supported")
        if self.model_config.get("use_lstm") or self.model_config.get("use_attention"):
            self._value_error(
                "ACKTR on RLlib supports feed-forward RLModules only (K-FAC covers Linear and Conv2d layers), got "
                f"use_lstm={self.model_config.get('use_lstm')}, use_attention={self.model_config.get('use_attention')}"
            )
        if self.async_inverse and self.num_learners > 1:
            self._value_error(
                f"async_inverse=True with num_learners={self.num_learners}: background decompositions finish at "
                "different times on each learner and their weights would drift apart; use async_inverse=False"
            )
        if self.is_multi_agent:
            self._value_error("ACKTR on RLlib supports single-agent environments only")
        try:
            check_acktr_kfac_arguments("ACKTRConfig", {key: getattr(self, key) for key in KFAC_OPTIONS})
        except (TypeError, ValueError) as error:
            self._value_error(str(error))
        for key in ("vf_fisher_coef", "vf_loss_coeff"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                self._value_error(f"ACKTRConfig: invalid {key}={value!r}, expected a number >= 0")
        try:
            check_number("ACKTRConfig", "kl_target", self.kl_target, low=0.0, low_inclusive=False, allow_none=True)
        except ValueError as error:
            self._value_error(str(error))
        skips = self.max_consecutive_skips
        if skips is not None and (not isinstance(skips, int) or isinstance(skips, bool) or skips < 1):
            self._value_error(f"ACKTRConfig: invalid max_consecutive_skips={skips!r}, expected an int >= 1 or None")

    def required_cpus(self) -> float:
        """
        CPUs the remote actors of this config request: the env runners (also for evaluation), the learners (with
        ``num_learners >= 1``; ``"auto"`` is 1 CPU without a GPU, 0 with one) and their aggregator actors.
        """
        runners = self.num_env_runners + (self.evaluation_num_env_runners or 0)
        cpus = float(runners * self.num_cpus_per_env_runner)
        if self.num_cpus_per_learner == "auto":
            per_learner = 0.0 if self.num_gpus_per_learner else 1.0
        else:
            per_learner = float(self.num_cpus_per_learner)
        per_learner += getattr(self, "num_aggregator_actors_per_learner", 0) or 0
        if self.num_learners > 0:
            cpus += self.num_learners * per_learner
        else:
            cpus += getattr(self, "num_aggregator_actors_per_learner", 0) or 0
        return cpus


class ACKTR(PPO):
    """
    ACKTR (Wu et al. 2017) on RLlib: each iteration samples ``train_batch_size`` env steps with the env runners,
    takes one K-FAC step on them on every learner (each on its shard) and syncs the weights back.
    """

    @classmethod
    def get_default_config(cls) -> ACKTRConfig:
        return ACKTRConfig()

    def setup(self, config: Any) -> None:
        # RLlib does not check that its actors fit the cluster: they would wait for CPUs forever. Without a running
        # cluster, Ray starts one on this machine's CPUs at the first actor.
        if isinstance(config, ACKTRConfig):
            available = ray.cluster_resources().get("CPU", 0.0) if ray.is_initialized() else float(os.cpu_count() or 1)
            needed = config.required_cpus()
            if needed > available + 1e-9:
                raise ValueError(
                    f"ACKTR: this config needs {needed:g} CPUs for its Ray actors ({config.num_env_runners} env runners x "
                    f"{config.num_cpus_per_env_runner}, {config.num_learners} learners) but the Ray cluster has "
                    f"{available:g}: lower num_env_runners / num_learners or start Ray with more CPUs"
                )
        super().setup(config)

    def training_step(self) -> None:
        """Sample, one ACKTR update per learner on its shard of the batch, sync the weights to the env runners."""
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            episodes, runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group,
                max_env_steps=self.config.total_train_batch_size,
                sample_timeout_s=self.config.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
            if not episodes:
                return
            self.metrics.aggregate(runner_results, key=ENV_RUNNER_RESULTS)
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            timesteps = {
                NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek((ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME)),
                NUM_MODULE_STEPS_TRAINED_LIFETIME: self.metrics.peek(
                    (LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME), default=0
                ),
            }
            # no minibatch arguments: each learner takes exactly one step on its whole shard
            learner_results = self.learner_group.update(episodes=episodes, timesteps=timesteps)
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.learner_group,
                policies=set(learner_results[0]) - {ALL_MODULES},
                inference_only=True,
            )
