"""MinAtar support: the paper's network, the policies of the three algorithms, env registration and its errors."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from sb3_natgrad import ACKTR, KFRELAX, SMAC, MinAtarCnn, register_minatar_envs
from sb3_natgrad.common import minatar
from sb3_natgrad.kfrelax.policies import KFRELAXMinAtarPolicy

GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")


@pytest.fixture
def breakout():
    pytest.importorskip("minatar")
    register_minatar_envs()
    return make_vec_env("MinAtar/Breakout-v1", n_envs=2, seed=0)


def test_network_is_the_minatar_papers():
    space = spaces.Box(0, 1, shape=(10, 10, 4), dtype=bool)  # what MinAtar declares
    net = MinAtarCnn(space)
    conv, linear = net.cnn[0], net.linear[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (4, 16, (3, 3), (1, 1))
    assert (linear.in_features, linear.out_features) == (16 * 8 * 8, 128)
    obs = th.as_tensor(np.stack([space.sample() for _ in range(5)]))
    out = net(obs)
    assert out.shape == (5, 128) and (out >= 0).all()
    # channels last: the same grid given channels-first to a channels_last=False net gives the same features
    first = MinAtarCnn(spaces.Box(0.0, 1.0, shape=(4, 10, 10)), channels_last=False)
    first.load_state_dict(net.state_dict())
    th.testing.assert_close(first(obs.permute(0, 3, 1, 2).float()), out)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "space", [spaces.Box(0.0, 1.0, shape=(10, 4)), spaces.Discrete(3), spaces.Box(0.0, 1.0, shape=(2, 2, 4))]
)
def test_network_refuses_other_spaces(space):
    with pytest.raises(ValueError, match="MinAtarCnn"):
        MinAtarCnn(space)


@pytest.mark.parametrize("algo", [ACKTR, SMAC, KFRELAX])
def test_all_three_algorithms_train_with_minatar_policy(algo, breakout):
    model = algo("MinAtarPolicy", breakout, n_steps=16, seed=0)
    assert isinstance(model.policy.features_extractor, MinAtarCnn)
    # the policy and value heads read the 128 features directly, as in the MinAtar paper
    assert model.policy.action_net.in_features == 128 and model.policy.value_net.in_features == 128
    before = [p.detach().clone() for p in model.policy.features_extractor.parameters()]
    model.learn(64)
    after = list(model.policy.features_extractor.parameters())
    assert any(not th.equal(a, b) for a, b in zip(before, after))  # the network trains
    action, _ = model.predict(breakout.reset(), deterministic=True)
    assert action.shape == (2,)


def test_kfrelax_control_variate_reads_the_detached_features(breakout):
    model = KFRELAX("MinAtarPolicy", breakout, n_steps=8, seed=0)
    assert isinstance(model.policy, KFRELAXMinAtarPolicy)
    assert model.policy.resolved_cv_input == "features"


def test_acktr_covers_the_convolution(breakout):
    model = ACKTR("MinAtarPolicy", breakout)
    names = [layer.name for layer in model.kfac.layers]
    assert names[:2] == ["features_extractor.cnn.0", "features_extractor.linear.0"]


def test_registration_uses_the_packages_entry_point_and_is_idempotent():
    pytest.importorskip("minatar")
    register_minatar_envs()
    register_minatar_envs()
    for game in GAMES:
        spec = gym.spec(f"MinAtar/{game}-v1")
        assert spec.entry_point == "minatar.gym:BaseEnv"


@pytest.mark.bad_input
def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(gym, "registry", {k: v for k, v in gym.registry.items() if not k.startswith("MinAtar/")})
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kwargs: [])
    with pytest.raises(ModuleNotFoundError, match=r'pip install "sb3-natgrad\[minatar\]"'):
        minatar.ensure_registered("MinAtar/Breakout-v1")
    minatar.ensure_registered("CartPole-v1")  # other ids are left alone


@pytest.mark.bad_input
def test_zoo_train_reports_the_missing_extra_in_one_line(monkeypatch, capsys):
    from sb3_natgrad.zoo import cli

    monkeypatch.setattr(gym, "registry", {k: v for k, v in gym.registry.items() if not k.startswith("MinAtar/")})
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kwargs: [])
    assert cli.main(["train", "--algo", "acktr", "--env", "MinAtar/Breakout-v1", "-n", "100"]) != 0
    err = capsys.readouterr().err
    assert 'pip install "sb3-natgrad[minatar]"' in err and "Traceback" not in err


def test_importing_the_package_does_not_import_minatar():
    code = "import sys, sb3_natgrad, sb3_natgrad.zoo.cli; print('minatar' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_zoo_train_runs_a_minatar_entry(tmp_path, monkeypatch):
    pytest.importorskip("minatar")
    pytest.importorskip("rl_zoo3")
    from sb3_natgrad.zoo import cli

    monkeypatch.chdir(tmp_path)
    argv = ["train", "--algo", "acktr", "--env", "MinAtar/Breakout-v1", "-n", "1280", "--seed", "0", "-f", "logs"]
    assert cli.main([*argv, "-params", "n_envs:2", "warmup_steps:1"]) == 0
    assert (tmp_path / "logs" / "acktr" / "MinAtar-Breakout-v1_1" / "MinAtar-Breakout-v1.zip").is_file()


@pytest.mark.slow
def test_acktr_learns_breakout_from_pixels():
    """
    The packaged MinAtar entry (32 envs x 20 steps, lr 0.25 decayed, vf_fisher_coef 2) on Breakout, seed 0: a
    100-episode training mean of 4 within 2e5 steps. For scale (benchmarks/results/pixels, seed 0): a random policy
    scores about 0.5, rl-zoo3's Atari A2C 2.9 after 2e5 steps and 5.2 after 2e6.
    """
    pytest.importorskip("minatar")
    register_minatar_envs()
    env = make_vec_env("MinAtar/Breakout-v1", n_envs=32, seed=0)
    budget = 200_000
    model = ACKTR(
        "MinAtarPolicy",
        env,
        n_steps=20,
        # the entry's lin_0.25 over its 5e6 steps, of which this test runs the first 2e5 (p: progress remaining)
        learning_rate=lambda p: 0.25 * (1 - (1 - p) * budget / 5e6),
        vf_fisher_coef=2.0,
        seed=0,
    )
    model.learn(budget)
    mean = float(np.mean([info["r"] for info in model.ep_info_buffer]))
    assert mean >= 4.0, mean
