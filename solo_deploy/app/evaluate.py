"""Evaluate any model file (every backend) on the synthetic splits or a COCO folder: COCO mask AP
through the same runners and post-processing as deployment."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._progress import progress_bar
from ..data.splits import VAL_FRACTION, open_split, split_side
from ..errors import BadInputError
from ..evaluation.coco_eval import evaluate
from ..runtime.inference import detections_to_results
from ..runtime.predictor import Predictor
from .models import load, use_input_size

__all__ = ["evaluate_model"]


def evaluate_model(model: str | Path, data: str = "synthetic", split: str = "val", images: int | None = None,
                   backend: str = "auto", device: str = "cpu", batch: int = 1, imgsz: tuple[int, int] | None = None,
                   runner=None, progress: Callable[[int, int], None] | None = None, ann: str | Path | None = None,
                   images_dir: str | Path | None = None, val_fraction: float = VAL_FRACTION) -> dict[str, Any]:
    """COCO mask AP (points 0..100) of ``model`` through ``backend``; returns the metrics and run facts.

    The data: ``data``'s ``split`` (see ``data.splits.open_split``), or the annotation file ``ann``
    with its images in ``images_dir``."""
    ds, gt, class_names, cat_ids = open_split(data, split, images, ann=ann, images_dir=images_dir,
                                              val_fraction=val_fraction)
    side = split_side(data, split, ann=ann, images_dir=images_dir, val_fraction=val_fraction)
    if runner is not None:
        if imgsz is not None:
            use_input_size(runner, imgsz, str(model))
        pred = Predictor(runner)
    else:
        # --imgsz: a PyTorch file on a CPU runs through its cached export at that size (see load).
        pred = load(model, backend=backend, device=device, imgsz=imgsz)
    meta = pred.meta
    if len(class_names) != len(meta.class_names):
        raise BadInputError(f"the model knows {len(meta.class_names)} classes ({', '.join(meta.class_names)}) but the "
                            f"data set has {len(class_names)} ({', '.join(class_names)})")
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    n = len(ds)
    # The bar (a terminal only) closes on an error too, so a one-line error starts on a line of its own.
    with progress_bar(n, desc=f"eval {Path(model).name}") as bar:
        for start in range(0, n, batch):
            samples = [ds[i] for i in range(start, min(n, start + batch))]
            for idx in meta.preprocess.size_groups([s.image_bgr.shape[:2] for s in samples]):
                group = [samples[i] for i in idx]
                imgs, lbs = pred.preprocess([s.image_bgr for s in group])
                scores, kernels, feats = pred.runner(imgs)
                results += detections_to_results(meta, scores, kernels, feats, lbs, [s.image_id for s in group],
                                                 cat_ids)
            bar.update(len(samples))
            if progress:
                progress(min(n, start + batch), n)
    seconds = time.perf_counter() - t0
    metrics = evaluate(gt, results, class_names=class_names)
    metrics.update({"model": str(model), "backend": pred.runner.backend, "device": pred.runner.device,
                    "data": str(ann) if ann is not None else data, "split": "-" if ann is not None else split,
                    "images": n, "data_source": side.how if side is not None else f"synthetic {split} split",
                    "seconds": round(seconds, 3),
                    "input_hw": list(meta.preprocess.input_hw)})
    return metrics

