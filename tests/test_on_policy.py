"""What ACKTR, SMAC and KFRELAX share through ``common.on_policy``: one behaviour, checked for all three."""

from __future__ import annotations

import copy
import io
import pathlib
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from algorithms import ALGOS, SMALL, make
from kl_bound import LoggedKL
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch import nn
from unsupported_envs import NestedDictEnv, TupleActionEnv, UnboundedBoxEnv

from sb3_natgrad import ACKTR, KFRELAX, SMAC
from sb3_natgrad.optim import KFAC


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


@pytest.mark.bad_input
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


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
@pytest.mark.parametrize(
    ("name", "value"),
    [("n_steps", 0), ("n_steps", 2.5), ("gamma", 1.5), ("gamma", float("nan")), ("stats_window_size", 0), ("ent_coef", "x")],
)
def test_a_bad_shared_argument_is_named_with_the_algorithm(algo: type, name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{algo.__name__}: invalid {name}="):
        make(algo, **{name: value})


@pytest.mark.bad_input
def test_acktr_words_kfac_errors_with_its_own_argument_names() -> None:
    with pytest.raises(ValueError, match=r"ACKTR: invalid kfac_clip=0"):
        make(ACKTR, kfac_clip=0)
    with pytest.raises(ValueError, match=r"ACKTR: invalid damping=-1"):
        make(ACKTR, damping=-1)
    with pytest.raises(ValueError, match=r"ACKTR: invalid stats_dtype='float16'"):
        make(ACKTR, stats_dtype="float16")
    with pytest.raises(ValueError, match=r"KFAC: invalid kl_clip=0"):
        KFAC(nn.Linear(2, 2), kl_clip=0)


@pytest.mark.bad_input
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


class BadRewardAt(gym.Wrapper):
    """Returns ``value`` as the reward of one step."""

    def __init__(self, env: gym.Env, at: int, value: float) -> None:
        super().__init__(env)
        self.at, self.value, self.count = at, value, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.count += 1
        return obs, (self.value if self.count == self.at else reward), terminated, truncated, info


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_a_stalled_training_stops_with_an_error_naming_the_non_finite_statistic(algo: type) -> None:
    # One NaN reward poisons VecNormalize's running return variance for good: every later update is skipped.
    env = VecNormalize(DummyVecEnv([lambda: BadRewardAt(gym.make("CartPole-v1"), 20, float("nan"))]), norm_reward=True)
    model = algo("MlpPolicy", env, seed=0, device="cpu", max_consecutive_skips=4, **SMALL[algo])
    with pytest.raises(RuntimeError, match=r"4 updates in a row .* VecNormalize's ret_rms\.var") as error:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            model.learn(model.n_steps * 40)
    assert "max_consecutive_skips=4" in str(error.value)
    assert model.skipped_updates == 4
    assert model.num_timesteps < model.n_steps * 10  # stopped right away, not after 40 rollouts


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_isolated_skips_do_not_stop_training(algo: type) -> None:
    model = make(algo, max_consecutive_skips=2)
    model.learn(model.n_steps)
    for _ in range(3):  # a skipped update, then a good one, three times
        model.rollout_buffer.advantages[:] = np.nan
        model.rollout_buffer.returns[:] = np.nan
        if algo is KFRELAX:
            model.rollout_buffer.used_for_update = False
        with pytest.warns(RuntimeWarning):
            model.train()
        model.learn(model.n_steps, reset_num_timesteps=False)
    assert model.skipped_updates == 3


@pytest.mark.bad_input
def test_acktr_refuses_zero_damping() -> None:
    with pytest.raises(ValueError, match="ACKTR: invalid damping=0 with weight_decay=0"):
        make(ACKTR, damping=0)
    make(ACKTR, damping=0, weight_decay=1e-3)  # the weight decay damps


@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_save_appends_zip_like_sb3_and_leaves_no_temporary_file(algo: type, tmp_path) -> None:
    model = make(algo)
    model.save(tmp_path / "agent")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.zip"]
    assert (tmp_path / "agent.zip").stat().st_mode & 0o044  # readable by others, as a plain open() gives
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    assert type(algo.load(buffer, device="cpu")) is algo


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_a_damaged_model_file_is_refused_with_its_name(algo: type, tmp_path) -> None:
    # One flipped byte in the compressed policy weights: torch failed deep inside its unpickler (or loaded garbage).
    import zipfile

    model = make(algo)
    model.save(tmp_path / "agent")
    raw = bytearray((tmp_path / "agent.zip").read_bytes())
    with zipfile.ZipFile(tmp_path / "agent.zip") as archive:
        info = archive.getinfo("policy.pth")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF
    (tmp_path / "damaged.zip").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"damaged\.zip is damaged: its entry 'policy\.pth' does not match its checksum"):
        algo.load(tmp_path / "damaged.zip", device="cpu")


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_loading_into_an_env_of_another_space_is_refused(algo: type, tmp_path) -> None:
    make(algo).save(tmp_path / "agent")
    with pytest.raises(ValueError, match="Observation spaces do not match"):
        algo.load(tmp_path / "agent", env=gym.make("Pendulum-v1"), device="cpu")
    three_actions = gym.make("CartPole-v1")
    three_actions.action_space = gym.spaces.Discrete(3)  # CartPole's observations, another action space
    with pytest.raises(ValueError, match="Action spaces do not match"):
        algo.load(tmp_path / "agent", env=three_actions, device="cpu")


