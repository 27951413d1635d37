"""Benchmarks: per-stage latency of every backend, model FLOPs/bytes and this machine's ceilings.

``import solo_deploy.bench`` stays light (no torch, no onnxruntime); the heavy modules load
when a function is first used:

- :func:`run_bench` (``core``): the measurement behind ``solo-deploy bench``; returns the JSON
  document described in ``docs/bench-schema.md``;
- :func:`model_cost`, :func:`count_flops` (``flops``): FLOPs and bytes of a model;
- :func:`measure_ceilings`, :func:`gemm_ceiling`, :func:`memory_bandwidth` (``ceiling``);
- :func:`plot_bench` (``plot``): stacked-latency bar chart.
"""
from __future__ import annotations

from .._lazy import lazy_exports

SCHEMA_VERSION = 1
FORMAT = "solo-deploy-bench"

_LAZY = {
    "run_bench": ".core",
    "format_table": ".core",
    "BenchSettings": ".core",
    "model_cost": ".flops",
    "count_flops": ".flops",
    "conv2d_flops": ".flops",
    "measure_ceilings": ".ceiling",
    "gemm_ceiling": ".ceiling",
    "memory_bandwidth": ".ceiling",
    "plot_bench": ".plot",
}

__all__ = ["FORMAT", "SCHEMA_VERSION", "BenchSettings", "conv2d_flops", "count_flops", "format_table", "gemm_ceiling",
           "measure_ceilings", "memory_bandwidth", "model_cost", "plot_bench", "run_bench"]

__getattr__ = lazy_exports(__name__, _LAZY)
