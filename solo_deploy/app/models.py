"""Model files to runners and predictors: the one place that decides how a file is deployed.

``auto`` runs a PyTorch model file (``.ckpt``/``.safetensors``) on a CPU through a cached ONNX
export (ONNX Runtime is about 1.6x faster than PyTorch eager there, see the README), and on CUDA
through PyTorch; ``.onnx`` through ONNX Runtime; ``.engine`` through TensorRT.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from .._paths import check_model_path
from ..core.inspect import inspect_model
from ..errors import BadInputError
from ..preprocess import check_input_size
from ..runtime.devices import parse_device
from ..runtime.predictor import Predictor
from ..runtime.runners import BACKENDS, Runner, detect_backend, make_runner

log = logging.getLogger("solo_deploy.app")

__all__ = ["deployable", "load", "load_runner", "use_input_size"]


def deployable(model: str | Path, backend: str = "auto", device: str = "cpu",
               auto_export: bool = True, imgsz: tuple[int, int] | None = None) -> tuple[Path, str]:
    """(file to run, backend) for ``model``: a PyTorch model file on a CPU with ``auto`` becomes
    its cached ONNX export (exported once per input size ``imgsz``, the model's own when None;
    see ``export.cache``) unless ``auto_export`` is False."""
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
        return cached_onnx(path, imgsz=imgsz), "onnxruntime"
    return path, backend


def load_runner(model: str | Path, backend: str = "auto", device: str = "cpu", threads: int | None = None,
                imgsz: tuple[int, int] | None = None, **kwargs: Any) -> Runner:
    """The runner for ``model`` (a file, or a Triton model name with ``backend="triton"``), run at
    input size ``imgsz`` (H, W) when given (see :func:`use_input_size`)."""
    if backend == "triton":
        runner = make_runner(str(model), backend="triton", device=device, threads=threads, **kwargs)
    else:
        if imgsz is not None:
            own = inspect_model(check_model_path(model)).meta.preprocess
            if own.pads_in_graph:
                _refuse_keep_ratio(str(model), own)
            if tuple(imgsz) == tuple(own.input_hw):
                imgsz = None  # the model's own size: the one cached export, nothing to change
        path, backend = deployable(model, backend, device, auto_export=kwargs.pop("auto_export", True), imgsz=imgsz)
        runner = make_runner(path, backend=backend, device=device, threads=threads, **kwargs)
    if imgsz is not None:
        use_input_size(runner, imgsz, str(model))
    return runner


def use_input_size(runner: Runner, imgsz: tuple[int, int], model: str) -> None:
    """``--imgsz H W``: run ``runner`` at input size (H, W) (letterboxed into it, so that results
    stay on each image's own grid). PyTorch runs any size; an ONNX graph only a size it was
    exported with (or any with ``--dynamic``); engines and Triton models keep their size. A
    keep-ratio model (imported from mmdetection) sizes each image itself: one line each."""
    imgsz = (int(imgsz[0]), int(imgsz[1]))
    meta = runner.meta
    if meta.preprocess.pads_in_graph:
        _refuse_keep_ratio(model, meta.preprocess)
    if imgsz == tuple(meta.preprocess.input_hw):
        return
    if runner.backend == "onnxruntime":
        dims = list(runner.session.get_inputs()[0].shape)[1:3] if runner.session is not None else []
        if len(dims) != 2 or all(isinstance(d, int) for d in dims):
            h, w = meta.preprocess.input_hw
            raise BadInputError(f"--imgsz {imgsz[0]} {imgsz[1]}: {model} is an ONNX graph fixed at {h} x {w}; "
                                f"export it with --imgsz {imgsz[0]} {imgsz[1]} (or --dynamic)")
    elif runner.backend != "torch":
        raise BadInputError(f"--imgsz {imgsz[0]} {imgsz[1]}: {runner.backend} models keep the size they were built "
                            f"with ({meta.preprocess.input_hw[0]} x {meta.preprocess.input_hw[1]}); build one with "
                            f"solo-deploy export --imgsz")
    runner.meta = replace(meta, preprocess=meta.preprocess.with_size(imgsz))


def _refuse_keep_ratio(model: str, spec: Any) -> None:
    raise BadInputError(f"--imgsz does not apply to {model}: it resizes each image keeping its ratio into "
                        f"{spec.scale[0]} x {spec.scale[1]} (keep-ratio preprocessing)")


def load(model: str | Path, backend: str = "auto", device: str = "cpu", conf: float | None = None,
         imgsz: tuple[int, int] | None = None, **kwargs: Any) -> Predictor:
    """``solo_deploy.load(path).predict(image)``: a ``Predictor`` for any model file; ``imgsz``
    (H, W) runs it at another input size (multiples of 32)."""
    if imgsz is not None:
        imgsz = check_input_size(imgsz, "imgsz")
    return Predictor(load_runner(model, backend=backend, device=device, imgsz=imgsz, **kwargs), conf=conf)
