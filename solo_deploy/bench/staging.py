"""Staged backends: each runner's call split at the stage boundaries, and the preparation of a
row's backend (exporting an ONNX or building an engine first where the row needs one)."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.meta import split_outputs
from .common import _round, failure_reason
from .probes import _CudaClock, _HostClock, _probe_for
from .schedule import _Case, _MetaOnly, _Spec, synthetic_frames

if TYPE_CHECKING:
    from .core import BenchSettings

log = logging.getLogger("solo_deploy.bench")


# ---------------------------------------------------------------------------------------------
# Staged backends: a row measures the runtime's own runners, stage by stage
# ---------------------------------------------------------------------------------------------
class _Staged:
    """A started runner and what the bench reads besides its stages (``to_device``, ``infer``,
    ``to_host``: the runner's own): the clock that times it, where post-processing runs, and the
    weight bytes one call reads."""

    def __init__(self, runner: Any, weight_bytes: int) -> None:
        self.runner = runner.start()
        self.device = runner.device
        # ORT synchronises its own CUDA stream (see the docstring of bench.core): host clocks.
        on_gpu_stream = runner.device.startswith("cuda") and runner.backend in ("torch", "tensorrt")
        self.timer = "cuda_events" if on_gpu_stream else "host"
        self.postprocess_device = "cuda" if on_gpu_stream else "cpu"
        self.weight_bytes = weight_bytes

    def to_device(self, batch: np.ndarray) -> Any:
        return self.runner.to_device(batch)

    def infer(self, x: Any) -> Any:
        return self.runner.infer(x)

    def to_host(self, out: Any) -> tuple[Any, Any, list[Any]]:
        return split_outputs(self.runner.meta, self.runner.to_host(out))


def _staged(backend: str, path: Path, device: str, threads: int) -> _Staged:
    """The row's runner, loaded (NOTE: the TensorRT row needs TensorRT and a GPU; not executed on
    the CPU-only development machine)."""
    if backend == "torch":
        from ..runtime.runners import TorchRunner

        runner = TorchRunner(path, device=device, threads=threads).start()
        return _Staged(runner, sum(int(t.numel()) * int(t.element_size()) for t in runner.model.state_dict().values()))
    if backend == "onnxruntime":
        from ..runtime.runners import OnnxRunner
        from .flops import onnx_weight_bytes

        return _Staged(OnnxRunner(path, device=device, threads=threads), onnx_weight_bytes(path))
    from ..runtime.tensorrt import TensorRTRunner

    return _Staged(TensorRTRunner(path, device="cuda"), path.stat().st_size)  # weights dominate an engine


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
    spec.staged = _staged(spec.backend, run_path, spec.device, threads)
    fixed = getattr(spec.staged.runner, "fixed_batch", None)
    if fixed and max(settings.batches) > fixed:
        spec.notes.append(f"static batch-{fixed} graph: larger batches run in chunks of {fixed}")
    spec.load_mem_mb = _round(probe.peak(), 1)
    spec.run_file = str(run_path)


# ---------------------------------------------------------------------------------------------
# The prepare phase: every row loaded and called once at each batch size
# ---------------------------------------------------------------------------------------------
def temp_dir_factory(stack: contextlib.ExitStack) -> Callable[[], Path]:
    """A function giving the run's temporary folder, made on first use and removed with ``stack``."""
    tmpdir: list[Path] = []

    def tmp() -> Path:
        if not tmpdir:
            tmpdir.append(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="solo-deploy-bench-"))))
        return tmpdir[0]

    return tmp


def prepare_cases(specs: list[_Spec], settings: BenchSettings, threads: int, batches: tuple[int, ...],
                  tmp: Callable[[], Path]) -> list[_Case]:
    """Load the backend of every row that is not skipped and make its first call at each batch
    size; a backend that fails to load marks its spec ``failed``, a failed first call its case."""
    frames = synthetic_frames(max(batches))
    cases: list[_Case] = []
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
            spec.failed = failure_reason(exc)
            log.warning("%s on %s/%s failed to load: %s", spec.model.path.name, spec.backend, spec.device,
                        spec.failed)
            continue
        meta = dataclasses.replace(spec.model.meta,
                                   preprocess=spec.model.meta.preprocess.with_size(spec.model.input_hw))
        cases += [_first_call(spec, meta, b, frames) for b in batches]
    return cases


def _first_call(spec: _Spec, meta: Any, batch: int, frames: list[np.ndarray]) -> _Case:
    """The case of ``spec`` at ``batch``, after its first call: the call (lazy allocations, arena
    growth, kernel selection) that is neither warm-up nor measured, where the row's memory peak
    is taken."""
    from ..runtime.predictor import Predictor

    clock = _CudaClock() if spec.staged.timer == "cuda_events" else _HostClock()
    case = _Case(spec, batch, Predictor(_MetaOnly(meta)), frames[:batch], clock)
    spec.probe.reset()
    try:
        case.step(record=False)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001
        case.failed = failure_reason(exc)
    case.peak_mem_mb = spec.probe.peak()
    return case
