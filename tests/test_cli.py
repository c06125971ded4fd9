"""The `pose-edge` command: help on every verb, one-line errors, the data and eval verbs end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from pose_edge import __version__
from pose_edge.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pose_edge.cli", *args], capture_output=True, text=True)


def _all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _all_commands(cmd, (*prefix, name))


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("verb", list(_all_commands(main)), ids=" ".join)
def test_every_verb_has_help(verb):
    result = CliRunner().invoke(main, [*verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output.splitlines()) > 3


def test_synth_then_eval_ground_truth(tmp_path):
    out = tmp_path / "d"
    r = _run("data", "synth", "--out", str(out), "--train", "3", "--val", "3", "--size", "160x120", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["train"]["images"] == 3 and stats["val"]["images"] == 3
    r = _run("eval", "gt", "--data", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("damage", ["truncate", "not_json", "missing_key", "short_keypoints"])
def test_corrupt_annotations_give_one_line_naming_the_file(synth_data, tmp_path, damage):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(synth_data, data)
    ann = data / "annotations" / "person_keypoints_val.json"
    text = ann.read_text()
    if damage == "truncate":
        ann.write_text(text[: len(text) // 2])
    elif damage == "not_json":
        ann.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    else:
        d = json.loads(text)
        if damage == "missing_key":
            del d["images"]
        else:
            d["annotations"][0]["keypoints"] = d["annotations"][0]["keypoints"][:-3]
        ann.write_text(json.dumps(d))
    if damage == "short_keypoints":  # a bad record: left out with a one-line warning, refused under --strict
        r = _run("eval", "gt", "--data", str(data))
        assert r.returncode == 0 and r.stderr.count("\n") == 1 and "1 keypoints not 51 numbers" in r.stderr, r.stderr
    r = _run("eval", "gt", "--data", str(data), *(["--strict"] if damage == "short_keypoints" else []))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(ann) in lines[0] and "Traceback" not in r.stderr


def test_missing_data_folder_says_what_to_do(tmp_path):
    r = _run("eval", "gt", "--data", str(tmp_path))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "pose-edge data synth" in r.stderr


def test_bad_size_is_a_usage_error(tmp_path):
    r = _run("data", "synth", "--out", str(tmp_path), "--size", "big")
    assert r.returncode == 2 and "WIDTHxHEIGHT" in r.stderr


def test_selftest_passes_its_cpu_checks():
    r = _run("selftest", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    checks = json.loads(r.stdout)
    assert len(checks) >= 2 and all(c["ok"] for c in checks)


def test_selftest_gpu_without_a_gpu_says_why():
    from pose_edge.runtime.gpu import gpu_status

    if gpu_status()[0]:
        pytest.skip("this machine has a GPU")
    r = _run("selftest", "--gpu")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "needs a GPU" in r.stderr
