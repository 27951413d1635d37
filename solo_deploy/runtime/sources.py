"""Frame sources for `solo-deploy run`: cameras, video files, network streams, image folders, the demo.

``open_source(spec)`` turns one ``--video`` value into an opened :class:`Source` or raises a
one-line ``BadInputError`` (missing file, unsupported type, empty folder, no such camera).
A source yields :class:`Frame` objects (BGR uint8 (H, W, 3) images) from ``frames(stop, ...)``.

Live sources (cameras, network streams) deliver frames on their own clock and the pipeline keeps
only the newest one; file-like sources (video files, image folders, the demo) are read as fast as
the pipeline consumes them and never lose a frame. With ``realtime=True`` (``--realtime``) a
file-like source plays as a live one: frame i becomes available at start + i / fps, and a model
slower than that loses frames as it would on a camera.

OpenCV and FFmpeg print their own warnings to stderr (e.g. on a missing camera or a refused
connection). Importing this module changes nothing in the process: the console entry silences them
(``OPENCV_LOG_LEVEL`` and ``OPENCV_FFMPEG_LOGLEVEL`` before cv2 loads, then :func:`quiet_opencv`),
and our one-line messages replace them. A Python caller who wants the same sets those variables
before importing cv2 and calls :func:`quiet_opencv`.
"""
from __future__ import annotations

import glob as globlib
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .._lazy import lazy_import
from .._paths import IMAGE_SUFFIXES
from ..errors import BadInputError
from .predictor import read_image

_synthetic = lazy_import("solo_deploy.data.synthetic")

log = logging.getLogger("solo_deploy.runtime.sources")

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv",
                  ".3gp", ".ogv", ".gif")
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
DEFAULT_LIVE_FPS = 30.0  # used for output videos when a live source does not report its rate

_URL_RE = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://", re.ASCII)
_CAM_RE = re.compile(r"^(?:cam)?(?P<index>\d+)$|^/dev/video(?P<dev>\d+)$", re.IGNORECASE)


def quiet_opencv(verbose: bool = False) -> None:
    """Silence OpenCV's own log (or let it speak at --log-level debug)."""
    lv = cv2.utils.logging
    lv.setLogLevel(lv.LOG_LEVEL_INFO if verbose else lv.LOG_LEVEL_SILENT)


@dataclass
class Frame:
    """One captured frame on its way through the pipeline.

    ``image`` BGR uint8 (H, W, 3); ``index`` the frame's position in its source (skipped frames
    of ``--vid-stride`` count); ``t_capture`` ``time.perf_counter()`` when the frame became
    available (the start of its end-to-end latency); ``wall_time`` ``time.time()`` at that moment;
    ``media_time`` seconds from the start of the source by its own clock (None if unknown);
    ``decode_s`` seconds spent decoding/rendering it; ``gt`` the demo's ground truth
    (masks uint8 (K, H, W), labels int64 (K,), track ids int64 (K,)) or None.
    """

    image: np.ndarray
    index: int
    t_capture: float
    wall_time: float
    media_time: float | None = None
    decode_s: float = 0.0
    stream: int = 0
    gt: tuple[np.ndarray, ...] | None = None


def redact(url: str) -> str:
    """``rtsp://user:pass@host/x`` -> ``rtsp://***@host/x``: credentials never reach logs."""
    return re.sub(r"(://)[^/@]*@", r"\1***@", url)


