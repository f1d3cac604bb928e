"""The three algorithms, their small settings and their counters, shared by the tests that check all of them."""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.logger import Logger

from sb3_natgrad import ACKTR, KFRELAX, SMAC

#: small settings per algorithm (CartPole-v1, a few hundred parameters)
SMALL: dict[type, dict[str, Any]] = {
    ACKTR: dict(policy_kwargs=dict(net_arch=[16]), n_steps=8),
    SMAC: dict(policy_kwargs=dict(net_arch=[16]), n_steps=16, batch_size=16, n_critic_updates=1),
    KFRELAX: dict(policy_kwargs=dict(net_arch=[16], cv_net_arch=[16]), n_steps=8),
}
ALGOS = list(SMALL)


def algo_id(algo: type) -> str:
    """The test id of an algorithm: its class name."""
    return algo.__name__


def make(algo: type, env: Any = "CartPole-v1", **kwargs: Any) -> Any:
    """``algo`` with its small settings (``kwargs`` override them), seed 0, on the CPU."""
    return algo("MlpPolicy", env, **{"seed": 0, "device": "cpu", **SMALL[algo], **kwargs})


def preconditioner_counts(model: Any) -> tuple[int, int]:
    """
    The steps taken and skipped by the algorithm's natural-gradient preconditioner: ACKTR's K-FAC of the policy,
    SMAC's Sherman–Morrison preconditioner of the actor, KFRELAX's K-FAC of the control variate (with
    ``cv_optimizer="adam"`` it has none: then its updates and its skipped control-variate updates).
    """
    if isinstance(model, SMAC):
        return model.preconditioner.num_steps, model.preconditioner.num_skipped
    if isinstance(model, KFRELAX) and model.kfac is None:
        return model._n_updates, model.cv_skipped_updates
    return model.kfac.steps, model.kfac.counters["skipped_steps"]


class KeepLogger(Logger):
    """An SB3 logger that also keeps every recorded value (``name_to_value`` is cleared at each dump)."""

    def __init__(self) -> None:
        super().__init__(folder=None, output_formats=[])
        self.history: dict[str, list[Any]] = {}

    def record(self, key: str, value: Any, exclude: str | tuple[str, ...] | None = None) -> None:
        super().record(key, value, exclude)
        self.history.setdefault(key, []).append(value)


def assert_states_equal(a: Any, b: Any, where: str = "") -> None:
    """Recursive equality of state dicts (tensors exactly, and of the same type at every level)."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_states_equal(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_states_equal(x, y, f"{where}/{index}")
    elif isinstance(a, th.Tensor):
        assert th.equal(a, b), where
    else:
        assert a == b, where
