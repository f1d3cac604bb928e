"""``benchmarks/sample_efficiency.py --checkpoint-dir``: a run interrupted after a checkpoint goes on from it."""

import importlib
import pathlib
from typing import Any

import gymnasium as gym
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

BENCHMARKS = pathlib.Path(__file__).parents[1] / "benchmarks"


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("sample_efficiency")


def job(budget: int, checkpoint_dir: pathlib.Path, **extra: Any) -> dict[str, Any]:
    # ACKTR's Pendulum-v1 entry (normalised: the VecNormalize statistics are part of the checkpoint), 2 x 16 steps per
    # rollout, a checkpoint every second rollout
    return dict(
        algo="acktr",
        label="acktr",
        env="Pendulum-v1",
        seed=3,
        budget=budget,
        threshold=None,
        overrides={"n_envs": 2, "n_steps": 16},
        stop_at_threshold=True,
        checkpoint_dir=str(checkpoint_dir),
        checkpoint_every=64,
        **extra,
    )


def test_a_run_resumes_from_its_last_checkpoint(script: Any, tmp_path: pathlib.Path) -> None:
    first = script.run_one(job(160, tmp_path))
    assert first["resumed_from"] == 0 and first["timesteps_run"] == 160
    folder = tmp_path / "acktr_Pendulum-v1_3" / "current"
    assert {p.name for p in folder.iterdir()} == {"model.zip", "vecnormalize.pkl", "state.json"}
    # the last checkpoint was taken before the rollout that started at 128 (the one at 160 is never collected)
    second = script.run_one(job(320, tmp_path))
    assert second["resumed_from"] == 128
    assert second["timesteps_run"] == 320
    # the VecNormalize statistics went on from the checkpoint (the last one: before the rollout at 256): about 256
    # observations, where a restart from scratch would have seen about 128
    env = DummyVecEnv([lambda: gym.make("Pendulum-v1")] * 2)
    normalize = VecNormalize.load(str(folder / "vecnormalize.pkl"), env)
    assert 250 < normalize.obs_rms.count < 270


def test_an_interrupted_save_keeps_the_previous_checkpoint(script: Any, tmp_path: pathlib.Path) -> None:
    script.run_one(job(160, tmp_path))
    root = tmp_path / "acktr_Pendulum-v1_3"
    # killed between save()'s two renames: only "old" is whole
    (root / "current").rename(root / "old")
    state = script.Checkpoint(root).load_state()
    assert state is not None
    assert (root / "current" / "model.zip").exists() and not (root / "old").exists()
    assert script.run_one(job(192, tmp_path))["resumed_from"] == 128


def test_without_a_checkpoint_dir_nothing_is_saved(script: Any, tmp_path: pathlib.Path) -> None:
    result = script.run_one({**job(64, tmp_path), "checkpoint_dir": None})
    assert result["resumed_from"] == 0 and result["timesteps_run"] == 64
    assert list(tmp_path.iterdir()) == []


def test_the_entry_of_a_newer_env_version_is_the_newest_listed_one(script: Any) -> None:
    # rl-zoo3 lists MuJoCo as -v4: its A2C entry for Hopper-v4, not the file's "default", trains Hopper-v5
    assert script.zoo_entry_name("a2c", "Hopper-v5") == "Hopper-v4"
    assert script.zoo_hyperparams("a2c", "Hopper-v5")["normalize"] is True
    assert script.zoo_entry_name("acktr", "Hopper-v5") == "Hopper-v5"  # ours lists -v5 itself
    assert script.zoo_entry_name("a2c", "InvertedPendulum-v5") == "default"  # rl-zoo3's A2C has no entry
    assert script.zoo_hyperparams("a2c", "InvertedPendulum-v5", entry="HalfCheetah-v4")["normalize"] is True


def test_the_entry_wrappers_are_applied_as_rl_zoo3_does(script: Any) -> None:
    # ACKTR's MuJoCo entries add rl-zoo3's TimeFeatureWrapper: one more observation (before, this script left it out)
    entry = script.zoo_hyperparams("acktr", "InvertedPendulum-v5")
    env = script.make_env("InvertedPendulum-v5", entry, 1, 0)
    assert env.observation_space.shape == (4 + 1,)
    plain = script.make_env("InvertedPendulum-v5", script.zoo_hyperparams("a2c", "InvertedPendulum-v5"), 1, 0)
    assert plain.observation_space.shape == (4,)
    with pytest.raises(ValueError, match="vec_env_wrapper"):
        script.make_env("CartPole-v1", {"vec_env_wrapper": "x.Y"}, 1, 0)


@pytest.mark.parametrize(
    ("flag", "named"),
    [
        (["--set", "acktr:policy_kwargs=dict(a=1)"], "'dict(a=1)' is not a Python literal"),
        (["--set", "acktr:n_steps"], "'acktr:n_steps': expected algo:key=value"),
        (["--entry", "HalfCheetah-v4"], "'HalfCheetah-v4': expected algo:entry_name"),
    ],
)
def test_a_malformed_override_is_refused_by_name(
    script: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, flag: list[str], named: str
) -> None:
    monkeypatch.setattr("sys.argv", ["sample_efficiency.py", "--env", "Pendulum-v1", "--algos", "acktr", *flag])
    with pytest.raises(SystemExit) as exit_info:
        script.main()
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err
