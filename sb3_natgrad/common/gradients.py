"""Flat gradient vectors in ``torch.nn.utils.parameters_to_vector`` order."""

from __future__ import annotations

from collections.abc import Sequence

import torch as th


def flatten_grads(grads: Sequence[th.Tensor | None], params: Sequence[th.Tensor]) -> th.Tensor:
    """
    Concatenate per-parameter gradients into one vector, with zeros for parameters outside the graph.

    ``sb3_contrib.common.utils.flat_grad`` drops such parameters instead, which shifts every later entry: the vector
    would no longer line up with ``parameters_to_vector(params)``.

    :param grads: one gradient per parameter (``None``: the parameter did not take part)
    :param params: the parameters, in the order of ``grads``
    """
    return th.cat([(p.new_zeros(p.shape) if g is None else g).reshape(-1) for g, p in zip(grads, params, strict=True)])


def flat_grad(output: th.Tensor, params: Sequence[th.Tensor], retain_graph: bool = False) -> th.Tensor:
    """
    The gradient of a scalar ``output`` with respect to ``params`` as one vector (see :func:`flatten_grads`).

    :param output: a scalar tensor
    :param params: the parameters
    :param retain_graph: keep the graph for a further backward pass
    """
    grads = th.autograd.grad(output, params, retain_graph=retain_graph, allow_unused=True)
    return flatten_grads(grads, params)
