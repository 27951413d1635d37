"""Frame sources: parsing --video values, video files (strides, truncation), images, pacing, the
demo, and a network stream served by ffmpeg over loopback that drops and comes back."""
from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from solo_deploy.errors import BadInputError
from solo_deploy.runtime.sources import (
    CameraSource,
    DemoSource,
    ImageFolderSource,
    IterableSource,
    StreamSource,
    VideoFileSource,
    make_source,
    open_source,
    redact,
)
from solo_deploy.testing import free_port, serve_mpegts

SMALL = (64, 96)  # (H, W) of the test videos: fast to render and decode


def _write_video(path: Path, n: int, fps: float = 30.0) -> Path:
    from solo_deploy.data.synthetic import SyntheticConfig, write_video

    write_video(path, n, seed=7, cfg=SyntheticConfig(image_hw=SMALL), fps=fps)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return _write_video(tmp_path_factory.mktemp("vid") / "clip.mp4", 12)


def _all(src, **kw) -> list:
    stop = threading.Event()
    try:
        return list(src.frames(stop, **kw))
    finally:
        src.close()


# ---------------------------------------------------------------------------------------------
# Parsing and bad input
# ---------------------------------------------------------------------------------------------
def test_parse_kinds(tmp_path, video) -> None:
    assert isinstance(make_source("demo"), DemoSource)
    assert isinstance(make_source("cam3"), CameraSource) and make_source("3").index == 3
    assert isinstance(make_source("rtsp://user:pw@127.0.0.1:8554/live"), StreamSource)
    assert isinstance(make_source(str(video)), VideoFileSource)
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    folder = make_source(str(tmp_path))
    assert isinstance(folder, ImageFolderSource) and [p.name for p in folder.files] == ["a.jpg", "b.png"]
    assert make_source(str(tmp_path / "*.png")).frame_count == 1
    assert make_source(str(tmp_path / "a.jpg")).frame_count == 1


def test_redacts_credentials() -> None:
    assert redact("rtsp://admin:secret@10.0.0.1/x") == "rtsp://***@10.0.0.1/x"
    assert "secret" not in make_source("rtsp://admin:secret@127.0.0.1/x").name


@pytest.mark.parametrize("spec, words", [
    ("does/not/exist.mp4", "not found"),
    ("ftp://127.0.0.1/x.mp4", "unsupported stream address"),
    ("", "empty"),
])
def test_bad_specs(spec: str, words: str) -> None:
    with pytest.raises(BadInputError, match=words):
        make_source(spec)


def test_bad_files(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BadInputError, match="unsupported file type '.txt'"):
        make_source(str(tmp_path / "notes.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no images"):
        make_source(str(tmp_path / "empty"))
    with pytest.raises(BadInputError, match="no images match"):
        make_source(str(tmp_path / "*.png"))
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(BadInputError, match="empty"):
        open_source(str(tmp_path / "zero.mp4"))
    (tmp_path / "junk.mp4").write_bytes(b"\x00not a video" * 100)
    with pytest.raises(BadInputError, match="cannot open video"):
        open_source(str(tmp_path / "junk.mp4"))


def test_missing_camera_fails_fast() -> None:
    t0 = time.perf_counter()
    with pytest.raises(BadInputError, match="camera 7"):
        open_source("cam7")
    assert time.perf_counter() - t0 < 5.0


def test_refused_stream_fails_fast() -> None:
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(BadInputError, match="cannot open stream"):
        open_source(f"http://127.0.0.1:{port}/live.ts", open_timeout=2.0)
    assert time.perf_counter() - t0 < 5.0


# ---------------------------------------------------------------------------------------------
# Files and images
# ---------------------------------------------------------------------------------------------
def test_video_file_frames_stride_and_limit(video) -> None:
    src = open_source(str(video))
    assert not src.live and src.frame_count == 12 and src.fps == pytest.approx(30.0)
    frames = _all(src)
    assert len(frames) == 12 and src.status == "ended" and not src.warnings
    assert frames[0].image.shape == (*SMALL, 3) and frames[0].image.dtype == np.uint8
    assert [f.index for f in frames] == list(range(12))
    assert frames[3].media_time == pytest.approx(0.1)
    src = open_source(str(video))
    assert src.expected_frames(stride=5) == 3
    assert [f.index for f in _all(src, stride=5)] == [0, 5, 10]
    src = open_source(str(video))
    assert src.expected_frames(stride=2, max_frames=4) == 4
    assert [f.index for f in _all(src, stride=2, max_frames=4)] == [0, 2, 4, 6]


def test_truncated_avi_processes_what_decodes(tmp_path) -> None:
    full = _write_video(tmp_path / "full.avi", 20)
    data = full.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    src = open_source(str(cut))
    frames = _all(src)
    assert 3 <= len(frames) < 20
    assert src.status == "truncated" and "truncated" in src.warnings[-1]


def test_mp4_cut_before_its_index_is_bad_input(tmp_path, video) -> None:
    # OpenCV writes the MP4 index (moov) last: a cut file cannot even be opened.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[:-2000])
    with pytest.raises(BadInputError, match="cannot open video"):
        open_source(str(cut))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_truncated_faststart_mp4(tmp_path, video) -> None:
    fast = tmp_path / "fast.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(video), "-c", "copy", "-movflags", "+faststart",
                    str(fast)], check=True, timeout=30)
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    src = open_source(str(cut))
    frames = _all(src)
    assert 1 <= len(frames) < 12 and src.status == "truncated"


