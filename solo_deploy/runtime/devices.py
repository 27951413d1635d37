"""What this machine can run: library versions and the backends/devices that really work.

ONNX Runtime's CUDA provider is listed as available whenever onnxruntime-gpu is installed, even
without a GPU, and asking for it then prints loud CUDA library errors before falling back to
the CPU. :func:`cuda_provider_works` therefore probes it once, in a silenced child process,
with a one-node model, and caches the answer for the life of this process.
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import os
import platform
import re
import subprocess
import sys
from typing import Any

log = logging.getLogger("solo_deploy.runtime")

__all__ = ["cuda_provider_works", "describe", "device_index", "gpus", "parse_device", "tensorrt_version",
           "torch_cuda_works"]

_DEVICE_RE = re.compile(r"(?:cuda:)?(\d{1,3})")


def parse_device(value: str) -> str:
    """The device a user names, in the spellings people bring from PyTorch and Ultralytics:
    ``cpu``; ``cuda`` (GPU 0); ``cuda:N``; ``N``. Returns ``"cpu"`` or ``"cuda:N"``; anything
    else (``gpu``, ``cuda:x``, ``-1``) is a ``BadInputError``."""
    from ..errors import BadInputError

    text = str(value).strip().lower()
    if text == "cpu":
        return "cpu"
    if text == "cuda":
        return "cuda:0"
    m = _DEVICE_RE.fullmatch(text)
    if m is None:
        raise BadInputError(f"unknown device {value!r}: use cpu, cuda, cuda:N or a GPU index N")
    return f"cuda:{int(m.group(1))}"


def device_index(device: str) -> int:
    """GPU index of a parsed device (``cuda:N`` -> N); 0 for a bare ``cuda``."""
    return int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0

PROBE_TIMEOUT_S = 120.0

# Runs in a child process: exit 0 only if ORT's CUDA provider is active and computes correctly.
_ORT_CUDA_PROBE = r"""
import sys
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe", [x], [y])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
opts = ort.SessionOptions()
opts.log_severity_level = 4
sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CUDAExecutionProvider"])
if sess.get_providers()[:1] != ["CUDAExecutionProvider"]:
    sys.exit(3)
out = sess.run(None, {"x": np.arange(4, dtype=np.float32)})[0]
sys.exit(0 if np.allclose(out, [0, 2, 4, 6]) else 4)
"""


@functools.lru_cache(maxsize=1)
def cuda_provider_works() -> bool:
    """True only if ONNX Runtime's CUDAExecutionProvider loads and runs a tiny model here."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        proc = subprocess.run([sys.executable, "-c", _ORT_CUDA_PROBE], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=PROBE_TIMEOUT_S,
                              env={**os.environ, "ORT_LOGGING_LEVEL": "4"}, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("ONNX Runtime CUDA probe failed to run: %s", exc)
        return False
    log.debug("ONNX Runtime CUDA probe exit code %s", proc.returncode)
    return proc.returncode == 0


@functools.lru_cache(maxsize=1)
def torch_cuda_works() -> bool:
    """True if torch sees a CUDA device and can run a kernel on it."""
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        x = torch.ones(4, device="cuda")
        return bool(((x + x).sum() == 8).item())
    except Exception as exc:  # noqa: BLE001 - broken drivers raise all sorts
        log.debug("torch CUDA check failed: %s", exc)
        return False


def tensorrt_version() -> str | None:
    """The installed TensorRT Python package version, or None."""
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except Exception:  # noqa: BLE001 - ImportError, or missing CUDA libraries at import
        return None


def gpus() -> list[dict[str, Any]]:
    """CUDA devices as torch sees them: name, compute capability, memory."""
    if not torch_cuda_works():
        return []
    import torch

    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": props.name, "compute_capability": [props.major, props.minor],
                    "memory_gib": round(props.total_memory / 2**30, 1)})
    return out


def _module_version(module: str) -> str | None:
    try:
        return str(importlib.import_module(module).__version__)
    except Exception:  # noqa: BLE001 - not installed or fails to import (e.g. no CUDA runtime)
        return None


def describe() -> dict[str, Any]:
    """Versions and working backends/devices, for ``solo-deploy info`` (plain JSON-able dict)."""
    from .._version import dist_version, versions

    try:
        import onnxruntime as ort

        ort_providers = list(ort.get_available_providers())
    except Exception:  # noqa: BLE001
        ort_providers = []
    trt = tensorrt_version()
    torch_cuda = torch_cuda_works()
    ort_cuda = cuda_provider_works()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            **versions("torch"),
            "torch_cuda": _torch_cuda_version(),
            **versions("onnxruntime", "onnx", "onnxslim"),
            "tensorrt": trt,  # importable, not just installed
            "cupy": _module_version("cupy"),
            **versions("tritonclient"),
        },
        "onnxruntime_providers": ort_providers,
        "gpus": gpus(),
        "backends": {
            "torch": ["cpu", "cuda"] if torch_cuda else ["cpu"],
            "onnxruntime": ["cpu", "cuda"] if ort_cuda else ["cpu"],
            "tensorrt": ["cuda"] if trt and torch_cuda else [],
            "triton": ["remote"] if dist_version("tritonclient") else [],
        },
    }


def _torch_cuda_version() -> str | None:
    try:
        import torch

        return torch.version.cuda
    except Exception:  # noqa: BLE001
        return None
