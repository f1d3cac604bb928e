"""ACKTR: Stable-Baselines3 conformance, the K-FAC update against a dense natural gradient, bad input."""

from __future__ import annotations

import io
import pathlib
import zipfile

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from kfac_reference import dense_kronecker_solve, homogeneous_grad
from seeded_envs import seeded
from stable_baselines3 import A2C
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch import nn
from unsupported_envs import NestedDictEnv, TupleActionEnv

from sb3_natgrad import ACKTR, ACKTRCnn
from sb3_natgrad.optim import KFAC

SMALL = dict(policy_kwargs=dict(net_arch=[16]), n_steps=8)


# ---------------------------------------------------------------------------------------------- spaces


@pytest.mark.parametrize(
    "make_env",
    [
        lambda: IdentityEnv(10),
        lambda: IdentityEnvMultiDiscrete(5),
        lambda: IdentityEnvMultiBinary(5),
        lambda: IdentityEnvBox(eps=0.5),
    ],
    ids=["Discrete", "MultiDiscrete", "MultiBinary", "Box"],
)
def test_identity_envs_reach_threshold(make_env):
    # Box needs more steps: at 20k, 2 of 10 data seeds stopped near 63 (the mean still too steep around 0); at 40k,
    # 12 of 12 reach 100. The discrete spaces reach 100 at 20k on 8 of 8 data seeds.
    timesteps = 40_000 if isinstance(make_env().action_space, spaces.Box) else 20_000
    make_train_env = seeded(make_env, seed=0)
    env = DummyVecEnv([make_train_env] * 4)
    model = ACKTR("MlpPolicy", env, gamma=0.5, seed=0)
    model.learn(timesteps)
    evaluate_policy(model, seeded(make_env, seed=100)(), n_eval_episodes=10, reward_threshold=90, warn=False)


@pytest.mark.parametrize("share_features_extractor", [True, False])
@pytest.mark.parametrize("features_extractor_class", [None, ACKTRCnn])
def test_cnn_policy(tmp_path, share_features_extractor, features_extractor_class):
    env = FakeImageEnv(screen_height=64, screen_width=64, n_channels=1, discrete=True)
    policy_kwargs: dict = dict(
        share_features_extractor=share_features_extractor, features_extractor_kwargs=dict(features_dim=32)
    )
    if features_extractor_class is not None:
        policy_kwargs["features_extractor_class"] = features_extractor_class
    model = ACKTR("CnnPolicy", env, n_steps=16, policy_kwargs=policy_kwargs, seed=1)
    model.learn(64)
    n_conv = sum(isinstance(layer.module, nn.Conv2d) for layer in model.kfac.layers)
    assert n_conv == (3 if share_features_extractor else 6)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "cnn")
    loaded = ACKTR.load(tmp_path / "cnn")
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], action)


def test_acktr_cnn_is_the_paper_network():
    cnn = ACKTRCnn(spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8))
    convs = [m for m in cnn.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 32]
    assert [c.kernel_size for c in convs] == [(8, 8), (4, 4), (3, 3)]
    assert cnn.linear[0].in_features == 32 * 7 * 7 and cnn.features_dim == 512


def test_dict_observations():
    env = SimpleMultiObsEnv(random_start=False)
    model = ACKTR("MultiInputPolicy", env, n_steps=16, seed=0)
    model.learn(128)
    assert model.kfac.steps == 8
    assert any(isinstance(layer.module, nn.Conv2d) for layer in model.kfac.layers)


def test_gsde_and_log_std_are_first_order_but_in_the_trust_region():
    model = ACKTR(
        "MlpPolicy", "Pendulum-v1", use_sde=True, n_steps=16, warmup_steps=0, seed=0, **{"policy_kwargs": dict(net_arch=[8])}
    )
    model.learn(64)
    uncovered = {id(p) for p in model.kfac.uncovered_params}
    assert id(model.policy.log_std) in uncovered
    assert np.isfinite(model.logger.name_to_value["train/vFv"])


# ---------------------------------------------------------------------------------------------- save / load