def test_image_folder_skips_unreadable(tmp_path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((10, 12, 3), i, np.uint8))
    (tmp_path / "1b.png").write_bytes(b"not a png")
    src = open_source(str(tmp_path))
    frames = _all(src)
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 1, 2]
    assert len(src.warnings) == 1 and "1b.png" in src.warnings[0]


# ---------------------------------------------------------------------------------------------
# Live pacing and the demo
# ---------------------------------------------------------------------------------------------
def test_live_iterable_is_paced_and_stops() -> None:
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(10)]
    src = IterableSource(frames, fps=50.0, live=True)
    t0 = time.perf_counter()
    got = _all(src)
    assert len(got) == 10 and time.perf_counter() - t0 >= 9 / 50 - 0.01
    assert all(b.t_capture - a.t_capture > 0.01 for a, b in itertools.pairwise(got))
    # A stop ends a paced source promptly, even between frames.
    src = IterableSource((np.zeros((4, 4, 3), np.uint8) for _ in range(1000)), fps=2.0, live=True)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.perf_counter()
    n = sum(1 for _ in src.frames(stop))
    assert n <= 2 and time.perf_counter() - t0 < 1.5 and src.status == "stopped"


def test_demo_frames_carry_ground_truth() -> None:
    from solo_deploy.data.synthetic import SPLITS, render_video_frames

    src = DemoSource(n_frames=3, fps=1000.0).open()
    assert not src.live and src.frame_count == 3  # every frame, like a file (--realtime: live)
    got = _all(src)
    ref = list(render_video_frames(SPLITS["demo"].seed, 3))
    assert len(got) == 3
    for f, (img, masks, labels) in zip(got, ref):
        np.testing.assert_array_equal(f.image, img)
        np.testing.assert_array_equal(f.gt[0], masks)
        np.testing.assert_array_equal(f.gt[1], labels)


# ---------------------------------------------------------------------------------------------
# Network stream over loopback: drop, reconnect, give up
# ---------------------------------------------------------------------------------------------
def _connect(url: str, timeout: float = 15.0, **kw):
    """Open the stream once ffmpeg listens (a refused connection answers at once: just retry)."""
    deadline = time.perf_counter() + timeout
    while True:
        try:
            return open_source(url, open_timeout=5.0, **kw)
        except BadInputError:
            if time.perf_counter() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (needed to serve a stream)")
def test_stream_reconnects_then_gives_up(tmp_path, video, caplog) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/live.ts"
    server = serve_mpegts(video, port)
    servers = [server]
    try:
        src = _connect(url, reconnect_timeout=8.0)
        assert src.live
        stop = threading.Event()
        it = src.frames(stop)
        before = [next(it) for _ in range(5)]
        assert before[0].image.shape == (*SMALL, 3)
        server.kill()  # the stream drops ...
        server.wait()
        restart = threading.Timer(1.0, lambda: servers.append(serve_mpegts(video, port)))
        restart.start()  # ... and comes back a second later
        with caplog.at_level("WARNING", logger="solo_deploy.runtime.sources"):
            buffered = 0
            while src.reconnects == 0:  # frames FFmpeg had buffered before the drop come first
                next(it)
                buffered += 1
                assert buffered < 200
            after = [next(it) for _ in range(5)]
        restart.join()
        server = servers[-1]
        assert src.reconnects == 1 and len(after) == 5
        assert any("reconnected" in r.getMessage() for r in caplog.records)
        assert any("dropped; reconnecting" in r.getMessage() for r in caplog.records)
        server.kill()  # gone for good: the source gives up after its reconnect timeout
        server.wait()
        src.reconnect_timeout = 1.5
        t0 = time.perf_counter()
        rest = list(it)
        assert time.perf_counter() - t0 < 8.0
        assert src.status == "lost" and "gave up" in src.warnings[-1]
        assert len(rest) < 200
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()
