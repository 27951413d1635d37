"""Model and post-processing configs, and the named presets.

Defaults cite their source: "SOLO" is Wang et al., SOLO: Segmenting Objects by Locations
(ECCV 2020) and its reference config solo_r50_fpn_8gpu_1x; "SOLOv2" is Wang et al., SOLOv2:
Dynamic and Fast Instance Segmentation (NeurIPS 2020) and its reference configs
solov2_r50_fpn_8gpu_1x / solov2_light_448_r18_fpn_8gpu_3x.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError
from ..limits import MAX_INSTANCES

if TYPE_CHECKING:
    from ..preprocess import PreprocessSpec

# Inference budgets (SOLO/SOLOv2 reference test_cfg).
NMS_PRE = 500  # candidates kept before Matrix NMS (after maskness rescoring)
# Candidates whose masks are computed, by category score (ours; the reference computes every
# candidate's mask). 3840 is TensorRT's largest TopK, so the same cap can move into an engine;
# results equal the reference's whenever an image has at most this many candidates.
MAX_CANDIDATES = 3840
MAX_PER_IMG = 100  # instances kept after Matrix NMS
SCORE_THR = 0.1  # candidate threshold on category scores (internal, not the user's --conf)
UPDATE_THR = 0.05  # threshold on decayed scores after Matrix NMS
MASK_THR = 0.5  # soft mask -> binary mask
MIN_AREA_FACTOR = 1.0  # keep masks with area > factor * stride (stride-4 pixels): SOLOv2 reference
MATRIX_NMS_SIGMA = 2.0  # gaussian kernel; paper's exp(-(iou^2 - cmax^2) / 0.5)


BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")  # torchvision ResNets (mmdetection's depth 18..101)
# SOLO, SOLOv2, and SOLO's decoupled heads (SOLO paper Sec. 3.4; mmdetection DecoupledSOLOHead,
# DecoupledSOLOLightHead): an S x S grid's masks are products of S x-maps and S y-maps.
ARCHS = ("solo", "solov2", "decoupled-solo", "decoupled-solo-light")


# Bounds on an architecture read from a model file (checked before anything is built, so absurd
# values are one line instead of gigabytes). Each admits every reference model with room: head
# 512 and mask features 256 (SOLOv2 R50/R101), 7 stacked convs (SOLO), grids 40/36/24/16/12
# (every reference config), LVIS's 1203 classes.
LIMITS: dict[str, int] = {
    "num_classes": 10_000, "fpn_channels": 2048, "head_channels": 2048, "mask_channels": 2048,
    "mask_feat_channels": 2048, "stacked_convs": 16, "norm_groups": 512, "grid": 256, "stride": 512,
    "scale": 1 << 16,
}
NUM_LEVELS = 5  # P2..P6: the heads' level split (split_levels) and the FPN are built for five


def _whole(value: Any) -> bool:
    import numbers

    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one SOLO or SOLOv2 network. Plain data: stored as a dict in every model file."""

    arch: str = "solov2"  # one of ARCHS
    num_classes: int = 4
    backbone: str = "resnet50"  # torchvision resnet18 | resnet34 | resnet50 | resnet101
    fpn_channels: int = 256  # SOLO/SOLOv2: FPN out_channels=256
    head_channels: int = 256  # SOLO: seg_feat_channels=256
    stacked_convs: int = 7  # SOLO: 7; SOLOv2: 4; SOLOv2-light: 2
    grids: tuple[int, ...] = (40, 36, 24, 16, 12)  # SOLO: num_grids
    strides: tuple[int, ...] = (8, 8, 16, 32, 32)  # SOLO: strides
    scale_ranges: tuple[tuple[int, int], ...] = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))  # SOLO
    sigma: float = 0.2  # SOLO: centre-region scale epsilon (pos_scale / sigma=0.2)
    mask_channels: int = 256  # SOLOv2: mask feature out channels E (= dynamic kernel length); 128 light
    mask_feat_channels: int = 128  # SOLOv2: mask_feature_head feat_channels (64 in our CPU preset)
    norm_groups: int = 32  # GroupNorm groups, SOLO/SOLOv2 norm_cfg=GN(32)
    prior_prob: float = 0.01  # focal-loss prior on the category bias (RetinaNet/SOLO init)
    coord_kernel: bool = True  # SOLOv2: CoordConv on the kernel branch input
    # Bottleneck ResNets: stride 2 in the first 1x1 convolution (detectron2's / Caffe's default,
    # AdelaiDet's checkpoints) instead of the 3x3 (torchvision's, mmdetection's style="pytorch").
    stride_in_1x1: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise BadInputError(f"unknown architecture {self.arch!r}: expected one of {', '.join(ARCHS)}")
        if self.backbone not in BACKBONES:
            raise BadInputError(f"unknown backbone {self.backbone!r}: expected one of {', '.join(BACKBONES)}")
        if not (len(self.grids) == len(self.strides) == len(self.scale_ranges)):
            raise BadInputError("grids, strides and scale_ranges must have one entry per level")
        for name in ("num_classes", "fpn_channels", "head_channels", "mask_channels", "mask_feat_channels",
                     "stacked_convs", "norm_groups"):
            value = getattr(self, name)
            if not _whole(value) or not 1 <= value <= LIMITS[name]:
                raise BadInputError(f"model config {name} = {value!r} must be a whole number in 1..{LIMITS[name]}")
        if len(self.grids) != NUM_LEVELS:
            raise BadInputError(f"model config has {len(self.grids)} levels; the network is built for {NUM_LEVELS} "
                                "(grids, strides and scale_ranges)")
        for what, values, limit in (("grid", self.grids, LIMITS["grid"]), ("stride", self.strides, LIMITS["stride"])):
            if not all(_whole(v) and 1 <= v <= limit for v in values):
                raise BadInputError(f"model config {what}s {list(values)} must be whole numbers in 1..{limit}")
        if not all(len(r) == 2 and all(_whole(v) for v in r) and 0 <= r[0] < r[1] <= LIMITS["scale"]
                   for r in self.scale_ranges):
            raise BadInputError(f"model config scale_ranges {[list(r) for r in self.scale_ranges]} must be "
                                f"(low, high) pairs with 0 <= low < high <= {LIMITS['scale']}")
        if self.head_channels % self.norm_groups:
            raise BadInputError(f"model config head_channels {self.head_channels} is not divisible by norm_groups "
                                f"{self.norm_groups} (GroupNorm)")
        if self.arch == "solov2":
            for name in ("mask_feat_channels", "mask_channels"):
                c = getattr(self, name)
                if c % min(self.norm_groups, c):
                    raise BadInputError(f"model config {name} {c} is not divisible by norm_groups {self.norm_groups}")
        if not (isinstance(self.sigma, (int, float)) and 0 < self.sigma <= 1):
            raise BadInputError(f"model config sigma (centre region) must be in (0, 1], got {self.sigma!r}")
        if not (isinstance(self.prior_prob, (int, float)) and 0 < self.prior_prob < 1):
            raise BadInputError(f"model config prior_prob must be in (0, 1), got {self.prior_prob!r}")

    @property
    def num_levels(self) -> int:
        return len(self.grids)

    @property
    def num_cells(self) -> int:
        return sum(s * s for s in self.grids)

    @property
    def decoupled(self) -> bool:
        """Decoupled SOLO (light or not): masks are sigmoid(x_j) * sigmoid(y_i), no kernels."""
        return self.arch.startswith("decoupled-")

    @property
    def kernel_channels(self) -> int:
        """Length E of each cell's mask kernel: SOLOv2's dynamic kernel, SOLO's 1x1 weights plus
        bias; 0 for the decoupled heads, which have none."""
        if self.decoupled:
            return 0
        return self.mask_channels if self.arch == "solov2" else self.head_channels + 1

    @property
    def prior_bias(self) -> float:
        return -math.log((1 - self.prior_prob) / self.prior_prob)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["grids"] = list(self.grids)
        d["strides"] = list(self.strides)
        d["scale_ranges"] = [list(r) for r in self.scale_ranges]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise BadInputError(f"model config has unknown keys: {sorted(unknown)}")
        d = dict(d)
        for key in ("grids", "strides"):
            if key in d:
                d[key] = tuple(d[key])  # values checked in __post_init__ (int() would accept 40.7)
        if "scale_ranges" in d:
            d["scale_ranges"] = tuple(tuple(r) for r in d["scale_ranges"])
        return cls(**d)


