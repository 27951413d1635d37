"""WXinlong/SOLO and AdelaiDet SOLOv2 key names -> mmdetection 3.x -> a strict load into SOLONet.

The legacy state dicts are generated here from what each code base's modules register (the
generator helpers say which source file they follow), with the reference configs' sizes; no
checkpoint is downloaded. Shapes are all that matters for most checks, so tensors live on the
``meta`` device unless values are compared.
"""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from solo_deploy.core.config import get_preset
from solo_deploy.errors import BadInputError
from solo_deploy.importing.legacy import (
    adelaidet_to_mmdet,
    describe_legacy_semantics,
    detect_format,
    wxinlong_to_mmdet,
)
from solo_deploy.model.keymap import from_mmdet
from solo_deploy.model.network import SOLONet

Shapes = dict[str, tuple[int, ...]]
GRIDS = (40, 36, 24, 16, 12)  # num_grids of every reference config used here
NUM_CLASSES = 80  # WXinlong configs say 81: the category conv has num_classes - 1 outputs


# -- generators: WXinlong/SOLO (mmdetection 1.x) ---------------------------------------------------

def _bn(prefix: str, c: int, tracked: bool = True) -> Shapes:
    """nn.BatchNorm2d (mmdet/models/utils/norm.py 'BN' -> ('bn', nn.BatchNorm2d)); detectron2's
    FrozenBatchNorm2d has the same four buffers and no step counter (``tracked=False``)."""
    out = {f"{prefix}.{p}": (c,) for p in ("weight", "bias", "running_mean", "running_var")}
    if tracked:
        out[f"{prefix}.num_batches_tracked"] = ()
    return out


def _conv_gn(prefix: str, cin: int, cout: int, k: int = 3) -> Shapes:
    """ConvModule(norm_cfg=GN) (mmdet/models/utils/conv_module.py): ``conv`` without bias (bias
    'auto' or ``norm_cfg is None``), then ``gn`` (norm.py names GN layers 'gn')."""
    return {f"{prefix}.conv.weight": (cout, cin, k, k), f"{prefix}.gn.weight": (cout,), f"{prefix}.gn.bias": (cout,)}


def mmdet1_resnet(depth: int, prefix: str = "backbone") -> Shapes:
    """ResNet (mmdet/models/backbones/resnet.py): stem conv1/bn1, layer{1..4} of BasicBlock or
    Bottleneck (conv{k}/bn{k}), downsample = Sequential(1x1 conv, BN) where make_res_layer adds it."""
    bottleneck, blocks = {18: (False, (2, 2, 2, 2)), 34: (False, (3, 4, 6, 3)),
                          50: (True, (3, 4, 6, 3)), 101: (True, (3, 4, 23, 3))}[depth]
    expansion = 4 if bottleneck else 1
    out: Shapes = {f"{prefix}.conv1.weight": (64, 3, 7, 7), **_bn(f"{prefix}.bn1", 64)}
    inplanes = 64
    for stage, n in enumerate(blocks):
        planes = 64 * 2 ** stage
        stride = 1 if stage == 0 else 2
        for b in range(n):
            p = f"{prefix}.layer{stage + 1}.{b}"
            if bottleneck:
                out |= {f"{p}.conv1.weight": (planes, inplanes, 1, 1), **_bn(f"{p}.bn1", planes),
                        f"{p}.conv2.weight": (planes, planes, 3, 3), **_bn(f"{p}.bn2", planes),
                        f"{p}.conv3.weight": (planes * 4, planes, 1, 1), **_bn(f"{p}.bn3", planes * 4)}
            else:
                out |= {f"{p}.conv1.weight": (planes, inplanes, 3, 3), **_bn(f"{p}.bn1", planes),
                        f"{p}.conv2.weight": (planes, planes, 3, 3), **_bn(f"{p}.bn2", planes)}
            if b == 0 and (stride != 1 or inplanes != planes * expansion):
                out |= {f"{p}.downsample.0.weight": (planes * expansion, inplanes, 1, 1),
                        **_bn(f"{p}.downsample.1", planes * expansion)}
            inplanes = planes * expansion
    return out


