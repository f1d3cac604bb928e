import json
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).parent.parent / "benchmarks" / "mujoco_table.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def _results(tmp_path: pathlib.Path) -> pathlib.Path:
    runs = [
        dict(algo="a2c", env="Hopper-v5", seed=10, final_100_episode_mean=400.0),
        dict(algo="a2c", env="Hopper-v5", seed=11, final_100_episode_mean=600.0),
        dict(algo="acktr", env="Hopper-v5", seed=10, final_100_episode_mean=450.0),
        dict(algo="acktr", env="Ant-v5", seed=10, final_100_episode_mean=-5.0),
        dict(algo="a2c", env="Ant-v5", seed=10, final_100_episode_mean=10.0),
    ]
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(runs))
    return path


def test_medians_and_verdicts(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "ck" / "acktr_Hopper-v5_11" / "current"
    state.mkdir(parents=True)
    (state / "state.json").write_text(json.dumps({"curve": [[300000, 123.4]]}))
    result = _run("--results", str(_results(tmp_path)), "--labels", "a2c", "acktr", "--checkpoint-dir", str(tmp_path / "ck"))
    assert result.returncode == 0, result.stderr
    rows = {line.split(" | ")[0].strip("| "): line for line in result.stdout.splitlines() if line.startswith("| ")}
    # A2C's median over its two finished seeds is 500, above ACKTR's one finished seed; the run under way counts in none.
    assert rows["Hopper-v5"] == (
        "| Hopper-v5 | 400.0 / 600.0 / - | 500.0 (2 of 3) | 450.0 / (123.4 at 300k) / - | 450.0 (1 of 3) | **no** |"
    )
    assert rows["Ant-v5"].endswith("| **no** |")
    assert rows["Reacher-v5"].endswith("| - |  |")
    assert "acktr's median is at or above a2c's on 0 of the 2 tasks" in result.stdout


def test_a_label_without_runs_is_refused_by_name(tmp_path: pathlib.Path) -> None:
    result = _run("--results", str(_results(tmp_path)), "--labels", "a2c", "acktr-typo")
    assert result.returncode == 2
    assert "'acktr-typo'" in result.stderr and "a2c, acktr" in result.stderr


def test_a_missing_results_file_is_refused_by_name(tmp_path: pathlib.Path) -> None:
    result = _run("--results", str(tmp_path / "none.json"))
    assert result.returncode == 2 and "none.json: no such file" in result.stderr


def test_several_results_files_are_merged_and_conflicts_refused(tmp_path: pathlib.Path) -> None:
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps([dict(algo="acktr", env="Hopper-v5", seed=11, final_100_episode_mean=700.0)]))
    result = _run("--results", str(_results(tmp_path)), str(sweep), "--labels", "a2c", "acktr")
    assert result.returncode == 0, result.stderr
    # ACKTR's seeds 10 and 11 come from two files: median 575 above A2C's 500
    assert "| Hopper-v5 | 400.0 / 600.0 / - | 500.0 (2 of 3) | 450.0 / 700.0 / - | 575.0 (2 of 3) | yes |" in result.stdout
    sweep.write_text(json.dumps([dict(algo="acktr", env="Hopper-v5", seed=10, final_100_episode_mean=451.0)]))
    result = _run("--results", str(_results(tmp_path)), str(sweep), "--labels", "a2c", "acktr")
    assert result.returncode == 2
    assert "('acktr', 'Hopper-v5', 10)" in result.stderr and "450.0 and 451.0" in result.stderr


def test_update_writes_the_table_between_the_markers_only(tmp_path: pathlib.Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# before\n<!-- mujoco-table -->\nold table\n<!-- /mujoco-table -->\nafter\n")
    result = _run("--results", str(_results(tmp_path)), "--labels", "a2c", "acktr", "--update", str(readme))
    assert result.returncode == 0, result.stderr
    text = readme.read_text()
    assert text.startswith("# before\n<!-- mujoco-table -->\n| task | a2c, seeds 10 / 11 / 12 |")
    assert "old table" not in text and text.endswith(
        "on 0 of the 2 tasks where both have a finished run.\n<!-- /mujoco-table -->\nafter\n"
    )
    assert "| Hopper-v5 | 400.0 / 600.0 / - |" in text and result.stdout.startswith("wrote the table")


def test_update_refuses_a_file_without_both_markers_and_leaves_it_alone(tmp_path: pathlib.Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- mujoco-table -->\nno end marker\n")
    result = _run("--results", str(_results(tmp_path)), "--labels", "a2c", "acktr", "--update", str(readme))
    assert result.returncode == 2 and "'<!-- /mujoco-table -->', found 0" in result.stderr
    assert readme.read_text() == "<!-- mujoco-table -->\nno end marker\n"


def test_update_with_other_markers(tmp_path: pathlib.Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- mujoco-table -->\nkeep\n<!-- /mujoco-table -->\n<!-- sweep -->\n<!-- /sweep -->\n")
    result = _run(
        "--results", str(_results(tmp_path)), "--labels", "a2c", "acktr", "--update", str(readme), "--marker", "sweep"
    )
    assert result.returncode == 0, result.stderr
    text = readme.read_text()
    assert text.startswith("<!-- mujoco-table -->\nkeep\n<!-- /mujoco-table -->\n<!-- sweep -->\n| task |")
