""".mp4 output: H.264 through PyAV where it has libx264 (what browsers play), else OpenCV's mp4v
announced by one warning line; odd frame sizes padded to even; atomic as before."""
from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import run_cli
from tests_helpers import count_frames

from solo_deploy.core.instances import Instances
from solo_deploy.runtime.sinks import FrameResult, VideoSink, h264_unavailable
from solo_deploy.runtime.sources import Frame

NAMES = ("circle", "rectangle", "triangle", "ring")

needs_h264 = pytest.mark.skipif(h264_unavailable() is not None, reason=f"no H.264 here: {h264_unavailable()}")


def _result(image: np.ndarray, i: int = 0) -> FrameResult:
    """A frame with no instance: the overlay is the image itself."""
    h, w = image.shape[:2]
    empty = Instances.from_masks(np.zeros((0, h, w), bool), np.zeros(0, np.int64), np.zeros(0, np.float32), NAMES)
    frame = Frame(image=image, index=i, t_capture=time.perf_counter(), wall_time=time.time(), media_time=i / 30)
    return FrameResult(frame, empty, source="test")


def _probe(path: Path) -> tuple[str, int, int, int, str]:
    """(codec, decoded frames, width, height, pixel format) as PyAV reads the file."""
    av = pytest.importorskip("av")
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        n = sum(1 for _ in container.decode(video=0))
        return ctx.name, n, ctx.width, ctx.height, ctx.pix_fmt


@needs_h264
def test_mp4_is_h264_and_atomic(tmp_path) -> None:
    path = tmp_path / "out.mp4"
    sink = VideoSink(path, fps=25.0)
    for i in range(7):
        sink.write(_result(np.full((48, 64, 3), 30 * i, np.uint8), i))
    assert not path.exists() and len(list(tmp_path.iterdir())) == 1  # a hidden temporary until close
    sink.close()
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    assert _probe(path) == ("h264", 7, 64, 48, "yuv420p")
    assert sink.summary() == {"video": str(path), "frames": 7, "codec": "h264"}
    cap = cv2.VideoCapture(str(path))  # OpenCV reads it back too, at the rate it was given
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0) and count_frames(path) == 7
    cap.release()


@needs_h264
def test_odd_frame_size_is_padded_to_even_not_resampled(tmp_path) -> None:
    """4:2:0 H.264 needs even sides: a 63x47 frame becomes 64x48 with one black column and row."""
    img = np.full((47, 63, 3), 200, np.uint8)
    path = tmp_path / "odd.mp4"
    sink = VideoSink(path, fps=10.0)
    for i in range(3):
        sink.write(_result(img, i))
    sink.close()
    assert _probe(path)[:4] == ("h264", 3, 64, 48)
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    assert ok
    gray = frame.mean(axis=2)
    # The picture keeps its size (not scaled up by a pixel): bright inside, black on the padded side.
    assert gray[5:40, 5:55].min() > 150 and gray[:, -1].max() < 60 and gray[-1, :].max() < 60


@needs_h264
def test_discard_leaves_nothing(tmp_path) -> None:
    sink = VideoSink(tmp_path / "gone.mp4", fps=30.0)
    sink.write(_result(np.zeros((48, 64, 3), np.uint8)))
    sink.discard()
    assert list(tmp_path.iterdir()) == []


def test_without_pyav_the_cli_writes_mp4v_with_one_warning(tmp_path, tiny_model_file) -> None:
    """The installed script with PyAV unimportable (a stand-in `av` package that raises
    ImportError, first on PYTHONPATH): an mp4v video and exactly one warning line saying why."""
    fake = tmp_path / "no_av" / "av"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'av' (hidden by the test)\")\n")
    out = tmp_path / "out.mp4"
    proc = run_cli("run", "--video", "demo", "--max-frames", "3", "--model", tiny_model_file, "--backend", "torch",
                   "-o", out, "--no-progress", env={"PYTHONPATH": str(fake.parent)})
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "mp4v" in lines[0] and "browsers do not play" in lines[0] and "PyAV is not installed" in lines[0]
    assert str(out) in lines[0] and "solo-deploy[video]" in lines[0]
    cap = cv2.VideoCapture(str(out))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    cap.release()
    assert fourcc.lower() in ("mp4v", "fmp4") and count_frames(out) == 3
    assert "mp4v" in proc.stdout  # the summary names the codec written


def test_pyav_without_libx264_is_named(monkeypatch) -> None:
    import types

    from solo_deploy.runtime import sinks

    monkeypatch.setattr(sinks, "av", types.SimpleNamespace(codecs_available={"mpeg4", "h264"}, __version__="0.0"))
    assert sinks.h264_unavailable() == "this PyAV build (0.0) has no libx264 encoder for H.264"


@needs_h264
def test_encoder_refusal_falls_back_to_mp4v_with_one_warning(tmp_path, monkeypatch, caplog) -> None:
    """libx264 present but refusing to open (here: an unknown preset): mp4v, one warning."""
    from solo_deploy.runtime import sinks

    monkeypatch.setattr(sinks, "H264_OPTIONS", {"preset": "no-such-preset"})
    path = tmp_path / "out.mp4"
    with caplog.at_level("WARNING", logger="solo_deploy.runtime.sinks"):
        sink = VideoSink(path, fps=30.0)
        for i in range(4):
            sink.write(_result(np.zeros((48, 64, 3), np.uint8), i))
        sink.close()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "mp4v" in warnings[0] and "PyAV cannot open libx264" in warnings[0]
    assert _probe(path)[:2] == ("mpeg4", 4) and sink.summary()["codec"] == "mp4v"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
