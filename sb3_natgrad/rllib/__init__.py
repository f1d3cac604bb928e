"""
ACKTR on Ray RLlib's new API stack: K-FAC natural gradients inside an RLlib ``TorchLearner``, with RLlib's parallel
env runners and data-parallel learners. Needs the ``rllib`` extra (``pip install "sb3-natgrad[rllib]"``); ``import
sb3_natgrad`` never imports Ray.
"""

try:
    import ray.rllib  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        f'sb3_natgrad.rllib needs Ray RLlib ({error}); install it with: pip install "sb3-natgrad[rllib]"'
    ) from error

from sb3_natgrad.rllib.acktr import ACKTR, ACKTRConfig
from sb3_natgrad.rllib.learner import ACKTRTorchLearner
from sb3_natgrad.rllib.reward_scaling import NormalizeRewards

__all__ = ["ACKTR", "ACKTRConfig", "ACKTRTorchLearner", "NormalizeRewards"]
