"""The package version (one place; pyproject.toml repeats it for packaging) and the versions of the
libraries it runs with, read from their installed metadata (nothing is imported)."""
from __future__ import annotations

import importlib.metadata

__version__ = "0.6.0"

# key -> distribution names to try, first found wins (the GPU wheel before the CPU one).
DISTRIBUTIONS = {
    "torch": ("torch",),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
    "onnx": ("onnx",),
    "onnxslim": ("onnxslim",),
    "numpy": ("numpy",),
    "opencv": ("opencv-python", "opencv-python-headless", "opencv-contrib-python"),
    "tensorrt": ("tensorrt",),
    "tritonclient": ("tritonclient",),
    "cupy": ("cupy-cuda12x", "cupy-cuda13x", "cupy"),
}


def dist_version(*names: str) -> str | None:
    """The installed version of the first of ``names`` that is installed, or None."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def versions(*keys: str) -> dict[str, str | None]:
    """``{"solo_deploy": ..., key: version or None}`` for ``keys`` of ``DISTRIBUTIONS``."""
    return {"solo_deploy": __version__, **{k: dist_version(*DISTRIBUTIONS[k]) for k in keys}}
