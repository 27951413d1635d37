"""Dynamic batch/H/W export (opset 20, the TorchScript exporter's highest): ORT at several sizes vs PyTorch."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from export_helpers import save_tiny

from solo_deploy.errors import BadInputError
from solo_deploy.export.onnx_export import export_onnx, max_opset
from solo_deploy.export.parity import ort_outputs, random_images, torch_outputs
from solo_deploy.export.trt_ops import check_tensorrt_compat
from solo_deploy.model.deploy import DeployWrapper
from solo_deploy.model.modelfile import build_network


@pytest.fixture(scope="module")
def dynamic_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dyn")
    model = save_tiny(folder / "m.safetensors", "solov2-light-r18")
    result = export_onnx(model, folder / "m.onnx", dynamic=True, opset=max_opset())
    net, meta = build_network(model)
    return result, DeployWrapper(net, meta.preprocess).eval()


@pytest.mark.parametrize("shape", [(1, 64, 64), (2, 96, 64), (3, 64, 128)])
def test_runs_at_several_sizes(dynamic_export, shape):
    result, ref = dynamic_export
    n, h, w = shape
    images = random_images(n, (h, w), seed=h + w)
    want, got = torch_outputs(ref, images), ort_outputs(result.path, images)
    assert got[0].shape == (n, want[0].shape[1], 4)
    assert got[2].shape == (n, 16, h // 4, w // 4)
    for a, b in zip(want, got):
        assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()


def test_declared_shapes_and_metadata(dynamic_export):
    result, _ = dynamic_export
    m = onnx.load(str(result.path))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(m.graph.input) + list(m.graph.output)}
    assert dims["images"] == ["batch", "height", "width", 3]
    assert dims["scores"][0] == "batch" and dims["mask_feat"] == ["batch", 16, "height_div4", "width_div4"]
    info = json.loads({p.key: p.value for p in m.metadata_props}["solo_deploy"])["export"]
    assert info["dynamic"] is True and info["batch"] is None and info["opset"] == max_opset()
    assert result.parity is not None and result.parity.input_shape[0] == 2  # checked at another batch than traced
    assert check_tensorrt_compat(m) == []


def test_dynamic_needs_64_pixels(tmp_path):
    model = save_tiny(tmp_path / "m.safetensors", "solov2-light-r18", lively=False)
    with pytest.raises(BadInputError, match="at least 64"):
        export_onnx(model, tmp_path / "m.onnx", imgsz=(32, 64), dynamic=True)
    assert not (tmp_path / "m.onnx").exists()