class Source:
    """A stream of frames. Subclasses implement ``_read`` (and ``_skip`` where cheaper).

    ``live``: frames arrive on the source's clock (the pipeline keeps the newest);
    ``realtime``: a file-like source played live, paced here on the wall clock at ``pace_fps``;
    ``fps``: nominal frame rate or None; ``frame_count``: known length or None;
    ``status``: "ready", then "ended", "stopped", "truncated" or "lost";
    ``warnings``: messages worth repeating in the run summary.
    """

    kind = "source"
    live = False

    def __init__(self, name: str, realtime: bool = False) -> None:
        self.name = name
        self.fps: float | None = None
        self.frame_count: int | None = None
        self.status = "ready"
        self.warnings: list[str] = []
        self._pos = 0  # index of the next frame
        self.realtime = realtime
        if realtime:
            self.live = True  # the pipeline then keeps the newest frame, as for a camera
        self._clock0: float | None = None  # perf_counter() at which frame 0 was due

    # -- subclass hooks ------------------------------------------------------------------------
    def open(self) -> Source:
        return self

    def _read(self, stop: threading.Event) -> Frame | None:
        raise NotImplementedError

    def _skip(self, stop: threading.Event) -> bool:
        return self._read(stop) is not None

    def close(self) -> None:
        pass

    # -- shared --------------------------------------------------------------------------------
    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)

    def expected_frames(self, stride: int = 1, max_frames: int | None = None) -> int | None:
        """Frames ``frames()`` will yield, if known in advance (file-like sources only)."""
        if self.live or self.frame_count is None:
            return None
        n = math.ceil(self.frame_count / max(1, stride))
        return n if max_frames is None else min(n, max_frames)

    @property
    def pace_fps(self) -> float | None:
        """The wall-clock rate a realtime source delivers frames at (its own, else 30), or None:
        as fast as the consumer takes them."""
        return (self.fps or DEFAULT_LIVE_FPS) if self.realtime else None

    def due(self, index: int) -> float | None:
        """``perf_counter()`` time at which frame ``index`` becomes available, None when unpaced.

        The clock starts with the first frame asked about; skipped frames (``--vid-stride``) keep
        their slots, as on a camera.
        """
        fps = self.pace_fps
        if fps is None:
            return None
        if self._clock0 is None:
            self._clock0 = time.perf_counter() - index / fps
        return self._clock0 + index / fps

    def _wait_due(self, frame: Frame, stop: threading.Event) -> bool:
        """Hold ``frame`` until it is due (False if stopped meanwhile); it is captured then."""
        due = self.due(frame.index)
        if due is None:
            return True
        wait = due - time.perf_counter()
        if wait > 0 and stop.wait(wait):
            return False
        # Decoded early, delivered on the clock: as a camera hands over a finished frame.
        frame.t_capture, frame.wall_time = time.perf_counter(), time.time()
        return True

    def output_fps(self, stride: int = 1) -> float:
        """Frame rate for a video written from this source's (strided) frames."""
        fps = self.fps or DEFAULT_LIVE_FPS
        return max(1.0, fps / max(1, stride))

    def frames(self, stop: threading.Event, stride: int = 1, max_frames: int | None = None) -> Iterator[Frame]:
        """Frames until the end, ``stop`` or ``max_frames`` yielded; every ``stride``-th frame."""
        yielded = 0
        while not stop.is_set() and (max_frames is None or yielded < max_frames):
            frame = self._read(stop)
            if frame is None or not self._wait_due(frame, stop):
                break
            yield frame
            yielded += 1
            for _ in range(stride - 1):
                if stop.is_set() or not self._skip(stop):
                    break
        if self.status == "ready":
            self.status = "stopped" if stop.is_set() else "ended"

    def _frame(self, image: np.ndarray, decode_s: float, media_time: float | None = None,
               gt: Any = None) -> Frame:
        frame = Frame(image=image, index=self._pos, t_capture=time.perf_counter(), wall_time=time.time(),
                      media_time=media_time, decode_s=decode_s, gt=gt)
        self._pos += 1
        return frame

    def describe(self) -> str:
        return f"{self.kind} {self.name}"


# ---------------------------------------------------------------------------------------------
# OpenCV captures: files, cameras, network streams
# ---------------------------------------------------------------------------------------------
def _valid_fps(v: float) -> float | None:
    return float(v) if math.isfinite(v) and 0.5 <= v <= 1000 else None


