"""Per-stage latency of every backend that can run a model file, against measured ceilings.

What one row measures, per batch call (the same code path as ``Predictor.predict_batch``):

1. ``preprocess``: ``Predictor.preprocess`` (letterbox + stack) of realistic synthetic 640x480
   BGR frames (the project's synthetic generator: textured background, noise, objects);
2. ``host_to_device``: the batch into the backend's input (a torch tensor on the device; an
   ``OrtValue`` bound through IOBinding for ONNX Runtime);
3. ``inference``: the network (plus the in-graph normalisation and decode);
4. ``device_to_host``: the raw outputs to where post-processing runs (ORT outputs copied into
   numpy; torch CPU outputs are used in place; torch-CUDA / TensorRT outputs stay on the GPU,
   where the runtime post-processes them, so this stage is ~0 and the final-mask download is
   part of post-processing);
5. ``postprocess``: ``Predictor.finish`` (candidates, masks, Matrix NMS, final masks on the
   original 640x480 grid).

Rules that keep the comparison fair:

- rows are measured interleaved, in blocks: every round visits every row, starting at a
  rotating row, so slow drifts of a shared machine (another job, thermal state) hit all alike;
  a visit makes one unrecorded call (the previous row's thread pools may still be spinning)
  and then ``BLOCK`` recorded ones;
- one thread count for every model: ``torch.set_num_threads`` and ORT ``intra_op_num_threads``
  (the CLI also pins numpy's BLAS through the environment before numpy loads); pre- and
  post-processing run single-threaded while rows are measured, as in ``solo-deploy run``;
- CUDA stages are timed with ``torch.cuda.Event`` on the stream the work runs on (torch,
  TensorRT). ONNX Runtime's CUDA provider runs on its own stream and synchronises it before
  ``run_with_iobinding`` returns, so host clocks bracket its device work exactly while torch
  events would time the wrong stream;
- PyTorch eager on the same device is the baseline: ``speedup_vs_torch`` compares medians of
  the inference stage with the torch row of the same source model (an ONNX or engine finds its
  source through the ``source_sha256`` its export recorded).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import BadInputError
from . import FORMAT, SCHEMA_VERSION

log = logging.getLogger("solo_deploy.bench")

__all__ = ["BENCH_BACKENDS", "DEVICES", "STAGES", "BenchSettings", "format_table", "run_bench"]

STAGES = ("preprocess", "host_to_device", "inference", "device_to_host", "postprocess")
BLOCK = 5  # recorded calls per visit of a row (after one unrecorded call)
BENCH_BACKENDS = ("torch", "onnxruntime", "tensorrt")  # triton is remote: its latency is the network's
DEVICES = ("cpu", "cuda")
FRAME_HW = (480, 640)  # a VGA camera frame: letterboxing really resizes, post-process really upsamples
FRAME_SEED = 1307  # fixed: every run letterboxes and post-processes the same frames


@dataclass(frozen=True)
class BenchSettings:
    """What to run and how; every field is recorded in the JSON's ``settings``."""

    backends: tuple[str, ...] = BENCH_BACKENDS
    devices: tuple[str, ...] = DEVICES
    imgsz: tuple[int, int] | None = None  # network input (H, W); None: each model's own
    batches: tuple[int, ...] = (1,)
    frames: int = 50  # measured batch calls per row (after warm-up)
    warmup: int = 10  # unmeasured batch calls per row, interleaved like the measured ones
    threads: int | None = None  # None: the cores this process may use
    gemm_n: int = 1024  # ceiling GEMM size (n x n x n)
    bandwidth_mb: float = 128  # ceiling copy size per buffer
    command: str | None = None  # the command line that produced the run, recorded verbatim

    def resolved_threads(self) -> int:
        if self.threads:
            return int(self.threads)
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            return os.cpu_count() or 1

    def validate(self) -> None:
        bad = [b for b in self.backends if b not in BENCH_BACKENDS]
        if bad or not self.backends:
            raise BadInputError(f"unknown backend(s) {', '.join(bad) or '(none)'}: choose from {', '.join(BENCH_BACKENDS)}"
                                + (" (triton serves remotely: benchmark the model Triton runs instead)"
                                   if "triton" in bad else ""))
        bad = [d for d in self.devices if d not in DEVICES]
        if bad or not self.devices:
            raise BadInputError(f"unknown device(s) {', '.join(bad) or '(none)'}: choose cpu and/or cuda")
        if not self.batches or any(int(b) < 1 for b in self.batches):
            raise BadInputError(f"batch sizes must be positive integers, got {list(self.batches)}")
        if self.frames < 1:
            raise BadInputError(f"--frames must be at least 1, got {self.frames}")
        if self.warmup < 0:
            raise BadInputError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise BadInputError(f"--threads must be at least 1, got {self.threads}")
        if self.gemm_n < 1 or self.bandwidth_mb <= 0:
            raise BadInputError("the ceiling GEMM size and copy size must be positive")
        if self.imgsz is not None:
            h, w = self.imgsz
            if h <= 0 or w <= 0 or h % 32 or w % 32:
                raise BadInputError(f"--imgsz {h} {w} is invalid: both sides must be positive multiples of 32")