def mmdet1_fpn(in_channels: list[int], out: int = 256) -> Shapes:
    """FPN (mmdet/models/necks/fpn.py), add_extra_convs=False: ConvModules without norm (bias)."""
    shapes: Shapes = {}
    for i, c in enumerate(in_channels):
        shapes |= {f"neck.lateral_convs.{i}.conv.weight": (out, c, 1, 1), f"neck.lateral_convs.{i}.conv.bias": (out,)}
    for i in range(len(in_channels)):
        shapes |= {f"neck.fpn_convs.{i}.conv.weight": (out, out, 3, 3), f"neck.fpn_convs.{i}.conv.bias": (out,)}
    return shapes


def wxinlong_solo_head(stacked: int = 7, feat: int = 256, cin: int = 256) -> Shapes:
    """SOLOHead._init_layers (mmdet/models/anchor_heads/solo_head.py): ins_convs (CoordConv input
    cin + 2), cate_convs, solo_ins_list (1x1 conv to S^2 per level, with bias), solo_cate."""
    out: Shapes = {}
    for i in range(stacked):
        out |= _conv_gn(f"bbox_head.ins_convs.{i}", cin + 2 if i == 0 else feat, feat)
        out |= _conv_gn(f"bbox_head.cate_convs.{i}", cin if i == 0 else feat, feat)
    for level, s in enumerate(GRIDS):
        out |= {f"bbox_head.solo_ins_list.{level}.weight": (s * s, feat, 1, 1),
                f"bbox_head.solo_ins_list.{level}.bias": (s * s,)}
    return out | {"bbox_head.solo_cate.weight": (NUM_CLASSES, feat, 3, 3), "bbox_head.solo_cate.bias": (NUM_CLASSES,)}


def wxinlong_solov2_head(stacked: int, feat: int, kernels: int, cin: int = 256) -> Shapes:
    """SOLOv2Head._init_layers (mmdet/models/anchor_heads/solov2_head.py; solov2_light_head.py
    registers the same names): kernel_convs (CoordConv input cin + 2), cate_convs, solo_cate, solo_kernel."""
    out: Shapes = {}
    for i in range(stacked):
        out |= _conv_gn(f"bbox_head.kernel_convs.{i}", cin + 2 if i == 0 else feat, feat)
        out |= _conv_gn(f"bbox_head.cate_convs.{i}", cin if i == 0 else feat, feat)
    return out | {"bbox_head.solo_cate.weight": (NUM_CLASSES, feat, 3, 3), "bbox_head.solo_cate.bias": (NUM_CLASSES,),
                  "bbox_head.solo_kernel.weight": (kernels, feat, 3, 3), "bbox_head.solo_kernel.bias": (kernels,)}


def wxinlong_mask_feat_head(out_channels: int, num_classes: int, cin: int = 256) -> Shapes:
    """MaskFeatHead (mmdet/models/mask_heads/mask_feat_head.py), start_level=0, end_level=3:
    level 0 'conv0'; level i: 'conv{j}' + weightless 'upsample{j}' for j < i, CoordConv (cin + 2)
    into level 3's first conv; conv_pred = Sequential(ConvModule 1x1 to num_classes, GN)."""
    out: Shapes = _conv_gn("mask_feat_head.convs_all_levels.0.conv0", cin, out_channels)
    for i in range(1, 4):
        for j in range(i):
            chn = (cin + 2 if i == 3 else cin) if j == 0 else out_channels
            out |= _conv_gn(f"mask_feat_head.convs_all_levels.{i}.conv{j}", chn, out_channels)
    return out | _conv_gn("mask_feat_head.conv_pred.0", out_channels, num_classes, k=1)


def wxinlong_solo_r50() -> Shapes:
    """configs/solo/solo_r50_fpn_8gpu_1x.py: R50, FPN 256, SOLOHead 7 x 256."""
    return mmdet1_resnet(50) | mmdet1_fpn([256, 512, 1024, 2048]) | wxinlong_solo_head()


