"""
K-FAC: Kronecker-factored approximate curvature as a ``torch.optim.Optimizer`` (plain PyTorch).

References: Martens & Grosse 2015 (K-FAC), Grosse & Martens 2016 (KFC, convolutions), Ba et al. 2017
(trust region), Wu et al. 2017 (ACKTR). The conventions for the factors are in
:mod:`sb3_natgrad.optim.kronecker`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from sb3_natgrad.optim import kronecker
from sb3_natgrad.optim.inverses import inverse_strategy
from sb3_natgrad.optim.validation import all_finite, invalid, is_int, is_number

INVERSE_METHODS = ("eigen", "cholesky")
DAMPING_TYPES = ("kronecker", "factored")


@dataclass(eq=False)
class _Record:
    """One training-mode forward call of a covered layer, kept until its Fisher gradient arrives."""

    inputs: torch.Tensor
    output: torch.Tensor
    used: bool = False


@dataclass(eq=False)
class Curvature:
    """
    One covered layer's curvature: its running Kronecker factors and the decomposition in use.

    :meth:`KFAC.state_dict` stores it in the optimizer state of the layer's weight under the keys ``A``, ``G``,
    ``n_stats``, ``stats_version``, ``has_inverse``, ``inverse_version`` and the inverse strategy's keys, as files
    did before this record existed.
    """

    #: the input factor ``A`` (``None``: no statistics yet)
    factor_a: torch.Tensor | None = None
    #: the output-gradient factor ``G``
    factor_g: torch.Tensor | None = None
    #: batches averaged into the factors since they (re)started (a running mean until it reaches ``stat_decay``)
    n_stats: int = 0
    #: batches folded in so far (a decomposition records which factors it was computed from)
    stats_version: int = 0
    #: the inverse strategy's decomposition, plus ``inverse_damping`` (``None``: none yet)
    inverse: dict[str, Any] | None = None
    #: ``stats_version`` of the factors ``inverse`` was computed from
    inverse_version: int = -1

    def to_state(self) -> dict[str, Any]:
        """The optimizer-state entries of this record (the file format)."""
        state: dict[str, Any] = {}
        if self.factor_a is not None and self.factor_g is not None:
            state["A"], state["G"] = self.factor_a, self.factor_g
        if self.n_stats or self.stats_version:
            state["n_stats"], state["stats_version"] = self.n_stats, self.stats_version
        if self.inverse is not None:
            state.update(self.inverse)
            state["has_inverse"], state["inverse_version"] = True, self.inverse_version
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any], inverse_keys: tuple[str, ...]) -> Curvature:
        """
        Take a record's entries out of a layer weight's optimizer state (what :meth:`to_state` wrote).

        :param state: the optimizer state of the layer's weight; the record's entries are removed from it
        :param inverse_keys: the inverse strategy's keys
        """
        record = cls(factor_a=state.pop("A", None), factor_g=state.pop("G", None))
        record.n_stats = int(state.pop("n_stats", 0))
        record.stats_version = int(state.pop("stats_version", 0))
        has_inverse = bool(state.pop("has_inverse", False))
        record.inverse_version = int(state.pop("inverse_version", -1))
        inverse = {key: state.pop(key) for key in (*inverse_keys, "inverse_damping") if key in state}
        record.inverse = inverse if has_inverse else None
        return record


@dataclass(eq=False)
class _Layer:
    """A covered layer, its forward records and the statistics accumulated for the current step."""

    name: str
    module: nn.Module
    weight: nn.Parameter
    bias: nn.Parameter | None
    conv_factors: str = "expand"
    records: list[_Record] = field(default_factory=list)
    record_step: int = -1
    a_sum: torch.Tensor | None = None
    a_rows: int = 0
    g_sum: torch.Tensor | None = None
    g_samples: int = 0
    curvature: Curvature = field(default_factory=Curvature)

    def clear(self) -> None:
        self.records = []
        self.a_sum = None
        self.g_sum = None
        self.a_rows = 0
        self.g_samples = 0


class KFAC(Optimizer):
    """
    K-FAC natural-gradient optimizer with the ACKTR trust region (Wu et al. 2017, §3.2).

    It is built from the model (not a parameter list) because it hooks the model's ``nn.Linear`` and
    ``nn.Conv2d`` layers (``groups=1``; convolutions use the KFC approximation). Usage::

        opt = KFAC(model, lr=0.25, kl_clip=1e-3)
        out = model(x)                          # train mode + grad: layer inputs are recorded
        if opt.stats_due:
            opt.record_fisher(fisher_loss(out))  # sampled-Fisher pass: output gradients -> G
        opt.zero_grad()
        loss(out).backward()
        opt.step()                              # EMA factors, inverses, precondition, trust region

    *Statistics.* A forward hook records a layer's input and output only when the module is in
    training mode, gradients are enabled and statistics are due (``stats_interval``), so rollouts under
    ``torch.no_grad()`` or ``eval()`` never touch the factors. The output-gradient factor ``G`` comes
    only from an explicit sampled-Fisher pass: :meth:`record_fisher` (gradients with respect to the
    recorded layer outputs only, no weight gradients are computed) or, equivalently, any backward run
    inside ``with opt.track_fisher():``. The loss given there is a *mean* over the batch of sampled
    log-likelihoods (``batch_averaged=True``, output gradients are multiplied by the batch size) or a
    sum (``batch_averaged=False``). Records are released at every :meth:`step`.

    *Biases* use the homogeneous coordinate ``[W, b]`` with inputs ``[a, 1]``: the factor is exact for
    one sample, keeps the weight-bias correlations that a separate bias block drops, and costs one
    extra row and column.

    *Damping.* ``damping_type="kronecker"`` inverts ``A kron G + lambda I`` exactly in the factors'
    eigenbases (what the reference ACKTR code does); ``"factored"`` inverts
    ``(A + pi sqrt(lambda) I) kron (G + sqrt(lambda)/pi I)`` (factored Tikhonov, what the ACKTR paper
    text says). ``inverse_method="eigen"`` supports both; ``"cholesky"`` (about 5x cheaper than
    ``eigh`` on a CPU for a 3137x3137 factor) supports only factored damping. ``lambda`` is
    ``damping + weight_decay`` for covered layers.

    *Step.* With ``u = F^-1 g`` for covered layers and ``u = g`` (a plain first-order step) for every
    other trainable parameter (e.g. a Gaussian ``log_std``), the trust-region scale is
    ``nu = min(1, sqrt(kl_clip / (lr^2 * sum_all <u, g>)))`` over all parameters jointly (Wu et al. 2017
    §3.2, as in the reference code). The update uses momentum: ``buf = momentum * buf + nu * u`` and
    ``p -= lr * (1 - momentum) * buf``, so a steady-state step is ``lr * nu * u``. The first
    ``warmup_steps`` steps are momentum SGD (``p -= lr * buf``) on raw gradients clipped to
    ``warmup_max_grad_norm`` while the factors accumulate. ``lr`` is read from ``param_groups`` at each
    step, so schedulers (and Stable-Baselines3) can rewrite it.

    *Robustness.* A non-finite gradient skips the whole step; non-finite new statistics are not folded
    into the running factors; a failed or non-finite decomposition (retried in float64) keeps the last
    good inverse, or uses the raw gradient for that layer if there is none. Each case warns once and
    increments a counter in :attr:`counters`.

    All persistent state (factors, eigenbases or inverses, momentum buffers, step counters) is in
    :meth:`state_dict` as tensors and plain Python values, loadable with ``torch.load(weights_only=True)``.

    :param model: the module whose parameters are optimised (all parameters that require gradients)
    :param lr: learning rate (maximum step size, ``eta_max`` in Wu et al. 2017)
    :param momentum: momentum coefficient in ``[0, 1)``
    :param damping: Tikhonov damping ``lambda >= 0``
    :param weight_decay: L2 coefficient added to every gradient (and to the damping of covered layers)
    :param kl_clip: trust-region radius ``delta > 0``; ``None`` disables the trust region
    :param stat_decay: EMA decay of the factors in ``[0, 1)``. The first updates use a running mean
        (weight ``n / (n + 1)``) until it reaches ``stat_decay``
    :param stats_interval: record statistics every ``stats_interval`` steps (``T_s``)
    :param inverse_interval: recompute inverses every ``inverse_interval`` K-FAC steps (``T_f``)
    :param inverse_method: ``"eigen"`` or ``"cholesky"``
    :param damping_type: ``"kronecker"`` or ``"factored"``; ``None`` picks ``"kronecker"`` for eigen and
        ``"factored"`` for Cholesky
    :param warmup_steps: number of first-order momentum-SGD steps before K-FAC steps start
    :param warmup_max_grad_norm: global gradient-norm clip during warm-up (``None``: no clipping)
    :param stats_batch_size: if set, use at most this many samples of each recorded batch (an evenly
        strided subset) for the statistics; an unbiased estimate of the same expectations
    :param stats_dtype: dtype in which the per-batch products ``a^T a`` and ``g^T g`` are computed
        (``torch.bfloat16`` or ``"bfloat16"``, ``float32``, ``float64``; ``None``: the parameters' dtype).
        The sums are converted back; the running factors, inverses and updates keep the parameters' dtype.
        ``bfloat16`` rounds the inputs to 8 significant bits (relative error of the products about 1e-3, far
        below the sampling noise of one batch) and is several times faster where the hardware multiplies
        bfloat16 natively (CPUs with AVX512-BF16 or AMX, NVIDIA GPUs from Ampere on); elsewhere it can be
        slower
    :param async_inverse: recompute inverses in a background thread (the paper's asynchronous
        computation, Wu et al. 2017, §3.1). Steps then use the newest finished inverse, so results depend on
        timing; the first inverse is always computed synchronously
    :param skip_modules: names (as in ``model.named_modules()``) of layers to leave to the first-order step. Layers of
        other types (LSTM, LayerNorm, ...) always are, with a warning unless they are named here
    :param conv_factors: how convolutions share their weight across output positions in the factors:
        ``"expand"`` (KFC, Grosse & Martens 2016; positions act as samples) or ``"reduce"`` (Eschenhagen et al.
        2023: per sample, the mean input patch and the summed output gradient; ``N`` rows instead of ``N * Oh * Ow``,
        exact where the positions are pooled before the loss). Definitions in :mod:`sb3_natgrad.optim.kronecker`.
        A mapping ``{conv layer name: mode}`` sets single layers (the others use ``"expand"``). Linear layers are
        not affected, so the option does nothing on a model without convolutions
    :param statistics_reducer: data-parallel training (several processes, each with a shard of the batch and the
        same parameters): a callable that replaces, in place, each tensor of the list it is given by its sum over
        the processes, e.g. :func:`sb3_natgrad.optim.distributed.all_reduce_sum`. It is called once per step that
        folds statistics, on every process with the same list (every covered layer's sums of ``A`` and ``G`` rows,
        zeros where a process has none, and the row counts), so each process folds the statistics of the whole
        batch and the factors, decompositions and steps stay identical wherever the gradients are (as under
        ``DistributedDataParallel``). ``None``: this process's statistics only. Also settable as an attribute
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float = 0.25,
        momentum: float = 0.9,
        damping: float = 0.01,
        weight_decay: float = 0.0,
        kl_clip: float | None = 0.001,
        stat_decay: float = 0.99,
        stats_interval: int = 1,
        inverse_interval: int = 10,
        inverse_method: str = "eigen",
        damping_type: str | None = None,
        warmup_steps: int = 0,
        warmup_max_grad_norm: float | None = None,
        stats_batch_size: int | None = None,
        stats_dtype: torch.dtype | str | None = None,
        async_inverse: bool = False,
        skip_modules: tuple[str, ...] | list[str] = (),
        conv_factors: str | Mapping[str, str] = "expand",
        statistics_reducer: Callable[[list[torch.Tensor]], None] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"KFAC needs the nn.Module to optimise (it hooks its layers), got {type(model).__name__}")
        damping_type = check_kfac_arguments(
            "KFAC",
            None,
            lr=lr,
            momentum=momentum,
            damping=damping,
            weight_decay=weight_decay,
            kl_clip=kl_clip,
            stat_decay=stat_decay,
            stats_interval=stats_interval,
            inverse_interval=inverse_interval,
            inverse_method=inverse_method,
            damping_type=damping_type,
            warmup_steps=warmup_steps,
            warmup_max_grad_norm=warmup_max_grad_norm,
            stats_batch_size=stats_batch_size,
            stats_dtype=stats_dtype,
            conv_factors=conv_factors,
        )
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no parameter that requires gradients")
        defaults = dict(lr=lr, momentum=momentum, damping=damping, weight_decay=weight_decay, kl_clip=kl_clip)
        super().__init__(params, defaults)

        self.stat_decay = stat_decay
        self.stats_interval = stats_interval
        self.inverse_interval = inverse_interval
        self.inverse_method = inverse_method
        self.damping_type = damping_type
        self._inverse = inverse_strategy(inverse_method, damping_type)
        self.warmup_steps = warmup_steps
        self.warmup_max_grad_norm = warmup_max_grad_norm
        self.stats_batch_size = stats_batch_size
        self.stats_dtype = resolve_stats_dtype(stats_dtype)
        self.async_inverse = async_inverse
        if statistics_reducer is not None and not callable(statistics_reducer):
            raise TypeError(f"KFAC: statistics_reducer must be callable, got {type(statistics_reducer).__name__}")
        if statistics_reducer is not None and async_inverse:
            raise ValueError(
                "KFAC: async_inverse=True with a statistics_reducer: background decompositions finish at different "
                "steps in each process and the parameters would drift apart; use async_inverse=False"
            )
        self.statistics_reducer = statistics_reducer

        unknown = set(skip_modules) - {name for name, _ in model.named_modules()}
        if unknown:
            raise ValueError(f"skip_modules names not found in the model: {sorted(unknown)}")
        default_conv_mode, conv_modes = resolve_conv_factors(conv_factors)
        self.layers: list[_Layer] = []
        self._hook_handles: list[torch.utils.hooks.RemovableHandle] = []
        for name, module in model.named_modules():
            if name in skip_modules or not kronecker.is_supported_layer(module):
                continue
            weight = module.weight
            if not weight.requires_grad:
                continue
            bias = module.bias if module.bias is not None and module.bias.requires_grad else None
            layer = _Layer(name=name, module=module, weight=weight, bias=bias)
            if isinstance(module, nn.Conv2d):
                layer.conv_factors = conv_modes.get(name, default_conv_mode)
            self.layers.append(layer)
            self._hook_handles.append(module.register_forward_hook(partial(self._forward_hook, layer)))
        if not self.layers:
            raise ValueError(
                f"model {type(model).__name__} has no layer K-FAC can cover (nn.Linear, or nn.Conv2d with groups=1 "
                "and zero padding); use a first-order optimizer instead"
            )
        covered_convs = {layer.name for layer in self.layers if isinstance(layer.module, nn.Conv2d)}
        not_convs = sorted(set(conv_modes) - covered_convs)
        if not_convs:
            raise ValueError(
                f"KFAC: conv_factors names layers that are not convolutions K-FAC covers: {not_convs} "
                f"(covered nn.Conv2d layers: {sorted(covered_convs)}; Linear layers have no conv_factors)"
            )
        covered = {id(p) for layer in self.layers for p in (layer.weight, layer.bias) if p is not None}
        self.uncovered_params = [p for p in params if id(p) not in covered]
        # Parameters of the model itself (a Gaussian log_std) are first order by design; a layer of another type
        # (LSTM, LayerNorm, Embedding, a grouped convolution) silently getting plain gradient steps is a surprise.
        first_order_layers = [
            f"{name} ({type(module).__name__})"
            for name, module in model.named_modules()
            if name
            and name not in skip_modules
            and any(id(p) not in covered and p.requires_grad for p in module.parameters(recurse=False))
        ]
        if first_order_layers:
            warnings.warn(
                f"KFAC: these layers get plain first-order steps, K-FAC covers only nn.Linear and nn.Conv2d (groups=1, "
                f"zero padding): {', '.join(first_order_layers)}; name them in skip_modules to silence this warning",
                UserWarning,
                stacklevel=2,
            )

        self._step = 0
        self._recording_paused = False
        self.counters: dict[str, int] = {
            "skipped_steps": 0,
            "rejected_stats": 0,
            "inverse_fallbacks": 0,
            "first_order_layer_steps": 0,
        }
        self.last_step_info: dict[str, float] = {}
        self._warned: set[str] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._inverse_future: Future | None = None

    # ------------------------------------------------------------------ statistics

    @property
    def steps(self) -> int:
        """Number of parameter updates taken so far (skipped steps excluded)."""
        return self._step

    @property
    def in_warmup(self) -> bool:
        """Whether the next step is a first-order warm-up step."""
        return self._step < self.warmup_steps

    @property
    def stats_due(self) -> bool:
        """Whether statistics are recorded for the next step (every ``stats_interval`` steps)."""
        return self._step % self.stats_interval == 0

    @contextmanager
    def no_statistics(self) -> Iterator[None]:
        """
        Context in which training-mode forward passes are not recorded (e.g. extra evaluations of the model whose
        graphs should not be kept alive until the next :meth:`record_fisher` or :meth:`step`).
        """
        previous = self._recording_paused
        self._recording_paused = True
        try:
            yield
        finally:
            self._recording_paused = previous

    def _forward_hook(self, layer: _Layer, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if self._recording_paused or not (module.training and torch.is_grad_enabled() and self.stats_due):
            return
        if not isinstance(output, torch.Tensor) or not output.requires_grad:
            return
        if layer.record_step != self._step:
            layer.records = []
            layer.record_step = self._step
        layer.records.append(_Record(inputs=inputs[0].detach(), output=output))

    def _accumulate(
        self,
        layer: _Layer,
        record: _Record,
        grad_output: torch.Tensor,
        batch_averaged: bool,
        sample_mask: torch.Tensor | None = None,
    ) -> None:
        """Add one recorded call's contribution to the layer's A and G sums (only the masked-in samples)."""
        if record.used:
            return
        record.used = True
        x = record.inputs
        grad_output = grad_output.detach()
        if sample_mask is not None:
            x, grad_output = x[sample_mask], grad_output[sample_mask]
            if x.shape[0] == 0:
                return
        n_samples = x.shape[0] if x.dim() > 1 else 1
        if batch_averaged:
            # The Fisher loss was a mean over the batch: undo the 1/B on every sample's derivative.
            grad_output = grad_output * n_samples
        if x.dim() > 1 and self.stats_batch_size is not None and n_samples > self.stats_batch_size:
            stride = math.ceil(n_samples / self.stats_batch_size)
            x, grad_output = x[::stride], grad_output[::stride]
        used_samples = x.shape[0] if x.dim() > 1 else 1
        factor_dtype = layer.weight.dtype
        if self.stats_dtype is not None:
            # cast before building the (much larger) patch matrix of a convolution
            x, grad_output = x.to(self.stats_dtype), grad_output.to(self.stats_dtype)
        rows_a = kronecker.layer_input_rows(layer.module, x, layer.conv_factors)
        a_sum = kronecker.homogeneous_second_moment(rows_a, layer.bias is not None, out_dtype=factor_dtype)
        g_sum = kronecker.output_grad_second_moment(layer.module, grad_output, layer.conv_factors).to(factor_dtype)
        layer.a_sum = a_sum if layer.a_sum is None else layer.a_sum + a_sum
        layer.g_sum = g_sum if layer.g_sum is None else layer.g_sum + g_sum
        layer.a_rows += rows_a.shape[0]
        layer.g_samples += used_samples

    def _live_records(self) -> Iterator[tuple[_Layer, _Record]]:
        for layer in self.layers:
            if layer.record_step != self._step:
                continue
            for record in layer.records:
                if not record.used and record.output.requires_grad:
                    yield layer, record

    @contextmanager
    def track_fisher(self, batch_averaged: bool = True) -> Iterator[None]:
        """
        Context in which backward passes provide the output-gradient factor ``G``.

        Run the sampled-Fisher backward inside it, e.g. ``fisher_loss.backward(retain_graph=True)``
        (zero the parameter gradients afterwards) or ``torch.autograd.grad(fisher_loss, ...)``.
        Each recorded layer call contributes once, at the first gradient that reaches its output.

        :param batch_averaged: the Fisher loss is a mean over the batch (``True``) or a sum (``False``)
        """
        handles = []
        for layer, record in list(self._live_records()):
            hook = partial(self._output_grad_hook, layer, record, batch_averaged)
            handles.append(record.output.register_hook(hook))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._release_records()

    def _output_grad_hook(self, layer: _Layer, record: _Record, batch_averaged: bool, grad: torch.Tensor) -> None:
        with torch.no_grad():
            self._accumulate(layer, record, grad, batch_averaged)

    def record_fisher(
        self, fisher_loss: torch.Tensor, batch_averaged: bool = True, sample_mask: torch.Tensor | None = None
    ) -> None:
        """
        Accumulate ``G`` from the sampled-Fisher loss (Wu et al. 2017, §3.1) without computing weight gradients.

        Gradients are taken only with respect to the recorded layer outputs (``retain_graph=True``, so the
        training loss can be back-propagated afterwards). Calls whose output does not influence the loss
        are dropped from ``A`` as well, so both factors see the same rows.

        :param fisher_loss: scalar, e.g. the batch mean of ``log pi(a~|s)`` with ``a~`` sampled from the policy
        :param batch_averaged: the loss is a mean over the (masked-in) samples (``True``) or a sum (``False``)
        :param sample_mask: boolean ``[batch]`` tensor: only these samples enter ``A`` and ``G`` (e.g. without the
            padding rows of a batch of sequences). Every recorded call that reaches the loss must have the batch as
            its first dimension. ``None``: all samples
        """
        if not isinstance(fisher_loss, torch.Tensor) or fisher_loss.dim() != 0:
            shape = tuple(fisher_loss.shape) if isinstance(fisher_loss, torch.Tensor) else type(fisher_loss).__name__
            raise ValueError(f"KFAC.record_fisher: fisher_loss must be a scalar tensor, got {shape}")
        if sample_mask is not None and (
            not isinstance(sample_mask, torch.Tensor) or sample_mask.dtype != torch.bool or sample_mask.dim() != 1
        ):
            what = (
                f"{sample_mask.dtype} tensor of shape {tuple(sample_mask.shape)}"
                if isinstance(sample_mask, torch.Tensor)
                else (type(sample_mask).__name__)
            )
            raise ValueError(f"KFAC.record_fisher: sample_mask must be a 1-D boolean tensor, got a {what}")
        if not self.stats_due:
            self._release_records()
            return
        live = list(self._live_records())
        if not live:
            self._release_records()
            return
        grads = torch.autograd.grad(fisher_loss, [record.output for _, record in live], retain_graph=True, allow_unused=True)
        with torch.no_grad():
            for (layer, record), grad in zip(live, grads):
                if grad is None:
                    continue
                if sample_mask is not None and (record.inputs.dim() < 2 or record.inputs.shape[0] != sample_mask.shape[0]):
                    self._clear_step_buffers()  # nothing of this pass enters the factors
                    raise ValueError(
                        f"KFAC.record_fisher: sample_mask has {sample_mask.shape[0]} entries but layer '{layer.name}' "
                        f"was called on a batch of shape {tuple(record.inputs.shape)}"
                    )
                self._accumulate(layer, record, grad, batch_averaged, sample_mask)
        self._release_records()

    def discard_statistics(self) -> None:
        """Drop this step's recorded forward passes without using them (e.g. when the caller skips the update)."""
        self._release_records()

    def reset(self) -> None:
        """
        Forget all curvature and history: factors, decompositions, momentum buffers, the step count (the next
        ``warmup_steps`` steps are warm-up steps again) and the fault counters. The hyperparameters, the hooks and
        ``param_groups`` (including a rewritten ``lr``) stay. Its :meth:`state_dict` is then as small as a new one's,
        which is what a policy-only agent package stores.
        """
        if self._inverse_future is not None:
            self._inverse_future.result()
            self._inverse_future = None
        self.state.clear()
        for layer in self.layers:
            layer.curvature = Curvature()
        self._step = 0
        self.counters = dict.fromkeys(self.counters, 0)
        self.last_step_info = {}
        self._clear_step_buffers()

    def _release_records(self) -> None:
        for layer in self.layers:
            layer.records = []

    def _reduce_statistics(self) -> None:
        """Replace this step's sums and row counts by their sums over the processes (``statistics_reducer``)."""
        assert self.statistics_reducer is not None
        tensors: list[torch.Tensor] = []
        for layer in self.layers:
            weight = layer.weight
            a_dim = weight[0].numel() + (layer.bias is not None)
            if layer.a_sum is None:
                layer.a_sum = weight.new_zeros(a_dim, a_dim)
            if layer.g_sum is None:
                layer.g_sum = weight.new_zeros(weight.shape[0], weight.shape[0])
            tensors += [layer.a_sum, layer.g_sum]
        counts = torch.tensor(
            [n for layer in self.layers for n in (layer.a_rows, layer.g_samples)],
            dtype=torch.float64,
            device=tensors[0].device,
        )
        self.statistics_reducer([*tensors, counts])
        for layer, (a_rows, g_samples) in zip(self.layers, counts.view(-1, 2).tolist()):
            layer.a_rows, layer.g_samples = int(a_rows), int(g_samples)

    def _fold_statistics(self) -> None:
        """Fold this step's A and G into the running factors (EMA)."""
        if self.statistics_reducer is not None:
            self._reduce_statistics()
        ready = [
            layer
            for layer in self.layers
            if layer.a_sum is not None and layer.g_sum is not None and layer.a_rows > 0 and layer.g_samples > 0
        ]
        # one finiteness check for all layers; per layer only if something is wrong
        statistics_finite = all_finite([t for layer in ready for t in (layer.a_sum, layer.g_sum) if t is not None])
        for layer in ready:
            assert layer.a_sum is not None and layer.g_sum is not None
            if not statistics_finite and not all_finite([layer.a_sum, layer.g_sum]):
                self.counters["rejected_stats"] += 1
                self._warn_once(f"stats:{layer.name}", f"KFAC: non-finite statistics for layer '{layer.name}' were discarded")
                continue
            new_a = layer.a_sum / layer.a_rows
            new_g = layer.g_sum / layer.g_samples
            curvature = layer.curvature
            if curvature.n_stats == 0 or curvature.factor_a is None or curvature.factor_g is None:
                curvature.factor_a, curvature.factor_g = new_a.clone(), new_g.clone()
            else:
                # Running mean for the first updates, then the EMA with decay stat_decay.
                decay = min(self.stat_decay, curvature.n_stats / (curvature.n_stats + 1))
                curvature.factor_a.mul_(decay).add_(new_a, alpha=1.0 - decay)
                curvature.factor_g.mul_(decay).add_(new_g, alpha=1.0 - decay)
            curvature.n_stats += 1
            curvature.stats_version += 1

    # ------------------------------------------------------------------ inverses

    def _layer_damping(self) -> float:
        group = self.param_groups[0]
        return float(group["damping"]) + float(group["weight_decay"])

    def _decompose(self, factor_a: torch.Tensor, factor_g: torch.Tensor, damping: float) -> dict[str, Any] | None:
        """The inverse strategy's decomposition of one layer's factors (in float64 if the factors' dtype fails)."""
        if not (torch.isfinite(factor_a).all() and torch.isfinite(factor_g).all()):
            return None
        out_dtype = factor_a.dtype
        for dtype in dict.fromkeys((out_dtype, torch.float64)):
            try:
                result = self._inverse.decompose(factor_a.to(dtype), factor_g.to(dtype), damping)
            except (RuntimeError, torch.linalg.LinAlgError):
                continue
            tensors = [v for v in result.values() if isinstance(v, torch.Tensor)]
            if all(torch.isfinite(t).all() for t in tensors):
                result = {k: v.to(out_dtype) if isinstance(v, torch.Tensor) else v for k, v in result.items()}
                result["inverse_damping"] = damping
                return result
        return None

    def _install_inverse(self, layer: _Layer, result: dict[str, Any] | None, stats_version: int) -> None:
        curvature = layer.curvature
        if result is None:
            self.counters["inverse_fallbacks"] += 1
            # Statistics that cannot be decomposed are restarted from the next batch.
            curvature.n_stats = 0
            what = "keeping the previous inverse" if curvature.inverse is not None else "using a first-order step"
            self._warn_once(
                f"inverse:{layer.name}",
                f"KFAC: the curvature factors of layer '{layer.name}' could not be decomposed ({what})",
            )
            return
        curvature.inverse = result
        curvature.inverse_version = stats_version

    def _needs_inverse(self, layer: _Layer, damping: float) -> bool:
        curvature = layer.curvature
        if curvature.factor_a is None:
            return False
        if curvature.inverse is None:
            return True
        kfac_step = self._step - self.warmup_steps
        if kfac_step % self.inverse_interval != 0:
            return False
        if curvature.inverse_version != curvature.stats_version:
            return True
        # Factored damping is part of the decomposition: recompute if lambda changed.
        return self._inverse.damping_in_decomposition and curvature.inverse.get("inverse_damping") != damping

    def _update_inverses(self) -> None:
        damping = self._layer_damping()
        self._collect_async_inverses()
        due = [layer for layer in self.layers if self._needs_inverse(layer, damping)]
        if not due:
            return
        first_time = [layer for layer in due if layer.curvature.inverse is None]
        background = [layer for layer in due if layer not in first_time] if self.async_inverse else []
        for layer in due:
            if layer in background:
                continue
            curvature = layer.curvature
            assert curvature.factor_a is not None and curvature.factor_g is not None
            result = self._decompose(curvature.factor_a, curvature.factor_g, damping)
            self._install_inverse(layer, result, curvature.stats_version)
        if background and self._inverse_future is None:
            jobs = []
            for layer in background:
                curvature = layer.curvature
                assert curvature.factor_a is not None and curvature.factor_g is not None
                jobs.append((layer, curvature.factor_a.clone(), curvature.factor_g.clone(), curvature.stats_version))
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kfac-inverse")
            self._inverse_future = self._executor.submit(
                lambda: [(layer, self._decompose(a, g, damping), version) for layer, a, g, version in jobs]
            )

    def _collect_async_inverses(self, wait: bool = False) -> None:
        future = self._inverse_future
        if future is None or not (wait or future.done()):
            return
        self._inverse_future = None
        for layer, result, version in future.result():
            self._install_inverse(layer, result, version)

    def wait_for_inverses(self) -> None:
        """Block until a background inverse computation (``async_inverse=True``) has finished and install it."""
        self._collect_async_inverses(wait=True)

    # ------------------------------------------------------------------ step

    def _precondition(self, layer: _Layer, grads: dict[int, torch.Tensor], damping: float) -> bool:
        """Replace the layer's entries of ``grads`` by ``F^-1 g``; ``False`` if the layer has no inverse."""
        inverse = layer.curvature.inverse
        if inverse is None:
            return False
        bias_grad = grads.get(id(layer.bias)) if layer.bias is not None else None
        mat = kronecker.weight_grad_matrix(grads[id(layer.weight)], bias_grad)
        nat = self._inverse.precondition(mat, inverse, damping)
        weight_nat, bias_nat = kronecker.split_weight_grad_matrix(nat, layer.weight.shape, bias_grad is not None)
        grads[id(layer.weight)] = weight_nat
        if bias_nat is not None:
            grads[id(layer.bias)] = bias_nat
        return True

    def _gradients(self) -> dict[int, torch.Tensor] | None:
        """Gradients plus weight decay, or ``None`` if any is non-finite."""
        group = self.param_groups[0]
        weight_decay = float(group["weight_decay"])
        grads: dict[int, torch.Tensor] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("KFAC does not support sparse gradients")
            grad = p.grad.detach()
            if weight_decay != 0.0:
                grad = grad.add(p.detach(), alpha=weight_decay)
            grads[id(p)] = grad
        if not grads:
            return grads
        return grads if all_finite(list(grads.values())) else None

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """
        Take one optimisation step: fold this step's statistics into the factors, then a first-order warm-up step or
        the natural-gradient step ``F^-1 g`` inside the trust region, with momentum.

        :param closure: optional closure that re-evaluates the model and returns the loss
        :return: the closure's loss, if given
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        group = self.param_groups[0]
        lr, momentum = float(group["lr"]), float(group["momentum"])
        grads = self._gradients()
        if grads is None:
            self._clear_step_buffers()
            self._refuse_step("grad", "non-finite gradient")
            return loss
        if self.stats_due:
            self._fold_statistics()
        self._clear_step_buffers()
        if not grads:
            self._step += 1
            return loss

        if self.in_warmup:
            directions, info = self._warmup_directions(grads, lr)
            step_lr = lr
        else:
            directions, info = self._natural_directions(grads, lr, group["kl_clip"])
            step_lr = lr * (1.0 - momentum) if momentum else lr
        params = [p for p in group["params"] if id(p) in grads]
        applied = self._momentum_updates(params, directions, momentum, step_lr)
        if applied is None:
            self._refuse_step("update", "non-finite update")
            return loss
        for p, (new_buf, update) in zip(params, applied):
            if new_buf is not None:
                self.state[p]["momentum_buffer"] = new_buf
            p.add_(update, alpha=-1.0)
        self._step += 1
        self.last_step_info = info
        return loss

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """
        K-FAC has one parameter group, the model's (its hyperparameters apply to every layer it hooks): a second
        group is refused instead of being silently ignored.

        :param param_group: the group (only the constructor's own is accepted)
        """
        if self.param_groups:
            raise ValueError(
                "KFAC optimises the parameters of the model it was given as one group; add_param_group() is not "
                "supported (build another optimizer for other parameters, or pass skip_modules for first-order layers)"
            )
        super().add_param_group(param_group)

    def _refuse_step(self, key: str, what: str) -> None:
        """Count and report a step that leaves the parameters unchanged."""
        self.counters["skipped_steps"] += 1
        self._warn_once(key, f"KFAC: {what}, the step was skipped and the parameters left unchanged")
        self.last_step_info = {"skipped": 1.0}

    def _warmup_directions(
        self, grads: dict[int, torch.Tensor], lr: float
    ) -> tuple[dict[int, torch.Tensor], dict[str, float]]:
        """The warm-up's first-order directions: the gradients, clipped to ``warmup_max_grad_norm``."""
        directions = grads
        if self.warmup_max_grad_norm is not None:
            total_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads.values()]))
            scale = min(1.0, self.warmup_max_grad_norm / (float(total_norm) + 1e-6))
            directions = {k: g * scale for k, g in grads.items()}
        return directions, {"nu": 1.0, "step_size": lr, "warmup": 1.0}

    def _natural_directions(
        self, grads: dict[int, torch.Tensor], lr: float, kl_clip: float | None
    ) -> tuple[dict[int, torch.Tensor], dict[str, float]]:
        """``nu F^-1 g`` layer by layer, with the trust-region factor ``nu`` (Wu et al. 2017, §3.2)."""
        if not any(layer.curvature.factor_a is not None for layer in self.layers):
            raise RuntimeError(
                "KFAC.step() was called after the warm-up but no curvature statistics were ever recorded: "
                "run the model forward in training mode and pass the sampled-Fisher loss to "
                "record_fisher() (or back-propagate it inside `with opt.track_fisher():`) before step()"
            )
        self._update_inverses()
        damping = self._layer_damping()
        directions = dict(grads)
        for layer in self.layers:
            if id(layer.weight) in grads and not self._precondition(layer, directions, damping):
                self.counters["first_order_layer_steps"] += 1
                self._warn_once(
                    f"first_order:{layer.name}",
                    f"KFAC: layer '{layer.name}' has no curvature statistics yet and takes a first-order step",
                )
        # Trust region: lr^2 * sum <F^-1 g, g> over every parameter the step touches.
        vfv = lr**2 * float(sum((directions[k] * grads[k]).sum() for k in grads))
        nu = 1.0 if kl_clip is None or vfv <= 0.0 else min(1.0, math.sqrt(float(kl_clip) / vfv))
        nat_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d) for d in directions.values()])))
        directions = {k: d * nu for k, d in directions.items()}
        return directions, {"nu": nu, "vFv": vfv, "step_size": nu * lr, "natural_grad_norm": nat_norm, "warmup": 0.0}

    def _momentum_updates(
        self, params: list[torch.Tensor], directions: dict[int, torch.Tensor], momentum: float, step_lr: float
    ) -> list[tuple[torch.Tensor | None, torch.Tensor]] | None:
        """New momentum buffers and parameter decrements, or ``None`` if any is non-finite (nothing is changed)."""
        out = []
        for p in params:
            direction = directions[id(p)]
            if momentum != 0.0:
                buf = self.state[p].get("momentum_buffer")
                new_buf = direction.clone() if buf is None else buf * momentum + direction
                out.append((new_buf, new_buf * step_lr))
            else:
                out.append((None, direction * step_lr))
        return out if all_finite([update for _, update in out]) else None

    def _clear_step_buffers(self) -> None:
        for layer in self.layers:
            layer.clear()

    # ------------------------------------------------------------------ persistence and housekeeping

    def state_dict(self) -> dict[str, Any]:
        """The optimizer state, plus K-FAC's step counter and fault counters under the key ``"kfac"``."""
        self._collect_async_inverses(wait=True)
        state = super().state_dict()
        for layer in self.layers:
            entries = layer.curvature.to_state()
            if entries:
                index = self._param_index(layer.name)
                state["state"][index] = {**state["state"].get(index, {}), **entries}
        state["kfac"] = {"step": self._step, "counters": dict(self.counters), "conv_factors": self.conv_factors}
        return state

    def curvature(self, layer: str | nn.Module) -> Curvature:
        """
        A covered layer's curvature record (factors and decomposition), live.

        :param layer: the layer's name in ``model.named_modules()``, or the module
        :raises KeyError: for a layer K-FAC does not cover
        """
        for covered in self.layers:
            if covered.name == layer or covered.module is layer:
                return covered.curvature
        raise KeyError(f"KFAC does not cover the layer {layer!r} (covered: {[covered.name for covered in self.layers]})")

    @property
    def conv_factors(self) -> dict[str, str]:
        """The factor form (``"expand"`` or ``"reduce"``) of each covered convolution, by layer name."""
        return {layer.name: layer.conv_factors for layer in self.layers if isinstance(layer.module, nn.Conv2d)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """
        Restore a state produced by :meth:`state_dict` (tensors move to each parameter's device).

        :param state_dict: the saved state
        """
        state_dict = dict(state_dict)
        extra = state_dict.pop("kfac", None)
        if self._inverse_future is not None:
            self._inverse_future.result()
            self._inverse_future = None
        # Files written before conv_factors existed hold expand factors.
        saved = dict(extra.get("conv_factors", {})) if extra is not None else {}
        mismatch = {
            name: (saved.get(name, "expand"), mode)
            for name, mode in self.conv_factors.items()
            if saved.get(name, "expand") != mode and "A" in state_dict.get("state", {}).get(self._param_index(name), {})
        }
        if mismatch:
            raise ValueError(
                "KFAC.load_state_dict: the saved factors of these convolutions use another conv_factors form "
                f"(layer: (saved, this optimizer)): {mismatch}; build the optimizer with conv_factors={saved or 'expand'}"
            )
        super().load_state_dict(state_dict)
        for layer in self.layers:
            layer.curvature = Curvature.from_state(self.state[layer.weight], self._inverse.keys)
            if not self.state[layer.weight]:
                del self.state[layer.weight]
        if extra is not None:
            self._step = int(extra["step"])
            self.counters.update({k: int(v) for k, v in extra["counters"].items()})
        self._clear_step_buffers()

    def _param_index(self, layer_name: str) -> int:
        """Index of a layer's weight in the flat parameter numbering of :meth:`state_dict`."""
        weight = next(layer.weight for layer in self.layers if layer.name == layer_name)
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p is weight:
                    return index
                index += 1
        raise KeyError(layer_name)

    def __getstate__(self) -> dict[str, Any]:
        # Keep the K-FAC attributes (torch.optim.Optimizer only keeps defaults/state/param_groups), so that a
        # ``copy.deepcopy`` of the model copies a working optimizer whose hooks point at the copied layers.
        self._collect_async_inverses(wait=True)
        state = self.__dict__.copy()
        state["_executor"] = None
        state["_inverse_future"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def remove_hooks(self) -> None:
        """Detach the optimizer from the model's layers (statistics are no longer recorded)."""
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles = []
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=3)


def check_kfac_arguments(
    owner: str = "KFAC",
    names: Mapping[str, str] | None = None,
    *,
    # KFAC's keyword arguments with KFAC's defaults (so that an owner passes only the ones it sets)
    lr: float = 0.25,
    momentum: float = 0.9,
    damping: float = 0.01,
    weight_decay: float = 0.0,
    kl_clip: float | None = 0.001,
    stat_decay: float = 0.99,
    stats_interval: int = 1,
    inverse_interval: int = 10,
    inverse_method: str = "eigen",
    damping_type: str | None = None,
    warmup_steps: int = 0,
    warmup_max_grad_norm: float | None = None,
    stats_batch_size: int | None = None,
    stats_dtype: torch.dtype | str | None = None,
    conv_factors: str | Mapping[str, str] = "expand",
) -> str:
    """
    Check K-FAC's hyperparameters (the keyword arguments of :class:`KFAC`) with errors that name the bad value.

    :param owner: the class named in the error (an algorithm that builds a ``KFAC`` checks its own arguments here)
    :param names: the owner's names of K-FAC's arguments, e.g. ``{"kl_clip": "kfac_clip"}`` for ACKTR
    :return: the resolved damping type
    :raises ValueError: naming the first bad argument
    """
    names = dict(names or {})

    def bad(name: str, value: Any, expected: str) -> ValueError:
        return invalid(owner, names.get(name, name), value, expected)

    for name, value in (("lr", lr), ("damping", damping), ("weight_decay", weight_decay)):
        if not is_number(value) or value < 0:
            raise bad(name, value, "a finite number >= 0")
    for name, value in (("momentum", momentum), ("stat_decay", stat_decay)):
        if not is_number(value) or not 0 <= value < 1:
            raise bad(name, value, "a number in [0, 1)")
    for name, optional in (("kl_clip", kl_clip), ("warmup_max_grad_norm", warmup_max_grad_norm)):
        if optional is not None and (not is_number(optional) or optional <= 0):
            raise bad(name, optional, "a number > 0, or None to disable it")
    for name, value, low in (
        ("stats_interval", stats_interval, 1),
        ("inverse_interval", inverse_interval, 1),
        ("warmup_steps", warmup_steps, 0),
    ):
        if not is_int(value, low):
            raise bad(name, value, f"an integer >= {low}")
    if stats_batch_size is not None and not is_int(stats_batch_size, 1):
        raise bad("stats_batch_size", stats_batch_size, "an integer >= 1 or None")
    damping_type = _resolve_damping_type(bad, inverse_method, damping_type, damping)
    if _stats_dtype_or_none(stats_dtype) is _UNKNOWN:
        raise bad("stats_dtype", stats_dtype, f"None or one of {tuple(STATS_DTYPES)} (as torch.dtype or name)")
    if _conv_factors_or_none(conv_factors) is None:
        raise bad("conv_factors", conv_factors, CONV_FACTORS_EXPECTED)
    return damping_type


def _resolve_damping_type(
    bad: Callable[[str, Any, str], ValueError], inverse_method: str, damping_type: str | None, damping: float
) -> str:
    if inverse_method not in INVERSE_METHODS:
        raise bad("inverse_method", inverse_method, f"one of {INVERSE_METHODS}")
    if damping_type is None:
        damping_type = "kronecker" if inverse_method == "eigen" else "factored"
    if damping_type not in DAMPING_TYPES:
        raise bad("damping_type", damping_type, f"one of {DAMPING_TYPES}")
    if inverse_method == "cholesky" and damping_type == "kronecker":
        raise bad("damping_type", damping_type, "'factored' with inverse_method='cholesky' (Kronecker damping needs eigh)")
    if damping == 0 and damping_type == "factored":
        raise bad("damping", damping, "a number > 0 with factored damping (the factors may be singular)")
    return damping_type


CONV_FACTORS_EXPECTED = f"one of {kronecker.CONV_FACTORS} or a mapping from convolution names to one of them"


def _conv_factors_or_none(conv_factors: Any) -> tuple[str, dict[str, str]] | None:
    if isinstance(conv_factors, str):
        return (conv_factors, {}) if conv_factors in kronecker.CONV_FACTORS else None
    if not isinstance(conv_factors, Mapping):
        return None
    if not all(isinstance(name, str) and mode in kronecker.CONV_FACTORS for name, mode in conv_factors.items()):
        return None
    return "expand", dict(conv_factors)


def resolve_conv_factors(conv_factors: str | Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """
    The default convolution factor form and the per-layer forms given by ``conv_factors``.

    :param conv_factors: ``"expand"``, ``"reduce"``, or a mapping from layer names to one of them
    :return: (form of the layers not named, ``{layer name: form}``)
    :raises ValueError: naming the bad value
    """
    resolved = _conv_factors_or_none(conv_factors)
    if resolved is None:
        raise invalid("KFAC", "conv_factors", conv_factors, CONV_FACTORS_EXPECTED)
    return resolved


# float16 is left out on purpose: its sums of squares over a convolution's patches overflow (max 65504).
STATS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


_UNKNOWN = object()


def _stats_dtype_or_none(stats_dtype: Any) -> Any:
    """The dtype named by ``stats_dtype``, ``None`` for ``None``, ``_UNKNOWN`` for anything else."""
    if stats_dtype is None:
        return None
    if isinstance(stats_dtype, str):
        return STATS_DTYPES.get(stats_dtype.removeprefix("torch."), _UNKNOWN)
    if isinstance(stats_dtype, torch.dtype) and stats_dtype in STATS_DTYPES.values():
        return stats_dtype
    return _UNKNOWN


def resolve_stats_dtype(stats_dtype: torch.dtype | str | None) -> torch.dtype | None:
    """
    The dtype named by ``stats_dtype`` (a ``torch.dtype`` or its name, with or without ``"torch."``).

    :param stats_dtype: ``None``, or one of the dtypes of ``STATS_DTYPES`` or its name
    :return: the dtype, or ``None``
    """
    dtype = _stats_dtype_or_none(stats_dtype)
    if dtype is _UNKNOWN:
        raise invalid("KFAC", "stats_dtype", stats_dtype, f"None or one of {tuple(STATS_DTYPES)} (as torch.dtype or name)")
    return dtype
