"""Model metadata: everything besides weights that inference needs, in every model format.

Torch-free: the runtime, the Triton client and the CLI read it without loading a network.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import BadInputError
from ..preprocess import PreprocessSpec
from .config import MAX_CANDIDATES, MAX_PER_IMG, ModelConfig, PostprocessConfig

# The newest schema this version reads. 2 (solo-deploy 0.3.0): keep-ratio preprocessing fields,
# stride_in_1x1. 3 (0.4.0): the decoupled SOLO architectures. 4 (0.5.0): end-to-end graphs
# (``end2end``), whose outputs are instances. 5 (0.6.0): ``category_ids`` other than 1..C (a
# COCO-trained model's ids 1..90 with gaps). A file records the lowest schema that describes it,
# so that older readers refuse only what they cannot read ("upgrade"): a reader that knows no
# end-to-end graphs never takes one for raw outputs, one that knows no category ids never writes
# 1..80 for COCO's classes.
SCHEMA_VERSION = 5
META_KEY = "solo_deploy"
MODEL_SUFFIXES = (".safetensors", ".ckpt")
# Outputs of an end-to-end graph (solo_deploy.export.end2end), in order.
END2END_OUTPUTS = ("masks", "boxes", "labels", "scores", "num_detections")
MASK_FORMATS = ("uint8", "prob")


@dataclass(frozen=True)
class End2EndSpec:
    """What an end-to-end graph adds to the network (``solo-deploy export --end2end``)."""

    max_per_img: int = MAX_PER_IMG  # K instance slots per image (mmdetection's max_per_img)
    # "uint8": masks as uint8 probability x 255, rounded so that q / 255 > mask_thr exactly where
    # the probability is; "prob": float32 probabilities.
    mask_format: str = "uint8"
    max_candidates: int = MAX_CANDIDATES  # K0 candidates by category score (TensorRT TopK: <= 3840)

    def __post_init__(self) -> None:
        if self.mask_format not in MASK_FORMATS:
            raise BadInputError(f"unknown mask format {self.mask_format!r}: choose uint8 or prob")
        for name in ("max_per_img", "max_candidates"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BadInputError(f"end-to-end {name} must be a positive integer, got {value!r}")
        if self.max_candidates > MAX_CANDIDATES:
            raise BadInputError(f"end-to-end max_candidates must be at most {MAX_CANDIDATES} (TensorRT's TopK "
                                f"limit), got {self.max_candidates}")

    def to_dict(self) -> dict[str, Any]:
        return {"max_per_img": self.max_per_img, "mask_format": self.mask_format,
                "max_candidates": self.max_candidates}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> End2EndSpec:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ModelMeta:
    """Everything besides weights that inference needs; travels in every model format."""

    model: ModelConfig
    preprocess: PreprocessSpec
    class_names: tuple[str, ...]
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    preset: str = "custom"
    extra: dict[str, Any] = field(default_factory=dict)
    end2end: End2EndSpec | None = None  # set for graphs whose outputs are instances
    # The data set's category id of each class (COCO's ``categories[].id``), what every JSON output
    # writes; () means 1..C, the ids `solo-deploy data` and the synthetic set use.
    category_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        ids = tuple(self.category_ids)
        if ids and (len(ids) != len(self.class_names) or len(set(ids)) != len(ids)
                    or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)):
            raise BadInputError(f"category_ids must be {len(self.class_names)} distinct non-negative integers, one "
                                f"per class; got {list(ids)[:12]}")
        if ids == tuple(range(1, len(self.class_names) + 1)):
            ids = ()  # the default, stored as such: the file keeps the lowest schema that describes it
        object.__setattr__(self, "category_ids", ids)

    @property
    def cat_ids(self) -> tuple[int, ...]:
        """The category id of each class: ``category_ids``, or 1..C."""
        return self.category_ids or tuple(range(1, len(self.class_names) + 1))

    @property
    def output_names(self) -> list[str]:
        """The deployed graph's outputs: :data:`END2END_OUTPUTS` for an end-to-end graph, else
        the raw outputs of :func:`output_names`."""
        return list(END2END_OUTPUTS) if self.end2end is not None else output_names(self.model)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema_version": (5 if self.category_ids else 4 if self.end2end is not None
                               else 3 if self.model.decoupled else 2),
            "format": "solo-deploy-model",
            "solo_deploy_version": __version__,
            "preset": self.preset,
            "model": self.model.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "postprocess": self.postprocess.to_dict(),
            "class_names": list(self.class_names),
            "extra": self.extra,
        }
        if self.end2end is not None:
            out["end2end"] = self.end2end.to_dict()
        if self.category_ids:
            out["category_ids"] = list(self.category_ids)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "model") -> ModelMeta:
        if not isinstance(d, dict):
            raise BadInputError(f"{source} has invalid solo-deploy metadata (not a JSON object)")
        try:
            version = int(d.get("schema_version", 0))
            if version > SCHEMA_VERSION:
                raise BadInputError(f"{source} has schema version {version}; this solo-deploy reads up to "
                                    f"{SCHEMA_VERSION}: upgrade solo-deploy")
            model = ModelConfig.from_dict(d["model"])
            meta = cls(
                model=model,
                preprocess=PreprocessSpec.from_dict(d["preprocess"]),
                class_names=tuple(str(c) for c in d["class_names"]),
                postprocess=PostprocessConfig.from_dict(d.get("postprocess", {})),
                preset=str(d.get("preset", "custom")),
                extra=dict(d.get("extra", {})),
                end2end=End2EndSpec.from_dict(d["end2end"]) if d.get("end2end") is not None else None,
                category_ids=tuple(d.get("category_ids") or ()),
            )
        except BadInputError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInputError(f"{source} has invalid solo-deploy metadata ({type(exc).__name__}: {exc})") from None
        if len(meta.class_names) != model.num_classes:
            raise BadInputError(f"{source}: {len(meta.class_names)} class names for {model.num_classes} classes")
        return meta


def file_sha256(path: str | Path, limit: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:limit] if limit else h.hexdigest()



# Names of the deployed graph's input and outputs (every exported graph, engine and runner).
INPUT_NAME = "images"


def output_names(cfg: ModelConfig) -> list[str]:
    """``scores``, then ``kernels`` and ``mask_feat`` (SOLOv2) or ``kernels`` and
    ``mask_feat_0..L-1`` (SOLO), or ``mask_x_0..L-1`` and ``mask_y_0..L-1`` (decoupled SOLO)."""
    if cfg.decoupled:
        return (["scores"] + [f"mask_x_{i}" for i in range(cfg.num_levels)]
                + [f"mask_y_{i}" for i in range(cfg.num_levels)])
    if cfg.arch == "solov2":
        return ["scores", "kernels", "mask_feat"]
    return ["scores", "kernels"] + [f"mask_feat_{i}" for i in range(cfg.num_levels)]


def split_outputs(meta: ModelMeta, arrays: Sequence[Any]) -> tuple[Any, Any, list[Any]]:
    """Deploy outputs in ``meta.output_names`` order -> ``(scores, kernels, mask maps)``, what
    post-processing takes; ``kernels`` is None for the decoupled heads, whose mask maps are the
    x-maps of every level, then the y-maps. End-to-end graphs: ``(scores (N, K), None, [masks,
    boxes, labels, num_detections])``, which ``runtime.inference.postprocess_outputs`` decodes."""
    arrays = list(arrays)
    names = meta.output_names
    if len(arrays) != len(names):
        kind = "end-to-end" if meta.end2end is not None else meta.model.arch
        raise BadInputError(f"expected {len(names)} model outputs for {kind}, got {len(arrays)}")
    if meta.end2end is not None:
        by_name = dict(zip(names, arrays))
        return by_name["scores"], None, [by_name[k] for k in ("masks", "boxes", "labels", "num_detections")]
    if meta.model.decoupled:
        return arrays[0], None, arrays[1:]
    return arrays[0], arrays[1], arrays[2:]
