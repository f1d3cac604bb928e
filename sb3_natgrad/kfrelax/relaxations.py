"""
Reparameterised and conditional samplers for the RELAX / LAX gradient estimators.

References: Grathwohl et al. 2018 "Backpropagation through the Void" (RELAX; App. B
"Conditional re-sampling"), Tucker et al. 2017 (REBAR); reference code: duvenaud/relax ``pytorch_toy.py``
(Bernoulli) and sdrobert/pydrobert-pytorch ``src/pydrobert/torch/_straight_through.py`` (categorical).

Everything here is generic over distribution parameters (logits, means, log standard deviations)
and does not import Stable-Baselines3. Conventions:

* A *discrete* action ``b`` is produced from uniform noise ``u`` by a deterministic map of a
  continuous, reparameterised variable ``z = z(theta, u)``: ``b = H(z)``. The rollout stores
  ``u``; at train time ``z(theta, u)`` is recomputed exactly, and ``z~ ~ p(z | b, theta)`` is
  drawn with fresh noise ``v`` through a *conditional* reparameterisation that is differentiable in
  ``theta`` (Grathwohl et al. 2018, App. B).
* These are the exact samplers. The released RELAX RL code (wgrathwohl/BackpropThroughTheVoidRL
  ``baselines/a2c/policies.py``, ``make_samples``) placed the top Gumbel of ``z~`` at ``log p_b`` instead
  of at ``log sum_i p_i = 0``; that sampler is biased (Grathwohl et al. 2018, App. E, call it "slightly
  biased") and is NOT what is implemented here.
* Uniform noise is clamped into ``[eps, 1 - eps]`` with ``eps`` the machine epsilon of its dtype, so
  every logarithm is finite. This changes the law by at most ``2 eps`` in total variation.
* The continuous relaxation fed to the control variate is ``softmax(z / tau)`` (categorical) or
  ``sigmoid(z / tau)`` (Bernoulli); for Gaussian actions (LAX) the control variate sees the action
  ``a(theta, eps) = mu + sigma * eps`` itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces

# ----------------------------------------------------------------------------------------- noise


def uniform_eps(dtype: torch.dtype) -> float:
    """
    The margin used to keep uniform noise away from 0 and 1.

    :param dtype: floating point dtype of the noise
    :return: the machine epsilon of ``dtype`` (``1 - eps`` is exactly representable)
    """
    return float(torch.finfo(dtype).eps)


def clamp_uniform(u: torch.Tensor) -> torch.Tensor:
    """
    Clamp uniform noise into ``[eps, 1 - eps]`` so that ``log(u)``, ``log(-log u)`` and ``logit(u)`` are finite.

    :param u: uniform noise in ``[0, 1]``
    :return: the clamped noise
    """
    eps = uniform_eps(u.dtype)
    return u.clamp(eps, 1.0 - eps)


def sample_uniform(
    shape: Sequence[int] | torch.Size,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """
    Draw ``U(eps, 1 - eps)`` noise.

    :param shape: shape of the noise
    :param device: device of the noise
    :param dtype: floating point dtype
    :param generator: optional random generator
    :return: the noise
    """
    return clamp_uniform(torch.rand(tuple(shape), device=device, dtype=dtype, generator=generator))


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """
    Standard Gumbel noise ``-log(-log u)`` from uniform noise (clamped first).

    :param u: uniform noise
    :return: Gumbel(0, 1) noise of the same shape
    """
    return -torch.log(-torch.log(clamp_uniform(u)))


def logit_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """
    Standard logistic noise ``log u - log(1 - u)`` from uniform noise (clamped first).

    :param u: uniform noise
    :return: Logistic(0, 1) noise of the same shape
    """
    u = clamp_uniform(u)
    return torch.log(u) - torch.log1p(-u)


# ----------------------------------------------------------------------------------- categorical


def categorical_z(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """
    Gumbel-max variable ``z = log p - log(-log u)`` with ``log p = log_softmax(logits)`` (RELAX App. B).

    ``H(z) = argmax(z)`` has the law ``Categorical(p)``: for independent standard Gumbels ``G_i``,
    ``P(argmax_i (log p_i + G_i) = k) = p_k / sum_i p_i`` (the Gumbel-max trick), and ``max_i z_i`` is
    ``Gumbel(log sum_i p_i) = Gumbel(0)``, independent of the argmax. Normalising the logits does not
    change the argmax; it fixes the location of the maximum at 0, which :func:`categorical_conditional_z`
    relies on.

    :param logits: unnormalised logits ``[..., K]`` (finite)
    :param u: uniform noise ``[..., K]``
    :return: ``z`` ``[..., K]``, differentiable in the logits
    """
    return torch.log_softmax(logits, dim=-1) + gumbel_from_uniform(u)


def categorical_action_from_noise(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """
    Action ``b = argmax(z(logits, u))``, distributed as ``Categorical(softmax(logits))`` when ``u`` is uniform.

    Used when acting: store ``u`` in the rollout so that the train step recomputes ``z(theta, u)``
    exactly (which requires the same ``theta``: one update per rollout).

    :param logits: logits ``[..., K]``
    :param u: uniform noise ``[..., K]``
    :return: actions ``[...]`` (``torch.long``)
    """
    with torch.no_grad():
        return categorical_z(logits, u).argmax(dim=-1)


def categorical_conditional_z(logits: torch.Tensor, actions: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """
    Exact conditional sample ``z~ ~ p(z | b, p)`` for the Gumbel-max ``z`` of :func:`categorical_z`.

    Grathwohl et al. 2018, appendix B, with ``log p = log_softmax(logits)`` and fresh uniform noise ``v``:

    * ``z~_b = -log(-log v_b)`` — the maximum of the Gumbels is ``Gumbel(log sum p) = Gumbel(0)``;
    * ``z~_i = -log(-log(v_i) / p_i - log v_b)`` for ``i != b`` — a ``Gumbel(log p_i)`` truncated
      below ``z~_b``; computed as ``-logaddexp(log(-log v_i) - log p_i, log(-log v_b))``, which is stable
      for tiny ``p_i``.

    ``argmax(z~) = b`` strictly: the ``i != b`` entries are capped at the largest float below ``z~_b``
    (this only binds when the two are equal in floating point, where it has no effect on the law).
    Gradients flow into the logits through ``log p_i`` (``i != b``); ``z~_b`` does not depend on them.

    :param logits: unnormalised logits ``[..., K]`` (finite)
    :param actions: the actions ``b`` ``[...]`` (integer valued)
    :param v: fresh uniform noise ``[..., K]``
    :return: ``z~`` ``[..., K]``
    """
    log_p = torch.log_softmax(logits, dim=-1)
    index = actions.long().unsqueeze(-1)
    # log(-log v) = -Gumbel(v)
    neg_gumbel = torch.log(-torch.log(clamp_uniform(v)))
    neg_gumbel_b = neg_gumbel.gather(-1, index)
    z_top = -neg_gumbel_b
    z_others = -torch.logaddexp(neg_gumbel - log_p, neg_gumbel_b)
    z_others = torch.minimum(z_others, torch.nextafter(z_top, torch.full_like(z_top, -torch.inf)))
    is_b = torch.zeros_like(log_p, dtype=torch.bool).scatter_(-1, index, True)
    return torch.where(is_b, z_top.expand_as(z_others), z_others)


def categorical_relax(z: torch.Tensor, temperature: torch.Tensor | float = 1.0) -> torch.Tensor:
    """
    Concrete relaxation ``softmax(z / tau)`` of a Gumbel-max variable.

    :param z: ``[..., K]``
    :param temperature: ``tau > 0`` (scalar)
    :return: point of the simplex ``[..., K]``
    """
    return torch.softmax(z / temperature, dim=-1)


def categorical_log_prob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """
    ``log Categorical(b | softmax(logits))``.

    :param logits: ``[..., K]``
    :param actions: ``[...]``
    :return: ``[...]``
    """
    return torch.log_softmax(logits, dim=-1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


# ------------------------------------------------------------------------------------- Bernoulli


def bernoulli_z(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """
    Logistic variable ``z = logit(theta) + logit(u)`` with ``H(z) = 1[z > 0] ~ Bernoulli(theta)`` (RELAX App. B).

    :param logits: ``logit(theta)`` ``[..., d]``
    :param u: uniform noise ``[..., d]``
    :return: ``z`` ``[..., d]``
    """
    return logits + logit_from_uniform(u)


def bernoulli_action_from_noise(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """
    Action ``b = 1[z > 0]`` (``P(b = 1) = sigmoid(logits)``).

    :param logits: ``[..., d]``
    :param u: uniform noise ``[..., d]``
    :return: ``b`` in ``{0., 1.}`` with the dtype of ``logits``
    """
    with torch.no_grad():
        return (bernoulli_z(logits, u) > 0).to(logits.dtype)


def bernoulli_conditional_z(logits: torch.Tensor, actions: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """
    Exact conditional sample ``z~ ~ p(z | b, theta)`` for :func:`bernoulli_z` (RELAX App. B; as in duvenaud/relax
    ``pytorch_toy.py``).

    With ``v' = v (1 - theta)`` if ``b = 0`` and ``v' = v theta + (1 - theta)`` if ``b = 1``,
    ``z~ = logit(theta) + logit(v')`` (the inverse CDF of the truncated logistic at ``v'``). Computed in
    the algebraically identical, overflow-free form (``-log(1 - theta) = softplus(l)``,
    ``-log theta = softplus(-l)`` for ``l = logit(theta)``):

    * ``b = 1``: ``z~ = log(1 + v / ((1 - v)(1 - theta))) = softplus(logit(v) + softplus(l)) > 0``;
    * ``b = 0``: ``z~ = -log(1 + (1 - v) / (v theta)) = -softplus(softplus(-l) - logit(v)) < 0``.

    (The closed form of sdrobert/pydrobert-pytorch ``LogisticBernoulli.csample`` for ``b = 0``,
    ``-log(1 + v / ((1 - v) theta))``, is this one with ``v -> 1 - v``: the same law, a different pathwise map.
    Here ``z~`` is increasing in ``v`` in both branches, as with the ``v'`` construction.) The signs are strict in
    floating point because ``|logit(v)| <= logit(1 - eps)``. Differentiable in ``l``.

    :param logits: ``logit(theta)`` ``[..., d]``
    :param actions: ``b`` in ``{0, 1}`` ``[..., d]``
    :param v: fresh uniform noise ``[..., d]``
    :return: ``z~`` ``[..., d]``
    """
    noise = logit_from_uniform(v)
    positive = F.softplus(noise + F.softplus(logits))
    negative = -F.softplus(F.softplus(-logits) - noise)
    return torch.where(actions > 0.5, positive, negative)


def bernoulli_relax(z: torch.Tensor, temperature: torch.Tensor | float = 1.0) -> torch.Tensor:
    """
    Relaxation ``sigmoid(z / tau)`` of a logistic variable.

    :param z: ``[..., d]``
    :param temperature: ``tau > 0`` (scalar)
    :return: ``[..., d]`` in ``(0, 1)``
    """
    return torch.sigmoid(z / temperature)


def bernoulli_log_prob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """
    ``sum_j log Bernoulli(b_j | sigmoid(l_j))`` over the last dimension.

    :param logits: ``[..., d]``
    :param actions: ``[..., d]`` in ``{0, 1}``
    :return: ``[...]``
    """
    return -F.binary_cross_entropy_with_logits(logits, actions.to(logits.dtype), reduction="none").sum(dim=-1)


# ---------------------------------------------------------------------------------- MultiDiscrete


def split_logits(logits: torch.Tensor, nvec: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """
    Split a flat ``[..., sum(nvec)]`` tensor into one block per sub-action (as SB3's MultiCategoricalDistribution).

    :param logits: flat tensor ``[..., sum(nvec)]``
    :param nvec: number of choices of each sub-action
    :return: ``len(nvec)`` tensors ``[..., nvec[j]]``
    """
    return torch.split(logits, [int(n) for n in nvec], dim=-1)


def multi_categorical_z(logits: torch.Tensor, u: torch.Tensor, nvec: Sequence[int]) -> torch.Tensor:
    """
    Independent Gumbel-max variables (:func:`categorical_z`) for each block of a flat logits vector.

    :param logits: ``[..., sum(nvec)]``
    :param u: uniform noise ``[..., sum(nvec)]``
    :param nvec: number of choices of each sub-action
    :return: ``z`` ``[..., sum(nvec)]``
    """
    blocks = zip(split_logits(logits, nvec), split_logits(u, nvec), strict=True)
    return torch.cat([categorical_z(block, noise) for block, noise in blocks], dim=-1)


def multi_categorical_action_from_noise(logits: torch.Tensor, u: torch.Tensor, nvec: Sequence[int]) -> torch.Tensor:
    """
    Per-block Gumbel-max actions.

    :param logits: ``[..., sum(nvec)]``
    :param u: uniform noise ``[..., sum(nvec)]``
    :param nvec: number of choices of each sub-action
    :return: actions ``[..., len(nvec)]`` (``torch.long``)
    """
    with torch.no_grad():
        z = multi_categorical_z(logits, u, nvec)
        return torch.stack([block.argmax(dim=-1) for block in split_logits(z, nvec)], dim=-1)


def multi_categorical_conditional_z(
    logits: torch.Tensor, actions: torch.Tensor, v: torch.Tensor, nvec: Sequence[int]
) -> torch.Tensor:
    """
    Per-block exact conditional samples (:func:`categorical_conditional_z`).

    :param logits: ``[..., sum(nvec)]``
    :param actions: ``[..., len(nvec)]``
    :param v: fresh uniform noise ``[..., sum(nvec)]``
    :param nvec: number of choices of each sub-action
    :return: ``z~`` ``[..., sum(nvec)]``
    """
    blocks = zip(split_logits(logits, nvec), actions.unbind(dim=-1), split_logits(v, nvec), strict=True)
    return torch.cat([categorical_conditional_z(block, act, noise) for block, act, noise in blocks], dim=-1)


def multi_categorical_relax(z: torch.Tensor, nvec: Sequence[int], temperature: torch.Tensor | float = 1.0) -> torch.Tensor:
    """
    Per-block ``softmax(z / tau)``, concatenated.

    :param z: ``[..., sum(nvec)]``
    :param nvec: number of choices of each sub-action
    :param temperature: ``tau > 0`` (scalar, shared by the blocks)
    :return: ``[..., sum(nvec)]``
    """
    return torch.cat([categorical_relax(block, temperature) for block in split_logits(z, nvec)], dim=-1)


def multi_categorical_log_prob(logits: torch.Tensor, actions: torch.Tensor, nvec: Sequence[int]) -> torch.Tensor:
    """
    Sum of the per-block categorical log-probabilities.

    :param logits: ``[..., sum(nvec)]``
    :param actions: ``[..., len(nvec)]``
    :param nvec: number of choices of each sub-action
    :return: ``[...]``
    """
    blocks = zip(split_logits(logits, nvec), actions.unbind(dim=-1), strict=True)
    return torch.stack([categorical_log_prob(block, act) for block, act in blocks], dim=-1).sum(dim=-1)


# -------------------------------------------------------------------------------------- Gaussian


def gaussian_action_from_noise(mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """
    Reparameterised Gaussian action ``a(theta, eps) = mu + sigma * eps`` (LAX, RELAX App. C first theorem).

    In the train step pass the *stored* noise of the rollout (the one that produced the executed
    action), not a fresh draw (the released continuous RELAX code used a fresh draw, a bug pointed out by
    Tucker et al. 2018 and acknowledged in Grathwohl et al. 2018, App. E).

    :param mean: ``mu`` ``[..., d]``
    :param log_std: ``log sigma``, broadcastable to ``mean``
    :param noise: standard normal noise ``eps`` ``[..., d]``
    :return: ``a`` ``[..., d]``, differentiable in ``mean`` and ``log_std``
    """
    return mean + torch.exp(log_std) * noise


def gaussian_noise_from_action(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """
    Recover the noise ``eps = (a - mu) / sigma`` of a stored *unclipped* action (detached).

    Exact up to rounding, but only with the parameters ``theta`` that produced the action, and only if
    the stored action is the raw Gaussian sample (Stable-Baselines3's on-policy buffers store the
    unclipped action; clipped or tanh-squashed actions do not identify the noise).

    :param mean: ``mu`` ``[..., d]``
    :param log_std: ``log sigma``, broadcastable to ``mean``
    :param actions: unclipped actions ``[..., d]``
    :return: ``eps`` ``[..., d]`` (no gradient)
    """
    with torch.no_grad():
        return (actions - mean) * torch.exp(-log_std)


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """
    Diagonal Gaussian ``log N(a | mu, sigma^2)`` summed over the last dimension.

    :param mean: ``[..., d]``
    :param log_std: broadcastable to ``mean``
    :param actions: ``[..., d]``
    :return: ``[...]``
    """
    log_std = log_std.expand_as(mean)
    standardized = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * standardized.pow(2) - log_std - 0.5 * np.log(2.0 * np.pi)).sum(dim=-1)


# ------------------------------------------------------------------------- per-space wrappers


class Relaxation(ABC):
    """
    What a control variate needs to know about an action space: the size of its input and the relaxation.

    :param relaxed_dim: width of the relaxed action fed to ``c_phi``
    :param noise_dim: number of noise entries per sample stored by the rollout
    """

    #: whether :meth:`relax` uses a temperature (a learnable ``log tau`` in the control variate)
    uses_temperature: bool = True

    def __init__(self, relaxed_dim: int, noise_dim: int) -> None:
        self.relaxed_dim = int(relaxed_dim)
        self.noise_dim = int(noise_dim)

    @abstractmethod
    def relax(self, z: torch.Tensor, temperature: torch.Tensor | float | None = None) -> torch.Tensor:
        """
        The continuous input of the control variate for a reparameterised ``z``.

        :param z: ``[..., noise_dim]``
        :param temperature: ``tau`` (ignored when :attr:`uses_temperature` is ``False``)
        :return: ``[..., relaxed_dim]``
        """

    @abstractmethod
    def sample_noise(
        self,
        batch_shape: Sequence[int] | int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """
        Draw the noise used to act (``u``) or to resample (``v``).

        :param batch_shape: leading shape (an int for a flat batch)
        :param device: device
        :param dtype: floating point dtype
        :param generator: optional random generator
        :return: ``[*batch_shape, noise_dim]``
        """


def _batch_shape(batch_shape: Sequence[int] | int) -> tuple[int, ...]:
    return (int(batch_shape),) if isinstance(batch_shape, (int, np.integer)) else tuple(int(n) for n in batch_shape)


class DiscreteRelaxation(Relaxation):
    """
    RELAX sampler for a discrete action space: ``z(theta, u)``, ``b = H(z)``, ``z~(theta, b, v)`` and the relaxation.

    ``params`` below are the flat logits produced by the policy head (as in Stable-Baselines3).
    """

    def sample_noise(
        self,
        batch_shape: Sequence[int] | int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return sample_uniform((*_batch_shape(batch_shape), self.noise_dim), device=device, dtype=dtype, generator=generator)

    @abstractmethod
    def z(self, params: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """
        Reparameterised ``z(theta, u)`` (differentiable in ``params``).

        :param params: logits ``[..., noise_dim]``
        :param u: the stored uniform noise ``[..., noise_dim]``
        :return: ``z`` ``[..., noise_dim]``
        """

    @abstractmethod
    def action_from_noise(self, params: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """
        ``b = H(z(theta, u))``, distributed as the policy's action distribution (no gradient).

        :param params: logits ``[..., noise_dim]``
        :param u: uniform noise ``[..., noise_dim]``
        :return: actions
        """

    @abstractmethod
    def conditional_z(self, params: torch.Tensor, actions: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """
        Exact conditional ``z~ ~ p(z | b, theta)`` (differentiable in ``params``).

        :param params: logits ``[..., noise_dim]``
        :param actions: the actions ``b``
        :param v: fresh uniform noise ``[..., noise_dim]``
        :return: ``z~`` ``[..., noise_dim]``
        """

    @abstractmethod
    def log_prob(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """
        ``log pi(b | theta)`` (summed over sub-actions).

        :param params: logits ``[..., noise_dim]``
        :param actions: the actions ``b``
        :return: ``[...]``
        """


class CategoricalRelaxation(DiscreteRelaxation):
    """
    ``Discrete(n)``: Gumbel-max ``z``, ``b = argmax z``, relaxation ``softmax(z / tau)``.

    :param n: number of actions
    """

    def __init__(self, n: int) -> None:
        super().__init__(relaxed_dim=n, noise_dim=n)
        self.n = int(n)

    def z(self, params: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return categorical_z(params, u)

    def action_from_noise(self, params: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return categorical_action_from_noise(params, u)

    def conditional_z(self, params: torch.Tensor, actions: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return categorical_conditional_z(params, actions, v)

    def relax(self, z: torch.Tensor, temperature: torch.Tensor | float | None = None) -> torch.Tensor:
        return categorical_relax(z, 1.0 if temperature is None else temperature)

    def log_prob(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return categorical_log_prob(params, actions)


class MultiCategoricalRelaxation(DiscreteRelaxation):
    """
    ``MultiDiscrete(nvec)``: independent categoricals over the blocks of a flat logits vector.

    :param nvec: number of choices of each sub-action
    """

    def __init__(self, nvec: Sequence[int] | np.ndarray) -> None:
        self.nvec = [int(n) for n in np.asarray(nvec).reshape(-1)]
        total = sum(self.nvec)
        super().__init__(relaxed_dim=total, noise_dim=total)

    def z(self, params: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return multi_categorical_z(params, u, self.nvec)

    def action_from_noise(self, params: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return multi_categorical_action_from_noise(params, u, self.nvec)

    def conditional_z(self, params: torch.Tensor, actions: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return multi_categorical_conditional_z(params, actions, v, self.nvec)

    def relax(self, z: torch.Tensor, temperature: torch.Tensor | float | None = None) -> torch.Tensor:
        return multi_categorical_relax(z, self.nvec, 1.0 if temperature is None else temperature)

    def log_prob(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return multi_categorical_log_prob(params, actions, self.nvec)


# same shape as CategoricalRelaxation and MultiCategoricalRelaxation: each adapter binds its own distribution's functions
class BernoulliRelaxation(DiscreteRelaxation):
    """
    ``MultiBinary(n)``: logistic ``z``, ``b = 1[z > 0]``, relaxation ``sigmoid(z / tau)``.

    :param n: number of binary sub-actions
    """

    def __init__(self, n: int) -> None:
        super().__init__(relaxed_dim=n, noise_dim=n)
        self.n = int(n)

    def z(self, params: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return bernoulli_z(params, u)

    def action_from_noise(self, params: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return bernoulli_action_from_noise(params, u)

    def conditional_z(self, params: torch.Tensor, actions: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return bernoulli_conditional_z(params, actions, v)

    def relax(self, z: torch.Tensor, temperature: torch.Tensor | float | None = None) -> torch.Tensor:
        return bernoulli_relax(z, 1.0 if temperature is None else temperature)

    def log_prob(self, params: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return bernoulli_log_prob(params, actions)


class DiagGaussianReparameterization(Relaxation):
    """
    ``Box`` actions (LAX): ``a(theta, eps) = mu + sigma * eps`` with the stored standard normal noise ``eps``.

    The control variate's input is the (unclipped) action itself; there is no temperature and no
    conditional resampling (``z~`` is not needed by LAX).

    :param action_dim: flattened action dimension
    """

    uses_temperature = False

    def __init__(self, action_dim: int) -> None:
        super().__init__(relaxed_dim=action_dim, noise_dim=action_dim)
        self.action_dim = int(action_dim)

    def sample_noise(
        self,
        batch_shape: Sequence[int] | int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        shape = (*_batch_shape(batch_shape), self.noise_dim)
        return torch.randn(shape, device=device, dtype=dtype, generator=generator)

    def relax(self, z: torch.Tensor, temperature: torch.Tensor | float | None = None) -> torch.Tensor:
        return z

    def action_from_noise(self, mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """
        ``a(theta, eps) = mu + sigma * eps`` (see :func:`gaussian_action_from_noise`).

        :param mean: ``[..., d]``
        :param log_std: broadcastable to ``mean``
        :param noise: ``[..., d]``
        :return: ``[..., d]``
        """
        return gaussian_action_from_noise(mean, log_std, noise)

    def noise_from_action(self, mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """
        ``eps = (a - mu) / sigma`` (see :func:`gaussian_noise_from_action`).

        :param mean: ``[..., d]``
        :param log_std: broadcastable to ``mean``
        :param actions: unclipped actions ``[..., d]``
        :return: ``[..., d]``
        """
        return gaussian_noise_from_action(mean, log_std, actions)

    def log_prob(self, mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """
        ``log pi(a | theta)`` summed over action dimensions.

        :param mean: ``[..., d]``
        :param log_std: broadcastable to ``mean``
        :param actions: ``[..., d]``
        :return: ``[...]``
        """
        return gaussian_log_prob(mean, log_std, actions)


def make_relaxation(action_space: spaces.Space) -> Relaxation:
    """
    The sampler / relaxation for a Gymnasium action space.

    :param action_space: ``Discrete``, ``MultiDiscrete``, ``MultiBinary`` or ``Box``
    :return: the matching :class:`Relaxation`
    """
    if isinstance(action_space, spaces.Discrete):
        return CategoricalRelaxation(int(action_space.n))
    if isinstance(action_space, spaces.MultiDiscrete):
        return MultiCategoricalRelaxation(action_space.nvec)
    if isinstance(action_space, spaces.MultiBinary):
        return BernoulliRelaxation(int(np.prod(action_space.shape)))
    if isinstance(action_space, spaces.Box):
        return DiagGaussianReparameterization(int(np.prod(action_space.shape)))
    raise NotImplementedError(f"RELAX/LAX relaxation not implemented for action space {action_space}")
