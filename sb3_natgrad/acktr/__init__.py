from sb3_natgrad.acktr.acktr import ACKTR
from sb3_natgrad.acktr.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["ACKTR", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
