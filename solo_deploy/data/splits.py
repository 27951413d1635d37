"""Open a data split for evaluation or validation: the built-in synthetic splits or a COCO folder.

One place for "synthetic or a COCO folder", used by ``solo-deploy eval``, training's validation
and calibration's accuracy check.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import BadInputError

__all__ = ["open_split"]


def open_split(data: str, split: str = "val", images: int | None = None):
    """-> (dataset of Samples, GT COCO dict, class names, cat_ids)."""
    if data == "synthetic":
        from .synthetic import SPLITS, SyntheticConfig, SyntheticDataset, synthetic_coco_dict

        if split not in SPLITS:
            raise BadInputError(f"unknown synthetic split {split!r}: choose one of {', '.join(SPLITS)}")
        cfg = SyntheticConfig()
        ds = SyntheticDataset(split, cfg, count=images)
        gt = synthetic_coco_dict(split, count=images, cfg=cfg)
        return ds, gt, list(cfg.class_names), list(range(1, len(cfg.class_names) + 1))
    from .coco import CocoDataset

    root = Path(data)
    if not root.exists():
        raise BadInputError(f"data folder not found: {root}")
    if (root / split).is_dir():
        root = root / split
    ds = CocoDataset(root)
    if images is not None:
        ds = ds.take(images)
    return ds, ds.coco_dict, list(ds.class_names), list(ds.cat_ids)
