"""Output paths checked against the inputs of the same call: nothing the user gave is written over.

Every command lists what it reads and what it will write before it starts; an output that
resolves to an input (the same path, a link to it, a hard link), or to another output of the same
call, is a one-line error (exit 2) before anything is written.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import BadInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # what OpenCV reads everywhere

Named = tuple[str, "str | os.PathLike[str] | None"]


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: Iterable[Named], inputs: Iterable[Named] = ()) -> None:
    """Raise ``BadInputError`` if an output is an input or another output.

    ``outputs`` and ``inputs`` are (what the user calls it, path) pairs, e.g. ("--output",
    "out.mp4"); pairs whose path is None are skipped.
    """
    outs = [(name, Path(p)) for name, p in outputs if p is not None]
    ins = [(name, Path(p)) for name, p in inputs if p is not None]
    for i, (oname, opath) in enumerate(outs):
        for iname, ipath in ins:
            if _same(opath, ipath):
                raise BadInputError(f"{oname} {opath} is the {iname} {ipath}: it would be overwritten; "
                                    f"write the output elsewhere")
        for oname2, opath2 in outs[i + 1:]:
            if _same(opath, opath2):
                raise BadInputError(f"{oname} and {oname2} are the same file {opath}: give each its own path")


def check_folder_output(name: str, folder: str | os.PathLike[str], input_name: str,
                        input_folder: str | os.PathLike[str]) -> None:
    """Refuse writing into the folder the inputs are read from (outputs would mix with, or
    replace, the user's files)."""
    if Path(input_folder).is_dir() and _same(Path(folder), Path(input_folder)):
        raise BadInputError(f"{name} {folder} is the {input_name} folder: outputs would replace or mix with its "
                            f"files; write them elsewhere")


def check_model_path(path: str | os.PathLike[str]) -> Path:
    """A model path that exists and is a file (a folder, or nothing, is a one-line error)."""
    p = Path(path)
    if p.is_dir():
        raise BadInputError(f"{p} is a folder, not a model file (.ckpt, .safetensors, .onnx or .engine)")
    if not p.exists():
        raise BadInputError(f"model file not found: {p}")
    return p
