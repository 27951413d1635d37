"""Scheduling: the rows a run plans (one per model file, backend, device, precision and batch
size) and the measuring loop that visits them interleaved, in blocks (see ``bench.core``)."""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadInputError
from .common import BLOCK, FRAME_HW, FRAME_SEED, STAGES, failure_reason
from .models import _ModelFile
from .probes import _best_ceilings, _Env, ceiling_precisions, measure_device_ceilings

if TYPE_CHECKING:
    from .core import BenchSettings

log = logging.getLogger("solo_deploy.bench")


# ---------------------------------------------------------------------------------------------
# Planning: the rows a model file gives
# ---------------------------------------------------------------------------------------------
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


def plan_rows(files: list[_ModelFile], settings: BenchSettings, env: _Env) -> list[_Spec]:
    """Every (model file, backend, device, precision) the settings ask for, with a skip reason
    where it cannot run here; ``BadInputError`` when none of them is asked for."""
    specs = [_Spec(mf, b, d, p, skip=_skip_reason(mf, b, d, p, env))
             for mf in files for (b, d, p) in _candidates(mf)
             if b in settings.backends and d in settings.devices]
    if not specs:
        raise BadInputError(f"none of the model files can run on backends {', '.join(settings.backends)} / devices "
                            f"{', '.join(settings.devices)}")
    return specs


# ---------------------------------------------------------------------------------------------
# One row at one batch size, and its frames
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


def _row_id(model: str, backend: str, device: str, precision: str, batch: int) -> str:
    return f"{model}|{backend}|{device}|{precision}|b{batch}"


# ---------------------------------------------------------------------------------------------
# The measuring loop
# ---------------------------------------------------------------------------------------------
def measure(cases: list[_Case], settings: BenchSettings, threads: int, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Warm up and measure every loaded row, between two measurements of the ceilings; the
    ceilings (the best of the two). Pre- and post-processing stay single-threaded from the
    measured rounds until ``stack`` closes."""
    ceiling_devices = ceiling_precisions(cases)

    # Ceilings before and after the rows, the best of the two kept: a shared machine that
    # slows down for a while during one measurement would otherwise lower the ceiling and
    # lift every row's "% of ceiling" (this VM measured 84 and 178 G/s minutes apart).
    ceilings_before = measure_device_ceilings(ceiling_devices, settings, threads)

    # Pre- and post-processing run as in `solo-deploy run`: numpy's BLAS and OpenCV on the
    # calling thread (their pools, spinning after each call, took cores from the next row).
    from ..runtime.pipeline import helper_pools_single_threaded

    stack.enter_context(helper_pools_single_threaded())

    _warm_up(cases, settings.warmup)
    _measure_blocks(cases, settings.frames)
    return _best_ceilings(ceilings_before, measure_device_ceilings(ceiling_devices, settings, threads))


def _visit(case: _Case, calls: int, record: bool) -> None:
    for _ in range(calls):
        if case.failed is not None:
            return
        try:
            case.step(record=record)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - record it, keep measuring the others
            case.failed = failure_reason(exc)
            log.warning("%s failed while running: %s", _row_id(case.spec.model.path.name, case.spec.backend,
                                                                case.spec.device, case.spec.precision,
                                                                case.batch), case.failed)


# Interleaved round-robin, in blocks: visit i starts at case i mod n, so no row always
# runs first; each visit makes one unrecorded call (the previous row's thread pools may
# still be spinning, its data still in the caches) and then up to BLOCK recorded ones.
def _rotated(live: list[_Case], i: int) -> list[_Case]:
    start = i % len(live) if live else 0
    return live[start:] + live[:start]


def _warm_up(cases: list[_Case], rounds: int) -> None:
    for it in range(rounds):
        for case in _rotated([c for c in cases if c.failed is None], it):
            _visit(case, 1, record=False)


def _measure_blocks(cases: list[_Case], frames: int) -> None:
    done = {id(c): 0 for c in cases}
    it = 0
    while True:
        live = [c for c in cases if c.failed is None and done[id(c)] < frames]
        if not live:
            break
        for case in _rotated(live, it):
            calls = min(BLOCK, frames - done[id(case)])
            _visit(case, 1, record=False)
            _visit(case, calls, record=True)
            done[id(case)] += calls
        it += 1
