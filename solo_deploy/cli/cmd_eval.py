"""`solo-deploy eval`, `predict` and `info`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Tuple

import typer

from .app import ConfOpt, DeviceOpt, ImgszOpt, LogLevelOpt, app, imgsz_tuple, setup_logging

BackendOpt = typer.Option("auto", "--backend", help="auto, torch, onnxruntime, tensorrt or triton.")


@app.command("eval")
def eval_cmd(
    model: Path = typer.Argument(..., help="Model file: .ckpt, .safetensors, .onnx or .engine."),
    data: str = typer.Option("synthetic", "--data", help="'synthetic' or a COCO-format folder."),
    split: str = typer.Option("val", "--split", help="Synthetic split, or sub-folder of a COCO folder."),
    images: Optional[int] = typer.Option(None, "--images", "-n", min=1, help="Evaluate the first N images only."),
    json_out: Optional[Path] = typer.Option(None, "--json", "-o", "--output", help="Write the metrics as JSON."),
    backend: str = BackendOpt,
    device: str = DeviceOpt,
    batch: int = typer.Option(1, "--batch", min=1),
    imgsz: Optional[Tuple[int, int]] = ImgszOpt,
    log_level: str = LogLevelOpt,
) -> None:
    """COCO mask AP, AP50, AP75, APs/m/l and per-class AP (points, 0-100) through pycocotools."""
    setup_logging(log_level)
    from .._atomic import write_json
    from .._paths import check_outputs
    from ..evaluation.model_eval import evaluate_model

    check_outputs([("--json", json_out)], [("model", model)])

    m = evaluate_model(model, data=data, split=split, images=images, backend=backend, device=device, batch=batch,
                       imgsz=imgsz_tuple(imgsz))
    typer.echo(f"{m['model']} [{m['backend']}/{m['device']}] on {m['data']}:{m['split']} ({m['images']} images, "
               f"{m['seconds']:.1f} s)")
    typer.echo("  ".join(f"{k} {_fmt(m.get(k))}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")))
    for name, ap in (m.get("per_class") or {}).items():
        typer.echo(f"  {name:>12s}  AP {_fmt(ap)}")
    if json_out:
        write_json(json_out, m)
        typer.echo(f"wrote {json_out}")


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, (int, float)) and v < 0) else f"{v:.1f}"


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Model file: .ckpt, .safetensors, .onnx or .engine."),
    source: Path = typer.Option(..., "--source", "-s", help="An image file or a folder of images."),
    output: Path = typer.Option(Path("runs/predict"), "-o", "--output", help="Folder for overlays + predictions.json."),
    conf: Optional[float] = ConfOpt,
    backend: str = BackendOpt,
    device: str = DeviceOpt,
    log_level: str = LogLevelOpt,
) -> None:
    """Segment images; write overlay images and a COCO results JSON."""
    setup_logging(log_level)
    import cv2

    from .._atomic import atomic_path, write_json
    from .._paths import check_folder_output, check_outputs
    from ..errors import BadInputError, RuntimeFailure
    from .._paths import IMAGE_SUFFIXES
    from ..runtime.predictor import Predictor, read_image

    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise BadInputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {source}")
        check_folder_output("--output", output, "--source", source)
    elif source.is_file():
        files = [source]
    else:
        raise BadInputError(f"source not found: {source}")
    overlays = overlay_names(files)
    check_outputs([*((f"overlay of {f.name}", output / overlays[f]) for f in files),
                   ("predictions file", output / "predictions.json")],
                  [*((("--source image"), f) for f in files), ("model", model)])
    pred = Predictor.from_file(model, backend=backend, device=device, conf=conf)
    images, results, skipped = [], [], []
    for idx, f in enumerate(files, start=1):
        try:
            img = read_image(f)
        except BadInputError:
            if len(files) == 1:
                raise
            skipped.append(f.name)
            continue
        inst = pred.predict(img)
        overlay = inst.plot(img)
        with atomic_path(output / overlays[f]) as tmp:
            if not cv2.imwrite(str(tmp), overlay):
                raise RuntimeFailure(f"cannot write overlay {output / overlays[f]}")
        images.append({"id": idx, "file_name": f.name, "height": img.shape[0], "width": img.shape[1]})
        results += inst.to_coco(image_id=idx)
        typer.echo(f"{f.name}: {len(inst)} instances")
    if skipped:
        what = f"{len(skipped)} of {len(files)} files in {source} are not images OpenCV can read"
        if not images:
            raise BadInputError(f"{what}: nothing to predict")
        typer.echo(f"warning: skipped {what}: {', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}",
                   err=True)
    write_json(output / "predictions.json", {"images": images, "categories": [
        {"id": i + 1, "name": n} for i, n in enumerate(pred.class_names)], "annotations": results}, indent=None)
    typer.echo(f"wrote {len(images)} overlays and {output / 'predictions.json'} [{pred.runner.backend}/"
               f"{pred.runner.device}]")


def overlay_names(files: list[Path]) -> dict[Path, str]:
    """Overlay file name per source: ``photo.jpg`` for ``photo.png``; the full name (``photo.png.jpg``)
    where two sources share a stem, so that no overlay replaces another."""
    from collections import Counter

    stems = Counter(f.stem for f in files)
    return {f: f"{f.stem}.jpg" if stems[f.stem] == 1 else f"{f.name}.jpg" for f in files}


# Written against documented APIs but never run on a machine of ours (CI has no GPU, TensorRT or
# Triton server); listed so nobody mistakes them for tested paths.
NEVER_EXECUTED = {
    "tensorrt": "engine build (TensorRT 10 weak typing / 11 strongly typed) and TensorRTRunner",
    "onnxruntime-cuda": "CUDAExecutionProvider sessions (probed at start-up, used only when they work)",
    "torch-cuda": "PyTorch runner and post-processing on CUDA tensors (ran on an H200 outside CI on 2026-11-25: "
                  "gpu tests, eval, bench and run --device cuda)",
    "cupy": "post-processing on CuPy arrays, same array-API code as numpy/torch (gpu tests ran on an H200 outside "
            "CI on 2026-11-25)",
    "triton": "TritonRunner against a live Triton server (the model repository writer is tested)",
}


@app.command()
def info(
    model: Optional[Path] = typer.Argument(None, help="A model file to describe (optional)."),
    presets: bool = typer.Option(False, "--presets", help="List the model presets."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    log_level: str = LogLevelOpt,
) -> None:
    """Versions, which backends and devices really work here, and a model file's metadata."""
    setup_logging(log_level)
    from ..runtime.devices import describe

    out = {"environment": describe(), "never_executed_in_our_ci": NEVER_EXECUTED}
    if presets:
        from ..model.config import PRESETS

        out["presets"] = {k: v.to_dict() for k, v in PRESETS.items()}
    if model is not None:
        out["model"] = describe_model(model)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for section, body in out.items():
        typer.echo(f"[{section}]")
        _print_tree(body, 1)


def describe_model(path: Path) -> dict:
    from .._paths import check_model_path
    from ..runtime.runners import detect_backend

    kind = detect_backend(check_model_path(path))
    if kind == "torch":
        from ..model.modelfile import file_sha256, read_model

        state, meta = read_model(path)
        d = meta.to_dict()
        d["parameters"] = int(sum(v.numel() for v in state.values()))
    elif kind == "onnxruntime":
        from ..runtime.runners import onnx_meta

        d = onnx_meta(path).to_dict()
        from ..model.modelfile import file_sha256
    else:
        from ..export.tensorrt import read_sidecar

        d = read_sidecar(path)
        from ..model.modelfile import file_sha256
    d["file"] = {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path, 16), "kind": kind}
    return d


def _print_tree(body, depth: int) -> None:
    pad = "  " * depth
    if isinstance(body, dict):
        for k, v in body.items():
            if isinstance(v, (dict, list)) and v and not (isinstance(v, list) and all(
                    isinstance(x, (int, float, str)) for x in v)):
                typer.echo(f"{pad}{k}:")
                _print_tree(v, depth + 1)
            else:
                typer.echo(f"{pad}{k}: {v}")
    elif isinstance(body, list):
        for v in body:
            typer.echo(f"{pad}- {v}")
