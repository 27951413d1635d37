"""SOLO losses as pure functions: focal loss on categories, dice loss on masks (SOLO Sec. 3.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from ..core.config import ModelConfig
from ..model.heads import RawOutputs
from .targets import Targets

FOCAL_ALPHA = 0.25  # SOLO: FocalLoss(alpha=0.25, gamma=2.0)
FOCAL_GAMMA = 2.0
DICE_WEIGHT = 3.0  # SOLO: loss_ins weight 3.0 (lambda in L = L_cate + lambda * L_mask)


def focal_loss(logits: torch.Tensor, cate: torch.Tensor, num_classes: int, num_pos: int) -> torch.Tensor:
    """logits float (M, C), cate int64 (M,) with ``num_classes`` for background -> scalar,
    summed and normalised by positives + 1."""
    onehot = F.one_hot(cate, num_classes + 1)[:, :num_classes].to(logits.dtype)
    loss = sigmoid_focal_loss(logits, onehot, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="sum")
    return loss / (num_pos + 1)


def dice_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred probabilities, target in [0, 1], both (P, H, W) -> per-mask loss (P,).

    1 - 2 sum(p t) / (sum(p^2) + sum(t^2)), with SOLO's 0.001 smoothing on each sum of squares.
    """
    p, t = pred.flatten(1), target.flatten(1)
    a = (p * t).sum(1)
    b = (p * p).sum(1) + 0.001
    c = (t * t).sum(1) + 0.001
    return 1 - 2 * a / (b + c)


def flatten_levels(tensors: list[torch.Tensor]) -> torch.Tensor:
    """L tensors (N, D, S_l, S_l) -> (N, cells, D), cells ordered level by level, row-major."""
    return torch.cat([t.permute(0, 2, 3, 1).flatten(1, 2) for t in tensors], 1)


def cell_levels(cfg: ModelConfig, device: torch.device) -> torch.Tensor:
    return torch.cat([torch.full((s * s,), i, dtype=torch.int64, device=device) for i, s in enumerate(cfg.grids)])


def predict_masks(
    cfg: ModelConfig, out: RawOutputs, img: torch.Tensor, cell: torch.Tensor, out_hw: tuple[int, int]
) -> torch.Tensor:
    """Mask logits (P, h, w) of chosen (image, cell) pairs: kernel row x mask features.

    SOLO features of coarser levels are upsampled (bilinear) to ``out_hw`` (stride 4).
    """
    kernels = flatten_levels(out.kernel)[img, cell]  # (P, E)
    levels = cell_levels(cfg, cell.device)[cell] if len(out.mask_feat) > 1 else torch.zeros_like(cell)
    logits = kernels.new_zeros((cell.numel(), *out_hw))
    # One matmul per (level, image) group: gathering a feature map per positive would copy
    # P x E x h x w floats, which dominated the step time on a CPU.
    for lvl, feat in enumerate(out.mask_feat):
        for i in range(feat.shape[0]):
            sel = torch.nonzero((levels == lvl) & (img == i)).flatten()
            if sel.numel() == 0:
                continue
            e, fh, fw = feat.shape[1:]
            m = (kernels[sel] @ feat[i].reshape(e, fh * fw)).reshape(-1, fh, fw)
            if (fh, fw) != tuple(out_hw):
                m = F.interpolate(m[:, None], size=out_hw, mode="bilinear", align_corners=False)[:, 0]
            logits[sel] = m
    return logits


def decoupled_mask_probs(
    cfg: ModelConfig, out: RawOutputs, img: torch.Tensor, cell: torch.Tensor, out_hw: tuple[int, int]
) -> torch.Tensor:
    """Decoupled SOLO mask probabilities (P, h, w) of chosen (image, cell) pairs:
    sigmoid(x-map of the cell's column) * sigmoid(y-map of its row), as the reference's loss
    computes them, upsampled to ``out_hw`` (stride 4) like SOLO's logits above."""
    levels = cell_levels(cfg, cell.device)[cell]
    starts = torch.tensor([0] + [s * s for s in cfg.grids], device=cell.device).cumsum(0)[:-1]
    grids = torch.tensor(cfg.grids, device=cell.device)
    in_level = cell - starts[levels]
    row, col = in_level // grids[levels], in_level % grids[levels]
    probs = out.mask_x[0].new_zeros((cell.numel(), *out_hw))
    for lvl, (mx, my) in enumerate(zip(out.mask_x, out.mask_y)):
        sel = torch.nonzero(levels == lvl).flatten()
        if sel.numel() == 0:
            continue
        m = torch.sigmoid(mx[img[sel], col[sel]]) * torch.sigmoid(my[img[sel], row[sel]])  # (k, h_l, w_l)
        if tuple(m.shape[-2:]) != tuple(out_hw):
            m = F.interpolate(m[:, None], size=out_hw, mode="bilinear", align_corners=False)[:, 0]
        probs[sel] = m
    return probs


def solo_loss(cfg: ModelConfig, out: RawOutputs, targets: Targets) -> dict[str, torch.Tensor]:
    """Total loss and its parts: {"loss", "loss_cate", "loss_mask"} (scalars)."""
    logits = flatten_levels(out.cate).reshape(-1, cfg.num_classes)
    num_pos = targets.num_pos
    loss_cate = focal_loss(logits, targets.cate.reshape(-1), cfg.num_classes, num_pos)
    if num_pos:
        out_hw = tuple(targets.mask.shape[-2:])
        if cfg.decoupled:
            probs = decoupled_mask_probs(cfg, out, targets.pos_img, targets.pos_cell, out_hw)
        else:
            probs = torch.sigmoid(predict_masks(cfg, out, targets.pos_img, targets.pos_cell, out_hw))
        loss_mask = dice_loss(probs, targets.mask).mean() * DICE_WEIGHT
    else:
        loss_mask = logits.sum() * 0.0
    return {"loss": loss_cate + loss_mask, "loss_cate": loss_cate, "loss_mask": loss_mask}
