"""solo-deploy: SOLO / SOLOv2 instance segmentation from training to real-time deployment.

``import solo_deploy`` stays light (no torch, no onnxruntime): heavy modules load on use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from .runtime.predictor import Predictor


def load(model: str, backend: str = "auto", device: str = "cpu", **kwargs: Any) -> Predictor:
    """Load a model file (.ckpt, .solo, .onnx, .engine) for inference: ``load(path).predict(image)``."""
    from .app.models import load as _load

    return _load(model, backend=backend, device=device, **kwargs)


__all__ = ["__version__", "load"]
