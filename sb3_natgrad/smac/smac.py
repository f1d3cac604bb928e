"""SMAC: Sherman–Morrison Actor-Critic (Huo, Dash, Stoican, Kaski, Sun — arXiv 2601.18626, 2026)."""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from functools import partial
from typing import Any, ClassVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, Schedule
from torch import nn
from torch.nn import functional as F

from sb3_natgrad.common.checks import ArgumentCheck, check_choice, check_int, check_learning_rate, check_number
from sb3_natgrad.common.gradients import flat_grad
from sb3_natgrad.common.on_policy import NaturalGradientAlgorithm, own_arguments
from sb3_natgrad.optim.sherman_morrison import (
    FISHER_MODES,
    NaturalGradientStep,
    ShermanMorrison,
    kernel_weights,
    score_projections,
)
from sb3_natgrad.smac.scores import ActorGram, index_obs, policy_scores


class _PersistentShermanMorrison(ShermanMorrison):
    """
    :class:`ShermanMorrison` as SB3 saves its objects: ``state_dict`` holds tensors (SB3's convention for every
    entry of ``get_parameters()`` that is not an optimizer) and ``load_state_dict`` takes the ``strict`` keyword
    ``set_parameters`` passes. Files saved with plain ints load too.
    """

    def state_dict(self) -> dict[str, Any]:
        """:return: the step and skip counters as 0-dim int64 tensors"""
        return {key: th.tensor(int(value), dtype=th.int64) for key, value in super().state_dict().items()}

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        """
        :param state_dict: a state produced by ``state_dict()`` (tensors or, in older files, ints)
        :param strict: require every key (``False``: load the keys present)
        """
        plain = {key: int(value) for key, value in state_dict.items()}
        if strict:
            super().load_state_dict(plain)
            return
        for key in ("num_steps", "num_skipped"):
            if key in plain:
                setattr(self, key, plain[key])


