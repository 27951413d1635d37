"""`solo-deploy train`: SOLO / SOLOv2 with PyTorch Lightning."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer

from ..limits import check_checkpoint_size
from .app import ImgszOpt, LogLevelOpt, app, imgsz_tuple, setup_logging


@app.command()
def train(
    preset: str = typer.Option("solov2-cpu-r18", "--preset", help="Model preset (see `solo-deploy info --presets`)."),
    data: str = typer.Option(
        "synthetic",
        "--data",
        help="'synthetic' or a COCO-format folder: the standard layout (annotations/instances_train*.json and "
        "instances_val*.json), train/ and val/ sub-folders, or one folder (a held-out split, --val-fraction).",
    ),
    train_ann: Optional[Path] = typer.Option(None, "--train-ann", help="Training annotation file (COCO JSON)."),
    train_dir: Optional[Path] = typer.Option(None, "--train-dir", help="Folder of the --train-ann images."),
    val_ann: Optional[Path] = typer.Option(None, "--val-ann", help="Validation annotation file (COCO JSON)."),
    val_dir: Optional[Path] = typer.Option(None, "--val-dir", help="Folder of the --val-ann images."),
    val_fraction: float = typer.Option(
        0.1, "--val-fraction", help="Share of a single COCO folder's images held out for validation (by image id)."
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
    strategy: str = typer.Option("auto", "--strategy", help="Lightning strategy: auto, ddp, ddp_spawn, fsdp, ..."),
    num_nodes: int = typer.Option(1, "--num-nodes", min=1, help="Machines taking part (Lightning num_nodes)."),
    max_time: Optional[str] = typer.Option(
        None, "--max-time", help="Wall-clock budget HH:MM:SS (or DD:HH:MM:SS; 'off' for none): the run stops "
        "there and the learning-rate schedule follows it. Default: the recipe's, unless --epochs or --max-steps."
    ),
    precision: Optional[str] = typer.Option(None, "--precision", help="Lightning precision, e.g. 32-true, 16-mixed."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Data-loader worker processes."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Resume from a training checkpoint (.ckpt)."),
    from_model: Optional[Path] = typer.Option(
        None, "--from", help="Fine-tune from a model file (class layers are re-initialised when the classes differ)."
    ),
    backbone_weights: Optional[Path] = typer.Option(None, "--backbone-weights", help="Local ResNet weights file."),
    progress: Optional[bool] = typer.Option(
        None, "--progress/--no-progress", help="The epoch bar on stderr (default: when stderr is a terminal)."
    ),
    log_level: str = LogLevelOpt,
) -> None:
    """Train SOLO / SOLOv2 with PyTorch Lightning; writes checkpoints, logs, curves and model.safetensors."""
    setup_logging(log_level)
    from .._paths import check_model_path, check_outputs
    from ..errors import BadInputError
    from ..training.train import TrainRequest, parse_duration, summary_lines
    from ..training.train import train as run_train

    if data != "synthetic" and not Path(data).exists():
        raise BadInputError(f"data folder not found: {data}")
    if not 0.0 < val_fraction < 1.0:
        raise BadInputError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if max_time is not None and max_time.strip().lower() not in ("off", "none"):
        parse_duration(max_time)  # a bad value is a usage error before anything loads
    if resume is not None and not resume.is_file():
        raise BadInputError(f"checkpoint to resume not found: {resume}")
    if resume is not None:
        check_checkpoint_size(resume)  # Lightning's torch.load would inflate it unchecked
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
                                 devices=devices, accelerator=accelerator, progress=progress, strategy=strategy,
                                 num_nodes=num_nodes, max_time=max_time, val_fraction=val_fraction, echo=typer.echo,
                                 files=tuple((k, str(v) if v is not None else None) for k, v in (
                                     ("train_ann", train_ann), ("train_dir", train_dir), ("val_ann", val_ann),
                                     ("val_dir", val_dir)))))
    typer.echo(f"run folder: {run}")
    for name in ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "model.safetensors", "curves.png"):
        if (run / name).exists():
            typer.echo(f"  {name}")
    # Under DDP every rank runs this command; only global rank 0 wrote the summary (and the model file).
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0:
        for line in summary_lines(run):
            typer.echo(line)
