"""Curvature preconditioners in plain PyTorch (no Stable-Baselines3 import)."""

from sb3_natgrad.optim.distributed import all_reduce_sum
from sb3_natgrad.optim.kfac import KFAC, Curvature
from sb3_natgrad.optim.sherman_morrison import LinearGramRecorder, NaturalGradientStep, ShermanMorrison, kernel_weights

__all__ = [
    "KFAC",
    "Curvature",
    "LinearGramRecorder",
    "NaturalGradientStep",
    "ShermanMorrison",
    "all_reduce_sum",
    "kernel_weights",
]
