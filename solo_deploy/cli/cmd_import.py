"""`solo-deploy import`: SOLO / SOLOv2 checkpoints trained with mmdetection (and older code bases)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer

from .._lazy import lazy_import
from .app import LogLevelOpt, app, setup_logging

importer = lazy_import("solo_deploy.importing.importer")  # torch and the model code load on first use


@app.command("import")
def import_cmd(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pth / .pt / .ckpt) of an mmdetection SOLO or SOLOv2 "
                                      "model (also WXinlong/SOLO and AdelaiDet SOLOv2)."),
    output: Path = typer.Option(..., "-o", "--output", help="Model file to write (.safetensors)."),
    source_format: str = typer.Option("auto", "--source-format", help="auto (from the keys), mmdet, wxinlong or "
                                      "adelaidet."),
    class_names: Optional[Path] = typer.Option(None, "--class-names", help="Text file, one class name per line "
                                               "(default: the checkpoint's, else COCO's 80)."),
    test_scale: Optional[Tuple[int, int]] = typer.Option(None, "--test-scale", help="Keep-ratio test resize as "
                                                         "LONG SHORT (default: the checkpoint's config, else "
                                                         "mmdetection's 1333 800, or 768 448 for light models).",
                                                         show_default=False),
    log_level: str = LogLevelOpt,
) -> None:
    """Import a SOLO / SOLOv2 checkpoint trained elsewhere into a model file (mmdetection's test settings kept)."""
    setup_logging(log_level)
    result = importer.import_checkpoint(checkpoint, output, source_format=source_format, class_names=class_names,
                               test_scale=tuple(test_scale) if test_scale else None)
    typer.echo(result.summary())
