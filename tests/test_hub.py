"""
Sharing agents: ``sb3-natgrad package`` / ``load`` / ``push`` end to end (real commands in subprocesses, no network),
and the pretrained agents shipped in ``sb3_natgrad/pretrained/``.

Budget: one tiny training run (a few hundred steps) shared by the module; the shipped agents are evaluated on a few
fresh episodes (the slower envs are marked ``slow``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import yaml

pytest.importorskip("rl_zoo3")
pytest.importorskip("huggingface_hub")

from test_zoo import CLI, TIMEOUT, _environ, _hide_modules, assert_ok, run, run_in_one_process

from sb3_natgrad.zoo import ZOO_ALGORITHMS
from sb3_natgrad.zoo.hub import (
    MANIFEST,
    HubError,
    ManifestError,
    evaluate,
    load,
    load_folder,
    load_pretrained,
    pretrained_agents,
    pretrained_dir,
    verify,
    write_manifest,
)

ALGO, ENV = "acktr", "Acrobot-v1"  # Acrobot-v1's entry normalizes: vec_normalize.pkl is part of the round trip
NAME = f"{ALGO}-{ENV}"
#: The files of rl-zoo3's Hub layout that package always writes (+ replay.mp4 with a video backend).
LAYOUT = {f"{NAME}.zip", "config.yml", "args.yml", "env_kwargs.yml", "vec_normalize.pkl", "train_eval_metrics.zip"}
LAYOUT |= {"results.json", "README.md", MANIFEST}
RESULTS_FIELDS = {"mean_reward", "std_reward", "is_deterministic", "n_eval_episodes", "eval_datetime"}  # rl-zoo3's
RESULTS_FIELDS |= {"env_id", "algo", "eval_seeds", "episode_rewards", "episode_lengths"}  # ours
PACKAGE = ["package", "--algo", ALGO, "--env", ENV, "-f", "logs", "--n-eval-episodes", "2", "--eval-seed", "7"]
PACKAGE += ["--video-length", "30"]


def assert_one_line_error(result, command: str, *needles: str, code: int | None = None) -> None:
    """A non-zero exit, no traceback, and exactly one stderr line: ``sb3-natgrad <command>: error: ...``."""
    assert result.returncode != 0, result.stdout[-2000:]
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"sb3-natgrad {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


def _digests(folder: str) -> dict[str, bytes]:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Acrobot run packaged into ``<workdir>/acktr-Acrobot-v1``; returns the working directory."""
    workdir = tmp_path_factory.mktemp("hub")
    # The real command (its command.txt is the training command of the model card).
    run(*f"train --algo {ALGO} --env {ENV} -n 500 --eval-freq 320 --eval-episodes 1 -f logs --seed 0".split(), cwd=workdir)
    run(*PACKAGE, "-o", NAME, cwd=workdir)
    return str(workdir)


# ---------------------------------------------------------------------------------------------------------------------
# package


def test_package_writes_the_hub_layout(packaged: str) -> None:
    out = os.path.join(packaged, NAME)
    names = set(os.listdir(out))
    video = {"replay.mp4"} if _has_video_backend() else set()
    assert names == LAYOUT | video
    if video:
        with open(os.path.join(out, "replay.mp4"), "rb") as file:
            assert file.read(12)[4:8] == b"ftyp"  # an MP4 container
    run_dir = os.path.join(packaged, "logs", ALGO, f"{ENV}_1")
    # The model, configs and statistics are the run's, byte for byte.
    for packaged_name, run_name in [
        (f"{NAME}.zip", f"{ENV}.zip"),
        ("config.yml", f"{ENV}/config.yml"),
        ("args.yml", f"{ENV}/args.yml"),
        ("vec_normalize.pkl", f"{ENV}/vecnormalize.pkl"),
    ]:
        with open(os.path.join(out, packaged_name), "rb") as a, open(os.path.join(run_dir, run_name), "rb") as b:
            assert a.read() == b.read(), packaged_name
    with zipfile.ZipFile(os.path.join(out, "train_eval_metrics.zip")) as archive:
        members = set(archive.namelist())
    assert "evaluations.npz" in members
    assert {f"{index}.monitor.csv" for index in range(16)} <= members  # the entry has 16 envs
    with open(os.path.join(out, "env_kwargs.yml")) as file:
        assert yaml.safe_load(file) == {}


