"""
Stable-Baselines3 conformance of ACKTR, SMAC and KFRELAX: one test per behaviour, parametrised over the three.

Each behaviour runs on a per-class table of small settings (the algorithms' defaults are sized for real tasks:
SMAC's 1000-step rollouts and 10 critic epochs would make every check here slow) and, where an algorithm has
variants that take another code path (SMAC's Fisher estimators, KFRELAX's control-variate optimizers), on each of
them. Expectations differ per class only where the algorithms do: the objects their files hold, the keys they log,
the counters of their preconditioners, their arguments, and the steps each needs on the identity envs.

What only one algorithm has (ACKTR's K-FAC over convolutions, SMAC's actor/critic split, KFRELAX's control variate,
the dense float64 cross-checks, learning CartPole) stays in test_acktr.py, test_smac.py and test_kfrelax.py; what
``common.on_policy`` adds to SB3 (bad input, exact resumption, ...) is in test_on_policy.py.
"""

from __future__ import annotations

import inspect
import io
import math
import pathlib
import re
import zipfile
from typing import Any

import numpy as np
import pytest
import torch as th
from algorithms import ALGOS, SMALL, KeepLogger, algo_id, assert_states_equal, make, preconditioner_counts
from seeded_envs import IDENTITY_SPACES, identity_env, seeded
from stable_baselines3 import A2C
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import FakeImageEnv, SimpleMultiObsEnv
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.save_util import recursive_getattr
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_natgrad import ACKTR, KFRELAX, SMAC

# (SMAC's small updates were a hundred times slower with two intra-op threads on a shared 2-core machine)
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def case(algo: type, variant: str = "", **kwargs: Any) -> Any:
    """A test case: ``algo`` with its small settings and ``kwargs`` (a variant named ``variant`` in the test id)."""
    return pytest.param(algo, kwargs, id=algo.__name__ + (f"-{variant}" if variant else ""))


#: the algorithms once each, and once more for each variant that takes another code path: SMAC's Fisher
#: estimators ("mean": rank one of the batch mean, "batch": the Gram matrix of per-sample scores from layer hooks,
#: "sample": per-sample scores by torch.func) and KFRELAX's control-variate optimizers
VARIANTS = [
    case(ACKTR),
    case(SMAC, "mean", fisher="mean"),
    case(SMAC, "sample", fisher="sample", fisher_samples=8),
    case(SMAC, "batch", fisher="batch"),
    case(KFRELAX, "kfac", cv_optimizer="kfac"),
    case(KFRELAX, "adam", cv_optimizer="adam"),
]

#: what each algorithm's files hold (SB3's ``_get_torch_save_params``) and ``get_parameters()`` returns
SAVED_OBJECTS = {
    ACKTR: {"policy", "policy.optimizer"},
    SMAC: {"policy", "policy.optimizer", "preconditioner"},
    KFRELAX: {"policy", "policy.optimizer", "cv_net_optimizer", "cv_scalar_optimizer"},
}

#: log keys of every algorithm (``train/n_updates`` is excluded from TensorBoard, as in SB3)
SHARED_LOG_KEYS = {
    "train/n_updates",
    "train/skipped_updates",
    "train/policy_loss",
    "train/value_loss",
    "train/entropy_loss",
    "train/explained_variance",
    "train/learning_rate",
    "train/kl",
}
#: each algorithm's own log keys
LOG_KEYS = {
    ACKTR: {"train/step_size", "train/natural_grad_norm", "train/vFv", "train/kfac_inverse_fallbacks"},
    SMAC: {"train/natural_grad_norm", "train/step_size", "train/fisher_alignment"},
    KFRELAX: {
        "train/cv_loss",
        "train/grad_variance",
        "train/grad_variance_no_cv",
        "train/cv_scale",
        "train/action_mismatch",
        "train/update_scale",
        "train/cv_step_size",
        "train/cv_kfac_skipped_updates",
        "train/cv_kfac_inverse_fallbacks",
    },
}
#: each algorithm's own log keys of discrete action spaces only: KFRELAX's relaxation temperature (a Box action
#: needs no relaxation)
DISCRETE_ONLY_LOG_KEYS: dict[type, set[str]] = {ACKTR: set(), SMAC: set(), KFRELAX: {"train/temperature"}}
#: log keys that are finite and > 0 at some update of a short run
POSITIVE_LOG_KEYS = {
    ACKTR: {"train/kl"},
    SMAC: {"train/kl"},
    KFRELAX: {"train/kl", "train/grad_variance", "train/cv_loss"},
}
#: log keys that are 0 at the end of a run on clean data: KFRELAX's stored acting noise reproduces every stored
#: action (the others store no noise)
ZERO_LOG_KEYS: dict[type, set[str]] = {ACKTR: set(), SMAC: set(), KFRELAX: {"train/action_mismatch"}}


