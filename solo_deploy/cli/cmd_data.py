"""`solo-deploy data synthetic`: the built-in synthetic data as COCO files or a video."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer

from .app import ImgszOpt, LogLevelOpt, PositiveFinite, app, imgsz_tuple, setup_logging

data_app = typer.Typer(help="Data sets: write the built-in synthetic data as COCO files or a video.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("synthetic")
def data_synthetic(
    output: Path = typer.Option(
        ...,
        "-o",
        "--output",
        help="Output folder (images/ + annotations.json) or, with --video, the video file (.mp4 or .avi).",
    ),
    images: int = typer.Option(100, "--images", "-n", min=1, help="Number of images (video frames with --video)."),
    imgsz: Optional[Tuple[int, int]] = ImgszOpt,
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed (default: the val split's pinned seed)."),
    split: str = typer.Option("val", "--split", help="Named split whose seed to use: train, val, calib, demo."),
    video: bool = typer.Option(False, "--video", help="Write a video with moving objects and per-frame COCO GT."),
    fps: float = typer.Option(
        30.0, "--fps", help="Frame rate of --video (a positive number).", callback=PositiveFinite
    ),
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