def _open_capture(target: str | int, api: int, params: list[int], timeout: float) -> cv2.VideoCapture | None:
    """``cv2.VideoCapture`` opened in a helper thread, given up after ``timeout`` s.

    Some capture back-ends (busy cameras, dead hosts) block for a long time in open(); the
    helper thread is a daemon, so an abandoned open never holds the process.
    """
    box: list[cv2.VideoCapture | None] = [None]

    def work() -> None:
        cap = cv2.VideoCapture(target, api, params) if params else cv2.VideoCapture(target, api)
        if cap.isOpened():
            box[0] = cap
        else:
            cap.release()

    t = threading.Thread(target=work, name="solo-open-capture", daemon=True)
    t.start()
    t.join(timeout)
    return None if t.is_alive() else box[0]


class VideoFileSource(Source):
    """A video file, decoded with FFmpeg through OpenCV; every frame, as fast as consumed (or
    played live at its frame rate with ``realtime``)."""

    kind = "video"

    def __init__(self, path: Path, realtime: bool = False) -> None:
        super().__init__(str(path), realtime=realtime)
        self.path = path
        self.cap: cv2.VideoCapture | None = None
        self._first: np.ndarray | None = None
        self._first_s = 0.0
        self._errors = 0

    def open(self) -> VideoFileSource:
        p = self.path
        if p.stat().st_size == 0:
            raise BadInputError(f"video file is empty: {p}")
        t0 = time.perf_counter()
        cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise BadInputError(f"cannot open video {p}: not a video FFmpeg can read, or cut off before its "
                                f"index (an MP4 that was not finalised cannot be opened)")
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise BadInputError(f"cannot decode any frame of video {p}")
        self.cap, self._first, self._first_s = cap, first, time.perf_counter() - t0
        self.fps = _valid_fps(cap.get(cv2.CAP_PROP_FPS))
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if math.isfinite(count) and 0 < count < 1e9 else None
        return self

    def _media_time(self) -> float | None:
        return self._pos / self.fps if self.fps else None

    def _read(self, stop: threading.Event) -> Frame | None:
        if self._first is not None:  # the frame decoded by open() to validate the file
            img, self._first = self._first, None
            return self._frame(img, self._first_s, self._media_time())
        assert self.cap is not None
        t0 = time.perf_counter()
        ok, img = self.cap.read()
        if ok:
            return self._frame(img, time.perf_counter() - t0, self._media_time())
        if self.frame_count and self._pos < self.frame_count - max(1, self.frame_count // 100):
            # Short of the promised length: a damaged packet or a cut-off file. FFmpeg recovers
            # from the former after a frame or two, so try a little further before giving up.
            for _ in range(3):
                ok, img = self.cap.read()
                if ok:
                    self._errors += 1
                    if self._errors == 1:
                        self.warn(f"video {self.name}: a damaged frame near frame {self._pos} was skipped")
                    self._pos += 1
                    return self._frame(img, time.perf_counter() - t0, self._media_time())
            self.status = "truncated"
            self.warn(f"video {self.name} ended after {self._pos} of {self.frame_count} frames: the file is "
                      f"truncated or corrupt; processed what decodes")
        return None

    def _skip(self, stop: threading.Event) -> bool:
        assert self.cap is not None
        if self._first is not None:
            self._first = None
            self._pos += 1
            return True
        ok = self.cap.grab()  # demux without colour conversion: cheaper than read()
        if ok:
            self._pos += 1
        return ok

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class CameraSource(Source):
    """OpenCV camera N (V4L2 on Linux); live, newest frame wins."""

    kind = "camera"
    live = True

    def __init__(self, index: int, open_timeout: float = 5.0) -> None:
        super().__init__(f"cam{index}")
        self.index = index
        self.open_timeout = open_timeout
        self.cap: cv2.VideoCapture | None = None
        self._t0 = 0.0

    def open(self) -> CameraSource:
        if sys.platform.startswith("linux"):
            # A missing device node answers at once; OpenCV would otherwise try every back-end.
            if not Path(f"/dev/video{self.index}").exists():
                cams = sorted(p.name for p in Path("/dev").glob("video*"))
                raise BadInputError(f"camera {self.index} not found (no /dev/video{self.index}; cameras here: "
                                    f"{', '.join(cams) if cams else 'none'})")
            api = cv2.CAP_V4L2
        else:
            api = cv2.CAP_ANY
        cap = _open_capture(self.index, api, [], self.open_timeout)
        if cap is None:
            raise BadInputError(f"cannot open camera {self.index} within {self.open_timeout:.0f} s "
                                f"(busy, not a capture device, or no permission)")
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver queue short: we want the newest frame
        self.cap = cap
        self.fps = _valid_fps(cap.get(cv2.CAP_PROP_FPS))
        self._t0 = time.perf_counter()
        return self

    def _read(self, stop: threading.Event) -> Frame | None:
        assert self.cap is not None
        t0 = time.perf_counter()
        ok, img = self.cap.read()
        if not ok:
            if not stop.is_set():
                self.status = "lost"
                self.warn(f"camera {self.index} stopped delivering frames")
            return None
        return self._frame(img, time.perf_counter() - t0, time.perf_counter() - self._t0)

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


_MIN_ATTEMPT_S = 2.0  # shortest open/read timeout of one reconnect attempt


class StreamSource(Source):
    """A network stream (RTSP, HTTP, RTMP, UDP, ...); live; reconnects after a drop.

    After a drop it retries with exponential back-off (0.25 s doubling to 8 s) until
    ``reconnect_timeout`` seconds have passed without a frame, then gives up (status "lost").
    """

    kind = "stream"
    live = True

    def __init__(self, url: str, reconnect_timeout: float = 30.0, open_timeout: float = 10.0,
                 read_timeout: float = 5.0) -> None:
        super().__init__(redact(url))
        self.url = url
        self.reconnect_timeout = reconnect_timeout
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.cap: cv2.VideoCapture | None = None
        self.reconnects = 0
        self._t0 = 0.0

    def _params(self, open_timeout: float) -> list[int]:
        return [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout * 1000),
                cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout * 1000)]

    def _connect(self, timeout: float) -> cv2.VideoCapture | None:
        # FFmpeg honours the open timeout itself; the extra second covers its probing.
        return _open_capture(self.url, cv2.CAP_FFMPEG, self._params(timeout), timeout + 1.0)

    def open(self) -> StreamSource:
        cap = self._connect(self.open_timeout)
        if cap is None:
            raise BadInputError(f"cannot open stream {self.name}: no video answered within "
                                f"{self.open_timeout:.0f} s (check the address, the port and that it is serving)")
        self.cap = cap
        self.fps = _valid_fps(cap.get(cv2.CAP_PROP_FPS))
        self._t0 = time.perf_counter()
        return self

    def _reconnect(self, stop: threading.Event) -> bool:
        start = time.perf_counter()
        deadline = start + self.reconnect_timeout
        delay, attempt = 0.25, 0
        log.warning("stream %s dropped; reconnecting (giving up after %.0f s)", self.name, self.reconnect_timeout)
        # Every wait ends in an attempt, also the wait cut short by the deadline: a stream that is
        # back just before the deadline is found (the last back-off step may be seconds long).
        while not stop.is_set():
            left = deadline - time.perf_counter()
            attempt += 1
            # An attempt near the deadline still gets _MIN_ATTEMPT_S: with less, FFmpeg's open and
            # read timeouts cut a stream that has just come back (seen with HTTP MPEG-TS at 0.5 s).
            cap = self._connect(min(self.open_timeout, max(_MIN_ATTEMPT_S, left)))
            if cap is not None:
                self.cap = cap
                self.reconnects += 1
                log.warning("stream %s reconnected after %.1f s (attempt %d)", self.name,
                            time.perf_counter() - start, attempt)
                return True
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            stop.wait(min(delay, left))
            delay = min(delay * 2, 8.0)
        return False

    def _read(self, stop: threading.Event) -> Frame | None:
        while not stop.is_set():
            if self.cap is not None:
                t0 = time.perf_counter()
                ok, img = self.cap.read()
                if ok:
                    return self._frame(img, time.perf_counter() - t0, time.perf_counter() - self._t0)
                self.cap.release()
                self.cap = None
                if stop.is_set():
                    break
            if not self._reconnect(stop):
                if not stop.is_set():
                    self.status = "lost"
                    self.warn(f"stream {self.name} lost: no connection within {self.reconnect_timeout:g} s "
                              f"(--reconnect-timeout); gave up")
                return None
        return None

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


