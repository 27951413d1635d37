"""Tiny models for the export tests (importable: test modules here do ``from export_helpers import ...``)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

CLASS_NAMES = ("circle", "rectangle", "triangle", "ring")
TRT_REASON = "needs TensorRT and a CUDA GPU"


def tiny_preset(preset: str, num_classes: int = 4):
    """The named preset's arch and backbone with a thin head and small grids (fast on 2 CPU cores)."""
    from solo_deploy.core.config import get_preset

    return replace(get_preset(preset, num_classes=num_classes), fpn_channels=32, head_channels=32, mask_channels=16,
                   mask_feat_channels=16, norm_groups=8, stacked_convs=1, grids=(8, 6, 4, 3, 2))


def save_tiny(path: Path, preset: str, input_hw: tuple[int, int] = (64, 64), lively: bool = True,
              seed: int = 0, spec=None) -> Path:
    """Save a tiny model file. ``lively``: head weights scaled so random images give a few dozen
    confident instances with non-trivial masks (fresh SOLO init predicts nothing), which makes
    the post-processing parity comparison meaningful."""
    import torch

    from solo_deploy.model.modelfile import ModelMeta, save_model_file
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec

    torch.manual_seed(seed)
    cfg = tiny_preset(preset)
    net = SOLONet(cfg).eval()
    if lively:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in net.head.named_parameters():
                if name == "cate_out.bias":
                    p.fill_(-4.0)
                elif name == "cate_out.weight":
                    p.normal_(0, 0.4, generator=g)
                elif name == "kernel_out.weight":
                    p.normal_(0, 0.3, generator=g)
                elif name.startswith("mask_weight"):
                    p.normal_(0, 1.5, generator=g)
                elif name.startswith(("mask_x_out.", "mask_y_out.")):
                    # decoupled SOLO: x / y maps spread around 0 (the prior bias makes every mask empty)
                    p.normal_(0, 0.5 if name.endswith("weight") else 0.3, generator=g)
    spec = spec if spec is not None else PreprocessSpec(input_hw=input_hw)
    meta = ModelMeta(model=cfg, preprocess=spec, class_names=CLASS_NAMES, preset=preset)
    return save_model_file(path, net.state_dict(), meta)


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files that an atomic write would leave behind on failure."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def cast_only_onnx(path: Path, meta: dict) -> Path:
    """A one-node ONNX graph (uint8 images (1, 64, 64, 3) -> Cast to float) carrying ``meta`` as its
    solo-deploy metadata: enough for the code that reads and checks a graph before TensorRT."""
    import json

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Cast", ["images"], ["y"], to=TensorProto.FLOAT)], "g",
                              [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, 64, 64, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 64, 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.metadata_props.add(key="solo_deploy", value=json.dumps(meta))
    onnx.save(m, str(path))
    return path
