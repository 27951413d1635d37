"""Evaluate any model file (every backend) on the synthetic splits or a COCO folder."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInputError


def load_eval_data(data: str, split: str = "val", images: int | None = None):
    """-> (dataset of Samples, GT COCO dict, class names, cat_ids)."""
    if data == "synthetic":
        from ..data.synthetic import SPLITS, SyntheticConfig, SyntheticDataset, synthetic_coco_dict

        if split not in SPLITS:
            raise BadInputError(f"unknown synthetic split {split!r}: choose one of {', '.join(SPLITS)}")
        cfg = SyntheticConfig()
        ds = SyntheticDataset(split, cfg, count=images)
        gt = synthetic_coco_dict(split, count=images, cfg=cfg)
        return ds, gt, list(cfg.class_names), list(range(1, len(cfg.class_names) + 1))
    from ..data.coco import CocoDataset

    root = Path(data)
    if not root.exists():
        raise BadInputError(f"data folder not found: {root}")
    if (root / split).is_dir():
        root = root / split
    ds = CocoDataset(root)
    if images is not None:
        ds = ds.take(images)
    return ds, ds.coco_dict, list(ds.class_names), list(ds.cat_ids)


def evaluate_model(model: str | Path, data: str = "synthetic", split: str = "val", images: int | None = None,
                   backend: str = "auto", device: str = "cpu", batch: int = 1, imgsz: tuple[int, int] | None = None,
                   runner=None, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """COCO mask AP (points 0..100) of ``model`` through ``backend``; returns the metrics and run facts."""
    from ..runtime.inference import detections_to_results
    from ..runtime.predictor import Predictor
    from .coco_eval import evaluate

    ds, gt, class_names, cat_ids = load_eval_data(data, split, images)
    pred = Predictor(runner) if runner is not None else Predictor.from_file(model, backend=backend, device=device)
    meta = pred.meta
    if imgsz is not None and tuple(imgsz) != tuple(meta.preprocess.input_hw):
        if pred.runner.backend != "torch":
            raise BadInputError(f"--imgsz works with the torch backend; {pred.runner.backend} models have a fixed size "
                                f"(re-export with --imgsz or --dynamic)")
        meta = replace(meta, preprocess=meta.preprocess.with_size(imgsz))
        pred.runner.meta = meta
        pred.meta = meta
    if len(class_names) != len(meta.class_names):
        raise BadInputError(f"the model knows {len(meta.class_names)} classes ({', '.join(meta.class_names)}) but the "
                            f"data set has {len(class_names)} ({', '.join(class_names)})")
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    n = len(ds)
    for start in range(0, n, batch):
        samples = [ds[i] for i in range(start, min(n, start + batch))]
        imgs, lbs = pred.preprocess([s.image_bgr for s in samples])
        scores, kernels, feats = pred.runner(imgs)
        results += detections_to_results(meta, scores, kernels, feats, lbs, [s.image_id for s in samples], cat_ids)
        if progress:
            progress(min(n, start + batch), n)
    seconds = time.perf_counter() - t0
    metrics = evaluate(gt, results, class_names=class_names)
    metrics.update({"model": str(model), "backend": pred.runner.backend, "device": pred.runner.device,
                    "data": data, "split": split, "images": n, "seconds": round(seconds, 3),
                    "input_hw": list(meta.preprocess.input_hw)})
    return metrics
