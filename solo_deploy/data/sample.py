"""The one record type every data source yields (synthetic generator, COCO loader)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Sample:
    """One annotated image, at its original size.

    image_bgr: uint8 (H, W, 3), OpenCV channel order.
    masks:     uint8 (K, H, W), 0/1, one per (non-crowd) instance.
    labels:    int64 (K,), contiguous class indices 0..C-1.
    image_id:  int, the COCO image id of this image (synthetic data: index + 1).
    """

    image_bgr: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    image_id: int

    def __post_init__(self) -> None:
        # Shape/dtype checks only (no pixel scans): cheap enough to run for every sample, and they
        # catch a mismatched mask stack at the source instead of deep inside a loss function.
        img, masks, labels = self.image_bgr, self.masks, self.labels
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"image_bgr must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
        if masks.dtype != np.uint8 or masks.ndim != 3 or masks.shape[1:] != img.shape[:2]:
            raise ValueError(f"masks must be uint8 (K, {img.shape[0]}, {img.shape[1]}), "
                             f"got {masks.dtype} {masks.shape}")
        if labels.dtype != np.int64 or labels.shape != (masks.shape[0],):
            raise ValueError(f"labels must be int64 ({masks.shape[0]},), got {labels.dtype} {labels.shape}")

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.image_bgr.shape[0]), int(self.image_bgr.shape[1])

    @property
    def num_instances(self) -> int:
        return int(self.masks.shape[0])
