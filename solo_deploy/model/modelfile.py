"""The two model files: the Lightning checkpoint (.ckpt) and the inference model file.

The inference model file is one safetensors file: float16 weights plus a JSON header entry
(``solo_deploy``) with the schema version, preset, model config, preprocessing spec,
post-processing config and class names. It loads with no pickle and no Lightning. Checkpoints
are read with ``torch.load(weights_only=True)``: their configs are stored as plain dicts.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._paths import check_model_path
from ..errors import BadInputError
from ..preprocess import PreprocessSpec
from .config import ModelConfig, PostprocessConfig

SCHEMA_VERSION = 1
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
        from .. import __version__

        return {
            "schema_version": SCHEMA_VERSION,
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
    def from_dict(cls, d: dict[str, Any], source: str = "model") -> "ModelMeta":
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


def save_model_file(path: str | Path, state_dict: dict[str, Any], meta: ModelMeta) -> Path:
    """Write weights (as float16; integer buffers as they are) and metadata, atomically."""
    from safetensors.torch import save_file

    from .._atomic import atomic_path

    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        tensors[k] = (v.half() if v.is_floating_point() else v).contiguous()
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta.to_dict())})
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, Any], ModelMeta]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            if META_KEY not in header:
                raise BadInputError(f"{path} is a safetensors file but not a solo-deploy model file (no metadata)")
            meta = ModelMeta.from_dict(json.loads(header[META_KEY]), source=str(path))
            state = {}
            for k in fh.keys():
                t = fh.get_tensor(k)
                state[k] = t.float() if t.is_floating_point() else t
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the Rust parser raises its own error types
        raise BadInputError(f"cannot read model file {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return state, meta


def _read_checkpoint(path: Path) -> tuple[dict[str, Any], ModelMeta]:
    import pickle

    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unpickling refused"
        raise BadInputError(f"refusing to load {path}: it needs code execution to unpickle ({first[:160]})") from None
    except Exception as exc:  # noqa: BLE001 - zip/pickle errors of every kind mean a corrupt file
        raise BadInputError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise BadInputError(f"{path} is not a Lightning checkpoint (no state_dict)")
    hp = ckpt.get("hyper_parameters") or {}
    if "meta" not in hp:
        raise BadInputError(f"{path} is not a solo-deploy checkpoint (no solo-deploy metadata in hyper_parameters)")
    meta = ModelMeta.from_dict(hp["meta"], source=str(path))
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    return state, meta


def read_model(path: str | Path) -> tuple[dict[str, Any], ModelMeta]:
    """Read weights (float32 state dict) and metadata from a .ckpt or an inference model file."""
    path = check_model_path(path)
    if path.stat().st_size == 0:
        raise BadInputError(f"model file is empty: {path}")
    if path.suffix == ".ckpt":
        return _read_checkpoint(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    raise BadInputError(f"unsupported model file type {path.suffix!r} for {path}: expected .ckpt or .safetensors")


def build_network(path: str | Path):  # -> tuple[SOLONet, ModelMeta]
    """A float32 ``SOLONet`` in eval mode with the file's weights, and its metadata."""
    from .network import SOLONet

    state, meta = read_model(path)
    net = SOLONet(meta.model)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BadInputError(
            f"{path}: weights do not match the {meta.model.arch} config "
            f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]})"
        )
    return net.eval(), meta
