"""TensorRT engines at run time: the engine's JSON sidecar (model metadata, TensorRT version, GPU)
and ``TensorRTRunner``. Building engines is export's job (``export/tensorrt.py``), which uses the
sidecar helpers from here.

The runner needs TensorRT and a GPU: written against the TensorRT 10 and 11 Python APIs and not
executed on the CPU-only development machine (its tests are marked ``gpu``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._lazy import lazy_import
from ..core.inspect import SIDECAR_FORMAT, SIDECAR_SCHEMA, read_sidecar, sidecar_path
from ..core.meta import ModelMeta
from ..errors import BadInputError, RuntimeFailure
from .runners import Runner

torch = lazy_import("torch")

log = logging.getLogger("solo_deploy.runtime")

__all__ = ["SIDECAR_FORMAT", "SIDECAR_SCHEMA", "TRT_MISSING", "TensorRTRunner", "check_engine_sidecar", "gpu_info",
           "import_tensorrt", "read_sidecar", "same_version", "sidecar_path", "version_compatible_loads"]

TRT_MISSING = "TensorRT is not installed: pip install 'solo-deploy[tensorrt]' (needs an NVIDIA GPU)"


def import_tensorrt() -> Any:
    """``import tensorrt`` or a BadInputError that says how to install it."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BadInputError(TRT_MISSING) from None
    except Exception as exc:  # noqa: BLE001 - e.g. missing CUDA libraries at import time
        raise BadInputError(f"TensorRT is installed but cannot be imported ({exc}); {TRT_MISSING}") from None
    return trt


def _major_minor(version: str) -> tuple[int, int]:
    parts = str(version).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise BadInputError(f"unreadable TensorRT version {version!r}") from None


def _version_tuple(version: str) -> tuple[int, ...]:
    """``"10.9.0.34"`` -> (10, 9, 0, 34); at least major.minor.patch (missing parts are 0)."""
    parts = str(version).strip().split(".")
    try:
        nums = tuple(int(p) for p in parts if p != "")
    except ValueError:
        raise BadInputError(f"unreadable TensorRT version {version!r}") from None
    if not nums:
        raise BadInputError(f"unreadable TensorRT version {version!r}")
    return nums + (0,) * (3 - len(nums)) if len(nums) < 3 else nums


# Cross-major loads TensorRT documents for version-compatible engines (built major -> runtime major):
# TensorRT 10.16 "Version Compatibility": TensorRT 8 engines work with TensorRT 9 and 10 runtimes;
# TensorRT 11.1 "Engine Compatibility": TensorRT 10 engines work with TensorRT 11.
VC_CROSS_MAJOR = frozenset({(8, 9), (8, 10), (10, 11)})
VC_MIN_VERSION = (8, 6)  # 10.16 docs: version compatibility starts at 8.6, for the builder and the runtime


def same_version(built: str, here: str) -> bool:
    """TensorRT's default rule: an engine works only with the TensorRT version that built it.
    major.minor.patch must match, and the build number too when both versions carry one."""
    a, b = _version_tuple(built), _version_tuple(here)
    return a[:3] == b[:3] and (len(a) < 4 or len(b) < 4 or a[3] == b[3])


def version_compatible_loads(built: str, here: str) -> bool:
    """The rule for engines built with ``BuilderFlag.VERSION_COMPATIBLE``: built with 8.6 or later,
    run on the same or a later TensorRT of the same major, or across the documented major pairs."""
    a, b = _version_tuple(built), _version_tuple(here)
    # major.minor.patch decide; the build number only where both report one (10.9.0 vs 10.9.0.34).
    later_or_same = b[:3] > a[:3] or (b[:3] == a[:3] and (len(a) < 4 or len(b) < 4 or b[3:] >= a[3:]))
    if a[:2] < VC_MIN_VERSION or b[:2] < VC_MIN_VERSION or not later_or_same:
        return False
    return a[0] == b[0] or (a[0], b[0]) in VC_CROSS_MAJOR


