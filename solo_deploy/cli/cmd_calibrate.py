"""`solo-deploy calibrate`: INT8 Q/DQ models for TensorRT and the CPU, a TensorRT calibration
cache and an accuracy/latency report, from one calibration pass."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import DeviceOpt, LogLevelOpt, app, setup_logging


@app.command("calibrate")
def calibrate_cmd(
    model: Path = typer.Argument(..., help="FP32 ONNX export, or a .safetensors/.ckpt model (exported first)."),
    data: str = typer.Option(
        "synthetic",
        "--data",
        help="Calibration images: an image folder, a video (every k-th "
        "frame), a COCO data set, or 'synthetic' (the calib split).",
    ),
    output: Path = typer.Option(
        ..., "-o", "--output", help="Output folder: INT8 models, calibration cache + key, report."
    ),
    images: int = typer.Option(
        128, "--images", "-n", min=1, help="Calibration images to use (at least 32 unless --force)."
    ),
    method: str = typer.Option(
        "minmax",
        "--method",
        help="minmax (default, safest for detection heads), entropy (KL, "
        "minutes: a Python search per tensor) or percentile (99.999%).",
    ),
    max_ap_drop: float = typer.Option(
        1.0,
        "--max-ap-drop",
        help="Accuracy guard: largest allowed mask-AP drop in points; sensitive layers stay FP32 until it holds.",
    ),
    eval_images: int = typer.Option(
        100, "--eval-images", help="Held-out images for the AP check (0: skip the AP check and the guard)."
    ),
    eval_data: str = typer.Option("synthetic", "--eval-data", help="'synthetic' or a COCO folder for the AP check."),
    eval_split: str = typer.Option(
        "val", "--eval-split", help="Split for the AP check: synthetic's, or train / val of a COCO folder."
    ),
    ann: Optional[Path] = typer.Option(None, "--ann", help="A COCO annotation file for the AP check (all its images)."),
    images_dir: Optional[Path] = typer.Option(None, "--images-dir", help="Folder of the --ann images."),
    guard_budget: float = typer.Option(
        1200.0,
        "--guard-budget",
        help="Seconds the accuracy guard may spend on re-quantizing and re-evaluating (at most 5 AP checks).",
    ),
    video_stride: Optional[int] = typer.Option(
        None,
        "--video-stride",
        min=1,
        help="Take every k-th video frame (default: spread the images over the whole video).",
    ),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="CPU threads for calibration, evaluation and timing (default: all cores)."
    ),
    reduce_range: bool = typer.Option(
        True,
        "--reduce-range/--full-range",
        help="CPU model: 7-bit weights (default; "
        "avoids int16 saturation on x86 CPUs without VNNI) or full 8-bit weights.",
    ),
    force: bool = typer.Option(False, "--force", help="Calibrate with fewer than 32 images; skip unreadable images."),
    device: str = typer.Option(
        "cpu",
        "--device",
        help="Where ONNX Runtime runs the AP check: cpu, cuda, cuda:N or N (calibration itself runs on the CPU).",
        callback=DeviceOpt.callback,
    ),
    log_level: str = LogLevelOpt,
) -> None:
    """Calibrate a model to INT8 (TensorRT + ONNX Runtime CPU Q/DQ models) with an accuracy guard."""
    setup_logging(log_level)
    import sys

    from .._paths import check_model_path, check_outputs
    from ..calibration import FILES, KEY_FILE
    from ..calibration.quantize import calibrate
    from ..calibration.report import format_table
    from ..calibration.settings import CalibrationSettings

    check_model_path(model)
    check_outputs([(f"calibration output {n}", output / n) for n in (*FILES.values(), KEY_FILE)], [("model", model)])

    verbose = log_level.lower() in ("debug", "info")
    settings = CalibrationSettings(  # BadInputError here for a bad --method / --max-ap-drop / --eval-images
        images=images, method=method.lower(), max_ap_drop=max_ap_drop, eval_data=eval_data, eval_split=eval_split,
        eval_ann=str(ann) if ann is not None else None, eval_images_dir=str(images_dir) if images_dir else None,
        eval_images=eval_images, force=force, video_stride=video_stride, threads=threads, reduce_range=reduce_range,
        guard_budget_s=guard_budget, device=device,
        progress=(lambda msg: typer.echo(msg, err=True)) if verbose or sys.stderr.isatty() else None)
    result = calibrate(model, data, output, settings)
    typer.echo(format_table(result.report))
    if result.warnings:
        # Exit 1: the INT8 models miss the accuracy budget. They are still written (with the
        # report) so that the sensitivity ranking and every try can be inspected.
        from ..errors import RuntimeFailure

        raise RuntimeFailure(f"{result.warnings[0]}; models written for inspection, see {result.files['report']}")
