"""Final-instance parity with mmdetection 3.3.0, through the user's path, without mmdetection.

The same seeded weights as ``test_raw_parity.py``, saved as an mmdetection checkpoint (state dict,
dumped config text, class names), go through ``solo-deploy import`` (a subprocess) into a model
file (float32 weights, mmdetection's keep-ratio preprocessing and test_cfg read from the config).
FP32: ``solo-deploy predict`` (a subprocess) runs on the fixture's original BGR images saved as
PNG files, with the model file (PyTorch) and with its ``solo-deploy export`` (ONNX Runtime); the
instances are read back from predictions.json. FP16: ``solo_deploy.load(...).predict`` on an
FP16 ONNX export. Every image of every fixture has more than ``nms_pre`` (500) candidates, so the
candidate order of the post-processing is exercised each time.

FP32 (PyTorch, ONNX Runtime): the same labels in the same order; each instance's mask equal to
mmdetection's at the same rank (IoU >= 0.999, or at most 2 pixels differ), except that two
neighbours whose scores are within 1e-3 may swap; scores within 1e-4 for at least 99% of the
instances and within 1e-3 for all. Why not 1e-4 for all: fed the SAME raw outputs, mmdetection's
post-processing and ours agree to 5e-7 (tools/reference/postprocess_same_inputs.py), but raw
outputs that differ by 1e-6 (our CoordConv uses arange, mmdetection linspace) flip the odd mask
pixel at the 0.5 threshold, which moves Matrix NMS's IoUs and so a decayed score by up to 2.2e-4
in mmdetection itself.
FP16 ONNX (random weights, activations up to ~100 on the FPN): same-label matches at IoU >= 0.95
for at least 94% of mmdetection's instances and at IoU >= 0.99 for at least 85% (80% for the
decoupled heads: their fixture masks are 4-5x smaller, median 1000-2100 pixels against ~7500 for
SOLOv2, so 0.99 leaves 10-20 boundary pixels; measured 252 and 259 of 300, median IoU 0.995, and
computing their last convolutions in float32 did not move it: 253).
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from solo_deploy.core.config import ModelConfig, PostprocessConfig

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
ARCHS = sorted(MANIFEST["architectures"])
CLASS_NAMES = ("a", "b", "c")


def reference_instances(arch: str) -> list[dict[str, np.ndarray]]:
    z = np.load(FIXTURES / MANIFEST["architectures"][arch]["file"])
    out = []
    for i in range(len(MANIFEST["images"])):
        shape = tuple(int(v) for v in z[f"img{i}.masks_shape"])
        masks = np.unpackbits(z[f"img{i}.masks"], count=int(np.prod(shape))).reshape(shape).astype(bool)
        out.append({"image": z[f"img{i}.image"], "labels": z[f"img{i}.labels"], "scores": z[f"img{i}.scores"],
                    "masks": masks, "input": z[f"img{i}.input"], "candidates": int(z[f"img{i}.candidates"])})
    return out


def save_reference_model(arch: str, path: Path, dtype: str = "float32") -> Path:
    from solo_deploy.core.meta import ModelMeta
    from solo_deploy.model.keymap import from_mmdet
    from solo_deploy.model.modelfile import save_model_file
    from solo_deploy.model.seeded import seeded_state_dict
    from solo_deploy.preprocess import PreprocessSpec

    entry = MANIFEST["architectures"][arch]
    cfg = ModelConfig.from_dict(entry["model_config"])
    weights = seeded_state_dict([(k, tuple(s)) for k, s in entry["keys"]], entry["seed"], offsets=entry["offsets"])
    test_cfg = MANIFEST["test_cfg"]
    post = PostprocessConfig(score_thr=test_cfg["score_thr"], mask_thr=test_cfg["mask_thr"],
                             update_thr=test_cfg["filter_thr"], nms_pre=test_cfg["nms_pre"],
                             max_per_img=test_cfg["max_per_img"], kernel=test_cfg["kernel"], sigma=test_cfg["sigma"])
    pre = MANIFEST["preprocess"]
    spec = PreprocessSpec.keep_ratio(scale=(224, 160), mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                                     pad_value=pre["pad_value"], size_divisor=pre["pad_size_divisor"])
    meta = ModelMeta(model=cfg, preprocess=spec, class_names=CLASS_NAMES[: cfg.num_classes], postprocess=post,
                     preset=f"reference-{arch}")
    return save_model_file(path, from_mmdet(weights, cfg), meta, dtype=dtype)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = np.logical_and(a, b).sum(axis=(1, 2))
    union = np.logical_or(a, b).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


@pytest.fixture(scope="module", params=ARCHS)
def reference_model(request, tmp_path_factory) -> tuple[str, Path]:
    """The fixture model as a user gets it: an mmdetection checkpoint (weights, config text, class
    names) through `solo-deploy import`, run as a subprocess."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1]))
    sys.path.insert(0, str(Path(__file__).parents[1] / "importing"))
    from cli_helpers import run_cli
    from import_helpers import mmdet_checkpoint

    arch = request.param
    folder = tmp_path_factory.mktemp(arch)
    ckpt = mmdet_checkpoint(arch, folder / "work dirs" / f"{arch}_r18_fpn_3x" / "epoch_36.pth", classes=CLASS_NAMES)
    out = folder / f"{arch}.safetensors"
    proc = run_cli("import", ckpt, "-o", out, cwd=folder)
    assert proc.returncode == 0, proc.stderr
    assert "keep ratio into 224 x 160 (the checkpoint's test pipeline)" in proc.stdout, proc.stdout
    assert "the checkpoint's config" in proc.stdout and "the checkpoint's dataset_meta" in proc.stdout
    return arch, out


