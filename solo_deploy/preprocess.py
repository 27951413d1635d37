"""The one preprocessing spec shared by training, export, calibration and runtime.

Images go in as OpenCV BGR uint8 (H, W, 3) arrays; the image origin never moves (padding is
always at the bottom/right, so inversion is a crop). Two resize modes:

* ``letterbox`` (our trained models): fit inside the fixed ``input_hw`` keeping the aspect ratio,
  pad on the host with the uint8 ``pad_value`` (before normalisation); the graph input has one size.
* ``keep-ratio`` (mmdetection's test pipeline, imported and reference models): resize keeping the
  ratio so that the long side fits ``scale[0]`` and the short side ``scale[1]`` (whichever the
  orientation), hand the resized image to the graph as it is, and let the graph normalise and pad
  to a multiple of ``size_divisor`` with ``pad_value`` (0 = the mean colour, after normalising),
  exactly as mmdetection does. Graph inputs then vary in height and width (dynamic export).

``interpolation``: ``area`` shrinks with INTER_AREA and enlarges bilinearly (sharper thumbnails;
our training's rule); ``bilinear`` is cv2.INTER_LINEAR both ways (mmcv's ``imrescale``).
Normalisation (mean/std) runs in the exported graph.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ._lazy import lazy_import
from .errors import BadInputError

cv2 = lazy_import("cv2")

RESIZE_MODES = ("letterbox", "keep-ratio")
INTERPOLATIONS = ("area", "bilinear")
def _finite(v: Any) -> bool:
    import numbers

    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


# Largest network input side a model file may ask for (mmdetection's largest test scale is 1333;
# 8192 leaves room for tiled aerial inputs and stops a header from asking for a 10^5-pixel side).
MAX_INPUT_SIDE = 8192

# ImageNet statistics in RGB order, as torchvision and the SOLO reference configs use.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)



def check_input_size(hw: Sequence[int], option: str = "--imgsz") -> tuple[int, int]:
    """A network input size (H, W) as given to ``option``: two positive multiples of 32 (the
    stride of the backbone's last stage), as ints; one line otherwise."""
    if len(tuple(hw)) != 2:
        raise BadInputError(f"{option} needs two sides H W, got {tuple(hw)}")
    h, w = int(hw[0]), int(hw[1])
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise BadInputError(f"{option} {h} {w} is invalid: both sides must be positive multiples of 32")
    return h, w

@dataclass(frozen=True)
class Letterbox:
    """How one image was mapped into the network input (all sizes as (H, W) in pixels)."""

    orig_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    input_hw: tuple[int, int]
    scale: float


@dataclass(frozen=True)
class PreprocessSpec:
    """Resize, pad and normalise; serialisable to a plain dict for model files and metadata."""

    # letterbox: the network input (H, W). keep-ratio: the size exports are traced and benchmarked
    # at (the padded input of the largest landscape image).
    input_hw: tuple[int, int] = (256, 256)  # the CPU preset's training size
    resize: str = "letterbox"  # "letterbox" | "keep-ratio" (see the module docstring)
    pad_anchor: str = "top-left"  # image at (0, 0), padding bottom/right, as mmdet's Pad
    # letterbox: uint8 value of the padded area, before normalisation (0 = black, ours);
    # keep-ratio: the normalised value the graph pads with (0 = the mean colour, mmdetection's).
    pad_value: float = 0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"  # order of the network's input channels
    normalize_in_model: bool = True  # exported graphs take uint8 NHWC and normalise in-graph
    size_divisor: int = 32  # input sizes are multiples of the backbone's largest stride
    interpolation: str = "area"  # "area" (ours) | "bilinear" (mmcv's imrescale default)
    scale: tuple[int, int] | None = None  # keep-ratio: (long side, short side) limits, mmdet's (1333, 800)

    def __post_init__(self) -> None:
        h, w = self.input_hw
        d = self.size_divisor
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(_finite(v) for v in values):
                raise BadInputError(f"preprocessing {name} must be 3 finite numbers, got {values!r}")
        if min(self.std) <= 0:
            raise BadInputError(f"preprocessing std must be positive (it divides the image), got {self.std!r}")
        if not _finite(self.pad_value):
            raise BadInputError(f"preprocessing pad value must be a finite number, got {self.pad_value!r}")
        if max(h, w) > MAX_INPUT_SIDE:
            raise BadInputError(f"input size {h}x{w} exceeds {MAX_INPUT_SIDE} pixels a side")
        if not isinstance(d, int) or d < 1:
            raise BadInputError(f"size divisor must be a positive integer, got {d!r}")
        if h <= 0 or w <= 0 or h % d or w % d:
            raise BadInputError(f"input size {h}x{w} is invalid: both sides must be positive multiples of {d}")
        if self.resize not in RESIZE_MODES or self.pad_anchor != "top-left":
            raise BadInputError(f"unsupported resize rule {self.resize!r} / pad anchor {self.pad_anchor!r}: "
                                f"expected one of {', '.join(RESIZE_MODES)} with a top-left anchor")
        if self.interpolation not in INTERPOLATIONS:
            raise BadInputError(f"unsupported interpolation {self.interpolation!r}: "
                                f"expected one of {', '.join(INTERPOLATIONS)}")
        if self.resize == "keep-ratio":
            if self.scale is None or len(self.scale) != 2 or min(self.scale) < 1:
                raise BadInputError(f"keep-ratio resizing needs scale = (long side, short side), got {self.scale!r}")
            # mmdetection accepts (w, h) or (h, w): the larger value always bounds the long side.
            object.__setattr__(self, "scale", (int(max(self.scale)), int(min(self.scale))))
            if self.scale[0] > MAX_INPUT_SIDE:
                raise BadInputError(f"keep-ratio scale {self.scale} exceeds {MAX_INPUT_SIDE} pixels a side")
        elif self.scale is not None:
            raise BadInputError("scale applies to keep-ratio resizing only (letterbox uses input_hw)")
        if self.resize == "letterbox" and not (0 <= self.pad_value <= 255):
            raise BadInputError(f"letterbox pad value must be a uint8 grey level, got {self.pad_value!r}")

    @classmethod
    def keep_ratio(cls, scale: tuple[int, int] = (1333, 800), **kw: Any) -> PreprocessSpec:
        """mmdetection's SOLO / SOLOv2 test pipeline: keep-ratio fit into ``scale`` (long, short),
        bilinear, normalise, pad with 0 to a multiple of 32 (``input_hw``: the largest landscape input)."""
        long, short = max(scale), min(scale)
        d = int(kw.get("size_divisor", 32))
        kw.setdefault("input_hw", (-(-short // d) * d, -(-long // d) * d))
        kw.setdefault("interpolation", "bilinear")
        return cls(resize="keep-ratio", scale=(int(long), int(short)), **kw)

    @property
    def pads_in_graph(self) -> bool:
        """True when the graph pads the normalised image itself (keep-ratio)."""
        return self.resize == "keep-ratio"

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_hw"] = list(self.input_hw)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        d["scale"] = list(self.scale) if self.scale is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        d = dict(d)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise BadInputError(f"preprocessing spec has unknown keys: {sorted(unknown)}")
        for key in ("input_hw", "mean", "std", "scale"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        if "input_hw" in d:
            d["input_hw"] = tuple(int(v) for v in d["input_hw"])
        if d.get("scale") is not None:
            d["scale"] = tuple(int(v) for v in d["scale"])
        return cls(**d)

    def with_size(self, input_hw: tuple[int, int] | None) -> PreprocessSpec:
        if input_hw is None or tuple(input_hw) == tuple(self.input_hw):
            return self
        d = self.to_dict()
        d["input_hw"] = tuple(int(v) for v in input_hw)
        return PreprocessSpec.from_dict(d)

    # -- forward -------------------------------------------------------------------------------
    def plan(self, orig_hw: tuple[int, int]) -> Letterbox:
        """How an image of size ``orig_hw`` maps into the network input (one image alone)."""
        h, w = int(orig_hw[0]), int(orig_hw[1])
        if h <= 0 or w <= 0:
            raise BadInputError(f"image has an empty size {h}x{w}")
        if self.resize == "keep-ratio":
            # mmcv's rescale_size: one factor for both sides, sizes rounded half up.
            long, short = self.scale  # type: ignore[misc]
            scale = min(long / max(h, w), short / min(h, w))
            rh, rw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
            d = self.size_divisor
            return Letterbox(orig_hw=(h, w), resized_hw=(rh, rw), input_hw=(-(-rh // d) * d, -(-rw // d) * d),
                             scale=scale)
        ih, iw = self.input_hw
        scale = min(ih / h, iw / w)
        rh, rw = max(1, min(ih, int(round(h * scale)))), max(1, min(iw, int(round(w * scale))))
        return Letterbox(orig_hw=(h, w), resized_hw=(rh, rw), input_hw=(ih, iw), scale=scale)

    def resize_image(self, image_bgr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """Resize with this spec's interpolation rule (no copy when the size is already ``hw``)."""
        h, w = int(hw[0]), int(hw[1])
        if image_bgr.shape[:2] == (h, w):
            return image_bgr
        shrink = h * w < image_bgr.shape[0] * image_bgr.shape[1]
        interp = cv2.INTER_AREA if self.interpolation == "area" and shrink else cv2.INTER_LINEAR
        return cv2.resize(image_bgr, (w, h), interpolation=interp)

    def letterbox(self, image_bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """BGR uint8 (H, W, 3) -> the graph's RGB uint8 input for this image alone, and its ``Letterbox``.

        letterbox: (input_h, input_w, 3), padded. keep-ratio: (resized_h, resized_w, 3), the graph pads.
        """
        image_bgr = as_bgr_uint8(image_bgr)
        lb = self.plan(image_bgr.shape[:2])
        rh, rw = lb.resized_hw
        resized = self.resize_image(image_bgr, (rh, rw))
        if self.pads_in_graph:
            return np.ascontiguousarray(resized[..., ::-1]), lb
        out = np.full((*self.input_hw, 3), int(self.pad_value), dtype=np.uint8)
        out[:rh, :rw] = resized[..., ::-1]  # BGR -> RGB
        return out, lb

    def size_groups(self, sizes_hw: Sequence[tuple[int, int]]) -> list[list[int]]:
        """Indices of images (by original size (H, W)) grouped by graph input size, in first-seen
        order: keep-ratio images of one group run together without padding one for another, so
        each gets what it gets alone. Letterbox models: one group (one input size for all)."""
        if not self.pads_in_graph:
            return [list(range(len(sizes_hw)))]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, hw in enumerate(sizes_hw):
            groups.setdefault(self.plan(hw).resized_hw, []).append(i)
        return list(groups.values())

    def batch(self, images_bgr: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        """Several BGR images -> one uint8 RGB (N, H, W, 3) graph input and a ``Letterbox`` each.

        keep-ratio images of different sizes share the largest one's size: the smaller ones are
        padded on the host with the mean colour rounded to uint8 (mmdetection pads a batch with
        the exact mean after normalising; the difference is under half a grey level), and the
        graph pads them all to the same multiple of ``size_divisor``. One image, or images of one
        size (a video stream), are exactly what ``letterbox`` gives.
        """
        if not len(images_bgr):
            raise BadInputError("no images to preprocess")
        pairs = [self.letterbox(im) for im in images_bgr]
        arrays, lbs = [p[0] for p in pairs], [p[1] for p in pairs]
        out = self.stack(arrays)
        if not self.pads_in_graph:
            return out, lbs
        d = self.size_divisor
        padded = (-(-out.shape[1] // d) * d, -(-out.shape[2] // d) * d)  # what the graph pads the batch to
        return out, [replace(lb, input_hw=padded) for lb in lbs]

    def stack(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Graph inputs of one image each (RGB uint8 (h, w, 3)) -> one (N, H, W, 3) batch, the
        smaller ones padded at the bottom/right with the mean colour rounded to uint8 (keep-ratio)."""
        if len({a.shape for a in arrays}) == 1:
            return np.stack(arrays)
        if not self.pads_in_graph:
            raise BadInputError("letterboxed images of one model must all have the model's input size")
        h = max(a.shape[0] for a in arrays)
        w = max(a.shape[1] for a in arrays)
        out = np.empty((len(arrays), h, w, 3), np.uint8)
        out[...] = np.asarray(np.round(self.mean), np.uint8)  # RGB
        for i, a in enumerate(arrays):
            out[i, : a.shape[0], : a.shape[1]] = a
        return out

    def normalize(self, batch_nhwc: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) RGB -> float32 (N, 3, H, W) normalised; what the graph does in-model."""
        x = batch_nhwc.astype(np.float32)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    # -- inverse -------------------------------------------------------------------------------
    def invert_masks(self, masks_input: np.ndarray, lb: Letterbox) -> np.ndarray:
        """Soft or binary masks on the network input grid (K, input_h, input_w) -> (K, H, W) float32.

        Crops the padding, then resizes to the original image size (bilinear).
        """
        rh, rw = lb.resized_hw
        h, w = lb.orig_hw
        cropped = masks_input[:, :rh, :rw]
        if cropped.shape[0] == 0:
            return np.zeros((0, h, w), np.float32)
        if (rh, rw) == (h, w):
            return cropped.astype(np.float32, copy=False)
        # cv2.resize takes at most 128 channels at once (OpenCV 5) in HWC layout: chunk the instances.
        out = np.empty((cropped.shape[0], h, w), np.float32)
        for start in range(0, cropped.shape[0], 128):
            chunk = np.ascontiguousarray(cropped[start:start + 128].transpose(1, 2, 0).astype(np.float32))
            res = cv2.resize(chunk, (w, h), interpolation=cv2.INTER_LINEAR)
            if res.ndim == 2:
                res = res[:, :, None]
            out[start:start + 128] = res.transpose(2, 0, 1)
        return out


def as_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Bring grayscale, RGBA/BGRA and 16-bit images to BGR uint8 (H, W, 3); reject the rest."""
    if not isinstance(image, np.ndarray):
        raise BadInputError(f"expected an image array, got {type(image).__name__}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.shape[0] == 0 or image.shape[1] == 0:
        raise BadInputError(f"unsupported image shape {tuple(image.shape)}: expected (H, W), (H, W, 3) or (H, W, 4)")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image * (255.0 if image.max(initial=0) <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise BadInputError(f"unsupported image dtype {image.dtype}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


DEFAULT_SPEC = PreprocessSpec()