# ---------------------------------------------------------------------------------------------
# Machine, versions, GPU availability
# ---------------------------------------------------------------------------------------------
_FLAGS_OF_INTEREST = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def _cpuinfo() -> dict[str, Any]:
    name, flags, cores = platform.processor() or platform.machine(), set(), set()
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    phys = core = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and value:
            name = value
        elif key == "flags":
            flags = set(value.split())
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
            cores.add((phys, core))
    return {"name": name, "flags": [f for f in _FLAGS_OF_INTEREST if f in flags], "physical_cores": len(cores) or None}


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info(threads: int, gpus: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU model and features, cores, memory, threads used, GPUs."""
    cpu = _cpuinfo()
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        available = os.cpu_count()
    return {"cpu": cpu["name"], "cpu_flags": cpu["flags"], "logical_cores": os.cpu_count(),
            "physical_cores": cpu["physical_cores"], "available_cores": available, "threads": threads,
            "memory_gb": _mem_total_gb(), "gpus": gpus, "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict[str, str | None]:
    import importlib.metadata as md

    from .. import __version__

    def dist(*names: str) -> str | None:
        for n in names:
            try:
                return md.version(n)
            except md.PackageNotFoundError:
                continue
        return None

    out: dict[str, str | None] = {"solo_deploy": __version__}
    for key, names in (("torch", ("torch",)), ("onnxruntime", ("onnxruntime-gpu", "onnxruntime")), ("onnx", ("onnx",)),
                       ("numpy", ("numpy",)), ("opencv", ("opencv-python", "opencv-python-headless")),
                       ("tensorrt", ("tensorrt",))):
        out[key] = dist(*names)
    try:
        import torch

        out["cuda"] = torch.version.cuda
    except ImportError:  # pragma: no cover
        out["cuda"] = None
    return out


class _Env:
    """What GPU backends can run here; ORT's CUDA provider is probed only when it could work."""

    def __init__(self) -> None:
        import torch

        from ..runtime.devices import tensorrt_version, torch_cuda_works

        self.torch_cuda = torch_cuda_works()
        # A CUDA build of torch that sees no device means there is none: no ORT probe needed
        # (the probe is a child process, seconds on a small machine).
        self.no_gpu = not self.torch_cuda and torch.version.cuda is not None
        self.trt = tensorrt_version()
        self._ort_cuda: bool | None = None

    def ort_cuda(self) -> bool:
        if self._ort_cuda is None:
            from ..runtime.devices import cuda_provider_works

            self._ort_cuda = False if self.no_gpu else cuda_provider_works()
        return self._ort_cuda

    def gpus(self) -> list[dict[str, Any]]:
        from ..runtime.devices import gpus

        return gpus() if self.torch_cuda else []


# ---------------------------------------------------------------------------------------------
# Model files and the rows they give
# ---------------------------------------------------------------------------------------------
@dataclass
class _ModelFile:
    path: Path
    fmt: str  # "model" (.ckpt/.safetensors) | "onnx" | "engine"
    meta: Any  # ModelMeta
    sha256: str
    source_sha256: str | None  # the .ckpt/.safetensors this file was exported from (baseline key)
    precision: str
    input_hw: tuple[int, int]
    static_hw: tuple[int, int] | None = None
    cost: Any = None  # flops.ModelCost
    cost_error: str | None = None

    @property
    def key(self) -> str | None:
        """Rows with the same key compare with each other (same source network)."""
        return self.sha256 if self.fmt == "model" else self.source_sha256


def _inspect(path: Path, imgsz: tuple[int, int] | None) -> _ModelFile:
    """Read a model file's metadata (BadInputError for a missing/corrupt/unknown file)."""
    from ..model.modelfile import ModelMeta, file_sha256, read_model
    from ..runtime.runners import detect_backend

    if not path.exists():
        raise BadInputError(f"model file not found: {path}")
    if not path.is_file():
        raise BadInputError(f"model path is not a file: {path}")
    kind = detect_backend(path)
    sha = file_sha256(path)
    static_hw = None
    if kind == "torch":
        _, meta = read_model(path)
        fmt, precision, source = "model", "fp32", sha
    elif kind == "onnxruntime":
        import json

        from ..export.onnx_checks import load_onnx_checked
        from ..export.tensorrt import onnx_precision
        from ..runtime.runners import onnx_meta

        meta = onnx_meta(path)
        model = load_onnx_checked(path, load_external=False)
        props = {p.key: p.value for p in model.metadata_props}
        export = json.loads(props.get("solo_deploy", "{}")).get("export", {}) or {}
        fmt, precision, source = "onnx", onnx_precision(model), export.get("source_sha256")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in model.graph.input[0].type.tensor_type.shape.dim]
        if len(dims) == 4 and dims[1] and dims[2]:
            static_hw = (int(dims[1]), int(dims[2]))
        del model
    else:
        from ..export.tensorrt import read_sidecar

        sidecar = read_sidecar(path)
        meta = ModelMeta.from_dict(sidecar["solo_deploy"], source=str(path))
        fmt = "engine"
        precision = str(sidecar.get("engine", {}).get("precision", "fp32"))
        source = (sidecar["solo_deploy"].get("export") or {}).get("source_sha256")
    input_hw = tuple(imgsz) if imgsz is not None else tuple(static_hw or meta.preprocess.input_hw)
    return _ModelFile(path=path, fmt=fmt, meta=meta, sha256=sha, source_sha256=source, precision=precision,
                      input_hw=(int(input_hw[0]), int(input_hw[1])), static_hw=static_hw)


