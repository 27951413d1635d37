"""FP32 ONNX export of tiny models shaped like SOLOv2-light R18, SOLO R50 and both decoupled SOLO
R50 heads: ORT vs PyTorch, output contract, metadata round trip, post-processed instance agreement."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from export_helpers import CLASS_NAMES, leftovers, save_tiny

from solo_deploy.export.onnx_export import export_onnx
from solo_deploy.export.parity import compare_instances, ort_outputs, random_images, torch_outputs
from solo_deploy.export.trt_ops import check_tensorrt_compat
from solo_deploy.model.deploy import DeployWrapper, output_names
from solo_deploy.model.modelfile import build_network, file_sha256
from solo_deploy.runtime.runners import OnnxRunner, onnx_meta

PRESETS = ["solov2-light-r18", "solo-r50", "decoupled-solo-r50", "decoupled-solo-light-r50"]


@pytest.fixture(scope="module", params=PRESETS)
def exported(request, tmp_path_factory):
    """(model file, ExportResult) per preset, exported once per module."""
    folder = tmp_path_factory.mktemp(request.param)
    model = save_tiny(folder / "m.safetensors", request.param)
    result = export_onnx(model, folder / "m.onnx", imgsz=(64, 64))
    return model, result


def test_parity_within_1e4(exported):
    _, result = exported
    assert result.parity is not None and result.parity.ok, result.parity.summary()
    assert result.parity.max_rel <= 1e-4
    assert [d.name for d in result.parity.outputs] == list(result.output_names)


def test_independent_batch_matches_torch_and_instances(exported):
    """A second seed, checked here rather than by the exporter: relative diff and instance agreement."""
    model, result = exported
    net, meta = build_network(model)
    ref = DeployWrapper(net, meta.preprocess).eval()
    images = random_images(1, (64, 64), seed=7)
    want, got = torch_outputs(ref, images), ort_outputs(result.path, images)
    for w, g in zip(want, got):
        assert g.dtype == np.float32 and g.shape == w.shape
        assert np.abs(w - g).max() <= 1e-4 * np.abs(w).max()
    agreement = compare_instances(meta, want, got)
    assert sum(a.ref_count for a in agreement) > 0, "the lively tiny model should detect something"
    assert all(a.ok and a.labels_equal and a.ref_count == a.test_count for a in agreement)
    assert min(a.min_iou for a in agreement) > 0.9


def test_output_contract(exported):
    model, result = exported
    _, meta = build_network(model)
    cfg = meta.model
    m = onnx.load(str(result.path))
    assert [i.name for i in m.graph.input] == ["images"]
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in m.graph.output] == output_names(cfg)
    dims = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in m.graph.output}
    assert dims["scores"] == [1, cfg.num_cells, cfg.num_classes]
    if cfg.decoupled:
        for xy in "xy":
            assert [dims[f"mask_{xy}_{i}"] for i in range(5)] == [
                [1, s, side, side] for s, side in zip(cfg.grids, (16, 16, 8, 4, 4))]
    else:
        assert dims["kernels"] == [1, cfg.num_cells, cfg.kernel_channels]
    if cfg.arch == "solov2":
        assert dims["mask_feat"] == [1, cfg.mask_channels, 16, 16]
    elif cfg.arch == "solo":
        assert [dims[f"mask_feat_{i}"][2] for i in range(5)] == [16, 16, 8, 4, 4]
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in m.graph.output)
    # TensorRT takes uint8 only into a Cast: the exporter moves the Cast before the Transpose.
    first = [n for n in m.graph.node if "images" in n.input]
    assert [n.op_type for n in first] == ["Cast"]
    onnx.checker.check_model(m, full_check=True)
    assert check_tensorrt_compat(m) == []


def test_metadata_round_trip(exported):
    model, result = exported
    _, meta = build_network(model)
    back = onnx_meta(result.path)
    assert back.model == meta.model and back.class_names == CLASS_NAMES and back.preset == meta.preset
    assert back.preprocess.input_hw == (64, 64)
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert props["preset"] == meta.preset and json.loads(props["class_names"]) == list(CLASS_NAMES)
    info = json.loads(props["solo_deploy"])["export"]
    assert info["input"]["description"] == "NHWC uint8 RGB letterboxed"
    assert info["input"]["shape"] == [1, 64, 64, 3] and info["batch"] == 1 and info["dynamic"] is False
    assert info["opset"] == 17 and info["precision"] == "fp32"
    assert info["grids"] == list(meta.model.grids) and info["strides"] == list(meta.model.strides)
    assert info["source_sha256"] == file_sha256(model)
    assert info["versions"]["solo_deploy"]
    assert leftovers(result.path.parent) == []


def test_onnx_runner_runs_the_export(exported):
    model, result = exported
    runner = OnnxRunner(result.path)
    scores, kernels, feats = runner(random_images(2, (64, 64)))  # static batch 1, run image by image
    assert scores.shape[0] == 2 and all(f.shape[0] == 2 for f in feats)
    assert (kernels is None) == runner.meta.model.decoupled and (kernels is None or kernels.shape[0] == 2)
    net, meta = build_network(model)
    ref = DeployWrapper(net, meta.preprocess).eval()
    with torch.inference_mode():
        want = ref(torch.from_numpy(random_images(2, (64, 64))))
    assert np.abs(want[0].numpy() - scores).max() <= 1e-4
