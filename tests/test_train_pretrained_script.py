"""``benchmarks/train_pretrained.sh list``: the exact train and package commands of each shipped agent."""

import pathlib
import shutil
import subprocess

import pytest

SCRIPT = pathlib.Path(__file__).parents[1] / "benchmarks" / "train_pretrained.sh"


def listed(*agents: str, **env: str) -> list[str]:
    command = ["bash", str(SCRIPT), "list", *agents]
    result = subprocess.run(command, capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin", **env})
    return [line.strip() for line in result.stdout.splitlines()]


pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_per_agent_package_flags_go_to_the_package_command_only() -> None:
    name, train, package = listed("acktr-LunarLander-v3")
    assert name == "acktr-LunarLander-v3:"
    assert train.endswith("--seed 1 --eval-freq 50000 --eval-episodes 5")
    assert "|" not in train and "--policy-only" not in train
    assert package.endswith("--n-eval-episodes 20 --eval-seed 1000 --no-video --policy-only")


def test_agent_without_package_flags_and_package_flags_from_the_environment() -> None:
    _, _, package = listed("acktr-CartPole-v1", PACKAGE_FLAGS="--n-eval-episodes 3")
    assert package.endswith("--force --n-eval-episodes 3")
    _, _, package = listed("smac-LunarLander-v3", PACKAGE_FLAGS="--n-eval-episodes 3")
    assert package.endswith("--force --n-eval-episodes 3 --load-best")