@dataclass
class _Spec:
    """One (model file, backend, device, precision): loaded once, measured at every batch size."""

    model: _ModelFile
    backend: str
    device: str
    precision: str
    skip: str | None = None
    failed: str | None = None
    staged: Any = None
    run_file: str | None = None
    notes: list[str] = field(default_factory=list)
    load_mem_mb: float | None = None
    probe: Any = None


def _candidates(mf: _ModelFile) -> list[tuple[str, str, str]]:
    if mf.fmt == "model":
        return [("torch", "cpu", "fp32"), ("onnxruntime", "cpu", "fp32"), ("torch", "cuda", "fp32"),
                ("onnxruntime", "cuda", "fp32"), ("tensorrt", "cuda", "fp16"), ("tensorrt", "cuda", "int8")]
    if mf.fmt == "onnx":
        return [("onnxruntime", "cpu", mf.precision), ("onnxruntime", "cuda", mf.precision),
                ("tensorrt", "cuda", mf.precision)]
    return [("tensorrt", "cuda", mf.precision)]


def _skip_reason(mf: _ModelFile, backend: str, device: str, precision: str, env: _Env) -> str | None:
    reasons = []
    if device == "cuda":
        if backend in ("torch", "tensorrt") and not env.torch_cuda:
            reasons.append("no CUDA device")
        if backend == "onnxruntime" and not env.ort_cuda():
            reasons.append("no CUDA device" if env.no_gpu else "ONNX Runtime's CUDA provider does not work here")
        if backend == "tensorrt" and env.trt is None:
            reasons.append("TensorRT not installed")
    if backend == "tensorrt" and precision == "int8" and mf.fmt == "model":
        reasons.append("INT8 needs a calibrated Q/DQ ONNX or an INT8 engine: pass that file as a MODEL")
    if mf.static_hw is not None and mf.static_hw != mf.input_hw:
        reasons.append(f"the ONNX input is static {mf.static_hw[0]}x{mf.static_hw[1]} but --imgsz asks for "
                       f"{mf.input_hw[0]}x{mf.input_hw[1]} (export at that size, or with --dynamic)")
    return "; ".join(reasons) or None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Staged backends: the runner's call split at the stage boundaries
# ---------------------------------------------------------------------------------------------
class _TorchStaged:
    """PyTorch eager through ``TorchRunner`` (same loading, same DeployWrapper)."""

    def __init__(self, path: Path, device: str, threads: int) -> None:
        import torch

        from ..runtime.runners import TorchRunner

        self._torch = torch
        self.runner = TorchRunner(path, device=device, threads=threads)
        self.device = self.runner.device
        self.timer = "cuda_events" if device.startswith("cuda") else "host"
        self.postprocess_device = "cuda" if device.startswith("cuda") else "cpu"
        self.weight_bytes = sum(int(t.numel()) * int(t.element_size()) for t in self.runner.model.state_dict().values())

    def to_device(self, batch: np.ndarray) -> Any:
        return self._torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)

    def infer(self, x: Any) -> Any:
        with self._torch.inference_mode():
            return self.runner.model(x)

    def to_host(self, out: Any) -> tuple[Any, Any, list[Any]]:
        # As TorchRunner: post-processing takes the torch tensors where they are (no copy on CPU,
        # GPU post-processing on CUDA).
        return out[0], out[1], list(out[2:])


class _OrtStaged:
    """ONNX Runtime through IOBinding, so that transfers and the graph run are timed apart."""

    def __init__(self, path: Path, device: str, threads: int) -> None:
        import onnxruntime as ort

        from ..runtime.runners import OnnxRunner
        from .flops import onnx_weight_bytes

        self._ort = ort
        self.runner = OnnxRunner(path, device=device, threads=threads)
        self.session = self.runner.session
        self.ort_device = "cuda" if device.startswith("cuda") else "cpu"
        self.device = device
        self.timer = "host"  # see the module docstring: ORT synchronises its own CUDA stream
        self.postprocess_device = "cpu"
        fixed = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = fixed if isinstance(fixed, int) and fixed > 0 else None
        self.weight_bytes = onnx_weight_bytes(path)

    def _chunks(self, batch: np.ndarray) -> list[np.ndarray]:
        step = self.fixed_batch or batch.shape[0]
        return [np.ascontiguousarray(batch[i:i + step]) for i in range(0, batch.shape[0], step)]

    def to_device(self, batch: np.ndarray) -> Any:
        arrays = self._chunks(batch)
        values = [self._ort.OrtValue.ortvalue_from_numpy(a, self.ort_device, 0) for a in arrays]
        return arrays, values  # the numpy arrays stay referenced: a CPU OrtValue may share their memory

    def infer(self, x: Any) -> Any:
        _, values = x
        outs = []
        for v in values:
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.runner.input_name, v)
            for name in self.runner.output_names:
                binding.bind_output(name, self.ort_device, 0)
            self.session.run_with_iobinding(binding)
            outs.append(binding)
        return outs

    def to_host(self, bindings: Any) -> tuple[Any, Any, list[Any]]:
        # copy_outputs_to_cpu: a device-to-host copy for CUDA outputs, numpy arrays on the CPU.
        parts = [b.copy_outputs_to_cpu() for b in bindings]
        arrays = parts[0] if len(parts) == 1 else [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]
        return arrays[0], arrays[1], list(arrays[2:])


