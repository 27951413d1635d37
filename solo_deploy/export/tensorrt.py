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

A calibration cache is handed to TensorRT with its header rewritten in memory for the installed
TensorRT and the replaying calibrator's algorithm (:func:`retarget_calibration_cache`): TensorRT
skips a cache whose header it considers incompatible and would then ask the calibrator for data
it does not have. The file itself is never modified.

Every engine gets a JSON sidecar ``<engine>.json`` (model metadata, export info, TensorRT
version, GPU name and compute capability, I/O tensors, profiles, whether it is version-compatible).
Engines only run on the TensorRT version that built them (or, built with ``version_compatible``,
on the versions TensorRT's compatibility rule allows) and on the GPU model they were built for, so
the runner checks the sidecar first and refuses mismatches with a clear message instead of a
deserialisation error.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._atomic import atomic_path, write_bytes, write_json
from ..errors import BadInputError, RuntimeFailure
from ..runtime.tensorrt import (
    SIDECAR_FORMAT,
    SIDECAR_SCHEMA,
    TRT_MISSING,
    _dtype_name,
    _major_minor,
    _trt_logger,
    check_engine_sidecar,
    gpu_info,
    import_tensorrt,
    read_sidecar,
    sidecar_path,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnx


log = logging.getLogger("solo_deploy.export")

__all__ = [
    "PRECISIONS",
    "TRT_MISSING",
    "BuildResult",
    "build_engine",
    "check_engine_sidecar",
    "onnx_precision",
    "plan_precision",
    "read_sidecar",
    "resolve_profile",
    "retarget_calibration_cache",
    "sidecar_path",
    "trt_version_int",
]

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MAX_BATCH = 8
# The header algorithm TensorRT expects from the replaying calibrator of _make_cache_calibrator
# (an IInt8MinMaxCalibrator); the calibration cache may name another one (entropy: EntropyCalibration2).
CALIBRATOR_ALGORITHM = "MinMaxCalibration"
_CACHE_HEADER_RE = re.compile(rb"^TRT-(\d+)-([A-Za-z0-9]+)$")


# ---------------------------------------------------------------------------------------------
# Pure helpers (run and tested without TensorRT)
# ---------------------------------------------------------------------------------------------
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


def trt_version_int(version: str) -> int:
    """TensorRT's ``NV_TENSORRT_VERSION`` for a version string: ``"10.3.0.26"`` -> 100300 (major*10000 +
    minor*100 + patch from TensorRT 10 on), ``"8.6.1"`` -> 8601 (major*1000 + minor*100 + patch before)."""
    parts = str(version).strip().split(".")
    try:
        major, minor, patch = (int(p) for p in (parts + ["0", "0"])[:3])
    except ValueError:
        raise BadInputError(f"unreadable TensorRT version {version!r}") from None
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def retarget_calibration_cache(data: bytes, trt_version: str, algorithm: str = CALIBRATOR_ALGORITHM,
                               source: str = "calibration cache") -> bytes:
    """A copy of calibration-cache ``data`` whose header names ``trt_version`` and ``algorithm``.

    Only the first line changes; the scale lines are kept byte for byte. Why: TensorRT skips a
    cache whose header it considers incompatible, and ``calibrate`` on a machine without TensorRT
    writes ``TRT-100000-...`` (10.0.0) and, for ``--method entropy``, ``EntropyCalibration2``,
    while the build replays it with a MinMax calibrator on whatever TensorRT is installed.
    """
    head, sep, rest = data.partition(b"\n")
    m = _CACHE_HEADER_RE.match(head.rstrip(b"\r"))
    if m is None:
        raise BadInputError(f"{source} does not start with a TensorRT header (TRT-<version>-<Algorithm>)")
    if not rest.strip():
        raise BadInputError(f"{source} has a header but no tensor scales")
    new_head = f"TRT-{trt_version_int(trt_version)}-{algorithm}".encode("ascii")
    return new_head + (b"\r" if head.endswith(b"\r") else b"") + sep + rest


def _timing_cache(config: Any, cache_path: Path | None) -> Any:
    """Attach a timing cache to ``config``: the file's when TensorRT accepts it, else a fresh one.

    A file from another TensorRT/GPU is refused by ``set_timing_cache`` (ignore_mismatch=False);
    a corrupt file can make ``create_timing_cache`` return None, which ``set_timing_cache`` would
    reject with a TypeError. Both are warned about and replaced; the file is rewritten after the build.
    """
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    if cache is None and cache_bytes:
        log.warning("timing cache %s is unreadable (corrupt?); ignoring it and building a fresh one", cache_path)
    elif cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    elif cache is not None:
        log.warning("timing cache %s does not match this TensorRT/GPU; starting a fresh one", cache_path)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise RuntimeFailure("TensorRT could not create an empty timing cache")
    return cache


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
                    max_batch: int = DEFAULT_MAX_BATCH,
                    keep_ratio_scale: Sequence[int] | None = None) -> tuple[Shape, Shape, Shape]:
    """Optimisation profile (min, opt, max) for the NHWC uint8 input.

    ``input_shape``: the ONNX input dims (ints for static, names/None/-1 for dynamic). Missing
    shapes default to batch 1..``max_batch`` (opt 1) and the model's input size.
    ``keep_ratio_scale`` (long, short): the model resizes keeping the ratio and its graph pads,
    so H and W may be any size: the defaults then span 1 to the long side in both H and W
    (portrait and landscape images, and the 1-pixel side of a very thin one), optimised for a
    landscape image of ``short x long``.
    """
    dims = [d if isinstance(d, int) and d > 0 else None for d in input_shape]
    if len(dims) != 4:
        raise BadInputError(f"expected a 4-D NHWC input, got shape {list(input_shape)}")
    h, w = default_hw
    sides: dict[str, tuple[int, int]] = {"min": (h, w), "opt": (h, w), "max": (h, w)}
    if keep_ratio_scale is not None:
        long, short = max(keep_ratio_scale), min(keep_ratio_scale)
        sides = {"min": (1, 1), "opt": (short, long), "max": (long, long)}

    def fill(shape: Sequence[int] | None, batch: int, which: str) -> Shape:
        if shape is not None:
            shape = tuple(int(v) for v in shape)
            if len(shape) != 4:
                raise BadInputError(f"profile shapes are N,H,W,3; got {list(shape)}")
            return shape  # type: ignore[return-value]
        sh, sw = sides[which]
        return (dims[0] or batch, dims[1] or sh, dims[2] or sw, dims[3] or 3)

    lo, opt, hi = fill(min_shape, 1, "min"), fill(opt_shape, 1, "opt"), fill(max_shape, max_batch, "max")
    for name, shp in (("min", lo), ("opt", opt), ("max", hi)):
        for axis, (want, got) in enumerate(zip(dims, shp)):
            if want is not None and want != got:
                raise BadInputError(f"{name} shape {list(shp)} conflicts with the ONNX input's static dim "
                                    f"{axis} = {want}")
        if shp[1] <= 0 or shp[2] <= 0 or (keep_ratio_scale is None and (shp[1] % 32 or shp[2] % 32)):
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


def build_engine(onnx_path: str | os.PathLike[str], output: str | os.PathLike[str], precision: str | None = "fp32", *,
                 min_shape: Sequence[int] | None = None, opt_shape: Sequence[int] | None = None,
                 max_shape: Sequence[int] | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                 workspace_gib: float = 4.0, timing_cache: str | os.PathLike[str] | None = None,
                 calibration_cache: str | os.PathLike[str] | None = None, device: int = 0,
                 version_compatible: bool = False) -> BuildResult:
    """Build a serialized TensorRT engine from a solo-deploy ONNX export (needs TensorRT + GPU).

    ``precision``: fp32 | fp16 | int8, or None for the precision the ONNX carries. Profile
    shapes are NHWC (see :func:`resolve_profile`); ``workspace_gib`` caps TensorRT's workspace
    pool; ``timing_cache`` is read when present and written back after the build.
    ``calibration_cache`` is read, retargeted in memory (:func:`retarget_calibration_cache`) and
    left untouched on disk. ``version_compatible``: ``BuilderFlag.VERSION_COMPATIBLE`` (the engine
    embeds TensorRT's lean runtime and loads on later versions; recorded in the sidecar). Writes
    the engine and ``<engine>.json`` atomically.
    Not executable on the development machine: no TensorRT, no GPU there.
    """
    from .._atomic import _check_parent
    from ..core.meta import INPUT_NAME
    from .onnx_checks import load_onnx_checked

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
    keep_ratio = meta_dict["preprocess"].get("scale") if meta_dict["preprocess"].get("resize") == "keep-ratio" else None
    profile = resolve_profile(dims, default_hw, min_shape, opt_shape, max_shape, max_batch, keep_ratio_scale=keep_ratio)

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
    builder_flags = plan.flags + (("VERSION_COMPATIBLE",) if version_compatible else ())
    for flag in builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.needs_calibration_cache:
        assert calib is not None
        original = calib.read_bytes()
        replay = retarget_calibration_cache(original, trt.__version__, source=str(calib))
        if replay.partition(b"\n")[0] != original.partition(b"\n")[0]:
            log.info("calibration cache %s: header %s replayed as %s (scales unchanged; the file is not modified)",
                     calib, original.partition(b"\n")[0].decode("ascii", "replace").strip(),
                     replay.partition(b"\n")[0].decode("ascii"))
        config.int8_calibrator = _make_cache_calibrator(trt, replay)
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(INPUT_NAME, *profile)
    config.add_optimization_profile(trt_profile)
    if plan.needs_calibration_cache and hasattr(config, "set_calibration_profile"):
        config.set_calibration_profile(trt_profile)  # INT8 calibration with dynamic shapes (TensorRT 10)

    # Timing cache: reuse measured tactics across builds; a cache from another TensorRT/GPU is
    # rejected (ignore_mismatch=False) and we start a fresh one.
    cache_path = Path(timing_cache) if timing_cache else None
    _timing_cache(config, cache_path)

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
    from ..core.meta import file_sha256

    sidecar = {
        "format": SIDECAR_FORMAT,
        "schema_version": SIDECAR_SCHEMA,
        "solo_deploy": meta_dict,  # ModelMeta.to_dict() + "export" section, as in the ONNX
        "engine": {"precision": precision, "strongly_typed": plan.strongly_typed, "builder_flags": list(builder_flags),
                   "version_compatible": bool(version_compatible),
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
