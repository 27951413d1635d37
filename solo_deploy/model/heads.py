"""SOLO, SOLOv2 and decoupled SOLO heads. All return raw logits/features; no training/eval switch.

Unified raw output contract (``RawOutputs``), for L pyramid levels with grids S_l:
- ``cate``: L tensors (N, C, S_l, S_l), category logits.
- ``kernel``: L tensors (N, E, S_l, S_l), each cell's mask kernel. SOLOv2: predicted 1x1 dynamic
  kernels. SOLO: the weights and bias of the mask branch's last 1x1 convolution (one row per
  cell, E = head_channels + 1), broadcast over the batch, so that both architectures share
  the same "kernel x features" mask assembly and SOLO never materialises S^2 mask channels.
- ``mask_feat``: SOLOv2: 1 tensor (N, E, H/4, W/4), the unified mask features. SOLO: L tensors
  (N, E, h_l, w_l) at strides 4, 4, 8, 16, 16, the mask-branch features before the last 1x1
  convolution, with a constant ones channel appended for the bias. Decoupled SOLO: empty.
- ``mask_x`` / ``mask_y`` (decoupled SOLO only, else empty): L tensors (N, S_l, h_l, w_l) at
  strides 4, 4, 8, 16, 16, mask logits of the grid's columns (x) and rows (y). Cell (i, j) of
  level l has the mask sigmoid(mask_x[l][:, j]) * sigmoid(mask_y[l][:, i]), so a level needs 2 S_l
  maps instead of SOLO's S_l^2 (SOLO paper Sec. 3.4).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import ModelConfig


class RawOutputs(NamedTuple):
    cate: list[torch.Tensor]
    kernel: list[torch.Tensor]
    mask_feat: list[torch.Tensor]
    mask_x: tuple[torch.Tensor, ...] = ()
    mask_y: tuple[torch.Tensor, ...] = ()


def conv_gn_relu(cin: int, cout: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True)
    )


def coord_features(x: torch.Tensor) -> torch.Tensor:
    """CoordConv channels: (N, 2, H, W) with x then y in [-1, 1] (SOLO's linspace(-1, 1)).

    Written with arange rather than linspace so that it exports with dynamic H, W.
    """
    n, _, h, w = x.shape
    # float32 arange (the TorchScript exporter cannot export a float16 one); the step is a
    # tensor so that a dynamic-shape export keeps it symbolic instead of freezing the traced size.
    xs = torch.arange(w, dtype=torch.float32, device=x.device)
    ys = torch.arange(h, dtype=torch.float32, device=x.device)
    xs = xs * (2.0 / (xs[-1:].clamp(min=1.0))) - 1.0
    ys = ys * (2.0 / (ys[-1:].clamp(min=1.0))) - 1.0
    gx = xs.to(x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
    gy = ys.to(x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
    return torch.cat([gx, gy], dim=1)


def split_levels(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """P2..P6 -> the five head inputs at strides 8, 8, 16, 32, 32 (SOLO's split_feats)."""
    p2, p3, p4, p5, p6 = feats
    return [
        F.interpolate(p2, scale_factor=0.5, mode="bilinear", align_corners=False),
        p3,
        p4,
        p5,
        F.interpolate(p6, size=p5.shape[-2:], mode="bilinear", align_corners=False),
    ]


def _init_convs(module: nn.Module) -> None:
    # SOLO reference: normal_init(std=0.01) for head convolutions.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SOLOv2Head(nn.Module):
    """Category + dynamic-kernel branches on S x S grids, unified mask features at stride 4."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, f, g = cfg.fpn_channels, cfg.head_channels, cfg.norm_groups
        self.kernel_convs = nn.Sequential(
            *[conv_gn_relu(c + 2 if i == 0 else f, f, g) for i in range(cfg.stacked_convs)]
        )
        self.cate_convs = nn.Sequential(*[conv_gn_relu(c if i == 0 else f, f, g) for i in range(cfg.stacked_convs)])
        self.kernel_out = nn.Conv2d(f, cfg.mask_channels, 3, padding=1)
        self.cate_out = nn.Conv2d(f, cfg.num_classes, 3, padding=1)
        # Mask feature branch (SOLOv2 Sec. 3.2.2): P2..P5, each brought to stride 4 by
        # conv + 2x upsampling steps, CoordConv on the coarsest level, summed, then 1x1 to E.
        mf, mg = cfg.mask_feat_channels, min(g, cfg.mask_feat_channels)
        self.mask_levels = nn.ModuleList()
        for level in range(4):
            layers: list[nn.Module] = []
            if level == 0:
                layers.append(conv_gn_relu(c, mf, mg))
            for step in range(level):
                cin = (c + 2 if level == 3 else c) if step == 0 else mf
                layers += [conv_gn_relu(cin, mf, mg), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]
            self.mask_levels.append(nn.Sequential(*layers))
        self.mask_out = nn.Sequential(
            nn.Conv2d(mf, cfg.mask_channels, 1, bias=False), nn.GroupNorm(min(g, cfg.mask_channels), cfg.mask_channels),
            nn.ReLU(inplace=True),
        )
        _init_convs(self)
        nn.init.constant_(self.cate_out.bias, cfg.prior_bias)

    def forward(self, feats: list[torch.Tensor]) -> RawOutputs:
        cate, kernel = [], []
        for feat, s in zip(split_levels(feats), self.cfg.grids):
            kfeat = torch.cat([feat, coord_features(feat)], dim=1) if self.cfg.coord_kernel else feat
            kfeat = F.interpolate(kfeat, size=(s, s), mode="bilinear", align_corners=False)
            cfeat = kfeat[:, :-2] if self.cfg.coord_kernel else kfeat
            kernel.append(self.kernel_out(self.kernel_convs(kfeat)))
            cate.append(self.cate_out(self.cate_convs(cfeat)))
        mask = self.mask_levels[0](feats[0])
        for level in range(1, 4):
            x = feats[level]
            if level == 3:
                x = torch.cat([x, coord_features(x)], dim=1)
            mask = mask + self.mask_levels[level](x)
        return RawOutputs(cate, kernel, [self.mask_out(mask)])


class SOLOHead(nn.Module):
    """The original SOLO head: per level, a category branch on the S x S grid and a mask branch
    (CoordConv + stacked convs + 2x upsampling + 1x1 conv to S^2 channels)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, f, g = cfg.fpn_channels, cfg.head_channels, cfg.norm_groups
        self.mask_convs = nn.Sequential(*[conv_gn_relu(c + 2 if i == 0 else f, f, g) for i in range(cfg.stacked_convs)])
        self.cate_convs = nn.Sequential(*[conv_gn_relu(c if i == 0 else f, f, g) for i in range(cfg.stacked_convs)])
        self.cate_out = nn.Conv2d(f, cfg.num_classes, 3, padding=1)
        # The last 1x1 convolution of each level's mask branch: S^2 output channels, one per cell.
        self.mask_weight = nn.ParameterList([nn.Parameter(torch.empty(s * s, f)) for s in cfg.grids])
        self.mask_bias = nn.ParameterList([nn.Parameter(torch.zeros(s * s)) for s in cfg.grids])
        _init_convs(self)
        for w in self.mask_weight:
            nn.init.normal_(w, std=0.01)
        nn.init.constant_(self.cate_out.bias, cfg.prior_bias)

    def forward(self, feats: list[torch.Tensor]) -> RawOutputs:
        cate, kernel, mask_feat = [], [], []
        for level, (feat, s) in enumerate(zip(split_levels(feats), self.cfg.grids)):
            n = feat.shape[0]
            m = self.mask_convs(torch.cat([feat, coord_features(feat)], dim=1))
            m = F.interpolate(m, scale_factor=2.0, mode="bilinear", align_corners=False)
            ones = torch.ones_like(m[:, :1])
            mask_feat.append(torch.cat([m, ones], dim=1))
            w = torch.cat([self.mask_weight[level], self.mask_bias[level][:, None]], dim=1)  # (S^2, E)
            kernel.append(w.t().reshape(1, -1, s, s).expand(n, -1, -1, -1))
            cfeat = F.interpolate(feat, size=(s, s), mode="bilinear", align_corners=False)
            cate.append(self.cate_out(self.cate_convs(cfeat)))
        return RawOutputs(cate, kernel, mask_feat)


class DecoupledSOLOHead(nn.Module):
    """Decoupled SOLO: per level, a category branch on the S x S grid and x / y mask branches of
    S outputs each (mmdetection's DecoupledSOLOHead). ``light`` (DecoupledSOLOLightHead): one
    mask tower with both coordinates, feeding both output convolutions; otherwise an x tower
    (input + x coordinate) and a y tower (input + y coordinate)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.light = cfg.arch == "decoupled-solo-light"
        c, f, g = cfg.fpn_channels, cfg.head_channels, cfg.norm_groups
        if self.light:
            self.mask_convs = nn.Sequential(
                *[conv_gn_relu(c + 2 if i == 0 else f, f, g) for i in range(cfg.stacked_convs)])
        else:
            self.mask_convs_x = nn.Sequential(
                *[conv_gn_relu(c + 1 if i == 0 else f, f, g) for i in range(cfg.stacked_convs)])
            self.mask_convs_y = nn.Sequential(
                *[conv_gn_relu(c + 1 if i == 0 else f, f, g) for i in range(cfg.stacked_convs)])
        self.cate_convs = nn.Sequential(*[conv_gn_relu(c if i == 0 else f, f, g) for i in range(cfg.stacked_convs)])
        self.cate_out = nn.Conv2d(f, cfg.num_classes, 3, padding=1)
        self.mask_x_out = nn.ModuleList([nn.Conv2d(f, s, 3, padding=1) for s in cfg.grids])
        self.mask_y_out = nn.ModuleList([nn.Conv2d(f, s, 3, padding=1) for s in cfg.grids])
        _init_convs(self)
        # mmdetection: Normal(std=0.01, bias_prob=0.01) on conv_cls and both conv_mask_list_x/_y.
        for conv in (self.cate_out, *self.mask_x_out, *self.mask_y_out):
            nn.init.constant_(conv.bias, cfg.prior_bias)

    def forward(self, feats: list[torch.Tensor]) -> RawOutputs:
        cate, xs, ys = [], [], []
        for level, (feat, s) in enumerate(zip(split_levels(feats), self.cfg.grids)):
            coord = coord_features(feat)
            if self.light:
                mx = my = self.mask_convs(torch.cat([feat, coord], dim=1))
            else:
                mx = self.mask_convs_x(torch.cat([feat, coord[:, :1]], dim=1))
                my = self.mask_convs_y(torch.cat([feat, coord[:, 1:]], dim=1))
            mx = F.interpolate(mx, scale_factor=2.0, mode="bilinear", align_corners=False)
            my = mx if self.light else F.interpolate(my, scale_factor=2.0, mode="bilinear", align_corners=False)
            xs.append(self.mask_x_out[level](mx))
            ys.append(self.mask_y_out[level](my))
            cfeat = F.interpolate(feat, size=(s, s), mode="bilinear", align_corners=False)
            cate.append(self.cate_out(self.cate_convs(cfeat)))
        return RawOutputs(cate, [], [], tuple(xs), tuple(ys))