class SMAC(NaturalGradientAlgorithm):
    """
    Sherman–Morrison Actor-Critic (SMAC).

    Paper: https://arxiv.org/abs/2601.18626 (Huo et al. 2026), "Rank-1 Approximation of Inverse Fisher for Natural Policy
    Gradients in Deep Reinforcement Learning". A2C with a separate critic, whose actor takes ONE natural-gradient
    step per rollout, preconditioned by a damped empirical Fisher that is inverted matrix-free with the
    Sherman–Morrison formula (Huo et al. 2026, §3 eq. (3), §4.1 eqs. (4)-(5)) or the Woodbury identity.

    Every update (one per rollout, whole batch of ``M = n_steps * n_envs`` samples):

    1. GAE advantages ``A_i`` of the rollout (Huo et al. 2026, §4.3 eqs. (6)-(7)), optionally standardised;
    2. the ascent gradient of the A2C objective over the actor parameters ``theta`` only,
       ``g = grad mean_i A_i log pi(a_i|s_i) + ent_coef * grad mean_i H(pi(.|s_i))``;
    3. the natural direction ``d = F^-1 g`` with ``F`` the damped empirical Fisher chosen by ``fisher``:

       * ``"mean"`` (Huo et al. 2026, §5.1, the paper's experiments): ``F = lambda I + psi psi^T`` with ``psi`` the mean
         score ``grad mean_i log pi(a_i|s_i)``; ``d = (g - psi (psi^T g) / (lambda + psi^T psi)) / lambda``.
         Two backward passes and ``O(d)`` extra time and memory. ``fisher_samples=1`` gives the paper's
         one-sample Fisher ``psi = grad log pi(a_k|s_k)`` of a random sample (§4.1 eq. (4));
       * ``"sample"``: ``F = lambda I + (1/M) sum_i psi_i psi_i^T`` inverted by ``M`` incremental rank-1
         Sherman–Morrison updates (the WoodFisher recursion quoted in §4.1); per-sample scores via ``torch.func``,
         ``O(M^2 d)`` time, ``O(M d)`` memory;
       * ``"batch"``: the same matrix through the Woodbury identity in kernel form: with the Gram matrix
         ``K_ij = psi_i . psi_j`` (recorded layer by layer during the forward pass, no per-sample gradients),
         ``d = sum_i w_i psi_i`` with ``w = (K + M lambda I)^-1 A``, i.e. one more backward of ``sum_i w_i log pi_i``;

    4. the step ``theta <- theta + alpha d``: a fixed ``alpha = actor_step_size`` (``max_kl=None``), or the trust
       region ``alpha = min(actor_step_size, sqrt(2 max_kl / g^T F^-1 g))`` (quadratic KL model
       ``1/2 alpha^2 d^T F d <= max_kl``), then, as in TRPO, a backtracking line search on the *exact* batch-mean
       ``KL(pi_old || pi_new)``: while the KL exceeds ``max_kl`` the step is shrunk by
       ``min(line_search_shrinking_factor, 0.95 sqrt(max_kl / KL))`` (the quadratic model's step to just inside the
       bound, at least the factor), at most ``line_search_max_iter`` times; if none fits, the actor is left
       unchanged. The damped rank-1 model of ``"mean"`` ignores the policy's curvature, so without the search the
       real KL can exceed ``max_kl`` by orders of magnitude; ``train/line_search_fraction`` logs the fraction taken;
    5. the critic (a separate network) minimises ``mean((R_i - V(s_i))^2)`` with its own Adam optimizer for
       ``n_critic_updates`` epochs of minibatches of ``batch_size`` (Huo et al. 2026, §4.3).

    *Which ``fisher``?* With a large batch the mean score of ``"mean"`` is tiny (``E_a[grad log pi] = 0``), so its
    step is plain normalised gradient ascent; ``"batch"`` uses the whole empirical Fisher of the batch and is the mode
    that behaves like a natural gradient, for one ``M x M`` Gram matrix and solve per update; ``"sample"`` computes
    the same direction incrementally (a cross-check). ``train/fisher_correction = |lambda d - g| / |g|`` (0 for
    SGD) shows how far a step is from SGD. Measurements: ``benchmarks/results/smac/fisher_modes.md``.

    *Fisher sub-sampling.* ``fisher_samples=k`` builds the empirical Fisher from ``k`` random samples of the batch
    (``"mean"``: ``psi`` is their mean score) while ``g`` always uses the whole batch; ``"batch"`` then solves with
    the general Woodbury form ``d = (g - U (K + k lambda I)^-1 U^T g) / lambda`` (``U^T g`` by double backward).

    *Entropy.* With ``ent_coef != 0`` the exact entropy gradient is preconditioned in every mode (``"batch"``
    switches from the kernel form to the general Woodbury form for it). Distributions without a closed-form
    entropy use ``-mean(log pi)``, whose gradient is folded into the kernel coefficients exactly.

    *Actor and critic parameters* are told apart once, from the autograd graph: the actor is every trainable
    parameter ``log pi`` depends on; the critic is every other parameter the value depends on. Parameters shared by
    both (``share_features_extractor=True`` with a CNN) belong to the actor and are moved by the natural step only
    (as in sb3-contrib's TRPO); ``share_features_extractor=False`` gives the critic its own extractor.
    The policy's ``optimizer`` (``policy_kwargs`` ``optimizer_class``/``optimizer_kwargs``, Adam by default) is
    rebuilt over the critic parameters.

    *Non-finite values.* A non-finite objective, gradient, Fisher or step skips the actor update with a
    ``RuntimeWarning`` (parameters untouched; ``train/skipped_updates`` counts them); a step whose new policy is not
    finite is reverted; a non-finite critic loss skips that critic minibatch.

    Defaults: ``n_steps=1000``, ``gamma=0.99``, ``gae_lambda=0.9`` and ``damping=0.1`` are Huo et al. 2026, table A.5
    (classic control; ``damping=1.0`` for MuJoCo); ``fisher="mean"`` is the paper's (§5.1). The critic's
    ``learning_rate=1e-3``, ``n_critic_updates=10`` and ``normalize_advantage=True`` are sb3-contrib TRPO's,
    ``max_kl=0.01`` is TRPO's ``target_kl``; ``actor_step_size=1.0`` only caps the trust-region step. Sources and
    checks: ``benchmarks/results/smac/fisher_modes.md``.

    :param policy: ``"MlpPolicy"``, ``"CnnPolicy"``, ``"MultiInputPolicy"`` or an ``ActorCriticPolicy`` subclass
    :param env: the environment (or its Gymnasium id)
    :param learning_rate: the critic optimizer's learning rate; a float or a schedule of the remaining progress
    :param actor_step_size: the actor step ``alpha`` (``max_kl=None``) or its maximum ``alpha_max`` (trust region);
        a float or a schedule of the remaining progress (a step size of 0 skips the actor update)
    :param n_steps: steps per environment per update (batch = ``n_steps * n_envs``)
    :param batch_size: critic minibatch size (``None``: the whole batch)
    :param n_critic_updates: critic epochs over the batch per update
    :param gamma: discount factor
    :param gae_lambda: GAE lambda
    :param ent_coef: entropy coefficient of the actor objective
    :param damping: Tikhonov damping ``lambda > 0`` of the empirical Fisher
    :param fisher: ``"mean"``, ``"sample"`` or ``"batch"`` (see above)
    :param max_kl: trust-region radius ``delta`` of the quadratic KL model (with the 1/2) and bound on the exact KL of
        the line search, or ``None`` for the fixed step ``actor_step_size``
    :param line_search_shrinking_factor: the least shrinking, in (0, 1), of each line-search try (sb3-contrib TRPO's
        fixed factor 0.8)
    :param line_search_max_iter: most shrinkings of the line search (0: no line search, the quadratic model alone)
    :param fisher_samples: number of random samples of the batch in the empirical Fisher (``None``: all)
    :param normalize_advantage: standardise the advantages of each batch
    :param max_consecutive_skips: stop with an error that says what is not finite after this many skipped updates in
        a row (``None``: never)
    :param max_grad_norm: clip the critic's gradient norm (``None``: no clipping)
    :param use_sde: generalised State-Dependent Exploration (Box actions)
    :param sde_sample_freq: resample the gSDE noise matrix every n steps (-1: once per rollout)
    :param rollout_buffer_class: rollout buffer class (default: chosen from the observation space)
    :param rollout_buffer_kwargs: keyword arguments of the rollout buffer
    :param stats_window_size: window for the rollout logging averages
    :param tensorboard_log: TensorBoard log directory (None: no logging)
    :param policy_kwargs: keyword arguments of the policy (``optimizer_class``/``optimizer_kwargs`` set the critic's
        optimizer)
    :param verbose: 0 none, 1 training information, 2 debug
    :param seed: random seed
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda"``
    :param _init_setup_model: build the network at creation
    """

    argument_checks: ClassVar[dict[str, ArgumentCheck]] = {
        "actor_step_size": check_learning_rate,
        "batch_size": partial(check_int, low=1, allow_none=True),
        "n_critic_updates": partial(check_int, low=0),
        "damping": partial(check_number, low=0.0, low_inclusive=False),
        "fisher": partial(check_choice, choices=FISHER_MODES),
        "max_kl": partial(check_number, low=0.0, low_inclusive=False, allow_none=True),
        "fisher_samples": partial(check_int, low=1, allow_none=True),
        "line_search_shrinking_factor": partial(check_number, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False),
        "line_search_max_iter": partial(check_int, low=0),
    }
    saved_markers = ("actor_step_size", "fisher")
    default_log_interval = 1

    actor_step_size: float | Schedule
    batch_size: int | None
    n_critic_updates: int
    damping: float
    fisher: str
    max_kl: float | None
    fisher_samples: int | None
    normalize_advantage: bool
    # class defaults: models saved before the line search existed load with it
    line_search_shrinking_factor: float = 0.8
    line_search_max_iter: int = 10

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-3,
        actor_step_size: float | Schedule = 1.0,
        n_steps: int = 1000,
        batch_size: int | None = 250,
        n_critic_updates: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.9,
        ent_coef: float = 0.0,
        damping: float = 0.1,
        fisher: str = "mean",
        max_kl: float | None = 0.01,
        fisher_samples: int | None = None,
        line_search_shrinking_factor: float = 0.8,
        line_search_max_iter: int = 10,
        normalize_advantage: bool = True,
        max_consecutive_skips: int | None = 10,
        max_grad_norm: float | None = None,
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

    # -- set-up --------------------------------------------------------------------------------------------------

    def _setup_model(self) -> None:
        batch = self.n_steps * self.n_envs
        if self.batch_size is not None and self.batch_size > batch:
            # as SB3's PPO: a warning, and the rollout is one (truncated) minibatch
            warnings.warn(
                f"{type(self).__name__}: batch_size={self.batch_size} is larger than the rollout (n_steps * n_envs = "
                f"{batch}): each critic epoch is one minibatch of {batch} samples",
                UserWarning,
                stacklevel=2,
            )
        super()._setup_model()
        self._actor_params, self._critic_params = self._split_parameters()
        # The policy's optimizer now trains the critic alone (Huo et al. 2026, §4.3: MSE with Adam).
        self.policy.optimizer = self.policy.optimizer_class(  # type: ignore[call-arg]
            self._critic_params, lr=self.lr_schedule(1), **self.policy.optimizer_kwargs
        )
        # step_size is set from actor_step_size before every use.
        self.preconditioner = _PersistentShermanMorrison(damping=self.damping, fisher=self.fisher, max_kl=self.max_kl)
        # "batch": the Gram matrix of the scores, recorded layer by layer during the forward pass
        self._actor_gram = ActorGram(self.policy, self._actor_params) if self.fisher == "batch" else None

    def _split_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Actor = trainable parameters ``log pi`` depends on; critic = the other ones the value depends on."""
        policy = self.policy
        params = [p for p in policy.parameters() if p.requires_grad]
        was_training = policy.training
        policy.set_training_mode(False)
        try:
            obs, _ = policy.obs_to_tensor(self.observation_space.sample())
            with th.enable_grad():
                distribution = policy.get_distribution(obs)
                log_prob = distribution.log_prob(distribution.mode().detach())
                actor_grads = th.autograd.grad(log_prob.sum(), params, allow_unused=True)
                critic_grads = th.autograd.grad(policy.predict_values(obs).sum(), params, allow_unused=True)
        finally:
            policy.set_training_mode(was_training)
        actor = [p for p, g in zip(params, actor_grads, strict=True) if g is not None]
        critic = [p for p, g, ga in zip(params, critic_grads, actor_grads, strict=True) if g is not None and ga is None]
        name = type(self).__name__
        if not actor:
            raise ValueError(f"{name}: the policy has no trainable actor parameter")
        if not critic:
            raise ValueError(f"{name}: the policy has no critic parameter separate from the actor")
        return actor, critic

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_actor_params",
            "_critic_params",
            "_actor_gram",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        # The preconditioner's counters (plain ints, weights_only-loadable) are saved next to the critic's optimizer.
        return ["policy", "policy.optimizer", "preconditioner"], []

    @staticmethod
    def _skipped_step(reason: str) -> NaturalGradientStep:
        return NaturalGradientStep(direction=None, step_size=0.0, skipped=True, reason=reason)

    # -- the actor step ------------------------------------------------------------------------------------------

    def _schedules(self) -> dict[str, Any]:
        step_size = self.actor_step_size
        return {**super()._schedules(), "actor_step_size": step_size if callable(step_size) else lambda _: step_size}

    def _current_actor_step_size(self) -> float:
        value = self.actor_step_size
        return float(value(self._current_progress_remaining) if callable(value) else value)

    def _natural_step(
        self, obs: PyTorchObs, actions: th.Tensor, advantages: th.Tensor
    ) -> tuple[NaturalGradientStep, th.Tensor | None, Distribution, dict[str, float]]:
        """
        Forward pass, A2C objective and natural direction ``F^-1 g`` (Huo et al. 2026, §4.1 eq. (5), §5.1).

        :return: the step, the flat direction ``d`` (``None`` if skipped), the pre-update distribution, and the
            losses and extra statistics to log
        """
        params = self._actor_params
        pre = self.preconditioner
        num = advantages.shape[0]
        subset = None
        if self.fisher_samples is not None and self.fisher_samples < num:
            subset = th.randperm(num, device=advantages.device)[: self.fisher_samples]
        gram = self._actor_gram
        with gram.recording() if gram is not None and subset is None else contextlib.nullcontext():
            distribution = self.policy.get_distribution(obs)
        # SB3 distributions are mutated in place by the next forward: keep our own (shallow) copy.
        distribution = copy.copy(distribution)
        log_prob = distribution.log_prob(actions)
        entropy = distribution.entropy()
        entropy_folded = entropy is None
        entropy_term = -log_prob.mean() if entropy is None else entropy.mean()
        policy_objective = (advantages * log_prob).mean()
        objective = policy_objective + self.ent_coef * entropy_term
        info = {"policy_loss": -policy_objective.item(), "entropy_loss": -entropy_term.item()}

        if not math.isfinite(objective.item()):
            if gram is not None:
                gram.clear()
            return self._skipped_step(f"non-finite objective ({objective.item()})"), None, distribution, info

        lam = self.damping
        if self.fisher == "mean":
            # Huo et al. 2026, §5.1: F = lambda I + psi psi^T with psi the mean score (of the subset: fisher_samples).
            grad = flat_grad(objective, params, retain_graph=True)
            fisher_log_prob = log_prob if subset is None else log_prob[subset]
            score = flat_grad(fisher_log_prob.mean(), params)
            step = pre.compute(grad, score)
            direction = step.direction
        elif self.fisher == "sample":
            # WoodFisher recursion over per-sample scores (Huo et al. 2026, §4.1, incremental Sherman-Morrison), in float64.
            grad = flat_grad(objective, params)
            fisher_obs = obs if subset is None else index_obs(obs, subset)
            fisher_actions = actions if subset is None else actions[subset]
            scores = policy_scores(self.policy, fisher_obs, fisher_actions, params)
            step = pre.compute(grad.double(), scores.double())
            direction = None if step.direction is None else step.direction.to(grad.dtype)
        elif subset is None and (self.ent_coef == 0.0 or entropy_folded):
            # Kernel form (Woodbury identity): g = (1/M) U a  =>  F^-1 g = U (K + M lambda I)^-1 a.
            coefficients = advantages.detach()
            if entropy_folded and self.ent_coef != 0.0:
                coefficients = coefficients - self.ent_coef  # grad of -ent_coef * mean(log pi) = (1/M) U (-ent_coef)
            assert gram is not None
            gram_matrix = gram.gram(distribution, log_prob, obs, actions)
            step = pre.compute_kernel(gram_matrix, coefficients)
            direction = None
            if not step.skipped:
                assert step.weights is not None
                direction = flat_grad((step.weights.detach().to(log_prob.dtype) * log_prob).sum(), params)
                # |lambda d - g| / |g| from K alone: lambda d - g = U (lambda w - a / M).
                residual = lam * step.weights.double() - coefficients.double() / num
                gram64 = gram_matrix.double()
                correction_sq = float(residual @ gram64 @ residual)
                grad_sq = float(coefficients.double() @ gram64 @ coefficients.double()) / num**2
                info["fisher_correction"] = math.sqrt(max(correction_sq, 0.0) / grad_sq) if grad_sq > 0 else 0.0
        else:
            # General Woodbury form for an arbitrary g (exact entropy gradient, or a sub-sampled Fisher):
            # F^-1 g = (g - U (K + k lambda I)^-1 U^T g) / lambda (U^T g by double backward).
            assert gram is not None
            grad = flat_grad(objective, params, retain_graph=True)
            if subset is None:
                fisher_dist, fisher_log_prob, fisher_obs, fisher_actions = distribution, log_prob, obs, actions
            else:
                fisher_obs, fisher_actions = index_obs(obs, subset), actions[subset]
                with gram.recording():
                    fisher_dist = copy.copy(self.policy.get_distribution(fisher_obs))
                fisher_log_prob = fisher_dist.log_prob(fisher_actions)
            gram_matrix = gram.gram(fisher_dist, fisher_log_prob, fisher_obs, fisher_actions)
            if not th.isfinite(grad).all() or not th.isfinite(gram_matrix).all():
                return self._skipped_step("non-finite gradient or Gram matrix"), None, distribution, info
            projections = score_projections(fisher_log_prob, params, grad)
            weights = kernel_weights(gram_matrix, projections, lam).detach()
            direction = (grad - flat_grad((weights * fisher_log_prob).sum(), params)) / lam
            step = pre.step_from_direction(grad, direction)
            direction = step.direction

        if step.skipped or direction is None:
            return step, None, distribution, info
        if "fisher_correction" not in info:
            # How far the preconditioned step is from plain SGD with learning rate alpha / lambda.
            info["fisher_correction"] = float(th.linalg.vector_norm(lam * direction - grad) / grad.norm().clamp_min(1e-30))
        return step, direction, distribution, info

    def _apply_update(self, update: th.Tensor) -> None:
        offset = 0
        with th.no_grad():
            for param in self._actor_params:
                numel = param.numel()
                param.add_(update[offset : offset + numel].view_as(param))
                offset += numel

    def _actor_update(self, obs: PyTorchObs, actions: th.Tensor, advantages: th.Tensor) -> dict[str, float]:
        """One natural-gradient step of the actor; returns the statistics to log."""
        max_step = self._current_actor_step_size()
        info: dict[str, float] = {"kl": 0.0, "step_size": 0.0, "max_step_size": max_step}
        if max_step <= 0.0:  # e.g. the end of a linearly decaying schedule: nothing to do
            with th.no_grad():
                distribution = self.policy.get_distribution(obs)
                log_prob = distribution.log_prob(actions)
                entropy = distribution.entropy()
                info["policy_loss"] = -float((advantages * log_prob).mean())
                info["entropy_loss"] = -float(-log_prob.mean() if entropy is None else entropy.mean())
            return info
        self.preconditioner.step_size = max_step

        step, direction, old_distribution, extra = self._natural_step(obs, actions, advantages)
        info.update(extra)
        if step.skipped or direction is None:
            self._skip_update(str(step.reason), what="actor update")
            return info
        update = step.step_size * direction
        if not bool(th.isfinite(update).all()):
            self._skip_update(f"the step overflowed (step size {step.step_size:g})", what="actor update")
            return info
        backup = [p.detach().clone() for p in self._actor_params]
        fraction, kl = self._line_search(obs, old_distribution, backup, update)
        if not self._keep_if_finite(self._actor_params, backup, kl, what="actor update"):
            return info
        info.update({key: float(value) for key, value in step.stats.items()})
        info.update(kl=kl, line_search_fraction=fraction, step_size=fraction * step.step_size)
        return info

    def _line_search(
        self, obs: PyTorchObs, old_distribution: Distribution, backup: list[th.Tensor], update: th.Tensor
    ) -> tuple[float, float]:
        """
        Take ``update``, shrunk until the exact batch-mean KL is at most ``max_kl`` (TRPO's backtracking line search).

        :return: the fraction of ``update`` taken (0: none fitted, the actor is back at ``backup``) and the exact KL
        """
        self._apply_update(update)
        if self.max_kl is None or self.line_search_max_iter == 0:
            return 1.0, self._exact_kl(old_distribution, obs)
        fraction, kl = self._backtrack_to_kl(
            self._actor_params,
            backup,
            old_distribution,
            obs,
            self.max_kl,
            self.line_search_shrinking_factor,
            self.line_search_max_iter,
        )
        if math.isfinite(kl) and kl <= self.max_kl:
            return fraction, kl
        self._restore_actor(backup)  # no step within the trust region: leave the actor unchanged
        return 0.0, 0.0

    def _restore_actor(self, backup: list[th.Tensor]) -> None:
        with th.no_grad():
            for param, saved in zip(self._actor_params, backup, strict=True):
                param.copy_(saved)

    # -- the critic ----------------------------------------------------------------------------------------------

    def _critic_update(self) -> float:
        """``n_critic_updates`` epochs of minibatch MSE regression of the critic on the returns (Huo et al. 2026, §4.3)."""
        optimizer = self.policy.optimizer
        value_losses = []
        nonfinite = 0
        for _ in range(self.n_critic_updates):
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                values = self.policy.predict_values(rollout_data.observations).flatten()
                value_loss = F.mse_loss(rollout_data.returns, values)
                if not th.isfinite(value_loss):
                    nonfinite += 1
                    continue
                # Gradients of the critic's own parameters only (shared parameters belong to the actor).
                grads = th.autograd.grad(value_loss, self._critic_params, allow_unused=True)
                if not all(grad is None or bool(th.isfinite(grad).all()) for grad in grads):
                    nonfinite += 1
                    continue
                for param, grad in zip(self._critic_params, grads, strict=True):
                    param.grad = grad
                if self.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(self._critic_params, self.max_grad_norm)
                optimizer.step()
                value_losses.append(value_loss.item())
        if nonfinite:
            warnings.warn(
                f"{type(self).__name__}: {nonfinite} critic minibatch(es) with a non-finite loss or gradient were skipped",
                RuntimeWarning,
            )
        if not value_losses:
            with th.no_grad():
                data = next(iter(self.rollout_buffer.get(batch_size=None)))
                return float(F.mse_loss(data.returns, self.policy.predict_values(data.observations).flatten()))
        return float(np.mean(value_losses))

    # -- training loop -------------------------------------------------------------------------------------------

    def train(self) -> None:
        """One SMAC update on the whole rollout: a natural-gradient step of the actor, then the critic's epochs."""
        self._begin_update(self.policy.optimizer)
        data, actions = self._whole_batch()
        info = self._actor_update(data.observations, actions, self._standardized(data.advantages))
        value_loss = self._critic_update()
        nan = float("nan")
        self._finish_update(
            policy_loss=info.get("policy_loss", nan),
            value_loss=value_loss,
            entropy_loss=info.get("entropy_loss", nan),
            kl=info["kl"],
            step_size=info["step_size"],
            actor_step_size=info["max_step_size"],
            natural_grad_norm=info.get("natural_grad_norm", nan),
            grad_norm=info.get("grad_norm", nan),
            fisher_alignment=info.get("fisher_alignment", nan),
            fisher_correction=info.get("fisher_correction", nan),
            line_search_fraction=info.get("line_search_fraction", nan),
            kl_quadratic=info.get("kl_estimate", nan),
            damping=self.damping,
        )
