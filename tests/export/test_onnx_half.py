"""FP16 export: a valid graph with uint8 in / float32 out that ORT CPU runs, close to FP32 PyTorch."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from export_helpers import save_tiny

from solo_deploy.export.onnx_export import export_onnx
from solo_deploy.export.parity import compare_instances, ort_outputs, random_images, torch_outputs
from solo_deploy.export.tensorrt import onnx_precision
from solo_deploy.export.trt_ops import check_tensorrt_compat
from solo_deploy.model.deploy import DeployWrapper
from solo_deploy.model.modelfile import build_network
from solo_deploy.runtime.runners import onnx_meta


@pytest.fixture(scope="module", params=["solov2-light-r18", "decoupled-solo-r50"])
def half_export(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("half")
    model = save_tiny(folder / "m.safetensors", request.param)
    result = export_onnx(model, folder / "m16.onnx", half=True, opset=13)
    return model, result


def test_graph_types(half_export):
    _, result = half_export
    m = onnx.load(str(result.path))
    onnx.checker.check_model(m, full_check=True)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert {o.type.tensor_type.elem_type for o in m.graph.output} == {onnx.TensorProto.FLOAT}
    conv_weights = {n.input[1] for n in m.graph.node if n.op_type == "Conv"}
    types = {i.name: i.data_type for i in m.graph.initializer}
    assert {types[w] for w in conv_weights} == {onnx.TensorProto.FLOAT16}
    assert onnx_precision(m) == "fp16"
    assert result.precision == "fp16" and onnx_meta(result.path).preset in ("solov2-light-r18", "decoupled-solo-r50")
    assert check_tensorrt_compat(m) == []


def test_close_to_fp32_torch(half_export):
    model, result = half_export
    assert result.parity is not None and result.parity.ok and result.parity.tolerance == 1e-2
    net, meta = build_network(model)
    ref = DeployWrapper(net, meta.preprocess).eval()
    images = random_images(1, (64, 64), seed=3)
    want, got = torch_outputs(ref, images), ort_outputs(result.path, images)
    rel = [float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(want, got)]
    assert max(rel) <= 1e-2, rel
    assert max(rel) > 0  # it really is a different (lower) precision
    agreement = compare_instances(meta, want, got)
    assert sum(a.ref_count for a in agreement) > 0 and all(a.ok for a in agreement)
