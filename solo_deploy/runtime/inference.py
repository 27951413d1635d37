"""Glue between raw deploy outputs and results, shared by validation, `eval`, `predict` and `run`.

Imports only numpy and the post-processing (torch arrays work through array-api-compat), so the
runtime never pulls in Lightning or training code.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from ..core.config import ModelConfig
from ..core.instances import Instances
from ..errors import BadInputError
from ..preprocess import Letterbox
from .postprocess import CellInfo, Detections, cell_info, masks_to_crops, postprocess_batch, to_numpy


@lru_cache(maxsize=16)
def _cells(grids: tuple[int, ...], strides: tuple[int, ...], levels: int, decoupled: bool) -> CellInfo:
    return cell_info(grids, strides, levels, decoupled)


def cells_for(cfg: ModelConfig) -> CellInfo:
    if cfg.decoupled:
        return _cells(cfg.grids, cfg.strides, 2 * cfg.num_levels, True)
    return _cells(cfg.grids, cfg.strides, 1 if cfg.arch == "solov2" else cfg.num_levels, False)


def decode_end2end(scores: Any, masks: Any, labels: Any, num_detections: Any, mask_format: str) -> list[Detections]:
    """An end-to-end graph's outputs -> one ``Detections`` per image (the first
    ``num_detections[i]`` slots; uint8 masks back to probabilities in [0, 1]).

    ``scores`` (N, K) float32, ``masks`` (N, K, H/4, W/4) uint8 or float32, ``labels`` (N, K) int64,
    ``num_detections`` (N,) int; numpy or any array-API namespace (they stay where they are).
    """
    xp = array_namespace(scores)
    n, k = int(scores.shape[0]), int(scores.shape[1])
    if masks.ndim != 4 or tuple(int(d) for d in masks.shape[:2]) != (n, k) or tuple(labels.shape) != (n, k):
        raise BadInputError(f"end-to-end outputs do not agree: scores {tuple(scores.shape)}, masks "
                            f"{tuple(masks.shape)}, labels {tuple(labels.shape)}")
    counts = to_numpy(num_detections).reshape(-1).astype(np.int64)
    if counts.shape != (n,) or (counts < 0).any() or (counts > k).any():
        raise BadInputError(f"end-to-end num_detections {counts.tolist()} is not within 0..{k} per image")
    out = []
    for i, c in enumerate(counts.tolist()):
        soft = xp.astype(masks[i, :c, ...], xp.float32)
        if mask_format == "uint8":
            soft = soft / 255.0
        out.append(Detections(soft_masks=soft, labels=xp.astype(labels[i, :c], xp.int64),
                              scores=xp.astype(scores[i, :c], xp.float32)))
    return out


def postprocess_outputs(meta, scores, kernels, mask_feats: Sequence[Any], post=None) -> list[Detections]:
    """Deploy outputs of a batch -> one ``Detections`` per image (stride-4 soft masks): the
    Python post-processing of raw outputs, or the decoding of an end-to-end graph's instances
    (``split_outputs`` order: scores, then masks, boxes, labels, num_detections)."""
    if meta.end2end is not None:
        masks, _boxes, labels, num = mask_feats
        return decode_end2end(scores, masks, labels, num, meta.end2end.mask_format)
    cfg: ModelConfig = meta.model
    input_hw = tuple(meta.preprocess.input_hw) if mask_feats is None else (
        int(mask_feats[0].shape[-2]) * 4, int(mask_feats[0].shape[-1]) * 4)
    return postprocess_batch(scores, kernels, list(mask_feats), cells_for(cfg), post or meta.postprocess, input_hw)


def final_instances(det: Detections, letterbox: Letterbox, mask_thr: float,
                    class_names: Sequence[str], category_ids: Sequence[int] = ()) -> Instances:
    """One image's detections on its original grid: each mask as the crop of its tight box, what
    the instances cover rather than K frames."""
    if len(det):
        crops, boxes = masks_to_crops(det, tuple(letterbox.input_hw), letterbox, mask_thr)
    else:
        crops, boxes = [], np.zeros((0, 4), np.int64)
    return Instances(labels=to_numpy(det.labels).astype(np.int64), scores=to_numpy(det.scores).astype(np.float32),
                     class_names=tuple(class_names), image_hw=tuple(letterbox.orig_hw), crops=crops,
                     crop_boxes=boxes, category_ids=tuple(category_ids))


def detections_to_results(meta, scores, kernels, mask_feats: Sequence[Any], letterboxes: Sequence[Letterbox],
                          image_ids: Sequence[int], cat_ids: Sequence[int], post=None) -> list[dict[str, Any]]:
    """Raw outputs of a batch -> COCO results (RLE masks on the original images)."""
    post = post or meta.postprocess
    results: list[dict[str, Any]] = []
    for det, lb, image_id in zip(postprocess_outputs(meta, scores, kernels, mask_feats, post), letterboxes, image_ids):
        if len(det) == 0:
            continue
        results += final_instances(det, lb, post.mask_thr, meta.class_names).to_coco(int(image_id), cat_ids)
    return results
