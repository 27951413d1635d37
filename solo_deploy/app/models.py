"""Model files to runners and predictors: the one place that decides how a file is deployed.

``auto`` runs a PyTorch model file (``.ckpt``/``.safetensors``) on a CPU through a cached ONNX
export (ONNX Runtime is about 1.6x faster than PyTorch eager there, see the README), and on CUDA
through PyTorch; ``.onnx`` through ONNX Runtime; ``.engine`` through TensorRT.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .._paths import check_model_path
from ..errors import BadInputError
from ..runtime.devices import parse_device
from ..runtime.predictor import Predictor
from ..runtime.runners import BACKENDS, Runner, detect_backend, make_runner

log = logging.getLogger("solo_deploy.app")

__all__ = ["deployable", "load", "load_runner"]


def deployable(model: str | Path, backend: str = "auto", device: str = "cpu",
               auto_export: bool = True) -> tuple[Path, str]:
    """(file to run, backend) for ``model``: a PyTorch model file on a CPU with ``auto`` becomes
    its cached ONNX export (exported once; see ``export.cache``) unless ``auto_export`` is False."""
    if backend not in BACKENDS:
        raise BadInputError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    device = parse_device(device)
    path = check_model_path(model)
    if auto_export and backend == "auto" and device == "cpu" and detect_backend(path) == "torch":
        try:
            from ..export.cache import cached_onnx
        except ImportError as exc:
            # The ONNX export path is optional (onnx / onnxslim missing): PyTorch runs the model too.
            log.warning("ONNX export unavailable (%s); using the torch backend", exc)
            return path, "torch"
        return cached_onnx(path), "onnxruntime"
    return path, backend


def load_runner(model: str | Path, backend: str = "auto", device: str = "cpu", threads: int | None = None,
                **kwargs: Any) -> Runner:
    """The runner for ``model`` (a file, or a Triton model name with ``backend="triton"``)."""
    if backend == "triton":
        return make_runner(str(model), backend="triton", device=device, threads=threads, **kwargs)
    path, backend = deployable(model, backend, device, auto_export=kwargs.pop("auto_export", True))
    return make_runner(path, backend=backend, device=device, threads=threads, **kwargs)


def load(model: str | Path, backend: str = "auto", device: str = "cpu", conf: float | None = None,
         **kwargs: Any) -> Predictor:
    """``solo_deploy.load(path).predict(image)``: a ``Predictor`` for any model file."""
    return Predictor(load_runner(model, backend=backend, device=device, **kwargs), conf=conf)
