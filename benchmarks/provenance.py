"""What every benchmark result records about how it was made: the commit, the library versions and the command."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from typing import Any

PACKAGES = ("sb3-natgrad", "stable_baselines3", "sb3_contrib", "rl_zoo3", "torch", "gymnasium", "numpy", "minatar", "ray")


def provenance() -> dict[str, Any]:
    """
    :return: ``commit`` (``git rev-parse HEAD``, ``None`` outside a checkout), ``dirty`` (uncommitted changes),
        ``command`` (the argv), ``python``, ``platform``, ``cpus``, ``date`` and ``versions`` of :data:`PACKAGES`
    """

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
        "command": " ".join(["python", *sys.argv]),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": versions,
    }