def test_results_json_has_the_stated_fields(packaged: str) -> None:
    with open(os.path.join(packaged, NAME, "results.json")) as file:
        results = json.load(file)
    assert set(results) == RESULTS_FIELDS
    assert results["n_eval_episodes"] == 2 and results["eval_seeds"] == [7, 8]
    assert results["is_deterministic"] is True  # not an Atari game
    assert (results["algo"], results["env_id"]) == (ALGO, ENV)
    assert len(results["episode_rewards"]) == len(results["episode_lengths"]) == 2
    assert results["mean_reward"] == pytest.approx(np.mean(results["episode_rewards"]))
    assert results["std_reward"] == pytest.approx(np.std(results["episode_rewards"]))


def test_stated_evaluation_is_reproducible(packaged: str) -> None:
    # The seeds in results.json give back its returns: the evaluation can be checked by anyone.
    model, env = load_folder(os.path.join(packaged, NAME), device="cpu")
    with open(os.path.join(packaged, NAME, "results.json")) as file:
        results = json.load(file)
    returns, lengths = evaluate(model, env, results["eval_seeds"], deterministic=True)
    assert returns == results["episode_rewards"] and lengths == results["episode_lengths"]


def test_model_card_metadata(packaged: str) -> None:
    from huggingface_hub.repocard import metadata_load

    metadata = metadata_load(os.path.join(packaged, NAME, "README.md"))
    assert metadata is not None and metadata["library_name"] == "stable-baselines3"
    assert ENV in metadata["tags"]
    (entry,) = metadata["model-index"]
    # rl-zoo3's benchmark maps the card to --algo by lower-casing the class name.
    assert entry["name"] == "ACKTR" and entry["name"].lower() == ALGO
    with open(os.path.join(packaged, NAME, "results.json")) as file:
        results = json.load(file)
    (result,) = entry["results"]
    assert result["dataset"]["name"] == ENV
    assert result["metrics"][0]["value"] == f"{results['mean_reward']:.2f} +/- {results['std_reward']:.2f}"
    with open(os.path.join(packaged, NAME, "README.md")) as file:
        card = file.read()
    assert "!!python" not in card  # metadata written as plain YAML, not as a pickled ModelCardData
    # The exact training and packaging commands.
    assert (
        "sb3-natgrad train --algo acktr --env Acrobot-v1 -n 500 --eval-freq 320 --eval-episodes 1 -f logs --seed 0\n" in card
    )
    assert f"sb3-natgrad package --algo acktr --env Acrobot-v1 -f logs -o {NAME} --n-eval-episodes 2 --eval-seed 7\n" in card


def test_manifest_lists_every_file_and_versions(packaged: str) -> None:
    out = os.path.join(packaged, NAME)
    manifest = verify(out)
    assert set(manifest["files"]) == set(os.listdir(out)) - {MANIFEST}
    assert {"sb3-natgrad", "stable-baselines3", "torch", "gymnasium", "python"} <= set(manifest["versions"])
    assert (manifest["algo"], manifest["env_id"], manifest["class_name"]) == (ALGO, ENV, "ACKTR")
    assert manifest["seed"] == 0 and manifest["num_timesteps"] >= 500


