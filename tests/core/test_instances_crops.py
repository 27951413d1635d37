"""Instances as crops of their boxes (issue #17): the crops hold exactly the full-frame masks,
RLEs and overlays made from crops equal those made from full frames, and nothing frame-sized
per instance is built on the way (the memory side is in tests/test_limits.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

import solo_deploy.core.instances as instances_mod
import solo_deploy.runtime.postprocess as pp
from solo_deploy.core.instances import Instances, encode_crops, masks_to_boxes
from solo_deploy.errors import BadInputError
from solo_deploy.preprocess import PreprocessSpec
from solo_deploy.runtime.postprocess import Detections, masks_to_crops, masks_to_image, to_numpy


def _soft(k: int, seed: int) -> np.ndarray:
    """(k, 16, 16) soft masks: blobs of every size, an empty one and one in the padding row."""
    rng = np.random.default_rng(seed)
    soft = np.zeros((k, 16, 16), np.float32)
    for i in range(k - 2):
        y, x = rng.integers(0, 14, size=2)
        h, w = rng.integers(1, 16 - y), rng.integers(1, 16 - x)
        soft[i, y : y + h, x : x + w] = rng.uniform(0.3, 1.0, size=(h, w))
    soft[k - 1, 15, :] = 0.9
    return soft


def _paste(crops, boxes, hw) -> np.ndarray:
    out = np.zeros((len(crops), *hw), bool)
    for k, (c, (x0, y0, x1, y1)) in enumerate(zip(crops, boxes.tolist())):
        assert c.shape == (y1 - y0, x1 - x0) and c.dtype == np.bool_
        out[k, y0:y1, x0:x1] = c
    return out


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("orig_hw", [(480, 640), (37, 300), (200, 90), (64, 64)])
def test_crops_are_the_full_frame_masks_in_tight_boxes(backend: str, orig_hw, monkeypatch) -> None:
    lb = PreprocessSpec(input_hw=(64, 64)).plan(orig_hw)
    soft = _soft(12, seed=sum(orig_hw))
    det = Detections(soft, np.zeros(12, np.int64), np.ones(12, np.float32))
    if backend == "torch":
        det = Detections(torch.from_numpy(soft), torch.zeros(12, dtype=torch.int64), torch.ones(12))
    full = to_numpy(masks_to_image(det, (64, 64), lb, 0.5))
    crops, boxes = masks_to_crops(det, (64, 64), lb, 0.5)
    assert boxes.dtype == np.int64 and boxes.shape == (12, 4)
    np.testing.assert_array_equal(_paste(crops, boxes, orig_hw), full)
    np.testing.assert_array_equal(boxes.astype(np.float32), masks_to_boxes(full))  # tight; zeros when empty
    assert crops[10].shape == (0, 0) or full[10].any()
    # Windows in row strips (a tiny temporary budget) and one instance per group give the same.
    monkeypatch.setattr(pp, "_IMAGE_CHUNK_ELEMS", 7 * orig_hw[1])
    strips, strip_boxes = masks_to_crops(det, (64, 64), lb, 0.5)
    np.testing.assert_array_equal(strip_boxes, boxes)
    for a, b in zip(strips, crops):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(to_numpy(masks_to_image(det, (64, 64), lb, 0.5)), full)


def test_instances_round_trip_and_rles_from_crops() -> None:
    rng = np.random.default_rng(3)
    masks = np.zeros((5, 40, 60), bool)
    masks[0, 3:9, 4:30] = True
    masks[1, :, :] = True  # the whole frame: runs that wrap from one column to the next
    masks[2] = rng.random((40, 60)) > 0.7  # scattered pixels
    masks[3, 39, 59] = True  # the last pixel
    inst = Instances.from_masks(masks, np.array([0, 1, 2, 3, 0]), np.linspace(0.9, 0.1, 5, dtype=np.float32),
                                ("a", "b", "c", "d"))
    assert len(inst) == 5 and inst.image_hw == (40, 60)
    np.testing.assert_array_equal(inst.masks, masks)
    np.testing.assert_array_equal(inst.mask(2), masks[2])
    np.testing.assert_array_equal(inst.boxes, masks_to_boxes(masks))
    assert inst.crops[4].shape == (0, 0) and inst.crop_boxes[4].tolist() == [0, 0, 0, 0]
    # pycocotools, from the full frames, is the reference encoder.
    ref = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    assert [r["counts"] for r in inst.rles] == [r["counts"].decode() for r in ref]
    assert encode_crops([], np.zeros((0, 4)), (4, 4)) == []
    coco = inst.to_coco(image_id=9)
    assert [c["category_id"] for c in coco] == [1, 2, 3, 4, 1]
    np.testing.assert_allclose([c["bbox"] for c in coco], mask_utils.toBbox(ref))


def test_instances_refuse_crops_that_do_not_fit() -> None:
    good = {"labels": np.zeros(1, np.int64), "scores": np.ones(1, np.float32), "class_names": ("a",),
            "image_hw": (10, 10)}
    with pytest.raises(BadInputError, match="does not fit its box"):
        Instances(**good, crops=[np.ones((3, 3), bool)], crop_boxes=[[0, 0, 4, 3]])
    with pytest.raises(BadInputError, match="outside the 10x10 image"):
        Instances(**good, crops=[np.ones((3, 3), bool)], crop_boxes=[[8, 0, 11, 3]])
    with pytest.raises(BadInputError, match="2 crops, 2 boxes, 1 labels and 1 scores differ"):
        Instances(**good, crops=[np.ones((1, 1), bool)] * 2, crop_boxes=[[0, 0, 1, 1]] * 2)
    inst = Instances(**good, crops=[np.ones((3, 3), bool)], crop_boxes=[[0, 0, 3, 3]])
    with pytest.raises(BadInputError, match="cannot draw instances of a 10x10 image on a 12x10 one"):
        inst.plot(np.zeros((10, 12, 3), np.uint8))


@pytest.mark.parametrize("k", [30, 300])  # ids in a uint8 map and, past 254 instances, a uint16 one
def test_overlay_in_strips_equals_one_pass(k: int, monkeypatch) -> None:
    h, w = 90, 70
    rng = np.random.default_rng(k)
    masks = np.zeros((k, h, w), bool)
    for i in range(k):
        y, x = rng.integers(0, h - 5), rng.integers(0, w - 5)
        masks[i, y : y + rng.integers(2, 40), x : x + rng.integers(2, 40)] = True  # overlapping boxes
    inst = Instances.from_masks(masks, np.arange(k) % 8, rng.random(k).astype(np.float32),
                                [f"c{i}" for i in range(8)])
    image = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    whole = inst.plot(image)
    for rows in (1, 2, 7, 89):
        monkeypatch.setattr(instances_mod, "_PLOT_STRIP_PIXELS", rows * w)
        np.testing.assert_array_equal(inst.plot(image), whole)
    assert (whole != image).any()
