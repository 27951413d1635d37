"""The calibration report: one JSON document (``calibration_report.json``) and a printed table.

Accuracy: mask AP (points) of the FP32 model and of the INT8 CPU model on a held-out split,
their difference, and the TensorRT Q/DQ model's AP as simulated by ORT on the CPU (TensorRT's
kernels round differently; build the engine and run ``solo-deploy eval`` on it for the real
number). Latency: CPU medians of FP32 vs INT8 through ORT, same input and thread count,
interleaved. Precision: which layers the guard kept FP32 and which op types stayed FP32 by design.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ..core.meta import ModelMeta
    from .data import CalibrationImages
    from .guard import GuardResult

__all__ = ["build_report", "format_table"]

REPORT_FORMAT = "solo-deploy-calibration-report/1"


def _versions() -> dict[str, str | None]:
    from .._version import versions

    return versions("onnxruntime", "onnx")


def build_report(
    *,
    model: str,
    fp32_path: Path,
    model_sha: str,
    meta: ModelMeta,
    calib: CalibrationImages,
    method: str,
    key: Mapping[str, Any],
    reused: bool,
    n_tensors: int,
    calib_seconds: float,
    eval_info: dict[str, Any] | None,
    ap_fp32: float | None,
    ap_cpu: float | None,
    ap_trt: float | None,
    max_ap_drop: float,
    guard: GuardResult | None,
    latency: dict[str, Any] | None,
    precision: dict[str, Any],
    pre_nodes: list[str],
    const_elementwise: list[str],
    output_layers: list[str],
    candidates: int,
    targets: Mapping[str, Any],
    files: dict[str, str],
    reduce_range: bool,
    seconds: float,
) -> dict[str, Any]:
    """Assemble the JSON-serialisable report (all AP values in points 0..100, times in ms/s)."""

    def rnd(v: float | None, nd: int = 3) -> float | None:
        return None if v is None else round(float(v), nd)

    accuracy = None
    if eval_info is not None:
        accuracy = {**eval_info, "metric": "COCO mask AP (points)", "ap_fp32": rnd(ap_fp32), "ap_int8_cpu": rnd(ap_cpu),
                    "ap_drop_cpu": rnd(None if ap_fp32 is None or ap_cpu is None else ap_fp32 - ap_cpu),
                    "ap_int8_trt_simulated": rnd(ap_trt),
                    "ap_drop_trt_simulated": rnd(None if ap_fp32 is None or ap_trt is None else ap_fp32 - ap_trt),
                    "max_ap_drop": max_ap_drop, "guard_met": None if guard is None else guard.met,
                    "note": "TensorRT Q/DQ model scored by ONNX Runtime on the CPU; TensorRT's own AP may differ "
                            "slightly (solo-deploy eval ENGINE)"}
    kept = {
        "guard_layers": list(guard.excluded) if guard is not None else [],
        "preprocessing": pre_nodes,
        "output_layers_cpu": output_layers,
        "fp32_ops": {"cpu": precision["cpu"]["fp32_ops"], "trt": precision["trt"]["fp32_ops"]},
        "trt_constant_elementwise": len(const_elementwise),
    }
    return {
        "format": REPORT_FORMAT,
        "model": {"source": model, "fp32_onnx": str(fp32_path), "sha256": model_sha, "arch": meta.model.arch,
                  "preset": meta.preset, "input_hw": list(meta.preprocess.input_hw)},
        "calibration": {"method": method, "images": calib.count, "found": calib.found, "data": calib.source,
                        "kind": calib.kind, "data_sha256": calib.sha256, "skipped": list(calib.skipped),
                        "tensors": n_tensors, "reused": reused, "seconds": round(calib_seconds, 2), "key": dict(key)},
        "accuracy": accuracy,
        "latency": latency,
        "guard": guard.to_dict() if guard is not None else None,
        "fp32_kept": kept,
        "precision": precision,
        "quantization": {
            name: {"file": cfg["file"], "op_types": cfg["op_types"], "activations": cfg["activation"],
                   "weights": cfg["weight"] + " per-channel", "extra_options": cfg["extra_options"],
                   "reduce_range": bool(reduce_range and name == "cpu")}
            for name, cfg in targets.items()},
        "candidate_layers": candidates,
        "files": files,
        "versions": _versions(),
        "seconds": round(seconds, 2),
    }


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "n/a" if v is None else format(v, spec)


def format_table(report: Mapping[str, Any]) -> str:
    """A short human-readable summary of ``report`` (what the CLI prints)."""
    cal = report["calibration"]
    how = "reused cache" if cal["reused"] else f"{cal['seconds']:.1f} s"
    lines = [(f"calibration: {cal['method']} on {cal['images']} images from {cal['data']} ({how}, "
              f"{cal['tensors']} tensors)")]
    acc, lat = report.get("accuracy"), report.get("latency")
    rows = [("", "FP32", "INT8 CPU", "diff")]
    if acc:
        drop = acc.get("ap_drop_cpu")
        rows.append(("mask AP", _fmt(acc.get("ap_fp32")), _fmt(acc.get("ap_int8_cpu")),
                     "n/a" if drop is None else f"{0.0 - drop + 0.0:+.2f}"))
    if lat:
        rows.append((f"CPU latency ms, {lat['threads']} thr", _fmt(lat["fp32_ms"]), _fmt(lat["int8_ms"]),
                     f"{lat['speedup']:.2f}x"))
        one = lat.get("single_thread")
        if one:
            rows.append(("CPU latency ms, 1 thr", _fmt(one["fp32_ms"]), _fmt(one["int8_ms"]), f"{one['speedup']:.2f}x"))
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            lines.append("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if acc:
        lines.append(f"  AP on {acc['data']}:{acc['split']} ({acc['images']} images, ONNX Runtime on "
                     f"{acc.get('device', 'cpu')}); TensorRT Q/DQ model on ORT: "
                     f"{_fmt(acc.get('ap_int8_trt_simulated'))}")
        g = report.get("guard") or {}
        state = "met" if acc.get("guard_met") else "NOT met"
        lines.append(f"  accuracy guard (max drop {acc['max_ap_drop']} AP): {state} after {len(g.get('tries', []))} "
                     f"try/tries")
    if lat:
        lines.append(f"  latency: {lat['backend']}, {lat['threads']} threads, {lat['statistic']} of {lat['runs']} runs")
    kept = report["fp32_kept"]
    guard_layers = kept["guard_layers"]
    lines.append(
        f"kept FP32: {len(guard_layers)} layer(s) by the guard"
        + (f" ({', '.join(guard_layers[:4])}{', ...' if len(guard_layers) > 4 else ''})" if guard_layers else "")
        + f"; output layers in the CPU model ({len(kept['output_layers_cpu'])}); preprocessing "
        f"({len(kept['preprocessing'])} nodes)"
    )
    fp32_ops = kept["fp32_ops"]["cpu"]
    if fp32_ops:
        lines.append("  FP32 ops in the CPU model: " + ", ".join(f"{op} x{n}" for op, n in fp32_ops.items()))
    files = report["files"]
    lines.append("wrote: " + ", ".join(files[k] for k in ("trt", "cpu", "cache", "cache_key", "fp32", "report")))
    return "\n".join(lines)
