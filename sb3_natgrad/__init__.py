"""Natural-gradient reinforcement learning for Stable-Baselines3."""

import os

from sb3_natgrad.acktr import ACKTR
from sb3_natgrad.common.torch_layers import ACKTRCnn

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = ["ACKTR", "ACKTRCnn", "__version__"]