@dataclass(frozen=True)
class PostprocessConfig:
    """Inference thresholds and budgets (SOLOv2 reference test_cfg)."""

    score_thr: float = SCORE_THR
    mask_thr: float = MASK_THR
    update_thr: float = UPDATE_THR
    nms_pre: int = NMS_PRE
    max_per_img: int = MAX_PER_IMG
    max_candidates: int = MAX_CANDIDATES  # K0: masks computed for at most this many candidates
    kernel: str = "gaussian"  # Matrix NMS decay: "gaussian" | "linear"
    sigma: float = MATRIX_NMS_SIGMA
    # A candidate survives if its stride-4 mask covers more than min_area_factor * (its level's
    # stride) pixels. 1.0 is the SOLOv2 reference (``sum_masks > strides``); it drops every object
    # under ~11 px, so presets for small objects lower it.
    min_area_factor: float = MIN_AREA_FACTOR

    def __post_init__(self) -> None:
        for name in ("nms_pre", "max_per_img", "max_candidates"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadInputError(f"post-processing {name} must be a positive integer, got {value!r}")
        MAX_INSTANCES.check(self.max_per_img, "post-processing max_per_img", "instances")
        if self.kernel not in ("gaussian", "linear"):
            raise BadInputError(f"unknown Matrix NMS kernel {self.kernel!r}: expected 'gaussian' or 'linear'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PostprocessConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


_SOLO_SCALES = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))  # SOLO / SOLOv2 reference
_LIGHT_SCALES = ((1, 56), (28, 112), (56, 224), (112, 448), (224, 896))  # SOLOv2-light reference
_DSOLO_LIGHT_SCALES = ((1, 64), (32, 128), (64, 256), (128, 512), (256, 2048))  # decoupled-solo-light reference


