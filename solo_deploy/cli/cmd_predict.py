"""`solo-deploy predict`: overlays and a COCO results file for images."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .app import BackendOpt, ClassesOpt, ConfOpt, DeviceOpt, LogLevelOpt, app, setup_logging


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Model file: .ckpt, .safetensors, .onnx or .engine."),
    source: Path = typer.Option(..., "--source", "-s", help="An image file or a folder of images."),
    output: Path = typer.Option(Path("runs/predict"), "-o", "--output", help="Folder for overlays + predictions.json."),
    conf: Optional[float] = ConfOpt,
    classes: Optional[List[str]] = ClassesOpt,
    backend: str = BackendOpt,
    device: str = DeviceOpt,
    log_level: str = LogLevelOpt,
) -> None:
    """Segment images; write overlay images and a COCO results JSON."""
    setup_logging(log_level)
    import cv2

    from .._atomic import atomic_path, write_json
    from .._paths import IMAGE_SUFFIXES, check_folder_output, check_outputs
    from ..app.models import load
    from ..errors import BadInputError, RuntimeFailure
    from ..runtime.predictor import class_filter, read_image

    if conf is not None and not 0.0 <= conf <= 1.0:
        raise BadInputError(f"--conf must be within [0, 1], got {conf}")
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
    pred = load(model, backend=backend, device=device, conf=conf)
    pred.classes = class_filter(classes, pred.class_names)
    images, results, skipped = [], [], []
    for idx, f in enumerate(files, start=1):
        try:
            img = read_image(f)
        except BadInputError as exc:
            if len(files) == 1:
                raise
            skipped.append(str(exc))  # names the file and why (undecodable, over a limit)
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
        what = f"{len(skipped)} of {len(files)} files in {source} cannot be used"
        if not images:
            raise BadInputError(f"{what}: nothing to predict ({skipped[0]})")
        more = f"; {len(skipped) - 1} more" if len(skipped) > 1 else ""
        typer.echo(f"warning: skipped {what}: {skipped[0]}{more}", err=True)
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
