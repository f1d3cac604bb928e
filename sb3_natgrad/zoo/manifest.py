"""
The manifest of a packaged agent: the sha256 digest of every file and the library versions, written by
:func:`write_manifest` and checked by :func:`verify`. Errors are :class:`HubError` with a one-line message;
:class:`ManifestError` names the file that does not match.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sb3_natgrad.zoo import ZooError
from sb3_natgrad.zoo.config import one_line

if TYPE_CHECKING:
    pass

#: Distributions whose versions :func:`package` records in the manifest.
RECORDED_DISTRIBUTIONS = (
    "sb3-natgrad",
    "stable-baselines3",
    "sb3-contrib",
    "rl-zoo3",
    "torch",
    "gymnasium",
    "numpy",
)

#: Name of the manifest written by :func:`package`.
MANIFEST = "MANIFEST.json"
#: Version of the manifest format.
MANIFEST_FORMAT = 1
#: Files of a Hub repository that are bookkeeping of the Hub itself, not part of the agent (never verified).
HUB_BOOKKEEPING = frozenset({".gitattributes"})


class HubError(ZooError, ValueError):
    """
    Packaging, loading or publishing an agent failed; the message is one line.

    ``exit_code`` is the exit code of the ``sb3-natgrad`` command: 2 for bad input, 1 for an unreachable Hub or a
    missing token (the command was right, the environment was not).
    """

    exit_code = 2


class HubUnreachableError(HubError):
    """The Hugging Face Hub could not be reached (offline, no token, server error)."""

    exit_code = 1


class ManifestError(HubError):
    """A folder does not match its ``MANIFEST.json`` (a changed, missing or extra file)."""


def sha256_file(path: str) -> str:
    """
    :param path: a file
    :return: its sha256 digest (hex)
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """
    :return: ``{distribution: version}`` of the libraries that matter to load an agent, and ``python``
    """
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": sys.version.split()[0]}
    for distribution in RECORDED_DISTRIBUTIONS:
        with contextlib.suppress(PackageNotFoundError):
            versions[distribution] = version(distribution)
    return versions


# ---------------------------------------------------------------------------------------------------------------------
# Manifest


def _folder_files(folder: str) -> list[str]:
    """Relative POSIX paths of the files in ``folder`` (Hub bookkeeping and the manifest excluded)."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            relative = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            if relative != MANIFEST and relative not in HUB_BOOKKEEPING:
                found.append(relative)
    return found


def write_manifest(folder: str, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """
    Write ``MANIFEST.json``: the sha256 digest and size of every file of ``folder`` and the library versions.

    :param folder: a packaged agent
    :param metadata: extra fields (``algo``, ``env_id``, ``class_name``, ``train_command``...)
    :return: the manifest
    """
    manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, **(metadata or {})}
    manifest["versions"] = library_versions()
    manifest["files"] = {
        name: {"sha256": sha256_file(os.path.join(folder, name)), "size": os.path.getsize(os.path.join(folder, name))}
        for name in _folder_files(folder)
    }
    with open(os.path.join(folder, MANIFEST), "w") as file:
        json.dump(manifest, file, indent=2, sort_keys=False)
        file.write("\n")
    return manifest


def read_manifest(folder: str) -> dict[str, Any]:
    """
    :param folder: a packaged agent
    :return: its manifest (not verified: see :func:`verify`)
    """
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise ManifestError(f"{folder}: no {MANIFEST} (not a folder written by 'sb3-natgrad package'), refusing to load it")
    try:
        with open(path) as file:
            manifest = json.load(file)
        entries = manifest["files"]
        if not isinstance(entries, dict) or not all(isinstance(entry["sha256"], str) for entry in entries.values()):
            raise TypeError("malformed 'files'")
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{path}: malformed manifest ({one_line(exc)})") from None
    for name in entries:
        parts = name.split("/")
        if name.startswith("/") or ".." in parts or "\\" in name:
            raise ManifestError(f"{path}: invalid file name {name!r}")
    for key in ("algo", "env_id"):
        if key in manifest:
            _check_identifier(key, manifest[key], path, ManifestError)
    model_file = manifest.get("model_file")
    if model_file is not None and model_file not in entries:
        raise ManifestError(f"{path}: model_file {model_file!r} is not one of the listed files")
    return manifest


#: An algorithm name as rl-zoo3 uses it (``--algo``) and a Gymnasium env id (``[namespace/]Name-vN``): nothing that can
#: climb out of a folder when joined into a path.
_ALGO_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_ENV_ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.:-]*(/[A-Za-z0-9_-][A-Za-z0-9_.:-]*)?")


def _check_identifier(key: str, value: Any, where: str, error: type[HubError]) -> None:
    """``algo`` / ``env_id`` values become path components: refuse anything but plain names."""
    pattern = _ALGO_PATTERN if key == "algo" else _ENV_ID_PATTERN
    if not isinstance(value, str) or not pattern.fullmatch(value) or ".." in value:
        raise error(f"{where}: invalid {key} {value!r}")


def verify(folder: str) -> dict[str, Any]:
    """
    Check ``folder`` against its ``MANIFEST.json``: every listed file is there with the same sha256, and there is
    no other file (Hub bookkeeping such as ``.gitattributes`` aside).

    :param folder: a packaged agent
    :return: the manifest
    :raises ManifestError: naming the first changed, missing or extra file
    """
    manifest = read_manifest(folder)
    listed = manifest["files"]
    present = set(_folder_files(folder))
    for name in sorted(listed):
        if name not in present:
            raise ManifestError(f"{folder}: {name} is missing (listed in {MANIFEST}), refusing to load it")
    for name in sorted(present - set(listed)):
        raise ManifestError(f"{folder}: unexpected file {name} (not in {MANIFEST}), refusing to load it")
    for name in sorted(listed):
        if sha256_file(os.path.join(folder, name)) != listed[name]["sha256"]:
            raise ManifestError(f"{folder}: {name} was changed (its sha256 differs from {MANIFEST}), refusing to load it")
    return manifest


def _identify(source: str, manifest: dict[str, Any] | None, algo: str | None, env_id: str | None) -> tuple[str, str]:
    """The algorithm and env of a packaged agent: from its manifest (checked against the given ones) or given."""
    if manifest is None:
        if algo is None or env_id is None:
            raise HubError(f"{source} has no {MANIFEST}: pass --algo and --env")
        _check_identifier("algo", algo, source, HubError)
        _check_identifier("env_id", env_id, source, HubError)
        return algo, env_id
    for key, given in (("algo", algo), ("env_id", env_id)):
        if given is not None and manifest.get(key) != given:
            raise HubError(f"{source} holds {manifest.get('algo')} on {manifest.get('env_id')}, not {key} {given!r}")
    found_algo, found_env = manifest.get("algo"), manifest.get("env_id")
    if not isinstance(found_algo, str) or not isinstance(found_env, str):
        raise ManifestError(f"{source}: {MANIFEST} does not name the algorithm and env")
    return found_algo, found_env
