"""The train and val sides of a data set, as users keep it: one place for training's data,
``solo-deploy eval``, and calibration's images and accuracy check.

``--data`` is ``synthetic`` (the built-in splits) or a COCO-format folder, found in this order:

1. **the standard COCO layout**: ``annotations/instances_<name>.json`` files, one whose name
   holds ``train`` and one ``val`` (``instances_train2017.json``, ``instances_val2017.json``),
   images in ``<name>/`` (or ``images/<name>/``, ``images/``);
2. **split folders**: ``train/`` and ``val/``, each a COCO folder of its own;
3. **a single COCO folder** (``annotations.json`` + ``images/``, a lone ``instances_*.json``, or
   the JSON file itself): a held-out split by image id, the same for training, ``eval`` and
   calibration (``eval --ann FILE`` scores every image of one file). Ids are ordered by a hash of the id (so a
   split does not change when images are appended, and does not follow file order), and the
   first ``val_fraction`` of them (at least one) are the validation side, the rest training.

Explicit files win over the search: ``train --train-ann/--train-dir/--val-ann/--val-dir`` and
``eval``/``calibrate --ann/--images-dir``.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInputError

__all__ = ["VAL_FRACTION", "CocoSide", "coco_sides", "describe", "held_out_ids", "open_side", "open_split",
           "split_side"]

log = logging.getLogger("solo_deploy.data")
VAL_FRACTION = 0.1  # of a single folder's images held out for validation (ours: a common default)
SIDES = ("train", "val")


@dataclass(frozen=True)
class CocoSide:
    """One side of a COCO data set: its annotation file and image folders, or a folder in one of
    :class:`~solo_deploy.data.coco.CocoDataset`'s layouts (``root``); ``held_out`` = (fraction,
    side) when the side is part of a single folder's held-out split. ``how``: one line for the log."""

    how: str
    root: Path | None = None
    ann: Path | None = None
    image_dirs: tuple[Path, ...] = ()
    held_out: tuple[float, str] | None = None


def held_out_ids(ids: list[int], fraction: float) -> tuple[list[int], list[int]]:
    """(train ids, val ids) of a deterministic held-out split: ids ordered by the SHA-1 of their
    decimal text, the first ``round(fraction * n)`` (at least 1) for validation."""
    if not 0.0 < fraction < 1.0:
        raise BadInputError(f"--val-fraction must be between 0 and 1 (exclusive), got {fraction}")
    order = sorted(ids, key=lambda i: hashlib.sha1(str(int(i)).encode()).hexdigest())
    n_val = max(1, round(fraction * len(order)))
    if len(order) >= 2:
        n_val = min(n_val, len(order) - 1)  # both sides keep at least one image
    val = set(order[:n_val])
    return [i for i in ids if i not in val], [i for i in ids if i in val]


def _instances(root: Path) -> list[Path]:
    folder = root / "annotations"
    return sorted(folder.glob("instances_*.json")) if folder.is_dir() else []


def _standard_side(root: Path, ann: Path) -> CocoSide:
    name = ann.stem[len("instances_"):]
    dirs = tuple(d for d in (root / name, root / "images" / name, root / "images", root) if d.is_dir())
    return CocoSide(how=f"{ann.relative_to(root)} with images in {dirs[0] if dirs else root / name}",
                    ann=ann, image_dirs=dirs or (root / name,))


def coco_sides(data: str | Path, *, val_fraction: float = VAL_FRACTION, train_ann: str | Path | None = None,
               train_dir: str | Path | None = None, val_ann: str | Path | None = None,
               val_dir: str | Path | None = None) -> dict[str, CocoSide]:
    """``{"train": CocoSide, "val": CocoSide}`` of a COCO ``data`` folder (see the module docstring).

    ``train_ann``/``val_ann`` (+ ``train_dir``/``val_dir``, default the JSON's folder) name the
    files directly; one of them alone takes the other side from ``data``.
    """
    explicit = {"train": _explicit(train_ann, train_dir, "--train-ann", "--train-dir"),
                "val": _explicit(val_ann, val_dir, "--val-ann", "--val-dir")}
    if all(explicit.values()):
        return explicit  # type: ignore[return-value]
    if data in (None, "", "synthetic"):
        raise BadInputError("--train-ann and --val-ann go together unless --data is a COCO folder")
    root = Path(data)
    if not root.exists():
        raise BadInputError(f"data folder not found: {root}")
    found = _search(root, val_fraction)
    if any(explicit.values()) and found["train"].held_out is not None:
        # One folder beside an explicit set for the other side: all of the folder, nothing held out.
        given = "--val-ann" if explicit["val"] else "--train-ann"
        whole = CocoSide(how=f"{root} (all of it: the other side is {given})", root=root)
        return {side: explicit[side] or whole for side in SIDES}
    return {side: explicit[side] or found[side] for side in SIDES}


def _explicit(ann: str | Path | None, images: str | Path | None, ann_flag: str, dir_flag: str) -> CocoSide | None:
    if ann is None:
        if images is not None:
            raise BadInputError(f"{dir_flag} needs {ann_flag} (the annotation file of those images)")
        return None
    ann = Path(ann)
    if not ann.is_file():
        raise BadInputError(f"{ann_flag}: annotation file not found: {ann}")
    if images is None:  # CocoDataset's default: beside the file, or in its images/ folder
        return CocoSide(how=f"{ann} with images beside it ({ann_flag})", ann=ann)
    if not Path(images).is_dir():
        raise BadInputError(f"{dir_flag}: image folder not found: {images}")
    return CocoSide(how=f"{ann} with images in {images} ({ann_flag})", ann=ann, image_dirs=(Path(images),))


