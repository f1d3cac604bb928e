from sb3_natgrad.smac.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_natgrad.smac.smac import SMAC

__all__ = ["SMAC", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