# ---------------------------------------------------------------------------------------------
# Images and in-memory frames
# ---------------------------------------------------------------------------------------------
class ImageFolderSource(Source):
    """Image files (a folder, a glob or one file) in name order; unreadable images are skipped.
    ``realtime`` plays them live at 30 fps (the rate of the video written from them)."""

    kind = "images"

    def __init__(self, files: list[Path], name: str, realtime: bool = False) -> None:
        super().__init__(name, realtime=realtime)
        self.files = files
        self.frame_count = len(files)
        self._skipped = 0

    def _read(self, stop: threading.Event) -> Frame | None:
        while self._pos < len(self.files):
            path = self.files[self._pos]
            t0 = time.perf_counter()
            try:
                img = read_image(path)
            except BadInputError as exc:
                self._skipped += 1
                self.warn(f"skipped {exc}")
                self._pos += 1
                continue
            return self._frame(img, time.perf_counter() - t0)
        return None

    def _skip(self, stop: threading.Event) -> bool:
        if self._pos >= len(self.files):
            return False
        self._pos += 1
        return True


class IterableSource(Source):
    """Frames from an iterable of BGR uint8 (H, W, 3) arrays (or ``(image, gt)`` pairs).

    With ``live=True`` and an ``fps`` it plays as a live source paced by the wall clock: frame
    i becomes available at start + i / fps, however fast the consumer is (a fake camera).
    """

    kind = "frames"

    def __init__(self, frames: Iterable[Any], fps: float | None = None, live: bool = False,
                 count: int | None = None, name: str = "frames") -> None:
        super().__init__(name, realtime=bool(live and fps))
        self.live = live  # live without an fps: frames arrive as the iterable yields them
        self.fps = fps
        self.frame_count = count if count is not None else (len(frames) if hasattr(frames, "__len__") else None)
        self._it = iter(frames)

    def _next(self) -> tuple[np.ndarray, Any] | None:
        try:
            item = next(self._it)
        except StopIteration:
            return None
        return item if isinstance(item, tuple) else (item, None)

    def _read(self, stop: threading.Event) -> Frame | None:
        t0 = time.perf_counter()
        item = self._next()
        if item is None:
            return None
        decode_s = time.perf_counter() - t0
        media_time = self._pos / self.fps if self.fps else None
        image, gt = item
        return self._frame(image, decode_s, media_time, gt)

    def _skip(self, stop: threading.Event) -> bool:
        if self._next() is None:
            return False
        self._pos += 1
        return True


