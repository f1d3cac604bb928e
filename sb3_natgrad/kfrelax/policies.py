"""
Policies for KFRELAX: Stable-Baselines3 actor-critic policies that act through explicit, stored noise and own the
control variate ``c_phi``.

References: Grathwohl et al. 2018 (RELAX; App. B, App. C, App. E), Firouzi 2018 (KF-RELAX), and the released RELAX RL
code, wgrathwohl/BackpropThroughTheVoidRL ``baselines/a2c/policies.py`` (``RelaxedLinearPolicy``,
``RelaxedGaussianMlpPolicy``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import get_flattened_obs_dim, is_image_space, preprocess_obs
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_natgrad.common.minatar import MinAtarCnn
from sb3_natgrad.kfrelax.control_variate import ControlVariate
from sb3_natgrad.kfrelax.relaxations import (
    DiagGaussianReparameterization,
    DiscreteRelaxation,
    Relaxation,
    make_relaxation,
)

CV_INPUTS = ("auto", "observation", "features")


@dataclass
class RelaxForward:
    """
    One training-mode forward pass of a :class:`KFRELAXPolicy` (everything the RELAX / LAX update needs).

    ``params`` are the per-sample distribution parameters on the graph between ``theta`` and the estimator: the
    flat logits (discrete spaces) or the Gaussian mean; ``log_std`` is the Gaussian log standard deviation expanded
    to ``[N, d]`` (``None`` for discrete spaces). ``cv_obs`` is the control variate's (detached) state input.
    """

    params: th.Tensor
    log_std: th.Tensor | None
    distribution: Distribution
    values: th.Tensor
    cv_obs: th.Tensor


def _has_image(observation_space: spaces.Space) -> bool:
    if isinstance(observation_space, spaces.Dict):
        return any(is_image_space(sub) for sub in observation_space.spaces.values())
    return is_image_space(observation_space)


class KFRELAXPolicy(ActorCriticPolicy):
    """
    Actor-critic policy for KFRELAX (RELAX / LAX policy gradients with a learned control variate).

    Differences from ``ActorCriticPolicy``:

    * **Acting through stored noise.** When sampling, :meth:`forward` draws the noise explicitly and acts with the
      reparameterisation of the RELAX paper (App. B): ``b = argmax(log_softmax(l) - log(-log u))`` (Gumbel-max,
      Discrete / MultiDiscrete) or ``b = 1[l + logit(u) > 0]`` (MultiBinary) with uniform ``u``, and
      ``a = mu + sigma * eps`` with standard normal ``eps`` (Box). These have exactly the law of the SB3 action
      distribution. The noise is kept until the rollout buffer takes it (:meth:`pop_acting_noise`), so the train step
      can rebuild ``z(theta, u)`` / ``a(theta, eps)`` exactly. Deterministic actions (``predict(deterministic=True)``)
      are the distribution's mode and store no noise.
    * **The control variate** ``c_phi(s, y)`` (:class:`~sb3_natgrad.kfrelax.control_variate.ControlVariate`) lives in
      :attr:`control_variate`, so it is saved with the policy, but its parameters are NOT in :attr:`optimizer` (the
      algorithm trains them on the estimator's variance, with K-FAC or Adam). It shares no parameter with the actor:
      its state input is either the preprocessed, flattened observation (``cv_input="observation"``: one-hot
      discrete observations, images divided by 255, Dict entries concatenated), or the actor's features extractor
      output, DETACHED (``cv_input="features"``; e.g. NatureCNN features for image observations). ``"auto"`` picks
      ``"features"`` when the observation space is an image or a Dict holding one, ``"observation"`` otherwise.
      Either way ``c_phi`` depends on ``theta`` only through the relaxed action, as RELAX's unbiasedness requires
      (App. C).

    gSDE is not supported (its noise is not a per-sample ``eps`` with ``a = mu + sigma * eps``).

    :param observation_space: observation space
    :param action_space: action space (Box, Discrete, MultiDiscrete, MultiBinary)
    :param lr_schedule: learning-rate schedule of the actor-critic optimizer
    :param cv_net_arch: hidden layer widths of ``c_phi``
    :param cv_activation_fn: hidden activation of ``c_phi`` (smooth: the estimator contains ``d c_phi / d z``)
    :param cv_ortho_init: orthogonal initialisation of ``c_phi``
    :param cv_output_gain: gain of ``c_phi``'s output layer (0 makes ``c_phi = 0`` at initialisation)
    :param cv_init_log_temperature: initial ``log tau`` of the relaxation (discrete spaces)
    :param cv_init_scale: initial output scale of ``c_phi``
    :param cv_input: ``"auto"``, ``"observation"`` or ``"features"`` (see above)
    :param kwargs: the other arguments of ``ActorCriticPolicy`` (``net_arch``, ``activation_fn``,
        ``features_extractor_class``, ``share_features_extractor``, ``optimizer_class``, ...)
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        # same shape as ControlVariate.__init__: its arguments, prefixed cv_ (but cv_output_gain defaults to 0)
        cv_net_arch: Sequence[int] = (64, 64),
        cv_activation_fn: type[nn.Module] = nn.ELU,
        cv_ortho_init: bool = True,
        cv_output_gain: float = 0.0,
        cv_init_log_temperature: float = 0.0,
        cv_init_scale: float = 1.0,
        cv_input: str = "auto",
    ):
        if use_sde:
            raise ValueError(
                "KFRELAX policies do not support use_sde=True: gSDE noise is not a per-sample eps with a = mu + sigma * eps"
            )
        if cv_input not in CV_INPUTS:
            raise ValueError(f"KFRELAX policy: invalid cv_input={cv_input!r}, expected one of {CV_INPUTS}")
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            use_sde=False,
            log_std_init=log_std_init,
            full_std=full_std,
            use_expln=use_expln,
            squash_output=squash_output,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            share_features_extractor=share_features_extractor,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.cv_net_arch = [int(width) for width in cv_net_arch]
        self.cv_activation_fn = cv_activation_fn
        self.cv_ortho_init = cv_ortho_init
        self.cv_output_gain = float(cv_output_gain)
        self.cv_init_log_temperature = float(cv_init_log_temperature)
        self.cv_init_scale = float(cv_init_scale)
        self.cv_input = cv_input
        if cv_input == "auto":
            self.resolved_cv_input = "features" if _has_image(observation_space) else "observation"
        else:
            self.resolved_cv_input = cv_input
        self.relaxation: Relaxation = make_relaxation(action_space)
        # Built after ActorCriticPolicy._build(), so self.optimizer (actor + critic) does not hold phi.
        self.control_variate = ControlVariate(
            self._cv_obs_dim(),
            self.relaxation,
            net_arch=self.cv_net_arch,
            activation_fn=cv_activation_fn,
            ortho_init=cv_ortho_init,
            output_gain=self.cv_output_gain,
            init_log_temperature=self.cv_init_log_temperature,
            init_scale=self.cv_init_scale,
        )
        self._acting_noise: th.Tensor | None = None

    def _cv_obs_dim(self) -> int:
        if self.resolved_cv_input == "features":
            return int(self.features_dim)
        if isinstance(self.observation_space, spaces.Dict):
            return sum(int(get_flattened_obs_dim(sub)) for sub in self.observation_space.spaces.values())
        return int(get_flattened_obs_dim(self.observation_space))

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                cv_net_arch=self.cv_net_arch,
                cv_activation_fn=self.cv_activation_fn,
                cv_ortho_init=self.cv_ortho_init,
                cv_output_gain=self.cv_output_gain,
                cv_init_log_temperature=self.cv_init_log_temperature,
                cv_init_scale=self.cv_init_scale,
                cv_input=self.cv_input,
            )
        )
        return data

    # -------------------------------------------------------------------------------------------- parameters

    def actor_parameters(self) -> list[nn.Parameter]:
        """The parameters ``log pi`` depends on (``theta`` of the estimator): actor features, policy MLP, head, log-std."""
        modules: list[nn.Module] = [self.pi_features_extractor, self.mlp_extractor.policy_net, self.action_net]
        params: dict[int, nn.Parameter] = {}
        for module in modules:
            for p in module.parameters():
                if p.requires_grad:
                    params.setdefault(id(p), p)
        log_std = getattr(self, "log_std", None)
        if isinstance(log_std, nn.Parameter) and log_std.requires_grad:
            params.setdefault(id(log_std), log_std)
        return list(params.values())

    def actor_critic_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter except the control variate's (what :attr:`optimizer` updates)."""
        cv = {id(p) for p in self.control_variate.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in cv]

    # -------------------------------------------------------------------------------------------- acting

    def _latents(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """``(actor features, latent_pi, latent_vf)``."""
        features = self.extract_features(obs)
        if self.share_features_extractor:
            assert isinstance(features, th.Tensor)
            latent_pi, latent_vf = self.mlp_extractor(features)
            return features, latent_pi, latent_vf
        pi_features, vf_features = features
        return pi_features, self.mlp_extractor.forward_actor(pi_features), self.mlp_extractor.forward_critic(vf_features)

    def _distribution_from_params(self, params: th.Tensor) -> Distribution:
        if isinstance(self.relaxation, DiagGaussianReparameterization):
            return self.action_dist.proba_distribution(params, self.log_std)  # type: ignore[call-arg]
        return self.action_dist.proba_distribution(action_logits=params)  # type: ignore[call-arg]

    def actions_from_noise(self, params: th.Tensor, noise: th.Tensor) -> th.Tensor:
        """
        The action determined by the distribution parameters and the noise (no gradient).

        :param params: logits ``[N, noise_dim]`` or Gaussian means ``[N, d]``
        :param noise: uniform ``u`` (discrete) or standard normal ``eps`` (Box), ``[N, noise_dim]``
        :return: actions ``[N]`` (Discrete), ``[N, n]`` (MultiDiscrete, MultiBinary) or ``[N, d]`` (Box)
        """
        relaxation = self.relaxation
        with th.no_grad():
            if isinstance(relaxation, DiagGaussianReparameterization):
                return relaxation.action_from_noise(params, self.log_std, noise)
            assert isinstance(relaxation, DiscreteRelaxation)
            return relaxation.action_from_noise(params, noise)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        Act (rollouts): like ``ActorCriticPolicy.forward``, but stochastic actions come from explicit noise, which is
        kept for the rollout buffer (:meth:`pop_acting_noise`).

        :param obs: observations
        :param deterministic: take the mode of the distribution (no noise is stored)
        :return: actions, values, log-probabilities of the actions
        """
        _, latent_pi, latent_vf = self._latents(obs)
        values = self.value_net(latent_vf)
        params = self.action_net(latent_pi)
        distribution = self._distribution_from_params(params)
        if deterministic:
            actions = distribution.get_actions(deterministic=True)
            self._acting_noise = None
        else:
            noise = self.relaxation.sample_noise(params.shape[0], device=params.device, dtype=params.dtype)
            actions = self.actions_from_noise(params, noise)
            self._acting_noise = noise.detach()
        log_prob = distribution.log_prob(actions)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob  # type: ignore[misc]

    def pop_acting_noise(self) -> th.Tensor | None:
        """The noise of the last stochastic :meth:`forward` call (``None`` if there is none); forgets it."""
        noise, self._acting_noise = self._acting_noise, None
        return noise

    # -------------------------------------------------------------------------------------------- training

    def cv_observation(self, obs: PyTorchObs, actor_features: th.Tensor | None = None) -> th.Tensor:
        """
        The state input of ``c_phi`` (detached, ``[N, obs_dim]``).

        :param obs: observations (tensor or dict of tensors)
        :param actor_features: the actor's features for ``obs`` if already computed (``cv_input="features"``)
        :return: flattened preprocessed observations or detached actor features
        """
        if self.resolved_cv_input == "features":
            if actor_features is None:
                actor_features = self.pi_features_extractor(preprocess_obs(obs, self.observation_space, self.normalize_images))
            return actor_features.detach().flatten(1)
        with th.no_grad():
            pre = preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)
            if isinstance(pre, dict):
                assert isinstance(self.observation_space, spaces.Dict)
                n = next(iter(pre.values())).shape[0]
                return th.cat([pre[key].reshape(n, -1).float() for key in self.observation_space.spaces], dim=1)
            return pre.reshape(pre.shape[0], -1).float()

    def relax_forward(self, obs: PyTorchObs) -> RelaxForward:
        """
        One training-mode forward pass giving the distribution parameters (on the graph), the SB3 distribution, the
        values ``[N]`` and the control variate's state input.

        :param obs: a batch of observations
        :return: the :class:`RelaxForward`
        """
        actor_features, latent_pi, latent_vf = self._latents(obs)
        values = self.value_net(latent_vf).flatten()
        params = self.action_net(latent_pi)
        log_std = None
        if isinstance(self.relaxation, DiagGaussianReparameterization):
            # Expanded per sample, so that a per-sample (proxy) gradient with respect to it is meaningful.
            log_std = self.log_std.expand_as(params)
            distribution = self.action_dist.proba_distribution(params, log_std)  # type: ignore[call-arg]
        else:
            distribution = self.action_dist.proba_distribution(action_logits=params)  # type: ignore[call-arg]
        cv_obs = self.cv_observation(obs, actor_features if self.resolved_cv_input == "features" else None)
        return RelaxForward(params=params, log_std=log_std, distribution=distribution, values=values, cv_obs=cv_obs)


class KFRELAXCnnPolicy(KFRELAXPolicy):
    """
    :class:`KFRELAXPolicy` with the NatureCNN features extractor; ``c_phi`` reads the actor's DETACHED CNN features
    (``cv_input="auto"``).

    :param observation_space: observation space
    :param action_space: action space
    :param lr_schedule: learning-rate schedule
    :param kwargs: see :class:`KFRELAXPolicy`
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN,
        **kwargs: Any,
    ):
        super().__init__(
            observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs
        )


