"""
Natural-gradient reinforcement learning for Stable-Baselines3.

The algorithms are imported on first use (PEP 562), so that ``import sb3_natgrad.optim`` — the preconditioners in
plain PyTorch — imports neither Stable-Baselines3 nor Gymnasium.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sb3_natgrad.acktr import ACKTR
    from sb3_natgrad.common.minatar import MinAtarCnn, register_minatar_envs
    from sb3_natgrad.common.torch_layers import ACKTRCnn
    from sb3_natgrad.kfrelax import KFRELAX
    from sb3_natgrad.smac import SMAC

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

#: public name -> the module that defines it
_LAZY = {
    "ACKTR": "sb3_natgrad.acktr",
    "KFRELAX": "sb3_natgrad.kfrelax",
    "SMAC": "sb3_natgrad.smac",
    "ACKTRCnn": "sb3_natgrad.common.torch_layers",
    "MinAtarCnn": "sb3_natgrad.common.minatar",
    "register_minatar_envs": "sb3_natgrad.common.minatar",
}

__all__ = ["ACKTR", "KFRELAX", "SMAC", "ACKTRCnn", "MinAtarCnn", "__version__", "register_minatar_envs"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sb3_natgrad' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
