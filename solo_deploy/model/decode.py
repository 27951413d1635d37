"""Sigmoid + point NMS + flattening: the one small module shared by the export wrapper and
the PyTorch inference path, so both hand post-processing identical tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .heads import RawOutputs


def point_nms(heat: torch.Tensor) -> torch.Tensor:
    """Keep only local maxima in each 2x2 neighbourhood (SOLOv2's points_nms).

    heat: float (N, C, S, S) probabilities -> same shape, non-peaks zeroed.
    """
    hmax = F.max_pool2d(heat, kernel_size=2, stride=1, padding=1)[:, :, :-1, :-1]
    return heat * (hmax == heat).to(heat.dtype)


class Decode(nn.Module):
    """``RawOutputs`` -> what post-processing takes: ``(scores (N, cells, C), kernels (N, cells, E)
    or None, mask maps)``. Scores are sigmoid probabilities with non-peaks zeroed; the mask maps are
    ``mask_feat`` (SOLO, SOLOv2) or the decoupled heads' x-maps then y-maps (no kernels)."""

    def forward(self, out: RawOutputs) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        scores = [point_nms(torch.sigmoid(c)).permute(0, 2, 3, 1).flatten(1, 2) for c in out.cate]
        if out.mask_x:
            return torch.cat(scores, dim=1), None, [*out.mask_x, *out.mask_y]
        kernels = [k.permute(0, 2, 3, 1).flatten(1, 2) for k in out.kernel]
        return torch.cat(scores, dim=1), torch.cat(kernels, dim=1), list(out.mask_feat)
