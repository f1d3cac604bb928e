"""SMAC: Sherman–Morrison Actor-Critic (Huo, Dash, Stoican, Kaski, Sun — arXiv 2601.18626, 2026)."""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any, ClassVar

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, Schedule

from sb3_natgrad.common.checks import ArgumentCheck
from sb3_natgrad.common.distributions import mean_entropy
from sb3_natgrad.common.on_policy import NaturalGradientAlgorithm, own_arguments
from sb3_natgrad.common.parameters import add_flat_update, restore_parameters
from sb3_natgrad.smac.checks import ARGUMENT_CHECKS
from sb3_natgrad.smac.critic import fit_critic, warn_if_batch_exceeds_rollout
from sb3_natgrad.smac.directions import (
    NaturalDirection,
    batch_kernel_direction,
    batch_woodbury_direction,
    fisher_subset,
    mean_fisher_direction,
    sample_fisher_direction,
)
from sb3_natgrad.smac.parameters import split_actor_critic
from sb3_natgrad.smac.preconditioner import PersistentShermanMorrison
from sb3_natgrad.smac.scores import ActorGram, index_obs


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
    3. the natural direction ``d = F^-1 g`` with ``F`` the damped empirical Fisher of the scores
       ``psi_i = grad log pi(a_i|s_i)`` chosen by ``fisher``: ``"mean"`` (the paper's experiments, §5.1) inverts
       ``lambda I + psi psi^T`` with the mean score ``psi``, ``"batch"`` and ``"sample"`` invert
       ``lambda I + (1/M) sum_i psi_i psi_i^T`` by the Woodbury identity or ``M`` rank-1 Sherman–Morrison updates;
       ``"batch"`` is the mode that behaves like a natural gradient with a large batch. Each mode's equation and
       cost, ``fisher_samples`` and the entropy term: :mod:`sb3_natgrad.smac.directions`;
    4. the step ``theta <- theta + alpha d``: a fixed ``alpha = actor_step_size`` (``max_kl=None``), or the trust
       region ``alpha = min(actor_step_size, sqrt(2 max_kl / g^T F^-1 g))`` (quadratic KL model
       ``1/2 alpha^2 d^T F d <= max_kl``), then, as in TRPO, a backtracking line search shrinks the step until the
       *exact* batch-mean ``KL(pi_old || pi_new)`` is at most ``max_kl`` (none fits: the actor is left unchanged;
       ``train/line_search_fraction`` logs the fraction taken). The damped rank-1 model of ``"mean"`` ignores the
       policy's curvature: without the search the real KL can exceed ``max_kl`` by orders of magnitude
       (``benchmarks/results/smac/trust_region.md``);
    5. the critic (a separate network) minimises ``mean((R_i - V(s_i))^2)`` with its own Adam optimizer for
       ``n_critic_updates`` epochs of minibatches of ``batch_size`` (Huo et al. 2026, §4.3).

    *Actor and critic parameters* are told apart from the autograd graph; parameters shared by both belong to the
    actor and only the natural step moves them (:mod:`sb3_natgrad.smac.parameters`). The policy's ``optimizer``
    (``policy_kwargs`` ``optimizer_class``/``optimizer_kwargs``, Adam by default) trains the critic's own parameters.

    *Non-finite values.* A non-finite objective, gradient, Fisher or step skips the actor update with a
    ``RuntimeWarning`` (parameters untouched; ``train/skipped_updates`` counts them); a step whose new policy is not
    finite is reverted; a non-finite critic loss skips that critic minibatch.

    Defaults: ``n_steps=1000``, ``gamma=0.99``, ``gae_lambda=0.9`` and ``damping=0.1`` are Huo et al. 2026, table A.5
    (classic control; ``damping=1.0`` for MuJoCo); ``fisher="mean"`` is the paper's (§5.1). The critic's
    ``learning_rate=1e-3``, ``n_critic_updates=10`` and ``normalize_advantage=True`` are sb3-contrib TRPO's,
    ``max_kl=0.01`` is TRPO's ``target_kl``; ``actor_step_size=1.0`` only caps the trust-region step. Sources and
    checks: ``benchmarks/results/smac/fisher_modes.md``.

    :param learning_rate: the critic optimizer's learning rate; a float or a schedule of the remaining progress
    :param actor_step_size: the actor step ``alpha`` (``max_kl=None``) or its maximum ``alpha_max`` (trust region);
        a float or a schedule of the remaining progress (a step size of 0 skips the actor update)
    :param n_steps: steps per environment per update (batch = ``n_steps * n_envs``)
    :param batch_size: critic minibatch size (``None``: the whole batch)
    :param n_critic_updates: critic epochs over the batch per update
    :param gae_lambda: GAE lambda
    :param ent_coef: entropy coefficient of the actor objective
    :param damping: Tikhonov damping ``lambda > 0`` of the empirical Fisher
    :param fisher: ``"mean"``, ``"sample"`` or ``"batch"`` (see step 3)
    :param max_kl: trust-region radius ``delta`` of the quadratic KL model (with the 1/2) and bound on the exact KL of
        the line search, or ``None`` for the fixed step ``actor_step_size``
    :param line_search_shrinking_factor: the least shrinking, in (0, 1), of each line-search try (sb3-contrib TRPO's
        fixed factor 0.8)
    :param line_search_max_iter: most shrinkings of the line search (0: no line search, the quadratic model alone)
    :param fisher_samples: number of random samples of the batch in the empirical Fisher (``None``: all)
    :param max_grad_norm: clip the critic's gradient norm (``None``: no clipping)
    :param policy_kwargs: keyword arguments of the policy (``optimizer_class``/``optimizer_kwargs`` set the critic's
        optimizer)
    """

    argument_checks: ClassVar[dict[str, ArgumentCheck]] = ARGUMENT_CHECKS
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
        if _init_setup_model and self.env is not None:
            # here, as SB3's PPO, not in _setup_model: loading a model onto fewer envs (an evaluation env) is no mistake
            warn_if_batch_exceeds_rollout(self.batch_size, self.n_steps * self.n_envs, type(self).__name__)

    # -- set-up --------------------------------------------------------------------------------------------------

    def _setup_model(self) -> None:
        super()._setup_model()
        self._actor_params, self._critic_params = split_actor_critic(self.policy, type(self).__name__)
        # The policy's optimizer now trains the critic alone (Huo et al. 2026, §4.3: MSE with Adam).
        self.policy.optimizer = self.policy.optimizer_class(  # type: ignore[call-arg]
            self._critic_params, lr=self.lr_schedule(1), **self.policy.optimizer_kwargs
        )
        # step_size is set from actor_step_size before every use.
        self.preconditioner = PersistentShermanMorrison(damping=self.damping, fisher=self.fisher, max_kl=self.max_kl)
        # "batch": the Gram matrix of the scores, recorded layer by layer during the forward pass
        self._actor_gram = ActorGram(self.policy, self._actor_params) if self.fisher == "batch" else None

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

    # -- the actor step ------------------------------------------------------------------------------------------

    def _schedules(self) -> dict[str, Any]:
        step_size = self.actor_step_size
        return {**super()._schedules(), "actor_step_size": step_size if callable(step_size) else lambda _: step_size}

    def _current_actor_step_size(self) -> float:
        value = self.actor_step_size
        return float(value(self._current_progress_remaining) if callable(value) else value)

    def _a2c_objective(
        self, distribution: Distribution, actions: th.Tensor, advantages: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, bool, dict[str, float]]:
        """
        The A2C objective ``mean_i A_i log pi(a_i|s_i) + ent_coef * mean_i H(pi(.|s_i))`` of step 2 (a distribution
        without a closed-form entropy uses ``-mean_i log pi(a_i|s_i)`` for the entropy).

        :return: ``log pi(a_i|s_i)``, the objective, whether the entropy is ``-mean(log pi)``, and the losses to log
        """
        log_prob = distribution.log_prob(actions)
        entropy = distribution.entropy()
        entropy_term = mean_entropy(entropy, log_prob)
        policy_objective = (advantages * log_prob).mean()
        losses = {"policy_loss": -policy_objective.item(), "entropy_loss": -entropy_term.item()}
        return log_prob, policy_objective + self.ent_coef * entropy_term, entropy is None, losses

    def _natural_step(
        self, obs: PyTorchObs, actions: th.Tensor, advantages: th.Tensor
    ) -> tuple[NaturalDirection, Distribution, dict[str, float]]:
        """
        Steps 2 and 3: the A2C objective and its natural direction ``F^-1 g`` for the ``fisher`` mode, each mode in
        :mod:`sb3_natgrad.smac.directions`.

        :return: the direction, the pre-update distribution, and the losses and statistics to log
        """
        params, gram, lam = self._actor_params, self._actor_gram, self.damping
        subset = fisher_subset(advantages.shape[0], self.fisher_samples, advantages.device)
        with gram.recording() if gram is not None and subset is None else contextlib.nullcontext():
            distribution = self.policy.get_distribution(obs)
        # SB3 distributions are mutated in place by the next forward: keep our own (shallow) copy.
        distribution = copy.copy(distribution)
        log_prob, objective, entropy_folded, info = self._a2c_objective(distribution, actions, advantages)
        if not math.isfinite(objective.item()):
            if gram is not None:
                gram.clear()
            return NaturalDirection.skipped(f"non-finite objective ({objective.item()})"), distribution, info

        pre = self.preconditioner
        if self.fisher == "mean":
            fisher_log_prob = log_prob if subset is None else log_prob[subset]
            natural = mean_fisher_direction(pre, objective, fisher_log_prob, params, lam)
        elif self.fisher == "sample":
            fisher_obs, fisher_actions = (obs, actions) if subset is None else (index_obs(obs, subset), actions[subset])
            natural = sample_fisher_direction(pre, objective, self.policy, fisher_obs, fisher_actions, params, lam)
        elif subset is None and (self.ent_coef == 0.0 or entropy_folded):  # g is a combination of the scores
            assert gram is not None
            natural = batch_kernel_direction(
                pre, gram, distribution, log_prob, obs, actions, advantages, self.ent_coef, params, lam
            )
        else:
            assert gram is not None
            natural = batch_woodbury_direction(pre, gram, objective, distribution, log_prob, obs, actions, subset, params, lam)
        if natural.fisher_correction is not None:
            info["fisher_correction"] = natural.fisher_correction
        return natural, distribution, info

    def _actor_update(self, obs: PyTorchObs, actions: th.Tensor, advantages: th.Tensor) -> dict[str, float]:
        """Steps 2 to 4, one natural-gradient step of the actor; returns the statistics to log."""
        max_step = self._current_actor_step_size()
        info: dict[str, float] = {"kl": 0.0, "step_size": 0.0, "max_step_size": max_step}
        if max_step <= 0.0:  # e.g. the end of a linearly decaying schedule: nothing to do
            with th.no_grad():
                info.update(self._a2c_objective(self.policy.get_distribution(obs), actions, advantages)[3])
            return info
        self.preconditioner.step_size = max_step

        natural, old_distribution, extra = self._natural_step(obs, actions, advantages)
        info.update(extra)
        step, direction = natural.step, natural.direction
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
        Take ``update``, shrunk until the exact batch-mean KL is at most ``max_kl`` (TRPO's backtracking line search):
        each try shrinks it by ``min(line_search_shrinking_factor, 0.95 sqrt(max_kl / KL))``, the quadratic model's
        step to just inside the bound but at least the factor, at most ``line_search_max_iter`` times.

        :return: the fraction of ``update`` taken (0: none fitted, the actor is back at ``backup``) and the exact KL
        """
        add_flat_update(self._actor_params, update)
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
        restore_parameters(self._actor_params, backup)  # no step within the trust region: leave the actor unchanged
        return 0.0, 0.0

    # -- training loop -------------------------------------------------------------------------------------------

    def train(self) -> None:
        """One SMAC update on the whole rollout (steps 1 to 5 above): the actor's natural-gradient step, then the critic."""
        self._begin_update(self.policy.optimizer)
        data, actions = self._whole_batch()  # with step 1's GAE advantages, computed at the end of the rollout
        info = self._actor_update(data.observations, actions, self._standardized(data.advantages))  # steps 2 to 4
        value_loss = fit_critic(  # step 5
            self.policy,
            self.rollout_buffer,
            self._critic_params,
            self.n_critic_updates,
            self.batch_size,
            self.max_grad_norm,
            type(self).__name__,
        )
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
