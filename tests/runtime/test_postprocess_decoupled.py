"""Decoupled SOLO post-processing against a brute-force, one-candidate-at-a-time reference.

A decoupled head has no kernels: the mask of cell (i, j) is sigmoid(x_j) * sigmoid(y_i), each
level's maps taken through the sigmoid at their own resolution and upsampled to stride 4 first
(mmdetection's DecoupledSOLOHead). The reference here builds every candidate's mask on its own
with ``torch.nn.functional.interpolate`` in float64; the code under test upsamples whole levels
with its own resize matrices, on numpy and on torch, in one chunk or many.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_postprocess import CFG, finish_reference

from solo_deploy.core.config import PostprocessConfig
from solo_deploy.errors import BadInputError
from solo_deploy.runtime.postprocess import cell_info, postprocess_batch, postprocess_single

GRIDS, STRIDES = (6, 4, 3), (8, 16, 32)
INPUT_HW = (64, 64)
LOGITS = np.array([-3.0, -1.0, 1.0, 2.0, 4.0])  # no 0: sigmoid products keep away from 0.5 exactly


def random_decoupled(seed: int, classes: int = 4, n: int | None = None):
    """scores (cells, C) and the x-maps then y-maps of every level, (S_l, h_l, w_l) at strides 4,
    8, 16 of a 64 x 64 input (with a leading batch axis when ``n`` is given)."""
    rng = np.random.default_rng(seed)
    cells = sum(g * g for g in GRIDS)
    lead = () if n is None else (n,)
    scores = np.where(rng.random((*lead, cells, classes)) < 0.3, rng.random((*lead, cells, classes)), 0.0)
    sizes = [(16, 16), (8, 8), (4, 4)]
    maps = []
    for _ in "xy":
        for s, (h, w) in zip(GRIDS, sizes):
            m = rng.choice(LOGITS, size=(*lead, s, h, w))
            # Some rows / columns are off everywhere: their cells have empty masks (area rule).
            m[..., rng.random(s) < 0.25, :, :] = -3.0
            maps.append(m.astype(np.float32))
    return scores.astype(np.float32), maps


def reference_decoupled(scores, maps, cfg: PostprocessConfig):
    out_hw = (INPUT_HW[0] // 4, INPUT_HW[1] // 4)
    levels = len(GRIDS)
    where = [(lvl, r, c) for lvl, g in enumerate(GRIDS) for r in range(g) for c in range(g)]

    def prob(a):  # one map: sigmoid at its resolution, then bilinear to stride 4 (float64)
        p = torch.from_numpy(1.0 / (1.0 + np.exp(-a.astype(np.float64))))[None, None]
        return F.interpolate(p, size=out_hw, mode="bilinear", align_corners=False)[0, 0].numpy()

    cands = [(float(scores[c, k]), c, k) for c in range(scores.shape[0]) for k in range(scores.shape[1])
             if scores[c, k] > cfg.score_thr]
    cands = sorted(cands, key=lambda t: -t[0])[: cfg.max_candidates]
    kept = []
    for score, c, k in cands:
        lvl, r, col = where[c]
        soft = prob(maps[lvl][col]) * prob(maps[levels + lvl][r])
        binary = soft > cfg.mask_thr
        area = binary.sum()
        if area == 0 or area <= STRIDES[lvl] * cfg.min_area_factor:
            continue
        kept.append((score * float((soft * binary).sum() / area), k, soft, binary))
    return finish_reference(kept, cfg, out_hw)


def _assert_matches_reference(scores, maps, cfg, conv) -> None:
    det = postprocess_single(conv(scores), None, [conv(m) for m in maps], CELLS, cfg, INPUT_HW).to_numpy()
    soft, labels, sc = reference_decoupled(scores, maps, cfg)
    assert len(det) == len(labels) > 3
    np.testing.assert_array_equal(det.labels, labels)
    np.testing.assert_allclose(det.scores, sc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(det.soft_masks, soft, atol=1e-6)


CELLS = cell_info(GRIDS, STRIDES, 2 * len(GRIDS), decoupled=True)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_bruteforce_reference(backend: str, seed: int) -> None:
    scores, maps = random_decoupled(seed)
    conv = (lambda a: torch.from_numpy(a)) if backend == "torch" else (lambda a: a)
    for cfg in (CFG, replace(CFG, kernel="linear"), PostprocessConfig(), replace(CFG, min_area_factor=0.5)):
        _assert_matches_reference(scores, maps, cfg, conv)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_chunks_recomputation_and_candidate_cap(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from solo_deploy.runtime import postprocess as pp

    monkeypatch.setattr(pp, "_MASK_CHUNK_ELEMS", 3 * 16 * 16)  # 3 masks per chunk: recomputed after rescoring
    scores, maps = random_decoupled(3)
    conv = (lambda a: torch.from_numpy(a)) if backend == "torch" else (lambda a: a)
    n_cand = int((scores > 0.1).sum())
    for cfg in (CFG, replace(CFG, max_candidates=n_cand // 2)):
        _assert_matches_reference(scores, maps, cfg, conv)


def test_batch_numpy_and_torch_agree() -> None:
    scores, maps = random_decoupled(5, n=2)
    a = postprocess_batch(scores, None, maps, CELLS, CFG, INPUT_HW)
    b = postprocess_batch(torch.from_numpy(scores), None, [torch.from_numpy(m) for m in maps], CELLS, CFG, INPUT_HW)
    assert len(a) == len(b) == 2
    for i, (da, db) in enumerate(zip(a, b)):
        assert isinstance(db.soft_masks, torch.Tensor)
        one = postprocess_single(scores[i], None, [m[i] for m in maps], CELLS, CFG, INPUT_HW)
        db = db.to_numpy()
        np.testing.assert_array_equal(da.labels, db.labels)
        np.testing.assert_array_equal(da.labels, one.labels)
        np.testing.assert_allclose(da.scores, db.scores, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(da.soft_masks, db.soft_masks, atol=1e-6)


def test_wrong_outputs_are_one_line_errors() -> None:
    scores, maps = random_decoupled(0)
    with pytest.raises(BadInputError, match="no kernels"):
        postprocess_single(scores, np.zeros((scores.shape[0], 4), np.float32), maps, CELLS, CFG, INPUT_HW)
    with pytest.raises(BadInputError, match=r"expected 6 mask maps \(x then y per level\), got 5"):
        postprocess_single(scores, None, maps[:5], CELLS, CFG, INPUT_HW)
    bad = list(maps)
    bad[4] = np.zeros((5, 8, 8), np.float32)  # y-map of level 1 (grid 4) with 5 channels
    with pytest.raises(BadInputError, match=r"mask map y_1 has shape \(5, 8, 8\), expected \(4, h, w\)"):
        postprocess_single(scores, None, bad, CELLS, CFG, INPUT_HW)
    with pytest.raises(BadInputError, match="kernels are missing"):
        postprocess_batch(scores[None], None, [m[None] for m in maps], cell_info(GRIDS, STRIDES, 1), CFG, INPUT_HW)
    with pytest.raises(BadInputError, match="needs 6 mask maps"):
        cell_info(GRIDS, STRIDES, 3, decoupled=True)


def test_cell_rows_and_columns() -> None:
    # Cell order is level by level, row-major: cell 36 + 4 * 2 + 3 is level 1, row 2, column 3.
    c = 36 + 4 * 2 + 3
    assert (int(CELLS.level[c]), int(CELLS.row[c]), int(CELLS.col[c])) == (1, 2, 3)
    assert CELLS.num_cells == 36 + 16 + 9 and CELLS.decoupled
