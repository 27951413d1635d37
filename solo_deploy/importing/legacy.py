"""SOLO / SOLOv2 weights from two older code bases, renamed to mmdetection 3.x names.

:func:`keymap.from_mmdet <solo_deploy.model.keymap.from_mmdet>` reads mmdetection 3.x names; the
functions here rename (never copy or change) the tensors of

* **WXinlong/SOLO** (the authors' mmdetection 1.x code: ``SingleStageInsDetector`` with a
  ``bbox_head`` = ``SOLOHead`` / ``SOLOv2Head`` / ``SOLOv2LightHead`` / ``DecoupledSOLOHead`` /
  ``DecoupledSOLOLightHead`` and, for SOLOv2, a
  ``mask_feat_head`` = ``MaskFeatHead``). Its configs say ``num_classes=81`` but the category
  convolution has ``num_classes - 1 = 80`` outputs; channel c is COCO class c in both code bases
  (mmdetection 1.x's focal loss maps label c + 1 to channel c), so no channel moves.
* **AdelaiDet SOLOv2** (detectron2: ``backbone.bottom_up`` ResNet, ``backbone.fpn_*`` FPN,
  ``ins_head`` towers as ``nn.Sequential(conv, GroupNorm, ReLU, ...)``, ``mask_head``).

``{i}``, ``{j}``, ``{b}``, ``{k}``, ``{p}`` are indices and parameter names kept as they are:

========================================================  =========================================================
WXinlong/SOLO                                             mmdetection 3.x
========================================================  =========================================================
``backbone.{rest}``, ``neck.{rest}``                      unchanged (same ResNet and FPN names)
``bbox_head.cate_convs.{i}.conv|gn.{p}``                  ``mask_head.cls_convs.{i}.conv|gn.{p}``
``bbox_head.solo_cate.{p}``                               ``mask_head.conv_cls.{p}``
SOLOv2 ``bbox_head.kernel_convs.{i}.conv|gn.{p}``         ``mask_head.kernel_convs.{i}.conv|gn.{p}``
SOLOv2 ``bbox_head.solo_kernel.{p}``                      ``mask_head.conv_kernel.{p}``
SOLOv2 ``mask_feat_head.convs_all_levels.{i}.conv{j}.``   ``mask_head.mask_feature_head.convs_all_levels.{i}.``
``conv|gn.{p}``                                           ``conv{j}.conv|gn.{p}``
SOLOv2 ``mask_feat_head.conv_pred.0.conv|gn.{p}``         ``mask_head.mask_feature_head.conv_pred.conv|gn.{p}``
SOLO ``bbox_head.ins_convs.{i}.conv|gn.{p}``              ``mask_head.mask_convs.{i}.conv|gn.{p}``
SOLO ``bbox_head.solo_ins_list.{i}.{p}``                  ``mask_head.conv_mask_list.{i}.{p}``
Decoupled ``bbox_head.ins_convs_x|y.{i}.conv|gn.{p}``     ``mask_head.mask_convs_x|y.{i}.conv|gn.{p}``
Decoupled ``bbox_head.dsolo_ins_list_x|y.{i}.{p}``        ``mask_head.conv_mask_list_x|y.{i}.{p}``
Decoupled ``bbox_head.dsolo_cate.{p}``                    ``mask_head.conv_cls.{p}``
(Decoupled light's shared tower is ``ins_convs``, as SOLO's.)
========================================================  =========================================================

========================================================  =========================================================
AdelaiDet SOLOv2 (detectron2)                             mmdetection 3.x
========================================================  =========================================================
``backbone.bottom_up.stem.conv1.weight``                  ``backbone.conv1.weight``
``backbone.bottom_up.stem.conv1.norm.{p}``                ``backbone.bn1.{p}``
``backbone.bottom_up.res{s}.{b}.conv{k}.weight``          ``backbone.layer{s-1}.{b}.conv{k}.weight``
``backbone.bottom_up.res{s}.{b}.conv{k}.norm.{p}``        ``backbone.layer{s-1}.{b}.bn{k}.{p}``
``backbone.bottom_up.res{s}.{b}.shortcut.weight``         ``backbone.layer{s-1}.{b}.downsample.0.weight``
``backbone.bottom_up.res{s}.{b}.shortcut.norm.{p}``       ``backbone.layer{s-1}.{b}.downsample.1.{p}``
``backbone.fpn_lateral{s}.{p}`` (s = 2..5)                ``neck.lateral_convs.{s-2}.conv.{p}``
``backbone.fpn_output{s}.{p}``                            ``neck.fpn_convs.{s-2}.conv.{p}``
``ins_head.cate_tower.{3i}|{3i+1}.{p}`` (conv|GN|ReLU)    ``mask_head.cls_convs.{i}.conv|gn.{p}``
``ins_head.kernel_tower.{3i}|{3i+1}.{p}``                 ``mask_head.kernel_convs.{i}.conv|gn.{p}``
``ins_head.cate_pred.{p}``, ``ins_head.kernel_pred.{p}``  ``mask_head.conv_cls.{p}``, ``mask_head.conv_kernel.{p}``
``mask_head.convs_all_levels.{i}.conv{j}.0|1.{p}``        ``mask_head.mask_feature_head.convs_all_levels.{i}.``
                                                          ``conv{j}.conv|gn.{p}``
``mask_head.conv_pred.0|1.{p}``                           ``mask_head.mask_feature_head.conv_pred.conv|gn.{p}``
========================================================  =========================================================

Renaming makes the weights load; whether the loaded network computes what the original did is a
separate question, answered by :func:`describe_legacy_semantics`.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError
from ..model.keymap import unwrap_state_dict

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["adelaidet_to_mmdet", "describe_legacy_semantics", "detect_format", "wxinlong_to_mmdet"]

FORMATS = ("mmdet", "wxinlong", "adelaidet")
_NAMES = {"mmdet": "mmdetection 3.x", "wxinlong": "WXinlong/SOLO", "adelaidet": "AdelaiDet SOLOv2"}

# -- reading a state dict ------------------------------------------------------------------------


def _unwrap(state: object) -> dict[str, Any]:
    """mmdetection's ``state_dict`` or detectron2's ``model`` of a whole checkpoint, or the state dict itself."""
    return unwrap_state_dict(state, ("state_dict", "model"))


# -- detection -----------------------------------------------------------------------------------

# Checkpoints that are no SOLO model, or a SOLO variant SOLONet does not build. Tested in this
# order; the first match names what was found. (regex on a key, message with {0} = the match)
_REFUSALS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), m) for p, m in (
    (r"^(roi_head)\.", "a Mask R-CNN checkpoint ({0}.* keys): not a SOLO model"),
    (r"^(roi_heads)\.", "a detectron2 R-CNN checkpoint ({0}.* keys): not a SOLO model"),
    (r"^(rpn_head)\.", "a two-stage detector checkpoint ({0}.* keys): not a SOLO model"),
    (r"^(proposal_generator)\.",
     "a detectron2 detector with a proposal generator ({0}.* keys, e.g. R-CNN, CondInst, BlendMask): "
     "not a SOLO model"),
    (r"(?:^|\.)(conv\d*_offset)\.",
     "a DCN model ({0} keys): deformable convolutions are not supported"),
    (r"^ins_head\.(?:cate|kernel)_tower\.0\.(bias)$|^mask_head\.convs_all_levels\.0\.conv0\.0\.(bias)$",
     "AdelaiDet SOLOv2 without GroupNorm (MODEL.SOLOV2.NORM 'none': conv {0} in the towers): not supported, "
     "SOLONet's head convolutions are group-normalised"),
))

# A key that only each format has (its category convolution or tower).
_MARKERS = {
    "mmdet": re.compile(r"^mask_head\.(conv_cls|cls_convs)\."),
    "wxinlong": re.compile(r"^bbox_head\.(solo_cate|dsolo_cate|cate_convs)\."),
    "adelaidet": re.compile(r"^ins_head\.(cate_pred|cate_tower)\."),
}


def _detect(keys: list[str]) -> str:
    if not keys:
        raise BadInputError("an empty state dict: no weights")
    for pattern, message in _REFUSALS:
        for key in keys:
            m = pattern.search(key)
            if m:
                raise BadInputError(message.format(next(g for g in m.groups() if g is not None)))
    found = [fmt for fmt, marker in _MARKERS.items() if any(marker.match(k) for k in keys)]
    if len(found) == 1:
        return found[0]
    if found:
        raise BadInputError(f"mixed key naming ({' and '.join(_NAMES[f] for f in found)}): not one SOLO checkpoint")
    if any(re.match(r"^(res\d_\d+_branch|res_conv1_bn_|conv1_w$)", k) for k in keys):
        raise BadInputError("a Caffe2-style ImageNet backbone (res2_0_branch2a_w keys): not a SOLO model")
    if all(k.startswith(("backbone.", "neck.")) for k in keys):
        raise BadInputError("only backbone / FPN weights (no SOLO head keys): not a SOLO model")
    if any(k.startswith("layer1.") for k in keys):
        raise BadInputError("a bare ResNet backbone (layer1.* keys): not a SOLO model")
    if any(k.startswith("bbox_head.") for k in keys):
        raise BadInputError("a single-stage detector without a SOLO head (bbox_head.* keys but no solo_cate): "
                            "not a SOLO model")
    raise BadInputError(f"unrecognised weights (first key {keys[0]!r}, {len(keys)} keys): not a SOLO / SOLOv2 "
                        f"model in mmdetection 3.x, WXinlong/SOLO or AdelaiDet naming")


def detect_format(state: Mapping[str, Any]) -> str:
    """``"mmdet"``, ``"wxinlong"`` or ``"adelaidet"``, from the key names of ``state`` (a state
    dict or a whole checkpoint) alone. Raises ``BadInputError`` (one line naming what was found)
    for weights that are no SOLO model or a SOLO variant that SOLONet does not build:
    deformable convolutions, AdelaiDet towers without GroupNorm."""
    return _detect(list(_unwrap(state)))


# -- renaming ------------------------------------------------------------------------------------

_Rule = tuple[re.Pattern[str], Callable[[dict[str, str]], "str | None"]]
_P = r"(?P<p>weight|bias)"  # a convolution's or GroupNorm's parameter
_BN = r"(?P<p>weight|bias|running_mean|running_var|num_batches_tracked)"  # (Frozen)BatchNorm's


def _rule(pattern: str, make: Callable[[dict[str, str]], str | None] | str) -> _Rule:
    fn = make if callable(make) else make.format_map
    return re.compile(pattern + r"\Z"), fn


_WXINLONG: tuple[_Rule, ...] = (
    _rule(r"backbone\.(?P<rest>.+)", "backbone.{rest}"),
    _rule(rf"neck\.(?P<kind>lateral_convs|fpn_convs)\.(?P<i>\d+)\.conv\.{_P}", "neck.{kind}.{i}.conv.{p}"),
    _rule(rf"bbox_head\.cate_convs\.(?P<i>\d+)\.(?P<m>conv|gn)\.{_P}", "mask_head.cls_convs.{i}.{m}.{p}"),
    _rule(rf"bbox_head\.solo_cate\.{_P}", "mask_head.conv_cls.{p}"),
    _rule(rf"bbox_head\.kernel_convs\.(?P<i>\d+)\.(?P<m>conv|gn)\.{_P}", "mask_head.kernel_convs.{i}.{m}.{p}"),
    _rule(rf"bbox_head\.solo_kernel\.{_P}", "mask_head.conv_kernel.{p}"),
    _rule(rf"bbox_head\.ins_convs\.(?P<i>\d+)\.(?P<m>conv|gn)\.{_P}", "mask_head.mask_convs.{i}.{m}.{p}"),
    _rule(rf"bbox_head\.solo_ins_list\.(?P<i>\d+)\.{_P}", "mask_head.conv_mask_list.{i}.{p}"),
    # DecoupledSOLOHead / DecoupledSOLOLightHead (decoupled_solo_head.py, decoupled_solo_light_head.py);
    # the light head's shared tower is ``ins_convs``, as SOLO's.
    _rule(rf"bbox_head\.ins_convs_(?P<xy>[xy])\.(?P<i>\d+)\.(?P<m>conv|gn)\.{_P}",
          "mask_head.mask_convs_{xy}.{i}.{m}.{p}"),
    _rule(rf"bbox_head\.dsolo_ins_list_(?P<xy>[xy])\.(?P<i>\d+)\.{_P}", "mask_head.conv_mask_list_{xy}.{i}.{p}"),
    _rule(rf"bbox_head\.dsolo_cate\.{_P}", "mask_head.conv_cls.{p}"),
    _rule(rf"mask_feat_head\.convs_all_levels\.(?P<i>\d+)\.conv(?P<j>\d+)\.(?P<m>conv|gn)\.{_P}",
          "mask_head.mask_feature_head.convs_all_levels.{i}.conv{j}.{m}.{p}"),
    _rule(rf"mask_feat_head\.conv_pred\.0\.(?P<m>conv|gn)\.{_P}", "mask_head.mask_feature_head.conv_pred.{m}.{p}"),
)


def _d2_block(g: dict[str, str]) -> str:
    layer = f"backbone.layer{int(g['s']) - 1}.{g['b']}"
    if g["conv"] == "shortcut":
        return f"{layer}.downsample.{1 if g['norm'] else 0}.{g['p']}"
    k = g["conv"].removeprefix("conv")
    return f"{layer}.{'bn' if g['norm'] else 'conv'}{k}.{g['p']}"


def _d2_fpn(g: dict[str, str]) -> str:
    kind = "lateral_convs" if g["kind"] == "lateral" else "fpn_convs"
    return f"neck.{kind}.{int(g['s']) - 2}.conv.{g['p']}"


def _adelaidet_tower(g: dict[str, str]) -> str | None:
    # nn.Sequential(conv, GroupNorm, ReLU) per stacked convolution (solov2.py, SOLOv2InsHead)
    i, slot = divmod(int(g["n"]), 3)
    if slot == 2:
        return None  # a ReLU has no parameters
    branch = "cls_convs" if g["branch"] == "cate" else "kernel_convs"
    return f"mask_head.{branch}.{i}.{'conv' if slot == 0 else 'gn'}.{g['p']}"


def _conv_or_gn(g: dict[str, str]) -> str:
    return "conv" if g["n"] == "0" else "gn"


_ADELAIDET: tuple[_Rule, ...] = (
    _rule(r"backbone\.bottom_up\.stem\.conv1\.weight", "backbone.conv1.weight"),
    _rule(rf"backbone\.bottom_up\.stem\.conv1\.norm\.{_BN}", "backbone.bn1.{p}"),
    _rule(r"backbone\.bottom_up\.res(?P<s>[2-5])\.(?P<b>\d+)\.(?P<conv>conv[1-3]|shortcut)\.(?P<p>weight)"
          r"(?P<norm>)", _d2_block),
    _rule(rf"backbone\.bottom_up\.res(?P<s>[2-5])\.(?P<b>\d+)\.(?P<conv>conv[1-3]|shortcut)\.(?P<norm>norm)\.{_BN}",
          _d2_block),
    _rule(rf"backbone\.fpn_(?P<kind>lateral|output)(?P<s>[2-5])\.{_P}", _d2_fpn),
    _rule(rf"ins_head\.(?P<branch>cate|kernel)_tower\.(?P<n>\d+)\.{_P}", _adelaidet_tower),
    _rule(rf"ins_head\.cate_pred\.{_P}", "mask_head.conv_cls.{p}"),
    _rule(rf"ins_head\.kernel_pred\.{_P}", "mask_head.conv_kernel.{p}"),
    _rule(rf"mask_head\.convs_all_levels\.(?P<i>\d+)\.conv(?P<j>\d+)\.(?P<n>[01])\.{_P}",
          lambda g: f"mask_head.mask_feature_head.convs_all_levels.{g['i']}.conv{g['j']}.{_conv_or_gn(g)}.{g['p']}"),
    _rule(rf"mask_head\.conv_pred\.(?P<n>[01])\.{_P}",
          lambda g: f"mask_head.mask_feature_head.conv_pred.{_conv_or_gn(g)}.{g['p']}"),
)


def _rename(state: Mapping[str, Any], fmt: str, rules: tuple[_Rule, ...]) -> dict[str, Tensor]:
    src = _unwrap(state)
    found = _detect(list(src))
    if found != fmt:
        raise BadInputError(f"expected {_NAMES[fmt]} weights, but the keys are {_NAMES[found]}'s")
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in src.items():
        new = None
        for pattern, make in rules:
            m = pattern.match(key)
            if m:
                new = make(m.groupdict())
                break
        if new is None:
            unknown.append(key)
        elif new in out:
            raise BadInputError(f"{_NAMES[fmt]} weights: two keys map to {new!r} (the second is {key!r})")
        else:
            out[new] = value
    if unknown:
        raise BadInputError(f"{_NAMES[fmt]} weights: no mmdetection 3.x name for {unknown[0]!r} "
                            f"({len(unknown)} such keys)")
    return out


def wxinlong_to_mmdet(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """WXinlong/SOLO (mmdetection 1.x) SOLO / SOLOv2 weights -> mmdetection 3.x names (same tensors)."""
    return _rename(state, "wxinlong", _WXINLONG)


def adelaidet_to_mmdet(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """AdelaiDet (detectron2) SOLOv2 weights -> mmdetection 3.x names (same tensors)."""
    return _rename(state, "adelaidet", _ADELAIDET)


# -- what renaming cannot fix --------------------------------------------------------------------

_SEMANTICS: dict[str, tuple[str, ...]] = {
    "mmdet": (),
    # Checked equal to mmdetection 3.x: ResNet style 'pytorch', FPN with max-pooled P6, GroupNorm(32)
    # everywhere, CoordConv channels (x, y), cate_down_pos=0, RGB input with mmdetection's
    # mean/std, keep-ratio resize with mmcv, the test settings and post-processing.
    "wxinlong": (),
    "adelaidet": (
        # detectron2/config/defaults.py RESNETS.STRIDE_IN_1X1; modeling/backbone/resnet.py BottleneckBlock
        "ResNet strides in each bottleneck's 1x1 conv (STRIDE_IN_1X1=True, caffe style): the import sets "
        "stride_in_1x1, which SOLONet builds",
        # detectron2/config/defaults.py MODEL.PIXEL_MEAN, PIXEL_STD, INPUT.FORMAT
        "input BGR minus (103.53, 116.28, 123.675), std 1: the import keeps these statistics and swaps "
        "conv1's input channels (an RGB network)",
        # detectron2/data/transforms ResizeShortestEdge / ResizeTransform (PIL for uint8 images)
        "test resize: ResizeShortestEdge(800, max 1333) with PIL bilinear (antialiased), not cv2: "
        "same size, other pixels",
        # adet/modeling/solov2/solov2.py inference_single_image: ratio = math.ceil(h / f_h)
        "masks upsampled by ceil(h / mask-feature height), not 4: differs for resized inputs at most 72 px tall",
    ),
}


def describe_legacy_semantics(fmt: str) -> list[str]:
    """Differences between ``fmt``'s network or test pipeline and mmdetection 3.x's that renaming
    alone does not fix (one short line each, saying what the import does about it); empty when the
    renamed weights compute the same outputs."""
    if fmt not in _SEMANTICS:
        raise BadInputError(f"unknown weights format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return list(_SEMANTICS[fmt])
