"""Calibration images: read and preprocessed exactly as the runtime does.

Every source ends as letterboxed uint8 RGB NHWC, the exported graph's input (it casts and
normalises in-graph), through the same :meth:`PreprocessSpec.letterbox` that
``Predictor.preprocess`` uses, from the same BGR decoding (``read_image`` for files, OpenCV's
FFmpeg capture for videos, the data sets' own loaders).

Sources (``data``):

* ``synthetic``: the built-in ``calib`` split (128 images, disjoint from train/val);
* a COCO data set in any layout ``train`` takes (see :mod:`~solo_deploy.data.splits`), or its
  JSON file: the training side (one folder or file: the images its held-out split trains on);
* an image folder: every image file below it (recursive, sorted by relative path);
* a video file: every k-th frame; k defaults to frame_count // N so that the N frames spread
  over the whole video (10 when the count is unknown).

When a source has more than N images, N evenly spaced ones are taken (not the first N, which in
a folder of frames or a sorted data set are often near-duplicates). Fewer than ``MIN_IMAGES``
(32) usable images is a ``BadInputError`` unless ``force``: activation ranges from a handful of
images miss the tails and clip real inputs later. An undecodable image is an error naming the
file (calibration data is curated; a broken file means it is not what the user thinks); with
``force`` it is skipped with a warning.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._paths import IMAGE_SUFFIXES
from ..errors import BadInputError
from ..preprocess import PreprocessSpec

log = logging.getLogger("solo_deploy.calibration")

__all__ = ["DEFAULT_IMAGES", "MIN_IMAGES", "CalibrationImages", "load_calibration_images", "source_kind"]

MIN_IMAGES = 32  # below this, MinMax/percentile ranges are too noisy to trust (override: force)
DEFAULT_IMAGES = 128  # the size of the synthetic calib split; enough for stable MinMax ranges
DEFAULT_VIDEO_STRIDE = 10  # when a video does not report its frame count


@dataclass(frozen=True)
class CalibrationImages:
    """``images``: uint8 (N, H, W, 3) letterboxed RGB, the graph input; ``names`` one per image."""

    images: np.ndarray
    source: str
    kind: str  # synthetic | coco | folder | video
    names: tuple[str, ...]
    found: int  # usable images the source offered (before taking N of them)
    skipped: tuple[str, ...] = field(default_factory=tuple)  # undecodable files skipped under force

    @property
    def count(self) -> int:
        return int(self.images.shape[0])

    @property
    def sha256(self) -> str:
        """Hash of exactly what the calibrator sees: shape and preprocessed pixels."""
        h = hashlib.sha256(repr(tuple(self.images.shape)).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        return h.hexdigest()


def source_kind(data: str | Path) -> str:
    """``synthetic``, ``coco``, ``folder`` or ``video`` for a ``--data`` value; BadInputError otherwise."""
    from ..runtime.sources import VIDEO_SUFFIXES

    if str(data) == "synthetic":
        return "synthetic"
    p = Path(data).expanduser()
    if not p.exists():
        raise BadInputError(f"calibration data not found: {p} (expected an image folder, a video, a COCO data set "
                            f"or 'synthetic')")
    if p.is_file():
        if p.suffix.lower() == ".json":
            return "coco"
        if p.suffix.lower() in VIDEO_SUFFIXES:
            return "video"
        raise BadInputError(f"unsupported calibration data file {p.name}: expected a video "
                            f"({', '.join(VIDEO_SUFFIXES)}), a COCO JSON or a folder")
    if not p.is_dir():
        raise BadInputError(f"calibration data {p} is neither a file nor a folder")
    if (p / "annotations.json").is_file() or any((p / "annotations").glob("instances_*.json")):
        return "coco"
    if all((p / side / "annotations.json").is_file() for side in ("train", "val")):
        return "coco"  # train/ and val/ folders: calibrate on train/ only
    return "folder"


def _pick(total: int, n: int) -> list[int]:
    """``n`` evenly spaced indices out of ``total`` (all of them when ``total <= n``)."""
    if total <= n:
        return list(range(total))
    return sorted({round(float(x)) for x in np.linspace(0, total - 1, n)})


def _check_count(used: int, found: int, wanted: int, minimum: int, force: bool, where: str) -> None:
    if used == 0:
        raise BadInputError(f"no usable calibration images in {where}")
    if used >= minimum or force:
        return
    if wanted < minimum and found >= minimum:
        raise BadInputError(f"--images {wanted} is below the minimum of {minimum} calibration images needed for "
                            f"stable activation ranges (use --force to calibrate with fewer)")
    raise BadInputError(f"only {used} usable calibration images found in {where}; at least {minimum} are needed "
                        f"for stable activation ranges (use --force to calibrate with fewer)")


def _decode_files(files: Sequence[Path], n: int, force: bool, root: Path,
                  spec: PreprocessSpec) -> tuple[list[np.ndarray], list[str], list[str]]:
    from ..runtime.predictor import read_image

    images, names, skipped = [], [], []
    for i in _pick(len(files), n):
        f = files[i]
        try:
            img = read_image(f)
        except BadInputError as exc:
            if not force:
                raise BadInputError(f"calibration image {exc} (remove it, or use --force to skip unreadable "
                                    f"images)") from None
            log.warning("skipped calibration image: %s", exc)
            skipped.append(str(f))
            continue
        images.append(spec.letterbox(img)[0])
        names.append(str(f.relative_to(root)) if f.is_relative_to(root) else str(f))
    return images, names, skipped


def _folder(root: Path, n: int, force: bool, spec: PreprocessSpec):
    try:
        files = sorted((p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                       key=lambda p: str(p.relative_to(root)))
    except OSError as exc:
        raise BadInputError(f"cannot read calibration folder {root}: {exc.strerror or exc}") from None
    if not files:
        raise BadInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in calibration folder {root}")
    images, names, skipped = _decode_files(files, n, force, root, spec)
    return images, names, skipped, len(files)


def _coco(path: Path, n: int, force: bool, spec: PreprocessSpec):
    from ..data.splits import coco_sides, open_side

    # Calibrate on the training side (a single folder: its held-out split's training images), so
    # that the AP check on the validation side sees images the ranges were not taken from.
    side = coco_sides(path)["train"]
    log.info("calibration images: training side of %s", side.how)
    ds = open_side(side)
    images, names, skipped = [], [], []
    for i in _pick(len(ds), n):
        try:
            sample = ds[i]
        except BadInputError as exc:
            if not force:
                raise BadInputError(f"calibration image: {exc} (use --force to skip unreadable images)") from None
            log.warning("skipped calibration image: %s", exc)
            skipped.append(str(ds.image_ids[i]))
            continue
        images.append(spec.letterbox(sample.image_bgr)[0])
        names.append(f"image_id={sample.image_id}")
    return images, names, skipped, len(ds)


def _video(path: Path, n: int, stride: int | None, spec: PreprocessSpec):
    import threading

    from ..runtime.sources import VideoFileSource

    src = VideoFileSource(path).open()
    try:
        count = src.frame_count
        if stride is None:
            stride = max(1, count // n) if count else DEFAULT_VIDEO_STRIDE
        images, names = [], []
        for frame in src.frames(threading.Event(), stride=stride, max_frames=n):
            images.append(spec.letterbox(frame.image)[0])
            names.append(f"frame {frame.index}")
    finally:
        src.close()
    found = math.ceil(count / stride) if count else len(images)
    return images, names, [], found, stride


@functools.lru_cache(maxsize=2)
def _synthetic_bgr(indices: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Rendered calib-split images (BGR); cached because rendering (~25 ms each) dominates a
    calibration of a small model and repeated runs in one process ask for the same ones."""
    from ..data.synthetic import SPLITS, SyntheticDataset

    ds = SyntheticDataset("calib", count=SPLITS["calib"].count)
    return tuple(ds[i].image_bgr for i in indices)


