"""Natural-gradient reinforcement learning for Stable-Baselines3."""

import os

with open(os.path.join(os.path.dirname(__file__), "version.txt")) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = ["__version__"]
