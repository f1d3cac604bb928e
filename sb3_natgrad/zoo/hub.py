"""
Share trained agents in the Hugging Face Hub layout of rl-zoo3, offline first. By concern:

- :mod:`sb3_natgrad.zoo.manifest`: the manifest (sha256 of every file, library versions) and :func:`verify`;
- :mod:`sb3_natgrad.zoo.packaging`: :func:`package` turns an rl-zoo3 run (``logs/<algo>/<Env>_<N>/``) into a folder
  laid out exactly like an rl-zoo3 Hugging Face repository, with a fresh evaluation and a model card. No network;
- this module, the Hub: :func:`load` rebuilds the rl-zoo3 run layout from such a folder (verified against its
  manifest first) or from a Hub repository (opt-in: ``trust_remote_code``), so ``sb3-natgrad enjoy`` /
  ``record-video`` / ``train -i`` work; :func:`push` uploads a folder (``HfApi.create_repo`` + ``upload_folder``);
- :mod:`sb3_natgrad.zoo.pretrained`: the agents shipped in ``sb3_natgrad/pretrained/``.

Every public name of the four modules is importable from here. Importing them does not import rl_zoo3 or
huggingface_hub. Errors are :class:`HubError` (a :class:`~sb3_natgrad.zoo.ZooError`) with a one-line message.

Never imports ``rl_zoo3.push_to_hub`` (broken with current ``huggingface_sb3``) and never calls
``huggingface_sb3.load_from_hub``: the Hub is reached through ``huggingface_hub`` directly.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import shutil
import zipfile
from typing import Any

from sb3_natgrad.zoo.config import one_line

# besides what this module uses, the public names of the modules split out of it stay importable from here
from sb3_natgrad.zoo.manifest import (
    MANIFEST,
    HubError,
    HubUnreachableError,
    ManifestError,
    _identify,
    library_versions,
    read_manifest,
    sha256_file,
    verify,
    write_manifest,
)
from sb3_natgrad.zoo.packaging import (
    _building,
    _debug,
    _move_into_place,
    _say,
    env_name,
    evaluate,
    make_env,
    model_card_metadata,
    model_name,
    package,
)
from sb3_natgrad.zoo.pretrained import load_folder, load_pretrained, pretrained_agents, pretrained_dir, pretrained_path

# rl-zoo3 / Hugging Face repository id: ORG/NAME, letters, digits, "-", "_", ".".
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ---------------------------------------------------------------------------------------------------------------------
# load


def is_repo_id(source: str) -> bool:
    """
    :param source: ``--from`` value
    :return: whether it has the form of a Hub repository id (``ORG/NAME``)
    """
    return bool(_REPO_ID.match(source))


def _hub_errors() -> tuple[type[BaseException], ...]:
    """Errors of a failed Hub call: huggingface_hub's (OSError subclasses) and the HTTP client's (httpx2 for 2.x)."""
    errors: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError]
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        with contextlib.suppress(ImportError, AttributeError):
            errors.append(getattr(importlib.import_module(module), name))
    with contextlib.suppress(ImportError):
        from huggingface_hub.errors import HFValidationError

        errors.append(HFValidationError)
    return tuple(errors)


def _hub_failure(action: str, exc: BaseException) -> HubUnreachableError:
    from huggingface_hub import constants

    message = one_line(exc) or type(exc).__name__
    if constants.HF_HUB_OFFLINE:
        message = "offline mode is enabled (HF_HUB_OFFLINE=1)"
    return HubUnreachableError(f"{action} failed: {type(exc).__name__}: {message}")


def download(repo_id: str, revision: str | None = None, cache_dir: str | None = None) -> str:
    """
    Download a Hub repository (all its files).

    :param repo_id: ``ORG/NAME``
    :param revision: branch, tag or commit
    :param cache_dir: huggingface_hub cache folder (default: its own)
    :return: the local snapshot folder
    """
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, library_name="sb3-natgrad")
    except _hub_errors() as exc:
        if _debug():
            raise
        raise _hub_failure(f"downloading {repo_id} from the Hugging Face Hub", exc) from None


def _safe_extract(archive_path: str, target: str) -> None:
    """Extract ``train_eval_metrics.zip``: plain file names only (no folders, no ``..``)."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            for member in archive.infolist():
                name = member.filename
                if member.is_dir() or "/" in name or "\\" in name or name in ("", ".", ".."):
                    raise HubError(f"{archive_path}: unexpected entry {name!r} (only plain file names), refusing to load it")
            archive.extractall(target)
    except zipfile.BadZipFile as exc:
        raise HubError(f"{archive_path}: not a zip file ({one_line(exc)})") from None


