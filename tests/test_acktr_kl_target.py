"""ACKTR's KL-adaptive step size (``kl_target``): the rule, its wiring into K-FAC's learning rate, and that it steers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch as th

from sb3_natgrad import ACKTR
from sb3_natgrad.acktr.step_size import adapted_step_scale


@pytest.mark.parametrize(
    ("kl", "expected"),
    [
        (0.0041, 1.0 / 1.5),  # above 2 * target: smaller steps
        (0.0009, 1.5),  # below target / 2: larger steps
        (0.004, 1.0),  # the band's edges keep the step
        (0.001, 1.0),
        (0.002, 1.0),
        (None, 1.0),  # a skipped update (no KL) keeps it
        (math.nan, 1.0),
        (math.inf, 1.0),
    ],
)
def test_rule_divides_above_and_multiplies_below_the_band(kl: float | None, expected: float) -> None:
    assert adapted_step_scale(1.0, kl, kl_target=0.002, learning_rate=0.1) == pytest.approx(expected, rel=1e-12)


def test_rule_keeps_the_step_size_within_its_bounds() -> None:
    # learning rate 0.5: the step size 0.5 * scale stays in [1e-8, 1]
    assert adapted_step_scale(1.9, 0.0, kl_target=0.002, learning_rate=0.5) == pytest.approx(2.0)
    assert adapted_step_scale(3e-8, 1.0, kl_target=0.002, learning_rate=0.5) == pytest.approx(2e-8)
    # a learning rate of 0 (the end of a linear decay) has no bound to keep
    assert adapted_step_scale(1.0, 0.0, kl_target=0.002, learning_rate=0.0) == pytest.approx(1.5)


@pytest.mark.parametrize("bad", [0, -1e-3, math.nan, math.inf, "0.002"])
def test_bad_kl_target_is_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match="kl_target"):
        ACKTR("MlpPolicy", "Pendulum-v1", kl_target=bad)


def _pendulum(**kwargs: object) -> ACKTR:
    th.set_num_threads(1)
    return ACKTR("MlpPolicy", "Pendulum-v1", n_steps=16, seed=0, device="cpu", **kwargs)


def test_without_kl_target_the_learning_rate_is_the_schedules() -> None:
    model = _pendulum(learning_rate=0.1)
    model.learn(16 * 12)
    assert model.kl_step_scale == 1.0
    assert model.kfac.param_groups[0]["lr"] == pytest.approx(0.1)


@pytest.mark.parametrize(("kl_target", "factor"), [(1e-20, 1 / 1.5), (1e3, 1.5)])
def test_kfac_takes_the_adapted_learning_rate(kl_target: float, factor: float) -> None:
    # every update's KL is far above (below) the band, so the factor moves by 1.5 after each of the 5 updates (the
    # first three within the warm-up): the last update ran with the factor of the four before it
    model = _pendulum(learning_rate=0.1, kl_target=kl_target, warmup_steps=3)
    model.learn(16 * 5)
    assert model.kl_step_scale == pytest.approx(factor**5, rel=1e-9)
    assert model.kfac.param_groups[0]["lr"] == pytest.approx(0.1 * factor**4, rel=1e-9)


def test_the_upper_bound_holds_over_many_updates() -> None:
    model = _pendulum(learning_rate=0.1, kl_target=1e3)
    model.learn(16 * 20)
    assert model.kl_step_scale == pytest.approx(10.0)  # step size 1
    assert model.kfac.param_groups[0]["lr"] == pytest.approx(1.0)


def test_the_factor_is_saved_and_loaded(tmp_path) -> None:
    model = _pendulum(learning_rate=0.1, kl_target=1e-20)
    model.learn(16 * 4)
    model.save(tmp_path / "acktr.zip")
    loaded = ACKTR.load(tmp_path / "acktr.zip", device="cpu")
    assert loaded.kl_target == 1e-20
    assert loaded.kl_step_scale == pytest.approx(1.5**-4)


def test_kl_target_steers_the_exact_kl(monkeypatch: pytest.MonkeyPatch) -> None:
    # a trust region far too wide to bound anything (kfac_clip 0.1) and a learning rate of 0.25: without kl_target
    # the exact KL per update is far above 0.002; with it, the median over the last 150 of 300 updates is near 0.002
    kls: list[float] = []
    exact_kl = ACKTR._exact_kl

    def recording(self: ACKTR, *args: object) -> float:
        kls.append(exact_kl(self, *args))
        return kls[-1]

    monkeypatch.setattr(ACKTR, "_exact_kl", recording)
    medians = {}
    for kl_target in (None, 0.002):
        kls.clear()
        model = _pendulum(learning_rate=0.25, kfac_clip=0.1, kl_target=kl_target, max_kl=1e9)  # max_kl: KL every update
        model.learn(16 * 300)
        assert len(kls) == 300
        medians[kl_target] = float(np.median(kls[-150:]))
    assert medians[None] > 4 * 0.002
    assert 0.002 / 2 < medians[0.002] < 0.002 * 2
