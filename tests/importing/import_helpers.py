"""mmdetection-format checkpoints of the reference fixtures (tests/reference), as users hold them:
``{"state_dict": ..., "meta": {"config": <mmengine's dumped config text>, "dataset_meta": ...}}``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parents[1] / "reference" / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


def _py(v: Any) -> str:
    """Python source of a config value, in mmengine's dump style (``dict(key=value)``)."""
    if isinstance(v, dict):
        if all(isinstance(k, str) and k.isidentifier() for k in v):
            return "dict(" + ", ".join(f"{k}={_py(x)}" for k, x in v.items()) + ")"
        return "{" + ", ".join(f"{k!r}: {_py(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_py(x) for x in v) + "]"
    if isinstance(v, tuple):
        return "(" + ", ".join(_py(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return repr(v)


def config_text(arch: str) -> str:
    """A dumped mmdetection 3.x config for the fixture model ``arch``, with the usual extras."""
    model = MANIFEST["architectures"][arch]["mmdet_config"]
    pipeline = [{"type": "LoadImageFromFile", "backend_args": None},
                {"type": "Resize", "scale": (224, 160), "keep_ratio": True},
                {"type": "LoadAnnotations", "with_bbox": True, "with_mask": True},
                {"type": "PackDetInputs", "meta_keys": ("img_id", "img_path", "ori_shape", "img_shape")}]
    return "\n".join([
        "auto_scale_lr = dict(base_batch_size=16, enable=False)",
        "backend_args = None",
        "data_root = 'data/coco/'",
        "default_hooks = dict(checkpoint=dict(interval=1, type='CheckpointHook'))",
        f"model = {_py(model)}",
        f"test_pipeline = {_py(pipeline)}",
        f"test_dataloader = dict(batch_size=1, dataset=dict(ann_file='annotations/instances_val2017.json', "
        f"data_root=data_root, pipeline={_py(pipeline)}, type='CocoDataset'))",
        "work_dir = './work_dirs/solov2_r18'",
    ]) + "\n"


def mmdet_checkpoint(arch: str, path: Path, classes=("a", "b", "c"), config: str | None = None) -> Path:
    import numpy as np
    import torch

    from solo_deploy.model.seeded import seeded_state_dict

    entry = MANIFEST["architectures"][arch]
    weights = seeded_state_dict([(k, tuple(s)) for k, s in entry["keys"]], entry["seed"], offsets=entry["offsets"])
    # mmengine (mmdetection 3.x) keeps the config text as meta["cfg"].
    meta = {"cfg": config_text(arch) if config is None else config, "mmdet_version": "3.3.0",
            "dataset_meta": {"classes": tuple(classes), "palette": [(220, 20, 60)] * len(classes)},
            "epoch": 36, "iter": 1000, "seed": np.int64(0), "time": "20261130_120000"}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": meta, "state_dict": weights, "message_hub": {"log_scalars": {}}}, path)
    return path