def parameters(model: Any) -> list[th.Tensor]:
    return [p.detach().clone() for p in model.policy.parameters()]


def assert_same_saved_objects(model: Any, other: Any) -> None:
    """The policy and every other object the algorithm saves (optimizers, preconditioner) are in the same state."""
    for name in SAVED_OBJECTS[type(model)]:
        first, second = recursive_getattr(model, name), recursive_getattr(other, name)
        assert type(first) is type(second), name
        assert_states_equal(first.state_dict(), second.state_dict(), name)


# ---------------------------------------------------------------------------------------------- action spaces


def identity_cases() -> list[Any]:
    """(algo, space, size, envs, settings, steps, evaluation episodes) for each algorithm and action space."""
    # per algorithm: the sizes of the discrete spaces, envs, settings (a space's own over "all"), steps, episodes
    table: dict[type, dict[str, Any]] = {
        # At 20k steps the discrete spaces reach 100 on 8 of 8 data seeds. Box needs more: at 20k, 2 of 10 data seeds
        # stopped near 63 (the mean still too steep around 0); at 40k, 12 of 12 reach 100.
        ACKTR: dict(
            sizes=dict(Discrete=10, MultiDiscrete=5, MultiBinary=5, Box=0),
            n_envs=4,
            kwargs={"all": dict(gamma=0.5)},
            steps={"all": 20_000, "Box": 40_000},
            episodes=10,
        ),
        # SMAC's defaults sized down: one env, 200-step rollouts (an identity-env episode is 100 steps)
        SMAC: dict(
            sizes=dict(Discrete=4, MultiDiscrete=4, MultiBinary=4, Box=0),
            n_envs=1,
            kwargs={"all": dict(n_steps=200, gamma=0.4), "Box": dict(n_steps=200, gamma=0.4, fisher="batch")},
            steps={"all": 6000},
            episodes=20,
        ),
        KFRELAX: dict(
            sizes=dict(Discrete=10, MultiDiscrete=5, MultiBinary=5, Box=0),
            n_envs=4,
            kwargs={"all": dict(gamma=0.5), "Box": dict(gamma=0.5, learning_rate=3e-3)},
            steps={"all": 12_000},
            episodes=10,
        ),
    }
    return [
        pytest.param(
            algo,
            space,
            row["sizes"][space],
            row["n_envs"],
            row["kwargs"].get(space, row["kwargs"]["all"]),
            row["steps"].get(space, row["steps"]["all"]),
            row["episodes"],
            id=f"{algo.__name__}-{space}",
        )
        for algo, row in table.items()
        for space in IDENTITY_SPACES
    ]