def _search(root: Path, val_fraction: float) -> dict[str, CocoSide]:
    if root.is_dir():
        files = _instances(root)
        if len(files) > 1:
            picked = {side: [f for f in files if side in f.stem[len("instances_"):]] for side in SIDES}
            if all(len(v) == 1 for v in picked.values()):
                return {side: _standard_side(root, picked[side][0]) for side in SIDES}
            names = ", ".join(f.name for f in files)
            raise BadInputError(f"{root / 'annotations'} has {names}: cannot tell the train and val files apart; "
                                f"pass --train-ann and --val-ann (eval, calibrate: --ann)")
        if (root / "train").is_dir() and (root / "val").is_dir():
            return {side: CocoSide(how=f"{root / side}/ (split folders)", root=root / side) for side in SIDES}
    how = f"{root} (one COCO set: held-out split by image id, {val_fraction:.0%} for validation, --val-fraction)"
    return {side: CocoSide(how=how, root=root, held_out=(val_fraction, side)) for side in SIDES}


def open_side(side: CocoSide, images: int | None = None):
    """The :class:`~solo_deploy.data.coco.CocoDataset` of ``side`` (its first ``images`` images)."""
    from .coco import CocoDataset

    ds = CocoDataset(ann=side.ann, image_dirs=side.image_dirs) if side.ann is not None else CocoDataset(side.root)
    if side.held_out is not None:
        fraction, which = side.held_out
        if len(ds) == 0 or (len(ds) < 2 and which == "train"):  # one image: it is the validation side
            raise BadInputError(f"{ds.json_path} has {len(ds)} image(s): a held-out split needs at least 2; "
                                f"give the validation images separately (train --val-ann, eval --ann)")
        train_ids, val_ids = held_out_ids(ds.image_ids, fraction)
        ds = ds.select(train_ids if which == "train" else val_ids)
    if images is not None:
        ds = ds.take(images)
    return ds


def split_side(data: str, split: str = "val", *, ann: str | Path | None = None, images_dir: str | Path | None = None,
               val_fraction: float = VAL_FRACTION) -> CocoSide | None:
    """Where ``open_split`` takes a COCO split from (None for the synthetic data); reads no JSON."""
    if ann is not None or images_dir is not None:
        return _explicit(ann, images_dir, "--ann", "--images-dir")
    if data == "synthetic":
        return None
    return _named_side(Path(data), split, val_fraction)


def open_split(data: str, split: str = "val", images: int | None = None, *, ann: str | Path | None = None,
               images_dir: str | Path | None = None, val_fraction: float = VAL_FRACTION):
    """One split for evaluation -> (dataset of Samples, GT COCO dict, class names, cat_ids).

    ``synthetic``: the built-in split; a COCO folder: ``split`` is ``train`` or ``val`` of its
    layout (or the name of an ``annotations/instances_<name>.json`` / a sub-folder); ``ann`` (+
    ``images_dir``) names the annotation file directly.
    """
    side = split_side(data, split, ann=ann, images_dir=images_dir, val_fraction=val_fraction)
    if side is not None:
        log.info("data: %s", side.how)
        ds = open_side(side, images)
        return ds, ds.coco_dict, list(ds.class_names), list(ds.cat_ids)
    if data == "synthetic":
        from .synthetic import SPLITS, SyntheticConfig, SyntheticDataset, synthetic_coco_dict

        if split not in SPLITS:
            raise BadInputError(f"unknown synthetic split {split!r}: choose one of {', '.join(SPLITS)}")
        cfg = SyntheticConfig()
        ds = SyntheticDataset(split, cfg, count=images)
        gt = synthetic_coco_dict(split, count=images, cfg=cfg)
        return ds, gt, list(cfg.class_names), list(range(1, len(cfg.class_names) + 1))
    raise BadInputError(f"unknown data {data!r}")


def _named_side(root: Path, split: str, val_fraction: float) -> CocoSide:
    if not root.exists():
        raise BadInputError(f"data folder not found: {root}")
    if root.is_dir():
        files = _instances(root)
        named = [f for f in files if split in f.stem[len("instances_"):]]
        if len(files) > 1:
            if len(named) == 1:
                return _standard_side(root, named[0])
            names = ", ".join(f.name for f in files)
            raise BadInputError(f"{root / 'annotations'} has {names}: none or several match --split {split!r}; "
                                f"pass --ann FILE")
        if (root / split).is_dir():
            return CocoSide(how=f"{root / split}/ (split folder)", root=root / split)
        if (root / "train").is_dir() and (root / "val").is_dir():
            raise BadInputError(f"{root} has train/ and val/ but no {split}/: use --split train or val")
    if split not in SIDES:
        raise BadInputError(f"{root} is one COCO set: --split is train or val (the two sides of its held-out split), "
                            f"got {split!r}")
    return _search(root, val_fraction)[split]


def describe(sides: dict[str, Any]) -> str:
    """One log line naming where each side comes from (once when both come from one place)."""
    hows = {v.how for v in sides.values()}
    if len(hows) == 1:
        return hows.pop()
    return "; ".join(f"{k}: {v.how}" for k, v in sides.items())
