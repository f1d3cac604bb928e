"""ACKTR on Ray RLlib: the learner's step against SB3's ACKTR, checkpoints, several learners, CartPole, bad input."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("ray.rllib")

import ray
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from sb3_natgrad.rllib import ACKTRConfig

pytestmark = pytest.mark.xdist_group("ray")

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
ACT_SPACE = gym.spaces.Discrete(2)
SPACES = {"default_policy": (OBS_SPACE, ACT_SPACE)}
HIDDEN = [16, 16]
N = 48


def small_config(**training) -> ACKTRConfig:
    options = {"warmup_steps": 0, "inverse_interval": 1, **training}
    return (
        ACKTRConfig()
        .environment(observation_space=OBS_SPACE, action_space=ACT_SPACE)
        .rl_module(model_config={"fcnet_hiddens": HIDDEN, "fcnet_activation": "tanh", "vf_share_layers": False})
        .training(**options)
    )


def fixed_batches(n_batches: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Observations, actions, advantages and value targets of a fake rollout (no loss mask)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        out.append(
            {
                Columns.OBS: rng.normal(size=(N, 4)).astype(np.float32),
                Columns.ACTIONS: rng.integers(0, 2, size=N),
                "advantages": rng.normal(size=N).astype(np.float32),
                "value_targets": rng.normal(size=N).astype(np.float32),
                Columns.ACTION_DIST_INPUTS: np.zeros((N, 2), np.float32),
                Columns.ACTION_LOGP: np.full(N, np.log(0.5), np.float32),
            }
        )
    return out


def learner_update(learner, batch: dict[str, np.ndarray], seed: int) -> None:
    torch.manual_seed(seed)
    learner.update(batch=MultiAgentBatch({"default_policy": SampleBatch(dict(batch))}, env_steps=N))


def rllib_linears(module) -> dict[str, torch.nn.Linear]:
    """The RLModule's Linear layers by role: actor hidden layers, critic hidden layers, policy and value heads."""
    linears = [(name, m) for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
    roles = {"actor_encoder": [], "critic_encoder": [], "pi": [], "vf": []}
    for name, layer in linears:
        role = next(r for r in ("actor_encoder", "critic_encoder") if r in name) if "encoder" in name else name.split(".")[0]
        roles[role].append(layer)
    return {
        **{f"pi{i}": m for i, m in enumerate(roles["actor_encoder"])},
        **{f"vf{i}": m for i, m in enumerate(roles["critic_encoder"])},
        "action": roles["pi"][0],
        "value": roles["vf"][0],
    }


def sb3_linears(policy) -> dict[str, torch.nn.Linear]:
    actor = [m for m in policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    critic = [m for m in policy.mlp_extractor.value_net if isinstance(m, torch.nn.Linear)]
    return {
        **{f"pi{i}": m for i, m in enumerate(actor)},
        **{f"vf{i}": m for i, m in enumerate(critic)},
        "action": policy.action_net,
        "value": policy.value_net,
    }


@pytest.mark.parametrize("kl_target", [None, 0.002])
def test_rllib_learner_step_equals_sb3_acktr_step(kl_target):
    """
    The two halves of the package take the same K-FAC step on the same batch and weights; with ``kl_target`` (and a
    trust region too wide to bind, so the learning rate sets the step) also the same adapted step sizes.
    """
    from stable_baselines3.common.logger import configure

    from sb3_natgrad import ACKTR

    options = {} if kl_target is None else {"kl_target": kl_target, "kfac_clip": 10.0}
    learner = small_config(**options).build_learner(spaces=SPACES)
    module = learner.module["default_policy"]
    model = ACKTR(
        "MlpPolicy",
        "CartPole-v1",
        n_steps=N,
        learning_rate=0.25,
        warmup_steps=0,
        inverse_interval=1,
        policy_kwargs={"net_arch": {"pi": HIDDEN, "vf": HIDDEN}, "activation_fn": torch.nn.Tanh},
        device="cpu",
        **options,
    )
    model.set_logger(configure(None, []))
    ours, theirs = rllib_linears(module), sb3_linears(model.policy)
    assert set(ours) == set(theirs) == {"pi0", "pi1", "vf0", "vf1", "action", "value"}
    with torch.no_grad():
        for key, layer in ours.items():
            theirs[key].weight.copy_(layer.weight)
            theirs[key].bias.copy_(layer.bias)
    buffer = model.rollout_buffer
    for k, batch in enumerate(fixed_batches(3)):
        # SB3's buffer hands the batch over in a random order (numpy's global generator); the sampled Fisher
        # actions are drawn row by row, so RLlib gets the rows in the same order
        np.random.seed(k)
        order = np.random.permutation(N)
        learner_update(learner, {key: value[order] for key, value in batch.items()}, seed=100 + k)
        buffer.reset()
        buffer.observations[:, 0] = batch[Columns.OBS]
        buffer.actions[:, 0, 0] = batch[Columns.ACTIONS]
        buffer.advantages[:, 0] = batch["advantages"]
        buffer.returns[:, 0] = batch["value_targets"]
        buffer.full, buffer.pos = True, N
        np.random.seed(k)
        torch.manual_seed(100 + k)
        model.train()
    assert learner.kfac("default_policy").steps == model.kfac.steps == 3
    if kl_target is not None:
        # the factor moved on both sides (so the later steps differ from those without it), and by the same rule
        assert model.kl_step_scale != 1.0
        assert learner.kl_step_scale["default_policy"] == pytest.approx(model.kl_step_scale, rel=1e-6)
        lr = learner.get_optimizer("default_policy").param_groups[0]["lr"]
        assert lr == pytest.approx(0.25 * model.kl_step_scale, rel=1e-6)
    for key, layer in ours.items():
        torch.testing.assert_close(theirs[key].weight, layer.weight, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(theirs[key].bias, layer.bias, rtol=1e-4, atol=1e-6)
    # the weights moved: the comparison is not between two untouched networks
    assert not torch.allclose(module.pi.net.mlp[0].weight, torch.zeros_like(module.pi.net.mlp[0].weight))


def test_loss_mask_rows_enter_neither_the_loss_nor_the_factors():
    batch = fixed_batches(1)[0]
    mask = np.ones(N, bool)
    mask[::5] = False
    garbage = {**batch, "advantages": np.where(mask, batch["advantages"], 1e6).astype(np.float32)}
    garbage[Columns.OBS] = np.where(mask[:, None], batch[Columns.OBS], 1e3).astype(np.float32)
    learner = small_config().build_learner(spaces=SPACES)
    learner_update(learner, {**garbage, Columns.LOSS_MASK: mask}, seed=5)
    kfac = learner.kfac("default_policy")
    # the input factor of each first layer (actor and critic encoders) is the kept observations' second moment
    x = torch.as_tensor(batch[Columns.OBS][mask], dtype=torch.float64)
    rows = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    expected_a = (rows.T @ rows / len(x)).float()
    first_layers = [layer for layer in kfac.layers if layer.module.in_features == 4]
    assert len(first_layers) == 2
    for layer in first_layers:
        torch.testing.assert_close(layer.curvature.factor_a, expected_a, rtol=1e-5, atol=1e-6)
    # the masked rows' huge advantages did not reach the step
    assert all(torch.isfinite(p).all() and p.abs().max() < 10 for p in learner.module["default_policy"].parameters())


def exact_categorical_kl(old_logits: torch.Tensor, new_logits: torch.Tensor) -> float:
    old, new = torch.log_softmax(old_logits.double(), -1), torch.log_softmax(new_logits.double(), -1)
    return float((old.exp() * (old - new)).sum(-1).mean())


@pytest.mark.parametrize("kl_target", [1e-7, 10.0])
def test_kl_target_adapts_the_learning_rate_by_the_exact_kl(kl_target):
    """Each step's factor follows the rule of adapted_step_scale on the KL of the step, computed here in float64."""
    from sb3_natgrad.acktr.step_size import adapted_step_scale

    learner = small_config(kl_target=kl_target, kfac_clip=10.0, lr=0.05).build_learner(spaces=SPACES)
    module = learner.module["default_policy"]
    obs = None
    expected, seen_kls = 1.0, []
    for k, batch in enumerate(fixed_batches(4, seed=2)):
        obs = torch.as_tensor(batch[Columns.OBS])
        with torch.no_grad():
            before = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        learner_update(learner, batch, seed=k)
        with torch.no_grad():
            after = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
        kl = exact_categorical_kl(before, after)
        seen_kls.append(kl)
        expected = adapted_step_scale(expected, kl, kl_target, 0.05)
        assert learner.kl_step_scale["default_policy"] == pytest.approx(expected, rel=1e-9)
        assert learner.get_optimizer("default_policy").param_groups[0]["lr"] == pytest.approx(0.05 * expected, rel=1e-9)
    # the test exercised the rule's branch it was set up for: every KL above 2 * 1e-7, every one below 10 / 2
    if kl_target < 1:
        assert min(seen_kls) > 2 * kl_target and expected == pytest.approx(1.5**-4)
    else:
        assert max(seen_kls) < kl_target / 2 and expected == pytest.approx(1.5**4)


def test_kl_target_factor_survives_a_checkpoint(tmp_path: pathlib.Path):
    batches = fixed_batches(3, seed=3)
    learner = small_config(kl_target=1e-5, kfac_clip=10.0).build_learner(spaces=SPACES)
    for k, batch in enumerate(batches[:2]):
        learner_update(learner, batch, seed=k)
    learner.save_to_path(str(tmp_path / "learner"))
    restored = small_config(kl_target=1e-5, kfac_clip=10.0).build_learner(spaces=SPACES)
    restored.restore_from_path(str(tmp_path / "learner"))
    assert restored.kl_step_scale["default_policy"] == pytest.approx(learner.kl_step_scale["default_policy"])
    assert restored.kl_step_scale["default_policy"] < 1.0
    assert restored.get_optimizer("default_policy").param_groups[0]["lr"] == pytest.approx(
        learner.get_optimizer("default_policy").param_groups[0]["lr"]
    )
    learner_update(learner, batches[2], seed=2)
    learner_update(restored, batches[2], seed=2)
    for a, b in zip(learner.module["default_policy"].parameters(), restored.module["default_policy"].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_checkpoint_restore_then_next_update_equals_uninterrupted(tmp_path: pathlib.Path):
    batches = fixed_batches(4, seed=1)
    straight = small_config(inverse_interval=2).build_learner(spaces=SPACES)
    for k, batch in enumerate(batches[:3]):
        learner_update(straight, batch, seed=k)
    straight.save_to_path(str(tmp_path / "learner"))
    learner_update(straight, batches[3], seed=3)

    restored = small_config(inverse_interval=2).build_learner(spaces=SPACES)
    restored.restore_from_path(str(tmp_path / "learner"))
    assert restored.kfac("default_policy").steps == 3
    learner_update(restored, batches[3], seed=3)
    for a, b in zip(straight.module["default_policy"].parameters(), restored.module["default_policy"].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(straight.kfac("default_policy").layers, restored.kfac("default_policy").layers):
        torch.testing.assert_close(a.curvature.factor_a, b.curvature.factor_a, rtol=0, atol=0)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("training", "match"),
    [
        ({"kfac_clip": 0.0}, "kfac_clip"),
        ({"num_epochs": 3}, "num_epochs=3"),
        ({"minibatch_size": 32}, "minibatch_size=32"),
        ({"use_kl_loss": True}, "use_kl_loss"),
        ({"stats_interval": 0}, "stats_interval"),
        ({"conv_factors": "sideways"}, "conv_factors"),
        ({"vf_fisher_coef": -1.0}, "vf_fisher_coef=-1.0"),
        ({"max_consecutive_skips": 0}, "max_consecutive_skips=0"),
        ({"kl_target": 0.0}, "kl_target=0"),
        ({"kl_target": "small"}, "kl_target='small'"),
        ({"damping": 0.0}, "damping=0 with weight_decay=0"),
    ],
)
def test_bad_config_values_are_named(training, match):
    with pytest.raises(ValueError, match=match):
        small_config(**training).validate()


@pytest.mark.bad_input
def test_recurrent_module_is_refused():
    config = small_config().rl_module(model_config={"use_lstm": True})
    with pytest.raises(ValueError, match=r"feed-forward RLModules only.*use_lstm=True"):
        config.validate()


@pytest.mark.bad_input
def test_old_api_stack_is_refused():
    config = small_config().api_stack(enable_rl_module_and_learner=False, enable_env_runner_and_connector_v2=False)
    with pytest.raises(ValueError, match="new API stack only"):
        config.validate()


@pytest.mark.bad_input
def test_async_inverse_with_several_learners_is_refused():
    with pytest.raises(ValueError, match="async_inverse=True with num_learners=2"):
        small_config(async_inverse=True).learners(num_learners=2).validate()


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "space",
    [gym.spaces.MultiBinary(3), gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))],
    ids=["MultiBinary", "Tuple"],
)
def test_unsupported_action_space_is_named(space):
    config = small_config().environment(observation_space=OBS_SPACE, action_space=space)
    with pytest.raises(
        ValueError, match=r"supports Discrete, MultiDiscrete and 1-D Box action spaces, got " + space.__class__.__name__
    ):
        config.build_learner(spaces={"default_policy": (OBS_SPACE, space)})


@pytest.mark.bad_input
def test_missing_ray_names_the_extra():
    code = "import sys; sys.modules['ray'] = None; sys.modules['ray.rllib'] = None; import sb3_natgrad.rllib"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert 'pip install "sb3-natgrad[rllib]"' in result.stderr
    # and the package itself does not import Ray
    code = "import sys, sb3_natgrad; assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------- on a Ray cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024**2,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.mark.bad_input
@pytest.mark.timeout(300)
def test_more_actors_than_cpus_fails_before_hanging(cluster):
    config = small_config().environment("CartPole-v1").env_runners(num_env_runners=2).learners(num_learners=1)
    with pytest.raises(ValueError, match=r"needs 3 CPUs .* the Ray cluster has 2"):
        config.build_algo()


def cartpole_config(**kwargs) -> ACKTRConfig:
    return (
        ACKTRConfig()
        .environment("CartPole-v1")
        .env_runners(num_envs_per_env_runner=8)
        .training(normalize_rewards=True, train_batch_size=160, **kwargs)
        .debugging(seed=0)
    )


@pytest.mark.timeout(300)
def test_two_learners_keep_identical_weights_and_factors(cluster):
    # kl_target: each learner adapts its step size to the KL of the whole batch, not of its own shard
    config = cartpole_config(kl_target=1e-4).env_runners(num_env_runners=0).learners(num_learners=2)
    algo = config.build_algo()
    try:
        for _ in range(4):
            algo.train()

        def snapshot(learner):
            kfac = learner.kfac("default_policy")
            return (
                [p.detach().cpu().numpy().copy() for p in learner.module["default_policy"].parameters()],
                [(layer.curvature.factor_a.cpu().numpy(), layer.curvature.factor_g.cpu().numpy()) for layer in kfac.layers],
                kfac.steps,
                learner._reward_normalizer().get_state(),
                learner.kl_step_scale["default_policy"],
            )

        results = [result.get() for result in algo.learner_group.foreach_learner(snapshot)]
        (params0, factors0, steps0, scale0, kl_scale0), (params1, factors1, steps1, scale1, kl_scale1) = results
    finally:
        algo.stop()
    assert steps0 == steps1 == 4
    assert kl_scale0 == kl_scale1 != 1.0
    assert scale0 == scale1 and scale0["count"] > 0  # one reward scale for the whole batch
    for a, b in zip(params0, params1):
        np.testing.assert_array_equal(a, b)
    for (a0, g0), (a1, g1) in zip(factors0, factors1):
        np.testing.assert_array_equal(a0, a1)
        np.testing.assert_array_equal(g0, g1)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_cartpole_reaches_475(cluster):
    algo = cartpole_config().env_runners(num_env_runners=1).build_algo()
    try:
        best = -np.inf
        for _ in range(1500):
            result = algo.train()
            best = max(best, result["env_runners"].get("episode_return_mean", -np.inf))
            if best >= 475:
                break
    finally:
        algo.stop()
    assert best >= 475, best


@pytest.mark.timeout(300)
def test_algorithm_checkpoint_restores_kfac_and_reward_scale(cluster, tmp_path: pathlib.Path):
    from sb3_natgrad.rllib import ACKTR

    algo = cartpole_config().env_runners(num_env_runners=0).build_algo()
    try:
        for _ in range(3):
            algo.train()
        algo.save_to_path(str(tmp_path / "ckpt"))
        learner = algo.learner_group._learner
        before = [layer.curvature.factor_g.clone() for layer in learner.kfac("default_policy").layers]
        scale = learner._reward_normalizer().get_state()
    finally:
        algo.stop()
    restored = ACKTR.from_checkpoint(str(tmp_path / "ckpt"))
    try:
        learner = restored.learner_group._learner
        kfac = learner.kfac("default_policy")
        assert kfac.steps == 3
        for layer, factor_g in zip(kfac.layers, before):
            torch.testing.assert_close(layer.curvature.factor_g, factor_g)
        assert learner._reward_normalizer().get_state() == pytest.approx(scale)
        restored.train()  # and it trains on
        assert kfac.steps == 4
    finally:
        restored.stop()