@pytest.mark.parametrize(("algo", "space", "size", "n_envs", "kwargs", "timesteps", "n_eval_episodes"), identity_cases())
def test_identity_env_of_every_action_space_reaches_the_threshold(
    algo: type, space: str, size: int, n_envs: int, kwargs: dict[str, Any], timesteps: int, n_eval_episodes: int
) -> None:
    make_env = identity_env(space, size)
    model = algo("MlpPolicy", DummyVecEnv([seeded(make_env, seed=0)] * n_envs), seed=0, **kwargs)
    model.learn(timesteps)
    # evaluated on states the training did not see (another seed of the spaces)
    evaluate_policy(model, seeded(make_env, seed=100)(), n_eval_episodes=n_eval_episodes, reward_threshold=90, warn=False)
    for key in ZERO_LOG_KEYS[algo]:
        assert model.logger.name_to_value[key] == 0.0, key


#: CnnPolicy settings (ACKTR and KFRELAX: their small settings with longer rollouts; SMAC: its variants)
CNN_VARIANTS = [
    case(ACKTR, n_steps=16),
    case(SMAC, "mean", n_steps=32, fisher="mean", fisher_samples=8),
    case(SMAC, "sample", n_steps=32, fisher="sample", fisher_samples=8),
    case(SMAC, "batch", n_steps=32, fisher="batch", fisher_samples=8),
    case(KFRELAX, n_steps=16),
]


@pytest.mark.parametrize("share_features_extractor", [True, False])
@pytest.mark.parametrize(("algo", "kwargs"), CNN_VARIANTS)
def test_cnn_policy_trains_the_actors_convolutions_and_predicts_the_same_after_load(
    algo: type, kwargs: dict[str, Any], share_features_extractor: bool, tmp_path: pathlib.Path
) -> None:
    env = FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=True)
    policy_kwargs = dict(share_features_extractor=share_features_extractor, features_extractor_kwargs=dict(features_dim=32))
    small = {key: value for key, value in SMALL[algo].items() if key != "policy_kwargs"}
    model = algo("CnnPolicy", env, seed=1, policy_kwargs=policy_kwargs, **{**small, **kwargs})
    pi_conv = [p for name, p in model.policy.pi_features_extractor.named_parameters() if name.startswith("cnn")]
    before = [p.detach().clone() for p in pi_conv]
    ids = [id(p) for p in model.policy.parameters()]
    model.learn(2 * model.n_steps)
    assert model._n_updates == 2 and model.skipped_updates == 0
    assert preconditioner_counts(model) == (2, 0)
    # the update leaves the (possibly aliased) extractor's Parameter objects in place, and moves every convolution
    # of the actor
    assert [id(p) for p in model.policy.parameters()] == ids
    assert all(isinstance(p, th.nn.Parameter) for p in model.policy.parameters())
    assert pi_conv and all(not th.equal(p, b) for p, b in zip(pi_conv, before))
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "cnn")
    loaded = algo.load(tmp_path / "cnn", device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], action)


#: MultiInputPolicy settings and the steps they learn (KFRELAX: the control variate reads the extractor's features
#: or, with "observation", the flattened observation, for which K-FAC's 4106 x 4106 factor would be slow: Adam)
DICT_VARIANTS = [
    pytest.param(ACKTR, dict(n_steps=16), 128, id="ACKTR"),
    pytest.param(SMAC, dict(n_steps=64, batch_size=32, fisher="mean", fisher_samples=16), 128, id="SMAC-mean"),
    pytest.param(SMAC, dict(n_steps=64, batch_size=32, fisher="batch", fisher_samples=16), 128, id="SMAC-batch"),
    pytest.param(KFRELAX, dict(n_steps=16), 64, id="KFRELAX-features"),
    pytest.param(
        KFRELAX,
        dict(n_steps=16, cv_optimizer="adam", policy_kwargs=dict(cv_input="observation")),
        64,
        id="KFRELAX-observation",
    ),
]


@pytest.mark.parametrize(("algo", "kwargs", "timesteps"), DICT_VARIANTS)
def test_dict_observations_train_with_the_multi_input_policy(algo: type, kwargs: dict[str, Any], timesteps: int) -> None:
    model = algo("MultiInputPolicy", SimpleMultiObsEnv(random_start=False), seed=0, **kwargs)
    model.learn(timesteps)
    updates = timesteps // model.n_steps
    assert model._n_updates == updates and model.skipped_updates == 0
    assert preconditioner_counts(model) == (updates, 0)
    for key in ZERO_LOG_KEYS[algo]:
        assert model.logger.name_to_value[key] == 0.0, key


