import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

# Tests import small reference helpers that live next to them.
sys.path.insert(0, os.path.dirname(__file__))
# ... and a few of the benchmarks' helpers (e.g. kl_bound.LoggedKL), so that both use one copy.
sys.path.insert(1, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))

# Two CPU cores in CI: keep torch from oversubscribing them when pytest-xdist runs two workers.
if os.environ.get("PYTEST_XDIST_WORKER") is not None:
    torch.set_num_threads(1)


@pytest.fixture
def one_rollout() -> Callable[[Any], None]:
    """A function that fills a model's rollout buffer once (``n_steps`` steps of each env), without training."""
    from stable_baselines3.common.callbacks import CallbackList

    def collect(model: Any) -> None:
        model._setup_learn(model.n_steps * model.n_envs, None)
        callback = CallbackList([])
        callback.init_callback(model)
        model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)

    return collect


@pytest.fixture(scope="module")
def single_torch_thread() -> Iterator[None]:
    """Torch single-threaded for a module (``pytestmark = pytest.mark.usefixtures("single_torch_thread")``): on a
    shared 2-core machine two intra-op threads made SMAC's small updates a hundred times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