def _solo(backbone: str) -> ModelConfig:
    # SOLO: ResNet + FPN, 7 convs of 256 (SOLO paper Sec. 4; mmdetection solo_r50_fpn_1x_coco).
    return ModelConfig(arch="solo", backbone=backbone, stacked_convs=7, scale_ranges=_SOLO_SCALES)


def _decoupled_solo(backbone: str) -> ModelConfig:
    # Decoupled SOLO: SOLO's 7 convs of 256, twice (x and y branches); mmdetection
    # decoupled-solo_r50_fpn_1x_coco (same scale ranges as SOLO).
    return ModelConfig(arch="decoupled-solo", backbone=backbone, stacked_convs=7, scale_ranges=_SOLO_SCALES)


def _decoupled_solo_light(backbone: str) -> ModelConfig:
    # Decoupled SOLO light: one shared mask tower of 4 convs of 256 and smaller scale ranges
    # (mmdetection decoupled-solo-light_r50_fpn_3x_coco).
    return ModelConfig(arch="decoupled-solo-light", backbone=backbone, stacked_convs=4,
                       scale_ranges=_DSOLO_LIGHT_SCALES)


def _solov2(backbone: str) -> ModelConfig:
    # SOLOv2: 4 convs of 512, mask features 128 -> 256 (mmdetection solov2_r50_fpn_1x_coco:
    # feat_channels=512, mask_feature_head feat_channels=128, out_channels=256).
    return ModelConfig(arch="solov2", backbone=backbone, stacked_convs=4, head_channels=512,
                       scale_ranges=_SOLO_SCALES, mask_channels=256, mask_feat_channels=128)


def _solov2_light(backbone: str) -> ModelConfig:
    # SOLOv2-light: 2 convs of 256, mask features 128 -> 128, smaller scale ranges
    # (mmdetection solov2_light_r18/r34/r50_fpn_3x_coco).
    return ModelConfig(arch="solov2", backbone=backbone, stacked_convs=2, head_channels=256,
                       scale_ranges=_LIGHT_SCALES, mask_channels=128, mask_feat_channels=128)


PRESETS: dict[str, ModelConfig] = {
    "solo-r50": _solo("resnet50"),
    "solo-r101": _solo("resnet101"),
    "decoupled-solo-r50": _decoupled_solo("resnet50"),
    "decoupled-solo-light-r50": _decoupled_solo_light("resnet50"),
    "solov2-r50": _solov2("resnet50"),
    "solov2-r101": _solov2("resnet101"),
    "solov2-light-r18": _solov2_light("resnet18"),
    "solov2-light-r34": _solov2_light("resnet34"),
    "solov2-light-r50": _solov2_light("resnet50"),
    # Our CPU preset: SOLOv2-light R18 made narrow for a 2-core CPU at 256 px. The head towers
    # run on the S x S grids whatever the input size (shared/NOTES.md), so the grids shrink with
    # the input: 24/20/16/12/8 cells (10.7 px per cell on the finest grid at 256 px, vs 11.2 px
    # for grid 40 at 448) cut the tower FLOPs 2.7x; FPN and head at 128 channels, 64 mask
    # channels, scale ranges scaled to the 256 px input (light ranges are for 448).
    "solov2-cpu-r18": ModelConfig(arch="solov2", backbone="resnet18", fpn_channels=128, head_channels=128,
                                  stacked_convs=2, mask_channels=64, mask_feat_channels=64, norm_groups=16,
                                  grids=(24, 20, 16, 12, 8),
                                  scale_ranges=((1, 32), (16, 64), (32, 128), (64, 256), (128, 2048))),
}


# mmdetection's test-time resize of the reference presets: keep-ratio into (long side, short side)
# (solo_r50_fpn / solov2_r50_fpn / decoupled-solo_r50_fpn: scale=(1333, 800); solov2-light_*:
# scale=(448, 768); decoupled-solo-light_r50_fpn: scale=(852, 512)). Models
# imported from these configs carry it as their keep-ratio preprocessing spec.
TEST_SCALES: dict[str, tuple[int, int]] = {
    "solo-r50": (1333, 800), "solo-r101": (1333, 800), "solov2-r50": (1333, 800), "solov2-r101": (1333, 800),
    "decoupled-solo-r50": (1333, 800), "decoupled-solo-light-r50": (852, 512),
    "solov2-light-r18": (768, 448), "solov2-light-r34": (768, 448), "solov2-light-r50": (768, 448),
}


def reference_spec(preset: str) -> PreprocessSpec | None:
    """mmdetection's test preprocessing for a reference preset (keep-ratio), None for our own."""
    from ..preprocess import PreprocessSpec

    return PreprocessSpec.keep_ratio(scale=TEST_SCALES[preset]) if preset in TEST_SCALES else None


def get_preset(name: str, num_classes: int | None = None) -> ModelConfig:
    if name not in PRESETS:
        raise BadInputError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[name]
    return replace(cfg, num_classes=num_classes) if num_classes is not None else cfg
