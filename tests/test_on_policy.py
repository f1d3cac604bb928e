"""What ACKTR, SMAC and KFRELAX share through ``common.on_policy``: one behaviour, checked for all three."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch as th
from torch import nn

from sb3_natgrad import ACKTR, KFRELAX, SMAC
from sb3_natgrad.optim import KFAC

#: small settings per algorithm (CartPole-v1, a few hundred parameters)
SMALL = {
    ACKTR: dict(policy_kwargs=dict(net_arch=[16]), n_steps=8),
    SMAC: dict(policy_kwargs=dict(net_arch=[16]), n_steps=16, batch_size=16, n_critic_updates=1),
    KFRELAX: dict(policy_kwargs=dict(net_arch=[16], cv_net_arch=[16]), n_steps=8),
}
ALGOS = list(SMALL)


def make(algo: type, **kwargs):
    return algo("MlpPolicy", "CartPole-v1", seed=0, device="cpu", **{**SMALL[algo], **kwargs})


def test_importing_the_preconditioners_imports_neither_sb3_nor_gymnasium() -> None:
    code = (
        "import sys, sb3_natgrad.optim\n"
        "loaded = [m for m in ('stable_baselines3', 'gymnasium', 'sb3_natgrad.acktr') if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
    # and the package's public names still resolve (on first use)
    result = subprocess.run(
        [sys.executable, "-c", "import sb3_natgrad; print(sb3_natgrad.ACKTR.__name__, sorted(sb3_natgrad.__all__)[0])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["ACKTR", "ACKTR"]


def test_an_unknown_top_level_name_is_an_attribute_error() -> None:
    import sb3_natgrad

    with pytest.raises(AttributeError, match="no attribute 'PPO'"):
        sb3_natgrad.PPO  # noqa: B018


@pytest.mark.parametrize("saver", ALGOS, ids=lambda a: a.__name__)
@pytest.mark.parametrize("loader", ALGOS, ids=lambda a: a.__name__)
def test_load_refuses_another_algorithms_file(saver: type, loader: type, tmp_path) -> None:
    path = tmp_path / "model.zip"
    make(saver).save(path)
    if saver is loader:
        assert type(loader.load(path, device="cpu")) is loader
        return
    with pytest.raises(ValueError, match=f"is not a {loader.__name__} model"):
        loader.load(path, device="cpu")


@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_numpy_scalars_are_numbers_and_are_stored_as_python_numbers(algo: type) -> None:
    model = make(
        algo, n_steps=np.int64(8), gamma=np.float32(0.98), ent_coef=np.float64(0.0), normalize_advantage=np.bool_(True)
    )
    assert type(model.n_steps) is int and model.n_steps == 8
    assert type(model.gamma) is float and model.gamma == pytest.approx(0.98)
    assert type(model.normalize_advantage) is bool
    model.learn(16)


@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
@pytest.mark.parametrize(
    ("name", "value"),
    [("n_steps", 0), ("n_steps", 2.5), ("gamma", 1.5), ("gamma", float("nan")), ("stats_window_size", 0), ("ent_coef", "x")],
)
def test_a_bad_shared_argument_is_named_with_the_algorithm(algo: type, name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{algo.__name__}: invalid {name}="):
        make(algo, **{name: value})


def test_acktr_words_kfac_errors_with_its_own_argument_names() -> None:
    with pytest.raises(ValueError, match=r"ACKTR: invalid kfac_clip=0"):
        make(ACKTR, kfac_clip=0)
    with pytest.raises(ValueError, match=r"ACKTR: invalid damping=-1"):
        make(ACKTR, damping=-1)
    with pytest.raises(ValueError, match=r"ACKTR: invalid stats_dtype='float16'"):
        make(ACKTR, stats_dtype="float16")
    with pytest.raises(ValueError, match=r"KFAC: invalid kl_clip=0"):
        KFAC(nn.Linear(2, 2), kl_clip=0)


@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_a_skipped_update_is_counted_once_under_one_key_and_keeps_the_log_schedule(algo: type) -> None:
    model = make(algo)
    model.learn(model.n_steps, log_interval=1)
    assert model.skipped_updates == 0 and model._iterations_in_learn == 1
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.rollout_buffer.advantages[:] = np.nan
    model.rollout_buffer.returns[:] = np.nan
    if algo is KFRELAX:
        model.rollout_buffer.used_for_update = False
    with pytest.warns(RuntimeWarning, match="was skipped"):
        model.train()
    assert model.skipped_updates == 1
    assert model.logger.name_to_value["train/skipped_updates"] == 1
    # the skipped update counts in the log schedule, so the next update's log-only values belong to it
    assert model._iterations_in_learn == 2
    assert all(th.equal(p, b) for p, b in zip(model.policy.parameters(), before))


@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_the_skip_counter_is_saved(algo: type, tmp_path) -> None:
    model = make(algo)
    model.learn(model.n_steps)
    model.skipped_updates = 3
    model.save(tmp_path / "m.zip")
    assert algo.load(tmp_path / "m.zip", device="cpu").skipped_updates == 3
