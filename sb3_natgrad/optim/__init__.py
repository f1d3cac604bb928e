"""Curvature preconditioners in plain PyTorch (no Stable-Baselines3 import)."""

from sb3_natgrad.optim.kfac import KFAC

__all__ = ["KFAC"]
