"""The RLlib learner of :class:`~sb3_natgrad.rllib.ACKTR`: A2C's loss, the sampled Fisher and a K-FAC step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
import torch.distributed as dist
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.torch_utils import explained_variance

from sb3_natgrad.acktr.kfac_options import make_kfac
from sb3_natgrad.acktr.step_size import adapted_step_scale
from sb3_natgrad.optim import KFAC, all_reduce_sum
from sb3_natgrad.optim.fisher import critic_sampled_log_likelihood
from sb3_natgrad.rllib.reward_scaling import NormalizeRewards

#: K-FAC's step statistics reported per module (``last_step_info`` key -> metric name)
_STEP_METRICS = {"step_size": "step_size", "vFv": "vFv", "natural_grad_norm": "natural_grad_norm", "warmup": "kfac_warmup"}


def check_action_space(space: gym.Space) -> None:
    """The action spaces whose RLlib distributions the sampled Fisher is tested with."""
    supported = isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)) or (
        isinstance(space, gym.spaces.Box) and space.shape is not None and len(space.shape) == 1
    )
    if not supported:
        raise ValueError(f"ACKTR on RLlib supports Discrete, MultiDiscrete and 1-D Box action spaces, got {space}")


class ACKTRTorchLearner(PPOTorchLearner):
    """
    One ACKTR update per batch (Wu et al. 2017): the training forward pass records K-FAC's layer inputs, the sampled
    Fisher loss (§3.1) gives its output-gradient factors, A2C's loss is back-propagated by RLlib and
    :meth:`KFAC.step <sb3_natgrad.optim.KFAC.step>` takes the natural-gradient step inside the trust region (§3.2).
    Rows with ``loss_mask`` False (RLlib's added step at the end of each episode chunk) are left out of both.

    With ``kl_target`` the exact batch-mean ``KL(pi_old || pi_new)`` of each step (averaged over all learners' rows)
    adapts a per-module factor on the learning rate, as in :class:`sb3_natgrad.ACKTR`.
    """

    def build(self) -> None:
        # before RLlib builds the module (its own errors for some spaces do not name the space)
        specs = getattr(self._module_spec, "rl_module_specs", None) or {}
        for spec in specs.values():
            if getattr(spec, "action_space", None) is not None:
                check_action_space(spec.action_space)
        super().build()
        if self.config.normalize_rewards and self._learner_connector is not None:
            gae = [c for c in self._learner_connector.connectors if isinstance(c, GeneralAdvantageEstimation)]
            if not gae:
                raise ValueError(
                    "ACKTR normalize_rewards=True needs RLlib's GeneralAdvantageEstimation learner connector (kept with "
                    "add_default_connectors_to_learner_pipeline=True): the rewards are scaled before it"
                )
            self._learner_connector.insert_before(type(gae[0]), NormalizeRewards(gamma=self.config.gamma))
        self._consecutive_skips = 0
        #: ``kl_target``: the factor on each module's learning rate, and what the KL after the step needs
        self.kl_step_scale: dict[str, float] = {}
        self._kl_inputs: dict[str, tuple[dict[str, Any], torch.Tensor, torch.Tensor | None]] = {}

    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        module = self.module[module_id]
        check_action_space(module.action_space)
        if hasattr(module, "is_stateful") and module.is_stateful():
            raise ValueError(f"ACKTR on RLlib supports feed-forward RLModules only; module {module_id!r} is recurrent")
        kfac = make_kfac(
            module,
            config.lr if isinstance(config.lr, (int, float)) else 0.0,  # a schedule is written in by RLlib
            config,
            statistics_reducer=all_reduce_sum() if self.config.num_learners > 1 else None,
        )
        self.register_optimizer(
            module_id=module_id, optimizer=kfac, params=self.get_parameters(module), lr_or_lr_schedule=config.lr
        )

    def kfac(self, module_id: str) -> KFAC:
        """The K-FAC optimizer of a module."""
        optimizer = self.get_optimizer(module_id)
        assert isinstance(optimizer, KFAC)
        return optimizer

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any], fwd_out: dict[str, Any]) -> Any:
        module = self.module[module_id].unwrapped()
        mask = batch.get(Columns.LOSS_MASK)
        mask = mask.bool() if mask is not None else None

        def mean(values: torch.Tensor) -> torch.Tensor:
            return values[mask].mean() if mask is not None else values.mean()

        distribution = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        log_prob = distribution.logp(batch[Columns.ACTIONS])
        entropy = mean(distribution.entropy())
        values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))
        targets = batch[Postprocessing.VALUE_TARGETS]
        # A2C's loss (Wu et al. 2017 optimise it; the terms as in sb3_natgrad.ACKTR)
        policy_loss = -mean(batch[Postprocessing.ADVANTAGES] * log_prob)
        vf_loss = mean((targets - values) ** 2)
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        total_loss = policy_loss + config.vf_loss_coeff * vf_loss - entropy_coeff * entropy

        kfac = self.kfac(module_id)
        if kfac.stats_due and torch.isfinite(total_loss):
            # the sampled Fisher loss (Wu et al. 2017, §3.1): actions drawn from the policy, the critic's Gaussian
            with torch.no_grad():
                sampled_actions = distribution.sample()
            fisher_loss = mean(distribution.logp(sampled_actions)) + config.vf_fisher_coef * mean(
                critic_sampled_log_likelihood(values)
            )
            kfac.record_fisher(fisher_loss, sample_mask=mask)
        else:
            kfac.discard_statistics()

        if config.kl_target is not None:
            self._kl_inputs[module_id] = (batch, fwd_out[Columns.ACTION_DIST_INPUTS].detach(), mask)

        real_targets, real_values = (targets[mask], values[mask]) if mask is not None else (targets, values)
        self.metrics.log_dict(
            {
                "policy_loss": policy_loss,
                "vf_loss": vf_loss,
                "entropy": entropy,
                "vf_explained_var": explained_variance(real_targets, real_values),
            },
            key=module_id,
            window=1,
        )
        return total_loss

    def apply_gradients(self, gradients_dict: dict[Any, Any]) -> None:
        super().apply_gradients(gradients_dict)
        for module_id in self._module_optimizers:
            kfac = self.kfac(module_id)
            info = kfac.last_step_info
            if info.get("skipped"):
                self._consecutive_skips += 1
                limit = self.config.max_consecutive_skips
                if limit is not None and self._consecutive_skips >= limit:
                    raise RuntimeError(
                        f"ACKTR: {self._consecutive_skips} updates in a row were skipped because the gradient or the "
                        f"update of module {module_id!r} was not finite (K-FAC counters: {kfac.counters}); check the "
                        "rewards and observations for NaN/inf, or lower lr"
                    )
            else:
                self._consecutive_skips = 0
            if module_id in self._kl_inputs:
                self._adapt_step_size(module_id, skipped=bool(info.get("skipped")))
            for key, name in _STEP_METRICS.items():
                if key in info:
                    self.metrics.log_value((module_id, name), info[key], window=1)
            self.metrics.log_value((module_id, "kfac_skipped_steps"), kfac.counters["skipped_steps"], window=1)

    def _adapt_step_size(self, module_id: str, skipped: bool) -> None:
        """``kl_target``: the exact KL of the step just taken adapts the module's factor on the learning rate."""
        batch, old_inputs, mask = self._kl_inputs.pop(module_id)
        config = self.config.get_config_for_module(module_id)
        kl = None
        if not skipped:
            module = self.module[module_id].unwrapped()
            distribution_class = module.get_train_action_dist_cls()
            with torch.no_grad():
                new_inputs = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
                kls = distribution_class.from_logits(old_inputs).kl(distribution_class.from_logits(new_inputs))
                if mask is not None:
                    kls = kls[mask]
                # every learner adapts with the KL of the whole batch, so that their step sizes stay equal
                total = torch.stack([kls.sum(), torch.tensor(float(kls.numel()), device=kls.device)]).double()
                if self.config.num_learners > 1 and dist.is_available() and dist.is_initialized():
                    dist.all_reduce(total, op=dist.ReduceOp.SUM)
                kl = float(total[0] / total[1]) if total[1] > 0 else None
        optimizer = self.get_optimizer(module_id)
        schedule = self._optimizer_lr_schedules.get(optimizer)
        learning_rate = float(schedule.get_current_value()) if schedule is not None else self._get_optimizer_lr(optimizer)
        scale = adapted_step_scale(self.kl_step_scale.get(module_id, 1.0), kl, config.kl_target, learning_rate)
        self.kl_step_scale[module_id] = scale
        if kl is not None:
            self.metrics.log_value((module_id, "kl"), kl, window=1)
        self.metrics.log_value((module_id, "kl_step_scale"), scale, window=1)

    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        # RLlib sets each optimizer's lr from its schedule; kl_target's factor goes on top for the next step
        super().after_gradient_based_update(timesteps=timesteps)
        self._apply_step_scales()

    def _apply_step_scales(self) -> None:
        for module_id, scale in self.kl_step_scale.items():
            optimizer = self.get_optimizer(module_id)
            schedule = self._optimizer_lr_schedules.get(optimizer)
            if schedule is not None:
                self._set_optimizer_lr(optimizer, lr=float(schedule.get_current_value()) * scale)

    def get_state(self, components: Any = None, *, not_components: Any = None, **kwargs: Any) -> dict[str, Any]:
        state = super().get_state(components, not_components=not_components, **kwargs)
        normalizer = self._reward_normalizer()
        if normalizer is not None:
            state["reward_normalizer"] = normalizer.get_state()
        if self.kl_step_scale:
            state["kl_step_scale"] = dict(self.kl_step_scale)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        normalizer = self._reward_normalizer()
        if normalizer is not None and "reward_normalizer" in state:
            normalizer.set_state(state["reward_normalizer"])
        if "kl_step_scale" in state:
            self.kl_step_scale = {str(key): float(value) for key, value in state["kl_step_scale"].items()}
            self._apply_step_scales()

    def _reward_normalizer(self) -> NormalizeRewards | None:
        if self._learner_connector is None:
            return None
        return next((c for c in self._learner_connector.connectors if isinstance(c, NormalizeRewards)), None)
