"""`solo-deploy train`: SOLO / SOLOv2 with PyTorch Lightning."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer

from .app import ImgszOpt, LogLevelOpt, app, imgsz_tuple, setup_logging


@app.command()
def train(
    preset: str = typer.Option("solov2-cpu-r18", "--preset", help="Model preset (see `solo-deploy info --presets`)."),
    data: str = typer.Option(
        "synthetic",
        "--data",
        help="'synthetic' or a COCO-format folder (annotations.json + images/, or train/ and val/ sub-folders).",
    ),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs (recipe default otherwise)."),
    output: Path = typer.Option(Path("runs/train"), "-o", "--output", help="Run folder."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="YAML recipe (default: the preset's own)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "--batch", min=1),
    imgsz: Optional[Tuple[int, int]] = ImgszOpt,
    lr: Optional[float] = typer.Option(None, "--lr"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop after this many optimiser steps."),
    train_images: Optional[int] = typer.Option(
        None, "--train-images", min=1, help="Use only the first N training images."
    ),
    val_images: Optional[int] = typer.Option(
        None, "--val-images", min=1, help="Validate on the first N validation images."
    ),
    devices: str = typer.Option("auto", "--devices", help="Lightning devices (e.g. 1, 2, auto)."),
    accelerator: str = typer.Option("auto", "--accelerator", help="cpu, gpu or auto."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Lightning precision, e.g. 32-true, 16-mixed."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Data-loader worker processes."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Resume from a training checkpoint (.ckpt)."),
    from_model: Optional[Path] = typer.Option(
        None, "--from", help="Fine-tune from a model file (class layers are re-initialised when the classes differ)."
    ),
    backbone_weights: Optional[Path] = typer.Option(None, "--backbone-weights", help="Local ResNet weights file."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    log_level: str = LogLevelOpt,
) -> None:
    """Train SOLO / SOLOv2 with PyTorch Lightning; writes checkpoints, logs, curves and model.safetensors."""
    setup_logging(log_level)
    from .._paths import check_model_path, check_outputs
    from ..errors import BadInputError
    from ..training.train import TrainRequest
    from ..training.train import train as run_train

    if data != "synthetic" and not Path(data).exists():
        raise BadInputError(f"data folder not found: {data}")
    if resume is not None and not resume.is_file():
        raise BadInputError(f"checkpoint to resume not found: {resume}")
    if from_model is not None:
        check_model_path(from_model)
        # --resume may point into the run folder (that is how a run continues); --from may not.
        check_outputs([(f"run file {n}", output / n) for n in ("model.safetensors", "checkpoints/last.ckpt",
                                                               "checkpoints/best.ckpt")], [("--from", from_model)])
    size = imgsz_tuple(imgsz)
    overrides = (("epochs", epochs), ("batch_size", batch_size), ("imgsz", list(size) if size else None), ("lr", lr),
                 ("max_steps", max_steps), ("train_images", train_images), ("val_images", val_images),
                 ("precision", precision), ("num_workers", workers))
    run = run_train(TrainRequest(preset=preset, data=data, output=str(output), recipe=str(recipe) if recipe else None,
                                 overrides=overrides, resume=str(resume) if resume else None,
                                 from_model=str(from_model) if from_model else None,
                                 backbone_weights=str(backbone_weights) if backbone_weights else None,
                                 devices=devices, accelerator=accelerator, progress=progress))
    typer.echo(f"run folder: {run}")
    for name in ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "model.safetensors", "curves.png"):
        if (run / name).exists():
            typer.echo(f"  {name}")