DEMO_FPS = 30.0


class DemoSource(IterableSource):
    """The seeded synthetic demo video ("demo" split), rendered in memory at ``fps`` (30).

    Like a video file, every frame is processed as fast as the model goes; ``realtime=True`` plays
    it live instead, a camera's pacing: a model slower than ``fps`` then loses frames.
    Frames carry their ground truth (masks uint8 (K, H, W), labels int64 (K,), track ids int64
    (K,): each object's identity, what ``eval-track`` scores tracks against).
    """

    kind = "demo"

    def __init__(self, n_frames: int | None = None, fps: float = DEMO_FPS, realtime: bool = False) -> None:
        n = _synthetic.SPLITS["demo"].count if n_frames is None else int(n_frames)
        self.config = _synthetic.SyntheticConfig()
        frames = ((img, (masks, labels, tracks)) for img, masks, labels, tracks in
                  _synthetic.render_video_tracks(_synthetic.SPLITS["demo"].seed, n, self.config))
        super().__init__(frames, fps=fps, live=realtime, count=n, name="demo")

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.config.class_names)


# ---------------------------------------------------------------------------------------------
# Parsing --video
# ---------------------------------------------------------------------------------------------
def _images_in(paths: Iterable[Path]) -> list[Path]:
    return sorted(p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def make_source(spec: str, *, reconnect_timeout: float = 30.0, open_timeout: float = 10.0,
                camera_timeout: float = 5.0, demo_frames: int | None = None, realtime: bool = False) -> Source:
    """The (unopened) source for one ``--video`` value; raises ``BadInputError`` for bad values.

    ``camN`` / ``N`` / ``/dev/videoN``: camera; ``scheme://...``: network stream; ``demo``: the
    synthetic demo; a folder or a glob: its images; a file: a video or a single image.
    ``realtime``: play the demo, video files and images live at their frame rate (cameras and
    streams are live anyway).
    """
    spec = str(spec).strip()
    if not spec:
        raise BadInputError("--video is empty: give camN, a video file, a URL, an image folder or glob, or demo")
    if spec.lower() == "demo":
        return DemoSource(n_frames=demo_frames, realtime=realtime)
    cam = _CAM_RE.fullmatch(spec)
    if cam and not Path(spec).is_file():
        return CameraSource(int(cam.group("index") or cam.group("dev")), open_timeout=camera_timeout)
    url = _URL_RE.match(spec)
    if url:
        scheme = url.group("scheme").lower()
        if scheme == "file":
            return make_source(spec[len("file://"):], reconnect_timeout=reconnect_timeout,
                               open_timeout=open_timeout, camera_timeout=camera_timeout, realtime=realtime)
        if scheme not in URL_SCHEMES:
            raise BadInputError(f"unsupported stream address {redact(spec)}: expected one of "
                                f"{', '.join(s + '://' for s in URL_SCHEMES)}")
        return StreamSource(spec, reconnect_timeout=reconnect_timeout, open_timeout=open_timeout)
    path = Path(spec).expanduser()
    if path.is_dir():
        files = _images_in(path.iterdir())
        if not files:
            raise BadInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
        return ImageFolderSource(files, name=str(path), realtime=realtime)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in VIDEO_SUFFIXES:
            return VideoFileSource(path, realtime=realtime)
        if suffix in IMAGE_SUFFIXES:
            return ImageFolderSource([path], name=str(path), realtime=realtime)
        raise BadInputError(f"unsupported file type {suffix or '(none)'!r} for {path}: expected a video "
                            f"({', '.join(VIDEO_SUFFIXES)}) or an image ({', '.join(IMAGE_SUFFIXES)})")
    if any(c in spec for c in "*?["):
        files = _images_in(Path(p) for p in globlib.glob(os.path.expanduser(spec), recursive=True))
        if not files:
            raise BadInputError(f"no images match {spec!r}")
        return ImageFolderSource(files, name=spec, realtime=realtime)
    raise BadInputError(f"video source not found: {spec} (expected camN, a video file, an rtsp/http URL, "
                        f"an image folder or glob, or demo)")


def open_source(spec: str, **kwargs: Any) -> Source:
    """``make_source(spec, **kwargs).open()``: parsed, checked and ready to read."""
    return make_source(spec, **kwargs).open()


__all__ = ["CameraSource", "DemoSource", "Frame", "ImageFolderSource", "IterableSource", "Source", "StreamSource",
           "VideoFileSource", "make_source", "open_source", "quiet_opencv", "redact"]
