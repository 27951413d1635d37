"""Deployment runtime: post-processing of network outputs (numpy / torch / CuPy alike).

Nothing heavy is imported here; names resolve lazily from the submodules on first use, so
``import solo_deploy.runtime`` never pulls in torch, Lightning or training code.
"""
from __future__ import annotations

from .._lazy import lazy_exports

__all__ = [
    "CellInfo",
    "Detections",
    "cell_info",
    "masks_to_crops",
    "masks_to_image",
    "matrix_nms",
    "postprocess_batch",
    "postprocess_single",
    "resize_bilinear",
    "resize_matrix",
    "to_numpy",
]

__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, ".postprocess"))
