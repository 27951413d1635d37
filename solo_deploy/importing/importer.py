"""Import a SOLO / SOLOv2 checkpoint trained elsewhere into a solo-deploy model file.

checkpoint (safe load) -> source format (from the keys, or forced) -> mmdetection 3.x names ->
architecture from the tensors (+ the config text the checkpoint carries, read as data) ->
``keymap.from_mmdet`` -> model file with mmdetection's test preprocessing (keep-ratio resize,
normalise, pad with the mean colour) and test settings (score, mask and update thresholds,
``nms_pre``, Matrix NMS kernel, ``max_per_img``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._paths import check_outputs
from ..core.config import TEST_SCALES, PostprocessConfig
from ..core.meta import ModelMeta
from ..errors import BadInputError
from ..model.keymap import from_mmdet
from ..model.modelfile import save_model_file
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from . import legacy
from .checkpoint import load_foreign_checkpoint
from .coco_names import COCO_CATEGORY_IDS, COCO_CLASSES
from .config_text import parse_config_text
from .infer import family_preset, infer_config

__all__ = ["FORMATS", "ImportResult", "import_checkpoint"]

FORMATS = ("auto", "mmdet", "wxinlong", "adelaidet")
# mmdetection's SOLO / SOLOv2 test_cfg keys -> PostprocessConfig fields.
_TEST_CFG = {"score_thr": "score_thr", "mask_thr": "mask_thr", "filter_thr": "update_thr", "nms_pre": "nms_pre",
             "max_per_img": "max_per_img", "kernel": "kernel", "sigma": "sigma"}


@dataclass
class ImportResult:
    """What :func:`import_checkpoint` wrote and where each setting came from."""

    path: Path
    meta: Any  # ModelMeta
    source_format: str
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what the source framework computes differently (legacy formats)

    def summary(self) -> str:
        m = self.meta
        cfg, spec = m.model, m.preprocess
        lines = [f"wrote {self.path} ({self.source_format} checkpoint, {cfg.arch} {cfg.backbone}, "
                 f"{cfg.num_classes} classes, preset {m.preset})",
                 f"  test resize: keep ratio into {spec.scale[0]} x {spec.scale[1]} ({self.sources['test_scale']})",
                 f"  test settings: score_thr {m.postprocess.score_thr}, mask_thr {m.postprocess.mask_thr}, "
                 f"update_thr {m.postprocess.update_thr}, nms_pre {m.postprocess.nms_pre}, "
                 f"max_per_img {m.postprocess.max_per_img} ({self.sources['test_cfg']})",
                 f"  class names: {self.sources['class_names']}"]
        guessed = sorted(k for k, v in self.sources.items() if "default" in v and k not in ("test_cfg", "test_scale"))
        if guessed:
            lines.append(f"  not in the checkpoint, mmdetection's defaults used: {', '.join(guessed)}")
        lines += [f"  {self.source_format}: {note}" for note in self.notes]
        return "\n".join(lines)


def _scale_pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, list) and len(value) == 1:  # img_scale=[(1333, 800)]
        value = value[0]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 32 for v in value):
        return int(max(value)), int(min(value))
    return None


def _pipeline_steps(pipeline: Any):
    """Steps of a test pipeline, MultiScaleFlipAug's (mmdetection 2.x) transforms included."""
    if isinstance(pipeline, (list, tuple)):
        for step in pipeline:
            if isinstance(step, dict):
                yield step
                yield from _pipeline_steps(step.get("transforms"))


def _find_resize(pipeline: Any) -> tuple[int, int] | None:
    """The keep-ratio test scale of a pipeline: ``Resize(scale=..., keep_ratio=True)`` (3.x) or
    ``MultiScaleFlipAug(img_scale=...)`` around ``Resize(keep_ratio=True)`` (2.x)."""
    outer = None
    for step in _pipeline_steps(pipeline):
        kind = str(step.get("type", "")).split(".")[-1]
        if kind == "MultiScaleFlipAug":
            outer = _scale_pair(step.get("img_scale", step.get("scale")))
        elif kind == "Resize":
            if step.get("keep_ratio") is not True:
                raise BadInputError("the checkpoint's test pipeline resizes without keeping the ratio: "
                                    "pass --test-scale LONG SHORT to choose the keep-ratio size")
            found = _scale_pair(step.get("scale", step.get("img_scale"))) or outer
            if found:
                return found
    return None


