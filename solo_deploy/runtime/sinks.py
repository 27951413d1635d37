"""Result sinks for `solo-deploy run`: annotated video, JSON lines, a window, a progress bar, demo AP.

Every sink gets each processed frame through ``write(result)`` from one pipeline thread and is
finalised once by ``close()``. File sinks write to a hidden temporary name beside the target and
rename it only in ``close()``: a run that crashes or is killed never leaves a video or a JSONL
file that looks complete but is not. ``discard()`` drops the temporary file instead.

Videos: ``.mp4`` is H.264 (libx264, yuv420p: what browsers play) through PyAV, the optional
``video`` extra; without PyAV or its libx264 it is OpenCV's MPEG-4 Part 2 (mp4v), announced by one
warning line. ``.avi`` is OpenCV's Motion JPEG. Frames of another size than the video's (a folder
of mixed images, a camera that changes resolution) are letterboxed, never stretched.
"""
from __future__ import annotations

import contextlib
import fractions
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from .. import _atomic
from .._atomic import DiskFullError, atomic_open, atomic_path
from .._lazy import lazy_import
from ..core.instances import Instances
from ..errors import BadInputError, RuntimeFailure
from .sources import Frame

av = lazy_import("av")  # optional (the `video` extra): H.264 .mp4 files
cv2 = lazy_import("cv2")
tqdm = lazy_import("tqdm")

log = logging.getLogger("solo_deploy.runtime.sinks")

# 2 (0.6.0): instances as Instances.to_records (COCO category ids and keys); 1 had class_id 0..C-1, box.
# The schema: solo_deploy/assets/schemas/frames.schema.json.
JSONL_SCHEMA_VERSION = 2
# OpenCV's codecs: .avi always, .mp4 only when H.264 through PyAV is unavailable.
VIDEO_FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
H264_ENCODER = "libx264"
# x264's "ultrafast": the encoder shares the CPU with the model. Measured on 640x480 frames of the
# demo (2-core VM): ultrafast 2.2 ms CPU per frame and 5.9 kB per frame, veryfast 9.4 ms and
# 4.8 kB, OpenCV's mp4v 1.9 ms and 12.1 kB. veryfast took the pipeline's throughput from 0.87x to
# 0.76x of bare inference (benchmarks/bench_pipeline.py); ultrafast costs about what mp4v did.
H264_OPTIONS = {"preset": "ultrafast"}
# OpenCV's video writers do not report a failed write: on a full disk the MJPG writer leaves a
# truncated file and the FFmpeg one aborts the process. The sink therefore stops while this much
# room is left (on top of two raw frames): enough for the container's index at release().
VIDEO_HEADROOM_BYTES = 4 << 20


@dataclass
class FrameResult:
    """One frame and its instances; the overlay is drawn once, on first use, and shared by sinks.

    ``instances``: every instance the predictor kept (what the demo's AP scores); ``shown``: those
    with score >= ``conf``, what the video, the window and the JSON lines get; when ``tracked``,
    the instances a track took instead (a track continues through low-score instances, see
    ``runtime.tracking``)."""

    frame: Frame
    instances: Instances
    source: str = ""
    conf: float | None = None
    tracked: bool = False
    _overlay: np.ndarray | None = field(default=None, repr=False)
    _shown: Instances | None = field(default=None, repr=False)

    @property
    def shown(self) -> Instances:
        if self._shown is None:
            if self.tracked and self.instances.track_ids is not None:
                keep = self.instances.track_ids >= 0
            else:
                keep = None if self.conf is None else self.instances.scores >= self.conf
            self._shown = self.instances if keep is None or keep.all() else self.instances[keep]
        return self._shown

    @property
    def overlay(self) -> np.ndarray:
        """BGR uint8 (H, W, 3): the frame with the shown masks, outlines and labels drawn."""
        if self._overlay is None:
            self._overlay = self.shown.plot(self.frame.image)
        return self._overlay


