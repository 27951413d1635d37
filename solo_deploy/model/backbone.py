"""ResNet backbone + FPN from torchvision (random init, or weights from a local file)."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ..errors import BadInputError
from ..limits import check_checkpoint_size

_RESNETS = {"resnet18": (resnet.resnet18, 64), "resnet34": (resnet.resnet34, 64), "resnet50": (resnet.resnet50, 256),
            "resnet101": (resnet.resnet101, 256)}


class BackboneFPN(nn.Module):
    """ResNet C2..C5 -> FPN P2..P6 (P6 by max-pooling P5, as torchvision's LastLevelMaxPool).

    Input float32 (N, 3, H, W), H and W multiples of 32. Output: list of 5 tensors
    (N, fpn_channels, H/s, W/s) for s = 4, 8, 16, 32, 64.
    """

    def __init__(self, name: str, fpn_channels: int, weights: str | Path | None = None,
                 stride_in_1x1: bool = False) -> None:
        super().__init__()
        if name not in _RESNETS:
            raise BadInputError(f"unknown backbone {name!r}: expected one of {', '.join(_RESNETS)}")
        ctor, c2 = _RESNETS[name]
        body = ctor(weights=None)
        if stride_in_1x1:
            if not isinstance(body.layer2[0], resnet.Bottleneck):
                raise BadInputError(f"stride_in_1x1 applies to bottleneck ResNets (50/101), not {name}")
            for layer in (body.layer2, body.layer3, body.layer4):
                block = layer[0]  # the stride moves from the 3x3 to the 1x1 before it (same shapes)
                block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
        if weights is not None:
            load_backbone_weights(body, weights)
        self.body = IntermediateLayerGetter(
            body, return_layers={"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}
        )
        in_channels = [c2, c2 * 2, c2 * 4, c2 * 8]
        self.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=LastLevelMaxPool())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        return list(self.fpn(OrderedDict(feats)).values())


def load_backbone_weights(body: nn.Module, path: str | Path) -> None:
    """Load an ImageNet (torchvision) ResNet state dict from a local file; the fc layer is ignored."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"backbone weights file not found: {path}")
    check_checkpoint_size(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad file
        raise BadInputError(f"cannot read backbone weights {path}: {exc}".splitlines()[0]) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("backbone.body.").removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = body.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise BadInputError(
            f"backbone weights {path} do not match: {len(missing)} missing, {len(unexpected)} unexpected keys"
        )
