"""Post-processing: hand-built outputs, a brute-force per-instance reference, numpy vs torch, resizing."""
from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from solo_deploy.core.config import PostprocessConfig
from solo_deploy.errors import BadInputError
from solo_deploy.preprocess import PreprocessSpec
from solo_deploy.runtime.postprocess import (
    Detections,
    cell_info,
    masks_to_image,
    postprocess_batch,
    postprocess_single,
    resize_bilinear,
    resize_matrix,
    to_numpy,
)

SIG10 = 1.0 / (1.0 + math.exp(-10.0))  # soft value of a +10 logit: every hand-built mask's maskness


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _det_np(d: Detections) -> Detections:
    return d.to_numpy()


# ---------------------------------------------------------------------------------------------
# Brute-force reference: one instance at a time, the SOLOv2 reference test procedure literally.
# ---------------------------------------------------------------------------------------------
def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 0.0


def _matrix_nms_loop(masks, labels, scores, kernel, sigma):
    out = []
    for j in range(len(scores)):  # instances are sorted by score already
        decay = 1.0
        for i in range(j):
            if labels[i] != labels[j]:
                continue
            comp = max([_iou(masks[k], masks[i]) for k in range(i) if labels[k] == labels[i]], default=0.0)
            iou = _iou(masks[i], masks[j])
            if kernel == "gaussian":
                decay = min(decay, math.exp(-sigma * (iou**2 - comp**2)))
            else:
                decay = min(decay, (1 - iou) / max(1 - comp, 1e-6))
        out.append(scores[j] * decay)
    return out