def wxinlong_decoupled_head(light: bool, stacked: int, feat: int = 256, cin: int = 256) -> Shapes:
    """DecoupledSOLOHead._init_layers (mmdet/models/anchor_heads/decoupled_solo_head.py):
    ins_convs_x / ins_convs_y (input cin + 1, one coordinate each), cate_convs, dsolo_ins_list_x /
    _y (3x3 conv to S per level, with bias), dsolo_cate. DecoupledSOLOLightHead
    (decoupled_solo_light_head.py): one shared ins_convs tower (input cin + 2) instead."""
    out: Shapes = {}
    for i in range(stacked):
        if light:
            out |= _conv_gn(f"bbox_head.ins_convs.{i}", cin + 2 if i == 0 else feat, feat)
        else:
            out |= _conv_gn(f"bbox_head.ins_convs_x.{i}", cin + 1 if i == 0 else feat, feat)
            out |= _conv_gn(f"bbox_head.ins_convs_y.{i}", cin + 1 if i == 0 else feat, feat)
        out |= _conv_gn(f"bbox_head.cate_convs.{i}", cin if i == 0 else feat, feat)
    for level, s in enumerate(GRIDS):
        for xy in "xy":
            out |= {f"bbox_head.dsolo_ins_list_{xy}.{level}.weight": (s, feat, 3, 3),
                    f"bbox_head.dsolo_ins_list_{xy}.{level}.bias": (s,)}
    return out | {"bbox_head.dsolo_cate.weight": (NUM_CLASSES, feat, 3, 3), "bbox_head.dsolo_cate.bias": (NUM_CLASSES,)}


def wxinlong_decoupled_solo_r50() -> Shapes:
    """configs/solo/decoupled_solo_r50_fpn_8gpu_3x.py: DecoupledSOLOHead 7 x 256."""
    return mmdet1_resnet(50) | mmdet1_fpn([256, 512, 1024, 2048]) | wxinlong_decoupled_head(False, 7)


def wxinlong_decoupled_solo_light_r50() -> Shapes:
    """configs/solo/decoupled_solo_light_r50_fpn_8gpu_3x.py: DecoupledSOLOLightHead 4 x 256."""
    return mmdet1_resnet(50) | mmdet1_fpn([256, 512, 1024, 2048]) | wxinlong_decoupled_head(True, 4)


def wxinlong_solov2_r50() -> Shapes:
    """configs/solov2/solov2_r50_fpn_8gpu_3x.py: SOLOv2Head 4 x 512, ins_out_channels 256;
    MaskFeatHead out_channels 128, num_classes 256."""
    return (mmdet1_resnet(50) | mmdet1_fpn([256, 512, 1024, 2048]) | wxinlong_solov2_head(4, 512, 256)
            | wxinlong_mask_feat_head(128, 256))


def wxinlong_solov2_light_r18() -> Shapes:
    """configs/solov2/solov2_light_448_r18_fpn_8gpu_3x.py: R18, SOLOv2Head 2 x 256,
    ins_out_channels 128; MaskFeatHead out_channels 128, num_classes 128."""
    return (mmdet1_resnet(18) | mmdet1_fpn([64, 128, 256, 512]) | wxinlong_solov2_head(2, 256, 128)
            | wxinlong_mask_feat_head(128, 128))


# -- generators: AdelaiDet SOLOv2 (detectron2) ---------------------------------------------------

def detectron2_resnet50() -> Shapes:
    """build_resnet_backbone (detectron2/modeling/backbone/resnet.py), depth 50, FrozenBN:
    stem.conv1 (+ .norm); res{2..5}.{b} BottleneckBlock conv1/conv2/conv3 (bias=False, + .norm)
    and a ``shortcut`` where in_channels != out_channels; bottleneck 64, out 256, doubling per stage."""
    p = "backbone.bottom_up"
    out: Shapes = {f"{p}.stem.conv1.weight": (64, 3, 7, 7), **_bn(f"{p}.stem.conv1.norm", 64, tracked=False)}
    cin, cout, mid = 64, 256, 64
    for stage, n in zip(range(2, 6), (3, 4, 6, 3)):
        for b in range(n):
            q = f"{p}.res{stage}.{b}"
            block_in = cin if b == 0 else cout
            if block_in != cout:
                out |= {f"{q}.shortcut.weight": (cout, block_in, 1, 1), **_bn(f"{q}.shortcut.norm", cout, False)}
            out |= {f"{q}.conv1.weight": (mid, block_in, 1, 1), **_bn(f"{q}.conv1.norm", mid, False),
                    f"{q}.conv2.weight": (mid, mid, 3, 3), **_bn(f"{q}.conv2.norm", mid, False),
                    f"{q}.conv3.weight": (cout, mid, 1, 1), **_bn(f"{q}.conv3.norm", cout, False)}
        cin, cout, mid = cout, cout * 2, mid * 2
    return out


