"""Natural-gradient reinforcement learning for Stable-Baselines3."""

import os

from sb3_natgrad.acktr import ACKTR
from sb3_natgrad.common.minatar import MinAtarCnn, register_minatar_envs
from sb3_natgrad.common.torch_layers import ACKTRCnn
from sb3_natgrad.kfrelax import KFRELAX
from sb3_natgrad.smac import SMAC

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = ["ACKTR", "KFRELAX", "SMAC", "ACKTRCnn", "MinAtarCnn", "__version__", "register_minatar_envs"]
