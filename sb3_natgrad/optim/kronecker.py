"""
Kronecker-factor statistics and Kronecker-factored solves for ``nn.Linear`` and ``nn.Conv2d``.

Conventions (Martens & Grosse 2015; Grosse & Martens 2016 "KFC" for convolutions).
For a layer with weight ``W`` (``out x in``, a convolution's kernel flattened to ``out x C*kh*kw``)
and, when it has one, a bias ``b``, the homogeneous weight is ``[W, b]`` and the input vector is
``a~ = [a, 1]``. One sample ``i`` may apply the layer at ``T`` positions (``T = Oh*Ow`` for a
convolution, ``1`` for a linear layer on a ``[B, in]`` input), so its gradient is
``dW_i = sum_t gamma_it a~_it^T`` where ``gamma_it`` is the derivative of the sample's
log-likelihood with respect to the layer output at position ``t``. With the KFC assumptions
(independent activations and derivatives, spatial homogeneity, spatially uncorrelated derivatives)
the Fisher block is ``F = A kron G`` with

    A = mean over all (i, t) of a~ a~^T                      (input factor)
    G = mean over samples i of sum_t gamma_it gamma_it^T     (output-gradient factor)

For a linear layer on ``[B, in]`` inputs and a single sample, ``A kron G`` equals that sample's
Fisher block exactly. Only the product ``A kron G`` matters for both damping forms used here, so
splitting the spatial factor ``T`` into ``G`` is a convention, not an approximation.

These are the "expand" factors. Eschenhagen et al. 2023 ("Kronecker-Factored Approximate Curvature for Modern
Neural Network Architectures", NeurIPS) name the two ways of treating the ``R`` positions that share a weight.
With ``N`` samples, ``a_nr`` the input of sample ``n`` at position ``r`` and ``g_nr`` its output gradient (our
``G`` carries the ``1/N`` of a batch-mean loss that the paper keeps in its loss), in our conventions:

* K-FAC-expand (their Eq. 7, KFC's form): the positions act as extra samples::

      A_expand = 1/(N R) sum_n sum_r a~_nr a~_nr^T        G_expand = 1/N sum_n sum_r g_nr g_nr^T

  It is exact (for a deep linear network, Prop. 1 of their §3.2) in the *expand setting*, where every position
  has its own loss term, e.g. a per-position Gaussian output;

* K-FAC-reduce (their Eq. 10, §3.3): the positions are reduced per sample *before* the outer products, the
  inputs by their mean and the output gradients by their sum::

      A_reduce = 1/N sum_n abar_n abar_n^T, abar_n = 1/R sum_r a~_nr     G_reduce = 1/N sum_n gsum_n gsum_n^T,
      gsum_n = sum_r g_nr

  (the paper writes ``1/(N R^2) sum_n (sum_r a_nr)(sum_r a_nr)^T``, the same matrix). It is exact in the
  *reduce setting*, where the positions are pooled before the loss, as in a policy network whose convolution
  outputs are flattened or pooled into one action distribution per sample: there every position of a sample
  shares one output-gradient direction when the rest of the network is linear (their Prop. 2), so a sample's
  weight gradient ``gsum_n abar_n^T`` has rank one. The homogeneous coordinate averages to 1, so ``abar``
  keeps the bias column. Both forms coincide when a convolution has a single output position (``R = 1``).

  Reduce needs one ``N x d`` matrix per factor instead of ``N R x d``: the position means are separable strided
  sums over views of the input (:func:`conv2d_patch_means`); no patch matrix is built.

With column-stacking ``vec``, ``(A kron G)^{-1} vec(V) = vec(G^{-1} V A^{-1})`` (Wu et al. 2017, §2.2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_LAYER_TYPES = (nn.Linear, nn.Conv2d)


def is_supported_layer(module: nn.Module) -> bool:
    """
    Whether K-FAC can build Kronecker factors for ``module``.

    :param module: a module of the model
    :return: ``True`` for ``nn.Linear`` and for ``nn.Conv2d`` with ``groups=1`` and zero padding
    """
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, nn.Conv2d):
        return module.groups == 1 and module.padding_mode == "zeros"
    return False


CONV_FACTORS = ("expand", "reduce")


def _padded_input(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The convolution's input with its zero padding applied."""
    # ``_reversed_padding_repeated_twice`` is (left, right, top, bottom) for every padding spec,
    # including the asymmetric split of padding="same".
    pad = module._reversed_padding_repeated_twice
    return F.pad(x, pad) if any(p != 0 for p in pad) else x


