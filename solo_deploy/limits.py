"""Resource limits: what one input may ask of the machine before solo-deploy refuses it.

A small file can describe a huge workload (a 2.6 MB PNG of 30000 x 30000 pixels, a 28 MB
checkpoint that inflates to 6 GiB, a JSON with 100,000 polygons on one image). Each limit below
has a default that admits every real use we know of, is named in the one-line error that
refuses an input, and is raised (or lowered) with an environment variable, read on every check:

======================  ===================================  =============================
limit                   environment variable                 default
======================  ===================================  =============================
pixels per image        ``SOLO_DEPLOY_MAX_IMAGE_PIXELS``     268,435,456 (2^28, 268 MP)
annotations per image   ``SOLO_DEPLOY_MAX_ANNOTATIONS``      2,000
checkpoint size         ``SOLO_DEPLOY_MAX_CHECKPOINT_BYTES`` 4 GiB (inflated)
instances per image     ``SOLO_DEPLOY_MAX_INSTANCES``        1,000 (a model's max_per_img)
======================  ===================================  =============================

The checks read headers and counts only, so a refused input costs no memory.
"""
from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInputError

__all__ = ["LIMITS", "MAX_ANNOTATIONS", "MAX_CHECKPOINT_BYTES", "MAX_IMAGE_PIXELS", "MAX_INSTANCES", "Limit",
           "check_checkpoint_size", "check_environment", "check_image_pixels", "check_image_shape",
           "image_size_of"]


@dataclass(frozen=True)
class Limit:
    """One named limit: ``value()`` is the environment variable's value, else the default."""

    name: str  # as the error names it, e.g. "pixels per image"
    env: str
    default: int
    why: str  # which real uses the default admits

    def value(self) -> int:
        raw = os.environ.get(self.env, "").strip()
        if not raw:
            return self.default
        text = raw.replace("_", "")
        try:
            number = float(text) if any(c in text for c in ".eE") else int(text)
            if isinstance(number, float) and not (math.isfinite(number) and number.is_integer()):
                raise ValueError
            value = int(number)
        except (ValueError, OverflowError):
            raise BadInputError(f"{self.env}={raw!r} is not a whole number") from None
        if value < 1:
            raise BadInputError(f"{self.env}={raw!r} must be at least 1")
        return value

    def check(self, amount: int, what: str, unit: str = "") -> None:
        """Refuse ``what`` (e.g. "image a.jpg (20000x20000)") when ``amount`` exceeds the limit."""
        limit = self.value()
        if amount > limit:
            unit = f" {unit}" if unit else ""
            raise BadInputError(f"{what} has {amount:,}{unit}, over the limit of {limit:,} {self.name} "
                                f"(set {self.env} to raise it)")


# A 200 MP phone sensor (16320 x 12240) and 150 MP medium-format backs fit; the network sees a
# 1333 x 800 resize anyway, so larger images are mosaics that should be tiled before inference.
MAX_IMAGE_PIXELS = Limit("pixels per image", "SOLO_DEPLOY_MAX_IMAGE_PIXELS", 1 << 28,
                         "200 MP camera photos (16320 x 12240)")
# COCO averages 7 instances per image, LVIS 12, SA-1B about 100; 2,000 is 20x SA-1B's mean. Training
# decodes every mask of an image at full resolution (2,000 at 1333 x 800 are 2 GB).
MAX_ANNOTATIONS = Limit("annotations per image", "SOLO_DEPLOY_MAX_ANNOTATIONS", 2000,
                        "20x the mean of SA-1B's dense annotations (about 100 per image)")
# A ResNet-101 SOLO with SGD momentum and an EMA copy is about 0.7 GB inflated; 4 GiB is 5x that.
MAX_CHECKPOINT_BYTES = Limit("bytes of checkpoint data", "SOLO_DEPLOY_MAX_CHECKPOINT_BYTES", 4 << 30,
                             "ResNet-101 checkpoints with optimizer state, five times over")
# mmdetection keeps max_per_img=100 (COCO scores at most 100 per image); 1000 leaves room for crowds.
MAX_INSTANCES = Limit("instances per image", "SOLO_DEPLOY_MAX_INSTANCES", 1000,
                      "10x mmdetection's max_per_img of 100")

LIMITS = (MAX_IMAGE_PIXELS, MAX_ANNOTATIONS, MAX_CHECKPOINT_BYTES, MAX_INSTANCES)


def check_environment() -> None:
    """Every limit variable that is set must be a whole number >= 1 (one line otherwise): checked
    once when a command starts, so a typo is not reported as a bad image or checkpoint."""
    for limit in LIMITS:
        limit.value()


def image_size_of(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(width, height) from an image file's header, without decoding it; None when Pillow cannot
    read the header (OpenCV may still decode the file: the caller decides).

    Pillow's format plugins are called directly: ``Image.open`` would add Pillow's own bomb check
    (a warning, then an error over 179 MP), which is global state that other threads use."""
    from PIL import Image

    try:
        with open(path, "rb") as fp:
            prefix = fp.read(16)
            for init in (Image.preinit, Image.init):
                init()
                for fmt in list(Image.ID):
                    factory, accept = Image.OPEN[fmt]
                    if accept is not None and accept(prefix) is not True:
                        continue
                    fp.seek(0)
                    try:
                        im = factory(fp, str(path))  # parses the header only
                    except Exception:  # noqa: BLE001 - not this format (plugins raise SyntaxError, OSError...)
                        continue
                    return int(im.size[0]), int(im.size[1])
    except OSError:
        return None
    return None


def check_image_pixels(path: str | os.PathLike[str]) -> None:
    """Refuse an image file whose header declares more pixels than the limit."""
    size = image_size_of(path)
    if size is not None:
        MAX_IMAGE_PIXELS.check(size[0] * size[1], f"image {path} ({size[0]}x{size[1]})", "pixels")


def check_image_shape(shape: tuple[int, ...], what: str) -> None:
    """Refuse a decoded image (or video frame) of more pixels than the limit."""
    MAX_IMAGE_PIXELS.check(int(shape[0]) * int(shape[1]), f"{what} ({shape[1]}x{shape[0]})", "pixels")


def check_checkpoint_size(path: str | os.PathLike[str]) -> None:
    """Refuse a checkpoint whose data, once inflated, exceeds the limit: the sum of a zip
    checkpoint's uncompressed member sizes (torch's format), else the file size."""
    path = Path(path)
    try:
        total = path.stat().st_size
        with open(path, "rb") as fh:
            is_zip = fh.read(4) == b"PK\x03\x04"  # how torch.load tells its zip format apart
    except OSError:
        return  # unreadable: the loader names the problem
    if is_zip:
        try:
            with zipfile.ZipFile(path) as zf:
                total = max(total, sum(info.file_size for info in zf.infolist()))
        except (zipfile.BadZipFile, ValueError, OSError):
            pass  # torch's reader will refuse it; the file size still bounds what it may read
    MAX_CHECKPOINT_BYTES.check(total, f"checkpoint {path}", "bytes of data")
