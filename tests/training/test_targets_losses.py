"""Target assignment against hand-made cases and a per-object loop; losses against formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from solo_deploy.core.config import get_preset
from solo_deploy.training.losses import dice_loss, focal_loss
from solo_deploy.training.targets import build_targets


def _box_mask(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w, dtype=torch.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def loop_reference(cfg, masks, labels, hw):
    """Per-object loop following the SOLO reference's solo_target_single (later objects drawn
    smaller-last so that the smaller object wins a shared cell, as our vectorised version)."""
    h, w = hw
    cate = np.full(cfg.num_cells, cfg.num_classes, np.int64)
    owner = np.full(cfg.num_cells, -1, np.int64)
    m = masks.numpy().astype(bool)
    areas = m.sum((1, 2))
    order = np.argsort(-areas, kind="stable")
    start = 0
    for (lo, hi), s in zip(cfg.scale_ranges, cfg.grids):
        for k in order:
            ys, xs = np.nonzero(m[k])
            bh, bw = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
            scale = math.sqrt(bh * bw)
            if not (lo <= scale <= hi):
                continue
            cy, cx = ys.mean(), xs.mean()
            hh, hw_ = 0.5 * bh * cfg.sigma, 0.5 * bw * cfg.sigma
            ci, cj = min(int(cy / h * s), s - 1), min(int(cx / w * s), s - 1)
            top = max(min(max(int((cy - hh) / h * s), 0), s - 1), ci - 1)
            down = min(min(max(int((cy + hh) / h * s), 0), s - 1), ci + 1)
            left = max(min(max(int((cx - hw_) / w * s), 0), s - 1), cj - 1)
            right = min(min(max(int((cx + hw_) / w * s), 0), s - 1), cj + 1)
            for i in range(top, down + 1):
                for j in range(left, right + 1):
                    cate[start + i * s + j] = int(labels[k])
                    owner[start + i * s + j] = k
        start += s * s
    return cate, owner


def test_small_object_single_cell_level0():
    cfg = get_preset("solo-r50", num_classes=3)
    m = _box_mask(512, 512, 100, 140, 200, 240)[None]  # 40x40: scale 40 -> level 0 (1..96) only
    t = build_targets(cfg, [m], [torch.tensor([2])], (512, 512))
    pos = torch.nonzero(t.cate[0] < 3).flatten().tolist()
    # centre of mass (119.5, 219.5) on grid 40 of 512 px (12.8 px cells): centre cell (9, 17);
    # the sigma region is 8 x 8 px: rows 115.5..123.5 -> row 9, columns 215.5..223.5 -> 16..17.
    assert pos == [9 * 40 + 16, 9 * 40 + 17]
    assert t.cate[0, 9 * 40 + 17] == 2
    assert t.num_pos == 2 and tuple(t.mask.shape) == (2, 128, 128)
    assert torch.allclose(t.mask[0].sum(), torch.tensor(40 * 40 / 16.0))


def test_large_object_two_levels_clamped_3x3():
    cfg = get_preset("solo-r50", num_classes=3)
    m = _box_mask(512, 512, 100, 400, 100, 400)[None]  # 300x300: levels 2 (96..384) and 3 (192..768)
    t = build_targets(cfg, [m], [torch.tensor([1])], (512, 512))
    offsets = np.cumsum([0] + [s * s for s in cfg.grids])
    pos = torch.nonzero(t.cate[0] < 3).flatten().numpy()
    levels = np.searchsorted(offsets, pos, side="right") - 1
    assert set(levels.tolist()) == {2, 3}
    # sigma region = 60 px: 2.8 cells on grid 24 -> clamped to the 3x3 around the centre cell.
    lvl2 = pos[levels == 2] - offsets[2]
    assert sorted(lvl2.tolist()) == sorted((i * 24 + j) for i in (10, 11, 12) for j in (10, 11, 12))


def test_matches_loop_reference_random_objects():
    rng = np.random.default_rng(0)
    cfg = get_preset("solov2-cpu-r18", num_classes=4)
    hw = (256, 256)
    for _ in range(5):
        masks, labels = [], []
        k = int(rng.integers(1, 7))
        for _ in range(k):
            sz = int(rng.integers(6, 140))
            y0, x0 = int(rng.integers(0, 256 - sz)), int(rng.integers(0, 256 - sz))
            hh = max(2, int(sz * rng.uniform(0.1, 1.0)))
            masks.append(_box_mask(256, 256, y0, y0 + hh, x0, x0 + sz))
            labels.append(int(rng.integers(0, 4)))
        mt, lt = torch.stack(masks), torch.tensor(labels)
        t = build_targets(cfg, [mt], [lt], hw)
        ref_cate, ref_owner = loop_reference(cfg, mt, lt, hw)
        np.testing.assert_array_equal(t.cate[0].numpy(), ref_cate)
        # positives point at the right object (ties between equal areas may pick either).
        areas = mt.flatten(1).sum(1)
        owner = ref_owner[t.pos_cell.numpy()]
        assert np.all(areas[t.pos_gt].numpy() == areas[owner].numpy())


def test_batch_indices_and_empty_image():
    cfg = get_preset("solov2-cpu-r18", num_classes=4)
    m = _box_mask(256, 256, 50, 90, 50, 90)[None]
    empty = torch.zeros(0, 256, 256, dtype=torch.uint8)
    t = build_targets(cfg, [empty, m], [torch.zeros(0, dtype=torch.int64), torch.tensor([3])], (256, 256))
    assert (t.cate[0] == 4).all() and (t.cate[1] < 4).any()
    assert (t.pos_img == 1).all() and (t.pos_gt == 0).all()


def test_focal_loss_matches_formula():
    torch.manual_seed(0)
    logits = torch.randn(50, 3)
    cate = torch.randint(0, 4, (50,))  # 3 = background
    num_pos = int((cate < 3).sum())
    p = torch.sigmoid(logits)
    y = torch.nn.functional.one_hot(cate, 4)[:, :3].float()
    alpha, gamma = 0.25, 2.0
    direct = -(alpha * y * (1 - p) ** gamma * torch.log(p) + (1 - alpha) * (1 - y) * p ** gamma * torch.log(1 - p))
    expected = direct.sum() / (num_pos + 1)
    assert torch.allclose(focal_loss(logits, cate, 3, num_pos), expected, rtol=1e-5)


def test_dice_loss_matches_formula():
    torch.manual_seed(0)
    pred, target = torch.rand(4, 8, 8), (torch.rand(4, 8, 8) > 0.5).float()
    expected = torch.stack([
        1 - 2 * (pred[i] * target[i]).sum() / ((pred[i] ** 2).sum() + 0.001 + (target[i] ** 2).sum() + 0.001)
        for i in range(4)])
    assert torch.allclose(dice_loss(pred, target), expected, atol=1e-6)
    assert dice_loss(target, target).max() < 1e-3  # perfect masks: ~0 loss


def test_decoupled_mask_probs_are_column_times_row():
    from tests_helpers import tiny

    from solo_deploy.model.network import SOLONet
    from solo_deploy.training.losses import decoupled_mask_probs

    torch.manual_seed(0)
    cfg = tiny("decoupled-solo")  # grids 8, 6, 4, 3, 2
    out = SOLONet(cfg)(torch.randn(2, 3, 64, 64))
    # (image, level, row, column) -> flat cell index, level by level, row-major.
    picks = [(0, 0, 1, 5), (1, 2, 3, 0), (1, 4, 1, 1), (0, 1, 0, 2)]
    starts = np.cumsum([0] + [s * s for s in cfg.grids])
    img = torch.tensor([p[0] for p in picks])
    cell = torch.tensor([int(starts[lvl]) + r * cfg.grids[lvl] + c for _, lvl, r, c in picks])
    got = decoupled_mask_probs(cfg, out, img, cell, (16, 16))
    for k, (i, lvl, r, c) in enumerate(picks):
        want = torch.sigmoid(out.mask_x[lvl][i, c]) * torch.sigmoid(out.mask_y[lvl][i, r])
        want = torch.nn.functional.interpolate(want[None, None], size=(16, 16), mode="bilinear")[0, 0]
        torch.testing.assert_close(got[k], want)


@pytest.mark.parametrize("arch", ["solov2", "solo", "decoupled-solo", "decoupled-solo-light"])
def test_small_overfit_loss_halves(arch):
    from tests_helpers import tiny

    from solo_deploy.model.network import SOLONet
    from solo_deploy.training.losses import solo_loss

    torch.manual_seed(0)
    cfg = tiny(arch)
    net = SOLONet(cfg)
    img = torch.randn(1, 3, 64, 64)
    masks = torch.stack([_box_mask(64, 64, 8, 30, 6, 28), _box_mask(64, 64, 36, 60, 30, 62)])
    img[:, :, masks[0].bool()] += 2.0
    img[:, :, masks[1].bool()] -= 2.0
    labels = torch.tensor([0, 2])
    t = build_targets(cfg, [masks], [labels], (64, 64))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    first = None
    for _ in range(40):
        loss = solo_loss(cfg, net(img), t)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else float(loss)
    assert float(loss) < 0.5 * first
