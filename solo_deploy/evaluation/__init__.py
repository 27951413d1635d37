"""Evaluation: COCO mask AP through pycocotools (imported lazily, on first use)."""
from __future__ import annotations

from typing import Any

__all__ = ["SUMMARY_KEYS", "detections_to_coco", "encode_masks", "evaluate", "masks_to_boxes"]

_LAZY = dict.fromkeys(__all__, "coco_eval")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