@pytest.mark.bad_input
def test_saving_into_an_unwritable_folder_names_the_model_file(tmp_path, monkeypatch) -> None:
    # (Tests run as root here, so a chmod-ed folder would still be writable: the refusal is simulated.)
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".agent.zip.x.partial.zip"))

    model = make(ACKTR)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match=r"Permission denied: cannot write a model file in .*: '.*agent\.zip'") as info:
        model.save(tmp_path / "agent")
    assert "partial" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


KILLED_SAVE = """
import sys, time
import torch
from sb3_natgrad import ACKTR
model = ACKTR("MlpPolicy", "CartPole-v1", n_steps=8, seed=0, device="cpu")
model.save(sys.argv[1])
original = torch.save
def stalled(*args, **kwargs):
    original(*args, **kwargs)
    print("saving", flush=True)
    time.sleep(120)
torch.save = stalled
model.learn(16)
model.save(sys.argv[1])
"""


@pytest.mark.bad_input
def test_a_save_killed_midway_leaves_the_previous_model_intact(tmp_path) -> None:
    path = tmp_path / "agent.zip"
    process = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "saving"  # inside the second save, after a partial write
        process.kill()
    finally:
        process.wait(timeout=60)
    model = ACKTR.load(path, device="cpu")
    assert model.num_timesteps == 0  # the first save's model, complete


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
@pytest.mark.parametrize("bad", [float("nan"), -1e-3])
def test_a_schedule_with_a_bad_value_is_named_before_any_parameter_changes(algo: type, bad: float) -> None:
    value = {"now": 1e-3}
    model = make(algo, learning_rate=lambda progress: value["now"])
    model.learn(model.n_steps)
    value["now"] = bad
    before = [p.detach().clone() for p in model.policy.parameters()]
    with pytest.raises(ValueError, match=rf"{algo.__name__}: invalid learning_rate=(nan|-0\.001), .* progress_remaining=0"):
        model.learn(model.n_steps)
    assert all(th.equal(p, b) for p, b in zip(model.policy.parameters(), before))


@pytest.mark.bad_input
def test_smac_actor_step_size_schedule_is_checked_too() -> None:
    model = make(SMAC, actor_step_size=lambda progress: float("nan"))
    with pytest.raises(ValueError, match=r"SMAC: invalid actor_step_size=nan, .* at progress_remaining=0"):
        model.learn(model.n_steps)


