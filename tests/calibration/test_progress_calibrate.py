"""calibrate's pass over the images: a bar on a terminal, one-line counts for a log (--log-level info) instead."""
from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import sys
import termios

import numpy as np
import pytest

from solo_deploy.calibration.quantize import collect_ranges


@pytest.fixture()
def tiny_onnx(tiny_model_file, tmp_path):
    from solo_deploy.export.onnx_export import export_onnx

    return export_onnx(tiny_model_file, tmp_path / "tiny.onnx", check_parity=False).path


IMAGES = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)


def test_log_gets_counts_and_no_bar(tiny_onnx, monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    said: list[str] = []
    ranges = collect_ranges(tiny_onnx, IMAGES, threads=1, chunk=2, progress=said.append)
    assert len(ranges.data) > 10
    assert said == ["calibrating: 2/4 images", "calibrating: 4/4 images"]
    assert sys.stderr.getvalue() == ""


def test_terminal_gets_a_bar_instead_of_count_lines(tiny_onnx, monkeypatch):
    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # tqdm draws nothing at 0 columns
    term = os.fdopen(side, "w")
    monkeypatch.setattr(sys, "stderr", term)
    said: list[str] = []
    try:
        collect_ranges(tiny_onnx, IMAGES, threads=1, chunk=2, progress=said.append)
        term.flush()
        text = ""
        while select.select([main], [], [], 1.0)[0]:
            text += os.read(main, 65536).decode(errors="replace")
    finally:
        term.close()
        os.close(main)
    assert said == []
    assert "calibrating:" in text and "/4 [" in text and "img" in text, text
