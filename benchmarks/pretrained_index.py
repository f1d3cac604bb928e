"""
Release tooling for the shipped agents: write ``index.json`` of a folder of packaged agents (one sub-folder each,
``<algo>-<Env>``) from their manifests and ``results.json``, with the margin the tests allow a fresh evaluation.
``benchmarks/train_pretrained.sh`` runs it::

    python benchmarks/pretrained_index.py sb3_natgrad/pretrained
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any

from sb3_natgrad.zoo.manifest import MANIFEST, verify
from sb3_natgrad.zoo.pretrained import INDEX, pretrained_dir


def tolerance(std_reward: float, n_eval_episodes: int, mean_reward: float, n_test_episodes: int) -> float:
    """
    The margin a fresh evaluation of ``n_test_episodes`` (other seeds) may differ from the stated mean: three
    standard errors of the difference of the two means, at least 2% of the mean and 1.

    :param std_reward: stated standard deviation
    :param n_eval_episodes: stated number of episodes
    :param mean_reward: stated mean
    :param n_test_episodes: episodes of the new evaluation
    :return: the tolerance
    """
    spread = 3.0 * std_reward * math.sqrt(1.0 / n_eval_episodes + 1.0 / n_test_episodes)
    return round(max(spread, 0.02 * abs(mean_reward), 1.0), 2)


#: Episodes of the fresh evaluation the tests run on each shipped agent (their ``tolerance`` assumes it).
TEST_EPISODES = 10
#: First seed of that evaluation (the packaged evaluations use 1000-1019).
TEST_SEED = 5000


def write_index(folder: str | None = None) -> list[dict[str, Any]]:
    """
    Write ``index.json`` of a folder of packaged agents (one sub-folder each, named ``<algo>-<Env>``), from their
    manifests and ``results.json``; every agent is verified first.

    :param folder: default :func:`pretrained_dir`
    :return: the index entries
    """
    folder = folder or pretrained_dir()
    agents = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isdir(path) or name.startswith(("_", ".")):
            continue
        manifest = verify(path)
        with open(os.path.join(path, "results.json")) as file:
            results = json.load(file)
        size = sum(entry["size"] for entry in manifest["files"].values()) + os.path.getsize(os.path.join(path, MANIFEST))
        agents.append(
            {
                "name": name,
                "algo": manifest["algo"],
                "env_id": manifest["env_id"],
                "class_name": manifest["class_name"],
                "folder": name,
                "mean_reward": results["mean_reward"],
                "std_reward": results["std_reward"],
                "n_eval_episodes": results["n_eval_episodes"],
                "eval_seeds": results["eval_seeds"],
                "is_deterministic": results["is_deterministic"],
                "num_timesteps": manifest["num_timesteps"],
                "seed": manifest["seed"],
                "train_command": manifest["train_command"],
                "tolerance": tolerance(
                    results["std_reward"], results["n_eval_episodes"], results["mean_reward"], TEST_EPISODES
                ),
                "size_bytes": size,
            }
        )
    with open(os.path.join(folder, INDEX), "w") as file:
        json.dump({"test_episodes": TEST_EPISODES, "test_seed": TEST_SEED, "agents": agents}, file, indent=2)
        file.write("\n")
    return agents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default=None, help="default: sb3_natgrad/pretrained")
    agents = write_index(parser.parse_args().folder)
    print(f"index.json: {len(agents)} agents")


if __name__ == "__main__":
    main()
