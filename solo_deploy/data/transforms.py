"""Training and evaluation transforms: ``Sample`` -> letterboxed network input and targets.

Geometry follows the shared ``PreprocessSpec`` exactly: the letterbox fit scale comes from
``spec.plan()``, images are resized with the same interpolation rule as ``spec.letterbox``
(INTER_AREA when shrinking, INTER_LINEAR when enlarging), placed at the top-left and padded
bottom/right with ``spec.pad_value``, and converted BGR -> RGB. Without augmentation,
``TrainTransform`` output is pixel-identical to ``EvalTransform`` (and to the runtime).

Masks are resized with ``cv2.INTER_NEAREST_EXACT``, which samples at pixel centres like the
image interpolations do; plain ``INTER_NEAREST`` is off by up to half a pixel.

Every transform returns ``(image_rgb, masks, labels, meta)``:
``image_rgb`` uint8 (h, w, 3) at ``spec.input_hw``; ``masks`` uint8 (K, h, w) 0/1;
``labels`` int64 (K,); ``meta`` a dict with ``image_id`` and ``letterbox`` (a ``Letterbox``
whose ``resized_hw`` is the image area inside the input, top-left anchored).
"""
from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import BadInputError
from ..preprocess import DEFAULT_SPEC, Letterbox, PreprocessSpec, as_bgr_uint8
from .sample import Sample

_MAX_CHANNELS = 128  # OpenCV 5's CV_CN_MAX (checked: 129 channels fail in cv2.resize)

Transformed = tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


