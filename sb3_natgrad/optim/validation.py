"""Argument checks shared by the preconditioners and the algorithms: one wording for every bad value."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch


def is_number(value: Any) -> bool:
    """A finite real number: Python ``int`` / ``float`` or a NumPy scalar, not a ``bool``."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def is_int(value: Any, low: int) -> bool:
    """An integer (Python or NumPy, not a ``bool``) that is at least ``low``."""
    return isinstance(value, Integral) and not isinstance(value, bool) and int(value) >= low


def invalid(owner: str, name: str, value: Any, expected: str) -> ValueError:
    """
    The error for a bad argument, e.g. ``KFAC: invalid damping=-1, expected a finite number >= 0``.

    :param owner: the class that received the argument
    :param name: the argument's name as its user wrote it
    :param value: the value given
    :param expected: what would have been accepted
    """
    return ValueError(f"{owner}: invalid {name}={value!r}, expected {expected}")


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite: one check (and one device synchronisation) for the list."""
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())
