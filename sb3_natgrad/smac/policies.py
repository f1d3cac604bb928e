"""
Policies for SMAC: the Stable-Baselines3 actor-critic policies.

SMAC replaces the policy's optimizer by one over the critic's own parameters (the actor is moved by the
Sherman–Morrison natural gradient). Parameters shared by actor and critic (a shared CNN features extractor with
``share_features_extractor=True``) belong to the actor: only the natural-gradient step moves them.
"""

from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy

from sb3_natgrad.common.minatar import MinAtarPolicy

MlpPolicy = ActorCriticPolicy
CnnPolicy = ActorCriticCnnPolicy
MultiInputPolicy = MultiInputActorCriticPolicy

__all__ = ["CnnPolicy", "MinAtarPolicy", "MlpPolicy", "MultiInputPolicy"]
