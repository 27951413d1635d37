"""`solo-deploy export`: ONNX files, TensorRT engines and Triton model repositories."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional, Tuple

import typer

from .app import DeviceOpt, ImgszOpt, LogLevelOpt, app, imgsz_tuple, setup_logging

FORMATS = ("onnx", "engine", "triton")
PRECISIONS = ("fp32", "fp16", "int8")
MODEL_SUFFIXES = (".ckpt", ".safetensors")


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
    device: Optional[str] = typer.Option(None, "--device", help="GPU that builds a TensorRT engine: cuda, cuda:N "
                                         "or N (default cuda:0; ONNX export and its parity check run on the CPU).",
                                         callback=DeviceOpt.callback, show_default=False),
    log_level: str = LogLevelOpt,
) -> None:
    """Export a model to ONNX (checked, simplified, parity-tested), a TensorRT engine or a Triton repository."""
    setup_logging(log_level)
    from .._paths import check_model_path, check_outputs
    from ..errors import BadInputError

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise BadInputError(f"unknown --format {fmt!r}: choose onnx, engine or triton")
    given_precision = precision.lower() if precision else None
    precision = given_precision or ("fp16" if half else "fp32")
    if precision not in PRECISIONS:
        raise BadInputError(f"unknown --precision {precision!r}: choose fp32, fp16 or int8")
    if half and precision != "fp16":
        raise BadInputError(f"--half and --precision {precision} contradict each other")
    half = half or precision == "fp16"
    if (max_batch is not None and max_batch < 1) or batch < 1:
        raise BadInputError("--batch and --max-batch must be at least 1")
    suffix = model.suffix.lower()
    size = imgsz_tuple(imgsz)
    check_model_path(model)
    if fmt == "triton":
        from ..export.triton import model_name

        name = model_name(name, model)
        if model.resolve().is_relative_to((output / name).resolve()):
            raise BadInputError(f"model {model} is inside the Triton model folder {output / name}, which the export "
                                f"replaces: move it, or pick another --name or --output")
    check_outputs(export_outputs(fmt, output, name or model.stem), [("model", model)])

    def export_to(path: Path):
        from ..export.onnx_export import export_onnx

        if suffix not in MODEL_SUFFIXES:
            raise BadInputError(f"export needs a .ckpt or .safetensors model, got {model.name}")
        return export_onnx(model, path, imgsz=size, batch=batch, dynamic=dynamic, opset=opset, half=half,
                           check_parity=not no_parity, tolerance=tolerance)

    if fmt == "onnx":
        if precision == "int8":
            raise BadInputError("INT8 ONNX models come from calibration (Q/DQ nodes), not from export: "
                                "export FP32 first, then calibrate")
        if suffix == ".onnx":
            raise BadInputError(f"{model.name} is already an ONNX model: use --format engine or triton with it")
        result = export_to(output)
        typer.echo(result.summary())
        return

    if fmt == "engine":
        from ..export.tensorrt import build_engine, import_tensorrt
        from ..runtime.devices import device_index

        device = device or "cuda:0"
        if not device.startswith("cuda"):
            raise BadInputError("TensorRT builds engines on a GPU: pass --device cuda (or cuda:N, or N)")
        import_tensorrt()  # fail fast, before a possibly long export
        with tempfile.TemporaryDirectory(prefix="solo-deploy-engine-") as tmp:
            if suffix == ".onnx":
                onnx_path = model
                precision_for_build = given_precision  # None: what the ONNX carries
            else:
                precision_for_build = precision
                exported = export_to(Path(tmp) / "model.onnx")
                typer.echo(exported.summary())
                onnx_path = exported.path
            built = build_engine(onnx_path, output, precision=precision_for_build, max_batch=max_batch or 8,
                                 workspace_gib=workspace, timing_cache=timing_cache,
                                 calibration_cache=calibration_cache, device=device_index(device))
        typer.echo(built.summary())
        return

    # fmt == "triton"
    from ..export.triton import parse_pbtxt, write_triton_repo

    with tempfile.TemporaryDirectory(prefix="solo-deploy-triton-") as tmp:
        if suffix in (".onnx", ".engine", ".plan"):
            source = model
        else:
            exported = export_to(Path(tmp) / f"{model.stem}.onnx")
            typer.echo(exported.summary())
            source = exported.path
        folder = write_triton_repo(source, output, name or model.stem, max_batch_size=max_batch)
    cfg = parse_pbtxt((folder / "config.pbtxt").read_text(encoding="utf-8"))
    typer.echo(f"wrote Triton model {cfg['name']!r} in {folder} ({cfg['platform']}, max_batch_size "
               f"{cfg['max_batch_size']}{', dynamic batching' if 'dynamic_batching' in cfg else ''})")
    if int(cfg["max_batch_size"]) == 0:
        typer.echo("note: static batch; export with --dynamic to let Triton batch requests")


def export_outputs(fmt: str, output: Path, name: str) -> list[tuple[str, Path]]:
    """What an export writes, as (what, path) pairs: the file (and an engine's JSON sidecar), or
    the Triton model folder's files."""
    if fmt == "engine":
        return [("--output", output), ("engine sidecar", output.with_name(output.name + ".json"))]
    if fmt == "triton":
        folder = output / name
        return [("Triton model file", folder / "1" / f) for f in ("model.onnx", "model.plan")] + [
            ("Triton config", folder / "config.pbtxt")]
    return [("--output", output)]
