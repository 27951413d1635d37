"""The demo processes every frame by default, like a file; `--realtime` plays it (and video files
and image folders) like a live camera, on the clock, where a slow model drops frames."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from cli_helpers import count_lines, run_cli
from tests_helpers import count_frames

from solo_deploy.runtime.sinks import h264_unavailable
from solo_deploy.runtime.sources import DEMO_FPS, DemoSource, make_source


def test_demo_is_file_like_by_default() -> None:
    src = make_source("demo", demo_frames=4).open()
    assert isinstance(src, DemoSource) and not src.live and not src.realtime
    assert src.pace_fps is None and src.due(10) is None  # never waits: frames come as fast as taken
    assert src.expected_frames(1, None) == 4 and src.expected_frames(2, 1) == 1  # the progress bar's total
    assert src.output_fps() == DEMO_FPS  # its video still plays at 30 fps


def test_realtime_demo_is_paced_like_a_camera() -> None:
    src = make_source("demo", demo_frames=4, realtime=True).open()
    assert src.live and src.realtime and src.pace_fps == DEMO_FPS
    assert src.expected_frames(1, None) is None  # live: frames may be dropped, no total promised
    t0 = src.due(0)
    # Frame i is due i / fps after the first; a skipped frame (--vid-stride) keeps its slot.
    assert src.due(3) - t0 == pytest.approx(3 / DEMO_FPS) and src.due(10) - t0 == pytest.approx(10 / DEMO_FPS)


def test_realtime_files_and_folders_play_at_their_rate(tmp_path) -> None:
    path = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (32, 24))
    for i in range(3):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    video = make_source(str(path), realtime=True).open()
    try:
        assert video.live and video.pace_fps == pytest.approx(12.0)
        assert video.due(6) - video.due(0) == pytest.approx(0.5)
    finally:
        video.close()
    assert not make_source(str(path)).live  # by default a file never loses a frame
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    folder = make_source(str(tmp_path / "*.png"), realtime=True).open()
    assert folder.live and folder.pace_fps == 30.0  # images have no rate: that of their video


def test_demo_max_frames_processes_exactly_n(tmp_path, tiny_model_file) -> None:
    """The README's `run --video demo --max-frames N`: N frames processed, none dropped, however
    slow the machine; with --realtime it is a live source (frames may be dropped)."""
    js, out, summary = tmp_path / "f.jsonl", tmp_path / "out.mp4", tmp_path / "s.json"
    proc = run_cli("run", "--video", "demo", "--max-frames", "12", "--model", tiny_model_file, "--backend", "torch",
                   "--save-json", js, "-o", out, "--summary-json", summary, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert count_lines(js) == 12
    assert [json.loads(line)["frame"] for line in js.read_text().splitlines()] == list(range(12))
    s = json.loads(summary.read_text())
    assert s["frames"] == 12 and s["dropped"] == 0 and s["streams"][0]["live"] is False
    assert count_frames(out) == 12
    codec = "mp4v" if h264_unavailable() else "h264"
    assert [o.get("codec") for o in s["outputs"] if "video" in o] == [codec] and f"12 frames, {codec}" in proc.stdout

    proc = run_cli("run", "--video", "demo", "--max-frames", "3", "--model", tiny_model_file, "--backend", "torch",
                   "--realtime", "--summary-json", summary, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    s = json.loads(summary.read_text())
    st = s["streams"][0]
    assert st["live"] is True and st["captured"] == 3 and st["processed"] + st["dropped"] == 3


def test_help_names_realtime() -> None:
    proc = run_cli("run", "--help", env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert proc.returncode == 0 and "--realtime" in proc.stdout
