"""TensorRT engines: build from ONNX (TensorRT 10.x and 11.x Python APIs) and run them.

NOTE: the engine build and :class:`TensorRTRunner` inference need TensorRT and an NVIDIA GPU;
they have NOT been executed on the machine this code was written on (no GPU, no TensorRT).
Everything that can run without TensorRT is separated out and tested on a CPU: the sidecar
check (:func:`check_engine_sidecar`), shape-profile resolution, precision planning.

Precision (TensorRT 11 removed the FP16/INT8 builder flags and ``int8_calibrator``):
- TensorRT >= 11: strongly typed networks only; the precision comes from the ONNX graph: an
  FP16 export (``solo-deploy export --half``) for ``fp16``, a Q/DQ ONNX for ``int8``.
- TensorRT 10: an ONNX that already carries its precision (FP16 tensors or Q/DQ nodes) is built
  strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``); an FP32 ONNX uses the
  weak-typing path: ``BuilderFlag.FP16``, or ``BuilderFlag.INT8`` with a calibration cache
  (read-only calibrator: the cache must exist, no calibration data is fed here).

Every engine gets a JSON sidecar ``<engine>.json`` (model metadata, export info, TensorRT
version, GPU name and compute capability, I/O tensors, profiles). Engines only run on the
TensorRT version and GPU they were built for, so the runner checks the sidecar first and
refuses mismatches with a clear message instead of a deserialisation error.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._atomic import atomic_path, write_bytes, write_json
from ..errors import BadInputError, RuntimeFailure

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from ..model.modelfile import ModelMeta

log = logging.getLogger("solo_deploy.export")

__all__ = [
    "PRECISIONS",
    "TRT_MISSING",
    "BuildResult",
    "TensorRTRunner",
    "build_engine",
    "check_engine_sidecar",
    "onnx_precision",
    "plan_precision",
    "read_sidecar",
    "resolve_profile",
    "sidecar_path",
]

TRT_MISSING = "TensorRT is not installed: pip install 'solo-deploy[tensorrt]' (needs an NVIDIA GPU)"
PRECISIONS = ("fp32", "fp16", "int8")
SIDECAR_FORMAT = "solo-deploy-engine"
SIDECAR_SCHEMA = 1
DEFAULT_MAX_BATCH = 8


# ---------------------------------------------------------------------------------------------
# Pure helpers (run and tested without TensorRT)
# ---------------------------------------------------------------------------------------------
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


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: str | os.PathLike[str]) -> dict[str, Any]:
    path = sidecar_path(engine)
    if not path.is_file():
        raise BadInputError(f"{engine} has no sidecar {path.name}: build engines with "
                            f"'solo-deploy export MODEL --format engine' (the sidecar holds the model metadata)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"cannot read engine sidecar {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise BadInputError(f"{path} is not a solo-deploy engine sidecar")
    return data


def check_engine_sidecar(sidecar: dict[str, Any], trt_version: str | None, gpu: dict[str, Any] | None,
                         engine: str = "engine") -> None:
    """Refuse an engine built for another TensorRT major.minor or another GPU.

    ``trt_version``: this machine's TensorRT (None: not checked). ``gpu``: ``{"name": str,
    "compute_capability": [major, minor]}`` of the device to run on (None: not checked).
    """
    if sidecar.get("format") != SIDECAR_FORMAT:
        raise BadInputError(f"{engine}: not a solo-deploy engine sidecar")
    if int(sidecar.get("schema_version", 0)) > SIDECAR_SCHEMA:
        raise BadInputError(f"{engine}: sidecar schema {sidecar.get('schema_version')} is newer than this "
                            f"solo-deploy understands ({SIDECAR_SCHEMA}): upgrade solo-deploy")
    built = sidecar.get("tensorrt", {}).get("version")
    built_gpu = sidecar.get("gpu", {})
    rebuild = "rebuild it here: solo-deploy export MODEL --format engine"
    if trt_version is not None:
        if not built:
            raise BadInputError(f"{engine}: sidecar does not say which TensorRT built it; {rebuild}")
        if _major_minor(built) != _major_minor(trt_version):
            raise BadInputError(f"{engine} was built with TensorRT {built}, this machine has TensorRT {trt_version}: "
                                f"engines only load on the same TensorRT major.minor; {rebuild}")
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


def onnx_precision(model: onnx.ModelProto) -> str:
    """Precision an ONNX graph carries: ``int8`` (Q/DQ nodes), ``fp16`` (float16 weights or
    Casts to float16) or ``fp32``."""
    import onnx

    ops = {n.op_type for n in model.graph.node}
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        return "int8"
    if any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer):
        return "fp16"
    for node in model.graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT16 for a in node.attribute):
            return "fp16"
    return "fp32"


@dataclass(frozen=True)
class PrecisionPlan:
    strongly_typed: bool
    flags: tuple[str, ...]  # BuilderFlag names to set (TensorRT 10 weak typing only)
    needs_calibration_cache: bool


def plan_precision(requested: str, carried: str, trt_major: int, calibration_cache: Path | None) -> PrecisionPlan:
    """How to build ``requested`` precision from an ONNX carrying ``carried`` on TensorRT ``trt_major``."""
    if requested not in PRECISIONS:
        raise BadInputError(f"unknown precision {requested!r}: choose fp32, fp16 or int8")
    export_hint = {"fp16": "export an FP16 ONNX first (solo-deploy export MODEL --half)",
                   "int8": "quantize to a Q/DQ ONNX first (solo-deploy calibrate)",
                   "fp32": "use an FP32 export"}[requested]
    if trt_major >= 11 or carried != "fp32":
        # Strongly typed: the graph decides. TensorRT 11 has no other mode.
        if carried != requested:
            why = "TensorRT 11 builds strongly typed networks only" if trt_major >= 11 else \
                "this ONNX already carries its own precision"
            raise BadInputError(f"--precision {requested} needs a {requested.upper()} ONNX but this one is "
                                f"{carried.upper()} ({why}): {export_hint}")
        return PrecisionPlan(strongly_typed=True, flags=(), needs_calibration_cache=False)
    if requested == "fp32":
        return PrecisionPlan(strongly_typed=False, flags=(), needs_calibration_cache=False)
    if requested == "fp16":
        return PrecisionPlan(strongly_typed=False, flags=("FP16",), needs_calibration_cache=False)
    if calibration_cache is None:
        raise BadInputError("INT8 from an FP32 ONNX on TensorRT 10 needs a calibration cache "
                            "(--calibration-cache FILE), or a Q/DQ ONNX")
    # FP16 too: layers TensorRT keeps out of INT8 then fall back to FP16 rather than FP32.
    return PrecisionPlan(strongly_typed=False, flags=("INT8", "FP16"), needs_calibration_cache=True)


Shape = tuple[int, int, int, int]


def resolve_profile(input_shape: Sequence[int | str | None], default_hw: tuple[int, int],
                    min_shape: Sequence[int] | None = None, opt_shape: Sequence[int] | None = None,
                    max_shape: Sequence[int] | None = None,
                    max_batch: int = DEFAULT_MAX_BATCH) -> tuple[Shape, Shape, Shape]:
    """Optimisation profile (min, opt, max) for the NHWC uint8 input.

    ``input_shape``: the ONNX input dims (ints for static, names/None/-1 for dynamic). Missing
    shapes default to batch 1..``max_batch`` (opt 1) and the model's input size.
    """
    dims = [d if isinstance(d, int) and d > 0 else None for d in input_shape]
    if len(dims) != 4:
        raise BadInputError(f"expected a 4-D NHWC input, got shape {list(input_shape)}")
    h, w = default_hw

    def fill(shape: Sequence[int] | None, batch: int) -> Shape:
        if shape is not None:
            shape = tuple(int(v) for v in shape)
            if len(shape) != 4:
                raise BadInputError(f"profile shapes are N,H,W,3; got {list(shape)}")
            return shape  # type: ignore[return-value]
        return (dims[0] or batch, dims[1] or h, dims[2] or w, dims[3] or 3)

    lo, opt, hi = fill(min_shape, 1), fill(opt_shape, 1), fill(max_shape, max_batch)
    for name, shp in (("min", lo), ("opt", opt), ("max", hi)):
        for axis, (want, got) in enumerate(zip(dims, shp)):
            if want is not None and want != got:
                raise BadInputError(f"{name} shape {list(shp)} conflicts with the ONNX input's static dim "
                                    f"{axis} = {want}")
        if shp[1] % 32 or shp[2] % 32 or shp[1] <= 0 or shp[2] <= 0:
            raise BadInputError(f"{name} shape {list(shp)}: H and W must be positive multiples of 32")
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise BadInputError(f"profile shapes must satisfy min <= opt <= max: {list(lo)}, {list(opt)}, {list(hi)}")
    return lo, opt, hi


# ---------------------------------------------------------------------------------------------
# Build (needs TensorRT and a GPU)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuildResult:
    path: Path
    sidecar: Path
    precision: str
    strongly_typed: bool
    tensorrt_version: str
    gpu: dict[str, Any]
    profile: tuple[Shape, Shape, Shape]
    seconds: float
    size_bytes: int

    def summary(self) -> str:
        return (f"wrote {self.path} ({self.size_bytes / 2**20:.1f} MiB, {self.precision}"
                f"{', strongly typed' if self.strongly_typed else ''}, TensorRT {self.tensorrt_version}, "
                f"{self.gpu.get('name', '?')}, profile min {list(self.profile[0])} opt {list(self.profile[1])} "
                f"max {list(self.profile[2])}, {self.seconds:.0f} s) + {self.sidecar.name}")


def gpu_info(device: int = 0) -> dict[str, Any]:
    """Name and compute capability of a CUDA device (through torch)."""
    import torch

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


def _make_cache_calibrator(trt: Any, cache: bytes) -> Any:
    """A TensorRT 10 INT8 calibrator that only replays an existing calibration cache."""

    class CacheCalibrator(trt.IInt8MinMaxCalibrator):  # deprecated in 10.1, removed in 11
        def __init__(self) -> None:
            trt.IInt8MinMaxCalibrator.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:  # no data: the cache must cover every tensor
            return None

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, data: Any) -> None:
            return None

    return CacheCalibrator()


def _dtype_name(trt: Any, dtype: Any) -> str:
    try:
        return np.dtype(trt.nptype(dtype)).name
    except Exception:  # noqa: BLE001 - types numpy has no name for (bf16, fp8)
        return str(dtype).split(".")[-1].lower()


def build_engine(onnx_path: str | os.PathLike[str], output: str | os.PathLike[str], precision: str | None = "fp32", *,
                 min_shape: Sequence[int] | None = None, opt_shape: Sequence[int] | None = None,
                 max_shape: Sequence[int] | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                 workspace_gib: float = 4.0, timing_cache: str | os.PathLike[str] | None = None,
                 calibration_cache: str | os.PathLike[str] | None = None, device: int = 0) -> BuildResult:
    """Build a serialized TensorRT engine from a solo-deploy ONNX export (needs TensorRT + GPU).

    ``precision``: fp32 | fp16 | int8, or None for the precision the ONNX carries. Profile
    shapes are NHWC (see :func:`resolve_profile`); ``workspace_gib`` caps TensorRT's workspace
    pool; ``timing_cache`` is read when present and written back after the build. Writes the
    engine and ``<engine>.json`` atomically.
    Not executable on the development machine: no TensorRT, no GPU there.
    """
    from .._atomic import _check_parent
    from .onnx_checks import load_onnx_checked
    from .wrapper import INPUT_NAME

    t0 = time.perf_counter()
    onnx_path, output = Path(onnx_path), Path(output)
    model = load_onnx_checked(onnx_path, load_external=False)
    props = {p.key: p.value for p in model.metadata_props}
    if "solo_deploy" not in props:
        raise BadInputError(f"{onnx_path} is not a solo-deploy ONNX export (no solo_deploy metadata)")
    meta_dict = json.loads(props["solo_deploy"])
    if output.exists() and output.is_dir():
        raise BadInputError(f"cannot write {output}: it is a folder")
    _check_parent(output)
    if workspace_gib <= 0:
        raise BadInputError(f"workspace must be positive, got {workspace_gib} GiB")
    calib = Path(calibration_cache) if calibration_cache else None
    if calib is not None and not calib.is_file():
        raise BadInputError(f"calibration cache not found: {calib}")

    trt = import_tensorrt()
    gpu = gpu_info(device)
    import torch

    torch.cuda.set_device(device)
    major, _ = _major_minor(trt.__version__)
    carried = onnx_precision(model)
    precision = precision or carried
    plan = plan_precision(precision, carried, major, calib)
    inp = next((i for i in model.graph.input if i.name == INPUT_NAME), None)
    if inp is None:
        raise BadInputError(f"{onnx_path} has no input named {INPUT_NAME!r}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    default_hw = tuple(meta_dict["preprocess"]["input_hw"])
    profile = resolve_profile(dims, default_hw, min_shape, opt_shape, max_shape, max_batch)

    logger = _trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed and major < 11:
        # TensorRT 11 always builds strongly typed and deprecates the flag; 10.x needs it.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BadInputError(f"TensorRT cannot parse {onnx_path}: {'; '.join(errors[:3]) or 'unknown error'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.needs_calibration_cache:
        assert calib is not None
        config.int8_calibrator = _make_cache_calibrator(trt, calib.read_bytes())
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(INPUT_NAME, *profile)
    config.add_optimization_profile(trt_profile)
    if plan.needs_calibration_cache and hasattr(config, "set_calibration_profile"):
        config.set_calibration_profile(trt_profile)  # INT8 calibration with dynamic shapes (TensorRT 10)

    # Timing cache: reuse measured tactics across builds; a cache from another TensorRT/GPU is
    # rejected (ignore_mismatch=False) and we start a fresh one.
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s does not match this TensorRT/GPU; starting a fresh one", cache_path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    log.info("building TensorRT %s engine (%s) from %s", trt.__version__, precision, onnx_path.name)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeFailure(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above)")
    data = bytes(serialized)
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
    if cache_path is not None:
        write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))

    io = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        io.append({"name": t.name, "mode": "input", "dtype": _dtype_name(trt, t.dtype), "shape": list(t.shape)})
    for i in range(network.num_outputs):
        t = network.get_output(i)
        io.append({"name": t.name, "mode": "output", "dtype": _dtype_name(trt, t.dtype), "shape": list(t.shape)})
    from ..model.modelfile import file_sha256

    sidecar = {
        "format": SIDECAR_FORMAT,
        "schema_version": SIDECAR_SCHEMA,
        "solo_deploy": meta_dict,  # ModelMeta.to_dict() + "export" section, as in the ONNX
        "engine": {"precision": precision, "strongly_typed": plan.strongly_typed, "builder_flags": list(plan.flags),
                   "profile": {"min": list(profile[0]), "opt": list(profile[1]), "max": list(profile[2])},
                   "workspace_gib": workspace_gib, "io": io, "size_bytes": len(data),
                   "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
        "onnx": {"file": onnx_path.name, "sha256": file_sha256(onnx_path)},
        "tensorrt": {"version": trt.__version__},
        "gpu": gpu,
    }
    side = sidecar_path(output)
    write_json(side, sidecar)
    return BuildResult(path=output, sidecar=side, precision=precision, strongly_typed=plan.strongly_typed,
                       tensorrt_version=trt.__version__, gpu=gpu, profile=profile,
                       seconds=time.perf_counter() - t0, size_bytes=len(data))


# ---------------------------------------------------------------------------------------------
# Inference (needs TensorRT and a GPU)
# ---------------------------------------------------------------------------------------------
class TensorRTRunner:
    """Runs a solo-deploy engine with CUDA buffers owned by torch; outputs stay torch CUDA tensors.

    ``runner(images)``: uint8 (N, H, W, 3) numpy or torch tensor -> ``(scores, kernels,
    [mask_feat, ...])`` as torch CUDA tensors, enqueued on torch's current stream (so
    post-processing on the same stream is ordered after inference without a host sync).
    Not executable on the development machine: no TensorRT, no GPU there.
    """

    backend = "tensorrt"

    def __init__(self, path: str | os.PathLike[str], device: str = "cuda") -> None:
        from ..model.modelfile import ModelMeta

        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"engine file not found: {path}")
        if path.stat().st_size == 0:
            raise BadInputError(f"engine file is empty: {path}")
        if not str(device).startswith("cuda"):
            raise BadInputError(f"the tensorrt backend runs on a CUDA device, got --device {device}")
        sidecar = read_sidecar(path)
        self.meta: ModelMeta = ModelMeta.from_dict(sidecar["solo_deploy"], source=str(path))
        self.sidecar = sidecar
        trt = import_tensorrt()
        import torch

        index = torch.device(device).index or 0
        check_engine_sidecar(sidecar, trt.__version__, gpu_info(index), engine=str(path))
        self.device = f"cuda:{index}"
        self._torch, self._trt = torch, trt
        torch.cuda.set_device(index)
        self._runtime = trt.Runtime(_trt_logger(trt))
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BadInputError(f"TensorRT cannot deserialize {path} (corrupt, or built by another version)")
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeFailure("TensorRT could not create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.input_names) != 1:
            raise BadInputError(f"{path}: expected one input tensor, found {self.input_names}")
        self.input_name = self.input_names[0]
        from .wrapper import output_names

        wanted = output_names(self.meta.model)
        if sorted(wanted) != sorted(self.output_names):
            raise BadInputError(f"{path}: engine outputs {self.output_names} do not match the model's {wanted}")
        self.output_names = wanted  # contract order: scores, kernels, mask feats
        self.max_batch = int(sidecar.get("engine", {}).get("profile", {}).get("max", [1])[0])
        self._dtypes = {n: self._torch_dtype(engine.get_tensor_dtype(n)) for n in names}

    def _torch_dtype(self, dtype: Any) -> Any:
        trt, torch = self._trt, self._torch
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
                 trt.int8: torch.int8, trt.uint8: torch.uint8, trt.bool: torch.bool}
        for name, tdt in (("int64", torch.int64), ("bf16", torch.bfloat16)):
            if hasattr(trt, name):
                table[getattr(trt, name)] = tdt
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

    def __call__(self, images: Any) -> tuple[Any, Any, list[Any]]:
        torch = self._torch
        if isinstance(images, np.ndarray):
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise BadInputError(f"runner input must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
            x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        else:
            x = images.to(self.device).contiguous()
        parts = [self._run_chunk(x[i:i + self.max_batch]) for i in range(0, int(x.shape[0]), self.max_batch)]
        outs = parts[0] if len(parts) == 1 else [torch.cat([p[j] for p in parts]) for j in range(len(parts[0]))]
        return outs[0], outs[1], list(outs[2:])
