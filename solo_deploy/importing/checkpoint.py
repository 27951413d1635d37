"""Read a foreign SOLO checkpoint without running its pickle.

``torch.load(weights_only=True)`` rebuilds tensors, containers and plain values only. Checkpoints
written by training frameworks also carry a few other objects in their metadata; exactly these
are allowed, and nothing else:

* numpy arrays, dtypes and scalars (mmengine's ``message_hub`` and ``meta`` keep them); they are
  rebuilt by numpy's own data-only reconstructors;
* mmengine's ``HistoryBuffer`` (logged scalars of a training run) is rebuilt as an inert
  :class:`_Inert` record: its class is never imported and none of its code runs.

Any other Python object in the file (a class that could run code when unpickled) makes the load
fail with one line naming it; the file is never unpickled without these limits.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from ..errors import BadInputError, RuntimeFailure, one_line
from ..limits import check_checkpoint_size

__all__ = ["load_foreign_checkpoint"]

# Objects of training frameworks' metadata that solo-deploy rebuilds as inert records.
_INERT_NAMES = ("mmengine.logging.history_buffer.HistoryBuffer",)


class _Inert:
    """Stand-in for an allowed foreign metadata object: keeps its state, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _allowed_globals() -> list[Any]:
    import numpy as np

    try:  # numpy 2; files written with numpy 1 name the same functions numpy.core.multiarray.*
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core import multiarray  # type: ignore[no-redef]

    allowed: list[Any] = [np.ndarray, np.dtype]
    for mod_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(multiarray._reconstruct, f"{mod_name}._reconstruct"), (multiarray.scalar, f"{mod_name}.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    allowed += [(_Inert, name) for name in _INERT_NAMES]
    return allowed


def load_foreign_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state dict of tensors, metadata dict) of a PyTorch checkpoint file.

    The state dict is ``ckpt["state_dict"]`` (or ``ckpt["model"]``, detectron2's key, or the
    top-level mapping of tensors itself). Metadata is ``ckpt["meta"]`` when present, else {}.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise BadInputError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise BadInputError(f"{path} is a folder, not a checkpoint file")
    if path.stat().st_size == 0:
        raise BadInputError(f"checkpoint file is empty: {path}")
    check_checkpoint_size(path)
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch < 2.5
        raise RuntimeFailure(f"solo-deploy import needs torch >= 2.6 (torch.serialization.safe_globals); "
                             f"this is torch {torch.__version__}")
    try:
        with safe_globals(_allowed_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever the unpickler raises, the file is the problem
        found = re.search(r"GLOBAL ([\w.]+)", str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
        if found:
            raise BadInputError(f"{path} holds a Python object of type {found.group(1)}, which solo-deploy does not "
                                f"unpickle (it could run code); re-save its state_dict with torch.save to import "
                                f"it") from None
        raise BadInputError(f"cannot read checkpoint {path}: not a PyTorch checkpoint, or truncated "
                            f"({one_line(exc)[:160]})") from None
    if not isinstance(ckpt, dict):
        raise BadInputError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dictionary")
    state = ckpt
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), dict):
            state = ckpt[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise BadInputError(f"{path} has no weights (no tensors under state_dict, model or the top level)")
    meta = ckpt.get("meta") if isinstance(ckpt.get("meta"), dict) else {}
    return tensors, meta