class _TrtStaged:
    """TensorRT through ``TensorRTRunner`` (torch CUDA buffers, torch's current stream).

    NOTE: needs TensorRT and a GPU; not executed on the CPU-only development machine.
    """

    def __init__(self, path: Path) -> None:
        import torch

        from ..export.tensorrt import TensorRTRunner

        self._torch = torch
        self.runner = TensorRTRunner(path, device="cuda")
        self.device = self.runner.device
        self.timer = "cuda_events"
        self.postprocess_device = "cuda"
        self.weight_bytes = path.stat().st_size  # weights dominate a serialized engine

    def to_device(self, batch: np.ndarray) -> Any:
        return self._torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)

    def infer(self, x: Any) -> Any:
        return self.runner(x)

    def to_host(self, out: Any) -> tuple[Any, Any, list[Any]]:
        return out  # stays on the GPU: the runtime post-processes TensorRT outputs there


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


def _prepare(spec: _Spec, settings: BenchSettings, threads: int, tmp: Callable[[], Path], probe: Any) -> None:
    """Load (exporting or building first where needed) the backend of ``spec``; sets ``staged``.

    ``probe`` measures the memory the backend takes while loading (after any export/build).
    """
    mf = spec.model
    run_path = mf.path
    if spec.backend == "onnxruntime" and mf.fmt == "model":
        if tuple(mf.input_hw) == tuple(mf.meta.preprocess.input_hw):
            from ..export.cache import cached_onnx

            run_path = cached_onnx(mf.path)
            spec.notes.append("float32 ONNX from the export cache (cached_onnx), static batch 1")
        else:
            from ..export.onnx_export import export_onnx

            run_path = export_onnx(mf.path, tmp() / f"{mf.path.stem}-{mf.input_hw[0]}x{mf.input_hw[1]}.onnx",
                                   imgsz=mf.input_hw, batch=1).path
            spec.notes.append("float32 ONNX exported for this run at --imgsz, static batch 1")
    elif spec.backend == "tensorrt" and mf.fmt != "engine":
        from ..export.tensorrt import build_engine

        t0 = time.perf_counter()
        if mf.fmt == "model":  # fp16 (int8 rows of model files are skipped in planning)
            from ..export.onnx_export import DYNAMIC_MIN_SIDE, export_onnx

            dynamic = min(mf.input_hw) >= DYNAMIC_MIN_SIDE
            onnx_path = export_onnx(mf.path, tmp() / f"{mf.path.stem}-fp16.onnx", imgsz=mf.input_hw, batch=1,
                                    dynamic=dynamic, half=True).path
        else:
            onnx_path = mf.path
        run_path = build_engine(onnx_path, tmp() / f"{mf.path.stem}-{spec.precision}.engine", spec.precision,
                                max_batch=max(settings.batches)).path
        spec.notes.append(f"TensorRT {spec.precision} engine built for this run ({time.perf_counter() - t0:.0f} s)")
    probe.begin()
    probe.reset()
    if spec.backend == "torch":
        spec.staged = _TorchStaged(run_path, spec.device, threads)
    elif spec.backend == "onnxruntime":
        spec.staged = _OrtStaged(run_path, spec.device, threads)
        if spec.staged.fixed_batch and max(settings.batches) > spec.staged.fixed_batch:
            spec.notes.append(f"static batch-{spec.staged.fixed_batch} graph: larger batches run in chunks of "
                              f"{spec.staged.fixed_batch}")
    else:
        spec.staged = _TrtStaged(run_path)
    spec.load_mem_mb = _round(probe.peak(), 1)
    spec.run_file = str(run_path)


# ---------------------------------------------------------------------------------------------
# Clocks and memory probes
# ---------------------------------------------------------------------------------------------
class _HostClock:
    def mark(self) -> float:
        return time.perf_counter()

    def elapsed_ms(self, marks: Sequence[Any]) -> list[float]:
        return [(b - a) * 1e3 for a, b in zip(marks, marks[1:])]


class _CudaClock:
    """CUDA events on torch's current stream; elapsed times read after the last one completes."""

    def __init__(self) -> None:
        import torch

        self._torch = torch

    def mark(self) -> Any:
        ev = self._torch.cuda.Event(enable_timing=True)
        ev.record()
        return ev

    def elapsed_ms(self, marks: Sequence[Any]) -> list[float]:
        marks[-1].synchronize()
        return [float(a.elapsed_time(b)) for a, b in zip(marks, marks[1:])]


def _reset_hwm() -> bool:
    """Reset this process's RSS high-water mark (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    """glibc ``malloc_trim(0)``: return freed heap pages to the OS (no-op elsewhere)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _HostPeak:
    """RSS high-water-mark growth, in MiB, above the RSS at ``begin()``.

    A per-call growth would read ~0 after the first call (allocators keep their memory), so a
    row's peak is taken from before its backend loads through its first call at each batch
    size: weights, session, arenas and the largest transient buffers.
    """

    def __init__(self) -> None:
        self.ok = _reset_hwm() and _status_kb("VmHWM") is not None
        self.method = "rss_hwm_growth" if self.ok else "unavailable (no /proc/self/clear_refs)"
        self._base = 0

    def begin(self) -> None:
        # Hand memory that earlier rows freed back to the OS first: otherwise this row's
        # allocations reuse it and its growth reads near zero.
        _malloc_trim()
        self._base = _status_kb("VmRSS") or 0

    def reset(self) -> None:
        if self.ok:
            _reset_hwm()

    def peak(self) -> float | None:
        return ((_status_kb("VmHWM") or 0) - self._base) / 1024 if self.ok else None