def test_save_load_resume(tmp_path):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = ACKTR("MlpPolicy", env, seed=0, warmup_steps=2, inverse_interval=3, **SMALL)
    model.learn(200)
    obs = env.observation_space.sample()[None].repeat(5, axis=0)
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        assert "policy.optimizer.pth" in archive.namelist()

    loaded = ACKTR.load(tmp_path / "model.zip", env=env, device="cpu")
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    # identical K-FAC state (factors, eigenbases, momentum, counters)
    saved_state, loaded_state = model.kfac.state_dict(), loaded.kfac.state_dict()
    assert saved_state["kfac"] == loaded_state["kfac"]
    assert saved_state["state"].keys() == loaded_state["state"].keys()
    for key, per_param in saved_state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, th.Tensor):
                assert th.equal(value, loaded_state["state"][key][name]), (key, name)
            else:
                assert value == loaded_state["state"][key][name]
    # training resumes: both take the same next update
    for m in (model, loaded):
        m.set_random_seed(7)
        m.learn(16, reset_num_timesteps=False)
    for p, q in zip(model.policy.parameters(), loaded.policy.parameters()):
        assert th.allclose(p, q, atol=1e-6)
    assert loaded.kfac.steps == model.kfac.steps


@pytest.mark.bad_input
def test_load_refuses_a_file_of_another_algorithm(tmp_path):
    A2C("MlpPolicy", "CartPole-v1", n_steps=4).save(tmp_path / "a2c")
    with pytest.raises(ValueError, match="is not a ACKTR model"):
        ACKTR.load(tmp_path / "a2c")
    buffer = io.BytesIO((tmp_path / "a2c.zip").read_bytes())
    with pytest.raises(ValueError, match="is not a ACKTR model"):
        ACKTR.load(buffer)


@pytest.mark.bad_input
def test_load_of_a_corrupted_file_names_it(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="broken"):
        ACKTR.load(bad)


def test_a_shipped_agent_saved_before_the_curvature_record_loads_its_curvature():
    pytest.importorskip("rl_zoo3")
    from sb3_natgrad.hub import load_pretrained

    model, _ = load_pretrained("acktr", "CartPole-v1", device="cpu")
    for layer in model.kfac.layers:
        assert layer.curvature.factor_a is not None and layer.curvature.inverse is not None
        assert set(model.kfac.state[layer.weight]) <= {"momentum_buffer"}
    model.learn(64, reset_num_timesteps=False)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_set_env_and_parameters():
    model = ACKTR("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2), seed=0, **SMALL)
    model.learn(32)
    new_env = make_vec_env("CartPole-v1", n_envs=2, seed=5)
    model.set_env(new_env)
    assert model.get_env() is new_env
    model.learn(48)
    params = model.get_parameters()
    assert set(params) == {"policy", "policy.optimizer"}
    other = ACKTR("MlpPolicy", "CartPole-v1", seed=1, **SMALL)
    other.set_parameters(params, exact_match=True)
    for p, q in zip(model.policy.parameters(), other.policy.parameters()):
        assert th.equal(p, q)
    assert other.kfac.steps == model.kfac.steps
    with pytest.raises(ValueError):
        other.set_parameters({"policy": params["policy"], "not_there": {}}, exact_match=True)
    with pytest.raises(ValueError):
        model.set_env(make_vec_env("Pendulum-v1", n_envs=2))


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


# ---------------------------------------------------------------------------------------------- determinism, wrappers


def test_same_seed_same_result():
    def run() -> list[th.Tensor]:
        model = ACKTR("MlpPolicy", "CartPole-v1", seed=3, **SMALL)
        model.learn(400)
        return [p.detach().clone() for p in model.policy.parameters()]

    for p, q in zip(run(), run()):
        assert th.equal(p, q)


def test_vec_normalize_and_evaluation():
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0), gamma=0.99)
    model = ACKTR("MlpPolicy", env, seed=0, **SMALL)
    eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=1), training=False, norm_reward=False)
    callback = EvalCallback(eval_env, eval_freq=50, n_eval_episodes=1, warn=False)
    model.learn(200, callback=callback)
    assert model.get_vec_normalize_env() is env
    assert np.isfinite(callback.last_mean_reward)
    assert env.obs_rms.count > 200  # statistics were updated by the rollouts


def test_callback_returning_false_stops_training():
    class StopAfter(BaseCallback):
        def _on_step(self) -> bool:
            return self.n_calls < 10

    model = ACKTR("MlpPolicy", "CartPole-v1", seed=0, **SMALL)
    model.learn(10_000, callback=StopAfter())
    assert model.num_timesteps == 10


