"""Deployment runtime: post-processing of network outputs (numpy / torch / CuPy alike).

Nothing heavy is imported here; names resolve lazily from the submodules on first use, so
``import solo_deploy.runtime`` never pulls in torch, Lightning or training code.
"""
from __future__ import annotations

from typing import Any

__all__ = [
    "CellInfo",
    "Detections",
    "cell_info",
    "masks_to_image",
    "matrix_nms",
    "postprocess_batch",
    "postprocess_single",
    "resize_bilinear",
    "resize_matrix",
    "to_numpy",
]

_LAZY = {name: "postprocess" for name in __all__}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