class NanObservationAt(gym.Wrapper):
    """Returns a NaN observation at one step."""

    def __init__(self, env: gym.Env, at: int) -> None:
        super().__init__(env)
        self.at, self.count = at, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.count += 1
        if self.count == self.at:
            obs = np.full_like(obs, np.nan)
        return obs, reward, terminated, truncated, info


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_a_nan_observation_is_named_with_its_env_index(algo: type) -> None:
    envs = [lambda: gym.make("CartPole-v1"), lambda: NanObservationAt(gym.make("CartPole-v1"), at=5)]
    model = algo("MlpPolicy", DummyVecEnv(envs), seed=0, device="cpu", **SMALL[algo])
    with pytest.raises(ValueError, match=f"{algo.__name__}: the observation of env 1 is not finite"):
        model.learn(model.n_steps * 4)


UNSUPPORTED_SPACES = [
    pytest.param(TupleActionEnv, "MlpPolicy", "does not support the action space Tuple", id="tuple-action"),
    pytest.param(NestedDictEnv, "MultiInputPolicy", "does not support the nested observation space", id="nested-dict"),
    pytest.param(UnboundedBoxEnv, "MlpPolicy", "needs finite bounds on a Box action space", id="unbounded-box"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
@pytest.mark.parametrize("env_class, policy, words", UNSUPPORTED_SPACES)
def test_an_unsupported_space_is_named_by_every_algorithm(algo: type, env_class: type, policy: str, words: str) -> None:
    with pytest.raises(ValueError, match=f"{algo.__name__} {words}"):
        algo(policy, env_class())


class LooseBoxEnv(gym.Env):
    """Float64 observations of a float32 ``Box(-1, 1)`` space, up to 100x outside its bounds (as many real envs)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.normal(0.0, 30.0, 3), {}

    def step(self, action):
        return self.np_random.normal(0.0, 30.0, 3), float(action), False, False, {}


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_box_observations_outside_their_bounds_or_of_another_dtype_are_used_as_given(algo: type) -> None:
    # The documented recovery (as SB3): no error, no skipped update, finite parameters.
    model = algo("MlpPolicy", DummyVecEnv([LooseBoxEnv]), seed=0, device="cpu", **SMALL[algo])
    model.learn(model.n_steps * 3)
    assert model.skipped_updates == 0
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


class CountingEnv(gym.Env):
    """Observation ``Discrete(4)``: the step count, which leaves the space after 3 steps (a buggy env)."""

    observation_space = gym.spaces.Discrete(4)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.count = 0
        return 0, {}

    def step(self, action):
        self.count += 1
        return self.count, 1.0, False, self.count >= 50, {}


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_a_discrete_observation_outside_its_space_is_named(algo: type) -> None:
    # SB3 one-hot encodes Discrete observations; 4 used to fail inside torch ("Class values must be smaller than
    # num_classes"), with no word about which env or value.
    model = algo("MlpPolicy", DummyVecEnv([CountingEnv]), seed=0, device="cpu", **SMALL[algo])
    with pytest.raises(ValueError, match=rf"{algo.__name__}: the observation of env 0 \(4 is not in Discrete\(4\)\)"):
        model.learn(model.n_steps * 4)


@pytest.mark.bad_input
def test_smac_warns_when_the_critic_batch_is_larger_than_the_rollout() -> None:
    with pytest.warns(UserWarning, match="batch_size=250 is larger than the rollout"):
        SMAC("MlpPolicy", "CartPole-v1", n_steps=16)


def test_smac_loaded_onto_fewer_envs_does_not_warn_about_its_critic_batch(tmp_path: pathlib.Path) -> None:
    # 4 envs x 16 steps with batch_size 64 is a whole-rollout batch; loaded onto one evaluation env the rollout would be
    # 16 samples, but an evaluation never fills it: the warning belongs to the construction only (as SB3's PPO)
    env = DummyVecEnv([lambda: gym.make("CartPole-v1")] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SMAC("MlpPolicy", env, n_steps=16, batch_size=64, seed=0, device="cpu").save(tmp_path / "smac")
        SMAC.load(tmp_path / "smac", env=DummyVecEnv([lambda: gym.make("CartPole-v1")]), device="cpu")


def test_kfrelax_modules_moved_out_of_common_keep_their_old_import_paths() -> None:
    from sb3_natgrad.common import control_variate as old_control_variate
    from sb3_natgrad.common import relaxations as old_relaxations
    from sb3_natgrad.kfrelax import control_variate, relaxations

    assert old_relaxations.DiscreteRelaxation is relaxations.DiscreteRelaxation
    assert old_relaxations.make_relaxation is relaxations.make_relaxation
    assert old_control_variate.ControlVariate is control_variate.ControlVariate


@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_the_overshooting_last_rollout_has_learning_rate_zero_not_negative(algo: type) -> None:
    from sb3_natgrad.common.schedules import LinearDecay

    model = make(algo, learning_rate=LinearDecay(1e-3))
    model.learn(int(model.n_steps * 1.5))  # two rollouts: SB3's progress is -1/3 at the second update
    assert model.logger.name_to_value["train/learning_rate"] == 0.0
    assert LinearDecay(2.0)(-0.5) == 0.0 and LinearDecay(2.0)(0.25) == 0.5


def test_acktr_max_kl_bounds_the_exact_kl_that_kfac_clip_does_not() -> None:
    # The stress setting of benchmarks/results/smac/trust_region.md: one env, 64 steps, a narrow initial Gaussian.
    kls = {}
    for max_kl in (None, 0.01):
        model = ACKTR("MlpPolicy", "Pendulum-v1", n_steps=64, max_kl=max_kl, policy_kwargs=dict(log_std_init=-2), seed=1)
        callback = LoggedKL()
        model.learn(64 * 31, callback=callback, log_interval=1)
        kls[max_kl] = callback.kls
    assert len(kls[0.01]) == 30
    assert max(kls[0.01]) <= 0.01 * (1 + 1e-6)
    assert max(kls[None]) > 1.5 * 0.01  # without it, the same run leaves the bound
    assert 0.0 < model.logger.name_to_value["train/update_scale"] <= 1.0


class SaveAtRolloutStart(BaseCallback):
    """Saves the model, and a copy of its env, at the start of the rollout that begins at ``at`` steps."""

    def __init__(self, at: int, path) -> None:
        super().__init__()
        self.at, self.path, self.env_copy = at, path, None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps == self.at and self.env_copy is None:
            self.model.save(self.path)
            self.env_copy = copy.deepcopy(self.training_env)


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
def test_resuming_from_a_saved_model_is_bit_identical_to_the_uninterrupted_run(algo: type, tmp_path) -> None:
    rollout = SMALL[algo]["n_steps"] * 2
    total, at = rollout * 8, rollout * 4
    model = algo("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), seed=0, device="cpu", **SMALL[algo])
    callback = SaveAtRolloutStart(at, tmp_path / "half.zip")
    model.learn(total, callback=callback)
    th.manual_seed(12345)  # whatever happened to the generators in between: load() sets them back
    resumed = algo.load(tmp_path / "half.zip", env=callback.env_copy, device="cpu", force_reset=False)
    resumed.learn(total - at, reset_num_timesteps=False)
    assert resumed.num_timesteps == model.num_timesteps == total
    for (name, expected), actual in zip(model.policy.named_parameters(), resumed.policy.parameters()):
        assert th.equal(expected, actual), name


@pytest.mark.bad_input
@pytest.mark.parametrize("algo", ALGOS, ids=lambda a: a.__name__)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e30, -1e30])
def test_one_extreme_reward_leaves_the_parameters_finite_and_training_going(algo: type, value: float) -> None:
    env = DummyVecEnv([lambda: BadRewardAt(gym.make("CartPole-v1"), 5, value)])
    model = algo("MlpPolicy", env, seed=0, device="cpu", **SMALL[algo])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model.learn(160)
    assert model.num_timesteps >= 160
    assert all(bool(th.isfinite(p).all()) for p in model.policy.parameters())
    assert model.skipped_updates <= 1  # at most the update of the rollout that holds the reward