# ---------------------------------------------------------------------------------------------- save / load


def constructor_settings(model: Any) -> dict[str, Any]:
    """The model's settings of plain type that are arguments of its ``__init__`` (what ``save`` must keep)."""
    skip = {"self", "policy", "env", "policy_kwargs", "tensorboard_log", "verbose", "seed", "device", "_init_setup_model"}
    values = {}
    for name in inspect.signature(type(model).__init__).parameters:
        value = getattr(model, name, None)
        if name not in skip and isinstance(value, (bool, int, float, str, type(None))):
            values[name] = "nan" if isinstance(value, float) and math.isnan(value) else value
    return values


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize(("algo", "kwargs"), VARIANTS)
def test_save_load_keeps_predictions_settings_and_every_state_and_training_resumes_identically(
    algo: type, kwargs: dict[str, Any], env_id: str, tmp_path: pathlib.Path
) -> None:
    # saved after 4 updates: ACKTR's K-FAC past its warm-up and, as KFRELAX's, between two inverses (resuming crosses one)
    extra = {ACKTR: dict(warmup_steps=2, inverse_interval=3), SMAC: {}, KFRELAX: dict(cv_inverse_interval=3)}[algo]
    env = make_vec_env(env_id, n_envs=2, seed=0)
    model = make(algo, env, **kwargs, **extra)
    rollout = model.n_steps * 2
    model.learn(rollout * 4)
    obs = np.stack([model.observation_space.sample() for _ in range(5)])
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        files = {name for name in archive.namelist() if name.endswith(".pth")}
        assert {f"{name}.pth" for name in SAVED_OBJECTS[algo]} <= files
        for name in files:  # SB3 loads them with weights_only=True
            with archive.open(name) as handle:
                th.load(io.BytesIO(handle.read()), weights_only=True)

    loaded = algo.load(tmp_path / "model.zip", device="cpu")
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    assert constructor_settings(loaded) == constructor_settings(model)
    assert_same_saved_objects(model, loaded)
    assert preconditioner_counts(loaded) == preconditioner_counts(model) == (4, 0)
    # the loaded optimizers were rebuilt on the loaded policy's parameters
    policy_ids = {id(p) for p in loaded.policy.parameters()}
    for name in SAVED_OBJECTS[algo]:
        groups = getattr(recursive_getattr(loaded, name), "param_groups", [])
        assert {id(p) for group in groups for p in group["params"]} <= policy_ids, name
    # training resumes: both take the same next updates
    for m in (model, loaded):
        m.set_env(make_vec_env(env_id, n_envs=2, seed=5))
        m.set_random_seed(7)
        m.learn(rollout * 2, reset_num_timesteps=False)
    assert loaded.num_timesteps == model.num_timesteps == rollout * 6
    for (name, p), q in zip(model.policy.named_parameters(), loaded.policy.parameters()):
        th.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)
    assert preconditioner_counts(loaded) == preconditioner_counts(model) == (6, 0)
    assert_same_saved_objects(model, loaded)


