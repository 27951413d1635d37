"""Reporting: the rows of the JSON document (statistics, ratios, roofline), the document itself
(``docs/bench-schema.md``) and its plain-text table."""
from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import FORMAT, SCHEMA_VERSION
from .common import BLOCK, FRAME_HW, FRAME_SEED, STAGES, _round
from .models import _ModelFile
from .probes import _Env, machine_info, versions
from .schedule import _Case, _row_id, _Spec

if TYPE_CHECKING:
    from .core import BenchSettings


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------
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


def _empty_row(spec: _Spec, batch: int, status: str, reason: str | None) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
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
                r["speedup_vs_fp32"] = round(
                    base["stages"]["inference"]["p50_ms"] / r["stages"]["inference"]["p50_ms"], 4
                )


def collect_rows(files: list[_ModelFile], specs: list[_Spec], cases: list[_Case], batches: tuple[int, ...],
                 ceilings: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per model file name: a row for each of its specs at each batch size (measured, skipped or
    failed, with the reason), in planning order."""
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
    return rows_by_model


# ---------------------------------------------------------------------------------------------
# The JSON document
# ---------------------------------------------------------------------------------------------
def assemble_result(files: list[_ModelFile], rows_by_model: dict[str, list[dict[str, Any]]],
                    settings: BenchSettings, threads: int, batches: tuple[int, ...], env: _Env,
                    ceilings: dict[str, Any], t_start: float) -> dict[str, Any]:
    """The JSON document of a run (``docs/bench-schema.md``); adds the speedups to the rows."""
    keys = {mf.path.name: mf.key for mf in files}
    all_rows = [r for rows in rows_by_model.values() for r in rows]
    _add_ratios(all_rows, keys)

    models_out = [_model_entry(mf, rows_by_model[mf.path.name]) for mf in files]
    counts = {s: sum(r["status"] == s for r in all_rows) for s in ("ok", "skipped", "failed")}
    return {
        "schema_version": SCHEMA_VERSION,
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": settings.command,
        "settings": _settings_entry(settings, threads, batches),
        "machine": machine_info(threads, env.gpus()),
        "versions": versions(),
        "ceilings": ceilings,
        "models": models_out,
        "summary": {**counts, "seconds": round(time.perf_counter() - t_start, 1)},
    }


def _model_entry(mf: _ModelFile, rows: list[dict[str, Any]]) -> dict[str, Any]:
    cost = mf.cost.to_dict() if mf.cost is not None else None
    return {
        "path": str(mf.path), "name": mf.path.name, "format": mf.fmt, "sha256": mf.sha256[:16],
        "source_sha256": (mf.key or "")[:16] or None, "precision": mf.precision, "input_hw": list(mf.input_hw),
        "arch": mf.meta.model.arch, "preset": mf.meta.preset, "num_cells": mf.meta.model.num_cells,
        "flops_per_image": cost["flops_per_image"] if cost else None,
        "gflops_per_image": cost["gflops_per_image"] if cost else None,
        "cost": cost, "cost_error": mf.cost_error,
        "rows": rows,
    }


def _settings_entry(settings: BenchSettings, threads: int, batches: tuple[int, ...]) -> dict[str, Any]:
    return {
        "backends": list(settings.backends), "devices": list(settings.devices),
        "imgsz": list(settings.imgsz) if settings.imgsz else None, "batches": list(batches),
        "frames": settings.frames, "warmup": settings.warmup, "threads": threads,
        "blas_threads_env": os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS"),
        "frame_source": f"solo_deploy.data.synthetic, {FRAME_HW[1]}x{FRAME_HW[0]} BGR, seed {FRAME_SEED}",
        "frame_hw": list(FRAME_HW),
        "order": (f"interleaved round-robin in blocks of {BLOCK} recorded calls after 1 unrecorded, "
                  "first row rotated every round"),
        "statistics": "per batch call; speedups and achieved FLOP/s from medians (p50) of the inference stage",
        "gemm_n": settings.gemm_n, "bandwidth_mb": settings.bandwidth_mb,
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
