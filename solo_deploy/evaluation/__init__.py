"""Evaluation: COCO mask AP through pycocotools (imported lazily, on first use)."""
from __future__ import annotations

from .._lazy import lazy_exports

__all__ = ["SUMMARY_KEYS", "detections_to_coco", "encode_masks", "evaluate", "masks_to_boxes"]

__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, ".coco_eval"))
