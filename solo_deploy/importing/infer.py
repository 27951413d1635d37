"""Work out a ``ModelConfig`` from mmdetection-named SOLO tensors (and its config, if any).

The tensors decide what they can: the architecture (``conv_kernel`` -> SOLOv2, ``conv_mask_list``
-> SOLO, ``conv_mask_list_x`` -> decoupled SOLO, light without ``mask_convs_x``), the ResNet
depth (blocks per stage, basic or bottleneck), FPN and head widths, the number of stacked
convolutions and classes, SOLOv2's kernel length and mask-feature width, and the grids of SOLO
(one ``conv_mask_list`` entry of S^2 outputs per level) and decoupled SOLO (S outputs). What the
weights cannot show (SOLOv2's grids, strides, scale ranges, GroupNorm groups) comes from the
checkpoint's config when it has one, else from mmdetection's defaults for the recognised family.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.config import PRESETS, ModelConfig
from ..errors import BadInputError
from ..model.keymap import weights_arch

__all__ = ["Inferred", "family_preset", "infer_config"]

# Blocks per ResNet stage -> torchvision name (bottleneck blocks have conv3).
_DEPTHS = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34",
           ((3, 4, 6, 3), True): "resnet50", ((3, 4, 23, 3), True): "resnet101"}
_DEFAULT_GRIDS = (40, 36, 24, 16, 12)  # mmdetection SOLO / SOLOv2 configs
_DEFAULT_STRIDES = (8, 8, 16, 32, 32)
# The reference preset whose defaults a family takes when the config does not say.
_FAMILY_PRESET = {"solo": "solo-r50", "solov2": "solov2-r50", "solov2-light": "solov2-light-r50",
                  "decoupled-solo": "decoupled-solo-r50", "decoupled-solo-light": "decoupled-solo-light-r50"}


@dataclass(frozen=True)
class Inferred:
    """The inferred config, the reference preset it equals (or None), and where each field came from."""

    config: ModelConfig
    preset: str | None
    family: str  # "solo" | "solov2" | "solov2-light" | "decoupled-solo" | "decoupled-solo-light"
    sources: dict[str, str]


def family_preset(family: str) -> str:
    """The reference preset of an inferred family (its defaults, e.g. mmdetection's test scale)."""
    return _FAMILY_PRESET[family]


def _count(state: Mapping[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state for m in [rx.match(k)] if m})


def _shape(state: Mapping[str, Any], key: str) -> tuple[int, ...]:
    if key not in state:
        raise BadInputError(f"the checkpoint has no {key}: not an mmdetection SOLO / SOLOv2 model")
    return tuple(int(d) for d in state[key].shape)


def _ints(value: Any, n: int | None = None) -> tuple[int, ...] | None:
    ok = isinstance(value, (list, tuple)) and value and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    return tuple(int(v) for v in value) if ok and (n is None or len(value) == n) else None


def infer_config(state: Mapping[str, Any], model_cfg: Mapping[str, Any] | None = None,
                 caffe_style: bool = False) -> Inferred:
    """``state``: mmdetection 3.x names. ``model_cfg``: the config's ``model`` dict, when known.
    ``caffe_style``: a caffe-style / detectron2 ResNet, whose bottlenecks stride in their 1x1
    convolution (basic blocks are the same in both styles)."""
    model_cfg = dict(model_cfg or {})
    backbone_cfg = model_cfg.get("backbone") if isinstance(model_cfg.get("backbone"), dict) else {}
    kind = backbone_cfg.get("type", "ResNet")
    if isinstance(kind, str) and kind.split(".")[-1] != "ResNet":
        raise BadInputError(f"the checkpoint's backbone is {kind}: solo-deploy builds torchvision ResNets only")
    head_cfg = model_cfg.get("mask_head") if isinstance(model_cfg.get("mask_head"), dict) else {}
    sources: dict[str, str] = {}
    arch = weights_arch(state)
    if arch is None:
        raise BadInputError("the checkpoint has none of mask_head.conv_kernel (SOLOv2), mask_head.conv_mask_list "
                            "(SOLO) or mask_head.conv_mask_list_x (decoupled SOLO): not an mmdetection SOLO model")
    blocks = tuple(_count(state, rf"backbone\.layer{i}\.(\d+)\.") for i in range(1, 5))
    bottleneck = "backbone.layer1.0.conv3.weight" in state
    backbone = _DEPTHS.get((blocks, bottleneck))
    if backbone is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise BadInputError(f"unsupported ResNet: {blocks} {kind} blocks per stage; solo-deploy has ResNet-18/34/50/"
                            "101")
    num_classes, head_channels = _shape(state, "mask_head.conv_cls.weight")[:2]
    fpn_channels = _shape(state, "neck.lateral_convs.0.conv.weight")[0]
    stacked = _count(state, r"mask_head\.cls_convs\.(\d+)\.")
    kw: dict[str, Any] = {"arch": arch, "backbone": backbone, "num_classes": num_classes, "fpn_channels": fpn_channels,
                          "head_channels": head_channels, "stacked_convs": stacked}
    sources.update(dict.fromkeys(kw, "weights"))
    if arch == "solov2":
        kw["mask_channels"] = _shape(state, "mask_head.conv_kernel.weight")[0]
        kw["mask_feat_channels"] = _shape(state, "mask_head.mask_feature_head.convs_all_levels.0.conv0.conv.weight")[0]
        sources.update(mask_channels="weights", mask_feat_channels="weights")
        grids = _ints(head_cfg.get("num_grids"))
        if grids:
            kw["grids"], sources["grids"] = grids, "config"
        else:
            kw["grids"], sources["grids"] = _DEFAULT_GRIDS, "mmdetection default"
    elif arch.startswith("decoupled-"):
        levels = _count(state, r"mask_head\.conv_mask_list_x\.(\d+)\.weight")
        kw["grids"] = tuple(_shape(state, f"mask_head.conv_mask_list_x.{i}.weight")[0] for i in range(levels))
        sources["grids"] = "weights"
    else:
        levels = _count(state, r"mask_head\.conv_mask_list\.(\d+)\.weight")
        grids = []
        for i in range(levels):
            cells = _shape(state, f"mask_head.conv_mask_list.{i}.weight")[0]
            side = math.isqrt(cells)
            if side * side != cells:
                raise BadInputError(f"mask_head.conv_mask_list.{i} has {cells} outputs, not a square grid")
            grids.append(side)
        kw["grids"], sources["grids"] = tuple(grids), "weights"
    light = arch == "solov2" and stacked == 2 and kw["mask_channels"] == 128
    family = "solov2-light" if light else arch
    ref = PRESETS[_FAMILY_PRESET[family]]
    strides = _ints(head_cfg.get("strides"), len(kw["grids"]))
    kw["strides"], sources["strides"] = (strides, "config") if strides else (ref.strides, "mmdetection default")
    ranges = head_cfg.get("scale_ranges")
    pairs = tuple(_ints(r, 2) for r in ranges) if isinstance(ranges, (list, tuple)) else ()
    if len(pairs) == len(kw["grids"]) and all(pairs):
        kw["scale_ranges"], sources["scale_ranges"] = pairs, "config"
    else:
        kw["scale_ranges"], sources["scale_ranges"] = ref.scale_ranges, "mmdetection default"
    if len(kw["strides"]) != len(kw["grids"]):
        kw["strides"], sources["strides"] = _DEFAULT_STRIDES[: len(kw["grids"])], "mmdetection default"
    norm = head_cfg.get("norm_cfg") if isinstance(head_cfg.get("norm_cfg"), dict) else {}
    groups = norm.get("num_groups")
    ok = isinstance(groups, int) and not isinstance(groups, bool) and groups > 0
    kw["norm_groups"], sources["norm_groups"] = (groups, "config") if ok else (32, "mmdetection default")
    pos_scale = head_cfg.get("pos_scale")
    if isinstance(pos_scale, float) and 0 < pos_scale <= 1:
        kw["sigma"], sources["sigma"] = pos_scale, "config"
    if caffe_style and bottleneck:
        kw["stride_in_1x1"], sources["stride_in_1x1"] = True, "caffe-style / detectron2 ResNet"
    cfg = ModelConfig(**kw)
    preset = next((name for name, p in PRESETS.items()
                   if p.to_dict() == {**cfg.to_dict(), "num_classes": p.num_classes}), None)
    return Inferred(cfg, preset, family, sources)
