"""Transforms: shared letterbox geometry, exact mask/image alignment, collate."""
from __future__ import annotations

import numpy as np
import pytest

from solo_deploy.data import Sample
from solo_deploy.data.synthetic import SyntheticDataset
from solo_deploy.data.transforms import EvalTransform, TrainTransform, TransformedDataset, collate, resize_masks
from solo_deploy.preprocess import PreprocessSpec

SPEC = PreprocessSpec(input_hw=(256, 256))
# Saturated, well-separated colours (BGR) painted into the image where each mask is.
PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]], np.uint8)


def _painted_sample(h: int, w: int, seed: int = 0) -> Sample:
    """Grey image with K separate ellipses, each filled with a unique colour exactly where its mask is.

    Ellipses sit in distinct cells of a 3x2 grid so they never touch: slivers between touching
    shapes would blur away and bias the centroid comparison in ``_check_aligned``.
    """
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 128, np.uint8)
    masks = np.zeros((len(PALETTE), h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    ch, cw = h / 2, w / 3
    for k in range(len(PALETTE)):
        row, col = divmod(k, 3)
        cy, cx = (row + rng.uniform(0.4, 0.6)) * ch, (col + rng.uniform(0.4, 0.6)) * cw
        ry, rx = rng.uniform(0.15, 0.35) * ch, rng.uniform(0.15, 0.35) * cw
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        masks[k] = m
        image[m] = PALETTE[k]
    return Sample(image_bgr=image, masks=masks, labels=np.arange(len(PALETTE), dtype=np.int64), image_id=5)


def _check_aligned(image_rgb: np.ndarray, masks: np.ndarray, labels: np.ndarray, scale: float
                   ) -> list[tuple[float, float]]:
    """Every mask covers its colour: interiors agree exactly, only a rim may differ (the image is
    interpolated: its edges blur over about ``scale`` output pixels, the masks' do not).

    Returns the (dy, dx) offsets between mask and colour centroids (masks of >= 50 px): a
    systematic half-pixel shift (plain INTER_NEAREST) shows up as a mean offset of ~0.5.
    """
    offsets = []
    import cv2

    for m, lab in zip(masks, labels):
        colour_rgb = PALETTE[lab][::-1].astype(int)
        is_colour = (np.abs(image_rgb.astype(int) - colour_rgb).sum(-1) < 60).astype(np.uint8)
        r = max(1, int(np.ceil(scale)))
        kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
        # Constant-0 border: an object cut by the image edge still has a rim at the edge.
        inner = cv2.erode(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        outer = cv2.dilate(m, kernel)
        assert m.sum() >= 4
        assert is_colour[inner > 0].all(), "mask interior not on its colour"
        assert not is_colour[outer == 0].any(), "colour outside the (dilated) mask"
        assert is_colour[m > 0].mean() > 0.85
        if m.sum() >= 50:
            ys, xs = np.nonzero(m)
            cys, cxs = np.nonzero(is_colour)
            offsets.append((ys.mean() - cys.mean(), xs.mean() - cxs.mean()))
            assert np.abs(offsets[-1]).max() < 0.6
    return offsets


def _assert_no_bias(offsets: list[tuple[float, float]]) -> None:
    """Quantisation moves single centroids by up to ~0.35 px; a half-pixel bias moves all of them."""
    assert len(offsets) >= 20
    # Measured: |mean| <= 0.05 px with INTER_NEAREST_EXACT, ~0.45 px with plain INTER_NEAREST.
    assert np.abs(np.mean(offsets, axis=0)).max() < 0.2, np.mean(offsets, axis=0)


def test_eval_transform_matches_spec_letterbox() -> None:
    offsets = []
    for i, hw in enumerate([(256, 256), (200, 300), (400, 180), (97, 131), (512, 384), (150, 150)]):
        sample = _painted_sample(*hw, seed=i)
        image, masks, labels, meta = EvalTransform(SPEC)(sample)
        ref, lb = SPEC.letterbox(sample.image_bgr)
        assert np.array_equal(image, ref) and meta["letterbox"] == lb and meta["image_id"] == 5
        assert image.shape == (256, 256, 3) and masks.shape == (len(PALETTE), 256, 256) and masks.dtype == np.uint8
        rh, rw = lb.resized_hw
        assert not masks[:, rh:].any() and not masks[:, :, rw:].any()  # padding stays empty
        assert labels.dtype == np.int64 and np.array_equal(labels, sample.labels)
        offsets += _check_aligned(image, masks, labels, lb.scale)
    _assert_no_bias(offsets)


def test_train_without_augmentation_equals_eval() -> None:
    sample = _painted_sample(200, 300)
    plain = TrainTransform(SPEC, hflip=0.0, scale_jitter=(1.0, 1.0), photometric=False, seed=0)(sample)
    ev = EvalTransform(SPEC)(sample)
    assert np.array_equal(plain[0], ev[0]) and np.array_equal(plain[1], ev[1])
    assert plain[3]["letterbox"] == ev[3]["letterbox"]


@pytest.mark.parametrize("hw", [(256, 256), (200, 300), (331, 173)])
def test_train_transform_keeps_masks_aligned(hw: tuple[int, int]) -> None:
    sample = _painted_sample(*hw, seed=hw[0])
    tf = TrainTransform(SPEC, hflip=0.5, scale_jitter=(0.6, 1.6), photometric=False, seed=1)
    flips, crops, offsets = 0, 0, []
    for _ in range(12):
        image, masks, labels, meta = tf(sample)
        assert image.shape == (256, 256, 3) and masks.shape[1:] == (256, 256)
        assert masks.shape[0] == len(labels) <= len(PALETTE)
        rh, rw = meta["letterbox"].resized_hw
        assert (image[rh:] == SPEC.pad_value).all() and (image[:, rw:] == SPEC.pad_value).all()
        assert not masks[:, rh:].any() and not masks[:, :, rw:].any()
        offsets += _check_aligned(image, masks, labels, meta["letterbox"].scale)
        flips += meta["flipped"]
        crops += meta["crop_xy"] != (0, 0)
    assert 0 < flips < 12 and crops > 0
    _assert_no_bias(offsets)


def test_flip_is_exact() -> None:
    sample = _painted_sample(256, 256)
    image, masks, _, meta = TrainTransform(SPEC, hflip=1.0, scale_jitter=(1, 1), photometric=False)(sample)
    ev_image, ev_masks, _, _ = EvalTransform(SPEC)(sample)
    assert meta["flipped"] and np.array_equal(image, ev_image[:, ::-1]) and np.array_equal(masks, ev_masks[:, :, ::-1])


def test_photometric_changes_pixels_not_geometry() -> None:
    sample = SyntheticDataset("val")[0]
    base = TrainTransform(SPEC, hflip=0, scale_jitter=(1, 1), photometric=False)(sample)
    changed = 0
    tf = TrainTransform(SPEC, hflip=0, scale_jitter=(1, 1), photometric=True, seed=3)
    for _ in range(6):
        image, masks, labels, _ = tf(sample)
        assert image.dtype == np.uint8 and np.array_equal(masks, base[1]) and np.array_equal(labels, base[2])
        changed += not np.array_equal(image, base[0])
    assert changed >= 3
    # Padding keeps the pad value under photometric jitter (non-square image -> padded area).
    wide = Sample(sample.image_bgr[:128], sample.masks[:, :128], sample.labels, 1)
    image = TrainTransform(SPEC, hflip=0, scale_jitter=(1, 1), photometric=True, seed=4)(wide)[0]
    assert (image[128:] == SPEC.pad_value).all()


def test_tiny_instances_are_dropped_after_crop() -> None:
    image = np.full((256, 256, 3), 90, np.uint8)
    masks = np.zeros((2, 256, 256), np.uint8)
    masks[0, 100:140, 100:140] = 1
    masks[1, 10:12, 10:11] = 1  # 2 px: below min_pixels=4
    sample = Sample(image, masks, np.array([0, 1], np.int64), 9)
    _, out_masks, labels, _ = TrainTransform(SPEC, hflip=0, scale_jitter=(1, 1), photometric=False)(sample)
    assert labels.tolist() == [0] and out_masks.shape[0] == 1
    # Eval keeps every instance so indices match the ground truth.
    assert EvalTransform(SPEC)(sample)[1].shape[0] == 2


def test_explicit_rng_is_reproducible() -> None:
    sample = SyntheticDataset("val")[1]
    tf = TrainTransform(SPEC)
    a = tf(sample, rng=np.random.default_rng(5))
    b = tf(sample, rng=np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[3]["crop_xy"] == b[3]["crop_xy"]
    c, d = TrainTransform(SPEC, seed=2)(sample), TrainTransform(SPEC, seed=2)(sample)
    assert np.array_equal(c[0], d[0])


def test_resize_masks_many_instances() -> None:
    masks = (np.random.default_rng(0).random((600, 10, 12)) > 0.5).astype(np.uint8)
    out = resize_masks(masks, (20, 24))
    assert out.shape == (600, 20, 24) and np.array_equal(out[:, ::2, ::2], masks)
    assert resize_masks(np.zeros((0, 10, 12), np.uint8), (5, 6)).shape == (0, 5, 6)


def test_collate() -> None:
    import torch

    ds = TransformedDataset(SyntheticDataset("val", count=3), TrainTransform(SPEC, seed=0))
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch["images"].dtype == torch.uint8 and tuple(batch["images"].shape) == (3, 3, 256, 256)
    assert len(batch["masks"]) == len(batch["labels"]) == len(batch["meta"]) == 3
    for m, lab in zip(batch["masks"], batch["labels"]):
        assert m.dtype == torch.uint8 and m.shape[1:] == (256, 256) and lab.dtype == torch.int64
        assert m.shape[0] == lab.shape[0]
    items = [EvalTransform(SPEC)(SyntheticDataset("val")[i]) for i in range(2)]
    batch = collate(items)
    assert np.array_equal(batch["images"][1].permute(1, 2, 0).numpy(), items[1][0])
    assert np.array_equal(batch["masks"][1].numpy(), items[1][1])
