"""Matrix NMS against a brute-force per-instance reference, on numpy and torch."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from solo_deploy.errors import BadInputError
from solo_deploy.runtime.postprocess import matrix_nms

BACKENDS = ["numpy", "torch"]


def _to(backend: str, a: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(a)) if backend == "torch" else a


def _np(a) -> np.ndarray:
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def matrix_nms_bruteforce(masks, labels, scores, kernel="gaussian", sigma=2.0) -> np.ndarray:
    """Per-instance loops straight from the SOLOv2 paper (Sec. 3.3.2), decayed scores in input order."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable, like the implementation
    rank = {i: r for r, i in enumerate(order)}
    out = np.zeros(len(scores), np.float64)
    for j in range(len(scores)):
        higher = [i for i in order[: rank[j]] if labels[i] == labels[j]]
        decay = 1.0
        for i in higher:
            iou_ij = _iou(masks[i], masks[j])
            # How much i itself is suppressed: its max IoU with higher-scored same-class masks.
            comp_i = max([_iou(masks[k], masks[i]) for k in order[: rank[i]] if labels[k] == labels[i]], default=0.0)
            if kernel == "gaussian":
                f = math.exp(-sigma * iou_ij**2) / math.exp(-sigma * comp_i**2)
            else:
                f = (1 - iou_ij) / max(1 - comp_i, 1e-6)
            decay = min(decay, f)
        out[j] = scores[j] * decay
    return out


def matrix_nms_reference_dense(masks, labels, scores, kernel="gaussian", sigma=2.0) -> np.ndarray:
    """The dense formulation of the SOLOv2 reference code (non-pairs not masked out), for comparison."""
    order = np.argsort(-scores, kind="stable")
    m = masks[order].reshape(len(order), -1).astype(np.float64)
    lab, sc = labels[order], scores[order].astype(np.float64)
    inter = m @ m.T
    s = m.sum(1)
    iou = np.triu(inter / (s[None, :] + s[:, None] - inter), k=1)
    same = np.triu((lab[None, :] == lab[:, None]).astype(np.float64), k=1)
    dec = iou * same
    comp = dec.max(0)[:, None]
    if kernel == "gaussian":
        coef = (np.exp(-sigma * dec**2) / np.exp(-sigma * comp**2)).min(0)
    else:
        coef = ((1 - dec) / (1 - comp)).min(0)
    out = np.empty_like(sc)
    out[order] = sc * coef
    return out


