"""This machine's ceilings, measured in the same run as the benchmark they bound.

- CPU GEMM: ONNX Runtime's own kernels on a one-node graph with a constant ``B`` (as model
  weights are, so ORT pre-packs it): ``MatMul`` for fp32/fp16 and ``MatMulInteger`` with uint8
  activations x int8 weights for int8 (MLAS's fastest int8 path on x86, the one ORT's fused
  QLinearConv uses). ORT rather than torch because torch's fp32 GEMM peaked below what ORT
  reached on a whole network on this CPU (shared/NOTES.md): a ceiling must be the fastest GEMM.
- CPU memory bandwidth: a large numpy copy split over the same threads (numpy releases the GIL
  while copying), counted as bytes read + bytes written.
- CUDA (when there is a GPU): torch matmul (TF32 allowed for fp32: the fastest fp32-input GEMM,
  and what TensorRT uses by default), fp16 matmul, ``torch._int_mm`` for int8, and a
  device-to-device copy; all timed with CUDA events.

Every figure is the best of several repetitions after a warm-up: a ceiling is the most the
machine did, not its average. A multiply-add counts 2 operations, as in the FLOP counts.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

log = logging.getLogger("solo_deploy.bench")

__all__ = ["cuda_ceilings", "gemm_ceiling", "measure_ceilings", "memory_bandwidth"]

GEMM_PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_GEMM_N = 1024  # ~2 GFLOP: tens of ms on a small CPU, large enough to reach the kernels' peak
DEFAULT_BANDWIDTH_MB = 128  # per buffer: well beyond a CCX's 32 MB L3 on EPYC parts
DEFAULT_CUDA_GEMM_N = 4096


def _best_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _gemm_model(precision: str, n: int) -> tuple[bytes, dict[str, np.ndarray]]:
    """A one-node ONNX graph ``y = a @ B`` (B constant) and its feed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if precision == "int8":
        a = rng.integers(0, 256, (n, n), dtype=np.uint8)
        b = rng.integers(-128, 128, (n, n), dtype=np.int8)
        op, in_type, out_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
    elif precision in ("fp32", "fp16"):
        dtype = np.float32 if precision == "fp32" else np.float16
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        op = "MatMul"
        in_type = out_type = TensorProto.FLOAT if precision == "fp32" else TensorProto.FLOAT16
    else:
        raise ValueError(f"unknown GEMM precision {precision!r}: choose one of {GEMM_PRECISIONS}")
    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["y"])], f"gemm_{precision}",
                              [helper.make_tensor_value_info("a", in_type, [n, n])],
                              [helper.make_tensor_value_info("y", out_type, [n, n])],
                              [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime the project supports
    onnx.checker.check_model(model)
    return model.SerializeToString(), {"a": a}


def gemm_ceiling(precision: str = "fp32", n: int = DEFAULT_GEMM_N, threads: int | None = None,
                 repeats: int = 5) -> float:
    """Best GEMM rate of ONNX Runtime's CPU provider on n x n x n, in G(FL)OP/s."""
    import onnxruntime as ort

    if n < 1:
        raise ValueError(f"GEMM size must be positive, got {n}")
    data, feed = _gemm_model(precision, n)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    seconds = _best_seconds(lambda: session.run(None, feed), repeats)
    return 2.0 * n ** 3 / seconds / 1e9


def memory_bandwidth(mb: float = DEFAULT_BANDWIDTH_MB, threads: int = 1, repeats: int = 5) -> float:
    """Best copy bandwidth of host memory in GB/s (read + write bytes), over ``threads`` threads."""
    size = max(1, int(mb * 2**20)) // 8 * 8
    src = np.ones(size // 8, dtype=np.float64)  # written once: pages are really mapped before timing
    dst = np.zeros_like(src)
    parts = max(1, int(threads))
    bounds = np.linspace(0, src.size, parts + 1).astype(np.int64)
    chunks = [(slice(int(a), int(b))) for a, b in zip(bounds[:-1], bounds[1:])]
    if parts == 1:
        def copy() -> None:
            np.copyto(dst, src)
    else:
        pool = ThreadPoolExecutor(parts)

        def copy() -> None:
            list(pool.map(lambda s: np.copyto(dst[s], src[s]), chunks))
    try:
        seconds = _best_seconds(copy, repeats)
    finally:
        if parts > 1:
            pool.shutdown()
    return 2.0 * src.nbytes / seconds / 1e9


def cuda_ceilings(precisions: Sequence[str] = GEMM_PRECISIONS, n: int = DEFAULT_CUDA_GEMM_N, repeats: int = 10,
                  copy_mb: float = 512) -> dict[str, Any]:
    """GEMM and device-memory ceilings of the current CUDA device (torch, CUDA events).

    NOTE: needs a GPU; not executed on the CPU-only development machine.
    """
    import torch

    dev = torch.device("cuda")

    def timed(fn: Callable[[], Any]) -> float:
        fn()
        torch.cuda.synchronize()
        best = float("inf")
        for _ in range(max(1, repeats)):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        return best

    def gemm_seconds(precision: str) -> float:
        if precision == "int8":
            a = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=dev)
            b = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=dev)
            return timed(lambda: torch._int_mm(a, b))
        dtype = torch.float32 if precision == "fp32" else torch.float16
        a = torch.randn((n, n), dtype=dtype, device=dev)
        b = torch.randn((n, n), dtype=dtype, device=dev)
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            return timed(lambda: a @ b)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old

    def copy_seconds(elements: int) -> float:
        src = torch.empty(elements, dtype=torch.float32, device=dev)
        dst = torch.empty_like(src)
        return timed(lambda: dst.copy_(src))

    gemm: dict[str, float | None] = {}
    errors: dict[str, str] = {}
    for p in precisions:
        try:
            gemm[p] = 2.0 * n ** 3 / gemm_seconds(p) / 1e9
        except Exception as exc:  # noqa: BLE001 - e.g. _int_mm unsupported on this GPU
            gemm[p] = None
            errors[p] = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    elements = int(copy_mb * 2**20) // 4
    bandwidth = 2.0 * elements * 4 / copy_seconds(elements) / 1e9
    torch.cuda.empty_cache()
    return {"device": "cuda", "gemm_n": n, "gemm_gflops": gemm, "memory_gbps": bandwidth, "errors": errors,
            "method": {"gemm": "torch matmul (fp32 with TF32 allowed), fp16 matmul, torch._int_mm int8; CUDA events",
                       "memory": f"device-to-device copy of {copy_mb:g} MiB, read + write bytes"}}


