"""Moving parameters in place: a flat update, and back to saved values (the skip / revert of every algorithm)."""

from __future__ import annotations

from collections.abc import Sequence

import torch as th
from torch import nn


def add_flat_update(params: Sequence[nn.Parameter], update: th.Tensor) -> None:
    """
    :param params: the parameters to move
    :param update: one flat vector, added to ``params`` in their order
    """
    offset = 0
    with th.no_grad():
        for param in params:
            numel = param.numel()
            param.add_(update[offset : offset + numel].view_as(param))
            offset += numel


def restore_parameters(params: Sequence[nn.Parameter], saved: Sequence[th.Tensor]) -> None:
    """
    :param params: the parameters to put back
    :param saved: their earlier values, one tensor per parameter
    """
    with th.no_grad():
        for param, value in zip(params, saved, strict=True):
            param.copy_(value)
