from sb3_natgrad.kfrelax.buffers import NoisyDictRolloutBuffer, NoisyRolloutBuffer
from sb3_natgrad.kfrelax.kfrelax import KFRELAX
from sb3_natgrad.kfrelax.policies import CnnPolicy, KFRELAXPolicy, MinAtarPolicy, MlpPolicy, MultiInputPolicy

__all__ = [
    "KFRELAX",
    "CnnPolicy",
    "KFRELAXPolicy",
    "MinAtarPolicy",
    "MlpPolicy",
    "MultiInputPolicy",
    "NoisyDictRolloutBuffer",
    "NoisyRolloutBuffer",
]
