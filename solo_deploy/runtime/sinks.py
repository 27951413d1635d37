"""Result sinks for `solo-deploy run`: annotated video, JSON lines, a window, a progress bar, demo AP.

Every sink gets each processed frame through ``write(result)`` from one pipeline thread and is
finalised once by ``close()``. File sinks write to a hidden temporary name beside the target and
rename it only in ``close()``: a run that crashes or is killed never leaves a video or a JSONL
file that looks complete but is not. ``discard()`` drops the temporary file instead.
"""
from __future__ import annotations

import contextlib
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

cv2 = lazy_import("cv2")
tqdm = lazy_import("tqdm")

log = logging.getLogger("solo_deploy.runtime.sinks")

JSONL_SCHEMA_VERSION = 1
VIDEO_FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}
# OpenCV's video writers do not report a failed write: on a full disk the MJPG writer leaves a
# truncated file and the FFmpeg one aborts the process. The sink therefore stops while this much
# room is left (on top of two raw frames): enough for the container's index at release().
VIDEO_HEADROOM_BYTES = 4 << 20


@dataclass
class FrameResult:
    """One frame and its instances; the overlay is drawn once, on first use, and shared by sinks.

    ``instances``: every instance the predictor kept (what the demo's AP scores); ``shown``: those
    with score >= ``conf``, what the video, the window and the JSON lines get."""

    frame: Frame
    instances: Instances
    source: str = ""
    conf: float | None = None
    _overlay: np.ndarray | None = field(default=None, repr=False)
    _shown: Instances | None = field(default=None, repr=False)

    @property
    def shown(self) -> Instances:
        if self._shown is None:
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
        raise BadInputError(f"cannot write video {path}: use a .mp4 (mp4v) or .avi (MJPG) file name")


class VideoSink(Sink):
    """Annotated frames of one stream to ``path`` (.mp4: mp4v, .avi: MJPG) at ``fps``.

    The writer opens on the first frame (its size is the frame's); a run with no frame writes
    no file.
    """

    name = "video"

    def __init__(self, path: str | os.PathLike[str], fps: float, stream: int = 0) -> None:
        self.path = Path(path)
        check_video_path(self.path)
        self.fps = float(fps)
        self.stream = stream
        self.frames = 0
        self._file = _AtomicFile(atomic_path(self.path))  # checks the folder is writable now
        self._writer: Any = None
        self._size: tuple[int, int] | None = None

    def write(self, result: FrameResult) -> None:
        if result.frame.stream != self.stream:
            return
        img = result.overlay
        h, w = img.shape[:2]
        if _atomic.free_bytes(self._file.value) < VIDEO_HEADROOM_BYTES + 2 * img.nbytes:
            raise DiskFullError(self.path)
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_FOURCC[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self._file.value), fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                raise RuntimeFailure(f"OpenCV cannot write {VIDEO_FOURCC[self.path.suffix.lower()]} video to "
                                     f"{self.path}")
            self._size = (w, h)
        elif (w, h) != self._size:
            # A stream that changes resolution mid-way (some cameras / streams do): keep the size.
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(img)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()  # writes the MP4 index: the file becomes playable
            self._writer = None
        if self.frames:
            self._file.commit()
        else:
            self._file.abandon()
            log.warning("no frame of stream %d was processed: %s not written", self.stream, self.path)

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._file.abandon()

    def summary(self) -> dict[str, Any]:
        return {"video": str(self.path), "frames": self.frames} if self.frames else {}


def instances_to_json(inst: Instances) -> list[dict[str, Any]]:
    """JSON-ready instances: class, class_id, score, box [x, y, w, h], COCO RLE mask."""
    if len(inst) == 0:
        return []
    boxes = inst.boxes  # x0, y0, x1, y1 (exclusive ends), vectorised over instances
    rles = inst.rles
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).tolist()
    labels = inst.labels.tolist()
    scores = inst.scores.tolist()
    return [{"class": inst.class_names[c], "class_id": int(c), "score": round(float(s), 5),
             "box": [float(v) for v in b], "mask": rle}
            for c, s, b, rle in zip(labels, scores, xywh, rles)]


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
           "check_video_path", "display_available", "instances_to_json", "stream_path"]
