"""INT8 calibration: one calibration pass -> TensorRT and ONNX Runtime CPU Q/DQ models, a TensorRT
calibration cache and an accuracy report (``solo-deploy calibrate``).

Light on purpose: importing this package pulls in no onnx/onnxruntime/torch; the heavy modules
(:mod:`.quantize`, :mod:`.guard`, :mod:`.data`) load on first use. ``calibrate`` is available
here lazily.
"""
from __future__ import annotations

from .._lazy import lazy_exports

__all__ = ["FILES", "KEY_FILE", "METHODS", "CalibrationSettings", "calibrate"]

METHODS = ("minmax", "entropy", "percentile")  # MinMax default: entropy is known to hurt detection heads

# What OUT_DIR receives (fixed names: a second run finds and reuses the cache).
FILES = {
    "fp32": "model.fp32.onnx",  # the FP32 graph the cache's tensor names refer to
    "trt": "model.trt.int8.onnx",  # symmetric int8 Q/DQ for TensorRT
    "cpu": "model.cpu.int8.onnx",  # uint8-activation Q/DQ for ONNX Runtime on the CPU
    "cache": "calibration.cache",  # TensorRT calibration cache (text)
    "ranges": "calibration.ranges.json",  # ORT TensorsData: the full (min, max) ranges, reused by a rerun
    "report": "calibration_report.json",
}
KEY_FILE = FILES["cache"] + ".key.json"  # sidecar: model hash, data hash, method, images


__getattr__ = lazy_exports(__name__, {"calibrate": ".quantize", "CalibrationSettings": ".settings"})
