"""Dense, per-example reference computations for the K-FAC tests (float64, loops, no shared code with the optimizer)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def capture_layer_io(model: nn.Module, layers: list[nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Run ``model(x)`` and return its output and, for each layer, its (input, output) tensors."""
    io: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = [
        layer.register_forward_hook(lambda mod, inp, out: io.__setitem__(mod, (inp[0].detach(), out))) for layer in layers
    ]
    try:
        out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return out, io


def conv_patches_unfold(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Patches ``[T, C*kh*kw]`` of ONE sample ``x`` ``[C, H, W]`` via ``F.unfold`` (independent of the optimizer's views)."""
    if isinstance(module.padding, str):
        pads = []
        for d, k in zip(module.dilation, module.kernel_size):
            total = 0 if module.padding == "valid" else d * (k - 1)
            pads.append((total // 2, total - total // 2))
        x = F.pad(x, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
        padding = 0
    else:
        padding = module.padding
    cols = F.unfold(x.unsqueeze(0), module.kernel_size, dilation=module.dilation, padding=padding, stride=module.stride)
    return cols[0].t()


def dense_factors(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, per_sample_logp: callable, conv_factors: str = "expand"
) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Expand: A = mean over (sample, position) of [a, 1][a, 1]^T and G = mean over samples of sum over positions of
    gamma gamma^T, with gamma the derivative of that sample's log-likelihood w.r.t. the layer output.
    Reduce (convolutions): A = mean over samples of abar abar^T with abar the sample's mean [a, 1] over positions,
    G = mean over samples of gsum gsum^T with gsum the sample's gamma summed over positions.
    """
    out, io = capture_layer_io(model, [layer], x)
    layer_in, layer_out = io[layer]
    logp = per_sample_logp(out)
    n = x.shape[0]
    has_bias = layer.bias is not None
    a_sum, a_rows, g_sum = 0.0, 0, 0.0
    for i in range(n):
        if isinstance(layer, nn.Conv2d):
            rows = conv_patches_unfold(layer, layer_in[i])
        else:
            rows = layer_in[i].reshape(-1, layer_in.shape[-1])
        if has_bias:
            rows = torch.cat([rows, torch.ones(rows.shape[0], 1, dtype=rows.dtype)], dim=1)
        reduce = conv_factors == "reduce" and isinstance(layer, nn.Conv2d)
        if reduce:
            rows = rows.mean(dim=0, keepdim=True)
        a_sum = a_sum + rows.t() @ rows
        a_rows += rows.shape[0]
        (grad_out,) = torch.autograd.grad(logp[i], layer_out, retain_graph=True)
        gamma = grad_out[i]
        if isinstance(layer, nn.Conv2d):
            gamma = gamma.reshape(gamma.shape[0], -1).t()  # [T, out]
        else:
            gamma = gamma.reshape(-1, gamma.shape[-1])
        if reduce:
            gamma = gamma.sum(dim=0, keepdim=True)
        g_sum = g_sum + gamma.t() @ gamma
    return a_sum / a_rows, g_sum / n


def homogeneous_grad(layer: nn.Module) -> torch.Tensor:
    """``[W, b]`` gradient matrix ``out x (in + 1)``."""
    mat = layer.weight.grad.reshape(layer.weight.shape[0], -1)
    if layer.bias is not None:
        mat = torch.cat([mat, layer.bias.grad.reshape(-1, 1)], dim=1)
    return mat


def vec(mat: torch.Tensor) -> torch.Tensor:
    """Column-stacking vec."""
    return mat.t().reshape(-1)


def unvec(v: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    return v.reshape(cols, rows).t()


def dense_kronecker_solve(a: torch.Tensor, g: torch.Tensor, mat: torch.Tensor, damping: float) -> torch.Tensor:
    """Solve ``(A kron G + damping I) vec(X) = vec(mat)`` densely."""
    big = torch.kron(a, g) + damping * torch.eye(a.shape[0] * g.shape[0], dtype=a.dtype)
    return unvec(torch.linalg.solve(big, vec(mat)), mat.shape[0], mat.shape[1])


def dense_factored_solve(a: torch.Tensor, g: torch.Tensor, mat: torch.Tensor, damping: float) -> torch.Tensor:
    """Solve ``((A + pi sqrt(l) I) kron (G + sqrt(l)/pi I)) vec(X) = vec(mat)`` densely."""
    pi = math.sqrt((torch.trace(a) / a.shape[0]) / (torch.trace(g) / g.shape[0]))
    ia = torch.eye(a.shape[0], dtype=a.dtype)
    ig = torch.eye(g.shape[0], dtype=a.dtype)
    big = torch.kron(a + pi * math.sqrt(damping) * ia, g + math.sqrt(damping) / pi * ig)
    return unvec(torch.linalg.solve(big, vec(mat)), mat.shape[0], mat.shape[1])


def categorical_sampled_logp(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-sample log-probabilities of labels sampled from the model's own softmax (true-Fisher sampling)."""
    probs = torch.softmax(logits.detach(), dim=-1)
    labels = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
