"""Model files with absurd but well-formed contents (issue #17): one line and exit 2 before
anything is allocated, through the installed script. Each case edits one thing of a valid tiny
model file: its header values, one tensor, or (ONNX) the graph under a copied metadata block."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from cli_helpers import assert_one_line_error, run_cli

from solo_deploy.errors import BadInputError

CLASS_NAMES = ("circle", "rectangle", "triangle", "ring")


def _valid(tmp_path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from conftest import tiny_config

    from solo_deploy.core.meta import ModelMeta
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec

    torch.manual_seed(0)
    cfg = tiny_config()
    meta = ModelMeta(model=cfg, preprocess=PreprocessSpec(input_hw=(64, 64)), class_names=CLASS_NAMES)
    return dict(SOLONet(cfg).state_dict()), meta.to_dict()


def _write(path: Path, state: dict[str, torch.Tensor], meta: dict) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"solo_deploy": json.dumps(meta)})
    return path


def _photo(tmp_path: Path) -> Path:
    import cv2

    p = tmp_path / "photo.jpg"
    cv2.imwrite(str(p), np.full((48, 64, 3), 120, np.uint8))
    return p


def _refused(fn, *needles: str) -> str:
    with pytest.raises(BadInputError) as info:
        fn()
    text = str(info.value)
    assert "\n" not in text and all(n in text for n in needles), text
    return text


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("grids", [100000, 36, 24, 16, 12], "grids [100000, 36, 24, 16, 12] must be whole numbers in 1..256"),
    ("stacked_convs", 200000, "stacked_convs = 200000 must be a whole number in 1..16"),
    ("fpn_channels", -1, "fpn_channels = -1 must be a whole number in 1..2048"),
    ("norm_groups", 0, "norm_groups = 0 must be a whole number in 1..512"),
    ("num_classes", 2000000, "num_classes = 2000000 must be a whole number in 1..10000"),
    ("head_channels", 100, "head_channels 100 is not divisible by norm_groups 8"),
    ("grids", [8, 6, 4], "grids, strides and scale_ranges must have one entry per level"),
    ("grids", [8.5, 6, 4, 3, 2], "must be whole numbers"),
])
def test_absurd_architecture_is_refused(tmp_path: Path, field: str, value, needle: str) -> None:
    from solo_deploy.core.meta import ModelMeta

    _, meta = _valid(tmp_path)
    meta["model"][field] = value
    _refused(lambda: ModelMeta.from_dict(meta, source="m.safetensors"), needle)


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("std", [0.0, 57.12, 57.375], "std must be positive"),
    ("mean", [123.675, float("nan"), 103.53], "mean must be 3 finite numbers"),
    ("input_hw", [100000, 64], "exceeds 8192 pixels a side"),
])
def test_absurd_preprocessing_is_refused(tmp_path: Path, field: str, value, needle: str) -> None:
    from solo_deploy.core.meta import ModelMeta

    _, meta = _valid(tmp_path)
    meta["preprocess"][field] = value
    _refused(lambda: ModelMeta.from_dict(meta, source="m.safetensors"), needle)


def test_absurd_headers_through_the_cli(tmp_path: Path) -> None:
    """What a user sees: one line, exit 2, nothing written, for predict and info."""
    state, meta = _valid(tmp_path)
    meta["model"]["stacked_convs"] = 200000
    model = _write(tmp_path / "m.safetensors", state, meta)
    for cmd in (("predict", model, "--source", _photo(tmp_path), "-o", "out"), ("info", model)):
        assert_one_line_error(run_cli(*cmd, cwd=tmp_path, timeout=300), 2,
                              "stacked_convs = 200000 must be a whole number in 1..16")
    assert not (tmp_path / "out").exists()
    state, meta = _valid(tmp_path)
    meta["preprocess"]["std"] = [0.0, 1.0, 1.0]
    model = _write(tmp_path / "std.safetensors", state, meta)
    assert_one_line_error(run_cli("predict", model, "--source", _photo(tmp_path), cwd=tmp_path, timeout=300), 2,
                          "std must be positive")


def _edit_tensor(state: dict[str, torch.Tensor], how: str) -> str:
    key = "head.cate_out.weight"
    if how == "shape":
        state[key] = torch.zeros(5, *state[key].shape[1:])
    elif how == "int64":
        state[key] = state[key].round().to(torch.int64)
    elif how == "bool":
        state[key] = state[key] > 0
    elif how == "nan":
        state[key] = torch.full_like(state[key], float("nan"))
    elif how == "int_buffer_as_float":
        key = "backbone.body.bn1.num_batches_tracked"
        state[key] = state[key].float()
    return key


@pytest.mark.parametrize(("how", "needle"), [
    ("shape", "has shape (5, 32, 3, 3), the solov2 config declares (4, 32, 3, 3)"),
    ("int64", "is stored as int64, the network declares float32"),
    ("bool", "is stored as bool, the network declares float32"),
    ("nan", "NaN or infinite value(s)"),
    ("int_buffer_as_float", "is stored as float32, the network declares int64"),
])
def test_wrong_tensors_are_refused(tmp_path: Path, how: str, needle: str) -> None:
    from solo_deploy.model.modelfile import read_model

    state, meta = _valid(tmp_path)
    key = _edit_tensor(state, how)
    model = _write(tmp_path / "m.safetensors", state, meta)
    _refused(lambda: read_model(model), needle, key)


def test_wrong_tensor_through_the_cli(tmp_path: Path) -> None:
    state, meta = _valid(tmp_path)
    _edit_tensor(state, "int64")
    model = _write(tmp_path / "m.safetensors", state, meta)
    for cmd in (("predict", model, "--source", _photo(tmp_path)), ("export", model, "-o", "m.onnx")):
        assert_one_line_error(run_cli(*cmd, cwd=tmp_path, timeout=300), 2, "is stored as int64", "head.cate_out.weight")
    assert not (tmp_path / "m.onnx").exists()


def test_unrelated_onnx_graph_with_copied_metadata(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    _, meta = _valid(tmp_path)
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["y"])], "other",
                              [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, 64, 64, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 64, 64, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="solo_deploy", value=json.dumps(meta))
    onnx.save(model, str(tmp_path / "other.onnx"))
    assert_one_line_error(run_cli("predict", tmp_path / "other.onnx", "--source", _photo(tmp_path), cwd=tmp_path),
                          2, "do not match its solo-deploy metadata", "not a solo-deploy export")


def test_what_torch_would_accept_still_loads(tmp_path: Path) -> None:
    """numpy integers in a config, and files without BatchNorm's step counters (some writers
    drop them; inference never reads them) are fine."""
    from dataclasses import replace

    from conftest import tiny_config

    from solo_deploy.model.modelfile import read_model

    cfg = replace(tiny_config(), num_classes=np.int64(4), head_channels=np.int32(32))
    assert cfg.num_classes == 4
    state, meta = _valid(tmp_path)
    dropped = [k for k in state if k.endswith("num_batches_tracked")]
    for k in dropped:
        del state[k]
    loaded, _ = read_model(_write(tmp_path / "m.safetensors", state, meta))
    assert dropped and all(int(loaded[k]) == 0 for k in dropped)