@pytest.mark.parametrize("algo", ALGOS, ids=algo_id)
def test_set_env_and_a_get_parameters_set_parameters_round_trip(algo: type) -> None:
    model = make(algo, make_vec_env("CartPole-v1", n_envs=2))
    model.learn(2 * model.n_steps * 2)
    new_env = make_vec_env("CartPole-v1", n_envs=2, seed=5)
    model.set_env(new_env)
    assert model.get_env() is new_env
    model.learn(3 * model.n_steps * 2)
    params = model.get_parameters()
    assert set(params) == SAVED_OBJECTS[algo]
    other = make(algo, seed=1)
    other.set_parameters(params, exact_match=True)
    for (name, a), b in zip(model.policy.state_dict().items(), other.policy.state_dict().values()):
        assert th.equal(a, b), name
    assert_same_saved_objects(model, other)
    assert preconditioner_counts(other) == preconditioner_counts(model) == (5, 0)
    with pytest.raises(ValueError, match="Names of parameters do not match"):
        other.set_parameters({"policy": params["policy"]}, exact_match=True)
    with pytest.raises(ValueError, match="invalid object name"):
        other.set_parameters({"policy": params["policy"], "not_there": {}}, exact_match=True)
    with pytest.raises(ValueError, match="invalid object name"):
        other.set_parameters({"not_there": {}}, exact_match=False)
    # the model that received the parameters trains on in another env
    other.set_env(make_vec_env("CartPole-v1", n_envs=1))
    other.learn(2 * other.n_steps)
    assert preconditioner_counts(other) == (7, 0)
    with pytest.raises(ValueError):
        model.set_env(make_vec_env("Pendulum-v1", n_envs=2))


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=algo_id)
def test_load_refuses_a_model_file_of_sb3s_a2c_from_a_path_or_a_buffer(algo: type, tmp_path: pathlib.Path) -> None:
    A2C("MlpPolicy", "CartPole-v1", n_steps=4).save(tmp_path / "a2c")
    with pytest.raises(ValueError, match=f"is not a {algo.__name__} model"):
        algo.load(tmp_path / "a2c")
    buffer = io.BytesIO((tmp_path / "a2c.zip").read_bytes())
    with pytest.raises(ValueError, match=f"is not a {algo.__name__} model"):
        algo.load(buffer)


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=algo_id)
def test_loading_a_file_that_is_not_a_zip_names_the_file(algo: type, tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="broken"):
        algo.load(bad)


# ---------------------------------------------------------------------------------------- determinism, wrappers, callbacks

#: the runs compared for determinism: ACKTR and KFRELAX 50 updates on CartPole; SMAC (slower per update) 3 updates of
#: each Fisher estimator on Pendulum
SEED_VARIANTS = [
    pytest.param(ACKTR, "CartPole-v1", dict(SMALL[ACKTR], seed=3), 400, id="ACKTR"),
    *[
        pytest.param(
            SMAC,
            "Pendulum-v1",
            dict(n_steps=32, batch_size=16, fisher=fisher, fisher_samples=12, seed=7),
            96,
            id=f"SMAC-{fisher}",
        )
        for fisher in ("mean", "sample", "batch")
    ],
    pytest.param(KFRELAX, "CartPole-v1", dict(SMALL[KFRELAX], seed=3), 400, id="KFRELAX"),
]


@pytest.mark.parametrize(("algo", "env_id", "kwargs", "timesteps"), SEED_VARIANTS)
def test_the_same_seed_gives_the_same_parameters_and_another_seed_other_ones(
    algo: type, env_id: str, kwargs: dict[str, Any], timesteps: int
) -> None:
    def run(seed: int) -> list[th.Tensor]:
        model = algo("MlpPolicy", env_id, **{**kwargs, "seed": seed})
        model.learn(timesteps)
        return parameters(model)

    first, second = run(kwargs["seed"]), run(kwargs["seed"])
    assert all(th.equal(a, b) for a, b in zip(first, second))
    assert not all(th.equal(a, b) for a, b in zip(first, run(kwargs["seed"] + 1)))


@pytest.mark.parametrize("algo", ALGOS, ids=algo_id)
def test_vec_normalize_statistics_update_and_evaluation_runs(algo: type) -> None:
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0), gamma=0.99)
    model = make(algo, env)
    eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=1), training=False, norm_reward=False)
    callback = EvalCallback(eval_env, eval_freq=50, n_eval_episodes=1, warn=False)
    rollout = model.n_steps * 2
    updates = math.ceil(200 / rollout)
    model.learn(200, callback=callback)
    assert model.get_vec_normalize_env() is env
    assert np.isfinite(callback.last_mean_reward)
    assert env.obs_rms.count > 200  # statistics were updated by the rollouts
    assert model._n_updates == updates and preconditioner_counts(model) == (updates, 0)


