"""Sigmoid + point NMS + flattening: the one small module shared by the export wrapper and
the PyTorch inference path, so both hand post-processing identical tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def point_nms(heat: torch.Tensor) -> torch.Tensor:
    """Keep only local maxima in each 2x2 neighbourhood (SOLOv2's points_nms).

    heat: float (N, C, S, S) probabilities -> same shape, non-peaks zeroed.
    """
    hmax = F.max_pool2d(heat, kernel_size=2, stride=1, padding=1)[:, :, :-1, :-1]
    return heat * (hmax == heat).to(heat.dtype)


class Decode(nn.Module):
    """(cate logits, kernels) per level -> flat (scores (N, cells, C), kernels (N, cells, E))."""

    def forward(self, cate: list[torch.Tensor], kernel: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        scores, kernels = [], []
        for c, k in zip(cate, kernel):
            heat = point_nms(torch.sigmoid(c))
            scores.append(heat.permute(0, 2, 3, 1).flatten(1, 2))
            kernels.append(k.permute(0, 2, 3, 1).flatten(1, 2))
        return torch.cat(scores, dim=1), torch.cat(kernels, dim=1)