def detectron2_fpn(in_channels: list[int], out: int = 256) -> Shapes:
    """FPN (detectron2/modeling/backbone/fpn.py), FPN.NORM '' (bias): fpn_lateral{s} and
    fpn_output{s} for s = log2(stride) = 2..5; P6 by LastLevelMaxPool (no weights)."""
    shapes: Shapes = {}
    for s, c in zip(range(2, 6), in_channels):
        shapes |= {f"backbone.fpn_lateral{s}.weight": (out, c, 1, 1), f"backbone.fpn_lateral{s}.bias": (out,),
                   f"backbone.fpn_output{s}.weight": (out, out, 3, 3), f"backbone.fpn_output{s}.bias": (out,)}
    return shapes


def adelaidet_heads(convs: int = 4, feat: int = 512, kernels: int = 256, mask_ch: int = 128,
                    masks: int = 256, cin: int = 256, norm: bool = True) -> Shapes:
    """SOLOv2InsHead / SOLOv2MaskHead (adet/modeling/solov2/solov2.py), adet/config/defaults.py
    MODEL.SOLOV2: towers are Sequential(conv, GroupNorm(32), ReLU) x NUM_INSTANCE_CONVS (conv bias
    only when NORM is 'none'), kernel tower input + 2 (USE_COORD_CONV); mask head levels
    'conv{j}' = Sequential(conv, GN, ReLU), conv_pred = Sequential(1x1 conv, GN, ReLU)."""
    out: Shapes = {}
    per = 3 if norm else 2
    for head in ("cate", "kernel"):
        for i in range(convs):
            chn = (cin + 2 if head == "kernel" else cin) if i == 0 else feat
            out[f"ins_head.{head}_tower.{per * i}.weight"] = (feat, chn, 3, 3)
            if norm:
                out |= {f"ins_head.{head}_tower.{per * i + 1}.weight": (feat,),
                        f"ins_head.{head}_tower.{per * i + 1}.bias": (feat,)}
            else:
                out[f"ins_head.{head}_tower.{per * i}.bias"] = (feat,)
    out |= {"ins_head.cate_pred.weight": (NUM_CLASSES, feat, 3, 3), "ins_head.cate_pred.bias": (NUM_CLASSES,),
            "ins_head.kernel_pred.weight": (kernels, feat, 3, 3), "ins_head.kernel_pred.bias": (kernels,)}

    def level_conv(prefix: str, chn: int) -> Shapes:
        if not norm:
            return {f"{prefix}.0.weight": (mask_ch, chn, 3, 3), f"{prefix}.0.bias": (mask_ch,)}
        return {f"{prefix}.0.weight": (mask_ch, chn, 3, 3), f"{prefix}.1.weight": (mask_ch,),
                f"{prefix}.1.bias": (mask_ch,)}

    out |= level_conv("mask_head.convs_all_levels.0.conv0", cin)
    for i in range(1, 4):
        for j in range(i):
            out |= level_conv(f"mask_head.convs_all_levels.{i}.conv{j}",
                              (cin + 2 if i == 3 else cin) if j == 0 else mask_ch)
    return out | {"mask_head.conv_pred.0.weight": (masks, mask_ch, 1, 1), "mask_head.conv_pred.1.weight": (masks,),
                  "mask_head.conv_pred.1.bias": (masks,)}


def adelaidet_solov2_r50() -> Shapes:
    """configs/SOLOv2/R50_3x.yaml (Base-SOLOv2.yaml + adet/config/defaults.py MODEL.SOLOV2)."""
    return detectron2_resnet50() | detectron2_fpn([256, 512, 1024, 2048]) | adelaidet_heads()


# -- helpers -------------------------------------------------------------------------------------