class StopAt(BaseCallback):
    """Stops training at the given number of steps."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def _on_step(self) -> bool:
        return self.n_calls < self.at


@pytest.mark.parametrize("algo", ALGOS, ids=algo_id)
def test_a_callback_returning_false_stops_training_without_an_update_on_the_interrupted_rollout(algo: type) -> None:
    model = make(algo)
    stop = model.n_steps + model.n_steps // 4  # inside the second rollout
    model.learn(10_000, callback=StopAt(stop))
    assert model.num_timesteps == stop
    assert model._n_updates == 1 and preconditioner_counts(model) == (1, 0)  # the first rollout only


@pytest.mark.parametrize("algo", ALGOS, ids=algo_id)
def test_progress_bar_and_stats_window_size(algo: type) -> None:
    model = make(algo, stats_window_size=7)
    model.learn(300, progress_bar=True)
    assert model.num_timesteps == math.ceil(300 / model.n_steps) * model.n_steps
    assert model.ep_info_buffer.maxlen == 7 and len(model.ep_info_buffer) == 7


# ---------------------------------------------------------------------------------------------- logging, device


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("algo", ALGOS, ids=algo_id)
def test_tensorboard_holds_the_log_keys_of_the_algorithm_but_n_updates(
    algo: type, env_id: str, tmp_path: pathlib.Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    extra = dict(warmup_steps=1) if algo is ACKTR else {}  # K-FAC's own keys are logged after its warm-up
    model = make(algo, env_id, tensorboard_log=str(tmp_path), **extra)
    model.learn(200, log_interval=1)  # a Pendulum episode ends at 200 steps
    run_dirs = list(tmp_path.glob(f"{algo.__name__}_*"))
    assert [path.name for path in run_dirs] == [f"{algo.__name__}_1"]
    accumulator = EventAccumulator(str(run_dirs[0]))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    expected = (SHARED_LOG_KEYS - {"train/n_updates"}) | LOG_KEYS[algo] | {"rollout/ep_rew_mean"}
    expected |= {"train/std"} if env_id == "Pendulum-v1" else DISCRETE_ONLY_LOG_KEYS[algo]
    assert expected <= tags, expected - tags
    assert "train/n_updates" not in tags  # excluded from TensorBoard, as in SB3
    for key in POSITIVE_LOG_KEYS[algo]:
        values = [event.value for event in accumulator.Scalars(key)]
        assert all(np.isfinite(values)) and max(values) > 0, key


@pytest.mark.parametrize("algo", ALGOS, ids=algo_id)
def test_every_update_logs_the_keys_of_its_algorithm(algo: type) -> None:
    logger = KeepLogger()
    model = make(algo)
    model.set_logger(logger)
    model.learn(model.n_steps, log_interval=1)
    expected = SHARED_LOG_KEYS | LOG_KEYS[algo] | DISCRETE_ONLY_LOG_KEYS[algo]
    assert expected <= set(logger.history), expected - set(logger.history)
    assert "train/std" not in logger.history  # no log_std for a categorical policy
    assert logger.history["train/n_updates"] == [1]


@pytest.mark.parametrize("algo", ALGOS, ids=algo_id)
def test_device_auto_places_the_policy_and_every_saved_state_on_the_model_device(algo: type) -> None:
    model = make(algo, "Pendulum-v1", device="auto")
    model.learn(2 * model.n_steps)
    device = model.device
    assert all(p.device.type == device.type for p in model.policy.parameters())

    def tensors(state: Any) -> list[th.Tensor]:
        if isinstance(state, dict):
            return [t for value in state.values() for t in tensors(value)]
        if isinstance(state, (list, tuple)):
            return [t for value in state for t in tensors(value)]
        return [state] if isinstance(state, th.Tensor) else []

    for name in SAVED_OBJECTS[algo] - {"policy"}:
        # (scalars such as Adam's step count stay on the CPU, as torch keeps them)
        placed = [t.device.type for t in tensors(recursive_getattr(model, name).state_dict()) if t.dim() > 0]
        assert all(placed_on == device.type for placed_on in placed), name


# ---------------------------------------------------------------------------------------------- refused input


@pytest.mark.bad_input
@pytest.mark.parametrize("policy", ["MlpLstmPolicy", "RecurrentActorCriticPolicy"])
@pytest.mark.parametrize("algo", ALGOS, ids=algo_id)
def test_recurrent_policies_are_refused(algo: type, policy: str) -> None:
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    with pytest.raises(ValueError, match=f"{algo.__name__} does not support recurrent policies"):
        algo(RecurrentActorCriticPolicy if policy == "RecurrentActorCriticPolicy" else policy, "CartPole-v1")


#: bad values of arguments several algorithms have (``n_steps=0``, ``gamma=1.5`` and more: test_on_policy.py's
#: test_a_bad_shared_argument_is_named_with_the_algorithm)
SHARED_BAD_ARGUMENTS = [
    dict(learning_rate=-0.1),
    dict(learning_rate=-1e-3),
    dict(gae_lambda=-0.1),
    dict(max_grad_norm=0.0),
    dict(ent_coef=float("nan")),
]
#: bad values of each algorithm's own arguments
BAD_ARGUMENTS = {
    ACKTR: [
        dict(kfac_clip=0.0),
        dict(damping=-0.01),
        dict(vf_coef=-1.0),
        dict(vf_fisher_coef=-1.0),
        dict(momentum=1.0),
        dict(stat_decay=1.0),
        dict(stats_interval=0),
        dict(inverse_interval=0),
        dict(inverse_method="qr"),
        dict(damping_type="block"),
        dict(inverse_method="cholesky", damping_type="kronecker"),
        dict(warmup_steps=-1),
        dict(weight_decay=-1.0),
        dict(stats_batch_size=0),
        dict(stats_dtype="float16"),
        dict(conv_factors="reduced"),
        dict(conv_factors={"cnn.0": "sum"}),
    ],
    SMAC: [
        dict(damping=-0.1),
        dict(damping=0.0),
        dict(fisher="diagonal"),
        dict(max_kl=0.0),
        dict(max_kl=float("nan")),
        dict(actor_step_size=-1.0),
        dict(fisher_samples=0),
        dict(n_critic_updates=-1),
        dict(batch_size=0),
    ],
    KFRELAX: [
        dict(vf_coef=-1.0),
        dict(max_kl=0.0),
        dict(target="q"),
        dict(cv_optimizer="sgd"),
        dict(cv_loss="mse"),
        dict(cv_learning_rate=-1.0),
        dict(cv_scalar_learning_rate=-1.0),
        dict(cv_damping=0.0),
        dict(cv_kl_clip=0.0),
        dict(cv_momentum=1.0),
        dict(cv_stat_decay=1.0),
        dict(cv_inverse_interval=0),
    ],
}


def bad_argument_cases() -> list[Any]:
    cases = []
    for algo in ALGOS:
        for kwargs in SHARED_BAD_ARGUMENTS + BAD_ARGUMENTS[algo]:
            name, value = list(kwargs.items())[-1]  # the argument named (a combination: the last one)
            cases.append(pytest.param(algo, kwargs, f"{name}={value!r}", id=f"{algo.__name__}-{name}={value!r}"))
    return cases


@pytest.mark.bad_input
@pytest.mark.parametrize(("algo", "kwargs", "named"), bad_argument_cases())
def test_a_bad_argument_is_named_with_its_value_and_the_algorithm(algo: type, kwargs: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{algo.__name__}: invalid {named}")):
        algo("MlpPolicy", "CartPole-v1", **kwargs)
