"""Usage mistakes at the installed `solo-deploy` script: exit 2, one line naming the command and
the problem, never a traceback (issue #12, defect 1). Every command is covered."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli, solo_deploy_exe

# (command words, a wrong-type option for it)
COMMANDS = [
    (["train"], ["--epochs", "abc"]),
    (["eval", "m.safetensors"], ["--images", "abc"]),
    (["predict", "m.safetensors", "--source", "x.png"], ["--conf", "abc"]),
    (["export", "m.safetensors", "-o", "m.onnx"], ["--batch", "abc"]),
    (["calibrate", "m.onnx", "-o", "int8"], ["--images", "abc"]),
    (["run", "--video", "demo"], ["--max-frames", "abc"]),
    (["bench", "m.onnx"], ["--frames", "abc"]),
    (["info"], ["--presets", "--json", "--bogus-flag"]),
    (["data", "synthetic", "-o", "d"], ["--images", "abc"]),
]
IDS = [" ".join(c[0][:2]) for c in COMMANDS]


@pytest.mark.parametrize("words,wrong", COMMANDS, ids=IDS)
def test_unknown_option_is_one_line(words, wrong, tmp_path):
    proc = run_cli(*words, "--bogus", cwd=tmp_path)
    line = assert_one_line_error(proc, 2, "--bogus")
    assert f"solo-deploy {words[0]}" in line


@pytest.mark.parametrize("words,wrong", COMMANDS, ids=IDS)
def test_wrong_type_is_one_line(words, wrong, tmp_path):
    proc = run_cli(*words, *wrong, cwd=tmp_path)
    assert_one_line_error(proc, 2, wrong[-2] if wrong[-1] == "abc" else wrong[-1])


@pytest.mark.parametrize("words,needle", [
    (["eval"], "model"), (["predict", "--source", "x.png"], "model"), (["export", "-o", "m.onnx"], "model"),
    (["export", "m.safetensors"], "--output"), (["calibrate", "-o", "x"], "model"),
    (["calibrate", "m.onnx"], "--output"), (["bench"], "models"), (["run"], "--video"),
    (["data", "synthetic"], "--output"), (["predict", "m.safetensors"], "--source"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_missing_argument_or_option_is_one_line(words, needle, tmp_path):
    assert_one_line_error(run_cli(*words, cwd=tmp_path), 2, "missing", needle)


def test_unknown_command_suggests_the_close_one(tmp_path):
    line = assert_one_line_error(run_cli("predcit", "m.safetensors", cwd=tmp_path), 2, "predcit")
    assert "predict" in line.replace("predcit", "")
    assert_one_line_error(run_cli("frobnicate", cwd=tmp_path), 2, "frobnicate")
    assert_one_line_error(run_cli("data", "synthtic", cwd=tmp_path), 2, "synthtic", "synthetic")


def test_help_and_bare_command_exit_zero(tmp_path):
    for args in ([], ["--help"], ["data"], ["run", "--help"], ["export", "-h"]):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "Usage" in proc.stdout and "Traceback" not in proc.stderr, args


def test_python_dash_m_answers_the_same(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "solo_deploy", "frobnicate"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)
    assert_one_line_error(proc, 2, "frobnicate")


def test_no_direct_click_import():
    """Current typer vendors click (the `click` package may be absent): our code must not need it."""
    import re

    root = Path(__file__).resolve().parents[2] / "solo_deploy"
    offenders = [str(p) for p in root.rglob("*.py")
                 if re.search(r"^\s*(import click|from click)", p.read_text(encoding="utf-8"), re.M)]
    assert offenders == []


TYPER_LOWER = os.environ.get("SOLO_DEPLOY_TEST_TYPER_DIR")


@pytest.mark.skipif(not TYPER_LOWER, reason="the lowest supported typer is installed by .ci/run into a folder named "
                    "by SOLO_DEPLOY_TEST_TYPER_DIR; set it to run this test elsewhere")
def test_lowest_supported_typer(tmp_path):
    """pyproject's lower bound for typer (with the click it used) still gives one-line usage errors
    and runs a command."""
    import re

    import tomllib

    env = {"PYTHONPATH": TYPER_LOWER}
    check = subprocess.run([sys.executable, "-c", "import typer, importlib.metadata as m; "
                            "print(m.version('typer'), typer.__file__)"], capture_output=True, text=True,
                           env={**os.environ, **env}, timeout=60)
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    lower = next(re.search(r">=([\d.]+)", d).group(1) for d in pyproject["project"]["dependencies"]
                 if d.startswith("typer"))
    assert check.stdout.split()[0] == lower + ".0" * (2 - lower.count(".")), check.stdout + check.stderr
    assert check.stdout.split()[1].startswith(TYPER_LOWER)
    assert_one_line_error(run_cli("frobnicate", cwd=tmp_path, env=env), 2, "frobnicate")
    assert_one_line_error(run_cli("eval", cwd=tmp_path, env=env), 2, "missing", "model")
    assert_one_line_error(run_cli("run", "--video", "demo", "--bogus", cwd=tmp_path, env=env), 2, "--bogus")
    assert_one_line_error(run_cli("predict", "m", "--source", "x", "--device", "gpu", cwd=tmp_path, env=env), 2,
                          "--device", "gpu")
    proc = run_cli("data", "synthetic", "-o", "d", "--images", "2", "--imgsz", "64", "64", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "d" / "annotations.json").is_file()
    assert Path(solo_deploy_exe()).exists()


@pytest.mark.parametrize("args,needles", [
    (["eval", "m.safetensors", "--data", "cocoo"], ["not found", "cocoo"]),
    (["eval", "m.safetensor"], ["not found", "m.safetensor"]),
    (["run", "--video", "clip.mp5", "--model", "m.safetensors"], ["not found", "clip.mp5"]),
    (["run", "--video", "cam7", "--model", "m.safetensors"], ["camera 7"]),
    (["predict", "m.safetensors", "--source", "photos", "--backend", "onnxrutime"], ["onnxrutime", "onnxruntime"]),
    (["train", "--preset", "solov2-cpu-r81", "-o", "r"], ["solov2-cpu-r81", "solov2-cpu-r18"]),
    (["calibrate", "m.safetensors", "-o", "c", "--method", "minmx"], ["minmx", "minmax"]),
    (["export", "m.safetensors", "-o", "x.onnx", "--format", "onx"], ["onx", "onnx"]),
    (["eval", "m.safetensors", "--log-level", "verbose"], ["verbose", "debug"]),
], ids=lambda v: " ".join(v[:2]) if isinstance(v, list) and v and v[0] in (
    "eval", "run", "predict", "train", "calibrate", "export") else None)
def test_typos_name_what_was_typed_and_what_exists(args, needles, tmp_path):
    """Typos in file names and choices: one line that names the typo (and the right choices)."""
    import cv2
    import numpy as np

    (tmp_path / "m.safetensors").write_bytes(b"")  # typos are caught before the model is read
    (tmp_path / "photos").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "p.png"), np.zeros((8, 8, 3), np.uint8))
    assert_one_line_error(run_cli(*args, cwd=tmp_path), 2, *needles)


def test_every_command_keeps_every_option():
    """The options of release 0.2.1 (tests/cli/cli_options_0.2.1.json, read from its Typer app)
    are all still there: restructuring may add, never drop or rename."""
    import json

    import typer

    from solo_deploy.cli import commands  # noqa: F401 - registers the commands
    from solo_deploy.cli.app import app

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if subs:
            return {k: v for name, sub in subs.items() for k, v in walk(sub, [*path, name]).items()}
        return {" ".join(path): {p.name: sorted([*p.opts, *getattr(p, "secondary_opts", [])]) for p in cmd.params}}

    now = walk(typer.main.get_command(app), [])
    before = json.loads((Path(__file__).with_name("cli_options_0.2.1.json")).read_text())
    missing = [f"{cmd} {opt}" for cmd, params in before.items() for name, opts in params.items() for opt in opts
               if cmd not in now or opt not in now[cmd].get(name, [])]
    assert missing == []
