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


def numbered_folder(base: str | os.PathLike[str]) -> Path:
    """The first of ``base``, ``base2``, ``base3``, ... that does not exist yet (Ultralytics'
    ``runs/predict``, ``runs/predict2`` numbering): each call gets a folder of its own."""
    base = Path(base)
    # lexists: a dangling symlink is a name taken too (mkdir would fail on it forever).
    if not os.path.lexists(base):
        return base
    n = 2
    while os.path.lexists(candidate := base.with_name(f"{base.name}{n}")):
        n += 1
    return candidate


def claim_folder(folder: Path, numbered_from: Path | None = None) -> Path:
    """Create the output folder now that the work is about to write. ``numbered_from``: the base
    ``folder`` was numbered from; it is then created exclusively, and a folder another call took
    in the meantime moves this one to the next free number."""
    if numbered_from is None:
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            folder = numbered_folder(numbered_from)


def check_reused_folder(option: str, folder: str | os.PathLike[str], exist_ok: bool) -> None:
    """``-o FOLDER`` that already holds files (earlier outputs, or anything else) is refused unless
    ``--exist-ok``: new outputs would mix with, or replace, what is there."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BadInputError(f"{option} {folder} is a file, not a folder")
    if exist_ok or not folder.is_dir():
        return
    try:
        first = next(folder.iterdir(), None)
    except OSError as exc:
        raise BadInputError(f"cannot read {option} folder {folder}: {exc.strerror or exc}") from None
    if first is not None:
        raise BadInputError(f"{option} {folder} already holds files (e.g. {first.name}); pass --exist-ok to write "
                            f"into it, or leave out {option} for a new numbered folder")