def resize_masks(masks: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """uint8 (K, H, W) -> uint8 (K, h, w) by pixel-centre nearest neighbour."""
    import cv2

    k = masks.shape[0]
    h, w = int(hw[0]), int(hw[1])
    if masks.shape[1:] == (h, w):
        return masks
    out = np.empty((k, h, w), np.uint8)
    # cv2.resize takes HWC images of at most 128 channels in OpenCV 5 (512 in 4.x): chunk the stack.
    for start in range(0, k, _MAX_CHANNELS):
        chunk = np.ascontiguousarray(masks[start:start + _MAX_CHANNELS].transpose(1, 2, 0))
        res = cv2.resize(chunk, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        out[start:start + _MAX_CHANNELS] = res.reshape(h, w, -1).transpose(2, 0, 1)
    return out


def _fixed_size(spec: PreprocessSpec) -> PreprocessSpec:
    # Training batches are one fixed size; keep-ratio inputs vary per image (imported models).
    if spec.resize != "letterbox":
        raise BadInputError(f"training transforms need a letterbox preprocessing spec, got {spec.resize!r}")
    return spec


def _place(spec: PreprocessSpec, image_bgr: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-left placement into the input grid with padding; BGR -> RGB. Shapes as in the module doc."""
    ih, iw = spec.input_hw
    h, w = image_bgr.shape[:2]
    out = np.full((ih, iw, 3), spec.pad_value, np.uint8)
    out[:h, :w] = image_bgr[..., ::-1]
    out_masks = np.zeros((masks.shape[0], ih, iw), np.uint8)
    out_masks[:, :h, :w] = masks
    return out, out_masks


class EvalTransform:
    """Letterbox only. Keeps every instance (K unchanged), even ones that shrink to nothing."""

    def __init__(self, spec: PreprocessSpec = DEFAULT_SPEC) -> None:
        self.spec = _fixed_size(spec)

    def __call__(self, sample: Sample) -> Transformed:
        image_rgb, lb = self.spec.letterbox(sample.image_bgr)
        masks = resize_masks(sample.masks, lb.resized_hw)
        out_masks = np.zeros((masks.shape[0], *self.spec.input_hw), np.uint8)
        out_masks[:, :lb.resized_hw[0], :lb.resized_hw[1]] = masks
        meta = {"image_id": sample.image_id, "letterbox": lb, "flipped": False, "crop_xy": (0, 0)}
        return image_rgb, out_masks, sample.labels.copy(), meta


class TrainTransform:
    """Scale jitter + crop, horizontal flip, photometric jitter, then letterbox placement.

    * scale: the image is resized by ``plan().scale * j``, ``j`` log-uniform in ``scale_jitter``;
      if that exceeds the input size a random window is cropped (objects may be cut), else the
      image sits at the top-left with bottom/right padding, exactly as at runtime.
    * flip: with probability ``hflip``, before padding (padding stays bottom/right).
    * photometric (each step with probability 0.5, as mmdet's PhotoMetricDistortion): brightness
      +-32, contrast 0.5..1.5, saturation 0.5..1.5, hue +-18 degrees; padding is not touched.
    * instances with fewer than ``min_pixels`` visible pixels afterwards are dropped.

    Randomness: ``rng`` if passed to ``__call__``; otherwise a generator owned by the transform,
    seeded from ``seed`` and, inside a torch DataLoader worker, the worker's seed (so workers
    never repeat each other's augmentations; reproducible when torch is seeded).
    """

    def __init__(self, spec: PreprocessSpec = DEFAULT_SPEC, hflip: float = 0.5,
                 scale_jitter: tuple[float, float] = (0.8, 1.25), photometric: bool = True,
                 min_pixels: int = 4, seed: int | None = None) -> None:
        _fixed_size(spec)
        lo, hi = float(scale_jitter[0]), float(scale_jitter[1])
        if not 0 < lo <= hi:
            raise ValueError(f"scale_jitter must satisfy 0 < min <= max, got {scale_jitter}")
        if not 0 <= hflip <= 1:
            raise ValueError(f"hflip must be a probability, got {hflip}")
        self.spec = spec
        self.hflip = float(hflip)
        self.scale_jitter = (lo, hi)
        self.photometric = bool(photometric)
        self.min_pixels = int(min_pixels)
        self.seed = seed
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple[int, int | None] | None = None

    # -- randomness ------------------------------------------------------------------------------
    def _generator(self) -> np.random.Generator:
        data_mod = sys.modules.get("torch.utils.data")  # only if torch is already loaded: no heavy import
        info = data_mod.get_worker_info() if data_mod is not None else None
        worker_seed = int(info.seed) if info is not None else None
        key = (os.getpid(), worker_seed)
        if self._rng is None or self._rng_key != key:
            if worker_seed is not None:
                entropy = [worker_seed] if self.seed is None else [int(self.seed), worker_seed]
                self._rng = np.random.default_rng(entropy)
            elif self._rng is None:
                self._rng = np.random.default_rng(self.seed)
            else:  # forked without torch's worker info: fresh entropy, not a copy of the parent's stream
                self._rng = np.random.default_rng()
            self._rng_key = key
        return self._rng

    # -- transform -------------------------------------------------------------------------------
    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Transformed:
        rng = rng if rng is not None else self._generator()
        spec = self.spec
        image = as_bgr_uint8(sample.image_bgr)
        h, w = image.shape[:2]
        lb0 = spec.plan((h, w))
        lo, hi = self.scale_jitter
        jitter = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
        if jitter == 1.0:
            scale, (rh, rw) = lb0.scale, lb0.resized_hw  # exactly the runtime letterbox
        else:
            scale = lb0.scale * jitter
            rh, rw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        image = spec.resize_image(image, (rh, rw))
        masks = resize_masks(sample.masks, (rh, rw))

        ih, iw = spec.input_hw
        y0 = int(rng.integers(0, rh - ih + 1)) if rh > ih else 0
        x0 = int(rng.integers(0, rw - iw + 1)) if rw > iw else 0
        image = image[y0:y0 + ih, x0:x0 + iw]
        masks = masks[:, y0:y0 + ih, x0:x0 + iw]

        flipped = bool(rng.random() < self.hflip)
        if flipped:
            image = image[:, ::-1]
            masks = masks[:, :, ::-1]
        image = np.ascontiguousarray(image)
        if self.photometric:
            image = photometric_jitter(image, rng)

        out, out_masks = _place(spec, image, masks)
        labels = sample.labels
        if len(labels):
            keep = np.count_nonzero(out_masks.reshape(len(labels), -1), axis=1) >= self.min_pixels
            if not keep.all():
                out_masks, labels = out_masks[keep], labels[keep]
        lb = Letterbox(orig_hw=(h, w), resized_hw=(image.shape[0], image.shape[1]), input_hw=(ih, iw), scale=scale)
        meta = {"image_id": sample.image_id, "letterbox": lb, "flipped": flipped, "crop_xy": (x0, y0)}
        return out, out_masks, labels.copy(), meta


def photometric_jitter(image_bgr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmdet-style PhotoMetricDistortion on BGR uint8 (H, W, 3), via uint8 LUTs (fast, no floats)."""
    import cv2

    levels = np.arange(256, dtype=np.float32)

    def affine(img: np.ndarray, a: float, b: float) -> np.ndarray:
        return cv2.LUT(img, np.clip(levels * a + b, 0, 255).astype(np.uint8))

    img = image_bgr
    if rng.random() < 0.5:
        img = affine(img, 1.0, float(rng.uniform(-32, 32)))  # brightness
    contrast_first = rng.random() < 0.5
    contrast = float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else None
    if contrast_first and contrast is not None:
        img = affine(img, contrast, 0.0)
    sat = float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else None
    hue = float(rng.uniform(-9, 9)) if rng.random() < 0.5 else None  # OpenCV hue units: 2 degrees
    if sat is not None or hue is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        lut = np.empty((256, 1, 3), np.uint8)
        lut[:, 0, 0] = np.mod(np.round(levels + (hue or 0.0)), 180).astype(np.uint8)  # hue wraps at 180
        lut[:, 0, 1] = np.clip(levels * (sat if sat is not None else 1.0), 0, 255).astype(np.uint8)
        lut[:, 0, 2] = levels.astype(np.uint8)
        img = cv2.cvtColor(cv2.LUT(hsv, lut), cv2.COLOR_HSV2BGR)
    if not contrast_first and contrast is not None:
        img = affine(img, contrast, 0.0)
    return img


def collate(batch: Sequence[Transformed]) -> dict[str, Any]:
    """Stack transformed samples: ``images`` torch uint8 (N, 3, H, W), ``masks`` list of uint8
    (K_i, H, W) tensors, ``labels`` list of int64 (K_i,) tensors, ``meta`` list of dicts."""
    import torch

    images = torch.from_numpy(np.stack([b[0] for b in batch])).permute(0, 3, 1, 2).contiguous()
    return {
        "images": images,
        "masks": [torch.from_numpy(np.ascontiguousarray(b[1])) for b in batch],
        "labels": [torch.from_numpy(np.ascontiguousarray(b[2])) for b in batch],
        "meta": [b[3] for b in batch],
    }


class TransformedDataset:
    """``dataset[i]`` passed through ``transform``; map-style, usable with a torch DataLoader."""

    def __init__(self, dataset: Any, transform: Any) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Transformed:
        return self.transform(self.dataset[index])
