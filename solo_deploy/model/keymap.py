"""mmdetection 3.x SOLO / SOLOv2 / decoupled SOLO weights -> this project's ``SOLONet`` state dict.

:func:`from_mmdet` renames (and, for SOLO's per-cell mask convolutions, reshapes) the tensors of
an mmdetection ``SOLO`` / ``SOLOv2`` detector with a ResNet backbone, an FPN neck
(``add_extra_convs=False``: P6 by max-pooling) and a ``SOLOHead`` / ``SOLOV2Head`` /
``DecoupledSOLOHead`` / ``DecoupledSOLOLightHead`` with
group-normalised convolutions, checked against the ``SOLONet`` that a ``ModelConfig`` builds.
``{i}``, ``{j}``, ``{p}`` are indices and parameter names, kept as they are:

==============================================================  ===========================================
mmdetection                                                     SOLONet
==============================================================  ===========================================
``backbone.{rest}`` (ResNet, torchvision layout)                ``backbone.body.{rest}``
``neck.lateral_convs.{i}.conv.{p}``                             ``backbone.fpn.inner_blocks.{i}.0.{p}``
``neck.fpn_convs.{i}.conv.{p}``                                 ``backbone.fpn.layer_blocks.{i}.0.{p}``
``mask_head.cls_convs.{i}.conv|gn.{p}``                         ``head.cate_convs.{i}.0|1.{p}``
``mask_head.conv_cls.{p}``                                      ``head.cate_out.{p}``
SOLOv2: ``mask_head.kernel_convs.{i}.conv|gn.{p}``              ``head.kernel_convs.{i}.0|1.{p}``
SOLOv2: ``mask_head.conv_kernel.{p}``                           ``head.kernel_out.{p}``
SOLOv2: ``mask_head.mask_feature_head.convs_all_levels.{i}``    ``head.mask_levels.{i}.{2j}.0|1.{p}``
``.conv{j}.conv|gn.{p}`` (``upsample{j}`` has no weights)       (our ``{2j + 1}`` is the upsampling)
SOLOv2: ``mask_head.mask_feature_head.conv_pred.conv|gn.{p}``   ``head.mask_out.0|1.{p}``
SOLO: ``mask_head.mask_convs.{i}.conv|gn.{p}``                  ``head.mask_convs.{i}.0|1.{p}``
SOLO: ``mask_head.conv_mask_list.{i}.weight`` (S^2, C, 1, 1)    ``head.mask_weight.{i}`` (S^2, C)
SOLO: ``mask_head.conv_mask_list.{i}.bias`` (S^2,)              ``head.mask_bias.{i}`` (S^2,)
Decoupled: ``mask_head.mask_convs_x|y.{i}.conv|gn.{p}``         ``head.mask_convs_x|y.{i}.0|1.{p}``
Decoupled light: ``mask_head.mask_convs.{i}.conv|gn.{p}``       ``head.mask_convs.{i}.0|1.{p}``
Decoupled: ``mask_head.conv_mask_list_x|y.{i}.{p}`` (S, C, 3, 3)  ``head.mask_x_out|mask_y_out.{i}.{p}``
==============================================================  ===========================================

Not checkable from the weights, so they must match mmdetection's config by hand:
``norm_groups`` (GroupNorm's ``num_groups``; SOLONet's mask-feature norms use
``min(norm_groups, channels)``), SOLOv2's ``grids`` (SOLO's are checked through
``conv_mask_list``), ``strides`` and ``scale_ranges`` (post-processing and training only).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from ..core.config import ModelConfig
from ..errors import BadInputError
from .network import declared_tensors

# (mmdetection template, SOLONet template, what decides whether the key exists). Placeholders:
# {i}, {j} indices, {2j} twice {j}, {p} a parameter or buffer name, {rest} any dotted tail.
_RULES: tuple[tuple[str, str, str], ...] = (
    ("backbone.{rest}", "backbone.body.{rest}", "backbone"),
    ("neck.lateral_convs.{i}.conv.{p}", "backbone.fpn.inner_blocks.{i}.0.{p}", "4 FPN inputs (C2..C5)"),
    ("neck.fpn_convs.{i}.conv.{p}", "backbone.fpn.layer_blocks.{i}.0.{p}",
     "4 FPN outputs + max-pooled P6 (FPN add_extra_convs=False)"),
    ("mask_head.cls_convs.{i}.conv.{p}", "head.cate_convs.{i}.0.{p}", "stacked_convs"),
    ("mask_head.cls_convs.{i}.gn.{p}", "head.cate_convs.{i}.1.{p}", "stacked_convs"),
    ("mask_head.conv_cls.{p}", "head.cate_out.{p}", "arch"),
    ("mask_head.kernel_convs.{i}.conv.{p}", "head.kernel_convs.{i}.0.{p}", "stacked_convs"),
    ("mask_head.kernel_convs.{i}.gn.{p}", "head.kernel_convs.{i}.1.{p}", "stacked_convs"),
    ("mask_head.conv_kernel.{p}", "head.kernel_out.{p}", "arch"),
    ("mask_head.mask_feature_head.convs_all_levels.{i}.conv{j}.conv.{p}", "head.mask_levels.{i}.{2j}.0.{p}",
     "4 mask-feature levels (start_level=0, end_level=3)"),
    ("mask_head.mask_feature_head.convs_all_levels.{i}.conv{j}.gn.{p}", "head.mask_levels.{i}.{2j}.1.{p}",
     "4 mask-feature levels (start_level=0, end_level=3)"),
    ("mask_head.mask_feature_head.conv_pred.conv.{p}", "head.mask_out.0.{p}", "arch"),
    ("mask_head.mask_feature_head.conv_pred.gn.{p}", "head.mask_out.1.{p}", "arch"),
    ("mask_head.mask_convs.{i}.conv.{p}", "head.mask_convs.{i}.0.{p}", "stacked_convs"),
    ("mask_head.mask_convs.{i}.gn.{p}", "head.mask_convs.{i}.1.{p}", "stacked_convs"),
    ("mask_head.conv_mask_list.{i}.weight", "head.mask_weight.{i}", "grids (one per level)"),
    ("mask_head.conv_mask_list.{i}.bias", "head.mask_bias.{i}", "grids (one per level)"),
    ("mask_head.mask_convs_x.{i}.conv.{p}", "head.mask_convs_x.{i}.0.{p}", "stacked_convs"),
    ("mask_head.mask_convs_x.{i}.gn.{p}", "head.mask_convs_x.{i}.1.{p}", "stacked_convs"),
    ("mask_head.mask_convs_y.{i}.conv.{p}", "head.mask_convs_y.{i}.0.{p}", "stacked_convs"),
    ("mask_head.mask_convs_y.{i}.gn.{p}", "head.mask_convs_y.{i}.1.{p}", "stacked_convs"),
    ("mask_head.conv_mask_list_x.{i}.{p}", "head.mask_x_out.{i}.{p}", "grids (one per level)"),
    ("mask_head.conv_mask_list_y.{i}.{p}", "head.mask_y_out.{i}.{p}", "grids (one per level)"),
)

_GROUPS = {"i": r"\d+", "j": r"\d+", "2j": r"\d+", "p": r"[A-Za-z_]+", "rest": r".+"}
_FIELD = re.compile(r"\{(\w+)\}")

# Training-only entries dropped from the input: BatchNorm's step counter (SOLONet's own
# counters are set to 0; inference never reads them). Nothing else is ignored.
_IGNORED_SUFFIXES = ("num_batches_tracked",)


def _compile(template: str) -> re.Pattern[str]:
    parts, pos = [], 0
    for m in _FIELD.finditer(template):
        parts.append(re.escape(template[pos:m.start()]))
        name = "j2" if m.group(1) == "2j" else m.group(1)
        parts.append(f"(?P<{name}>{_GROUPS[m.group(1)]})")
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts) + r"\Z")


def _fill(template: str, values: Mapping[str, str]) -> str:
    return _FIELD.sub(lambda m: values[m.group(1)], template)


_COMPILED = tuple((_compile(src), src, _compile(dst), dst, why) for src, dst, why in _RULES)


def _to_ours(key: str) -> tuple[str, str] | None:
    """(SOLONet key, what decides its existence) for an mmdetection key, or None."""
    for src_re, _, _, dst, why in _COMPILED:
        m = src_re.match(key)
        if m:
            values = m.groupdict()
            if "j" in values:
                values["2j"] = str(2 * int(values["j"]))
            return _fill(dst, values), why
    return None


def _to_mmdet(key: str) -> str | None:
    """The mmdetection name of a SOLONet key (for messages), or None."""
    for _, src, dst_re, _, _ in _COMPILED:
        m = dst_re.match(key)
        if m:
            values = m.groupdict()
            if "j2" in values:
                if int(values["j2"]) % 2:
                    return None
                values["j"] = str(int(values.pop("j2")) // 2)
            return _fill(src, values)
    return None


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    return {k: shape for k, (shape, _) in declared_tensors(cfg).items()}


def _field_for(key: str, dim: int) -> str:
    """The ModelConfig field that most likely sets dimension ``dim`` of SOLONet's ``key``."""
    if key.startswith("backbone.body."):
        return "backbone"
    if key.startswith("backbone.fpn.inner_blocks."):
        return "backbone" if dim == 1 else "fpn_channels"
    if key.startswith("backbone.fpn."):
        return "fpn_channels"
    m = re.match(r"head\.(kernel|cate|mask)_convs(?:_[xy])?\.(\d+)\.", key)
    if m:
        if dim == 1 and m.group(2) == "0":
            return "fpn_channels" if m.group(1) == "cate" else "fpn_channels or coord_kernel"
        return "head_channels"
    if key.startswith(("head.mask_x_out.", "head.mask_y_out.")):
        return "grids" if dim == 0 else "head_channels"
    if key.startswith("head.cate_out."):
        return "num_classes" if dim == 0 else "head_channels"
    if key.startswith("head.kernel_out."):
        return "mask_channels" if dim == 0 else "head_channels"
    m = re.match(r"head\.mask_levels\.\d+\.(\d+)\.", key)
    if m:
        return "fpn_channels" if dim == 1 and m.group(1) == "0" else "mask_feat_channels"
    if key.startswith("head.mask_out."):
        return "mask_feat_channels" if dim == 1 else "mask_channels"
    if key.startswith(("head.mask_weight.", "head.mask_bias.")):
        return "grids" if dim == 0 else "head_channels"
    return "the architecture"


