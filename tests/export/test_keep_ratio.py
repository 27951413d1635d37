"""Keep-ratio preprocessing (mmdetection's test pipeline): geometry, in-graph padding, dynamic
export checked in ONNX Runtime at several sizes, batching of mixed sizes, TensorRT profiles."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from export_helpers import save_tiny

from solo_deploy.errors import BadInputError
from solo_deploy.preprocess import PreprocessSpec

SPEC = PreprocessSpec.keep_ratio(scale=(96, 64))  # long side <= 96, short side <= 64


@pytest.mark.parametrize(("orig", "resized", "padded"), [
    # mmcv.rescale_size by hand: factor = min(long / max(h, w), short / min(h, w)), int(x * f + 0.5).
    ((150, 200), (64, 85), (64, 96)),  # f = min(96/200, 64/150) = 0.42667: 85.33 -> 85
    ((200, 150), (85, 64), (96, 64)),  # portrait: the long side is the height
    ((640, 480), (85, 64), (96, 64)),
    ((30, 40), (64, 85), (64, 96)),  # enlarged, as mmdetection does
    ((10, 1000), (1, 96), (32, 96)),  # thin: 0.96 -> 1 pixel
])
def test_plan_follows_mmcv_rescale(orig, resized, padded) -> None:
    lb = SPEC.plan(orig)
    assert lb.resized_hw == resized and lb.input_hw == padded


def test_spec_validation_and_old_files() -> None:
    assert SPEC.input_hw == (64, 96) and SPEC.interpolation == "bilinear" and SPEC.pads_in_graph
    full = PreprocessSpec.keep_ratio()
    assert full.scale == (1333, 800) and full.input_hw == (800, 1344)
    # Model files written before the keep-ratio mode keep their meaning (letterbox, INTER_AREA).
    old = PreprocessSpec.from_dict({"input_hw": [256, 256], "resize": "letterbox", "pad_anchor": "top-left",
                                    "pad_value": 0, "mean": [1, 2, 3], "std": [1, 1, 1], "channel_order": "RGB",
                                    "normalize_in_model": True, "size_divisor": 32})
    assert old.resize == "letterbox" and old.interpolation == "area" and not old.pads_in_graph
    assert PreprocessSpec.from_dict(SPEC.to_dict()) == SPEC
    for bad in ({"resize": "stretch"}, {"interpolation": "cubic"}, {"resize": "keep-ratio"},
                {"scale": [10, 10]}, {"colour": "RGB"}):
        with pytest.raises(BadInputError):
            PreprocessSpec.from_dict({**PreprocessSpec().to_dict(), **bad})


def _reference_input(spec: PreprocessSpec, image_bgr: np.ndarray):
    """mmdetection's order by hand: cv2 bilinear resize, normalise, pad with 0 to a multiple of 32."""
    import cv2
    import torch

    lb = spec.plan(image_bgr.shape[:2])
    rh, rw = lb.resized_hw
    x = cv2.resize(image_bgr, (rw, rh), interpolation=cv2.INTER_LINEAR)[..., ::-1].astype(np.float32)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    out = np.zeros((lb.input_hw[0], lb.input_hw[1], 3), np.float32)
    out[:rh, :rw] = x
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))[None]


@pytest.fixture(scope="module")
def keep_ratio_model(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("kr") / "kr.safetensors", "solov2-light-r18", spec=SPEC)


def test_graph_pads_after_normalising(keep_ratio_model: Path) -> None:
    import torch

    from solo_deploy.model.deploy import DeployWrapper
    from solo_deploy.model.modelfile import build_network

    net, meta = build_network(keep_ratio_model)
    wrapper = DeployWrapper(net, meta.preprocess).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    graph_in, _ = meta.preprocess.letterbox(image)
    assert graph_in.shape == (64, 85, 3)  # unpadded: the graph pads
    with torch.inference_mode():
        ours = wrapper(torch.from_numpy(graph_in)[None])
        ref_raw = net(_reference_input(meta.preprocess, image))
        scores, kernels, maps = wrapper.decode(ref_raw)
        ref = (scores, kernels, *maps)
    assert ours[2].shape[-2:] == (16, 24)  # mask features of the padded 64 x 96 input
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5 * max(1.0, float(b.abs().max())))


