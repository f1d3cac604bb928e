"""Reductions across the processes of data-parallel training, for :class:`~sb3_natgrad.optim.KFAC`'s ``statistics_reducer``."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class AllReduceSum:
    """
    Sum tensors over the processes of a ``torch.distributed`` group in one collective call (the tensors are packed
    into one flat buffer per dtype), in place. Every process must call it with tensors of the same shapes and dtypes
    in the same order, as :class:`~sb3_natgrad.optim.KFAC` does; every process receives the same sums.

    :param group: the process group (``None``: the default group, which must be initialised when it is called)
    """

    def __init__(self, group: Any = None) -> None:
        self.group = group

    def __call__(self, tensors: list[torch.Tensor]) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "KFAC statistics_reducer=AllReduceSum(): torch.distributed is not initialised in this process "
                "(call torch.distributed.init_process_group first, or leave statistics_reducer=None for one process)"
            )
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for tensor in tensors:
            by_dtype.setdefault(tensor.dtype, []).append(tensor)
        for group in by_dtype.values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
            offset = 0
            for tensor in group:
                tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
                offset += tensor.numel()

    def __getstate__(self) -> dict[str, Any]:
        # a process group belongs to this process and cannot travel with a copy
        if self.group is not None:
            raise TypeError(
                "AllReduceSum with a process group cannot be copied or pickled; build the copy's KFAC with its own "
                "all_reduce_sum(group)"
            )
        return {"group": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.group = state["group"]


def all_reduce_sum(group: Any = None) -> AllReduceSum:
    """
    The ``statistics_reducer`` for ``torch.distributed`` data parallelism (e.g. under ``DistributedDataParallel``)::

        opt = KFAC(model, statistics_reducer=all_reduce_sum())

    :param group: the process group (``None``: the default group)
    """
    return AllReduceSum(group)
