"""Helpers for the tests that run the installed `solo-deploy` script as a person would."""
from __future__ import annotations

import fcntl
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np


def solo_deploy_exe() -> str:
    """The installed console script: beside this interpreter (a venv's bin/), else on PATH."""
    here = Path(sys.executable).with_name("solo-deploy")
    found = str(here) if here.exists() else shutil.which("solo-deploy")
    if not found:
        raise RuntimeError("the solo-deploy console script is not installed: pip install -e '.[dev]'")
    return found


def run_cli(*args: str, cwd: str | os.PathLike[str] | None = None, timeout: float = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``solo-deploy ARGS`` as a subprocess, like a shell does; stdin closed."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("SOLO_DEPLOY_DEBUG", None)
    return subprocess.run([solo_deploy_exe(), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=full_env)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int = 2, *needles: str) -> str:
    """The promise of the README: exit ``code``, exactly one line on stderr, no traceback."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == code, f"exit {proc.returncode} != {code}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, f"{len(lines)} stderr lines:\n{proc.stderr}"
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def write_exif_jpeg(path: Path, image_bgr: np.ndarray, orientation: int) -> None:
    """A JPEG whose pixels are stored as ``image_bgr`` with an EXIF Orientation tag, as phones write."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1]))
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, quality=95, exif=exif.tobytes())


def count_lines(path: Path) -> int:
    """Non-empty lines of a text file (JSON lines)."""
    return sum(1 for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip())


def run_cli_tty(*args: str, timeout: float = 300) -> tuple[int, str, str]:
    """``solo-deploy ARGS`` with stderr on a pseudo-terminal (100 columns: tqdm draws nothing at 0)
    and stdout on a pipe, as a person's terminal shows progress bars -> (exit code, stdout, stderr)."""
    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TQDM_DISABLE", None)
    proc = subprocess.Popen([solo_deploy_exe(), *map(str, args)], stdout=subprocess.PIPE, stderr=side,
                            stdin=subprocess.DEVNULL, env=env)
    os.close(side)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read().decode()
    proc.wait(timeout=timeout)
    os.close(main)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")