def test_export_is_dynamic_and_matches_torch_at_several_sizes(keep_ratio_model: Path, tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch

    from solo_deploy.export.onnx_export import export_onnx
    from solo_deploy.model.deploy import DeployWrapper
    from solo_deploy.model.modelfile import build_network

    res = export_onnx(keep_ratio_model, tmp_path / "kr.onnx")  # no --dynamic: keep-ratio implies it
    assert res.dynamic and res.export_info["input"]["padded_in_graph"]
    assert res.export_info["input"]["shape"] == ["batch", "height", "width", 3]
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    net, meta = build_network(keep_ratio_model)
    wrapper = DeployWrapper(net, meta.preprocess).eval()
    rng = np.random.default_rng(1)
    for hw in [(64, 85), (85, 64), (64, 96), (33, 41), (96, 96), (1, 96)]:
        x = rng.integers(0, 256, (2, *hw, 3), dtype=np.uint8)
        got = sess.run(None, {"images": x})
        with torch.inference_mode():
            want = [t.numpy() for t in wrapper(torch.from_numpy(x))]
        for g, w in zip(got, want):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, atol=1e-4 * max(1.0, float(np.abs(w).max())))


def test_mixed_sizes_give_what_each_image_gives_alone(keep_ratio_model: Path) -> None:
    import solo_deploy

    pred = solo_deploy.load(keep_ratio_model, backend="torch")
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, hw, dtype=np.uint8) for hw in [(150, 200, 3), (200, 150, 3), (150, 200, 3)]]
    together = pred.predict_batch(images)
    for image, inst in zip(images, together):
        alone = pred.predict(image)
        assert inst.masks.shape[1:] == image.shape[:2]
        np.testing.assert_array_equal(inst.labels, alone.labels)
        np.testing.assert_allclose(inst.scores, alone.scores, rtol=1e-5)
        # Batch 2 vs batch 1 may pick other convolution kernels: a pixel may flip, not more.
        inter = np.logical_and(inst.masks, alone.masks).sum(axis=(1, 2))
        union = np.logical_or(inst.masks, alone.masks).sum(axis=(1, 2))
        assert (inter >= 0.999 * union).all()
    assert sum(len(i) for i in together) > 0  # the tiny model is lively: something to compare


def test_batch_of_mixed_sizes_pads_with_the_mean_colour() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8), rng.integers(0, 256, (200, 150, 3), dtype=np.uint8)
    batch, lbs = SPEC.batch([a, b])
    assert batch.shape == (2, 85, 85, 3) and [lb.input_hw for lb in lbs] == [(96, 96), (96, 96)]
    np.testing.assert_array_equal(batch[0, 64:, :], np.broadcast_to(np.round(SPEC.mean).astype(np.uint8), (21, 85, 3)))
    np.testing.assert_array_equal(batch[0, :64, :85], SPEC.letterbox(a)[0])


def test_tensorrt_profile_for_keep_ratio_models() -> None:
    from solo_deploy.export.tensorrt import resolve_profile

    lo, opt, hi = resolve_profile(["batch", "height", "width", 3], (800, 1344), keep_ratio_scale=(1333, 800))
    assert lo == (1, 1, 1, 3) and opt == (1, 800, 1333, 3) and hi[1:] == (1333, 1333, 3)
    # Sizes that are not multiples of 32 are fine for a graph that pads; letterbox graphs refuse them.
    assert resolve_profile(["batch", "height", "width", 3], (800, 1344), opt_shape=(1, 750, 1000, 3),
                           keep_ratio_scale=(1333, 800))[1] == (1, 750, 1000, 3)
    with pytest.raises(BadInputError, match="multiples of 32"):
        resolve_profile(["batch", "height", "width", 3], (256, 256), opt_shape=(1, 250, 256, 3))