class Sink:
    """Base sink: ``write`` every result, ``close`` once to finalise, ``discard`` on failure."""

    name = "sink"
    # True for a sink that scores every instance (COCO AP needs the low-score tail): the pipeline
    # then keeps them all and --conf filters only what FrameResult.shown gives the other sinks.
    needs_all_instances = False

    def write(self, result: FrameResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def discard(self) -> None:
        self.close()

    def summary(self) -> dict[str, Any] | None:
        """Something for the run summary (written files, metrics) or None."""
        return None


class _AtomicFile:
    """An ``atomic_path``/``atomic_open`` context kept open across calls: commit() or abandon()."""

    def __init__(self, cm: contextlib.AbstractContextManager[Any]) -> None:
        self._cm = cm
        self.value = cm.__enter__()
        self._done = False

    def commit(self) -> None:
        if not self._done:
            self._done = True
            self._cm.__exit__(None, None, None)

    def abandon(self) -> None:
        if not self._done:
            self._done = True
            # atomic_path removes the temporary file when the block raises.
            err = RuntimeFailure("output discarded")
            with contextlib.suppress(RuntimeFailure):
                self._cm.__exit__(RuntimeFailure, err, None)


def stream_path(path: Path, stream: int, n_streams: int) -> Path:
    """``out.mp4`` for one stream; ``out_0.mp4``, ``out_1.mp4``, ... for several."""
    path = Path(path)
    return path if n_streams <= 1 else path.with_name(f"{path.stem}_{stream}{path.suffix}")


def check_video_path(path: Path) -> None:
    if Path(path).suffix.lower() not in VIDEO_FOURCC:
        raise BadInputError(f"cannot write video {path}: use a .mp4 (H.264) or .avi (Motion JPEG) file name")


def h264_unavailable() -> str | None:
    """Why this process cannot write H.264 through PyAV, or None when it can."""
    try:
        codecs = av.codecs_available
    except ImportError:
        return "PyAV is not installed (pip install 'solo-deploy[video]' for H.264)"
    except Exception as exc:  # noqa: BLE001 - a broken install (missing shared library): still write a video
        detail = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else type(exc).__name__
        return f"PyAV does not load ({detail})"
    if H264_ENCODER not in codecs:
        return f"this PyAV build ({getattr(av, '__version__', '?')}) has no {H264_ENCODER} encoder for H.264"
    return None


def letterbox_into(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` scaled to fit ``size`` (w, h) with its aspect kept, centred on black."""
    w, h = size
    ih, iw = img.shape[:2]
    if (iw, ih) == (w, h):
        return img
    # A frame at most a pixel short (an odd size made even) is padded, not resampled and blurred.
    scale = 1.0 if 0 <= w - iw <= 1 and 0 <= h - ih <= 1 else min(w / iw, h / ih)
    nw, nh = min(w, max(1, round(iw * scale))), min(h, max(1, round(ih * scale)))
    if (nw, nh) != (iw, ih):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[y0:y0 + nh, x0:x0 + nw] = img
    return out


class _H264Writer:
    """H.264 in MP4 through PyAV, with the ``write``/``release`` of ``cv2.VideoWriter``.

    Raises ``av`` errors as they come; VideoSink turns them into one-line failures.
    """

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        self._container = av.open(str(path), "w", format="mp4")
        try:
            # A Fraction: 29.97 fps sources keep their 30000/1001 instead of drifting.
            rate = fractions.Fraction(fps).limit_denominator(1001)
            self._stream = self._container.add_stream(H264_ENCODER, rate=rate, options=dict(H264_OPTIONS))
            self._stream.width, self._stream.height = size
            self._stream.pix_fmt = "yuv420p"  # 4:2:0 (even sizes only): the chroma format browsers decode
            self._stream.codec_context.open()  # a refusing encoder fails here, before the first frame
        except BaseException:
            self._container.close()
            raise

    def write(self, img: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(img, format="bgr24")
        self._container.mux(self._stream.encode(frame))

    def release(self) -> None:
        """Flush the encoder's delayed frames, then write the MP4 index: the file becomes playable."""
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()


class VideoSink(Sink):
    """Annotated frames of one stream to ``path`` at ``fps``: ``.mp4`` H.264 (PyAV; else mp4v with
    one warning), ``.avi`` Motion JPEG.

    The writer opens on the first frame: the video's size is that frame's (rounded up to even
    for .mp4, whose 4:2:0 codecs need it); later frames of another size are letterboxed into it.
    A run with no frame writes no file.
    """

    name = "video"

    def __init__(self, path: str | os.PathLike[str], fps: float, stream: int = 0) -> None:
        self.path = Path(path)
        check_video_path(self.path)
        self.fps = float(fps)
        self.stream = stream
        self.frames = 0
        self._mp4 = self.path.suffix.lower() == ".mp4"
        self.codec = "h264" if self._mp4 else VIDEO_FOURCC[self.path.suffix.lower()]
        self._file = _AtomicFile(atomic_path(self.path))  # checks the folder is writable now
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        if self._mp4:
            why = h264_unavailable()
            if why is not None:
                self._fall_back(why)

    def _fall_back(self, why: str) -> None:
        self.codec = VIDEO_FOURCC[".mp4"]
        log.warning("writing %s as MPEG-4 Part 2 (mp4v), which browsers do not play: %s", self.path, why)

    def _open(self, size: tuple[int, int]) -> Any:
        if self.codec == "h264":
            try:
                return _H264Writer(self._file.value, self.fps, size)
            except Exception as exc:  # noqa: BLE001 - any refusal of PyAV's encoder: mp4v still works
                self._fall_back(f"PyAV cannot open {H264_ENCODER} ({str(exc).strip().splitlines()[-1][:160]})")
        writer = cv2.VideoWriter(str(self._file.value), cv2.VideoWriter_fourcc(*self.codec), self.fps, size)
        if not writer.isOpened():
            raise RuntimeFailure(f"OpenCV cannot write {self.codec} video to {self.path}")
        return writer

    def write(self, result: FrameResult) -> None:
        if result.frame.stream != self.stream:
            return
        img = result.overlay
        h, w = img.shape[:2]
        if _atomic.free_bytes(self._file.value) < VIDEO_HEADROOM_BYTES + 2 * img.nbytes:
            raise DiskFullError(self.path)
        if self._writer is None:
            # Padded by a black row/column rather than cropped: nothing of the frame is lost.
            self._size = (w + w % 2, h + h % 2) if self._mp4 else (w, h)
            self._writer = self._open(self._size)
        assert self._size is not None
        img = letterbox_into(img, self._size)
        try:
            self._writer.write(img)
        except Exception as exc:  # noqa: BLE001 - PyAV's errors: one line, or the disk is full
            if _atomic.is_disk_full(exc, self.path):
                raise DiskFullError(self.path) from None
            raise RuntimeFailure(f"cannot write video {self.path}: {exc}") from None
        self.frames += 1

    def _release(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()  # writes the MP4 index: the file becomes playable

    def close(self) -> None:
        try:
            self._release()
        except Exception as exc:  # noqa: BLE001 - the index could not be written: no half-file
            self._file.abandon()
            if _atomic.is_disk_full(exc, self.path):
                raise DiskFullError(self.path) from None
            raise RuntimeFailure(f"cannot finish video {self.path}: {exc}") from None
        if self.frames:
            self._file.commit()
        else:
            self._file.abandon()
            log.warning("no frame of stream %d was processed: %s not written", self.stream, self.path)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._release()
        self._file.abandon()

    def summary(self) -> dict[str, Any]:
        return {"video": str(self.path), "frames": self.frames, "codec": self.codec} if self.frames else {}


def instances_to_json(inst: Instances) -> list[dict[str, Any]]:
    """JSON-ready instances, as every JSON output writes them (``Instances.to_records``)."""
    return inst.to_records()


class JsonlSink(Sink):
    """One JSON object per processed frame (see ``record``), written whole, renamed at close."""

    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str], flush_every: float = 1.0) -> None:
        self.path = Path(path)
        self.lines = 0
        self._file = _AtomicFile(atomic_open(self.path, "w", encoding="utf-8"))
        self._fh: IO[str] = self._file.value
        self._flush_every = flush_every
        self._last_flush = time.perf_counter()

    @staticmethod
    def record(result: FrameResult) -> dict[str, Any]:
        """The line of one frame: schema_version, stream, source, frame (index in the source),
        timestamp (seconds from the start of the source: frame / fps for files and the demo, time
        since opening for cameras and streams; null if unknown), wall_time (Unix seconds at
        capture), height, width, instances (see ``instances_to_json``)."""
        f = result.frame
        return {"schema_version": JSONL_SCHEMA_VERSION, "stream": f.stream, "source": result.source,
                "frame": f.index, "timestamp": None if f.media_time is None else round(f.media_time, 6),
                "wall_time": round(f.wall_time, 6), "height": int(f.image.shape[0]), "width": int(f.image.shape[1]),
                "instances": instances_to_json(result.shown)}

    def write(self, result: FrameResult) -> None:
        # One write() per line: a reader of the finished file only ever sees complete lines.
        try:
            self._fh.write(json.dumps(self.record(result), separators=(",", ":")) + "\n")
            self.lines += 1
            now = time.perf_counter()
            if now - self._last_flush >= self._flush_every:
                self._fh.flush()
                self._last_flush = now
        except OSError as exc:
            if _atomic.is_disk_full(exc, self.path):
                raise DiskFullError(self.path) from None
            raise

    def _close_fh(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._fh.close()

    def close(self) -> None:
        # atomic_open closes the handle, fsyncs and renames on a clean exit.
        self._file.commit()

    def discard(self) -> None:
        self._close_fh()
        self._file.abandon()

    def summary(self) -> dict[str, Any]:
        return {"jsonl": str(self.path), "lines": self.lines}


def display_available() -> bool:
    """Whether a window can be shown: a display server on Linux/BSD; assumed elsewhere."""
    if sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class ShowSink(Sink):
    """An OpenCV window per stream; 'q' or Esc stops the run. Disabled with one warning when
    there is no display or OpenCV has no GUI."""

    name = "show"

    def __init__(self, on_quit: Callable[[], None] | None = None) -> None:
        self.on_quit = on_quit
        self.enabled = display_available()
        self._windows: set[str] = set()
        if not self.enabled:
            log.warning("--show: no display here (DISPLAY / WAYLAND_DISPLAY unset); not showing frames")

    def write(self, result: FrameResult) -> None:
        if not self.enabled:
            return
        title = f"solo-deploy [{result.frame.stream}] {result.source}"
        try:
            cv2.imshow(title, result.overlay)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as exc:
            self.enabled = False
            log.warning("--show: OpenCV cannot open a window (%s); not showing frames",
                        str(exc).strip().splitlines()[-1][:160])
            return
        self._windows.add(title)
        if key in (ord("q"), 27) and self.on_quit is not None:
            self.on_quit()

    def close(self) -> None:
        if self._windows:
            with contextlib.suppress(cv2.error):
                cv2.destroyAllWindows()
                cv2.waitKey(1)


class ProgressSink(Sink):
    """A tqdm bar over the known number of frames (stderr; hidden when it is not a terminal)."""

    name = "progress"

    def __init__(self, total: int, desc: str = "run", disable: bool | None = None) -> None:
        self.count = 0
        self.bar = tqdm.tqdm(total=total, desc=desc, unit="frame", disable=disable, dynamic_ncols=True, leave=True)

    def write(self, result: FrameResult) -> None:
        self.count += 1
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


__all__ = ["FrameResult", "JsonlSink", "ProgressSink", "ShowSink", "Sink", "VideoSink",
           "check_video_path", "display_available", "h264_unavailable", "instances_to_json", "letterbox_into",
           "stream_path"]
