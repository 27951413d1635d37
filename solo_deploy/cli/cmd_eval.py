"""`solo-deploy eval`: COCO mask AP of any model file."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer

from .app import BackendOpt, DeviceOpt, ImgszOpt, LogLevelOpt, app, imgsz_tuple, setup_logging


@app.command("eval")
def eval_cmd(
    model: Path = typer.Argument(..., help="Model file: .ckpt, .safetensors, .onnx or .engine."),
    data: str = typer.Option("synthetic", "--data", help="'synthetic' or a COCO-format folder (any layout `train` "
                             "takes)."),
    split: str = typer.Option("val", "--split", help="Synthetic split; for a COCO folder train or val (a single "
                              "folder: the two sides of its held-out split)."),
    ann: Optional[Path] = typer.Option(None, "--ann", help="A COCO annotation file to evaluate on (all its images)."),
    images_dir: Optional[Path] = typer.Option(None, "--images-dir", help="Folder of the --ann images."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="A single folder's held-out share (as in train)."),
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
    from ..app.evaluate import evaluate_model

    check_outputs([("--json", json_out)], [("model", model)])

    m = evaluate_model(model, data=data, split=split, images=images, backend=backend, device=device, batch=batch,
                       imgsz=imgsz_tuple(imgsz), ann=ann, images_dir=images_dir, val_fraction=val_fraction)
    typer.echo(f"{m['model']} [{m['backend']}/{m['device']}] on {m['data']}:{m['split']} ({m['images']} images, "
               f"{m['seconds']:.1f} s)")
    typer.echo(f"  data: {m['data_source']}")
    typer.echo("  ".join(f"{k} {_fmt(m.get(k))}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")))
    for name, ap in (m.get("per_class") or {}).items():
        typer.echo(f"  {name:>12s}  AP {_fmt(ap)}")
    if json_out:
        write_json(json_out, m)
        typer.echo(f"wrote {json_out}")


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, (int, float)) and v < 0) else f"{v:.1f}"
