"""`solo-deploy train` and `solo-deploy data synthetic`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer

from .app import ImgszOpt, LogLevelOpt, PositiveFinite, app, imgsz_tuple, setup_logging

data_app = typer.Typer(help="Data sets: write the built-in synthetic data as COCO files or a video.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.command()
def train(
    preset: str = typer.Option("solov2-cpu-r18", "--preset", help="Model preset (see `solo-deploy info --presets`)."),
    data: str = typer.Option("synthetic", "--data", help="'synthetic' or a COCO-format folder (annotations.json + "
                             "images/, or train/ and val/ sub-folders)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs (recipe default otherwise)."),
    output: Path = typer.Option(Path("runs/train"), "-o", "--output", help="Run folder."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="YAML recipe (default: the preset's own)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "--batch", min=1),
    imgsz: Optional[Tuple[int, int]] = ImgszOpt,
    lr: Optional[float] = typer.Option(None, "--lr"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop after this many optimiser steps."),
    train_images: Optional[int] = typer.Option(None, "--train-images", min=1, help="Use only the first N training images."),
    val_images: Optional[int] = typer.Option(None, "--val-images", min=1, help="Validate on the first N validation images."),
    devices: str = typer.Option("auto", "--devices", help="Lightning devices (e.g. 1, 2, auto)."),
    accelerator: str = typer.Option("auto", "--accelerator", help="cpu, gpu or auto."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Lightning precision, e.g. 32-true, 16-mixed."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Data-loader worker processes."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Resume from a training checkpoint (.ckpt)."),
    from_model: Optional[Path] = typer.Option(None, "--from", help="Fine-tune from a model file (class layers are "
                                              "re-initialised when the classes differ)."),
    backbone_weights: Optional[Path] = typer.Option(None, "--backbone-weights", help="Local ResNet weights file."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    log_level: str = LogLevelOpt,
) -> None:
    """Train SOLO / SOLOv2 with PyTorch Lightning; writes checkpoints, logs, curves and model.safetensors."""
    setup_logging(log_level)
    from .._paths import check_model_path, check_outputs
    from ..errors import BadInputError
    from ..training.train import TrainRequest, train as run_train

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


@data_app.command("synthetic")
def data_synthetic(
    output: Path = typer.Option(..., "-o", "--output", help="Output folder (images/ + annotations.json) or, with "
                                "--video, the video file (.mp4 or .avi)."),
    images: int = typer.Option(100, "--images", "-n", min=1, help="Number of images (video frames with --video)."),
    imgsz: Optional[Tuple[int, int]] = ImgszOpt,
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed (default: the val split's pinned seed)."),
    split: str = typer.Option("val", "--split", help="Named split whose seed to use: train, val, calib, demo."),
    video: bool = typer.Option(False, "--video", help="Write a video with moving objects and per-frame COCO GT."),
    fps: float = typer.Option(30.0, "--fps", help="Frame rate of --video (a positive number).", callback=PositiveFinite),
    log_level: str = LogLevelOpt,
) -> None:
    """Write the built-in synthetic data set in COCO format (or as a video)."""
    setup_logging(log_level)
    from dataclasses import replace

    from ..data.synthetic import SPLITS, SyntheticConfig, write_coco, write_video
    from ..errors import BadInputError

    if images < 1:
        raise BadInputError(f"--images must be at least 1, got {images}")
    cfg = SyntheticConfig()
    size = imgsz_tuple(imgsz)
    if size:
        cfg = replace(cfg, image_hw=size)
    if split not in SPLITS:
        raise BadInputError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    the_seed = seed if seed is not None else SPLITS[split].seed
    if video:
        if output.suffix.lower() not in (".mp4", ".avi"):
            raise BadInputError(f"--video output must end in .mp4 or .avi, got {output}")
        path, gt = write_video(output, images, the_seed, cfg, fps=fps)
        typer.echo(f"wrote {path} ({images} frames) and its ground truth {gt}")
    else:
        path = write_coco(output, the_seed, images, cfg)
        typer.echo(f"wrote {images} images and {path}")
