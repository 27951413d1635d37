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

from ..errors import BadInputError

__all__ = ["SUMMARY_KEYS", "detections_to_coco", "encode_masks", "evaluate", "masks_to_boxes"]

# The first six COCOeval.stats entries, in order.
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """bool (K, H, W) -> float32 (K, 4) x0, y0, x1, y1 (exclusive ends); zeros for empty masks."""
    k = masks.shape[0]
    if k == 0:
        return np.zeros((0, 4), np.float32)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    has = rows.any(axis=1)
    y0 = np.where(has, rows.argmax(axis=1), 0)
    y1 = np.where(has, rows.shape[1] - rows[:, ::-1].argmax(axis=1), 0)
    x0 = np.where(has, cols.argmax(axis=1), 0)
    x1 = np.where(has, cols.shape[1] - cols[:, ::-1].argmax(axis=1), 0)
    return np.stack([x0, y0, x1, y1], 1).astype(np.float32)


def _rle_counts(crop: np.ndarray, x0: int, y0: int, h: int, w: int) -> list[int]:
    """Uncompressed COCO RLE counts (column-major runs, zeros first) of an (h, w) mask that is
    ``crop`` (bool (hc, wc)) at rows y0.., columns x0.. and zero elsewhere."""
    hc, wc = crop.shape
    if crop.size == 0:
        return [h * w]
    # Each image column is a crop row of crop.T, padded with a zero at both ends; a change
    # between padded entries j and j+1 sits at image row y0 + j.
    padded = np.zeros((wc, hc + 2), np.int8)
    padded[:, 1:-1] = crop.T
    col, row = np.nonzero(np.diff(padded, axis=1))  # sorted by column, then row: by position
    pos = (x0 + col) * h + y0 + row
    # A run that ends at the bottom of a column while the next column starts with 1 (only when
    # the box spans all rows) is no change at all: drop such equal end/start pairs.
    same = pos[1:] == pos[:-1]
    if same.any():
        keep = np.ones(pos.shape, bool)
        keep[1:][same] = False
        keep[:-1][same] = False
        pos = pos[keep]
    if pos.size and pos[-1] == h * w:  # ones up to the last pixel: no trailing zero run
        pos = pos[:-1]
    return np.diff(pos, prepend=0, append=h * w).tolist()


def encode_masks(masks: np.ndarray, boxes: np.ndarray | None = None) -> list[dict[str, Any]]:
    """bool (K, H, W) -> K COCO compressed RLEs ``{"size": [H, W], "counts": str}``.

    ``boxes`` (K, 4) x0, y0, x1, y1 (exclusive) must contain each mask; computed when omitted.
    """
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise BadInputError(f"expected masks (K, H, W), got shape {masks.shape}")
    k, h, w = masks.shape
    if k == 0:
        return []
    if boxes is None:
        boxes = masks_to_boxes(masks)
    boxes = np.asarray(boxes, np.float64)
    if boxes.shape != (k, 4):
        raise BadInputError(f"expected boxes (K={k}, 4) for masks {masks.shape}, got {boxes.shape}")
    # Whole pixels that cover each box, inside the frame (a caller's box may be fractional).
    lo = np.clip(np.floor(boxes[:, :2]), 0, [w, h]).astype(np.int64)
    hi = np.clip(np.ceil(boxes[:, 2:]), 0, [w, h]).astype(np.int64)
    # Run lengths from each box only (pycocotools' encoder scans whole frames: 20 masks of a
    # 1080p frame are 40 MB per frame); pycocotools compresses them into its string format.
    counts = [_rle_counts(masks[i, y0:y1, x0:x1], x0, y0, h, w)
              for i, (x0, y0, x1, y1) in enumerate(np.concatenate([lo, hi], axis=1).tolist())]
    rles = mask_utils.frPyObjects([{"size": [h, w], "counts": c} for c in counts], h, w)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")  # bytes are not JSON-serialisable
    return rles


def detections_to_coco(
    image_id: int,
    masks: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    cat_ids: Sequence[int],
    rles: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One image's detections in the COCO results format.

    ``masks`` bool (K, H, W) on the original image, ``labels`` (K,) contiguous class indices into
    ``cat_ids`` (the dataset's category ids), ``scores`` (K,). The bbox [x, y, w, h] is the tight
    box of each mask ([0, 0, 0, 0] for an empty mask). ``rles``: the masks' encoding
    (``encode_masks``) when the caller already has it.
    """
    from pycocotools import mask as mask_utils

    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    rles = encode_masks(masks) if rles is None else rles
    if not (len(rles) == labels.shape[0] == scores.shape[0]):
        raise BadInputError(f"{len(rles)} masks, {labels.shape[0]} labels and {scores.shape[0]} scores differ")
    if labels.size and (labels.min() < 0 or labels.max() >= len(cat_ids)):
        raise BadInputError(f"class index out of range for {len(cat_ids)} categories: {labels.tolist()}")
    boxes = mask_utils.toBbox(rles) if rles else np.zeros((0, 4))
    return [
        {
            "image_id": int(image_id),
            "category_id": int(cat_ids[int(lab)]),
            "segmentation": rle,
            "score": float(score),
            "bbox": [float(v) for v in box],
        }
        for rle, lab, score, box in zip(rles, labels, scores, boxes)
    ]


def _load_gt(gt: dict[str, Any] | str | Path) -> Any:
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

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
    coco = COCO()
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
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

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
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                               "categories": list(coco_gt.dataset["categories"]), "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
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