def materialise(shapes: Shapes, device: str = "meta") -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    out = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=torch.int64, device=device)
        elif device == "meta":
            out[key] = torch.empty(shape, device="meta")
        else:
            out[key] = torch.randn(shape, generator=gen)
    return out


CASES: dict[str, tuple[Callable[[], Shapes], Callable, str, str]] = {
    # name: (generator, converter, preset, format)
    "wxinlong-solo-r50": (wxinlong_solo_r50, wxinlong_to_mmdet, "solo-r50", "wxinlong"),
    "wxinlong-solov2-r50": (wxinlong_solov2_r50, wxinlong_to_mmdet, "solov2-r50", "wxinlong"),
    "wxinlong-solov2-light-r18": (wxinlong_solov2_light_r18, wxinlong_to_mmdet, "solov2-light-r18", "wxinlong"),
    "wxinlong-decoupled-solo-r50": (wxinlong_decoupled_solo_r50, wxinlong_to_mmdet, "decoupled-solo-r50", "wxinlong"),
    "wxinlong-decoupled-solo-light-r50": (wxinlong_decoupled_solo_light_r50, wxinlong_to_mmdet,
                                          "decoupled-solo-light-r50", "wxinlong"),
    "adelaidet-solov2-r50": (adelaidet_solov2_r50, adelaidet_to_mmdet, "solov2-r50", "adelaidet"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_legacy_weights_load_strictly_into_solonet(case):
    generate, convert, preset, fmt = CASES[case]
    legacy = materialise(generate())
    assert detect_format(legacy) == fmt
    renamed = convert(legacy)
    assert len(renamed) == len(legacy)
    assert {id(v) for v in renamed.values()} == {id(v) for v in legacy.values()}  # same tensors, renamed
    assert detect_format(renamed) == "mmdet"
    cfg = get_preset(preset, num_classes=NUM_CLASSES)
    ours = from_mmdet(renamed, cfg)
    with torch.device("meta"):
        net = SOLONet(cfg)
    result = net.load_state_dict(ours, strict=True, assign=True)  # assign: no copies into meta tensors
    assert not result.missing_keys and not result.unexpected_keys


def test_wxinlong_values_arrive_where_solonet_reads_them():
    """Real tensors, a real network: each renamed tensor's values reach the SOLONet parameter
    that plays its role (SOLOv2-light R18, the smallest reference model)."""
    legacy = materialise(wxinlong_solov2_light_r18(), device="cpu")
    cfg = get_preset("solov2-light-r18", num_classes=NUM_CLASSES)
    net = SOLONet(cfg)
    net.load_state_dict(from_mmdet(wxinlong_to_mmdet(legacy), cfg), strict=True)
    state = net.state_dict()
    pairs = {
        "backbone.layer3.0.downsample.1.running_var": "backbone.body.layer3.0.downsample.1.running_var",
        "neck.lateral_convs.2.conv.weight": "backbone.fpn.inner_blocks.2.0.weight",
        "neck.fpn_convs.3.conv.bias": "backbone.fpn.layer_blocks.3.0.bias",
        "bbox_head.kernel_convs.0.conv.weight": "head.kernel_convs.0.0.weight",
        "bbox_head.cate_convs.1.gn.bias": "head.cate_convs.1.1.bias",
        "bbox_head.solo_cate.bias": "head.cate_out.bias",
        "bbox_head.solo_kernel.weight": "head.kernel_out.weight",
        "mask_feat_head.convs_all_levels.3.conv2.gn.weight": "head.mask_levels.3.4.1.weight",
        "mask_feat_head.conv_pred.0.conv.weight": "head.mask_out.0.weight",
        "mask_feat_head.conv_pred.0.gn.bias": "head.mask_out.1.bias",
    }
    for theirs, ours in pairs.items():
        assert torch.equal(state[ours], legacy[theirs]), theirs


def test_wxinlong_solo_mask_convs_keep_their_tensors():
    legacy = materialise(wxinlong_solo_r50())
    renamed = wxinlong_to_mmdet(legacy)
    assert renamed["mask_head.conv_mask_list.4.weight"] is legacy["bbox_head.solo_ins_list.4.weight"]
    assert renamed["mask_head.mask_convs.0.conv.weight"].shape == (256, 258, 3, 3)
    assert renamed["mask_head.conv_cls.weight"].shape[0] == NUM_CLASSES


def test_adelaidet_names_follow_detectron2_and_the_sequential_towers():
    legacy = materialise(adelaidet_solov2_r50())
    renamed = adelaidet_to_mmdet(legacy)
    feature_head = "mask_head.mask_feature_head"
    expected = {
        "backbone.bottom_up.stem.conv1.weight": "backbone.conv1.weight",
        "backbone.bottom_up.stem.conv1.norm.running_mean": "backbone.bn1.running_mean",
        "backbone.bottom_up.res2.0.shortcut.weight": "backbone.layer1.0.downsample.0.weight",
        "backbone.bottom_up.res3.0.shortcut.norm.running_var": "backbone.layer2.0.downsample.1.running_var",
        "backbone.bottom_up.res5.2.conv3.norm.weight": "backbone.layer4.2.bn3.weight",
        "backbone.bottom_up.res4.5.conv2.weight": "backbone.layer3.5.conv2.weight",
        "backbone.fpn_lateral2.weight": "neck.lateral_convs.0.conv.weight",
        "backbone.fpn_output5.bias": "neck.fpn_convs.3.conv.bias",
        "ins_head.cate_tower.0.weight": "mask_head.cls_convs.0.conv.weight",
        "ins_head.kernel_tower.4.bias": "mask_head.kernel_convs.1.gn.bias",
        "ins_head.kernel_tower.9.weight": "mask_head.kernel_convs.3.conv.weight",
        "ins_head.cate_pred.bias": "mask_head.conv_cls.bias",
        "ins_head.kernel_pred.weight": "mask_head.conv_kernel.weight",
        "mask_head.convs_all_levels.3.conv0.0.weight": f"{feature_head}.convs_all_levels.3.conv0.conv.weight",
        "mask_head.convs_all_levels.2.conv1.1.bias": f"{feature_head}.convs_all_levels.2.conv1.gn.bias",
        "mask_head.conv_pred.0.weight": "mask_head.mask_feature_head.conv_pred.conv.weight",
        "mask_head.conv_pred.1.weight": "mask_head.mask_feature_head.conv_pred.gn.weight",
    }
    for theirs, ours in expected.items():
        assert renamed[ours] is legacy[theirs], theirs
    assert renamed["mask_head.kernel_convs.0.conv.weight"].shape == (512, 258, 3, 3)  # CoordConv input


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module"])
def test_whole_checkpoints_and_dataparallel_prefixes(wrap):
    legacy = materialise(adelaidet_solov2_r50() if wrap == "model" else wxinlong_solov2_light_r18())
    if wrap == "module":
        state = {f"module.{k}": v for k, v in legacy.items()}
    else:
        state = {wrap: legacy, "meta": {"epoch": 36}}
    fmt = detect_format(state)
    renamed = (adelaidet_to_mmdet if fmt == "adelaidet" else wxinlong_to_mmdet)(state)
    assert len(renamed) == len(legacy)
    assert not any(k.startswith("module.") for k in renamed)


# -- refusals --------------------------------------------------------------------------------------

def mask_rcnn_keys() -> Shapes:
    """mmdetection 2.x/3.x Mask R-CNN R50-FPN: rpn_head, roi_head.bbox_head / roi_head.mask_head."""
    return (mmdet1_resnet(50) | mmdet1_fpn([256, 512, 1024, 2048])
            | {"rpn_head.rpn_conv.weight": (256, 256, 3, 3), "rpn_head.rpn_cls.weight": (3, 256, 1, 1),
               "roi_head.bbox_head.fc_cls.weight": (81, 1024), "roi_head.bbox_head.fc_reg.weight": (320, 1024),
               "roi_head.mask_head.convs.0.conv.weight": (256, 256, 3, 3),
               "roi_head.mask_head.conv_logits.weight": (80, 256, 1, 1)})


def dcn_keys() -> Shapes:
    """configs/solov2/solov2_r101_dcn_fpn_8gpu_3x.py: DCNv2 (ModulatedDeformConvPack, with a
    ``conv_offset`` submodule) in ResNet stages 2-4 and in the head towers (use_dcn_in_tower)."""
    out = mmdet1_resnet(101) | mmdet1_fpn([256, 512, 1024, 2048]) | wxinlong_solov2_head(4, 512, 256)
    out |= wxinlong_mask_feat_head(128, 256)
    out |= {"backbone.layer2.0.conv2.conv_offset.weight": (27, 128, 3, 3),
            "backbone.layer2.0.conv2.conv_offset.bias": (27,),
            "bbox_head.kernel_convs.0.conv.conv_offset.weight": (27, 258, 3, 3)}
    return out


@pytest.mark.parametrize(("keys", "message"), [
    (mask_rcnn_keys, r"Mask R-CNN checkpoint \(roi_head\.\* keys\): not a SOLO model"),
    (lambda: {"backbone.bottom_up.stem.conv1.weight": (64, 3, 7, 7), "proposal_generator.rpn_head.conv.weight": (1,),
              "roi_heads.box_predictor.cls_score.weight": (81, 1024)}, r"R-CNN checkpoint \(roi_heads\.\* keys\)"),
    (lambda: {"proposal_generator.fcos_head.cls_logits.weight": (80, 256, 3, 3),
              "mask_head.layers.0.weight": (8, 10, 1, 1)}, r"proposal_generator\.\* keys, e\.g\. R-CNN, CondInst"),
    (dcn_keys, r"a DCN model \(conv_offset keys\): deformable convolutions are not supported"),
    (lambda: adelaidet_solov2_r50() | {"backbone.bottom_up.res3.0.conv2_offset.weight": (18, 128, 3, 3)},
     r"DCN model \(conv2_offset keys\)"),
    (lambda: detectron2_resnet50() | detectron2_fpn([256, 512, 1024, 2048]) | adelaidet_heads(norm=False),
     r"without GroupNorm"),
    (lambda: mmdet1_resnet(50) | mmdet1_fpn([256, 512, 1024, 2048]), r"only backbone / FPN weights"),
    (lambda: {"conv1_w": (64, 3, 7, 7), "res2_0_branch2a_w": (64, 64, 1, 1)}, r"Caffe2-style ImageNet backbone"),
    (lambda: {"bbox_head.retina_cls.weight": (720, 256, 3, 3)}, r"without a SOLO head"),
    (lambda: {"foo.weight": (1,)}, r"unrecognised weights \(first key 'foo.weight'"),
    (dict, r"an empty state dict"),
    (lambda: wxinlong_solov2_r50() | adelaidet_heads(), r"mixed key naming"),
])
def test_detect_format_names_what_it_refuses(keys, message):
    with pytest.raises(BadInputError, match=message) as info:
        detect_format(materialise(keys()))
    assert "\n" not in str(info.value)


def test_converters_refuse_the_other_format_and_unknown_keys():
    with pytest.raises(BadInputError, match="expected AdelaiDet SOLOv2 weights, but the keys are WXinlong/SOLO's"):
        adelaidet_to_mmdet(materialise(wxinlong_solov2_light_r18()))
    with pytest.raises(BadInputError, match="expected WXinlong/SOLO weights"):
        wxinlong_to_mmdet(materialise(adelaidet_solov2_r50()))
    odd = materialise(wxinlong_solov2_light_r18() | {"bbox_head.extra.weight": (1,)})
    with pytest.raises(BadInputError, match=r"no mmdetection 3.x name for 'bbox_head.extra.weight' \(1 such keys\)"):
        wxinlong_to_mmdet(odd)
    with pytest.raises(BadInputError, match="expected a state dict, got list"):
        detect_format([1, 2])


def test_semantic_differences_are_listed_per_format():
    assert describe_legacy_semantics("mmdet") == []
    assert describe_legacy_semantics("wxinlong") == []
    lines = describe_legacy_semantics("adelaidet")
    assert any("STRIDE_IN_1X1" in line for line in lines)
    assert any("BGR" in line for line in lines)
    assert all("\n" not in line and len(line) <= 140 for line in lines)
    with pytest.raises(BadInputError, match="unknown weights format"):
        describe_legacy_semantics("caffe")
