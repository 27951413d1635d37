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
from .config import ModelConfig, PostprocessConfig

# The newest schema this version reads. 2 (solo-deploy 0.3.0): keep-ratio preprocessing fields,
# stride_in_1x1. 3 (0.4.0): the decoupled SOLO architectures. A file records the lowest schema
# that describes it, so that older readers refuse only what they cannot build ("upgrade").
SCHEMA_VERSION = 3
META_KEY = "solo_deploy"
MODEL_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(frozen=True)
class ModelMeta:
    """Everything besides weights that inference needs; travels in every model format."""

    model: ModelConfig
    preprocess: PreprocessSpec
    class_names: tuple[str, ...]
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    preset: str = "custom"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": 3 if self.model.decoupled else 2,
            "format": "solo-deploy-model",
            "solo_deploy_version": __version__,
            "preset": self.preset,
            "model": self.model.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "postprocess": self.postprocess.to_dict(),
            "class_names": list(self.class_names),
            "extra": self.extra,
        }

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


def split_outputs(cfg: ModelConfig, arrays: Sequence[Any]) -> tuple[Any, Any, list[Any]]:
    """Deploy outputs in :func:`output_names` order -> ``(scores, kernels, mask maps)``, what
    post-processing takes; ``kernels`` is None for the decoupled heads, whose mask maps are the
    x-maps of every level, then the y-maps."""
    arrays = list(arrays)
    if len(arrays) != len(output_names(cfg)):
        raise BadInputError(f"expected {len(output_names(cfg))} model outputs for {cfg.arch}, got {len(arrays)}")
    if cfg.decoupled:
        return arrays[0], None, arrays[1:]
    return arrays[0], arrays[1], arrays[2:]
