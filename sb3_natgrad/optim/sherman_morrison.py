"""
Sherman–Morrison / WoodFisher / Woodbury natural-gradient directions for the damped empirical Fisher (plain PyTorch).

Everything here is matrix-free: with ``d`` the number of parameters no ``d x d`` matrix is ever allocated. The
three Fisher approximations (``fisher=`` in :class:`ShermanMorrison`) are

``"mean"``
    ``F = lambda I + psi psi^T`` with one vector ``psi``, usually the gradient of the batch-mean log-probability
    (Huo et al. 2026, §5.1) or the score of a single sample (§4.1, eqs. (4)-(5)). Sherman–Morrison (§3, eq. (3))
    gives ``F^-1 g = (g - psi (psi^T g) / (lambda + psi^T psi)) / lambda``: ``O(d)`` time and memory.
``"sample"``
    ``F_M = lambda I + (1/M) sum_i psi_i psi_i^T`` over ``M`` per-sample scores, inverted exactly by ``M`` rank-1
    Sherman–Morrison updates (WoodFisher recursion, Singh & Alistarh 2020; Huo et al. 2026, §4.1):
    ``O(M^2 d)`` time, ``O(M d)`` memory.
``"batch"``
    The same ``F_M``, inverted in one go with the Woodbury identity through the ``M x M`` Gram matrix
    ``K = Psi Psi^T`` of the scores: ``O(M^2 d + M^3)`` time. When the gradient is itself a combination of the
    same scores, ``g = (1/M) sum_i a_i psi_i``, the direction is ``sum_i w_i psi_i`` with
    ``w = (K + M lambda I)^-1 a`` (kernel form), i.e. the gradient of ``sum_i w_i log pi(a_i|s_i)`` with detached
    weights: one extra backward pass and no per-sample gradients, since ``K`` can be computed layer by layer
    (:class:`LinearGramRecorder`).

Conventions: a score matrix ``scores`` has one row per sample, ``scores[i] = psi_i`` (shape ``[M, d]``, what
``torch.func.vmap(torch.func.grad(...))`` returns after flattening); the ``d x M`` matrix ``U = [psi_1 .. psi_M]``
used below is its transpose. Flat vectors follow the order of ``torch.nn.utils.parameters_to_vector``. The direction
is linear in ``g``, so either sign convention works (ascent gradient of ``J`` or descent gradient of a loss ``-J``);
the step size depends on ``g`` only through quadratic forms.

When does each mode help? Because ``E_a[grad log pi(a|s)] = 0``, the batch-mean score shrinks like
``1/sqrt(M)``: with a large batch ``"mean"`` is plain gradient ascent with learning rate ``alpha / lambda``
(the rank-1 correction vanishes like ``1/(M lambda)``). It is a genuine curvature correction only for small
batches or a single-sample ``psi``. ``"sample"`` and ``"batch"`` use the full batch empirical Fisher and do not
degenerate; ``"batch"`` (kernel form) is the one to use in an algorithm, ``"sample"`` is the paper's incremental
variant and a cross-check.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sb3_natgrad.optim.validation import is_number

FISHER_MODES = ("mean", "sample", "batch")
NONFINITE_POLICIES = ("skip", "raise")

# Names of the statistics reported in ``NaturalGradientStep.stats`` (stable keys for loggers).
STAT_KEYS = ("natural_grad_norm", "grad_norm", "step_size", "fisher_alignment", "gFg", "kl_estimate")


# --------------------------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------------------------


def _check_positive(name: str, value: Any) -> float:
    if not is_number(value) or value <= 0:
        raise ValueError(f"{name}={value!r} is invalid: expected a finite number > 0")
    return float(value)


def _check_vector(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {type(value).__name__}")
    if value.dim() != 1 or value.numel() == 0:
        raise ValueError(f"{name} must be a non-empty flat vector of shape [d], got shape {tuple(value.shape)}")
    return value


def _check_matrix(name: str, value: Any, columns: int | None = None, rows: int | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point torch.Tensor, got {type(value).__name__}")
    if value.dim() != 2 or value.shape[0] == 0 or value.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty matrix, got shape {tuple(value.shape)}")
    if columns is not None and value.shape[1] != columns:
        raise ValueError(f"{name} has shape {tuple(value.shape)}: expected {columns} columns (the number of parameters)")
    if rows is not None and value.shape[0] != rows:
        raise ValueError(f"{name} has shape {tuple(value.shape)}: expected {rows} rows (the number of samples)")
    return value


def _check_gram(gram: Any, coefficients: Any) -> tuple[torch.Tensor, torch.Tensor]:
    coefficients = _check_vector("coefficients", coefficients)
    num = coefficients.shape[0]
    gram = _check_matrix("gram", gram, columns=num, rows=num)
    return gram, coefficients


def _nonfinite(tensor: torch.Tensor) -> bool:
    return not bool(torch.isfinite(tensor).all())


# --------------------------------------------------------------------------------------------------------------
# Solvers
# --------------------------------------------------------------------------------------------------------------


def sherman_morrison_direction(grad: torch.Tensor, score: torch.Tensor, damping: float) -> torch.Tensor:
    """
    Rank-1 damped Fisher solve ``(lambda I + psi psi^T)^-1 g`` by the Sherman–Morrison formula
    (Huo et al. 2026, §3 eq. (3) with ``A = lambda I``, ``u = v = psi``; §4.1 eq. (5)):

    ``F^-1 g = (1/lambda) [g - psi (psi^T g) / (lambda + psi^T psi)]``.

    ``O(d)`` time; the only ``d``-sized allocation is the result.

    *When it helps*. With ``psi`` the gradient of the batch-MEAN log-probability, ``psi`` averages
    to about zero (``E_a[grad log pi] = 0``, so ``|psi| ~ 1/sqrt(M)``) and the correction term is ``O(1/(M lambda))``
    relative to ``g``: for large batches the result is ``g / lambda``, i.e. SGD with learning rate
    ``alpha / lambda``. The correction is ``O(1)`` only for small batches or a single-sample score
    (``psi = grad log pi(a_k|s_k)``, Huo et al. 2026, §4.1). Use ``"batch"``/``"sample"`` for the full empirical Fisher.

    :param grad: the gradient ``g``, shape ``[d]``
    :param score: the Fisher vector ``psi``, shape ``[d]``
    :param damping: ``lambda > 0``
    :return: ``F^-1 g``, shape ``[d]``, dtype of ``grad``
    """
    damping = _check_positive("damping", damping)
    grad = _check_vector("grad", grad)
    score = _check_vector("score", score)
    if score.shape != grad.shape:
        raise ValueError(f"score has shape {tuple(score.shape)} but grad has shape {tuple(grad.shape)}")
    score = score.to(dtype=grad.dtype)
    # Huo et al. 2026, §3 eq. (3): coefficient -(psi^T g) / (lambda + psi^T psi), kept as a 0-dim tensor (no host sync).
    coef = -torch.dot(score, grad) / (damping + torch.dot(score, score))
    return torch.addcmul(grad, score, coef).div_(damping)


def woodfisher_factors(scores: torch.Tensor, damping: float) -> tuple[torch.Tensor, torch.Tensor]:
    """
    WoodFisher recursion (Singh & Alistarh 2020; Huo et al. 2026, §4.1) for
    ``F_M = lambda I + (1/M) sum_i psi_i psi_i^T``:

    ``H_0 = I / lambda``, ``k_i = H_{i-1} psi_i``, ``H_i = H_{i-1} - k_i k_i^T / (M + psi_i^T k_i)``,

    so ``H_M = F_M^-1`` exactly (each step is Sherman–Morrison for adding ``psi_i psi_i^T / M``). Only the vectors
    ``k_i`` and the scalars ``M + psi_i^T k_i`` are kept; ``H_{i-1}`` is applied matrix-free from the earlier
    ``k_j``. ``O(M^2 d)`` time, ``O(M d)`` memory. Apply with :func:`woodfisher_apply`.

    :param scores: per-sample scores, shape ``[M, d]`` (row ``i`` is ``psi_i``)
    :param damping: ``lambda > 0``
    :return: ``(factors, denominators)``: ``factors[i] = k_i`` (shape ``[M, d]``) and
        ``denominators[i] = M + psi_i^T k_i`` (shape ``[M]``)
    """
    damping = _check_positive("damping", damping)
    scores = _check_matrix("scores", scores)
    num = scores.shape[0]
    factors = torch.empty_like(scores)
    denominators = scores.new_empty(num)
    for i in range(num):
        psi = scores[i]
        if i == 0:
            k = psi / damping
        else:
            # k_i = H_{i-1} psi_i = psi_i / lambda - sum_{j<i} k_j (k_j^T psi_i) / (M + psi_j^T k_j)
            prev = factors[:i]
            coef = torch.mv(prev, psi).div_(denominators[:i])
            k = torch.addmv(psi / damping, prev.T, coef, alpha=-1.0)
        factors[i] = k
        denominators[i] = num + torch.dot(psi, k)
    return factors, denominators


def woodfisher_apply(vector: torch.Tensor, factors: torch.Tensor, denominators: torch.Tensor, damping: float) -> torch.Tensor:
    """
    Apply ``H_M = F_M^-1`` from :func:`woodfisher_factors`: ``H_M v = v / lambda - sum_i k_i (k_i^T v) / den_i``.

    :param vector: ``v``, shape ``[d]``
    :param factors: ``k_i`` rows, shape ``[M, d]``
    :param denominators: ``M + psi_i^T k_i``, shape ``[M]``
    :param damping: the ``lambda`` used to build the factors
    :return: ``F_M^-1 v``, shape ``[d]``
    """
    damping = _check_positive("damping", damping)
    vector = _check_vector("vector", vector)
    factors = _check_matrix("factors", factors, columns=vector.shape[0])
    denominators = _check_vector("denominators", denominators)
    if denominators.shape[0] != factors.shape[0]:
        raise ValueError(f"denominators has shape {tuple(denominators.shape)} but factors has {factors.shape[0]} rows")
    factors = factors.to(dtype=vector.dtype)
    coef = torch.mv(factors, vector).div_(denominators.to(dtype=vector.dtype))
    return torch.addmv(vector / damping, factors.T, coef, alpha=-1.0)


def woodfisher_direction(grad: torch.Tensor, scores: torch.Tensor, damping: float) -> torch.Tensor:
    """
    ``F_M^-1 g`` for ``F_M = lambda I + (1/M) sum_i psi_i psi_i^T`` by the WoodFisher recursion
    (:func:`woodfisher_factors` then :func:`woodfisher_apply`). Same result as :func:`woodbury_direction`;
    this is the paper's incremental variant (Huo et al. 2026, §4.1, first display), kept for cross-checks and for
    scores that arrive one at a time.

    :param grad: ``g``, shape ``[d]``
    :param scores: per-sample scores, shape ``[M, d]``
    :param damping: ``lambda > 0``
    :return: ``F_M^-1 g``, shape ``[d]``
    """
    grad = _check_vector("grad", grad)
    scores = _check_matrix("scores", scores, columns=grad.shape[0]).to(dtype=grad.dtype)
    factors, denominators = woodfisher_factors(scores, damping)
    return woodfisher_apply(grad, factors, denominators, damping)


def _solve_shifted_gram(gram: torch.Tensor, rhs: torch.Tensor, shift: float) -> torch.Tensor:
    """Solve ``(K + shift I) x = rhs`` for a PSD Gram ``K`` (small ``M x M``), in float64 whatever the input dtype."""
    system = gram.to(torch.float64)
    system = 0.5 * (system + system.T)
    system.diagonal().add_(shift)
    rhs64 = rhs.to(torch.float64).unsqueeze(-1)
    chol, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0:
        solution = torch.cholesky_solve(rhs64, chol)
    else:  # round-off made the shifted Gram numerically indefinite: fall back to LU
        solution = torch.linalg.solve(system, rhs64)
    return solution.squeeze(-1)


def score_gram(scores: torch.Tensor) -> torch.Tensor:
    """
    Gram matrix of per-sample scores, ``K = Psi Psi^T`` (``K_ij = psi_i . psi_j``).

    :param scores: shape ``[M, d]``
    :return: shape ``[M, M]``
    """
    scores = _check_matrix("scores", scores)
    return scores @ scores.T


def woodbury_direction(grad: torch.Tensor, scores: torch.Tensor, damping: float) -> torch.Tensor:
    """
    Exact batch empirical-Fisher solve by the Woodbury identity, for an arbitrary ``g``:

    ``(lambda I + (1/M) U U^T)^-1 g = (1/lambda) [g - U (M lambda I + U^T U)^-1 U^T g]``, ``U = scores^T``.

    One ``M x M`` Cholesky solve (in float64) and two products with the score matrix: ``O(M^2 d + M^3)`` time,
    no ``d x d`` matrix. Use this when ``g`` is not a combination of the same scores (e.g. it contains an exact
    entropy gradient); otherwise :func:`kernel_weights` avoids per-sample gradients altogether.

    :param grad: ``g``, shape ``[d]``
    :param scores: per-sample scores, shape ``[M, d]``
    :param damping: ``lambda > 0``
    :return: ``F_M^-1 g``, shape ``[d]``
    """
    damping = _check_positive("damping", damping)
    grad = _check_vector("grad", grad)
    scores = _check_matrix("scores", scores, columns=grad.shape[0]).to(dtype=grad.dtype)
    num = scores.shape[0]
    # Woodbury identity with A = lambda I, C = I / M: inner system (M lambda I + U^T U) y = U^T g.
    inner = _solve_shifted_gram(scores @ scores.T, torch.mv(scores, grad), num * damping).to(dtype=grad.dtype)
    return torch.addmv(grad, scores.T, inner, alpha=-1.0).div_(damping)


def kernel_weights(gram: torch.Tensor, coefficients: torch.Tensor, damping: float) -> torch.Tensor:
    """
    Per-sample weights of the natural direction in kernel form (Woodbury identity; the same Gram-matrix trick as
    kazukiosawa/asdl ``asdl/precondition/smw.py``).

    If ``g = (1/M) sum_i a_i psi_i = (1/M) U a`` (e.g. ``a_i`` = advantages of the A2C objective
    ``mean_i a_i log pi(a_i|s_i)``), then ``F_M^-1 g = U (K + M lambda I)^-1 a = U w``, where ``K = U^T U`` is the
    Gram matrix of the scores. Hence the natural direction is the gradient of ``sum_i w_i log pi(a_i|s_i)`` with
    the weights ``w`` held constant (detached)::

        w = kernel_weights(K, advantages, damping)
        direction = torch.autograd.grad((w * log_probs).sum(), actor_params)   # = F_M^-1 g, one backward

    ``K`` comes from :class:`LinearGramRecorder` (no per-sample gradients) or :func:`score_gram`.
    Note the weights are NOT divided by ``M``: ``U w`` is already the full direction.

    *Arbitrary g, still without per-sample gradients.* The Woodbury form
    ``F_M^-1 g = (g - U (K + M lambda I)^-1 U^T g) / lambda`` needs only ``U^T g`` (from :func:`score_projections`)
    and one backward::

        y = kernel_weights(K, score_projections(log_probs, actor_params, g), damping)
        direction = (g - flat_grad((y * log_probs).sum())) / damping

    :param gram: ``K``, shape ``[M, M]``
    :param coefficients: ``a``, shape ``[M]``
    :param damping: ``lambda > 0``
    :return: ``w = (K + M lambda I)^-1 a``, shape ``[M]``, dtype of ``coefficients`` (solved in float64)
    """
    damping = _check_positive("damping", damping)
    gram, coefficients = _check_gram(gram, coefficients)
    num = coefficients.shape[0]
    return _solve_shifted_gram(gram, coefficients, num * damping).to(dtype=coefficients.dtype)


def trust_region_step_size(quadratic: float, max_kl: float | None, max_step_size: float) -> float:
    """
    Step size ``alpha`` for the update ``alpha * d``: fixed, or normalised so that the quadratic KL model
    ``0.5 alpha^2 d^T F d`` equals ``max_kl`` (natural-gradient trust region, Wu et al. 2017, §3.2):

    ``alpha = min(max_step_size, sqrt(2 max_kl / d^T F d))``.

    For the natural direction ``d = F^-1 g``, ``d^T F d = g^T F^-1 g``. If ``quadratic <= 0`` (only possible for
    ``d = 0`` since ``F`` is positive definite, or from round-off around it) the constraint does not bind and
    ``max_step_size`` is returned. A non-finite ``quadratic`` raises (callers should skip the update first).

    :param quadratic: ``d^T F d`` (or ``g^T F^-1 g``)
    :param max_kl: trust-region radius ``delta > 0``; ``None`` for a fixed step ``max_step_size``
    :param max_step_size: ``alpha_max > 0`` (the fixed step when ``max_kl`` is ``None``)
    :return: ``alpha``
    """
    max_step_size = _check_positive("max_step_size", max_step_size)
    if max_kl is None:
        return max_step_size
    max_kl = _check_positive("max_kl", max_kl)
    if not is_number(quadratic):
        raise ValueError(f"quadratic={quadratic!r} is invalid: expected a finite number")
    if quadratic <= 0.0:
        return max_step_size
    return min(max_step_size, math.sqrt(2.0 * max_kl / float(quadratic)))


# --------------------------------------------------------------------------------------------------------------
# Gram matrix and per-sample scores
# --------------------------------------------------------------------------------------------------------------


def linear_layer_gram(
    inputs: torch.Tensor, output_grads: torch.Tensor, weight: bool = True, bias: bool = True
) -> torch.Tensor:
    """
    Contribution of one ``nn.Linear`` layer (applied once per sample) to the Gram of per-sample gradients.

    The per-sample gradient of ``W~ = [W, b]`` is the outer product ``delta_i a~_i^T`` with ``a~_i = [a_i; 1]``,
    so ``<grad_i, grad_j> = (a~_i . a~_j)(delta_i . delta_j)`` and the layer's block is
    ``(A~ A~^T) * (Delta Delta^T)`` (Hadamard product) — per-sample gradients are never formed.

    :param inputs: layer inputs ``A``, shape ``[M, in]``
    :param output_grads: ``Delta``, gradients of the per-sample log-probabilities with respect to the layer
        outputs, shape ``[M, out]`` (row ``i`` = ``d log pi_i / d s_i``, obtained from one backward of ``sum_i log pi_i``)
    :param weight: whether the weight is a trainable parameter (contributes ``A A^T``)
    :param bias: whether a bias is a trainable parameter (contributes the ones column, i.e. ``+1``)
    :return: shape ``[M, M]``
    """
    inputs = _check_matrix("inputs", inputs)
    output_grads = _check_matrix("output_grads", output_grads, rows=inputs.shape[0])
    num = inputs.shape[0]
    if weight:
        input_gram = inputs @ inputs.T
        if bias:
            input_gram = input_gram + 1.0
    elif bias:
        input_gram = inputs.new_ones(num, num)
    else:
        return inputs.new_zeros(num, num)
    return input_gram.mul_(output_grads @ output_grads.T)


@dataclass(eq=False)
class _LinearRecord:
    module: nn.Linear
    inputs: list[torch.Tensor] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)


class LinearGramRecorder:
    """
    Gram matrix ``K_ij = psi_i . psi_j`` of per-sample log-probability gradients, without per-sample gradients.

    Records the input and output of every ``nn.Linear`` inside ``modules`` during ONE forward pass, then
    :meth:`gram` takes one backward of ``sum_i log pi_i`` with respect to the recorded outputs (no parameter
    gradients are computed) and sums :func:`linear_layer_gram` over the layers:
    ``K = sum_layers (A~ A~^T) * (Delta Delta^T) + E E^T``. Usage::

        recorder = LinearGramRecorder([policy.mlp_extractor.policy_net, policy.action_net])
        with recorder:
            dist = policy.get_distribution(obs)        # the forward whose graph log_probs comes from
        log_probs = dist.log_prob(actions)            # [M]
        extra = diag_gaussian_log_std_scores(actions, dist.distribution.mean, policy.log_std)  # Gaussian only
        gram = recorder.gram(log_probs, extra_scores=extra)   # [M, M]
        w = kernel_weights(gram, advantages, damping)
        direction = torch.autograd.grad((w * log_probs).sum(), actor_params)

    Requirements: samples must not interact in the forward pass (no batch norm); every recorded layer is applied
    exactly once per forward, to an input of shape ``[M, in]`` (a layer applied twice or to ``[M, T, in]`` inputs
    raises — use :func:`per_sample_scores` then); outputs must not be modified in place afterwards. Layers whose
    output does not influence ``log_probs`` (e.g. a critic head called in the same forward) contribute nothing.

    *Leftover parameters.* Trainable parameters outside the hooked ``nn.Linear`` layers (e.g. the state-independent
    Gaussian ``log_std`` shared by all samples, or any conv layer) are NOT in the fast path: pass their per-sample
    gradients as ``extra_scores`` (shape ``[M, k]``, any column order), from :func:`diag_gaussian_log_std_scores`
    (closed form), :func:`per_sample_param_scores` (batched backward) or :func:`per_sample_scores`. Check coverage
    with :meth:`covered_parameters`; a parameter neither covered nor in ``extra_scores`` makes ``K`` wrong.

    :param modules: a module or modules whose ``nn.Linear`` submodules (with a trainable weight or bias) are hooked
    """

    def __init__(self, modules: nn.Module | Iterable[nn.Module]) -> None:
        if isinstance(modules, nn.Module):
            modules = [modules]
        self._records: list[_LinearRecord] = []
        seen: set[int] = set()
        for root in modules:
            if not isinstance(root, nn.Module):
                raise ValueError(f"modules must be nn.Module instances, got {type(root).__name__}")
            for module in root.modules():
                if not isinstance(module, nn.Linear) or id(module) in seen:
                    continue
                seen.add(id(module))
                if module.weight.requires_grad or (module.bias is not None and module.bias.requires_grad):
                    self._records.append(_LinearRecord(module))
        if not self._records:
            raise ValueError("modules contain no nn.Linear layer with trainable parameters")
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def layers(self) -> list[nn.Linear]:
        """The hooked ``nn.Linear`` layers."""
        return [record.module for record in self._records]

    def covered_parameters(self) -> list[torch.Tensor]:
        """
        :return: the trainable parameters whose per-sample gradients the fast path accounts for
        """
        params: list[torch.Tensor] = []
        for record in self._records:
            if record.module.weight.requires_grad:
                params.append(record.module.weight)
            if record.module.bias is not None and record.module.bias.requires_grad:
                params.append(record.module.bias)
        return params

    def _hook(self, record: _LinearRecord, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        record.inputs.append(inputs[0].detach())
        record.outputs.append(output)

    def __enter__(self) -> LinearGramRecorder:
        self.clear()
        for record in self._records:
            self._handles.append(record.module.register_forward_hook(lambda m, i, o, r=record: self._hook(r, m, i, o)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def clear(self) -> None:
        """Drop the recorded tensors (they keep the forward graph alive)."""
        for record in self._records:
            record.inputs = []
            record.outputs = []

    def gram(
        self, log_probs: torch.Tensor, extra_scores: torch.Tensor | None = None, retain_graph: bool = True
    ) -> torch.Tensor:
        """
        :param log_probs: per-sample log-probabilities ``log pi(a_i|s_i)`` from the recorded forward, shape ``[M]``
        :param extra_scores: per-sample gradients of the leftover parameters, shape ``[M, k]``, or ``None``
        :param retain_graph: keep the forward graph (needed for the direction backward of the kernel form)
        :return: ``K``, shape ``[M, M]``, detached, dtype of ``log_probs``
        """
        log_probs = _check_vector("log_probs", log_probs)
        num = log_probs.shape[0]
        used = [record for record in self._records if record.outputs]
        for record in used:
            if len(record.outputs) > 1:
                raise ValueError(
                    f"layer {record.module} was applied {len(record.outputs)} times while recording: the Gram fast "
                    "path needs each nn.Linear applied once per sample (use per_sample_scores instead)"
                )
            if record.inputs[0].dim() != 2 or record.inputs[0].shape[0] != num:
                raise ValueError(
                    f"layer {record.module} got an input of shape {tuple(record.inputs[0].shape)}: expected [{num}, in]"
                )
        if not used:
            raise ValueError("no hooked layer was applied: run the forward pass inside `with recorder:`")
        outputs = [record.outputs[0] for record in used]
        if not all(out.requires_grad for out in outputs):
            raise ValueError("recorded outputs do not require gradients: do not record under torch.no_grad()")
        # Delta_l = d(sum_i log pi_i)/d s_l; row i is sample i's output gradient since samples do not interact.
        output_grads = torch.autograd.grad(log_probs.sum(), outputs, retain_graph=retain_graph, allow_unused=True)
        gram = log_probs.new_zeros(num, num)
        for record, delta in zip(used, output_grads, strict=True):
            if delta is None:
                continue
            module = record.module
            gram += linear_layer_gram(
                record.inputs[0].to(gram.dtype),
                delta.detach().to(gram.dtype),
                weight=module.weight.requires_grad,
                bias=module.bias is not None and module.bias.requires_grad,
            )
        if extra_scores is not None:
            extra = _check_matrix("extra_scores", extra_scores, rows=num).detach().to(gram.dtype)
            gram += extra @ extra.T
        if not retain_graph:
            self.clear()
        return gram


def diag_gaussian_log_std_scores(actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """
    Closed-form per-sample gradients of ``log N(a_i; mu_i, diag(exp(2 log_std)))`` (summed over action
    dimensions, as Stable-Baselines3's ``DiagGaussianDistribution``) with respect to a state-independent
    ``log_std`` of shape ``[k]``: ``d log pi_i / d log_std_j = ((a_ij - mu_ij) / sigma_j)^2 - 1``.
    Not valid for squashed (tanh) Gaussians or gSDE.

    :param actions: shape ``[M, k]``
    :param mean: Gaussian means, shape ``[M, k]``
    :param log_std: shape ``[k]`` (broadcast over samples)
    :return: shape ``[M, k]`` (detached), usable as ``extra_scores`` of :meth:`LinearGramRecorder.gram`
    """
    actions = _check_matrix("actions", actions)
    mean = _check_matrix("mean", mean)
    if mean.shape != actions.shape:
        raise ValueError(f"mean has shape {tuple(mean.shape)} but actions has shape {tuple(actions.shape)}")
    log_std = _check_vector("log_std", log_std)
    if log_std.shape[0] != actions.shape[1]:
        raise ValueError(f"log_std has shape {tuple(log_std.shape)}: expected [{actions.shape[1]}]")
    z = (actions.detach() - mean.detach()) * torch.exp(-log_std.detach())
    return z.square() - 1.0


def score_projections(
    log_probs: torch.Tensor, params: Sequence[torch.Tensor], vector: torch.Tensor, retain_graph: bool = True
) -> torch.Tensor:
    """
    Projections ``psi_i . v`` of every per-sample score on a flat vector ``v`` (``U^T v``), without per-sample
    gradients and for any architecture, by double backward: with ``c`` a vector of ones that requires gradients,
    ``h(c) = grad_theta sum_i c_i log pi_i = U c`` is linear in ``c`` and ``d (h(c) . v) / d c = U^T v``.
    Costs about two extra backward passes.

    :param log_probs: per-sample log-probabilities, shape ``[M]``, with a graph to ``params``
    :param params: the parameters, in the order of ``parameters_to_vector``
    :param vector: ``v``, shape ``[d]``
    :param retain_graph: keep the forward graph of ``log_probs``
    :return: ``U^T v``, shape ``[M]`` (detached)
    """
    log_probs = _check_vector("log_probs", log_probs)
    vector = _check_vector("vector", vector)
    params = list(params)
    numel = sum(p.numel() for p in params)
    if numel != vector.shape[0]:
        raise ValueError(f"vector has shape {tuple(vector.shape)} but params have {numel} entries")
    ones = torch.ones_like(log_probs, requires_grad=True)
    grads = torch.autograd.grad(log_probs, params, grad_outputs=ones, create_graph=True, allow_unused=True)
    total = log_probs.new_zeros(())
    offset = 0
    for g, p in zip(grads, params, strict=True):
        if g is not None:
            total = total + torch.dot(g.reshape(-1), vector[offset : offset + p.numel()].to(g.dtype))
        offset += p.numel()
    if not total.requires_grad:  # log_probs do not depend on params
        return log_probs.new_zeros(log_probs.shape)
    (projections,) = torch.autograd.grad(total, ones, retain_graph=retain_graph)
    return projections.detach()


def per_sample_param_scores(
    log_probs: torch.Tensor, params: Sequence[torch.Tensor], chunk_size: int | None = None
) -> torch.Tensor:
    """
    Per-sample gradients of ``log_probs[i]`` with respect to a few (shared) parameters, by a batched backward
    (``torch.autograd.grad(..., is_grads_batched=True)`` with one-hot cotangents). Autograd only traverses the part
    of the graph between ``log_probs`` and ``params``, so this is cheap for parameters close to the output (e.g.
    ``log_std``); memory is ``O(chunk_size * M * k)`` for the broadcast intermediates. The graph is retained.

    :param log_probs: shape ``[M]``
    :param params: the parameters (flattened and concatenated in this order)
    :param chunk_size: number of samples per batched backward (``None``: all at once)
    :return: shape ``[M, k]`` with ``k`` the total number of entries of ``params`` (zeros for unused parameters)
    """
    log_probs = _check_vector("log_probs", log_probs)
    params = list(params)
    if not params:
        raise ValueError("params is empty")
    num = log_probs.shape[0]
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"chunk_size={chunk_size!r} is invalid: expected an integer >= 1 or None")
    chunk = num if chunk_size is None else chunk_size
    eye = torch.eye(num, dtype=log_probs.dtype, device=log_probs.device)
    rows = []
    for start in range(0, num, chunk):
        cotangents = eye[start : start + chunk]
        grads = torch.autograd.grad(
            log_probs, params, grad_outputs=cotangents, is_grads_batched=True, retain_graph=True, allow_unused=True
        )
        count = cotangents.shape[0]
        rows.append(
            torch.cat(
                [
                    (g if g is not None else p.new_zeros(count, *p.shape)).reshape(count, -1).to(log_probs.dtype)
                    for g, p in zip(grads, params, strict=True)
                ],
                dim=1,
            )
        )
    return torch.cat(rows, dim=0).detach()


def per_sample_scores(
    log_prob_fn: Callable[..., torch.Tensor],
    params: dict[str, torch.Tensor],
    *batch: torch.Tensor,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """
    General per-sample scores with ``torch.func`` (``vmap(grad(...))``), for any architecture.

    ``log_prob_fn(params, *sample)`` must return the scalar ``log pi(a|s)`` of ONE unbatched sample, typically via
    ``torch.func.functional_call``; ``batch`` tensors are split along dimension 0. Example for a
    Stable-Baselines3 ``ActorCriticPolicy`` (add back the batch dimension inside)::

        class LogProb(nn.Module):                      # forward() = evaluate_actions' log-prob
            def __init__(self, policy): super().__init__(); self.policy = policy
            def forward(self, obs, act): return self.policy.evaluate_actions(obs, act)[1]

        wrapper = LogProb(policy)
        actor = {"policy." + n: p for n, p in policy.named_parameters() if n in actor_names}

        def log_prob_fn(params, obs, act):
            return functional_call(wrapper, params, (obs.unsqueeze(0), act.unsqueeze(0)), strict=False).squeeze(0)

        scores = per_sample_scores(log_prob_fn, actor, obs, actions)   # [M, d]

    (``strict=False`` lets the critic parameters come from the module itself.)

    *Caution — aliased submodules.* ``functional_call`` (torch 2.13) must not be used on a module that reaches the
    same submodule under two names, e.g. an SB3 policy with ``share_features_extractor=True`` and a CNN extractor
    (``pi_features_extractor is features_extractor``): on exit it leaves plain tensors in place of the aliased
    parameters, silently detaching them from the optimizers. Substitute the parameters on the owning module
    objects instead (``module._parameters[name] = tensor`` inside ``log_prob_fn``, restored afterwards), as
    ``sb3_natgrad.smac.SMAC`` does.

    Memory is ``O(M d)`` (``O(chunk_size d)`` per vmap chunk for intermediates).

    :param log_prob_fn: ``(params, *sample) -> scalar``
    :param params: named parameters to differentiate; the columns follow this dict's order (use the same order as
        ``parameters_to_vector`` of the actor parameters)
    :param batch: per-sample inputs, each of shape ``[M, ...]``
    :param chunk_size: ``vmap`` chunk size (``None``: all samples at once)
    :return: shape ``[M, d]``
    """
    if not params:
        raise ValueError("params is empty")
    if not batch:
        raise ValueError("batch is empty: pass the per-sample inputs (e.g. observations and actions)")
    num = batch[0].shape[0]
    for i, tensor in enumerate(batch):
        if tensor.dim() == 0 or tensor.shape[0] != num:
            raise ValueError(f"batch[{i}] has shape {tuple(tensor.shape)}: expected leading dimension {num}")
    detached = {name: value.detach() for name, value in params.items()}
    grad_fn = torch.func.grad(log_prob_fn)
    in_dims = (None,) + (0,) * len(batch)
    grads = torch.func.vmap(grad_fn, in_dims=in_dims, chunk_size=chunk_size)(detached, *batch)
    return torch.cat([grads[name].reshape(num, -1) for name in detached], dim=1)


# --------------------------------------------------------------------------------------------------------------
# Preconditioner object
# --------------------------------------------------------------------------------------------------------------


@dataclass
class NaturalGradientStep:
    """
    Result of :meth:`ShermanMorrison.compute` / :meth:`ShermanMorrison.compute_kernel`.

    :param direction: ``d = F^-1 g`` (shape ``[d]``, not scaled by the step size); ``None`` in kernel form
    :param step_size: ``alpha``; the update is ``alpha * d`` (``0.0`` if skipped)
    :param weights: kernel form only: ``w`` with ``d = sum_i w_i psi_i`` (shape ``[M]``, not scaled)
    :param skipped: ``True`` if the inputs or the result were not finite; the caller must skip the update
    :param reason: why the step was skipped (empty otherwise)
    :param stats: ``natural_grad_norm`` (``|d|``), ``grad_norm`` (``|g|``), ``step_size``, ``fisher_alignment``
        (``cos(g, d)``; ``0`` if ``g = 0``), ``gFg`` (``g^T F^-1 g``), ``kl_estimate`` (``0.5 alpha^2 d^T F d``)
    """

    direction: torch.Tensor | None
    step_size: float
    weights: torch.Tensor | None = None
    skipped: bool = False
    reason: str = ""
    stats: dict[str, float] = field(default_factory=dict)

    def update(self) -> torch.Tensor:
        """
        :return: the parameter update ``alpha * d`` (add it for an ascent gradient ``g = grad J``)
        """
        if self.direction is None:
            raise ValueError("kernel-form step has no direction: backpropagate sum_i (step_size * w_i) log pi_i instead")
        return self.direction * self.step_size


class ShermanMorrison:
    """
    Matrix-free damped empirical-Fisher preconditioner for SMAC (Sherman–Morrison Actor-Critic, Huo et al. 2026).

    Stateless apart from counters; the actor update is ``theta <- theta + alpha * F^-1 g`` once per rollout with
    ``g`` the A2C ascent gradient (flat, ``parameters_to_vector`` order). Usage by mode::

        sm = ShermanMorrison(damping=0.1, fisher="mean", step_size=0.1)
        g = flat_grad(mean_i A_i log pi_i);  psi = flat_grad(mean_i log pi_i)       # two backward passes
        step = sm.compute(g, psi)

        sm = ShermanMorrison(damping=0.1, fisher="batch", max_kl=0.01, step_size=1.0)
        step = sm.compute(g, scores)                 # scores [M, d]: per_sample_scores(...); "sample" likewise
        step = sm.compute_kernel(gram, advantages)   # kernel form: gram from LinearGramRecorder, no scores
        #  -> direction = flat_grad(sum_i step.weights_i log pi_i); update = step.step_size * direction

        if step.skipped: warn and skip the update
        else: vector_to_parameters(theta + step.update(), actor_params)

    Which mode helps: ``"mean"`` with the batch-mean score degenerates to SGD with learning rate
    ``alpha / lambda`` for large batches (the mean score is ``~0``); pass a single-sample score to keep an ``O(1)``
    rank-1 correction. ``"batch"`` is the exact batch empirical Fisher (prefer the kernel form); ``"sample"`` is the
    same matrix by the WoodFisher recursion (slower, a cross-check of the paper's incremental variant).

    *Step size.* ``max_kl=None``: fixed ``alpha = step_size``. Otherwise the trust region
    ``alpha = min(step_size, sqrt(2 max_kl / d^T F d))`` so that the quadratic KL model ``0.5 alpha^2 d^T F d``
    is at most ``max_kl`` (``d^T F d`` is computed from the factors of ``F``; it equals ``g^T F^-1 g`` and is
    non-negative by construction). Note ``max_kl`` is a KL radius with the ``1/2`` (unlike K-FAC's ``kl_clip``).

    *Non-finite inputs.* With ``nonfinite="skip"`` (default) a non-finite ``grad``/``scores``/``gram``/
    ``coefficients`` (or a non-finite result) returns a step with ``skipped=True``, ``step_size=0``, a zero
    direction and a ``reason``; ``num_skipped`` is incremented. With ``nonfinite="raise"`` a ``ValueError`` naming
    the argument is raised. Shape and type errors always raise ``ValueError``.

    :param damping: Tikhonov damping ``lambda > 0`` (Huo et al. 2026: 0.1 classic control, 1.0 MuJoCo — unverified)
    :param fisher: ``"mean"``, ``"sample"`` or ``"batch"``
    :param step_size: fixed step ``alpha``, or ``alpha_max`` with a trust region
    :param max_kl: trust-region radius ``delta > 0``, or ``None`` for a fixed step
    :param nonfinite: ``"skip"`` or ``"raise"``
    """

    def __init__(
        self,
        damping: float = 0.1,
        fisher: str = "mean",
        step_size: float = 1.0,
        max_kl: float | None = None,
        nonfinite: str = "skip",
    ) -> None:
        self.damping = damping
        if fisher not in FISHER_MODES:
            raise ValueError(f"fisher={fisher!r} is invalid: expected one of {FISHER_MODES}")
        self.fisher = fisher
        self.step_size = _check_positive("step_size", step_size)
        if max_kl is not None:
            max_kl = _check_positive("max_kl", max_kl)
        self.max_kl = max_kl
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite={nonfinite!r} is invalid: expected one of {NONFINITE_POLICIES}")
        self.nonfinite = nonfinite
        self.num_steps = 0
        self.num_skipped = 0

    @property
    def damping(self) -> float:
        """Damping ``lambda`` (assignable, e.g. for a schedule; validated)."""
        return self._damping

    @damping.setter
    def damping(self, value: float) -> None:
        self._damping = _check_positive("damping", value)

    def __repr__(self) -> str:
        return (
            f"ShermanMorrison(damping={self.damping}, fisher={self.fisher!r}, step_size={self.step_size}, "
            f"max_kl={self.max_kl}, nonfinite={self.nonfinite!r})"
        )

    # -- helpers -------------------------------------------------------------------------------------------------

    def _skip(self, reason: str, like: torch.Tensor, kernel: bool = False) -> NaturalGradientStep:
        self.num_skipped += 1
        stats = dict.fromkeys(STAT_KEYS, 0.0)
        zeros = torch.zeros_like(like)
        return NaturalGradientStep(
            direction=None if kernel else zeros,
            step_size=0.0,
            weights=zeros if kernel else None,
            skipped=True,
            reason=reason,
            stats=stats,
        )

    def _first_nonfinite(self, named: Sequence[tuple[str, torch.Tensor]]) -> str | None:
        for name, tensor in named:
            if _nonfinite(tensor):
                if self.nonfinite == "raise":
                    raise ValueError(f"{name} contains non-finite values (NaN or inf)")
                return f"{name} contains non-finite values (NaN or inf)"
        return None

    def _finish(
        self,
        direction: torch.Tensor | None,
        weights: torch.Tensor | None,
        like: torch.Tensor,
        grad_norm_sq: torch.Tensor,
        dir_norm_sq: torch.Tensor,
        g_dot_d: torch.Tensor,
        quadratic: torch.Tensor,
    ) -> NaturalGradientStep:
        values = [float(x) for x in (grad_norm_sq, dir_norm_sq, g_dot_d, quadratic)]
        result = direction if direction is not None else weights
        assert result is not None
        if not all(math.isfinite(v) for v in values) or _nonfinite(result):
            if self.nonfinite == "raise":
                raise ValueError("the natural gradient is not finite (overflow in the Fisher solve?)")
            return self._skip("the natural gradient is not finite (overflow in the Fisher solve?)", like, direction is None)
        grad_norm_sq_f, dir_norm_sq_f, g_dot_d_f, quadratic_f = values
        alpha = trust_region_step_size(quadratic_f, self.max_kl, self.step_size)
        grad_norm = math.sqrt(max(grad_norm_sq_f, 0.0))
        dir_norm = math.sqrt(max(dir_norm_sq_f, 0.0))
        denom = grad_norm * dir_norm
        stats = {
            "natural_grad_norm": dir_norm,
            "grad_norm": grad_norm,
            "step_size": alpha,
            "fisher_alignment": g_dot_d_f / denom if denom > 0 else 0.0,
            "gFg": g_dot_d_f,
            "kl_estimate": 0.5 * alpha**2 * max(quadratic_f, 0.0),
        }
        self.num_steps += 1
        return NaturalGradientStep(direction=direction, step_size=alpha, weights=weights, stats=stats)

    # -- public API ----------------------------------------------------------------------------------------------

    def solve(self, grad: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """
        Raw direction ``F^-1 g`` for the configured mode, without checks for finiteness, step size or statistics.

        :param grad: ``g``, shape ``[d]``
        :param scores: ``"mean"``: the Fisher vector ``psi`` (shape ``[d]``; a ``[M, d]`` matrix is averaged over
            rows); ``"sample"``/``"batch"``: per-sample scores, shape ``[M, d]``
        :return: ``F^-1 g``, shape ``[d]``
        """
        grad = _check_vector("grad", grad)
        if self.fisher == "mean":
            if isinstance(scores, torch.Tensor) and scores.dim() == 2:
                scores = _check_matrix("scores", scores, columns=grad.shape[0]).mean(dim=0)
            score = _check_vector("scores", scores)
            if score.shape != grad.shape:
                raise ValueError(f"scores has shape {tuple(score.shape)} but grad has shape {tuple(grad.shape)}")
            return sherman_morrison_direction(grad, score, self.damping)
        _check_matrix("scores", scores, columns=grad.shape[0])
        if self.fisher == "sample":
            return woodfisher_direction(grad, scores, self.damping)
        return woodbury_direction(grad, scores, self.damping)

    def compute(self, grad: torch.Tensor, scores: torch.Tensor) -> NaturalGradientStep:
        """
        Natural direction, step size and statistics for the configured mode (all three modes).

        :param grad: ``g``, shape ``[d]``
        :param scores: see :meth:`solve`
        :return: the step (check ``skipped`` before applying ``update()``)
        """
        grad = _check_vector("grad", grad)
        if not isinstance(scores, torch.Tensor) or scores.dim() not in (1, 2) or scores.shape[-1] != grad.shape[0]:
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(f"scores has shape {shape}: expected [d] or [M, d] with d = {grad.shape[0]}")
        if self.fisher != "mean" and scores.dim() != 2:
            raise ValueError(f"scores must have shape [M, d] for fisher={self.fisher!r}, got {tuple(scores.shape)}")
        reason = self._first_nonfinite([("grad", grad), ("scores", scores)])
        if reason is not None:
            return self._skip(reason, grad)
        direction = self.solve(grad, scores)
        scores = scores.to(dtype=grad.dtype)
        dir_norm_sq = torch.dot(direction, direction)
        # Quadratic KL model d^T F d from the factors of F (non-negative; equals g^T F^-1 g in exact arithmetic).
        if self.fisher == "mean":
            score = scores.mean(dim=0) if scores.dim() == 2 else scores
            quadratic = self.damping * dir_norm_sq + torch.dot(score, direction).square()
        else:
            quadratic = self.damping * dir_norm_sq + torch.mv(scores, direction).square().sum() / scores.shape[0]
        return self._finish(direction, None, grad, torch.dot(grad, grad), dir_norm_sq, torch.dot(grad, direction), quadratic)

    def step_from_direction(self, grad: torch.Tensor, direction: torch.Tensor) -> NaturalGradientStep:
        """
        Step size and statistics for a direction ``d = F^-1 g`` computed elsewhere (e.g. the Woodbury route of
        :func:`kernel_weights` with :func:`score_projections`). The trust-region quadratic is ``g^T d``
        (``= d^T F d`` for the exact solve; clamped at zero, so a round-off negative value gives ``step_size``).

        :param grad: ``g``, shape ``[d]``
        :param direction: ``d``, shape ``[d]``
        :return: the step (check ``skipped``)
        """
        grad = _check_vector("grad", grad)
        direction = _check_vector("direction", direction)
        if direction.shape != grad.shape:
            raise ValueError(f"direction has shape {tuple(direction.shape)} but grad has shape {tuple(grad.shape)}")
        reason = self._first_nonfinite([("grad", grad), ("direction", direction)])
        if reason is not None:
            return self._skip(reason, grad)
        direction = direction.to(dtype=grad.dtype)
        g_dot_d = torch.dot(grad, direction)
        return self._finish(
            direction, None, grad, torch.dot(grad, grad), torch.dot(direction, direction), g_dot_d, g_dot_d.clamp(min=0.0)
        )

    def compute_kernel(self, gram: torch.Tensor, coefficients: torch.Tensor) -> NaturalGradientStep:
        """
        Kernel form of the ``"batch"`` mode (Woodbury identity): for
        ``g = (1/M) sum_i a_i psi_i`` return the weights ``w = (K + M lambda I)^-1 a`` (so ``F_M^-1 g = sum_i w_i
        psi_i``, the gradient of ``sum_i w_i log pi_i`` with detached ``w``) together with the step size and the
        statistics, all computed from ``K`` alone:

        ``|d|^2 = w^T K w``, ``|g|^2 = a^T K a / M^2``, ``g^T d = a^T K w / M``,
        ``d^T F d = lambda w^T K w + |K w|^2 / M``.

        :param gram: ``K_ij = psi_i . psi_j``, shape ``[M, M]`` (:class:`LinearGramRecorder`, :func:`score_gram`)
        :param coefficients: ``a`` (e.g. advantages), shape ``[M]``
        :return: the step with ``weights`` set and ``direction=None``; the update is
            ``step_size * grad_theta sum_i w_i log pi_i``
        """
        if self.fisher != "batch":
            raise ValueError(f"compute_kernel needs fisher='batch', got fisher={self.fisher!r}")
        gram, coefficients = _check_gram(gram, coefficients)
        reason = self._first_nonfinite([("gram", gram), ("coefficients", coefficients)])
        if reason is not None:
            return self._skip(reason, coefficients, kernel=True)
        num = coefficients.shape[0]
        weights64 = _solve_shifted_gram(gram, coefficients, num * self.damping)
        gram64 = gram.to(torch.float64)
        coef64 = coefficients.to(torch.float64)
        gram_w = torch.mv(gram64, weights64)
        dir_norm_sq = torch.dot(weights64, gram_w)
        return self._finish(
            None,
            weights64.to(coefficients.dtype),
            coefficients,
            torch.dot(coef64, torch.mv(gram64, coef64)) / num**2,
            dir_norm_sq,
            torch.dot(coef64, gram_w) / num,
            self.damping * dir_norm_sq + torch.dot(gram_w, gram_w) / num,
        )

    def state_dict(self) -> dict[str, Any]:
        """
        :return: the persistent state (plain Python values): the step and skip counters. Hyperparameters are
            constructor arguments and are not part of the state
        """
        return {"num_steps": self.num_steps, "num_skipped": self.num_skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """
        :param state_dict: a state produced by :meth:`state_dict`
        """
        missing = {"num_steps", "num_skipped"} - set(state_dict)
        if missing:
            raise ValueError(f"state_dict is missing keys {sorted(missing)}")
        self.num_steps = int(state_dict["num_steps"])
        self.num_skipped = int(state_dict["num_skipped"])
