"""The deployment wrapper: what every exported graph and the PyTorch runner compute.

uint8 RGB (N, H, W, 3) letterboxed batch -> cast, normalise, NHWC->NCHW (in-graph: cheap on a
GPU and four times fewer bytes to copy in) -> network -> shared sigmoid/point-NMS decode ->
fixed-size named outputs:

- ``scores``  float32 (N, cells, C): category probabilities, non-peak cells zeroed;
- ``kernels`` float32 (N, cells, E): each cell's mask kernel;
- ``mask_feat`` float32 (N, E, H/4, W/4) for SOLOv2, or ``mask_feat_0..4`` (N, E, h_l, w_l) for SOLO.

Data-dependent selection (thresholds, top-k, NMS) stays out of the graph: TensorRT's TopK is
limited to K <= 3840 and SOLO has 3872 cells.
"""
from __future__ import annotations

import torch
from torch import nn

from ..model.config import ModelConfig
from ..model.decode import Decode
from ..preprocess import PreprocessSpec

INPUT_NAME = "images"


def output_names(cfg: ModelConfig) -> list[str]:
    if cfg.arch == "solov2":
        return ["scores", "kernels", "mask_feat"]
    return ["scores", "kernels"] + [f"mask_feat_{i}" for i in range(cfg.num_levels)]


class DeployWrapper(nn.Module):
    def __init__(self, net: nn.Module, spec: PreprocessSpec) -> None:
        super().__init__()
        self.net = net
        self.decode = Decode()
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = images.permute(0, 3, 1, 2).to(self.mean.dtype)
        x = (x - self.mean) * self.inv_std
        out = self.net(x)
        scores, kernels = self.decode(out.cate, out.kernel)
        return (scores, kernels, *out.mask_feat)
