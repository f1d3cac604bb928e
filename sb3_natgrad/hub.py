"""
Pretrained agents: the ones shipped with sb3_natgrad, and sharing your own in the Hugging Face Hub layout of rl-zoo3.

Run a shipped agent::

    from stable_baselines3.common.evaluation import evaluate_policy
    from sb3_natgrad.hub import load_pretrained

    model, env = load_pretrained("acktr", "CartPole-v1")
    mean_reward, std_reward = evaluate_policy(model, env, n_eval_episodes=10)

:func:`pretrained_agents` lists them with their stated evaluation. :func:`package`, :func:`load` and :func:`push` are
the functions behind ``sb3-natgrad package`` / ``load`` / ``push``. The implementation is
:mod:`sb3_natgrad.zoo.hub`; it needs the ``zoo`` extra (rl-zoo3) and, for the model card and the Hub, the ``hub``
extra (huggingface_hub). Importing this module imports neither.
"""

from sb3_natgrad.zoo.hub import (
    HubError,
    HubUnreachableError,
    ManifestError,
    load,
    load_folder,
    load_pretrained,
    package,
    pretrained_agents,
    pretrained_dir,
    push,
    verify,
)

__all__ = [
    "HubError",
    "HubUnreachableError",
    "ManifestError",
    "load",
    "load_folder",
    "load_pretrained",
    "package",
    "pretrained_agents",
    "pretrained_dir",
    "push",
    "verify",
]
