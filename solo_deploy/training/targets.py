"""SOLO target assignment, vectorised over the whole batch (no loop over objects or cells).

Rules (SOLO paper Sec. 3.2 and reference ``solo_target_single``):
- an object goes to every level whose scale range holds sqrt(box_w * box_h) (ranges overlap);
- its centre is the mask's centre of mass; the positive region is the centre region of size
  sigma * box, in grid cells, clamped to at most 3x3 cells around the centre cell; indices
  are clipped to the grid;
- where two objects claim the same cell, the smaller one wins (deterministic stand-in for the
  reference's last-writer-wins loop).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.config import ModelConfig


@dataclass
class Targets:
    """Targets of one batch.

    cate: int64 (N, cells), class index or ``num_classes`` for background.
    pos_img, pos_cell, pos_gt: int64 (P,) image index, flat cell index and object index
        (into the batch's concatenated objects) of each positive cell.
    mask: float32 (P, H/4, W/4) soft mask targets at stride 4 (area-averaged).
    """

    cate: torch.Tensor
    pos_img: torch.Tensor
    pos_cell: torch.Tensor
    pos_gt: torch.Tensor
    mask: torch.Tensor

    @property
    def num_pos(self) -> int:
        return int(self.pos_cell.numel())


def object_geometry(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """masks uint8/bool (K, H, W) -> centre of mass (K, 2) as (y, x) in pixels, box size (K, 2) as
    (h, w) in pixels, and area (K,) in pixels. Empty masks get zero size."""
    m = masks.float()
    _, h, w = m.shape
    area = m.sum(dim=(1, 2))
    rows = m.amax(dim=2)  # (K, H)
    cols = m.amax(dim=1)  # (K, W)
    ys = torch.arange(h, dtype=torch.float32, device=m.device)
    xs = torch.arange(w, dtype=torch.float32, device=m.device)
    denom = area.clamp(min=1)
    cy = (m.sum(dim=2) * ys).sum(dim=1) / denom
    cx = (m.sum(dim=1) * xs).sum(dim=1) / denom
    big = torch.tensor(1e9, device=m.device)
    y0 = torch.where(rows > 0, ys, big).amin(dim=1)
    y1 = torch.where(rows > 0, ys, -big).amax(dim=1)
    x0 = torch.where(cols > 0, xs, big).amin(dim=1)
    x1 = torch.where(cols > 0, xs, -big).amax(dim=1)
    bh = (y1 - y0 + 1).clamp(min=0)
    bw = (x1 - x0 + 1).clamp(min=0)
    return torch.stack([cy, cx], 1), torch.stack([bh, bw], 1), area


def build_targets(
    cfg: ModelConfig, masks: list[torch.Tensor], labels: list[torch.Tensor], input_hw: tuple[int, int]
) -> Targets:
    """Assign objects of a batch to grid cells.

    masks: N tensors uint8 (K_i, H, W) at the network input size; labels: N tensors int64 (K_i,).
    """
    device = masks[0].device if masks else torch.device("cpu")
    h, w = input_hw
    n = len(masks)
    cells = cfg.num_cells
    cate = torch.full((n, cells), cfg.num_classes, dtype=torch.int64, device=device)
    mh, mw = h // 4, w // 4
    all_masks = torch.cat([m.reshape(-1, h, w) for m in masks], 0) if n else torch.zeros(0, h, w, device=device)
    all_labels = torch.cat(labels, 0) if n else torch.zeros(0, dtype=torch.int64, device=device)
    img_of_gt = (
        torch.cat([torch.full((m.shape[0],), i, dtype=torch.int64, device=device) for i, m in enumerate(masks)])
        if n
        else torch.zeros(0, dtype=torch.int64, device=device)
    )
    empty = Targets(
        cate, *(torch.zeros(0, dtype=torch.int64, device=device),) * 3, torch.zeros(0, mh, mw, device=device)
    )
    if all_masks.shape[0] == 0:
        return empty
    center, size, area = object_geometry(all_masks)
    valid = area > 0
    scale = torch.sqrt(size[:, 0] * size[:, 1])

    offsets = torch.tensor([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], device=device)  # (9, 2)
    pos_img, pos_cell, pos_gt, prio = [], [], [], []
    start = 0
    for (lo, hi), s in zip(cfg.scale_ranges, cfg.grids):
        sel = torch.nonzero(valid & (scale >= lo) & (scale <= hi)).flatten()
        if sel.numel():
            cy, cx = center[sel, 0], center[sel, 1]
            half_h, half_w = 0.5 * size[sel, 0] * cfg.sigma, 0.5 * size[sel, 1] * cfg.sigma
            ci = (cy / h * s).long().clamp(0, s - 1)  # centre cell row
            cj = (cx / w * s).long().clamp(0, s - 1)
            top = torch.maximum(((cy - half_h) / h * s).long().clamp(0, s - 1), ci - 1)
            down = torch.minimum(((cy + half_h) / h * s).long().clamp(0, s - 1), ci + 1)
            left = torch.maximum(((cx - half_w) / w * s).long().clamp(0, s - 1), cj - 1)
            right = torch.minimum(((cx + half_w) / w * s).long().clamp(0, s - 1), cj + 1)
            ii = ci[:, None] + offsets[None, :, 0]
            jj = cj[:, None] + offsets[None, :, 1]
            ok = (ii >= top[:, None]) & (ii <= down[:, None]) & (jj >= left[:, None]) & (jj <= right[:, None])
            g = sel[:, None].expand_as(ii)[ok]
            pos_gt.append(g)
            pos_img.append(img_of_gt[g])
            pos_cell.append(start + ii[ok] * s + jj[ok])
            prio.append(-area[g])  # smaller objects win shared cells
        start += s * s
    if not pos_gt:
        return empty
    p_gt, p_img, p_cell, p_prio = (torch.cat(t) for t in (pos_gt, pos_img, pos_cell, prio))
    flat = p_img * cells + p_cell
    best = torch.full((n * cells,), -float("inf"), device=device).scatter_reduce(0, flat, p_prio, reduce="amax")
    keep = p_prio == best[flat]
    # Exact ties (equal areas on one cell): keep the last object, as the reference's loop does.
    p_gt, p_img, p_cell, flat = p_gt[keep], p_img[keep], p_cell[keep], flat[keep]
    last = torch.full((n * cells,), -1, dtype=torch.int64, device=device).scatter_reduce(0, flat, p_gt, reduce="amax")
    keep = p_gt == last[flat]
    p_gt, p_img, p_cell = p_gt[keep], p_img[keep], p_cell[keep]
    cate[p_img, p_cell] = all_labels[p_gt]
    small = F.adaptive_avg_pool2d(all_masks.float()[:, None], (mh, mw))[:, 0] if (h % 4 or w % 4) else \
        F.avg_pool2d(all_masks.float()[:, None], 4)[:, 0]
    return Targets(cate, p_img, p_cell, p_gt, small[p_gt])
