"""`solo-deploy bench`: per-stage latency of every backend against this machine's ceilings."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from .app import ImgszOpt, LogLevelOpt, app, imgsz_tuple, setup_logging


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip().lower() for v in value.split(",") if v.strip())


def _command_line(models: List[Path], backends: str, devices: str, imgsz: Optional[tuple[int, int]], batch: List[int],
                  frames: int, warmup: int, threads: Optional[int], gemm_n: int, bandwidth_mb: float) -> str:
    """The run's settings as a command line (recorded in the JSON: reproducible, no local paths of outputs)."""
    parts = ["solo-deploy", "bench", *[str(m) for m in models], "--backends", backends, "--devices", devices]
    if imgsz:
        parts += ["--imgsz", str(imgsz[0]), str(imgsz[1])]
    for b in batch:
        parts += ["--batch", str(b)]
    parts += ["--frames", str(frames), "--warmup", str(warmup)]
    if threads:
        parts += ["--threads", str(threads)]
    parts += ["--gemm-n", str(gemm_n), "--bandwidth-mb", f"{bandwidth_mb:g}"]
    return shlex.join(parts)


@app.command("bench")
def bench_cmd(
    models: List[Path] = typer.Argument(..., help="Model files: .safetensors/.ckpt (torch, and onnxruntime through "
                                        "the export cache), .onnx (FP32/FP16/INT8 Q/DQ), .engine."),
    backends: str = typer.Option("torch,onnxruntime,tensorrt", "--backends",
                                 help="Comma-separated: torch, onnxruntime, tensorrt."),
    devices: str = typer.Option("cpu,cuda", "--devices", "--device", help="Comma-separated: cpu, cuda (cuda:0 and 0 "
                                "work too). CUDA rows without a GPU "
                                "are reported as skipped, with the reason."),
    imgsz: Optional[Tuple[int, int]] = ImgszOpt,
    batch: List[int] = typer.Option([1], "--batch", help="Batch size; repeat for several (--batch 1 --batch 8)."),
    frames: int = typer.Option(50, "--frames", help="Measured batch calls per row."),
    warmup: int = typer.Option(10, "--warmup", help="Unmeasured batch calls per row before measuring."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for every backend (torch, ONNX Runtime, "
                                          "OpenCV, BLAS). Default: the cores this process may use.",
                                          show_default=False),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON (docs/bench-schema.md)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG bar chart of latency per row by stage."),
    gemm_n: int = typer.Option(1024, "--gemm-n", help="Size n of the n x n x n GEMM that measures the ceiling."),
    bandwidth_mb: float = typer.Option(128, "--bandwidth-mb", help="MiB copied to measure memory bandwidth."),
    log_level: str = LogLevelOpt,
) -> None:
    """Latency per stage (preprocess, transfers, inference, post-process), throughput, memory, FLOP/s vs ceilings."""
    setup_logging(log_level)
    from .._paths import check_model_path, check_outputs
    from ..errors import BadInputError, RuntimeFailure

    if threads is not None and threads < 1:
        raise BadInputError(f"--threads must be at least 1, got {threads}")
    devices = ",".join(bench_device(d) for d in _split(devices))
    for m in models:
        check_model_path(m)
    check_outputs([("--json", json_out), ("--plot", plot)], [("model", m) for m in models])
    if threads and "numpy" not in sys.modules:
        # numpy's OpenBLAS sizes its thread pool once, when it loads: pin it now so that numpy
        # post-processing (ONNX Runtime rows) uses the same threads as torch post-processing.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(threads))
    size = imgsz_tuple(imgsz)
    from .._atomic import write_json
    from ..bench.core import BenchSettings, format_table, run_bench

    settings = BenchSettings(backends=_split(backends), devices=_split(devices), imgsz=size, batches=tuple(batch),
                             frames=frames, warmup=warmup, threads=threads, gemm_n=gemm_n, bandwidth_mb=bandwidth_mb,
                             command=_command_line(models, backends, devices, size, batch, frames, warmup, threads,
                                                   gemm_n, bandwidth_mb))
    result = run_bench(models, settings)
    typer.echo(format_table(result))
    if json_out:
        write_json(json_out, result)
        typer.echo(f"wrote {json_out}")
    if plot:
        from ..bench.plot import plot_bench

        plot_bench(result, plot)
        typer.echo(f"wrote {plot}")
    failed = [r for m in result["models"] for r in m["rows"] if r["status"] == "failed"]
    if failed:
        raise RuntimeFailure(f"{len(failed)} row(s) failed, e.g. {failed[0]['id']}: {failed[0]['reason']}")


def bench_device(value: str) -> str:
    """A bench row's device from any spelling `--device` takes: cpu, or cuda for GPU 0 (cuda,
    cuda:0, 0). The rows are per kind of device; another GPU is chosen with CUDA_VISIBLE_DEVICES."""
    from ..errors import BadInputError
    from ..runtime.devices import parse_device

    device = parse_device(value)
    if device not in ("cpu", "cuda:0"):
        raise BadInputError(f"bench measures GPU 0: run it with CUDA_VISIBLE_DEVICES={device.split(':')[1]} "
                            f"instead of --devices {value}")
    return device.split(":")[0]