def test_policy_only_package_acts_identically_and_is_smaller(packaged: str, tmp_path) -> None:
    # --policy-only resets the optimizer states (K-FAC's factors, eigenbases, momentum) and drops the last rollout
    # observations; the policy and every other entry are the trained model's, so the evaluation is the same.
    import torch

    from sb3_natgrad import ACKTR

    out = tmp_path / "policy-only"
    run(*PACKAGE, "-o", str(out), "--policy-only", "--no-video", cwd=packaged)
    full, slim = os.path.join(packaged, NAME, f"{NAME}.zip"), str(out / f"{NAME}.zip")
    assert os.path.getsize(slim) < 0.5 * os.path.getsize(full)
    with zipfile.ZipFile(full) as a, zipfile.ZipFile(slim) as b:
        assert a.namelist() == b.namelist()
        assert a.read("policy.pth") == b.read("policy.pth")
        full_data, slim_data = json.loads(a.read("data")), json.loads(b.read("data"))
    assert "_last_obs" in full_data and "_last_obs" not in slim_data
    assert {key: value for key, value in full_data.items() if not key.startswith("_last_")} == slim_data
    for name in ("results.json",):
        with open(os.path.join(packaged, NAME, name)) as a, open(out / name) as b:
            left, right = json.load(a), json.load(b)
        assert left["episode_rewards"] == right["episode_rewards"] and left["episode_lengths"] == right["episode_lengths"]
    manifest = verify(str(out))
    assert manifest["policy_only"] == ["policy.optimizer"]
    assert "--policy-only" in manifest["package_command"]
    assert "holds the policy only" in (out / "README.md").read_text()

    model = ACKTR.load(slim, device="cpu")
    assert model.policy.optimizer.steps == 0 and not model.policy.optimizer.state
    trained = ACKTR.load(full, device="cpu")
    for p, q in zip(model.policy.parameters(), trained.policy.parameters()):
        assert torch.equal(p, q)
    # Training continues (a fresh env reset, the curvature afresh) with finite parameters.
    from stable_baselines3.common.env_util import make_vec_env

    model.set_env(make_vec_env(ENV, n_envs=16, seed=0))
    model.learn(640, reset_num_timesteps=False)
    assert model.policy.optimizer.steps > 0
    assert all(torch.isfinite(p).all() for p in model.policy.parameters())


@pytest.mark.bad_input
def test_output_is_not_overwritten_without_force(packaged: str, tmp_path) -> None:
    out = os.path.join(packaged, NAME)
    before = _digests(out)
    # moviepy hidden: package still works, says why there is no video, and writes none.
    hidden = _hide_modules(tmp_path, "moviepy")
    refused = run(*PACKAGE, "-o", out, cwd=packaged, ok=False)
    assert_one_line_error(refused, "package", NAME, "--force", code=2)
    assert _digests(out) == before

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    result = run(*PACKAGE, "-o", str(copy), "--force", "--eval-seed", "100", cwd=packaged, extra_path=hidden)
    assert "notice: no replay.mp4: moviepy is not installed" in result.stdout
    assert set(os.listdir(copy)) == LAYOUT  # replaced as a whole: the old replay.mp4 is gone
    with open(copy / "results.json") as file:
        assert json.load(file)["eval_seeds"] == [100, 101]
    verify(str(copy))
    assert sorted(os.listdir(tmp_path)) == ["copy", "hidden"]  # no temporary folder left behind


@pytest.mark.bad_input
def test_force_replaces_only_an_earlier_package_folder(packaged: str, tmp_path) -> None:
    """--force never deletes a folder that is not an earlier package output, nor one holding the run it reads."""
    precious = tmp_path / "project"
    precious.mkdir()
    (precious / "important.txt").write_text("keep me")
    logs = os.path.join(packaged, "logs")
    before_logs = sorted(os.listdir(os.path.join(logs, ALGO)))
    calls = [
        [*PACKAGE, "-o", str(precious), "--force"],  # not a package output
        [*PACKAGE, "-o", packaged, "--force"],  # contains the training run (and the working directory)
        ["load", "--from", os.path.join(packaged, NAME), "-f", str(precious / "important.txt")],  # -f is a file
    ]
    results, _ = run_in_one_process(calls, cwd=packaged)
    assert_one_line_error(results[0], "package", str(precious), "not an earlier 'sb3-natgrad package' output", code=2)
    assert_one_line_error(results[1], "package", "contains", code=2)
    assert_one_line_error(results[2], "load", "is a file", code=2)
    assert (precious / "important.txt").read_text() == "keep me"
    assert sorted(os.listdir(precious)) == ["important.txt"]
    assert sorted(os.listdir(os.path.join(logs, ALGO))) == before_logs


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("key", "value"), [("algo", "../../x"), ("env_id", "../Acrobot-v1"), ("env_id", "/abs"), ("model_file", "/etc/x.zip")]
)
def test_manifest_names_cannot_leave_the_folder(packaged: str, tmp_path, key: str, value: str) -> None:
    """A manifest whose algo / env id / model file would reach outside the package is refused before anything is read."""
    folder = tmp_path / "evil"
    shutil.copytree(os.path.join(packaged, NAME), folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest[key] = value
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=re.escape(repr(value))):
        load(str(folder), str(tmp_path / "logs"), verbose=0)
    with pytest.raises(ManifestError, match=re.escape(repr(value))):
        load_folder(str(folder))
    assert not (tmp_path / "logs").exists() and not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------------------------------