# same shape as KFRELAXCnnPolicy: SB3's one-subclass-per-default-extractor pattern; saved models name each class
class KFRELAXMultiInputPolicy(KFRELAXPolicy):
    """
    :class:`KFRELAXPolicy` for Dict observations (``CombinedExtractor``); ``c_phi`` reads the concatenated
    preprocessed observation, or the actor's detached features when an entry is an image (``cv_input="auto"``).

    :param observation_space: a Dict observation space
    :param action_space: action space
    :param lr_schedule: learning-rate schedule
    :param kwargs: see :class:`KFRELAXPolicy`
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor,
        **kwargs: Any,
    ):
        super().__init__(
            observation_space, action_space, lr_schedule, features_extractor_class=features_extractor_class, **kwargs
        )


# same shape as KFRELAXCnnPolicy and common.minatar.MinAtarPolicy, but a KFRELAXPolicy with cv_input="features" by default
class KFRELAXMinAtarPolicy(KFRELAXPolicy):
    """
    :class:`KFRELAXPolicy` with the MinAtar paper's network (:class:`~sb3_natgrad.common.minatar.MinAtarCnn`, no
    further hidden layer unless ``net_arch`` is given); ``c_phi`` reads the actor's DETACHED features, as for
    images (``cv_input="features"``).

    :param observation_space: MinAtar's observation space
    :param action_space: action space
    :param lr_schedule: learning-rate schedule
    :param kwargs: see :class:`KFRELAXPolicy`
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        features_extractor_class: type[BaseFeaturesExtractor] = MinAtarCnn,
        cv_input: str = "features",
        **kwargs: Any,
    ):
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=[] if net_arch is None else net_arch,
            features_extractor_class=features_extractor_class,
            cv_input=cv_input,
            **kwargs,
        )


MlpPolicy = KFRELAXPolicy
CnnPolicy = KFRELAXCnnPolicy
MultiInputPolicy = KFRELAXMultiInputPolicy
MinAtarPolicy = KFRELAXMinAtarPolicy
