"""Policies for ACKTR: the Stable-Baselines3 actor-critic policies (K-FAC replaces their optimizer)."""

from stable_baselines3.common.policies import ActorCriticCnnPolicy, ActorCriticPolicy, MultiInputActorCriticPolicy

from sb3_natgrad.common.minatar import MinAtarPolicy

MlpPolicy = ActorCriticPolicy
CnnPolicy = ActorCriticCnnPolicy
MultiInputPolicy = MultiInputActorCriticPolicy

__all__ = ["CnnPolicy", "MinAtarPolicy", "MlpPolicy", "MultiInputPolicy"]
