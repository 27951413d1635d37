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

The work is split by job: ``models`` (reading the model files), ``schedule`` (planning the
rows, the measuring loop), ``staging`` (loading each row's backend, split at the stages),
``probes`` (machine, versions, clocks, memory, ceilings) and ``report`` (rows, JSON document,
text table). This module holds the settings and ``run_bench``, which runs the phases in turn.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BadInputError
from ..preprocess import check_input_size

# BLOCK, FRAME_HW, FRAME_SEED, ROW_FIELDS, machine_info, synthetic_frames and versions lived in
# this module before it was split by job: they stay importable from here.
from .common import BENCH_BACKENDS, BLOCK, DEVICES, FRAME_HW, FRAME_SEED, STAGES  # noqa: F401
from .models import inspect_models
from .probes import _Env, machine_info, versions  # noqa: F401
from .report import ROW_FIELDS, assemble_result, collect_rows, format_table  # noqa: F401
from .schedule import measure, plan_rows, synthetic_frames  # noqa: F401
from .staging import prepare_cases, temp_dir_factory

__all__ = ["BENCH_BACKENDS", "DEVICES", "STAGES", "BenchSettings", "format_table", "run_bench"]


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
            raise BadInputError(
                f"unknown backend(s) {', '.join(bad) or '(none)'}: choose from {', '.join(BENCH_BACKENDS)}"
                + (" (triton serves remotely: benchmark the model Triton runs instead)" if "triton" in bad else "")
            )
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
            check_input_size(self.imgsz)


def run_bench(models: Sequence[str | os.PathLike[str]], settings: BenchSettings = BenchSettings()) -> dict[str, Any]:
    """Benchmark every (model file, backend, device, precision, batch) row; the JSON document.

    Bad inputs (missing or unreadable model files, bad settings) raise ``BadInputError`` before
    anything is measured. A backend that fails to load or run gives a ``failed`` row (with the
    reason) and the others go on; GPU rows without a GPU are ``skipped`` with the reason.
    """
    import cv2
    import torch

    settings.validate()
    if not models:
        raise BadInputError("no model files given")
    threads = settings.resolved_threads()
    batches = tuple(dict.fromkeys(int(b) for b in settings.batches))
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    t_start = time.perf_counter()

    files = inspect_models(models, settings.imgsz)
    env = _Env()
    specs = plan_rows(files, settings, env)
    with contextlib.ExitStack() as stack:
        cases = prepare_cases(specs, settings, threads, batches, temp_dir_factory(stack))
        ceilings = measure(cases, settings, threads, stack)
        rows_by_model = collect_rows(files, specs, cases, batches, ceilings)
        for c in cases:  # free backends (GPU memory, ORT sessions) before the temp folder goes
            c.spec.staged = None
    return assemble_result(files, rows_by_model, settings, threads, batches, env, ceilings, t_start)
