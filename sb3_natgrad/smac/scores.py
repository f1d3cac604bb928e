"""
The scores ``psi_i = grad_theta log pi(a_i|s_i)`` of an SB3 ``ActorCriticPolicy``'s actor parameters ``theta``, and
their Gram matrix ``K_ij = psi_i . psi_j``: the empirical Fisher that SMAC preconditions with (Huo et al. 2026,
§4.1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch as th
from stable_baselines3.common.distributions import DiagGaussianDistribution, Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_natgrad.optim.sherman_morrison import LinearGramRecorder, diag_gaussian_log_std_scores, per_sample_scores

#: vmap chunk of the general per-sample score path (bounds the memory of the batched intermediates)
PER_SAMPLE_CHUNK = 256


@contextlib.contextmanager
def substituted_parameters(owners: Sequence[tuple[nn.Module, str]], tensors: Sequence[th.Tensor]) -> Iterator[None]:
    """
    Temporarily make ``module.<name>`` return ``tensor`` for every ``(module, name)`` owner of a parameter.

    Works on module OBJECTS, so a submodule reachable under several names (SB3's ``pi_features_extractor`` is
    ``features_extractor`` when shared) is handled once. ``torch.func.functional_call`` (torch 2.13) goes by
    names and, for such aliased submodules, leaves plain tensors in place of the parameters on exit.
    """
    originals = [module._parameters[name] for module, name in owners]
    try:
        for (module, name), tensor in zip(owners, tensors, strict=True):
            module._parameters[name] = tensor  # type: ignore[assignment]
        yield
    finally:
        for (module, name), original in zip(owners, originals, strict=True):
            module._parameters[name] = original


def index_obs(obs: PyTorchObs, index: th.Tensor) -> PyTorchObs:
    """The samples ``index`` of a batch of observations (a tensor or a dict of tensors)."""
    if isinstance(obs, dict):
        return {key: value[index] for key, value in obs.items()}
    return obs[index]


def policy_scores(policy: ActorCriticPolicy, obs: PyTorchObs, actions: th.Tensor, params: Sequence[nn.Parameter]) -> th.Tensor:
    """
    Per-sample ``grad log pi(a_i|s_i)`` over ``params`` (``torch.func`` vmap of grad through the actor's path).

    :param policy: the policy
    :param obs: a batch of observations, as the rollout buffer gives them
    :param actions: the batch's actions, as ``distribution.log_prob`` takes them
    :param params: actor parameters of ``policy``
    :return: ``[M, k]`` scores, ``k`` the number of entries of ``params``
    """
    owner_of: dict[int, tuple[nn.Module, str]] = {}
    for module in policy.modules():
        for name, param in module._parameters.items():
            if param is not None:
                owner_of.setdefault(id(param), (module, name))
    owners = [owner_of[id(p)] for p in params]
    # Preprocess (one-hot of Discrete / MultiDiscrete observations, image scaling) on the whole batch outside vmap:
    # F.one_hot is data-dependent and vmap refuses it. Inside, the actor's path of get_distribution without it.
    obs = preprocess_obs(obs, policy.observation_space, normalize_images=policy.normalize_images)  # type: ignore[arg-type]
    keys: list[str] | None = None
    if isinstance(obs, dict):
        keys = list(obs)
        inputs = [obs[key] for key in keys]
    else:
        inputs = [obs]

    def log_prob_fn(param_dict: dict[str, th.Tensor], *sample: th.Tensor) -> th.Tensor:
        *obs_parts, action = sample
        one: PyTorchObs
        if keys is not None:
            one = {key: part.unsqueeze(0) for key, part in zip(keys, obs_parts, strict=True)}
        else:
            one = obs_parts[0].unsqueeze(0)
        with substituted_parameters(owners, list(param_dict.values())):
            features = policy.pi_features_extractor(one)
            latent_pi = policy.mlp_extractor.forward_actor(features)
            distribution = policy._get_action_dist_from_latent(latent_pi)
            return distribution.log_prob(action.unsqueeze(0)).squeeze(0)

    named: dict[str, th.Tensor] = {str(i): p for i, p in enumerate(params)}
    return per_sample_scores(log_prob_fn, named, *inputs, actions, chunk_size=PER_SAMPLE_CHUNK)


class ActorGram:
    """
    ``K_ij = psi_i . psi_j`` over the actor parameters, without per-sample gradients where possible: hooks on every
    ``nn.Linear`` of the actor record its part during the forward pass (:class:`LinearGramRecorder`); the other actor
    parameters add their per-sample scores (in closed form for the ``log_std`` of a plain diagonal Gaussian, by
    :func:`policy_scores` otherwise, e.g. for the convolutions of a CNN extractor).

    :param policy: the policy
    :param actor_params: its actor parameters
    """

    def __init__(self, policy: ActorCriticPolicy, actor_params: Sequence[nn.Parameter]) -> None:
        self.policy = policy
        self.actor_params = list(actor_params)
        actor_ids = {id(p) for p in actor_params}
        linears = [
            module
            for module in policy.modules()
            if isinstance(module, nn.Linear)
            and any(p.requires_grad for p in module.parameters(recurse=False))
            and all(id(p) in actor_ids for p in module.parameters(recurse=False) if p.requires_grad)
        ]
        #: the hooks, to enter around the forward pass whose Gram is wanted (``None``: no Linear layer in the actor)
        self.recorder = LinearGramRecorder(linears) if linears else None
        covered = {id(p) for p in self.recorder.covered_parameters()} if self.recorder is not None else set()
        #: actor parameters outside the recorded layers
        self.leftover_params = [p for p in actor_params if id(p) not in covered]
        log_std = getattr(policy, "log_std", None)
        #: closed-form log_std scores: only for the plain diagonal Gaussian (not gSDE, not squashed)
        self.closed_form_log_std = (
            type(policy.action_dist) is DiagGaussianDistribution
            and len(self.leftover_params) == 1
            and self.leftover_params[0] is log_std
        )

    def gram(self, distribution: Distribution, log_prob: th.Tensor, obs: PyTorchObs, actions: th.Tensor) -> th.Tensor:
        """
        The Gram matrix of the batch whose forward pass ran inside ``with self.recorder`` (releases the records).

        :param distribution: the batch's action distribution (from that forward pass)
        :param log_prob: ``log pi(a_i|s_i)`` of the batch, ``[M]``
        :param obs: the batch's observations
        :param actions: the batch's actions
        :return: ``[M, M]``
        """
        recorder = self.recorder
        try:
            if recorder is None:
                scores = policy_scores(self.policy, obs, actions, self.actor_params)
                return scores @ scores.T
            extra = None
            if self.closed_form_log_std:
                gaussian = distribution.distribution
                assert isinstance(gaussian, th.distributions.Normal)
                extra = diag_gaussian_log_std_scores(actions, gaussian.mean, self.policy.log_std)
            elif self.leftover_params:
                extra = policy_scores(self.policy, obs, actions, self.leftover_params)
            return recorder.gram(log_prob, extra_scores=extra)
        finally:
            if recorder is not None:
                recorder.clear()

    def clear(self) -> None:
        """Release the records of a forward pass whose Gram is not needed."""
        if self.recorder is not None:
            self.recorder.clear()

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record the forward passes inside (nothing to record without Linear layers)."""
        if self.recorder is None:
            yield
            return
        with self.recorder:
            yield