def random_instances(rng: np.random.Generator, k: int = 40, hw: int = 24, classes: int = 3):
    """Random rectangles (so IoUs span 0..1) with a few exact duplicates."""
    masks = np.zeros((k, hw, hw), bool)
    for i in range(k):
        y0, x0 = rng.integers(0, hw - 4, size=2)
        y1, x1 = y0 + rng.integers(3, hw - y0 + 1), x0 + rng.integers(3, hw - x0 + 1)
        masks[i, y0:y1, x0:x1] = True
    masks[5] = masks[2]
    masks[9] = masks[2]
    labels = rng.integers(0, classes, size=k).astype(np.int64)
    scores = rng.uniform(0.05, 1.0, size=k).astype(np.float32)
    return masks, labels, scores


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_bruteforce(backend: str, kernel: str, seed: int) -> None:
    masks, labels, scores = random_instances(np.random.default_rng(seed))
    got = matrix_nms(_to(backend, masks), _to(backend, labels), _to(backend, scores), kernel=kernel, sigma=2.0)
    want = matrix_nms_bruteforce(masks, labels, scores, kernel=kernel, sigma=2.0)
    assert _np(got).dtype == np.float32
    np.testing.assert_allclose(_np(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
def test_matches_dense_reference_formulation(kernel: str) -> None:
    masks, labels, scores = random_instances(np.random.default_rng(7))
    masks[9] = ~masks[9]  # no exact duplicates: the dense reference divides by zero on them (linear)
    masks[5, 0, 0] = ~masks[5, 0, 0]
    got = matrix_nms(masks, labels, scores, kernel=kernel)
    np.testing.assert_allclose(got, matrix_nms_reference_dense(masks, labels, scores, kernel), rtol=1e-5, atol=1e-6)


def test_numpy_and_torch_agree_and_masks_may_be_flat() -> None:
    masks, labels, scores = random_instances(np.random.default_rng(3))
    a = matrix_nms(masks, labels, scores)
    b = matrix_nms(torch.from_numpy(masks.reshape(len(masks), -1)), torch.from_numpy(labels), torch.from_numpy(scores))
    np.testing.assert_allclose(a, b.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_order_does_not_matter(backend: str) -> None:
    masks, labels, scores = random_instances(np.random.default_rng(4))
    perm = np.random.default_rng(5).permutation(len(scores))
    base = _np(matrix_nms(_to(backend, masks), _to(backend, labels), _to(backend, scores)))
    shuffled = _np(matrix_nms(_to(backend, masks[perm]), _to(backend, labels[perm]), _to(backend, scores[perm])))
    np.testing.assert_allclose(shuffled, base[perm], rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_same_class_pairs_decay(backend: str) -> None:
    m = np.zeros((3, 8, 8), bool)
    m[:, 2:6, 2:6] = True  # three identical masks
    labels = np.array([0, 1, 0], np.int64)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    g = _np(matrix_nms(_to(backend, m), _to(backend, labels), _to(backend, scores), kernel="gaussian", sigma=2.0))
    # Class 1 is alone: untouched. The lower class-0 copy (IoU 1 with an unsuppressed one) decays by e^-2.
    np.testing.assert_allclose(g, [0.9, 0.8, 0.7 * math.exp(-2.0)], rtol=1e-6)
    lin = _np(matrix_nms(_to(backend, m), _to(backend, labels), _to(backend, scores), kernel="linear"))
    np.testing.assert_allclose(lin, [0.9, 0.8, 0.0], atol=1e-6)


def test_identical_masks_of_different_classes_do_not_decay() -> None:
    m = np.ones((4, 5, 5), bool)
    labels = np.arange(4, dtype=np.int64)
    scores = np.array([0.4, 0.9, 0.6, 0.3], np.float32)
    np.testing.assert_array_equal(matrix_nms(m, labels, scores), scores)


def test_compensation_spares_instances_suppressed_by_a_suppressed_one() -> None:
    # A (top) overlaps B heavily; B overlaps C heavily; A and C are disjoint. C's decay from B is
    # compensated by B's own IoU with A, so C keeps more than without compensation.
    m = np.zeros((3, 1, 30), bool)
    m[0, 0, 0:10] = True
    m[1, 0, 2:16] = True
    m[2, 0, 12:26] = True
    labels = np.zeros(3, np.int64)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    got = matrix_nms(m, labels, scores)
    iou_ab, iou_bc = 8 / 16, 4 / 24
    want_c = 0.7 * min(1.0, math.exp(-2 * (iou_bc**2 - iou_ab**2)))
    np.testing.assert_allclose(got, [0.9, 0.8 * math.exp(-2 * iou_ab**2), want_c], rtol=1e-6)


def test_ties_keep_input_order_and_sum_masks_is_used() -> None:
    m = np.ones((2, 4, 4), bool)
    labels = np.zeros(2, np.int64)
    scores = np.array([0.5, 0.5], np.float32)
    got = matrix_nms(m, labels, scores)
    np.testing.assert_allclose(got, [0.5, 0.5 * math.exp(-2.0)], rtol=1e-6)
    same = matrix_nms(m, labels, scores, sum_masks=np.full(2, 16.0, np.float32))
    np.testing.assert_allclose(same, got)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_errors(backend: str) -> None:
    out = matrix_nms(_to(backend, np.zeros((0, 4, 4), bool)), _to(backend, np.zeros(0, np.int64)),
                     _to(backend, np.zeros(0, np.float32)))
    assert tuple(out.shape) == (0,)
    with pytest.raises(BadInputError):
        matrix_nms(np.ones((2, 3, 3), bool), np.zeros(2, np.int64), np.ones(2, np.float32), kernel="box")
    with pytest.raises(BadInputError):
        matrix_nms(np.ones((2, 3, 3), bool), np.zeros(3, np.int64), np.ones(2, np.float32))


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
def test_one_block_with_labels_equals_per_class_blocks(kernel: str) -> None:
    # GPUs take the single K x K block (pairs masked by label), CPUs one block per class: the two
    # must decay every score identically.
    from solo_deploy.runtime.postprocess import _decay, _matrix_nms_sorted

    rng = np.random.default_rng(3)
    k, p = 40, 64
    masks = rng.random((k + 5, p)) > 0.6
    rows = rng.permutation(k + 5)[:k].astype(np.int64)
    labels = rng.integers(0, 3, k).astype(np.int64)
    scores = np.sort(rng.random(k).astype(np.float32))[::-1].copy()
    sums = masks[rows].sum(1).astype(np.float32)
    per_class = _matrix_nms_sorted(np, masks, rows, labels, scores, sums, kernel, 2.0)
    one_block = _decay(np, masks[rows].astype(np.float32), scores, sums, kernel, 2.0, labels=labels)
    np.testing.assert_allclose(per_class, one_block, rtol=1e-6, atol=1e-7)
    assert (per_class < scores).any()  # the inputs overlap enough for decay to happen
