"""`solo-deploy predict`: overlays and a COCO results file for images."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from .._paths import (
    IMAGE_SUFFIXES,
    check_folder_output,
    check_outputs,
    check_reused_folder,
    claim_folder,
    numbered_folder,
)
from .._version import __version__
from .app import (
    BackendOpt,
    ClassesOpt,
    ConfOpt,
    DeviceOpt,
    ImgszOpt,
    LogLevelOpt,
    TritonUrlOpt,
    app,
    imgsz_tuple,
    setup_logging,
)

# Ultralytics' layout: each call without -o gets runs/predict, runs/predict2, ...
DEFAULT_OUTPUT = Path("runs/predict")
PREDICTIONS_SCHEMA_VERSION = 1  # solo_deploy/assets/schemas/predictions.schema.json


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Model file: .ckpt, .safetensors, .onnx or .engine."),
    source: Path = typer.Option(..., "--source", "-s", help="An image file or a folder of images."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Folder for overlays + predictions.json "
                                          "[default: a new runs/predict, runs/predict2, ...]", show_default=False),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Write into an -o folder that already holds files."),
    conf: Optional[float] = ConfOpt,
    classes: Optional[List[str]] = ClassesOpt,
    imgsz: Optional[Tuple[int, int]] = ImgszOpt,
    batch: int = typer.Option(1, "--batch", min=1, help="Images per network call."),
    backend: str = BackendOpt,
    device: str = DeviceOpt,
    triton_url: str = TritonUrlOpt,
    log_level: str = LogLevelOpt,
) -> None:
    """Segment images; write overlay images and a COCO results JSON (schema:
    solo_deploy/assets/schemas/predictions.schema.json)."""
    setup_logging(log_level)
    import cv2

    from .._atomic import atomic_path, write_json
    from .._progress import progress_bar
    from ..app.models import load
    from ..errors import BadInputError, RuntimeFailure
    from ..runtime.predictor import check_conf, class_filter, read_image

    check_conf(conf)
    size = imgsz_tuple(imgsz)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise BadInputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder {source}")
    elif source.is_file():
        files = [source]
    else:
        raise BadInputError(f"source not found: {source}")
    numbered_from = None
    if output is None:
        numbered_from, output = DEFAULT_OUTPUT, numbered_folder(DEFAULT_OUTPUT)
    if source.is_dir():
        check_folder_output("--output", output, "--source", source)
    overlays = overlay_names(files)
    check_outputs([*((f"overlay of {f.name}", output / overlays[f]) for f in files),
                   ("predictions file", output / "predictions.json")],
                  [*((("--source image"), f) for f in files), ("model", model)])
    if numbered_from is None:  # after the checks above: an input in the folder is the sharper message
        check_reused_folder("-o", output, exist_ok)
    pred = load(model, backend=backend, device=device, conf=conf, imgsz=size,
                **({"url": triton_url} if backend == "triton" else {}))
    pred.classes = class_filter(classes, pred.class_names, pred.meta.category_ids)
    created = not output.exists()
    output = claim_folder(output, numbered_from)
    images, results, skipped = [], [], []
    bar = progress_bar(len(files), "predict")
    try:
        for start in range(0, len(files), batch):
            chunk = []
            for idx, f in enumerate(files[start:start + batch], start=start + 1):
                try:
                    chunk.append((idx, f, read_image(f)))
                except BadInputError as exc:
                    if len(files) == 1:
                        raise
                    skipped.append(str(exc))  # names the file and why (undecodable, over a limit)
            found = pred.predict_batch([img for _, _, img in chunk]) if chunk else []
            for (idx, f, img), inst in zip(chunk, found):
                overlay = inst.plot(img)
                with atomic_path(output / overlays[f]) as tmp:
                    if not cv2.imwrite(str(tmp), overlay):
                        raise RuntimeFailure(f"cannot write overlay {output / overlays[f]}")
                images.append({"id": idx, "file_name": f.name, "height": img.shape[0], "width": img.shape[1]})
                results += inst.to_coco(image_id=idx)
                bar.write(f"{f.name}: {len(inst)} instances", file=sys.stdout)
            bar.update(min(batch, len(files) - start))
    except BaseException:
        _remove_if_empty(output, created)
        raise
    finally:
        bar.close()
    if skipped:
        what = f"{len(skipped)} of {len(files)} files in {source} cannot be used"
        if not images:
            _remove_if_empty(output, created)
            raise BadInputError(f"{what}: nothing to predict ({skipped[0]})")
        more = f"; {len(skipped) - 1} more" if len(skipped) > 1 else ""
        typer.echo(f"warning: skipped {what}: {skipped[0]}{more}", err=True)
    info = {"format": "solo-deploy-predictions", "schema_version": PREDICTIONS_SCHEMA_VERSION,
            "solo_deploy_version": __version__, "model": str(model)}
    write_json(output / "predictions.json", {"info": info, "images": images, "categories": [
        {"id": c, "name": n} for c, n in zip(pred.meta.cat_ids, pred.class_names)], "annotations": results},
        indent=None)
    h, w = pred.meta.preprocess.input_hw
    typer.echo(f"wrote {len(images)} overlays and {output / 'predictions.json'} [{pred.runner.backend}/"
               f"{pred.runner.device}] at input {h}x{w}")


def _remove_if_empty(folder: Path, created: bool) -> None:
    """A folder this call created and wrote nothing into goes again (the next call keeps its number)."""
    if created:
        try:
            folder.rmdir()  # only succeeds while empty
        except OSError:
            pass


def overlay_names(files: list[Path]) -> dict[Path, str]:
    """Overlay file name per source: ``photo.jpg`` for ``photo.png``; the full name (``photo.png.jpg``)
    where two sources share a stem, so that no overlay replaces another."""
    from collections import Counter

    stems = Counter(f.stem for f in files)
    return {f: f"{f.stem}.jpg" if stems[f.stem] == 1 else f"{f.name}.jpg" for f in files}