# load -> enjoy


def test_load_then_enjoy_round_trip(packaged: str, tmp_path) -> None:
    source = os.path.join(packaged, NAME)
    results, _ = run_in_one_process(
        [
            ["load", "--from", source, "-f", "logs"],
            ["load", "--from", source, "-f", "logs"],  # a second copy goes to a new run folder
            ["enjoy", "--algo", ALGO, "--env", ENV, "-f", "logs", "--no-render", "-n", "600"],
        ],
        cwd=tmp_path,
    )
    for result in results:
        assert_ok(result)
    run_dir = tmp_path / "logs" / ALGO / f"{ENV}_2"
    assert os.path.join("logs", ALGO, f"{ENV}_2", f"{ENV}.zip") in results[2].stdout  # enjoy ran the latest copy
    assert "Episode Reward" in results[2].stdout
    assert "Loading running average" in results[2].stdout  # with the packaged VecNormalize statistics
    for name in ["config.yml", "args.yml", "env_kwargs.yml", "vecnormalize.pkl"]:
        assert (run_dir / ENV / name).is_file(), name
    with open(run_dir / f"{ENV}.zip", "rb") as a, open(os.path.join(source, f"{NAME}.zip"), "rb") as b:
        assert a.read() == b.read()
    assert (run_dir / "evaluations.npz").is_file() and (run_dir / "0.monitor.csv").is_file()

    again = run("load", "--from", source, "-f", "logs", "--exp-id", "1", cwd=tmp_path, ok=False)
    assert_one_line_error(again, "load", f"{ENV}_1 already exists", "--force", code=2)


def _tamper_flip_byte(folder) -> None:
    path = folder / f"{NAME}.zip"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


TAMPERING = [
    pytest.param(_tamper_flip_byte, [f"{NAME}.zip was changed"], id="changed-zip"),
    pytest.param(lambda folder: (folder / "config.yml").unlink(), ["config.yml is missing"], id="deleted-config"),
    pytest.param(lambda folder: (folder / "notes.pkl").write_bytes(b"x"), ["unexpected file notes.pkl"], id="extra"),
    pytest.param(lambda folder: (folder / MANIFEST).unlink(), [f"no {MANIFEST}"], id="no-manifest"),
    pytest.param(lambda folder: (folder / MANIFEST).write_text("{"), ["malformed manifest"], id="bad-manifest"),
]


@pytest.mark.bad_input
def test_tampered_folders_are_refused(packaged: str, tmp_path) -> None:
    calls = []
    for param in TAMPERING:
        folder = tmp_path / param.id
        shutil.copytree(os.path.join(packaged, NAME), folder)
        param.values[0](folder)
        calls.append(["load", "--from", str(folder), "-f", "logs"])
    calls.append(["push", str(tmp_path / "changed-zip"), "--repo", "org/repo"])  # refused before any network
    results, _ = run_in_one_process(calls, cwd=tmp_path)
    for param, result in zip(TAMPERING, results):
        assert_one_line_error(result, "load", str(tmp_path / param.id), *param.values[1], code=2)
    assert_one_line_error(results[-1], "push", f"{NAME}.zip was changed", code=2)
    assert not (tmp_path / "logs").exists()  # nothing written