def _conv2d_patch_view(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """
    The receptive fields of a 2D convolution as a strided view ``[B, C, Oh, Ow, kh, kw]`` of the (padded) input.

    :param module: the convolution (``groups=1``)
    :param x: its input, ``[B, C, H, W]``
    :return: the view (no copy, except the padding)
    """
    kh, kw = module.kernel_size
    sh, sw = module.stride
    dh, dw = module.dilation
    x = _padded_input(module, x)
    # [B, C, Oh, Ow, kh_eff, kw_eff] as a view, then keep every dilation-th tap.
    patches = x.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
    if dh > 1 or dw > 1:
        patches = patches[..., ::dh, ::dw]
    return patches


def conv2d_patches(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """
    The receptive-field patches of a 2D convolution, one row per (sample, output position) (K-FAC-expand).

    Built from strided views (``Tensor.unfold``) of the padded input and a single reshape, which is
    several times faster on CPU than ``F.unfold``. Column order is ``(C, kh, kw)``, the order of
    ``weight.view(out_channels, -1)``.

    :param module: the convolution (``groups=1``)
    :param x: its input, ``[B, C, H, W]``
    :return: patches of shape ``[B * Oh * Ow, C * kh * kw]``
    """
    patches = _conv2d_patch_view(module, x)
    batch, channels, out_h, out_w, kh, kw = patches.shape
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(batch * out_h * out_w, channels * kh * kw)


def conv2d_patch_means(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """
    Each sample's receptive-field patch averaged over the output positions, ``abar_n`` of K-FAC-reduce.

    The sum over positions is separable: first, for each kernel column, the sum over the output columns (a strided
    sum along the width), then, for each kernel row, the sum over the output rows. Both are reductions over strided
    views of the (padded) input: the ``[B * Oh * Ow, C * kh * kw]`` patch matrix is never built, and the work is
    ``C * (H * Ow * kw + Oh * kh * kw)`` per sample instead of ``C * Oh * Ow * kh * kw``. Column order as in
    :func:`conv2d_patches`.

    :param module: the convolution (``groups=1``)
    :param x: its input, ``[B, C, H, W]``
    :return: ``[B, C * kh * kw]``
    """
    kh, kw = module.kernel_size
    sh, sw = module.stride
    dh, dw = module.dilation
    x = _padded_input(module, x)
    columns = x.unfold(3, dw * (kw - 1) + 1, sw)  # [B, C, H, Ow, span_w]
    out_w = columns.shape[3]
    columns = columns.sum(dim=3)[..., ::dw]  # [B, C, H, kw]
    rows = columns.unfold(2, dh * (kh - 1) + 1, sh)  # [B, C, Oh, kw, span_h]
    out_h = rows.shape[2]
    sums = rows.sum(dim=2)[..., ::dh].transpose(2, 3)  # [B, C, kh, kw]
    return sums.reshape(x.shape[0], -1) / (out_h * out_w)


def layer_input_rows(module: nn.Module, x: torch.Tensor, conv_factors: str = "expand") -> torch.Tensor:
    """
    The input vectors ``a`` of a layer without the bias column: one row per (sample, position) for a linear layer
    and an expand convolution, one row per sample (the position mean) for a reduce convolution.

    :param module: an ``nn.Linear`` or ``nn.Conv2d``
    :param x: the layer input
    :param conv_factors: ``"expand"`` or ``"reduce"`` (convolutions only)
    :return: a 2D tensor ``[rows, in_features]``
    """
    if isinstance(module, nn.Conv2d):
        return conv2d_patch_means(module, x) if conv_factors == "reduce" else conv2d_patches(module, x)
    return x.reshape(-1, x.shape[-1])


def output_grad_second_moment(module: nn.Module, grad_output: torch.Tensor, conv_factors: str = "expand") -> torch.Tensor:
    """
    ``sum_r g_r g_r^T`` over the rows ``g_r`` (one per sample and output position) of a layer's output gradient,
    or for a reduce convolution ``sum_n gsum_n gsum_n^T`` over the samples' position sums.

    For an expand convolution with at most as many channels as positions, the sum runs over the ``[C, H*W]`` slice
    of each sample (a batched product with a ``[B, C, C]`` intermediate), which avoids the channels-last copy
    of the whole gradient that a single ``[B*H*W, C]`` matrix needs; otherwise that copy is the smaller one.

    :param module: an ``nn.Linear`` or ``nn.Conv2d``
    :param grad_output: gradient with respect to the layer output (same shape as the output)
    :param conv_factors: ``"expand"`` or ``"reduce"`` (convolutions only)
    :return: ``[out_features, out_features]``
    """
    if isinstance(module, nn.Conv2d):
        if conv_factors == "reduce":
            sums = grad_output.sum(dim=(2, 3))  # [B, C]
            return sums.t() @ sums
        per_sample = grad_output.flatten(2)  # [B, C, H*W]
        if per_sample.shape[1] <= per_sample.shape[2]:
            return torch.bmm(per_sample, per_sample.transpose(1, 2)).sum(dim=0)
        rows = per_sample.transpose(1, 2).reshape(-1, per_sample.shape[1])
        return rows.t() @ rows
    rows = grad_output.reshape(-1, grad_output.shape[-1])
    return rows.t() @ rows


def homogeneous_second_moment(rows: torch.Tensor, with_bias: bool, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """
    ``sum_r a~_r a~_r^T`` for ``a~ = [a, 1]`` (or ``a`` without bias), without materialising ``[a, 1]``.

    The Gram matrix and the column sums are computed in ``rows.dtype`` (accumulating in float32 for
    ``bfloat16``) and returned in ``out_dtype``; the row count is exact.

    :param rows: input rows ``[n, d]``
    :param with_bias: append the homogeneous coordinate
    :param out_dtype: dtype of the result (default: ``rows.dtype``)
    :return: ``[d + 1, d + 1]`` (or ``[d, d]``) sum of outer products
    """
    out_dtype = rows.dtype if out_dtype is None else out_dtype
    if not with_bias:
        return (rows.t() @ rows).to(out_dtype)
    n, d = rows.shape
    if n <= d or rows.numel() <= 65536:
        # few rows (a Linear layer's batch): one matmul on [a, 1]; copying n x (d + 1) inputs is cheaper than
        # copying the d x d Gram matrix into the blocks below
        rows = torch.cat([rows, rows.new_ones((n, 1))], dim=1)
        out = (rows.t() @ rows).to(out_dtype)
        out[d, d] = n  # exact even when the product was rounded (bfloat16)
        return out
    gram = rows.t() @ rows
    out = torch.empty((d + 1, d + 1), dtype=out_dtype, device=rows.device)
    out[:d, :d] = gram
    col_sum = rows.sum(dim=0)  # in rows.dtype: a dtype= argument would copy all of rows first
    out[:d, d] = col_sum
    out[d, :d] = col_sum
    out[d, d] = n
    return out


def weight_grad_matrix(weight_grad: torch.Tensor, bias_grad: torch.Tensor | None) -> torch.Tensor:
    """
    The gradient of the homogeneous weight ``[W, b]`` as an ``out x (in [+1])`` matrix.

    :param weight_grad: gradient of the weight (``[out, in]`` or ``[out, C, kh, kw]``)
    :param bias_grad: gradient of the bias (``[out]``) or ``None``
    :return: the matrix ``V`` that K-FAC preconditions as ``G^{-1} V A^{-1}``
    """
    mat = weight_grad.reshape(weight_grad.shape[0], -1)
    if bias_grad is None:
        return mat
    return torch.cat([mat, bias_grad.reshape(-1, 1)], dim=1)


def split_weight_grad_matrix(
    mat: torch.Tensor, weight_shape: torch.Size, has_bias: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """
    Inverse of :func:`weight_grad_matrix`.

    :param mat: an ``out x (in [+1])`` matrix
    :param weight_shape: shape of the layer weight
    :param has_bias: whether the last column is the bias
    :return: (weight-shaped tensor, bias-shaped tensor or ``None``)
    """
    if has_bias:
        return mat[:, :-1].reshape(weight_shape), mat[:, -1].contiguous()
    return mat.reshape(weight_shape), None


def factored_damping(factor_a: torch.Tensor, factor_g: torch.Tensor, damping: float) -> tuple[float, float]:
    """
    Factored Tikhonov damping (Martens & Grosse 2015, §6.3): ``(A + pi sqrt(lambda) I) kron (G + sqrt(lambda)/pi I)``.

    ``pi = sqrt((tr A / dim A) / (tr G / dim G))`` balances the two factors; it makes the damped product
    independent of how a scalar is split between ``A`` and ``G``.

    :param factor_a: input factor
    :param factor_g: output-gradient factor
    :param damping: lambda
    :return: (damping added to A, damping added to G)
    """
    trace_a = float(torch.diagonal(factor_a).sum()) / factor_a.shape[0]
    trace_g = float(torch.diagonal(factor_g).sum()) / factor_g.shape[0]
    if trace_a > 0.0 and trace_g > 0.0 and math.isfinite(trace_a) and math.isfinite(trace_g):
        pi = math.sqrt(trace_a / trace_g)
    else:
        pi = 1.0
    root = math.sqrt(damping)
    return pi * root, root / pi


def eigen_precondition(
    mat: torch.Tensor,
    q_a: torch.Tensor,
    d_a: torch.Tensor,
    q_g: torch.Tensor,
    d_g: torch.Tensor,
    damping: float,
) -> torch.Tensor:
    """
    ``(A kron G + damping I)^{-1} vec(mat)`` in the factors' eigenbases.

    With ``A = Q_A diag(d_A) Q_A^T`` and ``G = Q_G diag(d_G) Q_G^T`` the eigenvalues of ``A kron G`` are
    ``d_G d_A^T`` (as a matrix), hence ``Q_G [(Q_G^T V Q_A) / (d_G d_A^T + damping)] Q_A^T``.
    Pass already-damped eigenvalues and ``damping=0`` for factored Tikhonov damping.

    :param mat: ``out x in`` gradient matrix
    :param q_a: eigenvectors of A
    :param d_a: eigenvalues of A
    :param q_g: eigenvectors of G
    :param d_g: eigenvalues of G
    :param damping: added to every eigenvalue of the product
    :return: the preconditioned matrix
    """
    rotated = q_g.t() @ mat @ q_a
    rotated = rotated / (torch.outer(d_g, d_a) + damping)
    return q_g @ rotated @ q_a.t()


def damped_cholesky_inverse(factor: torch.Tensor, damping: float) -> torch.Tensor:
    """
    ``(factor + damping I)^{-1}`` through a Cholesky factorisation.

    :param factor: a symmetric positive semi-definite matrix
    :param damping: a non-negative scalar added to the diagonal
    :return: the inverse
    :raises torch.linalg.LinAlgError: if the damped matrix is not positive definite
    """
    damped = factor + damping * torch.eye(factor.shape[0], dtype=factor.dtype, device=factor.device)
    chol = torch.linalg.cholesky(damped)
    return torch.cholesky_inverse(chol)
