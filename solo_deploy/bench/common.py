"""What every phase of a bench run shares: the fixed constants and two small helpers."""
from __future__ import annotations

from ..errors import one_line

STAGES = ("preprocess", "host_to_device", "inference", "device_to_host", "postprocess")
BLOCK = 5  # recorded calls per visit of a row (after one unrecorded call)
BENCH_BACKENDS = ("torch", "onnxruntime", "tensorrt")  # triton is remote: its latency is the network's
DEVICES = ("cpu", "cuda")
FRAME_HW = (480, 640)  # a VGA camera frame: letterboxing really resizes, post-process really upsamples
FRAME_SEED = 1307  # fixed: every run letterboxes and post-processes the same frames


def failure_reason(exc: BaseException) -> str:
    """A row's (or a ceiling's) failure reason: ``Type: first line of the message``, or ``Type``."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {one_line(text)}" if text else type(exc).__name__


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)