def reference_postprocess(scores, kernels, feats, grids, strides, cfg, input_hw):
    """scores (cells, C), kernels (cells, E), feats list of (E, h, w) numpy -> (soft, labels, scores)."""
    out_hw = (input_hw[0] // 4, input_hw[1] // 4)
    level_of = [lvl for lvl, g in enumerate(grids) for _ in range(g * g)]
    cands = [(float(scores[c, k]), c, k) for c in range(scores.shape[0]) for k in range(scores.shape[1])
             if scores[c, k] > cfg.score_thr]
    cands = sorted(cands, key=lambda t: -t[0])[: cfg.max_candidates]
    kept = []
    for score, c, k in cands:
        lvl = level_of[c]
        feat = feats[lvl if len(feats) > 1 else 0]
        logit = np.tensordot(kernels[c], feat, axes=1)
        soft = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
        if soft.shape != out_hw:  # SOLO: the sigmoid, then the upsampling (mmdetection's order)
            soft = F.interpolate(torch.from_numpy(soft)[None, None], size=out_hw, mode="bilinear",
                                 align_corners=False)[0, 0].numpy()
        binary = soft > cfg.mask_thr
        area = binary.sum()
        if area == 0 or area <= strides[lvl] * cfg.min_area_factor:
            continue
        kept.append((score * float((soft * binary).sum() / area), k, soft, binary))
    return finish_reference(kept, cfg, out_hw)


def finish_reference(kept, cfg, out_hw):
    """Rescored candidates [(score, label, soft, binary)] -> the top nms_pre, Matrix NMS (loop),
    update_thr and max_per_img: (soft masks, labels, scores), by descending decayed score."""
    kept = sorted(kept, key=lambda t: -t[0])[: cfg.nms_pre]
    decayed = _matrix_nms_loop([t[3] for t in kept], [t[1] for t in kept], [t[0] for t in kept], cfg.kernel, cfg.sigma)
    final = sorted([(d, t) for d, t in zip(decayed, kept) if d >= cfg.update_thr], key=lambda p: -p[0])
    final = final[: cfg.max_per_img]
    soft = np.array([t[2] for _, t in final]).reshape(len(final), *out_hw)
    return soft, np.array([t[1] for _, t in final], np.int64), np.array([d for d, _ in final])


def random_outputs(seed: int, grids=(6, 4, 3), classes=4, e=6, input_hw=(64, 64), solo=False, n=None):
    """Random decoded outputs. Kernels and features are small integers and SOLO maps are 2x / 4x
    smaller, so logits (and their bilinear upsampling) are exact in float32: the binary masks of
    two implementations cannot differ by rounding."""
    rng = np.random.default_rng(seed)
    cells = sum(g * g for g in grids)
    shape = (cells,) if n is None else (n, cells)
    scores = np.where(rng.random((*shape, classes)) < 0.3, rng.random((*shape, classes)), 0.0).astype(np.float32)
    kernels = rng.integers(-2, 3, size=(*shape, e)).astype(np.float32)
    h4, w4 = input_hw[0] // 4, input_hw[1] // 4
    sizes = [(h4, w4), (h4 // 2, w4 // 2), (h4 // 4, w4 // 4)][: len(grids)] if solo else [(h4, w4)]
    lead = () if n is None else (n,)
    feats = [rng.integers(-2, 3, size=(*lead, e, h, w)).astype(np.float32) for h, w in sizes]
    # Last channel is a constant 1 and its kernel weight a bias (as SOLO's 1x1 kernels carry):
    # mask sizes then range from empty (dropped by the area rule) to the whole image.
    for f in feats:
        f[..., -1, :, :] = 1.0
    kernels[..., -1] = rng.integers(-9, 4, size=shape)
    return scores, kernels, feats


CFG = PostprocessConfig(nms_pre=40, max_per_img=20)


@pytest.mark.parametrize("solo", [False, True], ids=["solov2", "solo"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_bruteforce_reference(solo: bool, seed: int) -> None:
    grids, strides = (6, 4, 3), (8, 16, 32)
    scores, kernels, feats = random_outputs(seed, grids=grids, solo=solo)
    cells = cell_info(grids, strides, len(feats))
    # Tight budgets (nms_pre < candidates, max_per_img binding) and the defaults (update_thr binding).
    for cfg in (CFG, replace(CFG, kernel="linear"), PostprocessConfig(), PostprocessConfig(kernel="linear"),
                replace(CFG, min_area_factor=0.0), replace(CFG, min_area_factor=0.5)):
        det = postprocess_single(scores, kernels, feats, cells, cfg, (64, 64))
        soft, labels, sc = reference_postprocess(scores, kernels, feats, grids, strides, cfg, (64, 64))
        assert len(det) == len(labels) > 3
        np.testing.assert_array_equal(det.labels, labels)
        np.testing.assert_allclose(det.scores, sc, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(det.soft_masks, soft, atol=1e-6)
        assert det.soft_masks.dtype == np.float32 and det.labels.dtype == np.int64 and det.scores.dtype == np.float32


@pytest.mark.parametrize("solo", [False, True], ids=["solov2", "solo"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_chunked_masks_and_candidate_cap_match_bruteforce(solo: bool, backend: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunks of 3 candidates' masks: more candidates than nms_pre, so the kept masks are computed
    # a second time; and a K0 cap below the number of candidates.
    from solo_deploy.runtime import postprocess as pp

    monkeypatch.setattr(pp, "_MASK_CHUNK_ELEMS", 3 * 16 * 16)
    grids, strides = (6, 4, 3), (8, 16, 32)
    scores, kernels, feats = random_outputs(3, grids=grids, solo=solo)
    cells = cell_info(grids, strides, len(feats))
    conv = _t if backend == "torch" else (lambda a: a)
    n_cand = int((scores > 0.1).sum())
    for cfg in (CFG, replace(CFG, max_candidates=n_cand // 2), replace(CFG, nms_pre=n_cand, max_candidates=n_cand)):
        det = _det_np(postprocess_single(conv(scores), conv(kernels), [conv(f) for f in feats], cells, cfg, (64, 64)))
        soft, labels, sc = reference_postprocess(scores, kernels, feats, grids, strides, cfg, (64, 64))
        assert len(det) == len(labels) > 3
        np.testing.assert_array_equal(det.labels, labels)
        np.testing.assert_allclose(det.scores, sc, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(det.soft_masks, soft, atol=1e-6)


@pytest.mark.parametrize("solo", [False, True], ids=["solov2", "solo"])
def test_numpy_and_torch_agree(solo: bool) -> None:
    grids = (6, 4, 3)
    scores, kernels, feats = random_outputs(5, grids=grids, solo=solo, n=2)
    cells = cell_info(grids, (8, 16, 32), len(feats))
    a = postprocess_batch(scores, kernels, feats, cells, CFG, (64, 64))
    b = postprocess_batch(_t(scores), _t(kernels), [_t(f) for f in feats], cells, CFG, (64, 64))
    for da, db in zip(a, b):
        assert isinstance(db.soft_masks, torch.Tensor) and db.labels.dtype == torch.int64
        db = db.to_numpy()
        np.testing.assert_array_equal(da.labels, db.labels)
        np.testing.assert_allclose(da.scores, db.scores, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(da.soft_masks, db.soft_masks, atol=1e-6)


def test_batch_equals_single_images() -> None:
    scores, kernels, feats = random_outputs(9, n=3)
    cells = cell_info((6, 4, 3), (8, 16, 32), 1)
    batch = postprocess_batch(scores, kernels, feats, cells, CFG, (64, 64))
    assert len(batch) == 3
    for i, det in enumerate(batch):
        one = postprocess_single(scores[i], kernels[i], [f[i] for f in feats], cells, CFG, (64, 64))
        np.testing.assert_array_equal(det.labels, one.labels)
        np.testing.assert_array_equal(det.scores, one.scores)


# ---------------------------------------------------------------------------------------------
# Hand-built outputs: known cells produce known masks.
# ---------------------------------------------------------------------------------------------
H4 = 16  # 64x64 input -> 16x16 stride-4 masks
GRIDS, STRIDES = (4, 2), (8, 16)  # 16 + 4 = 20 cells


def _region(r0, r1, c0, c1, size=H4):
    m = np.zeros((size, size), bool)
    m[r0:r1, c0:c1] = True
    return m


REGIONS = {
    "A": _region(2, 8, 2, 8),  # 36 px
    "B": _region(9, 15, 4, 14),  # 60 px
    "C": _region(0, 2, 14, 16),  # 4 px: smaller than any stride -> always dropped
    "D": _region(10, 14, 0, 3),  # 12 px: kept at stride 8 (level 0), dropped at stride 16 (level 1)
}
NAMES = list(REGIONS)


def _features(regions: dict[str, np.ndarray]) -> np.ndarray:
    """(E, h, w): channel r is +10 inside region r and -10 outside (one-hot kernels pick a region)."""
    return np.stack([np.where(m, 10.0, -10.0) for m in regions.values()]).astype(np.float32)


def hand_built():
    cells = sum(g * g for g in GRIDS)
    scores = np.zeros((cells, 3), np.float32)
    kernels = np.zeros((cells, len(NAMES)), np.float32)

    def put(cell, cls, score, region):
        scores[cell, cls] = score
        kernels[cell, NAMES.index(region)] = 1.0

    put(5, 1, 0.9, "A")  # level 0, class 1
    put(17, 2, 0.8, "B")  # level 1, class 2
    put(6, 1, 0.3, "A")  # duplicate of cell 5, same class: 0.3 * e^-2 = 0.04 < update_thr -> dropped
    put(7, 0, 0.6, "A")  # same mask, other class: not decayed
    put(0, 0, 0.05, "B")  # below score_thr
    put(1, 2, 0.95, "C")  # highest score but a tiny mask
    put(2, 0, 0.5, "D")  # 12 px > stride 8
    put(18, 0, 0.55, "D")  # 12 px <= stride 16
    return scores, kernels


EXPECTED = [(1, 0.9, "A"), (2, 0.8, "B"), (0, 0.6, "A"), (0, 0.5, "D")]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_hand_built_recovers_instances_and_drops_duplicate(backend: str) -> None:
    scores, kernels = hand_built()
    feats = [_features(REGIONS)]
    if backend == "torch":
        scores, kernels, feats = _t(scores), _t(kernels), [_t(feats[0])]
    det = postprocess_single(
        scores, kernels, feats, cell_info(GRIDS, STRIDES, 1), PostprocessConfig(), (64, 64)
    ).to_numpy()
    assert det.labels.tolist() == [lab for lab, _, _ in EXPECTED]
    np.testing.assert_allclose(det.scores, [s * SIG10 for _, s, _ in EXPECTED], rtol=1e-6)
    for soft, (_, _, region) in zip(det.soft_masks, EXPECTED):
        np.testing.assert_array_equal(soft > 0.5, REGIONS[region])
    assert det.soft_masks.shape == (4, H4, H4)


def test_max_per_img_and_nms_pre_bound_the_result() -> None:
    scores, kernels = hand_built()
    feats = [_features(REGIONS)]
    cells = cell_info(GRIDS, STRIDES, 1)
    top2 = postprocess_single(scores, kernels, feats, cells, PostprocessConfig(max_per_img=2), (64, 64))
    assert top2.labels.tolist() == [1, 2]
    # max_candidates (K0) caps candidates BEFORE masks exist: the top-scored one (tiny mask C) is
    # the only one looked at, is dropped by the area rule, and nothing else gets a chance.
    assert len(postprocess_single(scores, kernels, feats, cells, PostprocessConfig(max_candidates=1), (64, 64))) == 0
    two = postprocess_single(scores, kernels, feats, cells, PostprocessConfig(max_candidates=2), (64, 64))
    assert two.labels.tolist() == [1]
    # nms_pre caps AFTER maskness rescoring (the reference's order): the best rescored instance wins.
    one = postprocess_single(scores, kernels, feats, cells, PostprocessConfig(nms_pre=1), (64, 64))
    assert one.labels.tolist() == [1] and len(one) == 1
    # Without the duplicate rule nothing decays below a low update_thr: the duplicate comes back.
    low = postprocess_single(scores, kernels, feats, cells, PostprocessConfig(update_thr=0.01), (64, 64))
    assert len(low) == 5 and low.labels.tolist()[-1] == 1
    np.testing.assert_allclose(low.scores[-1], 0.3 * SIG10 * math.exp(-2.0), rtol=1e-5)


def test_solo_multi_level_features_of_different_sizes() -> None:
    scores, kernels = hand_built()
    # Level 1 (cells 16..19) uses an 8x8 map: region "B" at half resolution. Its +-10 logits
    # upsampled x2 (bilinear) cross zero exactly on the 2x2 block borders -> the same 16x16 region.
    coarse = {name: m[::2, ::2] for name, m in REGIONS.items()}
    coarse["B"] = _region(4, 7, 2, 7, size=8)
    feats = [_features(REGIONS), _features(coarse)]
    cells = cell_info(GRIDS, STRIDES, 2)
    for conv in (lambda a: a, _t):
        det = to_numpy_det(postprocess_single(conv(scores), conv(kernels), [conv(f) for f in feats], cells,
                                              PostprocessConfig(), (64, 64)))
        assert det.labels.tolist() == [1, 2, 0, 0]
        np.testing.assert_array_equal(det.soft_masks[1] > 0.5, _region(8, 14, 4, 14))
        np.testing.assert_array_equal(det.soft_masks[0] > 0.5, REGIONS["A"])


def to_numpy_det(d: Detections) -> Detections:
    return d.to_numpy()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_no_candidates_gives_empty_detections(backend: str) -> None:
    cells = cell_info(GRIDS, STRIDES, 1)
    scores = np.zeros((20, 3), np.float32)
    kernels = np.zeros((20, 4), np.float32)
    feats = [np.zeros((4, 16, 16), np.float32)]
    if backend == "torch":
        scores, kernels, feats = _t(scores), _t(kernels), [_t(feats[0])]
    det = postprocess_single(scores, kernels, feats, cells, PostprocessConfig(), (64, 64))
    assert len(det) == 0 and tuple(det.soft_masks.shape) == (0, 16, 16)
    spec = PreprocessSpec(input_hw=(64, 64))
    out = masks_to_image(det, (64, 64), spec.plan((30, 50)), 0.5)
    assert tuple(out.shape) == (0, 30, 50)


def test_bad_shapes_raise_bad_input() -> None:
    cells = cell_info(GRIDS, STRIDES, 1)
    good_s, good_k = np.zeros((20, 3), np.float32), np.zeros((20, 4), np.float32)
    feat = [np.zeros((4, 16, 16), np.float32)]
    with pytest.raises(BadInputError):
        postprocess_single(np.zeros((19, 3), np.float32), good_k, feat, cells, CFG, (64, 64))
    with pytest.raises(BadInputError):
        postprocess_single(good_s, good_k, [np.zeros((5, 16, 16), np.float32)], cells, CFG, (64, 64))
    with pytest.raises(BadInputError):
        postprocess_single(good_s, good_k, feat * 2, cells, CFG, (64, 64))
    with pytest.raises(BadInputError):
        postprocess_batch(good_s, good_k, feat, cells, CFG, (64, 64))
    with pytest.raises(BadInputError):
        cell_info((4, 2), (8,), 1)
    with pytest.raises(BadInputError):
        cell_info((4, 2), (8, 16), 3)


def test_cell_info() -> None:
    info = cell_info((40, 36, 24, 16, 12), (8, 8, 16, 32, 32), 1)
    assert info.num_cells == 3872
    assert info.level[1599] == 0 and info.level[1600] == 1 and info.level[-1] == 4
    assert info.stride[1600 + 1296] == 16 and info.stride[-1] == 32
    assert not info.feat_index.any()
    solo = cell_info((40, 36, 24, 16, 12), (8, 8, 16, 32, 32), 5)
    np.testing.assert_array_equal(solo.feat_index, solo.level)
    with pytest.raises(ValueError):
        info.level[0] = 3  # shared, read-only


# ---------------------------------------------------------------------------------------------
# Bilinear resizing as matrices, and back to the original image.
# ---------------------------------------------------------------------------------------------
SIZES = [(16, 16, 64, 64), (64, 38, 50, 30), (64, 32, 40, 20), (7, 13, 29, 5), (1, 4, 3, 9), (5, 5, 5, 5)]


@pytest.mark.parametrize("h,w,oh,ow", SIZES)
def test_resize_matches_torch_interpolate(h: int, w: int, oh: int, ow: int) -> None:
    x = np.random.default_rng(h * w).random((3, h, w)).astype(np.float32)
    want = F.interpolate(_t(x)[None], size=(oh, ow), mode="bilinear", align_corners=False)[0].numpy()
    # torch works out source coordinates in float32; the float64 matrices differ from it by a few
    # 1e-6 at non-integer ratios (and agree with cv2.INTER_LINEAR on float32 to ~1e-7).
    np.testing.assert_allclose(resize_bilinear(x, (oh, ow)), want, atol=5e-6)
    np.testing.assert_allclose(resize_bilinear(_t(x), (oh, ow)).numpy(), want, atol=5e-6)
    np.testing.assert_allclose(resize_matrix(w, ow).sum(1), 1.0)


def test_resize_matches_cv2_on_float32() -> None:
    import cv2

    x = np.random.default_rng(0).random((38, 64)).astype(np.float32)
    want = cv2.resize(x, (200, 120), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(resize_bilinear(x, (120, 200)), want, atol=1e-6)


def _sequential_to_image(soft: np.ndarray, input_hw, lb) -> np.ndarray:
    """x4 upsample, crop the padding, resize to the original size: three separate torch steps."""
    up = F.interpolate(_t(soft)[None], size=input_hw, mode="bilinear", align_corners=False)
    rh, rw = lb.resized_hw
    return F.interpolate(up[:, :, :rh, :rw], size=lb.orig_hw, mode="bilinear", align_corners=False)[0].numpy()


@pytest.mark.parametrize("orig_hw", [(50, 30), (40, 20), (200, 120), (64, 64), (17, 90)])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_masks_to_image_matches_sequential_steps(orig_hw, backend: str) -> None:
    spec = PreprocessSpec(input_hw=(64, 64))
    lb = spec.plan(orig_hw)
    rng = np.random.default_rng(1)
    soft = F.interpolate(_t(rng.random((6, 1, 4, 4)).astype(np.float32)), size=(16, 16), mode="bilinear")[:, 0].numpy()
    det = Detections(soft, np.zeros(6, np.int64), np.ones(6, np.float32))
    if backend == "torch":
        det = Detections(_t(soft), torch.zeros(6, dtype=torch.int64), torch.ones(6))
    got = to_numpy(masks_to_image(det, (64, 64), lb, 0.5))
    want = _sequential_to_image(soft, (64, 64), lb)
    assert got.dtype == np.bool_ and got.shape == (6, *orig_hw)
    clear = np.abs(want - 0.5) > 1e-4  # away from the threshold, rounding cannot flip a pixel
    np.testing.assert_array_equal(got[clear], (want > 0.5)[clear])
    # The host cv2 path of PreprocessSpec.invert_masks gives the same masks.
    up = F.interpolate(_t(soft)[None], size=(64, 64), mode="bilinear", align_corners=False)[0].numpy()
    cv = spec.invert_masks(up, lb)
    clear = np.abs(cv - 0.5) > 1e-4
    np.testing.assert_array_equal(got[clear], (cv > 0.5)[clear])


def test_masks_to_image_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    import solo_deploy.runtime.postprocess as pp

    spec = PreprocessSpec(input_hw=(64, 64))
    lb = spec.plan((50, 30))
    soft = np.random.default_rng(2).random((5, 16, 16)).astype(np.float32)
    det = Detections(soft, np.zeros(5, np.int64), np.ones(5, np.float32))
    whole = masks_to_image(det, (64, 64), lb, 0.5)
    monkeypatch.setattr(pp, "_PASTE_GROUP", 2)  # 2 instances per group
    np.testing.assert_array_equal(masks_to_image(det, (64, 64), lb, 0.5), whole)
    monkeypatch.setattr(pp, "_IMAGE_CHUNK_ELEMS", 50 * 30)  # memory bound: one instance per group
    np.testing.assert_array_equal(masks_to_image(det, (64, 64), lb, 0.5), whole)
    with pytest.raises(BadInputError):
        masks_to_image(det, (32, 32), lb, 0.5)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("orig_hw", [(480, 640), (37, 300), (200, 90)])
def test_masks_to_image_boxes_equal_dense_resize(backend: str, orig_hw) -> None:
    """Sparse blobs of every size (and an empty mask, and one in the padding): the per-box paste
    equals thresholding the dense full-frame resize."""
    from solo_deploy.runtime.postprocess import _crop_resize_matrix_f64

    spec = PreprocessSpec(input_hw=(64, 64))
    lb = spec.plan(orig_hw)
    rng = np.random.default_rng(4)
    soft = np.zeros((9, 16, 16), np.float32)
    for i, (y, x, h, w) in enumerate([(0, 0, 1, 1), (3, 4, 2, 5), (10, 2, 6, 1), (0, 0, 16, 16), (15, 15, 1, 1),
                                      (5, 5, 8, 8), (7, 0, 1, 16), (0, 0, 0, 0)]):
        soft[i, y : y + h, x : x + w] = rng.uniform(0.3, 1.0, size=(h, w))
    soft[8, 15, :] = 0.9  # the bottom row: only padding when the frame is wide
    det = Detections(soft, np.zeros(9, np.int64), np.ones(9, np.float32))
    if backend == "torch":
        det = Detections(_t(soft), torch.zeros(9, dtype=torch.int64), torch.ones(9))
    got = to_numpy(masks_to_image(det, (64, 64), lb, 0.5))
    ay = _crop_resize_matrix_f64(16, 64, lb.resized_hw[0], orig_hw[0])
    ax = _crop_resize_matrix_f64(16, 64, lb.resized_hw[1], orig_hw[1])
    dense = ay @ soft.astype(np.float64) @ ax.T
    clear = np.abs(dense - 0.5) > 1e-5
    assert got.shape == (9, *orig_hw) and got.dtype == np.bool_
    np.testing.assert_array_equal(got[clear], (dense > 0.5)[clear])
    assert got[3].sum() > 0 and got[7].sum() == 0


def test_runtime_import_stays_light() -> None:
    code = (
        "import sys, solo_deploy.runtime, solo_deploy.runtime.postprocess\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'cupy', 'lightning', 'pytorch_lightning')"
        " or m.startswith(('solo_deploy.training', 'solo_deploy.model'))]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_min_area_factor_keeps_small_masks() -> None:
    """The reference area rule drops a 2x2-cell mask on a stride-8 level; factor 0 keeps it."""
    grids, strides = (4,), (8,)
    scores = np.zeros((16, 1), np.float32)
    scores[5, 0] = 0.9
    kernels = np.zeros((16, 2), np.float32)
    kernels[5] = [20.0, -10.0]  # logit +10 inside the blob, -10 elsewhere
    feat = np.zeros((2, 16, 16), np.float32)
    feat[0, 4:6, 4:6] = 1.0
    feat[1] = 1.0
    cells = cell_info(grids, strides, 1)
    assert len(postprocess_single(scores, kernels, [feat], cells, PostprocessConfig(), (64, 64))) == 0
    det = postprocess_single(scores, kernels, [feat], cells, PostprocessConfig(min_area_factor=0.0), (64, 64))
    assert len(det) == 1 and int((det.soft_masks[0] > 0.5).sum()) == 4


# ---------------------------------------------------------------------------------------------
# CUDA: the same code on torch CUDA tensors and CuPy arrays (marked gpu; skipped without one)
# ---------------------------------------------------------------------------------------------
def _cuda_lib(lib: str):
    if lib == "torch-cuda":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device: torch.cuda.is_available() is False")
        return lambda a: _t(a).cuda(), lambda x: isinstance(x, torch.Tensor) and x.is_cuda
    try:
        import cupy as cp
    except ImportError:
        pytest.skip("CuPy is not installed (pip install solo-deploy[cuda])")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("CuPy sees no CUDA device")
    except Exception as e:  # noqa: BLE001 - CUDARuntimeError when no driver is present
        pytest.skip(f"CuPy sees no CUDA device ({type(e).__name__})")
    return cp.asarray, lambda x: isinstance(x, cp.ndarray)


@pytest.mark.gpu
@pytest.mark.parametrize("lib", ["torch-cuda", "cupy"])
@pytest.mark.parametrize("solo", [False, True], ids=["solov2", "solo"])
def test_cuda_matches_numpy_and_stays_on_device(lib: str, solo: bool) -> None:
    to_dev, on_dev = _cuda_lib(lib)
    grids = (6, 4, 3)
    scores, kernels, feats = random_outputs(5, grids=grids, solo=solo, n=2)
    cells = cell_info(grids, (8, 16, 32), len(feats))
    for cfg in (CFG, replace(CFG, kernel="linear"), replace(CFG, min_area_factor=0.0)):
        a = postprocess_batch(scores, kernels, feats, cells, cfg, (64, 64))
        b = postprocess_batch(to_dev(scores), to_dev(kernels), [to_dev(f) for f in feats], cells, cfg, (64, 64))
        lb = PreprocessSpec(input_hw=(64, 64)).plan((50, 30))
        for da, db in zip(a, b):
            assert len(da) > 3
            assert on_dev(db.soft_masks) and on_dev(db.scores) and on_dev(db.labels)
            img_dev = masks_to_image(db, (64, 64), lb, 0.5)
            assert on_dev(img_dev)  # the final masks are made on the device too
            host = db.to_numpy()
            np.testing.assert_array_equal(da.labels, host.labels)
            np.testing.assert_allclose(da.scores, host.scores, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(da.soft_masks, host.soft_masks, atol=1e-5)
            img_host = masks_to_image(da, (64, 64), lb, 0.5)
            # Resize weights are not exact in float32: allow pixels on the 0.5 boundary to flip.
            assert (to_numpy(img_dev) != img_host).mean() < 1e-3


@pytest.mark.gpu
def test_predictor_torch_cuda_matches_cpu() -> None:
    """The shipped model on val images: CUDA (outputs kept on the GPU) finds the CPU's instances."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False")
    from solo_deploy.app.models import load
    from solo_deploy.data.synthetic import SyntheticDataset
    from solo_deploy.runtime.defaults import default_model_path

    images = [SyntheticDataset("val")[i].image_bgr for i in range(4)]
    cpu = load(default_model_path(), backend="torch", device="cpu").predict_batch(images)
    gpu_pred = load(default_model_path(), backend="torch", device="cuda")
    raw = gpu_pred.runner(gpu_pred.preprocess(images)[0])
    assert raw[0].is_cuda and all(f.is_cuda for f in raw[2])  # post-processing starts on the GPU
    gpu = gpu_pred.predict_batch(images)
    matched = 0
    for c, g in zip(cpu, gpu):
        # cuDNN/TF32 convolutions move scores by ~1e-3: compare the confident instances only.
        for k in np.nonzero(c.scores > 0.3)[0]:
            same = [j for j in range(len(g)) if g.labels[j] == c.labels[k]]
            ious = [np.logical_and(c.masks[k], g.masks[j]).sum() / max(1, np.logical_or(c.masks[k], g.masks[j]).sum())
                    for j in same]
            assert ious and max(ious) > 0.9, f"CPU instance {k} (score {c.scores[k]:.3f}) has no CUDA match"
            j = same[int(np.argmax(ious))]
            assert abs(float(g.scores[j]) - float(c.scores[k])) < 0.02
            matched += 1
    assert matched >= 4