@pytest.mark.bad_input
def test_unsafe_metrics_archive_is_refused(packaged: str, tmp_path) -> None:
    # A consistent manifest does not make an archive safe: entries must be plain file names.
    folder = tmp_path / "evil"
    shutil.copytree(os.path.join(packaged, NAME), folder)
    with zipfile.ZipFile(folder / "train_eval_metrics.zip", "w") as archive:
        archive.writestr("../../escaped.csv", "x")
    write_manifest(str(folder), json.loads((folder / MANIFEST).read_text()))
    with pytest.raises(HubError, match=re.escape("unexpected entry '../../escaped.csv'")):
        load(str(folder), str(tmp_path / "logs"), verbose=0)
    assert not (tmp_path / "escaped.csv").exists()
    assert not (tmp_path / "logs" / ALGO / f"{ENV}_1").exists()  # not half written


# ---------------------------------------------------------------------------------------------------------------------
# The Hub, without network


def _offline_run(args: list[str], cwd, **environ: str) -> subprocess.CompletedProcess:
    env = _environ()
    for name in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_ENDPOINT"]:
        env.pop(name, None)
    # A private HF_HOME: no stored token, no cache; short timeouts in case anything tries the network.
    env.update(HF_HOME=str(cwd / "hf_home"), HF_HUB_ETAG_TIMEOUT="3", HF_HUB_DOWNLOAD_TIMEOUT="3", **environ)
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)


PUSH_FAILURES = [
    pytest.param({"HF_TOKEN": "hf_not_a_token", "HF_HUB_OFFLINE": "1"}, ["pushing to org/agent", "offline"], id="offline"),
    # Connection refused at once on the loopback: the same path as a machine without network.
    pytest.param(
        {"HF_TOKEN": "hf_not_a_token", "HF_ENDPOINT": "http://127.0.0.1:9"}, ["pushing to org/agent"], id="unreachable"
    ),
    pytest.param({"HF_ENDPOINT": "http://127.0.0.1:9"}, ["no Hugging Face token", "HF_TOKEN"], id="no-token"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("environ, needles", PUSH_FAILURES)
def test_push_without_network_fails_cleanly(packaged: str, tmp_path, environ, needles) -> None:
    result = _offline_run(["push", os.path.join(packaged, NAME), "--repo", "org/agent"], tmp_path, **environ)
    assert_one_line_error(result, "push", *needles, code=1)


@pytest.mark.bad_input
def test_load_from_hub_needs_the_trust_flag_and_the_network(tmp_path) -> None:
    refused = _offline_run(["load", "--from", "org/agent", "-f", "logs"], tmp_path, HF_ENDPOINT="http://127.0.0.1:9")
    assert_one_line_error(refused, "load", "org/agent", "--trust-remote-code", code=2)
    assert "Downloading" not in refused.stdout  # refused before any download
    offline = _offline_run(["load", "--from", "org/agent", "-f", "logs", "--trust-remote-code"], tmp_path, HF_HUB_OFFLINE="1")
    assert_one_line_error(offline, "load", "downloading org/agent", "offline", code=1)
    unreachable = _offline_run(
        ["load", "--from", "org/agent", "-f", "logs", "--trust-remote-code"], tmp_path, HF_ENDPOINT="http://127.0.0.1:9"
    )
    assert_one_line_error(unreachable, "load", "downloading org/agent", code=1)
    assert not (tmp_path / "logs").exists()


def test_load_from_a_hub_snapshot(packaged: str, tmp_path, monkeypatch) -> None:
    # The download itself needs the network; what follows it (verification, layout) is checked on a local snapshot.
    import sb3_natgrad.zoo.hub as hub

    snapshot = tmp_path / "snapshot"
    shutil.copytree(os.path.join(packaged, NAME), snapshot)
    (snapshot / ".gitattributes").write_text("*.zip filter=lfs diff=lfs merge=lfs -text\n")  # added by the Hub
    downloads = []
    monkeypatch.setattr(hub, "download", lambda repo_id, revision=None: downloads.append(repo_id) or str(snapshot))

    with pytest.raises(HubError, match="--trust-remote-code"):
        load("org/agent", str(tmp_path / "logs"), verbose=0)
    assert downloads == []
    run_dir = load("org/agent", str(tmp_path / "logs"), trust_remote_code=True, verbose=0)
    assert downloads == ["org/agent"]
    assert run_dir == str(tmp_path / "logs" / ALGO / f"{ENV}_1")
    assert os.path.isfile(os.path.join(run_dir, ENV, "vecnormalize.pkl"))
    with pytest.raises(HubError, match="holds acktr on Acrobot-v1, not env_id 'CartPole-v1'"):
        load("org/agent", str(tmp_path / "logs"), env_id="CartPole-v1", trust_remote_code=True, verbose=0)

    (snapshot / f"{NAME}.zip").write_bytes(b"not the packaged model")
    with pytest.raises(ManifestError, match=f"{NAME}.zip was changed"):
        load("org/agent", str(tmp_path / "logs"), trust_remote_code=True, verbose=0)
    # A repository pushed by rl-zoo3 has no manifest: loaded only with --algo and --env (and the trust flag).
    shutil.rmtree(snapshot)
    shutil.copytree(os.path.join(packaged, NAME), snapshot)
    (snapshot / MANIFEST).unlink()
    with pytest.raises(HubError, match="pass --algo and --env"):
        load("org/agent", str(tmp_path / "logs"), trust_remote_code=True, verbose=0)
    run_dir = load("org/agent", str(tmp_path / "logs"), algo=ALGO, env_id=ENV, trust_remote_code=True, verbose=0)
    assert run_dir.endswith(f"{ENV}_2")


def test_push_calls_the_hub_api(packaged: str, monkeypatch) -> None:
    # Without network, a stand-in HfApi records the calls push makes.
    import huggingface_hub

    from sb3_natgrad.zoo.hub import push

    calls = []

    class FakeApi:
        def __init__(self, token=None, library_name=None) -> None:
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))
            return f"https://hub.example/{repo_id}"

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = os.path.join(packaged, NAME)
    url = push(out, "org/agent", token="hf_not_a_token", verbose=0)
    assert url == "https://hub.example/org/agent"
    assert calls[0] == ("init", "hf_not_a_token")
    assert calls[1][:2] == ("create_repo", "org/agent") and calls[1][2]["exist_ok"] is True
    upload = calls[2][1]
    assert upload["repo_id"] == "org/agent" and upload["folder_path"] == out
    assert upload["delete_patterns"] == "*"  # the repository ends up with exactly the packaged files