def _synthetic(n: int, spec: PreprocessSpec):
    from ..data.synthetic import SPLITS

    total = SPLITS["calib"].count
    idx = _pick(total, n)
    return [spec.letterbox(img)[0] for img in _synthetic_bgr(tuple(idx))], [f"calib[{i}]" for i in idx], [], total


def load_calibration_images(data: str | Path, spec: PreprocessSpec, count: int = DEFAULT_IMAGES, *,
                            force: bool = False, minimum: int = MIN_IMAGES, video_stride: int | None = None,
                            progress: Callable[[str], None] | None = None) -> CalibrationImages:
    """Read up to ``count`` calibration images from ``data`` and letterbox them with ``spec``.

    Returns uint8 (N, H, W, 3) RGB at ``spec.input_hw`` (keep-ratio models: at the largest
    resized size). Raises ``BadInputError`` for a missing,
    empty or unreadable source, an undecodable image (unless ``force``) and fewer than
    ``minimum`` images (unless ``force``; zero images is always an error).
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise BadInputError(f"--images must be a positive integer, got {count!r}")
    if video_stride is not None and video_stride < 1:
        raise BadInputError(f"--video-stride must be at least 1, got {video_stride}")
    kind = source_kind(data)
    where = "the synthetic calib split" if kind == "synthetic" else str(data)
    if progress:
        progress(f"reading calibration images from {where}")
    if kind == "synthetic":
        images, names, skipped, found = _synthetic(count, spec)
    elif kind == "coco":
        images, names, skipped, found = _coco(Path(data), count, force, spec)
    elif kind == "folder":
        images, names, skipped, found = _folder(Path(data).expanduser(), count, force, spec)
    else:
        images, names, skipped, found, video_stride = _video(Path(data), count, video_stride, spec)
        where = f"{data} (frame stride {video_stride})"
    _check_count(len(images), found, count, minimum, force, where)
    if len(images) < min(count, minimum) and force:
        log.warning("calibrating with %d images (fewer than the recommended %d)", len(images), minimum)
    # keep-ratio models: images of several sizes share the largest one's, padded with the mean colour.
    batch = spec.stack(images).astype(np.uint8, copy=False)
    return CalibrationImages(images=batch, source=str(data), kind=kind, names=tuple(names), found=found,
                             skipped=tuple(skipped))