def check_engine_sidecar(sidecar: dict[str, Any], trt_version: str | None, gpu: dict[str, Any] | None,
                         engine: str = "engine") -> None:
    """Refuse an engine built by another TensorRT version or for another GPU.

    An engine loads only on the exact TensorRT version that built it; one built version-compatible
    (sidecar ``engine.version_compatible``) also loads on the later versions TensorRT allows
    (:func:`version_compatible_loads`). ``trt_version``: this machine's TensorRT (None: not
    checked). ``gpu``: ``{"name": str, "compute_capability": [major, minor]}`` of the device to run
    on (None: not checked); version compatibility is not hardware compatibility, so it is always checked.
    """
    if sidecar.get("format") != SIDECAR_FORMAT:
        raise BadInputError(f"{engine}: not a solo-deploy engine sidecar")
    if int(sidecar.get("schema_version", 0)) > SIDECAR_SCHEMA:
        raise BadInputError(f"{engine}: sidecar schema {sidecar.get('schema_version')} is newer than this "
                            f"solo-deploy understands ({SIDECAR_SCHEMA}): upgrade solo-deploy")
    built = sidecar.get("tensorrt", {}).get("version")
    built_gpu = sidecar.get("gpu", {})
    vc = bool(sidecar.get("engine", {}).get("version_compatible", False))
    rebuild = "rebuild it here: solo-deploy export MODEL --format engine"
    if trt_version is not None:
        if not built:
            raise BadInputError(f"{engine}: sidecar does not say which TensorRT built it; {rebuild}")
        if vc and not version_compatible_loads(built, trt_version):
            raise BadInputError(f"{engine} was built version-compatible with TensorRT {built}, this machine has "
                                f"TensorRT {trt_version}: such engines load only on the same or a later TensorRT "
                                f"of the same major (or 8->9/10, 10->11), from 8.6 on; {rebuild}")
        if not vc and not same_version(built, trt_version):
            raise BadInputError(f"{engine} was built with TensorRT {built}, this machine has TensorRT {trt_version}: "
                                f"an engine loads only on the TensorRT version that built it (or build it with "
                                f"--version-compatible); {rebuild}")
    if gpu is not None:
        want_cc = [int(v) for v in built_gpu.get("compute_capability", [])]
        have_cc = [int(v) for v in gpu.get("compute_capability", [])]
        if want_cc and have_cc and want_cc != have_cc:
            raise BadInputError(f"{engine} was built for compute capability {'.'.join(map(str, want_cc))} "
                                f"({built_gpu.get('name', '?')}), this GPU is {gpu.get('name', '?')} with "
                                f"{'.'.join(map(str, have_cc))}; {rebuild}")
        if built_gpu.get("name") and gpu.get("name") and built_gpu["name"] != gpu["name"]:
            raise BadInputError(f"{engine} was built on a {built_gpu['name']}, this GPU is a {gpu['name']}: "
                                f"TensorRT tunes engines per GPU model; {rebuild}")