@pytest.mark.bad_input
def test_bad_arguments_are_one_line(tmp_path) -> None:
    results, _ = run_in_one_process(
        [
            ["package", "--env", ENV, "-f", "logs"],
            ["package", "--env", ENV, "-f", "nowhere", "-o", "out"],
            ["load", "--from", "no/such/folder", "-f", "logs"],
            ["push", str(tmp_path), "--repo", "not-a-repo-id"],
        ],
        cwd=tmp_path,
    )
    assert_one_line_error(results[0], "package", "-o/--output", code=2)
    assert_one_line_error(results[1], "package", "no trained acktr model for Acrobot-v1", code=2)
    assert_one_line_error(results[2], "load", "no such folder", code=2)
    assert_one_line_error(results[3], "push", "'not-a-repo-id'", "ORG/NAME", code=2)


def test_importing_hub_is_light() -> None:
    code = "import sys, sb3_natgrad, sb3_natgrad.hub; bad = {'rl_zoo3', 'huggingface_hub'} & set(sys.modules); assert not bad"
    result = subprocess.run([sys.executable, "-c", code], env=_environ(), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr


def _has_video_backend() -> bool:
    try:
        import imageio_ffmpeg  # noqa: F401
        import moviepy  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------------
# The shipped agents

with open(os.path.join(pretrained_dir(), "index.json")) as _file:
    INDEX = json.load(_file)
# Envs whose fresh evaluation takes more than a few seconds on 2 cores: their agents' tests are marked slow.
SLOW_ENVS = {"Hopper-v5", "HalfCheetah-v5", "PongNoFrameskip-v4"}


def _agent_params() -> list:
    return [
        pytest.param(entry, id=entry["name"], marks=[pytest.mark.slow] if entry["env_id"] in SLOW_ENVS else [])
        for entry in INDEX["agents"]
    ]


def test_index_matches_the_shipped_folders() -> None:
    folders = sorted(name for name in os.listdir(pretrained_dir()) if os.path.isdir(os.path.join(pretrained_dir(), name)))
    assert folders == sorted(entry["folder"] for entry in INDEX["agents"])
    assert pretrained_agents() == INDEX["agents"]
    # The minimum: ACKTR on these envs.
    shipped = {(entry["algo"], entry["env_id"]) for entry in INDEX["agents"]}
    assert {("acktr", env) for env in ["CartPole-v1", "Acrobot-v1", "LunarLander-v3", "Pendulum-v1"]} <= shipped
    for entry in INDEX["agents"]:
        folder = os.path.join(pretrained_dir(), entry["folder"])
        manifest = verify(folder)
        assert entry["name"] == entry["folder"] == f"{entry['algo']}-{entry['env_id']}"
        assert entry["class_name"].lower() == entry["algo"]
        assert entry["algo"] in {row.name for row in ZOO_ALGORITHMS}
        assert "replay.mp4" not in manifest["files"]  # no videos in the wheel
        assert not any(name.startswith("best_model") for name in manifest["files"])
        with open(os.path.join(folder, "results.json")) as file:
            results = json.load(file)
        assert entry["mean_reward"] == results["mean_reward"] and entry["eval_seeds"] == results["eval_seeds"]
        # Fresh seeds in the test: disjoint from the stated evaluation.
        assert INDEX["test_seed"] > max(results["eval_seeds"])
        assert entry["train_command"].startswith(f"sb3-natgrad train --algo {entry['algo']} --env {entry['env_id']} ")
        assert "--seed" in entry["train_command"]


def test_the_shipped_agents_keep_the_wheel_small() -> None:
    # The wheel carries every shipped agent; model files are already compressed, so their sizes add up. 13 MB of agents
    # keeps the wheel (about 0.5 MB of code and data besides) under 15 MB. Pixel agents go in with --policy-only.
    total = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(pretrained_dir()) for name in names)
    assert total < 13 * 2**20, f"the shipped agents take {total / 2**20:.1f} MB"