def _resolve_source(
    source: str, trust_remote_code: bool, revision: str | None, verbose: int
) -> tuple[str, dict[str, Any] | None]:
    """The local folder of ``--from`` (downloaded from the Hub if needed) and its verified manifest."""
    if os.path.isdir(source):
        return source, verify(source)
    if os.path.exists(source):
        raise HubError(f"--from {source!r} is a file, expected a folder written by 'sb3-natgrad package' or ORG/REPO")
    if not is_repo_id(source):
        raise HubError(f"--from {source!r}: no such folder (and not a Hub repository id ORG/REPO)")
    if not trust_remote_code:
        raise HubError(
            f"{source} is not a local folder; loading it from the Hugging Face Hub unpickles its model files, "
            "which can run code: pass --trust-remote-code if you trust this repository"
        )
    _say(verbose, f"Downloading {source} from the Hugging Face Hub")
    root = download(source, revision)
    if os.path.isfile(os.path.join(root, MANIFEST)):
        return root, verify(root)
    _say(verbose, f"notice: {source} has no {MANIFEST} (not packaged by sb3-natgrad): its files are not verified")
    return root, None


def load(
    source: str,
    folder: str,
    exp_id: int = 0,
    algo: str | None = None,
    env_id: str | None = None,
    force: bool = False,
    trust_remote_code: bool = False,
    revision: str | None = None,
    verbose: int = 1,
) -> str:
    """
    Rebuild the rl-zoo3 run layout from a packaged agent, so ``sb3-natgrad enjoy --algo A --env E -f folder`` runs
    it: ``<folder>/<algo>/<Env>_<N>/<Env>.zip``, ``<Env>/config.yml``, ``args.yml``, ``env_kwargs.yml``,
    ``vecnormalize.pkl`` and the monitor / evaluation files of ``train_eval_metrics.zip``.

    A local folder must match its ``MANIFEST.json`` (a changed, missing or extra file is refused). A Hub repository
    is downloaded only with ``trust_remote_code`` (SB3 model files contain pickled objects, which can run code when
    loaded); it is verified against its manifest when it has one. The manifest detects corruption and accidental
    changes, not a deliberate attack (whoever changes a file can rewrite the manifest): load only agents whose
    source you trust, from a local copy as from the Hub.

    :param source: a folder written by :func:`package`, or a Hub repository id ``ORG/NAME``
    :param folder: the log folder to write into (``-f``)
    :param exp_id: run number; 0: one more than the latest run of this algorithm and env
    :param algo: expected ``--algo`` (checked against the manifest; needed for a Hub repository without manifest)
    :param env_id: expected env id (same)
    :param force: replace an existing run folder
    :param trust_remote_code: allow downloading from the Hub
    :param revision: Hub branch, tag or commit
    :param verbose: 0: silent
    :return: the run folder
    """
    root, manifest = _resolve_source(source, trust_remote_code, revision, verbose)
    algo, env_id = _identify(source, manifest, algo, env_id)
    name = env_name(env_id)
    stem = model_name(algo, env_id)
    for required in (f"{stem}.zip", "config.yml", "args.yml"):
        if not os.path.isfile(os.path.join(root, required)):
            raise HubError(f"{source}: no {required}")

    if os.path.exists(folder) and not os.path.isdir(folder):
        raise HubError(f"-f {folder!r} is a file, expected a log folder")
    algo_folder = os.path.join(folder, algo)
    if exp_id == 0:
        from rl_zoo3.utils import get_latest_run_id

        exp_id = get_latest_run_id(algo_folder, name) + 1  # type: ignore[arg-type]
    if exp_id < 0:
        raise HubError(f"--exp-id must be 0 (new run) or a run number, got {exp_id}")
    log_path = os.path.join(algo_folder, f"{name}_{exp_id}")
    if os.path.exists(log_path) and not force:
        raise HubError(f"{log_path} already exists; pass --force to replace it, or --exp-id 0 for a new run folder")

    with _building(log_path) as build:
        config_dir = os.path.join(build, name)
        os.makedirs(config_dir)
        shutil.copyfile(os.path.join(root, f"{stem}.zip"), os.path.join(build, f"{name}.zip"))
        for file_name in ("config.yml", "args.yml"):
            shutil.copyfile(os.path.join(root, file_name), os.path.join(config_dir, file_name))
        if os.path.isfile(os.path.join(root, "env_kwargs.yml")):
            shutil.copyfile(os.path.join(root, "env_kwargs.yml"), os.path.join(config_dir, "env_kwargs.yml"))
        if os.path.isfile(os.path.join(root, "vec_normalize.pkl")):
            shutil.copyfile(os.path.join(root, "vec_normalize.pkl"), os.path.join(config_dir, "vecnormalize.pkl"))
        if os.path.isfile(os.path.join(root, "train_eval_metrics.zip")):
            _safe_extract(os.path.join(root, "train_eval_metrics.zip"), build)
        _move_into_place(build, log_path)
    _say(verbose, f"Saved {algo} on {env_id} to {log_path}")
    _say(verbose, f"Run it with: sb3-natgrad enjoy --algo {algo} --env {env_id} -f {folder} --exp-id {exp_id}")
    return log_path


