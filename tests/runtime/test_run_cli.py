"""`solo-deploy run` as users call it, in subprocesses: bad input exits 2 in one line, fast; the
default model on the demo works offline (exported to the ONNX cache on first use); SIGINT
leaves a playable video and complete JSON lines."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests_helpers import count_frames

# `python -m`-free entry that works before and after commands.py registers `run`.
ENTRY = "import solo_deploy.cli.cmd_run; from solo_deploy.cli.app import main; main()"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env.pop("DISPLAY", None)
    return env


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", ENTRY, "run", *args], check=False, capture_output=True, text=True,
                          env=env or _env(), timeout=timeout)


def _assert_one_line_error(proc: subprocess.CompletedProcess, words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "WARN" not in proc.stderr


def _placeholder_model(folder: Path) -> Path:
    """A file with a model suffix: these runs fail before any model is read (no torch import)."""
    path = folder / "model.safetensors"
    path.write_bytes(b"\0" * 16)
    return path


def test_missing_camera_exits_2_fast(tmp_path) -> None:
    t0 = time.perf_counter()
    proc = _cli("--video", "cam7", "--model", str(_placeholder_model(tmp_path)))
    assert time.perf_counter() - t0 < 5.0
    _assert_one_line_error(proc, "camera 7")


def test_bad_inputs_exit_2(tmp_path) -> None:
    model = str(_placeholder_model(tmp_path))
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = [
        (["--video", str(tmp_path / "missing.mp4"), "--model", model], "not found"),
        (["--video", str(tmp_path / "notes.txt"), "--model", model], "unsupported file type"),
        (["--video", str(tmp_path / "empty"), "--model", model], "no images"),
        (["--video", "demo", "--model", model, "--backend", "onnxruntime"], "needs an .onnx model"),
        (["--video", "demo", "--model", model, "--output", str(tmp_path / "o.mkv")], ".mp4"),
    ]
    for args, words in cases:
        _assert_one_line_error(_cli(*args), words)
    missing = _env(SOLO_DEPLOY_DEFAULT_MODEL=str(tmp_path / "none.safetensors"))
    _assert_one_line_error(_cli("--video", "demo", env=missing), "default model is not installed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "notes.txt"]  # nothing written


def _wait_for_lines(folder: Path, proc: subprocess.Popen, timeout: float) -> None:
    """Until the (hidden, temporary) JSONL file has content: frames are flowing."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()}")
        if any(p.name.startswith(".out.jsonl") and p.stat().st_size > 0 for p in folder.iterdir()):
            return
        time.sleep(0.1)
    raise AssertionError("no frame was written in time")


def test_demo_with_default_model_then_sigint(tmp_path, tiny_model_file) -> None:
    """No --model, no --backend: the default model is exported to the ONNX cache and runs on
    the demo played live; Ctrl-C then stops it with finalised outputs and exit 0."""
    out, js, summary = tmp_path / "out.mp4", tmp_path / "out.jsonl", tmp_path / "summary.json"
    env = _env(SOLO_DEPLOY_DEFAULT_MODEL=str(tiny_model_file), SOLO_DEPLOY_CACHE=str(tmp_path / "cache"))
    # --realtime: the demo plays as a live camera (10 s), still running when the signal comes.
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, "run", "--video", "demo", "--realtime", "-o", str(out),
                             "--save-json", str(js), "--summary-json", str(summary)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_lines(tmp_path, proc, timeout=90)
        time.sleep(0.5)
        assert not out.exists() and not js.exists()  # still temporary names while running
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "SIGINT" in stderr and "Traceback" not in stderr
    s = json.loads(summary.read_text())
    assert s["backend"] == "onnxruntime" and s["stopped"] == "SIGINT" and s["frames"] > 0
    assert f"frames {s['frames']}" in stdout
    assert any(p.suffix == ".onnx" for p in (tmp_path / "cache").rglob("*"))
    text = js.read_text()
    assert text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == s["frames"] and lines[0]["source"] == "demo"
    assert count_frames(out) == s["frames"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("delay", [0.3, 1.5, "first-frames"], ids=["start-up", "loading", "mid-stream"])
def test_signal_at_any_point_leaves_nothing_or_complete_outputs(tmp_path, tiny_model_file, sig, delay) -> None:
    """A signal during start-up, model loading or mid-stream: either no output file at all, or a
    playable video and only complete JSON lines, as many as the frames it reports; no traceback,
    no temporary file left behind."""
    out, js = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    # The console script's own entry (its start-up window is what a signal at 0.3 s hits).
    entry = "from solo_deploy.cli import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", entry, "run", "--video", "demo", "--realtime", "--model",
                             str(tiny_model_file), "--backend", "torch", "-o", str(out), "--save-json", str(js)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if delay == "first-frames":
            _wait_for_lines(tmp_path, proc, timeout=90)
        else:
            time.sleep(float(delay))
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in stderr, stderr
    assert proc.returncode in (0, 1, 130, 143), stderr
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not left, (left, stderr)  # no temporary left
    if js.exists() or out.exists():
        assert js.exists() and out.exists(), ("one output finalised without the other", stderr)
        text = js.read_text()
        assert text == "" or text.endswith("\n")
        lines = [json.loads(line) for line in text.splitlines()]  # every line parses: none is cut
        assert count_frames(out) == len(lines)
    if delay == "first-frames":
        assert js.exists() and js.read_text().count("\n") > 0


def test_help_lists_options() -> None:
    proc = _cli("--help", env=_env(COLUMNS="200", TERMINAL_WIDTH="200"))
    assert proc.returncode == 0
    for opt in ("--video", "--model", "--backend", "--device", "--output", "--save-json", "--show", "--conf",
                "--max-frames", "--vid-stride", "--reconnect-timeout", "--log-level"):
        assert opt in proc.stdout
