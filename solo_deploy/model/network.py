"""The SOLO / SOLOv2 / decoupled SOLO network: backbone + FPN + head, returning ``RawOutputs``."""
from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from ..core.config import ModelConfig
from .backbone import BackboneFPN
from .heads import DecoupledSOLOHead, RawOutputs, SOLOHead, SOLOv2Head


class SOLONet(nn.Module):
    """float32 (N, 3, H, W) normalised RGB -> ``RawOutputs`` (see heads.py for shapes)."""

    def __init__(self, cfg: ModelConfig, backbone_weights: str | Path | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = BackboneFPN(cfg.backbone, cfg.fpn_channels, backbone_weights, stride_in_1x1=cfg.stride_in_1x1)
        if cfg.decoupled:
            self.head: nn.Module = DecoupledSOLOHead(cfg)
        else:
            self.head = SOLOv2Head(cfg) if cfg.arch == "solov2" else SOLOHead(cfg)

    def forward(self, x: torch.Tensor) -> RawOutputs:
        return self.head(self.backbone(x))

    def class_dependent_prefixes(self) -> tuple[str, ...]:
        """Parameter name prefixes that depend on the number of classes (re-initialised by fine-tuning)."""
        return ("head.cate_out.",)


@functools.lru_cache(maxsize=16)
def declared_tensors(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``{state-dict key: (shape, dtype)}`` of the ``SOLONet`` that ``cfg`` builds, in its key order.

    Built on the meta device: nothing is allocated, so any config that passes its own checks
    can be described (model-file validation and the mmdetection key map both ask)."""
    with torch.device("meta"):
        state = SOLONet(cfg).state_dict()
    return {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
