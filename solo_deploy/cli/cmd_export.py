"""`solo-deploy export`: ONNX files, TensorRT engines and Triton model repositories."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer

from .app import DeviceOpt, ImgszOpt, LogLevelOpt, app, imgsz_tuple, setup_logging


@app.command("export")
def export_cmd(
    model: Path = typer.Argument(..., help="Model file: .ckpt or .safetensors; or an .onnx (for --format engine/"
                                 "triton) or an .engine (for --format triton)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output .onnx or .engine file; the repository folder "
                                "for --format triton."),
    imgsz: Optional[Tuple[int, int]] = ImgszOpt,
    batch: int = typer.Option(1, "--batch", min=1, help="Static batch size (the traced batch with --dynamic)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic batch, height and width (H, W multiples of 32, "
                                 "at least 64)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (13..20)."),
    half: bool = typer.Option(False, "--half", help="FP16 ONNX: uint8 in, float32 out, float16 inside."),
    fmt: str = typer.Option("onnx", "--format", help="onnx, engine (TensorRT) or triton (model repository)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16 or int8 (default: fp32, or what "
                                            "a given ONNX carries; fp16 implies --half for exports; int8 needs a "
                                            "Q/DQ ONNX or, on TensorRT 10, --calibration-cache)."),
    workspace: float = typer.Option(4.0, "--workspace", help="TensorRT workspace limit in GiB."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file (read and "
                                                "updated)."),
    calibration_cache: Optional[Path] = typer.Option(None, "--calibration-cache", help="TensorRT 10 INT8 "
                                                     "calibration cache for an FP32 ONNX."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Largest batch of a dynamic engine profile "
                                            "(default 8) / Triton max_batch_size (default: the engine's, or 8)."),
    name: Optional[str] = typer.Option(None, "--name", help="Triton model name (default: the model file's stem)."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Max relative output difference vs "
                                              "PyTorch float32 (default 1e-4; 1e-2 with --half)."),
    no_parity: bool = typer.Option(False, "--no-parity", help="Skip the ONNX Runtime vs PyTorch parity check."),
    end2end: bool = typer.Option(False, "--end2end", help="Append SOLOv2's post-processing: the graph outputs "
                                 "masks, boxes, labels, scores and num_detections (MODEL may also be a raw ONNX "
                                 "export of any precision, e.g. calibrate's INT8 one)."),
    mask_format: Optional[str] = typer.Option(None, "--mask-format", help="End-to-end masks: uint8 (probability x "
                                              "255, default) or prob (float32)."),
    max_candidates: Optional[int] = typer.Option(None, "--max-candidates", help="End-to-end K0: candidates by "
                                                 "category score whose masks are computed (1..3840, default "
                                                 "1000)."),
    version_compatible: bool = typer.Option(False, "--version-compatible", help="TensorRT engine that also loads "
                                            "on later TensorRT versions (same major, or 10 -> 11); it embeds "
                                            "TensorRT's lean runtime and may run slower. Recorded in the sidecar."),
    raw: bool = typer.Option(False, "--raw", help="Triton: serve the raw network outputs (for clients that "
                             "post-process themselves) instead of the end-to-end graph, SOLOv2's default."),
    triton_backend: Optional[str] = typer.Option(None, "--triton-backend", help="Triton: onnxruntime (default for "
                                                 "ONNX), tensorrt (an .engine) or python (ONNX Runtime inside "
                                                 "Triton's Python backend, for CPU serving).", show_default=False),
    device: Optional[str] = typer.Option(None, "--device", help="GPU that builds a TensorRT engine: cuda, cuda:N "
                                         "or N (default cuda:0; ONNX export and its parity check run on the CPU).",
                                         callback=DeviceOpt.callback, show_default=False),
    log_level: str = LogLevelOpt,
) -> None:
    """Export a model to ONNX (checked, simplified, parity-tested), a TensorRT engine or a Triton repository."""
    setup_logging(log_level)
    from ..export.orchestrate import ExportRequest, export_model

    export_model(ExportRequest(model=model, output=output, fmt=fmt, imgsz=imgsz_tuple(imgsz), batch=batch,
                               dynamic=dynamic, opset=opset, half=half, precision=precision, workspace=workspace,
                               timing_cache=timing_cache, calibration_cache=calibration_cache, max_batch=max_batch,
                               name=name, tolerance=tolerance, parity=not no_parity, device=device,
                               end2end=end2end, mask_format=mask_format, max_candidates=max_candidates,
                               version_compatible=version_compatible, raw=raw, triton_backend=triton_backend),
                 say=typer.echo)
