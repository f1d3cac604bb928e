"""
ACKTR: K-FAC over the policy's convolutions, the K-FAC update against a dense natural gradient, K-FAC's own settings,
bad input, learning. (Stable-Baselines3 conformance is checked for the three algorithms in test_sb3_conformance.py.)
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import numpy as np
import pytest
import torch as th
from algorithms import SMALL as SMALL_SETTINGS
from gymnasium import spaces
from kfac_reference import dense_kronecker_solve, homogeneous_grad
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv, IdentityEnv, SimpleMultiObsEnv
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.torch_layers import NatureCNN
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch import nn

from sb3_natgrad import ACKTR, ACKTRCnn
from sb3_natgrad.optim import KFAC

SMALL = SMALL_SETTINGS[ACKTR]


# ---------------------------------------------------------------------------------------------- what K-FAC covers


@pytest.mark.parametrize("share_features_extractor", [True, False])
def test_kfac_preconditions_every_convolution_and_the_papers_cnn_trains_and_loads(
    tmp_path: pathlib.Path, share_features_extractor: bool
) -> None:
    # CnnPolicy's SB3 conformance (training every convolution, predictions after load) is checked with SB3's NatureCNN
    # in test_sb3_conformance.py; here: K-FAC covers the three convolutions of either extractor (of both extractors
    # when the critic has its own), and ACKTR's own extractor trains and loads.
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True)
    for features_extractor_class in (NatureCNN, ACKTRCnn):
        policy_kwargs = dict(
            share_features_extractor=share_features_extractor,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=dict(features_dim=32),
        )
        model = ACKTR("CnnPolicy", env, n_steps=16, policy_kwargs=policy_kwargs, seed=1)
        n_conv = sum(isinstance(layer.module, nn.Conv2d) for layer in model.kfac.layers)  # (fixed when K-FAC is built)
        assert n_conv == (3 if share_features_extractor else 6), features_extractor_class
    model.learn(64)
    assert model.kfac.steps == 4
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "cnn")
    loaded = ACKTR.load(tmp_path / "cnn")
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], action)


def test_kfac_preconditions_the_cnn_of_an_image_entry_of_dict_observations() -> None:
    # (training with Dict observations: test_sb3_conformance.py)
    model = ACKTR("MultiInputPolicy", SimpleMultiObsEnv(random_start=False), n_steps=16, seed=0)
    assert any(isinstance(layer.module, nn.Conv2d) for layer in model.kfac.layers)


def test_acktr_cnn_is_the_paper_network():
    cnn = ACKTRCnn(spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8))
    convs = [m for m in cnn.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 32]
    assert [c.kernel_size for c in convs] == [(8, 8), (4, 4), (3, 3)]
    assert cnn.linear[0].in_features == 32 * 7 * 7 and cnn.features_dim == 512


def test_gsde_and_log_std_are_first_order_but_in_the_trust_region():
    model = ACKTR(
        "MlpPolicy", "Pendulum-v1", use_sde=True, n_steps=16, warmup_steps=0, seed=0, **{"policy_kwargs": dict(net_arch=[8])}
    )
    model.learn(64)
    uncovered = {id(p) for p in model.kfac.uncovered_params}
    assert id(model.policy.log_std) in uncovered
    assert np.isfinite(model.logger.name_to_value["train/vFv"])


# ---------------------------------------------------------------------------------------------- save / load, copies


def test_a_shipped_agent_saved_before_the_curvature_record_loads_its_curvature():
    pytest.importorskip("rl_zoo3")
    from sb3_natgrad.hub import load_pretrained

    model, _ = load_pretrained("acktr", "CartPole-v1", device="cpu")
    for layer in model.kfac.layers:
        assert layer.curvature.factor_a is not None and layer.curvature.inverse is not None
        assert set(model.kfac.state[layer.weight]) <= {"momentum_buffer"}
    model.learn(64, reset_num_timesteps=False)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_deepcopy_of_policy_keeps_working_optimizer():
    import copy

    model = ACKTR("MlpPolicy", "CartPole-v1", seed=0, **SMALL)
    model.learn(16)
    clone = copy.deepcopy(model.policy)
    assert isinstance(clone.optimizer, KFAC)
    assert clone.optimizer.layers[0].module is not model.kfac.layers[0].module
    obs = th.as_tensor(np.zeros((3, 4), dtype=np.float32))
    clone.set_training_mode(True)
    clone.evaluate_actions(obs, th.zeros(3))  # the hooks of the clone point at the clone


# ---------------------------------------------------------------------------------------------- the update itself


def test_kfac_update_equals_dense_natural_gradient(one_rollout: Callable[[ACKTR], None]) -> None:
    """One ACKTR update (no warm-up, no momentum) against block-diagonal (A kron G + lambda I)^-1 g from per-sample loops."""
    env = DummyVecEnv([lambda: IdentityEnv(3)] * 2)
    damping, lr, kfac_clip = 0.05, 0.5, 1e-3
    model = ACKTR(
        "MlpPolicy",
        env,
        learning_rate=lr,
        n_steps=6,
        warmup_steps=0,
        momentum=0.0,
        damping=damping,
        kfac_clip=kfac_clip,
        inverse_interval=1,
        ent_coef=0.01,
        vf_coef=0.25,
        policy_kwargs=dict(net_arch=dict(pi=[5], vf=[4])),
        seed=0,
    )
    # Collect one rollout without training, then replay the update with the RNG states fixed.
    one_rollout(model)
    policy = model.policy
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}

    np_state = np.random.get_state()
    th.manual_seed(123)
    model.train()
    after = {name: p.detach().clone() for name, p in policy.named_parameters()}

    # ---- dense reference on a fresh copy of the policy with the old parameters (SB3 casts observations to
    # float32, so the network runs in float32; the factors and solves are done in float64)
    ref = type(policy)(**policy._get_constructor_parameters())
    ref.load_state_dict(before, strict=False)
    ref.set_training_mode(True)
    np.random.set_state(np_state)
    data = next(model.rollout_buffer.get(batch_size=None))  # same permutation as in train()
    obs = data.observations
    actions = data.actions.long().flatten()
    th.manual_seed(123)
    from sb3_natgrad.common.distributions import distribution_and_values

    layers = [m for m in ref.modules() if isinstance(m, nn.Linear)]
    outputs: dict[nn.Module, th.Tensor] = {}
    inputs: dict[nn.Module, th.Tensor] = {}

    def keep_io(mod: nn.Module, inp: tuple, out: th.Tensor) -> None:
        inputs[mod] = inp[0].detach()
        outputs[mod] = out

    hooks = [m.register_forward_hook(keep_io) for m in layers]
    dist, values = distribution_and_values(ref, obs)
    for h in hooks:
        h.remove()
    values = values.flatten()
    sampled = dist.sample()  # same RNG draws as ACKTR: policy sample, then the value noise
    noise = th.randn_like(values)
    per_sample_loglik = dist.log_prob(sampled) - ((values - (values.detach() + noise)) ** 2) / 2.0
    n = obs.shape[0]
    blocks = []
    for layer in layers:
        rows = th.cat([inputs[layer], th.ones(n, 1)], dim=1).double()
        a = rows.t() @ rows / n
        g = 0.0
        for i in range(n):
            (grad_out,) = th.autograd.grad(per_sample_loglik[i], outputs[layer], retain_graph=True)
            gamma = grad_out[i].double()
            g = g + th.outer(gamma, gamma)
        blocks.append((layer, a, g / n))
    log_prob = dist.log_prob(actions)
    loss = -(data.advantages * log_prob).mean() - 0.01 * dist.entropy().mean() + 0.25 * ((data.returns - values) ** 2).mean()
    ref.zero_grad()
    loss.backward()
    natural = {}
    vfv = 0.0
    for layer, a, g in blocks:
        mat = homogeneous_grad(layer).double()
        nat = dense_kronecker_solve(a, g, mat, damping)
        natural[layer] = nat
        vfv += float((nat * mat).sum())
    vfv *= lr**2
    nu = min(1.0, float(np.sqrt(kfac_clip / vfv)))
    assert model.kfac.last_step_info["nu"] == pytest.approx(nu, rel=1e-4)
    name_of = {m: name for name, m in ref.named_modules()}
    for layer, nat in natural.items():
        name = name_of[layer]
        got = th.cat(
            [(before[f"{name}.weight"] - after[f"{name}.weight"]), (before[f"{name}.bias"] - after[f"{name}.bias"])[:, None]],
            1,
        )
        th.testing.assert_close(got.double(), lr * nu * nat, rtol=2e-3, atol=1e-6)


# ---------------------------------------------------------------------------------------------- robustness, bad input


@pytest.mark.bad_input
def test_non_finite_loss_skips_update_and_keeps_parameters_finite():
    model = ACKTR("MlpPolicy", "CartPole-v1", seed=0, **SMALL)
    model.learn(32)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.rollout_buffer.returns[:] = np.nan
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        model.train()
    for p, q in zip(before, model.policy.parameters()):
        assert th.equal(p, q)
    model.learn(32, reset_num_timesteps=False)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_adaptive_gauss_newton_tracks_bellman_error():
    model = ACKTR("MlpPolicy", "CartPole-v1", adaptive_gauss_newton=True, seed=0, **SMALL)
    model.learn(160)
    assert model.bellman_error_var is not None and model.bellman_error_var > 0
    assert "train/bellman_error_std" in model.logger.name_to_value


@pytest.mark.parametrize("stats_dtype", ["bfloat16", th.bfloat16])
def test_stats_dtype_reaches_kfac_and_survives_save_load(tmp_path, stats_dtype):
    model = ACKTR("MlpPolicy", "CartPole-v1", n_steps=8, warmup_steps=1, stats_dtype=stats_dtype, seed=0)
    assert model.kfac.stats_dtype == th.bfloat16
    model.learn(160)
    assert model.kfac.layers[0].curvature.factor_a.dtype == th.float32
    model.save(tmp_path / "model")
    loaded = ACKTR.load(tmp_path / "model", env=model.get_env())
    assert loaded.kfac.stats_dtype == th.bfloat16
    loaded.learn(80)


def test_conv_factors_reach_kfac_and_survive_save_load(tmp_path):
    pytest.importorskip("minatar")
    from sb3_natgrad import register_minatar_envs

    register_minatar_envs()
    env = make_vec_env("MinAtar/Breakout-v1", n_envs=2, seed=0)
    model = ACKTR("MinAtarPolicy", env, n_steps=8, warmup_steps=1, conv_factors="reduce", seed=0)
    assert model.kfac.conv_factors == {"features_extractor.cnn.0": "reduce"}
    model.learn(64)
    model.save(tmp_path / "model")
    loaded = ACKTR.load(tmp_path / "model", env=env)
    assert loaded.conv_factors == "reduce"
    assert loaded.kfac.conv_factors == {"features_extractor.cnn.0": "reduce"}
    th.testing.assert_close(loaded.kfac.layers[0].curvature.factor_a, model.kfac.layers[0].curvature.factor_a)
    loaded.learn(32)


def test_conv_factors_is_a_no_op_without_convolutions():
    model = ACKTR("MlpPolicy", "CartPole-v1", conv_factors="reduce")
    assert model.kfac.conv_factors == {}


# ---------------------------------------------------------------------------------------------- learning


def test_cartpole_reaches_475():
    # Rewards normalised as in hyperparams/acktr.yml: with raw returns the critic's term dominates the joint trust
    # region (see the ACKTR docstring). Checked with seeds 0-5: all reach 500 at 100k steps.
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=8, seed=0), norm_obs=False, norm_reward=True)
    model = ACKTR("MlpPolicy", env, ent_coef=0.0, seed=0)
    model.learn(100_000)
    mean, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=4, seed=100), n_eval_episodes=20)
    assert mean >= 475, mean


def test_pendulum_improves():
    # The packaged Pendulum-v1 values (hyperparams/acktr.yml: 4 envs x 16 steps, learning rate 0.06) over three seeds:
    # one seed's 50k-step outcome changes with the CPU and the thread count (seed 0 with the defaults: -300 on one
    # machine, no progress on another), the median of three held on both (improvements 578 and 805 with 2 and 1 threads).
    improvements = []
    for seed in (0, 1, 2):
        env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=4, seed=seed), gamma=0.99)
        model = ACKTR(
            "MlpPolicy",
            env,
            seed=seed,
            n_steps=16,
            learning_rate=0.06,
            ent_coef=0.0,
            inverse_interval=1,
            vf_fisher_coef=2.0,
            normalize_advantage=True,
        )
        eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=100), training=False, norm_reward=False)
        eval_env.obs_rms = env.obs_rms
        before, _ = evaluate_policy(model, eval_env, n_eval_episodes=5)
        model.learn(50_000)
        eval_env.obs_rms = env.obs_rms
        after, _ = evaluate_policy(model, eval_env, n_eval_episodes=5)
        improvements.append(after - before)
    assert np.median(improvements) > 500, improvements  # from about -1350 (random) to -850 or better