def unwrap_state_dict(state: object, wrappers: tuple[str, ...] = ("state_dict",)) -> dict[str, object]:
    """The weights of a state dict or of a whole checkpoint (under the first of ``wrappers`` that
    holds a mapping), without DataParallel's ``module.`` prefix."""
    if not isinstance(state, Mapping):
        raise BadInputError(f"expected a state dict, got {type(state).__name__}")
    for wrapper in wrappers:
        inner = state.get(wrapper)
        if isinstance(inner, Mapping):
            state = inner
            break
    out: dict[str, object] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise BadInputError(f"state dict key {key!r} is not a string")
        out[key.removeprefix("module.")] = value
    return out


def weights_arch(keys: Iterable[str]) -> str | None:
    """The architecture that mmdetection-named weights are (one of ``ARCHS``), or None."""
    keys = list(keys)
    if any(k.startswith("mask_head.conv_mask_list_x.") for k in keys):
        return "decoupled-solo" if any(k.startswith("mask_head.mask_convs_x.") for k in keys) \
            else "decoupled-solo-light"
    if any(k.startswith(("mask_head.mask_feature_head.", "mask_head.conv_kernel.")) for k in keys):
        return "solov2"
    if any(k.startswith("mask_head.conv_mask_list.") for k in keys):
        return "solo"
    return None


