"""Glue between raw deploy outputs and results, shared by validation, `eval`, `predict` and `run`.

Imports only numpy and the post-processing (torch arrays work through array-api-compat), so the
runtime never pulls in Lightning or training code.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from ..core.config import ModelConfig
from ..core.instances import detections_to_coco, encode_crops
from ..preprocess import Letterbox
from .postprocess import CellInfo, Detections, cell_info, masks_to_crops, postprocess_batch, to_numpy


@lru_cache(maxsize=16)
def _cells(grids: tuple[int, ...], strides: tuple[int, ...], levels: int, decoupled: bool) -> CellInfo:
    return cell_info(grids, strides, levels, decoupled)


def cells_for(cfg: ModelConfig) -> CellInfo:
    if cfg.decoupled:
        return _cells(cfg.grids, cfg.strides, 2 * cfg.num_levels, True)
    return _cells(cfg.grids, cfg.strides, 1 if cfg.arch == "solov2" else cfg.num_levels, False)


def postprocess_outputs(meta, scores, kernels, mask_feats: Sequence[Any], post=None) -> list[Detections]:
    """Raw deploy outputs of a batch -> one ``Detections`` per image (stride-4 soft masks)."""
    cfg: ModelConfig = meta.model
    input_hw = tuple(meta.preprocess.input_hw) if mask_feats is None else (
        int(mask_feats[0].shape[-2]) * 4, int(mask_feats[0].shape[-1]) * 4)
    return postprocess_batch(scores, kernels, list(mask_feats), cells_for(cfg), post or meta.postprocess, input_hw)


def final_crops(det: Detections, letterbox: Letterbox, mask_thr: float) -> tuple[list[np.ndarray], np.ndarray]:
    """The masks on the original image as crops of their tight boxes: (bool crops, int64 (K, 4)
    x0 y0 x1 y1), what the instances cover rather than K frames."""
    return masks_to_crops(det, tuple(letterbox.input_hw), letterbox, mask_thr)


def detections_to_results(meta, scores, kernels, mask_feats: Sequence[Any], letterboxes: Sequence[Letterbox],
                          image_ids: Sequence[int], cat_ids: Sequence[int], post=None) -> list[dict[str, Any]]:
    """Raw outputs of a batch -> COCO results (RLE masks on the original images)."""
    post = post or meta.postprocess
    results: list[dict[str, Any]] = []
    for det, lb, image_id in zip(postprocess_outputs(meta, scores, kernels, mask_feats, post), letterboxes, image_ids):
        if len(det) == 0:
            continue
        crops, boxes = final_crops(det, lb, post.mask_thr)
        rles = encode_crops(crops, boxes, tuple(lb.orig_hw))
        results += detections_to_coco(int(image_id), None, to_numpy(det.labels), to_numpy(det.scores), list(cat_ids),
                                      rles=rles)
    return results
