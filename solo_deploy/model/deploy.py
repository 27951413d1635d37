"""The deployment wrapper: what every exported graph and the PyTorch runner compute.

uint8 RGB (N, H, W, 3) letterboxed (keep-ratio models: resized, unpadded) batch -> cast,
normalise, NHWC->NCHW (in-graph: cheap on a GPU and four times fewer bytes to copy in) -> pad to
a multiple of 32 (keep-ratio models only) -> network -> shared sigmoid/point-NMS decode ->
fixed-size named outputs:

- ``scores``  float32 (N, cells, C): category probabilities, non-peak cells zeroed;
- ``kernels`` float32 (N, cells, E): each cell's mask kernel;
- ``mask_feat`` float32 (N, E, H/4, W/4) for SOLOv2, or ``mask_feat_0..4`` (N, E, h_l, w_l) for SOLO;
- decoupled SOLO instead of ``kernels`` and ``mask_feat``: ``mask_x_0..4`` then ``mask_y_0..4``
  float32 (N, S_l, h_l, w_l), the column and row mask logits at strides 4, 4, 8, 16, 16.

Data-dependent selection (thresholds, top-k, NMS) stays out of the graph: TensorRT's TopK is
limited to K <= 3840 and SOLO has 3872 cells.
"""
from __future__ import annotations

import torch
from torch import nn

from ..core.meta import INPUT_NAME, output_names
from ..preprocess import PreprocessSpec
from .decode import Decode

__all__ = ["INPUT_NAME", "DeployWrapper", "output_names"]

_NORM_EPS = 1e-5  # cuDNN's minimum batch-norm epsilon


class DeployWrapper(nn.Module):
    def __init__(self, net: nn.Module, spec: PreprocessSpec) -> None:
        super().__init__()
        self.net = net
        self.decode = Decode()
        # Normalisation as one inference-mode BatchNormalization (x * inv_std - mean * inv_std):
        # ONNX Runtime's INT8 CPU graph moves the layout Transpose behind the normalisation, and a
        # Sub/Mul pair broadcasting over a last axis of 3 then ran ~10x slower than this op
        # (~2.5 ms of ~45 per image on 2 cores); TensorRT imports it as one scale layer.
        inv_std = 1.0 / torch.tensor(spec.std, dtype=torch.float32)
        self.register_buffer("norm_scale", inv_std, persistent=False)
        self.register_buffer("norm_shift", -torch.tensor(spec.mean, dtype=torch.float32) * inv_std, persistent=False)
        self.register_buffer("norm_zero", torch.zeros(3), persistent=False)
        # var + eps == 1 in float32; eps stays positive (CUDA's batch_norm rejects 0).
        self.register_buffer("norm_var", torch.full((3,), 1.0 - _NORM_EPS), persistent=False)
        # keep-ratio specs: the input is the resized image; it is padded here, after normalising,
        # to a multiple of size_divisor (mmdetection's order: the padding is the mean colour).
        self.pad_divisor = spec.size_divisor if spec.pads_in_graph else 0
        self.pad_value = float(spec.pad_value)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = images.permute(0, 3, 1, 2).to(self.norm_scale.dtype)
        x = nn.functional.batch_norm(x, self.norm_zero, self.norm_var, self.norm_scale, self.norm_shift,
                                     training=False, eps=_NORM_EPS)
        if self.pad_divisor:
            d = self.pad_divisor
            h, w = x.shape[-2], x.shape[-1]
            x = nn.functional.pad(x, (0, (d - w % d) % d, 0, (d - h % d) % d), value=self.pad_value)
        scores, kernels, maps = self.decode(self.net(x))
        return (scores, *maps) if kernels is None else (scores, kernels, *maps)
