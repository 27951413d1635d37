"""`calibrate` on a real (tiny, random-weight) SOLOv2 and decoupled SOLO export: .safetensors in, exported through the
ONNX cache, real evaluation, both Q/DQ models run in ORT close to FP32 and load in the runtime."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

from solo_deploy.calibration.trt_cache import read_cache

# Relative-error bounds of the INT8 models vs FP32 on held-out images, for this tiny
# random-weight network (untrained weights amplify rounding more than a trained model does;
# measured over 8 val images: kernels <= 0.093, mask_feat <= 0.146, scores mean abs <= 0.017;
# decoupled SOLO's x / y logits <= 0.16 on the CPU model and <= 0.20 on the TensorRT placement).
REL_L2_BOUND = 0.25  # kernels, mask_feat: ||int8 - fp32|| / ||fp32||
SCORE_MAE_BOUND = 0.05  # scores are probabilities: mean absolute difference


@pytest.fixture(scope="module", params=["solov2", "decoupled-solo"])
def run(request, tmp_path_factory):
    import torch
    from conftest import tiny_config

    from solo_deploy.calibration.quantize import calibrate
    from solo_deploy.model.modelfile import ModelMeta, save_model_file
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec

    root = tmp_path_factory.mktemp("tiny_solo")
    torch.manual_seed(0)  # same bytes every run: the ONNX export cache hits after the first
    cfg = tiny_config(request.param)
    net = SOLONet(cfg)
    if cfg.decoupled:
        # The prior bias (-4.6) would dominate every x / y logit and hide the rounding: spread them.
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in net.head.named_parameters():
                if name.startswith(("mask_x_out.", "mask_y_out.")):
                    p.normal_(0, 0.5 if name.endswith("weight") else 0.3, generator=g)
    model = save_model_file(root / "tiny.safetensors", net.state_dict(),
                            ModelMeta(model=cfg, preprocess=PreprocessSpec(input_hw=(64, 64)),
                                      class_names=("circle", "rectangle", "triangle", "ring"),
                                      preset="solov2-light-r18" if request.param == "solov2" else "decoupled-solo-r50"))
    res = calibrate(model, "synthetic", root / "out", images=8, force=True, eval_images=2, threads=1, bench_runs=1,
                    max_ap_drop=100.0)
    return res


def _held_out(meta, n: int = 2) -> np.ndarray:
    from solo_deploy.data.synthetic import SyntheticDataset

    ds = SyntheticDataset("val", count=n)
    return np.stack([meta.preprocess.letterbox(ds[i].image_bgr)[0] for i in range(n)])


def test_report_and_files(run) -> None:
    rep = json.loads(run.files["report"].read_text())
    assert rep["calibration"]["images"] == 8 and not rep["calibration"]["reused"]
    acc = rep["accuracy"]
    assert acc["images"] == 2 and acc["split"] == "val"
    for k in ("ap_fp32", "ap_int8_cpu", "ap_int8_trt_simulated"):
        assert 0.0 <= acc[k] <= 100.0  # real COCO evaluation ran (random weights: ~0)
    assert rep["latency"]["fp32_ms"] > 0 and rep["latency"]["int8_ms"] > 0
    kept = rep["fp32_kept"]
    assert kept["preprocessing"] == ["/Cast_input_first", "/Transpose", "/BatchNormalization"]
    outs = kept["output_layers_cpu"]
    assert any("cate_out" in n for n in outs) and not any("backbone" in n for n in outs)
    if rep["model"]["arch"] == "solov2":
        assert any("kernel_out" in n for n in outs) and any("mask_out" in n for n in outs)
    else:  # decoupled SOLO: the x / y output convolutions of every level
        assert sum("mask_x_out" in n for n in outs) == sum("mask_y_out" in n for n in outs) == 5
    head, scales = read_cache(run.files["cache"])
    fp32 = onnx.load(str(run.files["fp32"]), load_external_data=False)
    conv_out = next(n.output[0] for n in fp32.graph.node if n.op_type == "Conv")
    assert head.endswith("-MinMaxCalibration") and conv_out in scales and scales[conv_out] > 0
    for role, dtype in (("trt", np.int8), ("cpu", np.uint8)):  # activation zero points
        m = onnx.load(str(run.files[role]))
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
        zps = [inits[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear"]
        assert zps and {z.dtype for z in zps} == {np.dtype(dtype)}, role
        if role == "trt":
            assert all(not z.any() for z in zps)  # symmetric: zero point 0 everywhere


def test_int8_models_run_close_to_fp32(run) -> None:
    import onnxruntime as ort

    from solo_deploy.runtime.runners import onnx_meta

    meta = onnx_meta(run.files["fp32"])
    x = _held_out(meta)

    def outputs(path):
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return [s.run(None, {"images": x[i:i + 1]}) for i in range(len(x))]

    ref = outputs(run.files["fp32"])
    for role in ("cpu", "trt"):
        got = outputs(run.files[role])
        for r, g in zip(ref, got):
            assert np.abs(r[0] - g[0]).mean() < SCORE_MAE_BOUND, role
            for a, b in zip(r[1:], g[1:]):
                assert np.linalg.norm(a - b) / np.linalg.norm(a) < REL_L2_BOUND, role


def test_runtime_takes_int8_models(run) -> None:
    """``make_runner``/``onnx_meta`` (what eval, run and bench use) load the INT8 files as-is; the
    real evaluation through them already ran inside ``calibrate`` (see the report test)."""
    from solo_deploy.runtime.runners import make_runner, onnx_meta

    for role in ("cpu", "trt"):
        meta = onnx_meta(run.files[role])
        assert meta.model.num_classes == 4 and meta.preprocess.input_hw == (64, 64)
        runner = make_runner(run.files[role], threads=1)
        assert runner.backend == "onnxruntime"
        scores, kernels, feats = runner(_held_out(meta, 1))
        assert scores.dtype == np.float32 and scores.shape[0] == 1
        if meta.model.decoupled:
            assert kernels is None and len(feats) == 10
        else:
            assert kernels.shape[0] == 1 and len(feats) == 1
