"""One runner interface over every inference backend (PyTorch, ONNX Runtime, TensorRT, Triton).

A runner takes a letterboxed uint8 RGB batch (N, H, W, 3) as numpy and returns the raw deploy
outputs ``(scores (N, cells, C), kernels (N, cells, E), [mask_feat, ...])`` as arrays of its
device (numpy on the host; torch/CuPy arrays stay on the GPU for post-processing).
Heavy dependencies are imported when a runner is built, never at module import.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from .._paths import check_model_path
from ..errors import BadInputError, RuntimeFailure
from ..model.modelfile import MODEL_SUFFIXES, ModelMeta
from .devices import device_index, parse_device

log = logging.getLogger("solo_deploy.runtime")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "triton")


class Runner(Protocol):
    meta: ModelMeta
    backend: str
    device: str

    def __call__(self, images: np.ndarray) -> tuple[Any, Any, list[Any]]: ...


def _check_batch(images: np.ndarray, meta: ModelMeta) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise BadInputError(f"runner input must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")


class TorchRunner:
    """PyTorch eager on CPU or CUDA, from a checkpoint or an inference model file."""

    backend = "torch"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        import torch

        from ..export.wrapper import DeployWrapper
        from ..model.modelfile import build_network

        device = parse_device(device)
        if device.startswith("cuda"):
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if device_index(device) >= count:
                raise BadInputError(f"--device {device} asked for, but torch sees "
                                    f"{count or 'no'} CUDA device{'' if count == 1 else 's'} here")
        if threads:
            torch.set_num_threads(threads)
        net, self.meta = build_network(path)
        self.device = device
        self.model = DeployWrapper(net, self.meta.preprocess).to(device).eval()
        self._torch = torch

    def __call__(self, images: np.ndarray):
        _check_batch(images, self.meta)
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
            out = self.model(x)
        return out[0], out[1], list(out[2:])


def onnx_meta(path: str | Path) -> ModelMeta:
    """Metadata stored in an ONNX file's metadata_props by `solo-deploy export`."""
    import onnx

    from ..export.onnx_checks import load_onnx_checked

    model = load_onnx_checked(path, load_external=False)
    props = {p.key: p.value for p in model.metadata_props}
    if "solo_deploy" not in props:
        raise BadInputError(f"{path} is an ONNX model but not a solo-deploy export (no solo_deploy metadata)")
    try:
        return ModelMeta.from_dict(json.loads(props["solo_deploy"]), source=str(path))
    except json.JSONDecodeError:
        raise BadInputError(f"{path}: solo_deploy metadata is not valid JSON") from None
    finally:
        del onnx


def _ort_providers(device: str) -> list[Any]:
    import onnxruntime as ort

    if device.startswith("cuda"):
        from .devices import cuda_provider_works

        if "CUDAExecutionProvider" in ort.get_available_providers() and cuda_provider_works():
            return [("CUDAExecutionProvider", {"device_id": device_index(device)}), "CPUExecutionProvider"]
        raise BadInputError(f"--device {device} asked for, but ONNX Runtime's CUDA provider does not work here")
    return ["CPUExecutionProvider"]


class OnnxRunner:
    """ONNX Runtime: CPU provider, or CUDA when it really works (checked, without noisy errors)."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None, spin: bool = True) -> None:
        import onnxruntime as ort

        self.meta = onnx_meta(path)
        self.device = device = parse_device(device)
        opts = ort.SessionOptions()
        # Fatal only: ORT also logs a load failure natively (multi-line, coloured) on stderr; the
        # same message reaches the user once, as the BadInputError line below.
        opts.log_severity_level = 4
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spin:
            # In the pipeline, post-processing and sinks share the cores with inference: spinning
            # worker threads burn the time they need (2 cores: pipeline/bare 0.43 -> 0.60).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=_ort_providers(device))
        except BadInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise BadInputError(f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0][:300]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._fixed_batch = self.session.get_inputs()[0].shape[0]

    def __call__(self, images: np.ndarray):
        _check_batch(images, self.meta)
        if isinstance(self._fixed_batch, int) and images.shape[0] != self._fixed_batch:
            # A static-batch export: run image by image (or in chunks) and concatenate.
            parts = [self.session.run(self.output_names, {self.input_name: images[i:i + self._fixed_batch]})
                     for i in range(0, images.shape[0], self._fixed_batch)]
            outs = [np.concatenate([p[j] for p in parts]) for j in range(len(self.output_names))]
        else:
            outs = self.session.run(self.output_names, {self.input_name: images})
        return outs[0], outs[1], list(outs[2:])


def detect_backend(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in MODEL_SUFFIXES:
        return "torch"
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in (".engine", ".plan"):
        return "tensorrt"
    raise BadInputError(f"unsupported model file type {suffix or '(none)'!r} for {path}: "
                        f"expected .ckpt, .safetensors, .onnx or .engine")


def make_runner(path: str | Path, backend: str = "auto", device: str = "cpu", threads: int | None = None,
                **kwargs: Any) -> Runner:
    """Build the runner for ``path``. ``auto`` picks the fastest backend that works for the file:
    TensorRT for engines, ONNX Runtime for ONNX, and for PyTorch model files ONNX Runtime through
    a cached export on a CPU (1.6x faster here, see README) or PyTorch on CUDA."""
    if backend not in BACKENDS:
        raise BadInputError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    device = parse_device(device)
    if backend == "triton":
        from .triton_client import TritonRunner

        return TritonRunner(str(path), url=kwargs.get("url", "localhost:8001"))
    p = check_model_path(path)
    kind = detect_backend(p)
    if backend == "auto":
        backend = kind
        if kind == "torch" and not device.startswith("cuda") and kwargs.get("auto_export", True):
            from ..export.cache import cached_onnx

            p, backend, kind = cached_onnx(p), "onnxruntime", "onnxruntime"
    if backend == "torch":
        if kind != "torch":
            raise BadInputError(f"the torch backend needs a .ckpt or .safetensors model, got {p.name}")
        return TorchRunner(p, device=device, threads=threads)
    if backend == "onnxruntime":
        if kind != "onnxruntime":
            raise BadInputError(f"the onnxruntime backend needs an .onnx model, got {p.name} "
                                f"(export it first: solo-deploy export {p.name} -o model.onnx)")
        return OnnxRunner(p, device=device, threads=threads, spin=kwargs.get("spin", True))
    if kind != "tensorrt":
        raise BadInputError(f"the tensorrt backend needs an .engine file, got {p.name}")
    from ..export.tensorrt import TensorRTRunner

    return TensorRTRunner(p, device=device)


def run_batched(runner: Runner, images: Sequence[np.ndarray]):
    """Stack letterboxed images (H, W, 3) and run them as one batch."""
    return runner(np.stack(list(images)))


__all__ = ["BACKENDS", "OnnxRunner", "Runner", "RuntimeFailure", "TorchRunner", "make_runner", "detect_backend"]