def test_preprocessing_equals_mmdetections(reference_model) -> None:
    import torch

    from solo_deploy.model.deploy import DeployWrapper
    from solo_deploy.model.modelfile import build_network

    arch, path = reference_model
    net, meta = build_network(path)
    wrapper = DeployWrapper(net, meta.preprocess).eval()
    seen = {}
    handle = net.register_forward_pre_hook(lambda _m, args: seen.update(x=args[0].clone()))
    try:
        for ref in reference_instances(arch):
            graph_in, _ = meta.preprocess.letterbox(ref["image"])
            with torch.inference_mode():
                wrapper(torch.from_numpy(graph_in)[None])
            assert tuple(seen["x"].shape) == ref["input"].shape
            # cv2's bilinear resize is shared; the rest is float arithmetic in another order.
            np.testing.assert_allclose(seen["x"].numpy(), ref["input"], atol=1e-5)
    finally:
        handle.remove()


def _close_masks(a: np.ndarray, b: np.ndarray) -> bool:
    inter, union = np.logical_and(a, b).sum(), np.logical_or(a, b).sum()
    return union == 0 or inter >= 0.999 * union or union - inter <= 2


def _assert_same_instances(got, ref, what: str) -> None:
    assert ref["candidates"] > 500  # the reference's candidate order matters on every image
    np.testing.assert_array_equal(got.labels, ref["labels"], err_msg=what)
    assert got.masks.shape == ref["masks"].shape, what
    n = len(ref["labels"])
    partner = np.full(n, -1)
    for j in range(n):
        if _close_masks(got.masks[j], ref["masks"][j]):
            partner[j] = j
            continue
        for k in (j - 1, j + 1):  # a swap of two neighbours with (nearly) tied scores
            if 0 <= k < n and abs(float(ref["scores"][j] - ref["scores"][k])) < 1e-3 \
                    and _close_masks(got.masks[k], ref["masks"][j]):
                partner[j] = k
    assert (partner >= 0).all(), f"{what}: reference instances {np.flatnonzero(partner < 0).tolist()} not found"
    assert len(set(partner.tolist())) == n, what
    diff = np.abs(got.scores[partner] - ref["scores"])
    assert diff.max() <= 1e-3, f"{what}: score difference {diff.max():.1e}"
    assert (diff <= 1e-4).mean() >= 0.99, f"{what}: {(diff > 1e-4).sum()} scores differ by more than 1e-4"


def _predicted(folder: Path, count: int) -> list[SimpleNamespace]:
    """``solo-deploy predict``'s predictions.json -> per image (by file name img{i}.png) labels,
    scores and bool masks, in the file's order (the predictor's, by descending score)."""
    from pycocotools import mask as mask_utils

    doc = json.loads((folder / "predictions.json").read_text())
    ids = {im["file_name"]: im["id"] for im in doc["images"]}
    out = []
    for i in range(count):
        anns = [a for a in doc["annotations"] if a["image_id"] == ids[f"img{i}.png"]]
        masks = np.stack([mask_utils.decode(a["segmentation"]).astype(bool) for a in anns])
        out.append(SimpleNamespace(labels=np.array([a["category_id"] - 1 for a in anns]),
                                   scores=np.array([a["score"] for a in anns], np.float32), masks=masks))
    return out


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_fp32_instances_equal_mmdetections(reference_model, backend: str, tmp_path: Path) -> None:
    """`solo-deploy predict` on the user's folder of images, with the imported model file
    (PyTorch) or its `solo-deploy export` (ONNX Runtime): predictions.json holds mmdetection's
    instances."""
    import cv2
    from cli_helpers import run_cli

    arch, path = reference_model
    refs = reference_instances(arch)
    photos = tmp_path / "my photos"
    photos.mkdir()
    for i, ref in enumerate(refs):
        assert cv2.imwrite(str(photos / f"img{i}.png"), ref["image"])
    model = path
    if backend == "onnxruntime":
        model = tmp_path / f"{arch}.onnx"
        proc = run_cli("export", path, "-o", model, cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, proc.stderr
    proc = run_cli("predict", model, "--source", photos, "-o", "out", "--backend", backend, "--conf", "0",
                   cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"[{backend}/cpu]" in proc.stdout
    for i, (got, ref) in enumerate(zip(_predicted(tmp_path / "out", len(refs)), refs)):
        _assert_same_instances(got, ref, f"{arch} image {i} ({backend})")


def test_fp16_onnx_instances_close_to_mmdetections(reference_model, tmp_path: Path) -> None:
    import solo_deploy
    from solo_deploy.export.onnx_export import export_onnx

    arch, path = reference_model
    pred = solo_deploy.load(export_onnx(path, tmp_path / f"{arch}-fp16.onnx", half=True).path, backend="onnxruntime")
    at95 = at99 = total = 0
    for ref in reference_instances(arch):
        got = pred.predict(ref["image"])
        total += len(ref["labels"])
        taken = np.zeros(len(got), bool)
        for label, mask in zip(ref["labels"], ref["masks"]):  # by descending reference score
            cand = np.nonzero((got.labels == label) & ~taken)[0]
            if not len(cand):
                continue
            ious = iou(got.masks[cand], mask[None])
            best = int(np.argmax(ious))
            if ious[best] >= 0.95:
                taken[cand[best]] = True
                at95 += 1
                at99 += bool(ious[best] >= 0.99)
    at99_share = 0.80 if arch.startswith("decoupled") else 0.85
    assert at95 >= 0.94 * total and at99 >= at99_share * total, f"{arch} FP16: {at95}, {at99} of {total} matched"