class _CudaPeak:
    """Growth of torch's peak allocated CUDA memory above the allocation at ``begin()``, in MiB.

    TensorRT's own engine/context memory does not go through torch's allocator and is not seen.
    """

    method = "torch_cuda_max_allocated_growth"

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._base = 0

    def begin(self) -> None:
        self._torch.cuda.synchronize()
        self._base = self._torch.cuda.memory_allocated()

    def reset(self) -> None:
        self._torch.cuda.synchronize()
        self._torch.cuda.reset_peak_memory_stats()

    def peak(self) -> float | None:
        self._torch.cuda.synchronize()
        return (self._torch.cuda.max_memory_allocated() - self._base) / 2**20


class _NoPeak:
    method = "unavailable (ONNX Runtime's CUDA memory arena is not visible to torch)"

    def begin(self) -> None:
        return None

    def reset(self) -> None:
        return None

    def peak(self) -> float | None:
        return None


def _probe_for(backend: str, device: str) -> Any:
    if device == "cpu":
        return _HostPeak()
    return _NoPeak() if backend == "onnxruntime" else _CudaPeak()


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------
class _MetaOnly:
    """What ``Predictor`` needs of a runner for preprocess/finish: its metadata."""

    def __init__(self, meta: Any) -> None:
        self.meta = meta


@dataclass
class _Case:
    """One row: a loaded spec at one batch size, and its samples."""

    spec: _Spec
    batch: int
    predictor: Any
    frames: list[np.ndarray]
    clock: Any
    samples: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    instances: list[float] = field(default_factory=list)
    peak_mem_mb: float | None = None
    failed: str | None = None

    def step(self, record: bool) -> None:
        staged = self.spec.staged
        t0 = time.perf_counter()
        batch, letterboxes = self.predictor.preprocess(self.frames)
        t1 = time.perf_counter()
        marks = [self.clock.mark()]
        x = staged.to_device(batch)
        marks.append(self.clock.mark())
        out = staged.infer(x)
        marks.append(self.clock.mark())
        scores, kernels, feats = staged.to_host(out)
        marks.append(self.clock.mark())
        device_ms = self.clock.elapsed_ms(marks)  # synchronises on a GPU before post-processing starts
        t2 = time.perf_counter()
        results = self.predictor.finish(scores, kernels, feats, letterboxes)
        t3 = time.perf_counter()
        if not record:
            return
        for name, ms in zip(STAGES, [(t1 - t0) * 1e3, *device_ms, (t3 - t2) * 1e3]):
            self.samples[name].append(ms)
        self.instances.append(sum(len(r) for r in results) / self.batch)


def synthetic_frames(count: int, hw: tuple[int, int] = FRAME_HW, seed: int = FRAME_SEED) -> list[np.ndarray]:
    """``count`` realistic BGR frames from the project's synthetic generator (fixed seed)."""
    from ..data.synthetic import SyntheticConfig, render_sample, sample_rng

    cfg = SyntheticConfig(image_hw=hw)
    return [render_sample(sample_rng(seed, i), cfg)[0] for i in range(count)]


def _stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    p50, p99 = np.percentile(a, [50, 99])
    return {"mean_ms": round(float(a.mean()), 4), "p50_ms": round(float(p50), 4), "p99_ms": round(float(p99), 4)}


ROW_FIELDS = ("id", "model", "backend", "device", "precision", "batch", "status", "reason", "run_file", "notes",
              "timer", "iterations", "stages", "total", "latency_ms_per_frame", "throughput_fps", "peak_mem_mb",
              "load_mem_mb", "mem_method", "flops_per_batch", "achieved_gflops", "ceiling", "ceiling_gflops",
              "fraction_of_ceiling", "bytes_per_batch", "roofline_ms", "speedup_vs_torch",
              "speedup_vs_torch_end_to_end", "torch_baseline", "speedup_vs_fp32", "fp32_baseline",
              "postprocess_share", "postprocess_device", "instances_per_frame")


def _row_id(model: str, backend: str, device: str, precision: str, batch: int) -> str:
    return f"{model}|{backend}|{device}|{precision}|b{batch}"