# ---------------------------------------------------------------------------------------------------------------------
# push


def push(
    out: str,
    repo_id: str,
    commit_message: str | None = None,
    private: bool = False,
    token: str | None = None,
    verbose: int = 1,
) -> str:
    """
    Upload a packaged agent to the Hugging Face Hub (``HfApi.create_repo(exist_ok=True)`` + ``upload_folder``).
    The folder is verified against its manifest first; the repository ends up with exactly its files (remote
    files that are not in the folder are deleted, ``.gitattributes`` aside).

    :param out: a folder written by :func:`package`
    :param repo_id: ``ORG/NAME`` (rl-zoo3's convention: ``ORG/<algo>-<Env>``)
    :param commit_message: commit message (default: names the agent)
    :param private: create the repository private
    :param token: Hugging Face token (default: huggingface_hub's, from ``HF_TOKEN`` or ``hf auth login``)
    :param verbose: 0: silent
    :return: the repository URL
    """
    if not os.path.isdir(out):
        raise HubError(f"{out!r}: no such folder (write one with 'sb3-natgrad package')")
    if not is_repo_id(repo_id):
        raise HubError(f"--repo {repo_id!r}: expected a repository id ORG/NAME")
    manifest = verify(out)
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise HubUnreachableError("no Hugging Face token: log in with 'hf auth login' or set HF_TOKEN")
    message = commit_message or f"{manifest.get('class_name', 'agent')} on {manifest.get('env_id', '?')} (sb3-natgrad package)"
    api = HfApi(token=token, library_name="sb3-natgrad")
    try:
        url = api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
        _say(verbose, f"Uploading {out} to {url}")
        api.upload_folder(repo_id=repo_id, folder_path=out, commit_message=message, delete_patterns="*")
    except _hub_errors() as exc:
        if _debug():
            raise
        raise _hub_failure(f"pushing to {repo_id}", exc) from None
    _say(verbose, f"Pushed to {url}")
    return str(url)


__all__ = [
    "MANIFEST",
    "HubError",
    "HubUnreachableError",
    "ManifestError",
    "download",
    "env_name",
    "evaluate",
    "is_repo_id",
    "library_versions",
    "load",
    "load_folder",
    "load_pretrained",
    "make_env",
    "model_card_metadata",
    "model_name",
    "package",
    "pretrained_agents",
    "pretrained_dir",
    "pretrained_path",
    "push",
    "read_manifest",
    "sha256_file",
    "verify",
    "write_manifest",
]