_ARCH_NAMES = {"solo": "SOLO", "solov2": "SOLOv2", "decoupled-solo": "decoupled SOLO",
               "decoupled-solo-light": "decoupled SOLO light"}


def _check_arch(keys: list[str], cfg: ModelConfig) -> None:
    found = weights_arch(keys)
    if found is not None and found != cfg.arch:
        raise BadInputError(f"mmdetection weights are a {_ARCH_NAMES[found]} model but the config says "
                            f"arch={cfg.arch!r}")


def from_mmdet(state: Mapping[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """SOLONet state dict (in SOLONet's key order) from an mmdetection 3.x SOLO / SOLOv2 one.

    ``state`` may be a whole checkpoint (weights under ``"state_dict"``) and its keys may carry
    DataParallel's ``module.`` prefix. Raises ``BadInputError`` (one line, the first problem and
    how many there are) for a key with no SOLONet counterpart, a missing key, or a shape that
    does not fit ``cfg`` (naming the config field that most likely differs).
    """
    src = unwrap_state_dict(state)
    keys = [k for k in src if not k.endswith(_IGNORED_SUFFIXES)]
    _check_arch(keys, cfg)
    expected = _expected_shapes(cfg)

    mapped: dict[str, tuple[str, torch.Tensor]] = {}  # ours -> (mmdet key, tensor)
    unexpected: list[tuple[str, str]] = []
    for key in keys:
        value = src[key]
        hit = _to_ours(key)
        if hit is None or hit[0] not in expected:
            unexpected.append((key, hit[1] if hit else ""))
            continue
        if not isinstance(value, torch.Tensor):
            raise BadInputError(f"mmdetection weights: {key!r} is a {type(value).__name__}, not a tensor")
        mapped[hit[0]] = (key, value)
    if unexpected:
        key, why = unexpected[0]
        hint = f"check {why} against the {cfg.arch} config" if why else "no SOLONet counterpart"
        raise BadInputError(
            f"mmdetection weights: unexpected key {key!r} ({len(unexpected)} unexpected in all; {hint})"
        )

    missing = [k for k in expected if k not in mapped and not k.endswith(_IGNORED_SUFFIXES)]
    if missing:
        theirs = _to_mmdet(missing[0])
        hit = _to_ours(theirs) if theirs else None
        why = hit[1] if hit else "the architecture"
        raise BadInputError(
            f"mmdetection weights: missing key {theirs or missing[0]!r} for {missing[0]!r} "
            f"({len(missing)} missing in all; check {why} against the {cfg.arch} config)"
        )

    out: dict[str, torch.Tensor] = {}
    for ours, shape in expected.items():
        if ours not in mapped:  # an ignored counter
            out[ours] = torch.zeros(shape, dtype=torch.int64)
            continue
        theirs, value = mapped[ours]
        want = shape
        if ours.startswith("head.mask_weight."):
            want = (*shape, 1, 1)  # SOLO's per-cell 1x1 convolution
        got = tuple(value.shape)
        if got != want:
            if len(got) != len(want):
                field = _field_for(ours, 0)
            else:
                field = _field_for(ours, next(d for d, (a, b) in enumerate(zip(got, want)) if a != b))
            raise BadInputError(
                f"mmdetection weights: {theirs!r} has shape {got} but the {cfg.arch} config needs {want} "
                f"for {ours!r} (check {field})"
            )
        out[ours] = value.reshape(shape) if want != shape else value
    return out
