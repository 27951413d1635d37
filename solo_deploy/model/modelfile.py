"""The two model files: the Lightning checkpoint (.ckpt) and the inference model file.

The inference model file is one safetensors file: float32 weights (float16 on request: half the
size, but outputs move, median mask IoU 0.997 against float32) plus a JSON header entry
(``solo_deploy``) with the schema version, preset, model config, preprocessing spec,
post-processing config and class names. It loads with no pickle and no Lightning. Checkpoints
are read with ``torch.load(weights_only=True)``: their configs are stored as plain dicts.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .._paths import check_model_path
from ..core.inspect import checkpoint_meta, load_checkpoint, safetensors_meta
from ..core.meta import META_KEY, MODEL_SUFFIXES, SCHEMA_VERSION, ModelMeta, file_sha256  # noqa: F401 - re-exported (transitional)
from ..errors import BadInputError, one_line
from ..limits import check_checkpoint_size

WEIGHT_DTYPES = ("float32", "float16")


def save_model_file(path: str | Path, state_dict: dict[str, Any], meta: ModelMeta, dtype: str = "float32") -> Path:
    """Write weights (floating ones as ``dtype``; integer buffers as they are) and metadata, atomically."""
    import torch
    from safetensors.torch import save_file

    from .._atomic import atomic_path

    if dtype not in WEIGHT_DTYPES:
        raise BadInputError(f"unknown weight dtype {dtype!r}: expected one of {', '.join(WEIGHT_DTYPES)}")
    target = torch.float16 if dtype == "float16" else torch.float32
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        tensors[k] = (v.to(target) if v.is_floating_point() else v).contiguous()
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta.to_dict())})
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, Any], ModelMeta]:
    from safetensors import safe_open

    check_checkpoint_size(path)  # the file's size is its data
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = safetensors_meta(fh.metadata() or {}, path)
            state = {}
            for k in fh.keys():  # noqa: SIM118 - safetensors handles are not mappings
                t = fh.get_tensor(k)
                state[k] = t.float() if t.is_floating_point() else t
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the Rust parser raises its own error types
        raise BadInputError(f"cannot read model file {path}: {one_line(exc)}") from None
    return state, meta


def _read_checkpoint(path: Path) -> tuple[dict[str, Any], ModelMeta]:
    ckpt = load_checkpoint(path)
    meta = checkpoint_meta(ckpt, path)
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    return state, meta


def read_model(path: str | Path) -> tuple[dict[str, Any], ModelMeta]:
    """Read weights (float32 state dict) and metadata from a .ckpt or an inference model file.

    The metadata is checked on parsing (``ModelConfig``/``PreprocessSpec`` bounds), the weights
    by :func:`check_weights`: every file that reaches a network holds exactly its tensors."""
    path = check_model_path(path)
    if path.stat().st_size == 0:
        raise BadInputError(f"model file is empty: {path}")
    if path.suffix == ".ckpt":
        state, meta = _read_checkpoint(path)
    elif path.suffix == ".safetensors":
        state, meta = _read_safetensors(path)
    else:
        raise BadInputError(f"unsupported model file type {path.suffix!r} for {path}: expected .ckpt or .safetensors")
    check_weights(state, meta, path)
    return state, meta


def check_weights(state: dict[str, Any], meta: ModelMeta, path: str | Path) -> None:
    """One ``BadInputError`` line unless ``state`` holds exactly the tensors the network that
    ``meta`` describes declares: same names and shapes, floating weights floating and integer
    buffers integer, every floating value finite."""
    import torch

    from .network import declared_tensors

    expected = declared_tensors(meta.model)  # names, shapes and dtypes only: nothing allocated
    for key in expected:  # BatchNorm's step counter: unread at inference, dropped by some writers
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.int64)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise BadInputError(f"{path}: weights do not match the {meta.model.arch} config ({len(missing)} missing, "
                            f"{len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]})")
    for key, (shape, dtype) in expected.items():
        got = state[key]
        if not isinstance(got, torch.Tensor):
            raise BadInputError(f"{path}: weight {key} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != shape:
            raise BadInputError(f"{path}: weight {key} has shape {tuple(got.shape)}, the {meta.model.arch} config "
                                f"declares {shape}")
        if got.is_floating_point() != dtype.is_floating_point or (
                not dtype.is_floating_point and got.dtype != dtype):
            raise BadInputError(f"{path}: weight {key} is stored as {str(got.dtype).removeprefix('torch.')}, "
                                f"the network declares {str(dtype).removeprefix('torch.')}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            bad = int((~torch.isfinite(got)).sum())
            raise BadInputError(f"{path}: weight {key} has {bad} NaN or infinite value(s) of {got.numel()}")


def build_network(path: str | Path, loaded: tuple[dict[str, Any], ModelMeta] | None = None):
    """A float32 ``SOLONet`` in eval mode with the file's weights, and its metadata
    (``loaded``: what :func:`read_model` returned for ``path``, when the caller has read it)."""
    from .network import SOLONet

    state, meta = loaded or read_model(path)
    net = SOLONet(meta.model)
    net.load_state_dict(state)  # strict: read_model's check_weights matched every key and shape
    return net.eval(), meta
