"""COCO mask evaluation (pycocotools, iouType="segm") on in-memory ground truth and results.

Metrics are in COCO points (0..100). A metric pycocotools reports as -1 (nothing to evaluate:
no ground truth in that area range, or a class without ground truth) is returned as ``None``.
"""
from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._lazy import lazy_import
from ..core.instances import detections_to_coco, encode_masks, masks_to_boxes
from ..errors import BadInputError

mask_utils = lazy_import("pycocotools.mask")
pycoco = lazy_import("pycocotools.coco")
cocoeval = lazy_import("pycocotools.cocoeval")

__all__ = ["SUMMARY_KEYS", "detections_to_coco", "encode_masks", "evaluate", "masks_to_boxes"]

# The first six COCOeval.stats entries, in order.
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _load_gt(gt: dict[str, Any] | str | Path) -> Any:
    if isinstance(gt, (str, Path)):
        try:
            gt = json.loads(Path(gt).read_text())
        except (OSError, ValueError) as exc:
            raise BadInputError(f"cannot read COCO annotations {gt}: {exc}") from exc
    if not isinstance(gt, dict) or not all(k in gt for k in ("images", "annotations", "categories")):
        raise BadInputError("COCO ground truth needs 'images', 'annotations' and 'categories'")
    # Shallow copies: COCOeval writes "ignore" into annotation dicts, and we may fill "area" /
    # "iscrowd", which the caller's dict must not see. "info"/"licenses" are not needed.
    images = {img["id"]: img for img in gt["images"]}
    anns = []
    for ann in gt["annotations"]:
        ann = dict(ann)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:  # COCOeval sorts GT into area ranges by this field
            img = images[ann["image_id"]]
            seg = ann["segmentation"]
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, img["height"], img["width"]))
            elif isinstance(seg.get("counts"), list):
                rle = mask_utils.frPyObjects(seg, img["height"], img["width"])
            else:
                rle = seg
            ann["area"] = float(mask_utils.area(rle))
        anns.append(ann)
    coco = pycoco.COCO()
    coco.dataset = {**gt, "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _points(v: float) -> float | None:
    return None if v < 0 else float(v) * 100.0


def evaluate(
    gt: dict[str, Any] | str | Path,
    results: list[dict[str, Any]],
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """COCO segm metrics of ``results`` (COCO results format) against ``gt`` (dict or JSON path).

    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl"}`` in points 0..100 (``None`` where
    pycocotools reports -1) and ``"per_class": {name: AP or None}``: AP@[.5:.95], all areas,
    100 detections, from the precision array (equal to COCOeval restricted to that class).
    ``class_names`` are matched to the GT categories sorted by id (default: their "name").
    Empty ``results`` evaluate to 0 wherever ground truth exists. As in pycocotools' loadRes, a
    result with a "bbox" gets the box area as its area (used only to ignore unmatched
    detections outside an area range).
    """
    coco_gt = _load_gt(gt)
    cat_ids = sorted(coco_gt.getCatIds())
    if class_names is None:
        names = [str(coco_gt.cats[c].get("name", c)) for c in cat_ids]
    else:
        names = [str(n) for n in class_names]
        if len(names) != len(cat_ids):
            raise BadInputError(f"{len(names)} class names for {len(cat_ids)} ground-truth categories")
    if not isinstance(results, list):
        raise BadInputError("results must be a list of COCO result dicts")
    unknown_imgs = {r.get("image_id") for r in results} - set(coco_gt.getImgIds())
    if unknown_imgs:
        raise BadInputError(f"results refer to images not in the ground truth: {sorted(unknown_imgs, key=str)[:5]}")
    unknown_cats = {r.get("category_id") for r in results} - set(cat_ids)
    if unknown_cats:
        raise BadInputError(f"results refer to unknown category ids: {sorted(unknown_cats, key=str)[:5]}")

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and tables
        if results:
            coco_dt = coco_gt.loadRes([dict(r) for r in results])  # loadRes writes into the dicts
        else:
            # loadRes indexes results[0]; an empty result set is a valid COCO object anyway.
            coco_dt = pycoco.COCO()
            coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                               "categories": list(coco_gt.dataset["categories"]), "annotations": []}
            coco_dt.createIndex()
        ev = cocoeval.COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()

    out: dict[str, Any] = {key: _points(v) for key, v in zip(SUMMARY_KEYS, ev.stats[:6])}
    # precision: (T iou thresholds, R recall points, K classes, A areas, M maxDets); area "all" is
    # index 0 and maxDets=100 the last, as in COCOeval.summarize for "AP".
    precision = ev.eval["precision"]
    per_class: dict[str, float | None] = {}
    for k, name in enumerate(names):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[name] = float(np.mean(p)) * 100.0 if p.size else None
    out["per_class"] = per_class
    return out