def _find_normalize(pipeline: Any) -> dict[str, Any] | None:
    """mmdetection 2.x's ``Normalize(mean, std, to_rgb)`` as a data_preprocessor-like dict."""
    for step in _pipeline_steps(pipeline):
        if str(step.get("type", "")).split(".")[-1] == "Normalize":
            return {"mean": step.get("mean"), "std": step.get("std"), "bgr_to_rgb": step.get("to_rgb", True) is True}
    return None


def _stats(value: Any, what: str) -> tuple[float, float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok or (what == "std" and min(value) <= 0):
        raise BadInputError(f"the checkpoint's config has an unusable {what} {value!r}: expected 3 numbers"
                            + (" above 0" if what == "std" else ""))
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _pipelines(cfg: dict[str, Any]) -> tuple[Any, ...]:
    """The config's test pipelines: 3.x test_dataloader, test_pipeline, 2.x data.test."""
    loader = cfg.get("test_dataloader") if isinstance(cfg.get("test_dataloader"), dict) else {}
    dataset = loader.get("dataset") if isinstance(loader.get("dataset"), dict) else {}
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}  # mmdetection 2.x
    test = data.get("test") if isinstance(data.get("test"), dict) else {}
    return dataset.get("pipeline"), cfg.get("test_pipeline"), test.get("pipeline")


def _test_scale(cfg: dict[str, Any]) -> tuple[int, int] | None:
    for pipeline in _pipelines(cfg):
        found = _find_resize(pipeline)
        if found:
            return found
    return None


def _class_names(meta: dict[str, Any], cfg: dict[str, Any], num_classes: int,
                 names_file: str | Path | None) -> tuple[tuple[str, ...], str]:
    if names_file is not None:
        path = Path(names_file)
        if not path.is_file():
            raise BadInputError(f"class names file not found: {path}")
        names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
        source = f"{path} (--class-names)"
    else:
        names, source = (), ""
        ds = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), dict) else {}
        for where, value in (("the checkpoint's dataset_meta", ds.get("classes")),
                             ("the checkpoint's CLASSES", meta.get("CLASSES")),
                             ("the config's metainfo", (cfg.get("metainfo") or {}).get("classes")
                              if isinstance(cfg.get("metainfo"), dict) else None)):
            if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
                names, source = tuple(value), where
                break
        if not names:
            if num_classes != len(COCO_CLASSES):
                raise BadInputError(f"the checkpoint has {num_classes} classes and no class names: "
                                    f"pass --class-names FILE (one name per line)")
            names, source = COCO_CLASSES, "COCO's 80 classes (none in the checkpoint)"
    if len(names) != num_classes:
        raise BadInputError(f"{len(names)} class names ({source}) for a model with {num_classes} classes")
    return names, source


