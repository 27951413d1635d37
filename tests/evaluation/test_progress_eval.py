"""`solo-deploy eval` draws a progress bar on a terminal and nothing on a pipe (stderr keeps the one-line promise)."""
from __future__ import annotations

from pathlib import Path

from cli_helpers import run_cli, run_cli_tty

MODEL = Path(__file__).resolve().parents[2] / "solo_deploy" / "assets" / "default.safetensors"
ARGS = ("eval", str(MODEL), "--backend", "torch", "-n", "3")


def test_terminal_gets_a_bar_that_clears_itself():
    code, out, err = run_cli_tty(*ARGS)
    assert code == 0, out + err
    assert "eval default.safetensors:" in err and "/3 [" in err and "img/s" in err, err
    assert "eval default.safetensors" not in out  # the bar is on stderr only
    assert "(3 images," in out and "AP50" in out


def test_pipe_gets_no_bar():
    proc = run_cli(*ARGS)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "(3 images," in proc.stdout and "img/s" not in proc.stdout