def gpu_info(device: int = 0) -> dict[str, Any]:
    """Name and compute capability of a CUDA device (through torch)."""
    if not torch.cuda.is_available():
        raise BadInputError("no CUDA device visible to torch: TensorRT engines need an NVIDIA GPU")
    props = torch.cuda.get_device_properties(device)
    return {"name": props.name, "compute_capability": [props.major, props.minor],
            "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}


def _trt_logger(trt: Any) -> Any:
    level = os.environ.get("SOLO_DEPLOY_LOG_LEVEL", "warning")
    sev = {"debug": trt.Logger.VERBOSE, "info": trt.Logger.INFO, "error": trt.Logger.ERROR}.get(level,
                                                                                                trt.Logger.WARNING)
    return trt.Logger(sev)


def _dtype_name(trt: Any, dtype: Any) -> str:
    """numpy-style name of a TensorRT type; ``bfloat16`` for BF16 (numpy has none), which the Triton
    writer maps to TYPE_BF16."""
    bf16 = getattr(getattr(trt, "DataType", None), "BF16", None)
    if bf16 is not None and dtype == bf16:
        return "bfloat16"
    try:
        return np.dtype(trt.nptype(dtype)).name
    except Exception:  # noqa: BLE001 - types numpy has no name for (fp8, int4, fp4)
        return str(dtype).split(".")[-1].lower()


# ---------------------------------------------------------------------------------------------
# Inference (needs TensorRT and a GPU)
# ---------------------------------------------------------------------------------------------
class TensorRTRunner(Runner):
    """Runs a solo-deploy engine with CUDA buffers owned by torch; outputs stay torch CUDA tensors.

    ``runner(images)``: uint8 (N, H, W, 3) numpy or torch tensor -> ``(scores, kernels,
    [mask_feat, ...])`` (decoupled SOLO: ``kernels`` None, the x- and y-maps) as torch CUDA
    tensors, enqueued on torch's current stream (so post-processing on the same stream is
    ordered after inference without a host sync).
    Building it checks the file, its sidecar, TensorRT's version and the GPU; :meth:`start`
    deserializes the engine. Not executable on the development machine: no TensorRT, no GPU there.
    """

    backend = "tensorrt"

    def __init__(self, path: str | os.PathLike[str], device: str = "cuda") -> None:
        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"engine file not found: {path}")
        if path.stat().st_size == 0:
            raise BadInputError(f"engine file is empty: {path}")
        if not str(device).startswith("cuda"):
            raise BadInputError(f"the tensorrt backend runs on a CUDA device, got --device {device}")
        sidecar = read_sidecar(path)
        meta = ModelMeta.from_dict(sidecar["solo_deploy"], source=str(path))
        self.path, self.sidecar = path, sidecar
        trt = import_tensorrt()
        index = torch.device(device).index or 0
        check_engine_sidecar(sidecar, trt.__version__, gpu_info(index), engine=str(path))
        super().__init__(meta, f"cuda:{index}")
        self._torch, self._trt = torch, trt
        self.max_batch = int(sidecar.get("engine", {}).get("profile", {}).get("max", [1])[0])

    def _start(self) -> None:
        # Built in locals and kept only when everything checks out: a failed start holds no GPU memory.
        trt, torch, path = self._trt, self._torch, self.path
        torch.cuda.set_device(self.device)
        runtime = trt.Runtime(_trt_logger(trt))
        if self.sidecar.get("engine", {}).get("version_compatible"):
            # A version-compatible plan carries TensorRT's lean runtime (host code); TensorRT loads it
            # only when allowed. The engine is our own build, named by the user.
            runtime.engine_host_code_allowed = True
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BadInputError(f"TensorRT cannot deserialize {path} (corrupt, or built by another version)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        found = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1:
            raise BadInputError(f"{path}: expected one input tensor, found {inputs}")
        if sorted(self.output_names) != sorted(found):  # output_names: the contract order from the metadata
            raise BadInputError(f"{path}: engine outputs {found} do not match the model's {self.output_names}")
        dtypes = {n: self._torch_dtype(engine.get_tensor_dtype(n)) for n in names}
        context = engine.create_execution_context()
        if context is None:
            raise RuntimeFailure("TensorRT could not create an execution context (out of GPU memory?)")
        self._runtime, self.engine, self.context = runtime, engine, context
        self.input_names, self.input_name, self._dtypes = inputs, inputs[0], dtypes

    def _stop(self) -> None:
        self.context = self.engine = self._runtime = None

    def _torch_dtype(self, dtype: Any) -> Any:
        trt, torch = self._trt, self._torch
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                 trt.int8: torch.int8, trt.uint8: torch.uint8, trt.bool: torch.bool}
        # DataType members, not the lowercase aliases: the BF16 alias is trt.bfloat16, never trt.bf16.
        for name, tdt in (("INT64", torch.int64), ("BF16", torch.bfloat16)):
            if hasattr(trt.DataType, name):
                table[getattr(trt.DataType, name)] = tdt
        if dtype not in table:
            raise RuntimeFailure(f"unsupported TensorRT tensor type {dtype}")
        return table[dtype]

    def _run_chunk(self, x: Any) -> list[Any]:
        torch = self._torch
        ctx = self.context
        if not ctx.set_input_shape(self.input_name, tuple(int(v) for v in x.shape)):
            raise BadInputError(f"input shape {tuple(x.shape)} is outside the engine's profile "
                                f"{self.sidecar.get('engine', {}).get('profile')}")
        ctx.set_tensor_address(self.input_name, int(x.data_ptr()))
        outs = []
        for name in self.output_names:
            shape = tuple(int(v) for v in ctx.get_tensor_shape(name))
            if any(v < 0 for v in shape):
                raise RuntimeFailure(f"output {name} has an unresolved shape {shape}")
            out = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            ctx.set_tensor_address(name, int(out.data_ptr()))
            outs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeFailure("TensorRT execute_async_v3 failed")
        return outs

    def check_input(self, images: Any) -> None:
        if isinstance(images, np.ndarray):
            super().check_input(images)

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, np.ndarray):
            return self._torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        return batch.to(self.device).contiguous()

    def _infer(self, x: Any) -> list[Any]:
        parts = [self._run_chunk(x[i:i + self.max_batch]) for i in range(0, int(x.shape[0]), self.max_batch)]
        return parts[0] if len(parts) == 1 else [self._torch.cat([p[j] for p in parts]) for j in range(len(parts[0]))]

    def _to_host(self, out: list[Any]) -> list[Any]:
        return list(out)  # stays on the GPU: the runtime post-processes TensorRT outputs there