def test_cli_predict_and_export_on_a_folder_of_mixed_sizes(keep_ratio_model: Path, tmp_path: Path) -> None:
    import cv2

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from cli_helpers import run_cli

    photos = tmp_path / "My Photos"
    photos.mkdir()
    rng = np.random.default_rng(4)
    for name, hw in [("wide.jpg", (150, 200)), ("tall.PNG", (200, 150)), ("big.jpeg", (480, 640))]:
        cv2.imwrite(str(photos / name), rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    proc = run_cli("predict", keep_ratio_model, "--source", photos, "-o", tmp_path / "pred", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pred = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert len(pred["images"]) == 3
    proc = run_cli("export", keep_ratio_model, "-o", tmp_path / "kr.onnx", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("predict", tmp_path / "kr.onnx", "--source", photos, "-o", tmp_path / "pred2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pred2 = json.loads((tmp_path / "pred2" / "predictions.json").read_text())
    assert [len(i.get("instances", [])) for i in pred2["images"]] == [len(i.get("instances", []))
                                                                      for i in pred["images"]]


def test_reference_presets_carry_mmdetections_test_scale() -> None:
    from solo_deploy.core.config import PRESETS, reference_spec

    assert reference_spec("solov2-r50").scale == (1333, 800)
    assert reference_spec("solov2-light-r18").scale == (768, 448)
    assert reference_spec("solov2-light-r18").input_hw == (448, 768)
    assert reference_spec("solov2-cpu-r18") is None  # ours keeps the letterbox it was trained with
    assert {p for p in PRESETS if reference_spec(p) is None} == {"solov2-cpu-r18"}


def test_scale_order_does_not_matter_and_post_config_is_checked() -> None:
    from solo_deploy.core.config import PostprocessConfig

    a = PreprocessSpec(resize="keep-ratio", scale=(800, 1333), input_hw=(800, 1344), interpolation="bilinear")
    assert a.scale == (1333, 800) and a.plan((480, 640)).resized_hw == (800, 1067)
    for bad in ({"max_candidates": 0}, {"nms_pre": -1}, {"max_per_img": 1.5}, {"kernel": "box"}):
        with pytest.raises(BadInputError):
            PostprocessConfig(**bad)


def test_eval_groups_sizes_and_refuses_imgsz(keep_ratio_model: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from cli_helpers import assert_one_line_error, run_cli

    sizes = [(150, 200), (200, 150), (151, 201), (640, 480)]
    assert SPEC.size_groups(sizes) == [[0, 2], [1, 3]]  # 150x200 and 151x201 both resize to 64x85
    assert PreprocessSpec().size_groups(sizes) == [[0, 1, 2, 3]]  # letterbox: one size for all

    data = tmp_path / "shapes"
    assert run_cli("data", "synthetic", "-o", data, "--images", "4", "--imgsz", "64", "96",
                   cwd=tmp_path).returncode == 0
    one = run_cli("eval", keep_ratio_model, "--data", data, "--backend", "torch", "--json", tmp_path / "b1.json",
                  cwd=tmp_path)
    four = run_cli("eval", keep_ratio_model, "--data", data, "--backend", "torch", "--batch", "4",
                   "--json", tmp_path / "b4.json", cwd=tmp_path)
    assert one.returncode == 0 and four.returncode == 0, one.stderr + four.stderr
    b1, b4 = (json.loads((tmp_path / f"b{n}.json").read_text()) for n in (1, 4))
    assert b1["AP"] == pytest.approx(b4["AP"], abs=0.5)
    assert_one_line_error(run_cli("eval", keep_ratio_model, "--data", data, "--imgsz", "64", "64", cwd=tmp_path), 2,
                          "--imgsz does not apply")