def import_checkpoint(checkpoint: str | Path, output: str | Path, source_format: str = "auto",
                      class_names: str | Path | None = None, test_scale: tuple[int, int] | None = None) -> ImportResult:
    """Convert ``checkpoint`` into the model file ``output`` (.safetensors, written atomically)."""
    checkpoint, output = Path(checkpoint), Path(output)
    check_outputs([("-o", output)], [("checkpoint", checkpoint)])
    if source_format not in FORMATS:
        raise BadInputError(f"unknown --source-format {source_format!r}: choose one of {', '.join(FORMATS)}")
    if output.suffix != ".safetensors":
        raise BadInputError(f"the output must be a .safetensors model file, got {output.name!r}")
    if test_scale is not None and (len(test_scale) != 2 or min(test_scale) < 32):
        raise BadInputError(f"--test-scale needs two sides of at least 32 pixels, got {test_scale!r}")
    state, meta = load_foreign_checkpoint(checkpoint)
    fmt = source_format
    if fmt != "mmdet":
        if fmt == "auto":
            fmt = legacy.detect_format(state)
        if fmt == "wxinlong":
            state = legacy.wxinlong_to_mmdet(state)
        elif fmt == "adelaidet":
            state = legacy.adelaidet_to_mmdet(state)
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel-saved weights
    # mmengine (mmdetection 3.x) stores the config text as meta["cfg"], mmcv 1.x (2.x) as meta["config"].
    key = "cfg" if isinstance(meta.get("cfg"), str) else "config"
    text = meta.get(key)
    cfg = parse_config_text(text, f"{checkpoint.name} meta[{key!r}]") if isinstance(text, str) else {}
    model_cfg = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    caffe = fmt == "adelaidet" or (isinstance(model_cfg.get("backbone"), dict)
                                   and model_cfg["backbone"].get("style") == "caffe")
    inferred = infer_config(state, model_cfg, caffe_style=caffe)
    sources = dict(inferred.sources)

    test_cfg = model_cfg.get("test_cfg") if isinstance(model_cfg.get("test_cfg"), dict) else {}
    post_kw = {}
    for theirs, ours in _TEST_CFG.items():
        v = test_cfg.get(theirs)
        if (isinstance(v, str) and theirs == "kernel") or (isinstance(v, (int, float)) and not isinstance(v, bool)):
            post_kw[ours] = v
    post = PostprocessConfig(**post_kw)
    sources["test_cfg"] = "the checkpoint's config" if post_kw else "mmdetection's SOLO defaults (no config)"

    configured = _test_scale(cfg) if test_scale is None else None
    if test_scale is not None:
        scale, sources["test_scale"] = (max(test_scale), min(test_scale)), "--test-scale"
    elif configured:
        scale, sources["test_scale"] = configured, "the checkpoint's test pipeline"
    else:
        default = TEST_SCALES[family_preset(inferred.family)]
        scale, sources["test_scale"] = default, f"mmdetection's {inferred.family} default"

    pre = model_cfg.get("data_preprocessor")
    if isinstance(pre, dict):  # 3.x; mmengine's default is bgr_to_rgb=False (a BGR network)
        pre = {**pre, "bgr_to_rgb": pre.get("bgr_to_rgb", False) is True or pre.get("rgb_to_bgr") is True}
        sources["mean_std"] = "the checkpoint's data_preprocessor"
    else:
        pre = next((n for n in map(_find_normalize, _pipelines(cfg)) if n), None)
        if pre is not None:
            sources["mean_std"] = "the checkpoint's test pipeline (Normalize)"
        elif fmt == "adelaidet":  # detectron2's defaults: BGR, PIXEL_STD 1
            pre = {"mean": (103.53, 116.28, 123.675), "std": (1.0, 1.0, 1.0), "bgr_to_rgb": False}
            sources["mean_std"] = "detectron2's defaults (BGR, std 1)"
        else:
            pre = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "bgr_to_rgb": True}
            sources["mean_std"] = "mmdetection's default (ImageNet, RGB)"
    mean = _stats(pre.get("mean", IMAGENET_MEAN), "mean")
    std = _stats(pre.get("std", IMAGENET_STD), "std")
    if not pre["bgr_to_rgb"]:
        # The network was trained on BGR: turn it into an RGB network (swap the first convolution's
        # input channels and the statistics), so the graph input stays RGB like every other model.
        if "backbone.conv1.weight" not in state:
            raise BadInputError("a BGR network without backbone.conv1 (a deep-stem ResNet?): not supported")
        state = {**state, "backbone.conv1.weight": state["backbone.conv1.weight"].flip(1).contiguous()}
        mean, std = mean[::-1], std[::-1]
        sources["channels"] = "BGR network turned RGB (first convolution's input channels swapped)"
    divisor, pad_value = pre.get("pad_size_divisor", 32), pre.get("pad_value", 0)
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 1:
        divisor = 32
    if not isinstance(pad_value, (int, float)) or isinstance(pad_value, bool):
        pad_value = 0
    spec = PreprocessSpec.keep_ratio(scale=scale, mean=mean, std=std, size_divisor=divisor, pad_value=float(pad_value))
    names, sources["class_names"] = _class_names(meta, cfg, inferred.config.num_classes, class_names)
    weights = from_mmdet(state, inferred.config)
    # COCO's classes keep COCO's ids (1..90 with gaps): results must score against COCO's own files.
    model_meta = ModelMeta(model=inferred.config, preprocess=spec, class_names=names, postprocess=post,
                           category_ids=COCO_CATEGORY_IDS if tuple(names) == COCO_CLASSES else (),
                           preset=inferred.preset or f"imported-{inferred.family}",
                           extra={"imported": {"checkpoint": checkpoint.name, "format": fmt, "sources": sources}})
    save_model_file(output, weights, model_meta)
    notes = tuple(legacy.describe_legacy_semantics(fmt)) if fmt != "mmdet" else ()
    return ImportResult(path=output, meta=model_meta, source_format=fmt, sources=sources, notes=notes)