def _empty_row(spec: _Spec, batch: int, status: str, reason: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {k: None for k in ROW_FIELDS}
    row.update(id=_row_id(spec.model.path.name, spec.backend, spec.device, spec.precision, batch),
               model=spec.model.path.name, backend=spec.backend, device=spec.device, precision=spec.precision,
               batch=batch, status=status, reason=reason, run_file=spec.run_file, notes=list(spec.notes))
    return row


def _measured_row(case: _Case, ceilings: dict[str, Any]) -> dict[str, Any]:
    spec, mf = case.spec, case.spec.model
    row = _empty_row(spec, case.batch, "ok", None)
    stages = {s: _stats(case.samples[s]) for s in STAGES}
    totals = np.sum([case.samples[s] for s in STAGES], axis=0)
    total = _stats(totals)
    row.update(timer=spec.staged.timer, iterations=len(totals), stages=stages, total=total,
               latency_ms_per_frame=round(total["mean_ms"] / case.batch, 4),
               throughput_fps=round(case.batch * 1e3 / total["mean_ms"], 3),
               peak_mem_mb=_round(case.peak_mem_mb, 1), load_mem_mb=spec.load_mem_mb, mem_method=spec.probe.method,
               postprocess_device=spec.staged.postprocess_device,
               postprocess_share=round(stages["postprocess"]["mean_ms"] / total["mean_ms"], 4),
               instances_per_frame=round(float(np.mean(case.instances)), 2))
    if mf.cost is not None:
        flops = mf.cost.flops_per_image * case.batch
        infer_s = stages["inference"]["p50_ms"] / 1e3
        achieved = flops / infer_s / 1e9 if infer_s > 0 else None
        dev = ceilings.get(spec.device) or {}
        ceiling = (dev.get("gemm_gflops") or {}).get(spec.precision)
        bw = dev.get("memory_gbps")
        moved = int(spec.staged.weight_bytes + case.batch * mf.cost.io_bytes_per_image)
        row.update(flops_per_batch=flops, achieved_gflops=None if achieved is None else round(achieved, 3),
                   ceiling=f"{spec.device}.gemm_{spec.precision}", bytes_per_batch=moved)
        if ceiling:
            row["ceiling_gflops"] = round(ceiling, 3)
            row["fraction_of_ceiling"] = None if achieved is None else round(achieved / ceiling, 4)
            bound_s = flops / (ceiling * 1e9)
            if bw:
                bound_s = max(bound_s, moved / (bw * 1e9))
            row["roofline_ms"] = round(bound_s * 1e3, 4)
    return row


def _add_ratios(rows: list[dict[str, Any]], keys: dict[str, str | None]) -> None:
    """speedup_vs_torch (same source model, device, batch) and speedup_vs_fp32 (same backend too)."""
    ok = [r for r in rows if r["status"] == "ok"]
    index: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in ok:  # the first row of a key wins: the model file's own rows come before its exports'
        if keys[r["model"]] is not None:
            index.setdefault((keys[r["model"]], r["backend"], r["device"], r["precision"], r["batch"]), r)
    for r in ok:
        key = keys[r["model"]]
        if key is None:
            continue
        base = index.get((key, "torch", r["device"], "fp32", r["batch"]))
        if base is not None:
            r["torch_baseline"] = base["id"]
            r["speedup_vs_torch"] = round(base["stages"]["inference"]["p50_ms"] / r["stages"]["inference"]["p50_ms"], 4)
            r["speedup_vs_torch_end_to_end"] = round(base["total"]["p50_ms"] / r["total"]["p50_ms"], 4)
        if r["precision"] != "fp32":
            base = index.get((key, r["backend"], r["device"], "fp32", r["batch"]))
            if base is not None:
                r["fp32_baseline"] = base["id"]
                r["speedup_vs_fp32"] = round(base["stages"]["inference"]["p50_ms"] / r["stages"]["inference"]["p50_ms"], 4)


def _best_ceilings(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Per device: the higher GEMM and bandwidth figure of two measurements, both recorded."""
    out: dict[str, Any] = {}
    for device in before.keys() | after.keys():
        runs = [m for m in (before.get(device), after.get(device)) if m is not None]
        # Start from a measurement that has its full set of keys (threads, gemm_n, method).
        best = dict(next((m for m in runs if "method" in m), runs[0]))
        gemm: dict[str, float | None] = {}
        for m in runs:
            for p, v in (m.get("gemm_gflops") or {}).items():
                gemm[p] = v if gemm.get(p) is None else (gemm[p] if v is None else max(gemm[p], v))
        bw = [m["memory_gbps"] for m in runs if m.get("memory_gbps") is not None]
        errors: dict[str, str] = {}
        for m in runs:
            errors.update(m.get("errors") or {})
        best["gemm_gflops"] = gemm
        best["memory_gbps"] = max(bw) if bw else None
        # A reason stays while nothing was measured for it ("all": the whole measurement failed).
        best["errors"] = {p: r for p, r in errors.items()
                          if gemm.get(p) is None and (p != "all" or not any(v is not None for v in gemm.values()))}
        best["measurements"] = [{"gemm_gflops": m.get("gemm_gflops"), "memory_gbps": m.get("memory_gbps")}
                                for m in runs]
        out[device] = best
    return out


def run_bench(models: Sequence[str | os.PathLike[str]], settings: BenchSettings = BenchSettings()) -> dict[str, Any]:
    """Benchmark every (model file, backend, device, precision, batch) row; the JSON document.

    Bad inputs (missing or unreadable model files, bad settings) raise ``BadInputError`` before
    anything is measured. A backend that fails to load or run gives a ``failed`` row (with the
    reason) and the others go on; GPU rows without a GPU are ``skipped`` with the reason.
    """
    import cv2
    import torch

    from ..runtime.predictor import Predictor
    from .ceiling import measure_ceilings
    from .flops import model_cost

    settings.validate()
    if not models:
        raise BadInputError("no model files given")
    threads = settings.resolved_threads()
    batches = tuple(dict.fromkeys(int(b) for b in settings.batches))
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    t_start = time.perf_counter()

    files = [_inspect(Path(m), settings.imgsz) for m in models]
    names = [mf.path.name for mf in files]
    if len(set(names)) != len(names):
        raise BadInputError(f"model file names must be distinct (rows are named by file): {names}")
    for mf in files:
        try:
            mf.cost = model_cost(mf.meta.model, mf.meta.preprocess, mf.input_hw)
        except Exception as exc:  # noqa: BLE001 - FLOPs are informative: the timings still stand
            mf.cost_error = _one_line(exc)
            log.warning("cannot count FLOPs of %s: %s", mf.path.name, mf.cost_error)

    env = _Env()
    specs = [_Spec(mf, b, d, p, skip=_skip_reason(mf, b, d, p, env))
             for mf in files for (b, d, p) in _candidates(mf)
             if b in settings.backends and d in settings.devices]
    if not specs:
        raise BadInputError(f"none of the model files can run on backends {', '.join(settings.backends)} / devices "
                            f"{', '.join(settings.devices)}")

    frames = synthetic_frames(max(batches))
    cases: list[_Case] = []
    with contextlib.ExitStack() as stack:
        tmpdir: list[Path] = []

        def tmp() -> Path:
            if not tmpdir:
                tmpdir.append(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="solo-deploy-bench-"))))
            return tmpdir[0]

        for spec in specs:
            if spec.skip:
                continue
            log.info("loading %s on %s/%s (%s)", spec.model.path.name, spec.backend, spec.device, spec.precision)
            spec.probe = _probe_for(spec.backend, spec.device)
            try:
                _prepare(spec, settings, threads, tmp, spec.probe)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one backend failing must not hide the others
                spec.failed = _one_line(exc)
                log.warning("%s on %s/%s failed to load: %s", spec.model.path.name, spec.backend, spec.device,
                            spec.failed)
                continue
            meta = dataclasses.replace(spec.model.meta, preprocess=spec.model.meta.preprocess.with_size(spec.model.input_hw))
            for b in batches:
                clock = _CudaClock() if spec.staged.timer == "cuda_events" else _HostClock()
                case = _Case(spec, b, Predictor(_MetaOnly(meta)), frames[:b], clock)
                # The first call (lazy allocations, arena growth, kernel selection) is neither
                # warm-up nor measured: it is where the row's memory peak is taken.
                spec.probe.reset()
                try:
                    case.step(record=False)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001
                    case.failed = _one_line(exc)
                case.peak_mem_mb = spec.probe.peak()
                cases.append(case)

        ceiling_devices: dict[str, list[str]] = {}
        for device in DEVICES:
            precs = sorted({c.spec.precision for c in cases if c.spec.device == device})
            if not precs:
                continue
            if device == "cpu" and "fp32" not in precs:
                precs.insert(0, "fp32")  # the reference every CPU reader expects
            ceiling_devices[device] = precs

        def ceilings_now() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for device, precs in ceiling_devices.items():
                log.info("measuring %s ceilings (%s)", device, ", ".join(precs))
                try:
                    out[device] = measure_ceilings(device, precs, threads=threads, gemm_n=settings.gemm_n,
                                                   bandwidth_mb=settings.bandwidth_mb)
                except Exception as exc:  # noqa: BLE001 - the rows stand without a ceiling
                    out[device] = {"device": device, "gemm_gflops": {}, "memory_gbps": None,
                                   "errors": {"all": _one_line(exc)}}
            return out

        # Ceilings before and after the rows, the best of the two kept: a shared machine that
        # slows down for a while during one measurement would otherwise lower the ceiling and
        # lift every row's "% of ceiling" (this VM measured 84 and 178 G/s minutes apart).
        ceilings_before = ceilings_now()

        # Pre- and post-processing run as in `solo-deploy run`: numpy's BLAS and OpenCV on the
        # calling thread (their pools, spinning after each call, took cores from the next row).
        from ..runtime.pipeline import helper_pools_single_threaded

        stack.enter_context(helper_pools_single_threaded())

        def visit(case: _Case, calls: int, record: bool) -> None:
            for _ in range(calls):
                if case.failed is not None:
                    return
                try:
                    case.step(record=record)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - record it, keep measuring the others
                    case.failed = _one_line(exc)
                    log.warning("%s failed while running: %s", _row_id(case.spec.model.path.name, case.spec.backend,
                                                                        case.spec.device, case.spec.precision,
                                                                        case.batch), case.failed)

        # Interleaved round-robin, in blocks: visit i starts at case i mod n, so no row always
        # runs first; each visit makes one unrecorded call (the previous row's thread pools may
        # still be spinning, its data still in the caches) and then up to BLOCK recorded ones.
        def rotated(live: list[_Case], i: int) -> list[_Case]:
            start = i % len(live) if live else 0
            return live[start:] + live[:start]

        for it in range(settings.warmup):
            for case in rotated([c for c in cases if c.failed is None], it):
                visit(case, 1, record=False)
        done = {id(c): 0 for c in cases}
        it = 0
        while True:
            live = [c for c in cases if c.failed is None and done[id(c)] < settings.frames]
            if not live:
                break
            for case in rotated(live, it):
                calls = min(BLOCK, settings.frames - done[id(case)])
                visit(case, 1, record=False)
                visit(case, calls, record=True)
                done[id(case)] += calls
            it += 1

        ceilings = _best_ceilings(ceilings_before, ceilings_now())

        by_spec: dict[int, dict[int, _Case]] = {}
        for c in cases:
            by_spec.setdefault(id(c.spec), {})[c.batch] = c
        rows_by_model: dict[str, list[dict[str, Any]]] = {mf.path.name: [] for mf in files}
        for spec in specs:
            for b in batches:
                case = by_spec.get(id(spec), {}).get(b)
                if spec.skip:
                    row = _empty_row(spec, b, "skipped", spec.skip)
                elif spec.failed or case is None:
                    row = _empty_row(spec, b, "failed", spec.failed or "not loaded")
                elif case.failed:
                    row = _empty_row(spec, b, "failed", case.failed)
                else:
                    row = _measured_row(case, ceilings)
                rows_by_model[spec.model.path.name].append(row)
        for c in cases:  # free backends (GPU memory, ORT sessions) before the temp folder goes
            c.spec.staged = None

    keys = {mf.path.name: mf.key for mf in files}
    all_rows = [r for rows in rows_by_model.values() for r in rows]
    _add_ratios(all_rows, keys)

    models_out = []
    for mf in files:
        cost = mf.cost.to_dict() if mf.cost is not None else None
        models_out.append({
            "path": str(mf.path), "name": mf.path.name, "format": mf.fmt, "sha256": mf.sha256[:16],
            "source_sha256": (mf.key or "")[:16] or None, "precision": mf.precision, "input_hw": list(mf.input_hw),
            "arch": mf.meta.model.arch, "preset": mf.meta.preset, "num_cells": mf.meta.model.num_cells,
            "flops_per_image": cost["flops_per_image"] if cost else None,
            "gflops_per_image": cost["gflops_per_image"] if cost else None,
            "cost": cost, "cost_error": mf.cost_error,
            "rows": rows_by_model[mf.path.name],
        })
    counts = {s: sum(r["status"] == s for r in all_rows) for s in ("ok", "skipped", "failed")}
    return {
        "schema_version": SCHEMA_VERSION,
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": settings.command,
        "settings": {
            "backends": list(settings.backends), "devices": list(settings.devices),
            "imgsz": list(settings.imgsz) if settings.imgsz else None, "batches": list(batches),
            "frames": settings.frames, "warmup": settings.warmup, "threads": threads,
            "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS"),
            "frame_source": f"solo_deploy.data.synthetic, {FRAME_HW[1]}x{FRAME_HW[0]} BGR, seed {FRAME_SEED}",
            "frame_hw": list(FRAME_HW), "order": (f"interleaved round-robin in blocks of {BLOCK} recorded calls after 1 unrecorded, "
                                                      "first row rotated every round"),
            "statistics": "per batch call; speedups and achieved FLOP/s from medians (p50) of the inference stage",
            "gemm_n": settings.gemm_n, "bandwidth_mb": settings.bandwidth_mb,
        },
        "machine": machine_info(threads, env.gpus()),
        "versions": versions(),
        "ceilings": ceilings,
        "models": models_out,
        "summary": {**counts, "seconds": round(time.perf_counter() - t_start, 1)},
    }


# ---------------------------------------------------------------------------------------------
# Text table
# ---------------------------------------------------------------------------------------------
def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def format_table(result: dict[str, Any]) -> str:
    """A plain-text summary: measured rows, then skipped/failed rows with their reasons."""
    head = ["model", "backend", "device", "prec", "batch", "pre", "h2d", "infer p50", "d2h", "post", "total",
            "p99", "fps", "vs torch", "GFLOP/s", "% ceil", "post %", "peak MB"]
    lines: list[list[str]] = []
    other: list[str] = []
    for m in result["models"]:
        for r in m["rows"]:
            if r["status"] != "ok":
                other.append(f"  {r['status']}: {r['model']} {r['backend']}/{r['device']}/{r['precision']} "
                             f"b{r['batch']}: {r['reason']}")
                continue
            st = r["stages"]
            lines.append([r["model"], r["backend"], r["device"], r["precision"], str(r["batch"]),
                          _f(st["preprocess"]["mean_ms"]), _f(st["host_to_device"]["mean_ms"]),
                          _f(st["inference"]["p50_ms"]), _f(st["device_to_host"]["mean_ms"]),
                          _f(st["postprocess"]["mean_ms"]), _f(r["total"]["mean_ms"]), _f(r["total"]["p99_ms"]),
                          _f(r["throughput_fps"], "{:.1f}"), _f(r["speedup_vs_torch"], "{:.2f}x"),
                          _f(r["achieved_gflops"], "{:.1f}"),
                          _f(None if r["fraction_of_ceiling"] is None else 100 * r["fraction_of_ceiling"], "{:.0f}%"),
                          _f(100 * r["postprocess_share"], "{:.0f}%"), _f(r["peak_mem_mb"], "{:.1f}")])
    if lines:
        widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(head)]
        out = ["  ".join(h.rjust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
        out += ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in lines]
        out.append("(latencies in ms per batch call; infer = median; total = mean of the summed stages)")
    else:
        out = ["no row could be measured on this machine"]
    mach = result["machine"]
    cpu = result["ceilings"].get("cpu")
    if cpu:
        g = cpu.get("gemm_gflops", {})
        out.append(f"CPU ceilings ({mach['cpu']}, {mach['threads']} threads): "
                   + ", ".join(f"{p} GEMM {_f(v, '{:.1f}')} G/s" for p, v in g.items())
                   + f", memory copy {_f(cpu.get('memory_gbps'), '{:.1f}')} GB/s")
    if other:
        out.append("not measured:")
        out += other
    return "\n".join(out)