def test_progress_bar_and_stats_window():
    model = ACKTR("MlpPolicy", "CartPole-v1", seed=0, stats_window_size=7, **SMALL)
    model.learn(300, progress_bar=True)
    assert model.ep_info_buffer.maxlen == 7


def test_tensorboard_keys(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = ACKTR("MlpPolicy", "CartPole-v1", seed=0, tensorboard_log=str(tmp_path), warmup_steps=1, **SMALL)
    model.learn(200, log_interval=1)
    run_dirs = list(pathlib.Path(tmp_path).glob("ACKTR_*"))
    assert len(run_dirs) == 1
    accumulator = EventAccumulator(str(run_dirs[0]))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    expected = {
        "train/kl",
        "train/step_size",
        "train/natural_grad_norm",
        "train/vFv",
        "train/skipped_updates",
        "train/kfac_inverse_fallbacks",
        "train/policy_loss",
        "train/value_loss",
        "train/entropy_loss",
        "train/explained_variance",
        "train/learning_rate",
        "rollout/ep_rew_mean",
    }
    assert expected <= tags, expected - tags
    kl = [event.value for event in accumulator.Scalars("train/kl")]
    assert all(np.isfinite(kl)) and max(kl) > 0


# ---------------------------------------------------------------------------------------------- the update itself


def test_kfac_update_equals_dense_natural_gradient():
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
    model._setup_learn(12, None)
    callback = CallbackList([])
    callback.init_callback(model)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=model.n_steps)
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


@pytest.mark.bad_input
def test_unsupported_spaces_are_named():
    with pytest.raises(ValueError, match="Tuple"):
        ACKTR("MlpPolicy", TupleActionEnv())
    with pytest.raises(ValueError, match="nested observation space"):
        ACKTR("MultiInputPolicy", NestedDictEnv())


@pytest.mark.bad_input
def test_recurrent_policies_are_rejected():
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    with pytest.raises(ValueError, match="recurrent"):
        ACKTR(RecurrentActorCriticPolicy, "CartPole-v1")
    with pytest.raises(ValueError, match="recurrent"):
        ACKTR("MlpLstmPolicy", "CartPole-v1")


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(kfac_clip=0.0), "kfac_clip"),
        (dict(damping=-0.01), "damping"),
        (dict(learning_rate=-0.1), "learning_rate"),
        (dict(n_steps=0), "n_steps"),
        (dict(gamma=1.5), "gamma"),
        (dict(gae_lambda=-0.1), "gae_lambda"),
        (dict(vf_coef=-1.0), "vf_coef"),
        (dict(vf_fisher_coef=-1.0), "vf_fisher_coef"),
        (dict(max_grad_norm=0.0), "max_grad_norm"),
        (dict(momentum=1.0), "momentum"),
        (dict(stat_decay=1.0), "stat_decay"),
        (dict(stats_interval=0), "stats_interval"),
        (dict(inverse_interval=0), "inverse_interval"),
        (dict(inverse_method="qr"), "inverse_method"),
        (dict(damping_type="block"), "damping_type"),
        (dict(inverse_method="cholesky", damping_type="kronecker"), "damping_type"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(stats_batch_size=0), "stats_batch_size"),
        (dict(stats_dtype="float16"), "stats_dtype"),
        (dict(conv_factors="reduced"), "conv_factors='reduced'"),
        (dict(conv_factors={"cnn.0": "sum"}), "conv_factors"),
    ],
)
def test_bad_hyperparameters_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ACKTR("MlpPolicy", "CartPole-v1", **kwargs)


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
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=4, seed=0), gamma=0.99)
    model = ACKTR("MlpPolicy", env, seed=0, ent_coef=0.0, normalize_advantage=True, gae_lambda=0.95)
    eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=100), training=False, norm_reward=False)
    eval_env.obs_rms = env.obs_rms
    before, _ = evaluate_policy(model, eval_env, n_eval_episodes=5)
    model.learn(50_000)
    eval_env.obs_rms = env.obs_rms
    after, _ = evaluate_policy(model, eval_env, n_eval_episodes=5)
    assert after > before + 500, (before, after)  # about -1350 -> -300 (seeds 0 and 1 at 60k steps)
