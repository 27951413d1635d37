"""The one preprocessing spec shared by training, export, calibration and runtime.

Images go in as OpenCV BGR uint8 (H, W, 3) arrays. ``letterbox`` resizes keeping the aspect
ratio, pads at the bottom/right (so the image origin never moves and inversion is a crop),
and returns RGB uint8. Normalisation (mean/std) runs in the exported graph when
``normalize_in_model`` is true, otherwise on the host through ``normalize``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._lazy import lazy_import
from .errors import BadInputError

cv2 = lazy_import("cv2")

# ImageNet statistics in RGB order, as torchvision and the SOLO reference configs use.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


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

    input_hw: tuple[int, int] = (256, 256)  # network input (H, W); the CPU preset's training size
    resize: str = "letterbox"  # aspect-preserving fit inside input_hw (mmdet's keep_ratio=True)
    pad_anchor: str = "top-left"  # image at (0, 0), padding bottom/right, as mmdet's Pad
    pad_value: int = 0  # uint8 value of the padded area, before normalisation
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"  # order of the network's input channels
    normalize_in_model: bool = True  # exported graphs take uint8 NHWC and normalise in-graph
    size_divisor: int = 32  # input sizes must be multiples of the backbone's largest stride

    def __post_init__(self) -> None:
        h, w = self.input_hw
        if h <= 0 or w <= 0 or h % self.size_divisor or w % self.size_divisor:
            raise BadInputError(
                f"input size {h}x{w} is invalid: both sides must be positive multiples of {self.size_divisor}"
            )
        if self.resize != "letterbox" or self.pad_anchor != "top-left":
            raise BadInputError(f"unsupported resize rule {self.resize!r} / pad anchor {self.pad_anchor!r}")

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_hw"] = list(self.input_hw)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        d = dict(d)
        for key in ("input_hw", "mean", "std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)

    def with_size(self, input_hw: tuple[int, int] | None) -> PreprocessSpec:
        if input_hw is None or tuple(input_hw) == tuple(self.input_hw):
            return self
        d = self.to_dict()
        d["input_hw"] = tuple(int(v) for v in input_hw)
        return PreprocessSpec.from_dict(d)

    # -- forward -------------------------------------------------------------------------------
    def plan(self, orig_hw: tuple[int, int]) -> Letterbox:
        """The letterbox geometry for an image of size ``orig_hw``."""
        h, w = int(orig_hw[0]), int(orig_hw[1])
        if h <= 0 or w <= 0:
            raise BadInputError(f"image has an empty size {h}x{w}")
        ih, iw = self.input_hw
        scale = min(ih / h, iw / w)
        rh, rw = max(1, min(ih, int(round(h * scale)))), max(1, min(iw, int(round(w * scale))))
        return Letterbox(orig_hw=(h, w), resized_hw=(rh, rw), input_hw=(ih, iw), scale=scale)

    def letterbox(self, image_bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """BGR uint8 (H, W, 3) -> RGB uint8 (input_h, input_w, 3) and its ``Letterbox``."""
        image_bgr = as_bgr_uint8(image_bgr)
        lb = self.plan(image_bgr.shape[:2])
        rh, rw = lb.resized_hw
        if (rh, rw) != lb.orig_hw:
            interp = cv2.INTER_AREA if lb.scale < 1 else cv2.INTER_LINEAR
            resized = cv2.resize(image_bgr, (rw, rh), interpolation=interp)
        else:
            resized = image_bgr
        out = np.full((*self.input_hw, 3), self.pad_value, dtype=np.uint8)
        out[:rh, :rw] = resized[..., ::-1]  # BGR -> RGB
        return out, lb

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
