"""Probes: this machine and its software, what GPU backends can run here, clocks and memory
probes for the rows, and the ceilings (peak GEMM FLOP/s, memory bandwidth) that bound them."""
from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import DEVICES, failure_reason

if TYPE_CHECKING:
    from .core import BenchSettings

log = logging.getLogger("solo_deploy.bench")

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
    from .._version import versions as installed

    out = installed("torch", "onnxruntime", "onnx", "numpy", "opencv", "tensorrt")
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
# Ceilings, measured before and after the rows
# ---------------------------------------------------------------------------------------------
def ceiling_precisions(cases: Sequence[Any]) -> dict[str, list[str]]:
    """Per device that has rows: the precisions of its rows (CPU always with fp32)."""
    ceiling_devices: dict[str, list[str]] = {}
    for device in DEVICES:
        precs = sorted({c.spec.precision for c in cases if c.spec.device == device})
        if not precs:
            continue
        if device == "cpu" and "fp32" not in precs:
            precs.insert(0, "fp32")  # the reference every CPU reader expects
        ceiling_devices[device] = precs
    return ceiling_devices


def measure_device_ceilings(ceiling_devices: dict[str, list[str]], settings: BenchSettings,
                            threads: int) -> dict[str, Any]:
    """One measurement of every device's ceilings; a failed one is recorded with its reason."""
    from .ceiling import measure_ceilings

    out: dict[str, Any] = {}
    for device, precs in ceiling_devices.items():
        log.info("measuring %s ceilings (%s)", device, ", ".join(precs))
        try:
            out[device] = measure_ceilings(device, precs, threads=threads, gemm_n=settings.gemm_n,
                                           bandwidth_mb=settings.bandwidth_mb)
        except Exception as exc:  # noqa: BLE001 - the rows stand without a ceiling
            out[device] = {"device": device, "gemm_gflops": {}, "memory_gbps": None,
                           "errors": {"all": failure_reason(exc)}}
    return out


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