def measure_ceilings(device: str = "cpu", precisions: Sequence[str] = ("fp32",), threads: int = 1,
                     gemm_n: int = DEFAULT_GEMM_N, bandwidth_mb: float = DEFAULT_BANDWIDTH_MB,
                     repeats: int = 5) -> dict[str, Any]:
    """Ceilings of ``device`` ("cpu" or "cuda") for the given precisions (plus memory bandwidth).

    A precision that cannot be measured gets ``None`` and its reason under ``errors``.
    """
    if device == "cuda":
        return cuda_ceilings(precisions)
    gemm: dict[str, float | None] = {}
    errors: dict[str, str] = {}
    for p in precisions:
        try:
            gemm[p] = gemm_ceiling(p, n=gemm_n, threads=threads, repeats=repeats)
        except Exception as exc:  # noqa: BLE001 - an ORT build without that kernel: no ceiling, say why
            gemm[p] = None
            errors[p] = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    bandwidth = memory_bandwidth(bandwidth_mb, threads=threads, repeats=repeats)
    return {
        "device": "cpu",
        "threads": threads,
        "gemm_n": gemm_n,
        "gemm_gflops": gemm,
        "memory_gbps": bandwidth,
        "errors": errors,
        "method": {"gemm": "onnxruntime CPUExecutionProvider, one MatMul (fp32/fp16) or MatMulInteger (uint8 x int8) "
                           f"node, {gemm_n}^3, constant B, same thread count; best of {repeats}",
                   "memory": f"numpy copy of {bandwidth_mb:g} MiB over {threads} thread(s), read + write bytes; "
                             f"best of {repeats}"},
    }