@pytest.mark.parametrize("entry", _agent_params())
def test_shipped_agent_reaches_its_stated_return(entry: dict) -> None:
    model, env = load_pretrained(entry["algo"], entry["env_id"], device="cpu")
    assert type(model).__name__ == entry["class_name"]
    assert model.get_env() is env
    seeds = [INDEX["test_seed"] + index for index in range(INDEX["test_episodes"])]
    returns, _ = evaluate(model, env, seeds, deterministic=entry["is_deterministic"])
    env.close()
    mean = float(np.mean(returns))
    assert abs(mean - entry["mean_reward"]) <= entry["tolerance"], (mean, entry["mean_reward"], entry["tolerance"])


def test_load_pretrained_works_with_evaluate_policy() -> None:
    from stable_baselines3.common.evaluation import evaluate_policy

    model, env = load_pretrained("acktr", "CartPole-v1", device="cpu", seed=123)
    mean_reward, _ = evaluate_policy(model, env, n_eval_episodes=3)
    assert mean_reward >= 475  # CartPole-v1's "solved" threshold


@pytest.mark.bad_input
def test_load_pretrained_unknown_pair_lists_the_agents() -> None:
    with pytest.raises(HubError, match=r"no pretrained acktr agent for MountainCar-v0.*\('acktr', 'CartPole-v1'\)"):
        load_pretrained("acktr", "MountainCar-v0")


@pytest.mark.bad_input
def test_load_pretrained_refuses_a_changed_file(tmp_path, monkeypatch) -> None:
    import sb3_natgrad.zoo.pretrained as pretrained

    shipped = tmp_path / "pretrained"
    shutil.copytree(pretrained_dir(), shipped)
    (shipped / "acktr-CartPole-v1" / "config.yml").write_text("n_envs: 1\n")
    monkeypatch.setattr(pretrained, "pretrained_dir", lambda: str(shipped))
    with pytest.raises(ManifestError, match=r"config\.yml was changed"):
        load_pretrained("acktr", "CartPole-v1")
