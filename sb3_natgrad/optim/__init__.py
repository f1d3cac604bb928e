"""Curvature preconditioners in plain PyTorch (no Stable-Baselines3 import)."""

from sb3_natgrad.optim.kfac import KFAC
from sb3_natgrad.optim.sherman_morrison import LinearGramRecorder, NaturalGradientStep, ShermanMorrison, kernel_weights

__all__ = ["KFAC", "LinearGramRecorder", "NaturalGradientStep", "ShermanMorrison", "kernel_weights"]
