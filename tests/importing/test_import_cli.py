"""`solo-deploy import` as a user runs it: bad inputs are one line, exit 2, and nothing is written."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from cli_helpers import assert_one_line_error, run_cli
from import_helpers import MANIFEST, mmdet_checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return mmdet_checkpoint("solov2", tmp_path_factory.mktemp("ckpt") / "solov2.pth")


def _refused(tmp_path: Path, ckpt: Path, *needles: str, extra: tuple[str, ...] = ()) -> None:
    out = tmp_path / "out.safetensors"
    assert_one_line_error(run_cli("import", ckpt, "-o", out, *extra, cwd=tmp_path), 2, *needles)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_checkpoint_of_another_detector(tmp_path: Path) -> None:
    import torch

    keys = {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7), "rpn_head.rpn_conv.weight": torch.zeros(256, 256, 3, 3),
            "roi_head.bbox_head.fc_cls.weight": torch.zeros(81, 1024),
            "roi_head.mask_head.conv_logits.weight": torch.zeros(80, 256, 1, 1)}
    torch.save({"state_dict": keys, "meta": {}}, tmp_path / "mask_rcnn.pth")
    _refused(tmp_path, tmp_path / "mask_rcnn.pth", "not a SOLO")


def test_dcn_model(tmp_path: Path, good: Path) -> None:
    import torch

    ckpt = torch.load(good, weights_only=False)
    ckpt["state_dict"]["backbone.layer2.0.conv2.conv_offset.weight"] = torch.zeros(18, 128, 3, 3)
    torch.save(ckpt, tmp_path / "dcn.pth")
    _refused(tmp_path, tmp_path / "dcn.pth", "deformable")


def test_truncated_and_empty_and_missing(tmp_path: Path, good: Path) -> None:
    data = good.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    _refused(tmp_path, tmp_path / "cut.pth", "truncated")
    (tmp_path / "empty.pth").write_bytes(b"")
    _refused(tmp_path, tmp_path / "empty.pth", "empty")
    _refused(tmp_path, tmp_path / "nope.pth", "not found")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch '{self.marker}'",))


def test_pickle_that_would_run_code(tmp_path: Path, good: Path) -> None:
    import torch

    ckpt = torch.load(good, weights_only=False)
    marker = tmp_path / "ran"
    ckpt["meta"]["hook"] = _Payload(marker)
    torch.save(ckpt, tmp_path / "evil.pth")
    _refused(tmp_path, tmp_path / "evil.pth", "does not unpickle")
    assert not marker.exists()


def test_config_text_that_does_not_parse(tmp_path: Path) -> None:
    ckpt = mmdet_checkpoint("solov2", tmp_path / "bad_cfg.pth", config="model = dict(type='SOLOv2',\n")
    _refused(tmp_path, ckpt, "does not parse")


def test_output_over_the_input_and_wrong_suffix(tmp_path: Path, good: Path) -> None:
    assert_one_line_error(run_cli("import", good, "-o", good, cwd=tmp_path), 2, "overwritten")
    assert_one_line_error(run_cli("import", good, "-o", tmp_path / "m.onnx", cwd=tmp_path), 2, ".safetensors")
    assert_one_line_error(run_cli("import", good, "-o", tmp_path / "m.safetensors", "--source-format", "caffe",
                                  cwd=tmp_path), 2, "source-format")


def test_class_names_and_defaults(tmp_path: Path) -> None:
    """No config, no class names: mmdetection's defaults, and a clear demand for names."""
    import json

    ckpt = mmdet_checkpoint("solov2_light", tmp_path / "bare.pth", config="")
    import torch

    raw = torch.load(ckpt, weights_only=False)
    del raw["meta"]["dataset_meta"]
    torch.save(raw, ckpt)
    _refused(tmp_path, ckpt, "--class-names")
    names = tmp_path / "my classes.txt"
    names.write_text("cat\ndog\n")
    _refused(tmp_path, ckpt, "2 class names", extra=("--class-names", str(names)))
    names.write_text("cat\ndog\nbird\n")
    out = tmp_path / "m.safetensors"
    proc = run_cli("import", ckpt, "-o", out, "--class-names", names, "--test-scale", "448", "768", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "mmdetection's defaults used" in proc.stdout  # grids etc. could not come from a config
    assert "keep ratio into 768 x 448 (--test-scale)" in proc.stdout
    from solo_deploy.model.modelfile import read_model

    meta = read_model(out)[1]
    assert meta.class_names == ("cat", "dog", "bird") and meta.preprocess.scale == (768, 448)
    want = MANIFEST["architectures"]["solov2_light"]["model_config"]
    got = meta.model.to_dict()
    assert {k: got[k] for k in want if k != "scale_ranges"} == {k: v for k, v in want.items() if k != "scale_ranges"}
    assert json.loads(json.dumps(meta.extra))["imported"]["sources"]["grids"] == "mmdetection default"


@pytest.mark.parametrize("fmt", ["adelaidet", "wxinlong"])
def test_legacy_checkpoints_import_through_the_cli(tmp_path: Path, fmt: str) -> None:
    """Mapped, not parity-tested: these code bases do not install on current torch. The import
    must still build a strict model, with detectron2's semantics made explicit for AdelaiDet."""
    import torch
    from test_legacy_keys import adelaidet_solov2_r50, materialise, wxinlong_solov2_light_r18

    from solo_deploy.model.modelfile import build_network, read_model

    torch.manual_seed(0)
    shapes = adelaidet_solov2_r50() if fmt == "adelaidet" else wxinlong_solov2_light_r18()
    state = materialise(shapes, device="cpu")
    key = "backbone.bottom_up.stem.conv1.weight" if fmt == "adelaidet" else "backbone.conv1.weight"
    state[key] = torch.randn_like(state[key])
    ckpt = tmp_path / f"{fmt}.pth"
    torch.save({"model" if fmt == "adelaidet" else "state_dict": state}, ckpt)
    out = tmp_path / f"{fmt}.safetensors"
    proc = run_cli("import", ckpt, "-o", out, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"({fmt} checkpoint" in proc.stdout and "COCO's 80 classes" in proc.stdout
    weights, meta = read_model(out)
    # COCO's classes keep COCO's category ids (1..90 with gaps: "cup" is 47), what JSON outputs write.
    assert meta.cat_ids[meta.class_names.index("cup")] == 47 and meta.cat_ids[-1] == 90 and len(meta.cat_ids) == 80
    if fmt == "adelaidet":
        assert meta.model.stride_in_1x1 and meta.preprocess.std == (1.0, 1.0, 1.0)
        assert meta.preprocess.mean == (123.675, 116.28, 103.53)  # detectron2's BGR mean, in RGB order
        assert torch.equal(weights["backbone.body.conv1.weight"], state[key].flip(1))  # BGR network made RGB
        assert meta.preprocess.scale == (1333, 800)
    else:
        assert not meta.model.stride_in_1x1 and meta.preprocess.scale == (768, 448)
        assert torch.equal(weights["backbone.body.conv1.weight"], state[key])
    net, _ = build_network(out)
    if fmt == "adelaidet":  # the bottleneck's stride sits in its 1x1 convolution, as detectron2's
        block = net.backbone.body.layer2[0]
        assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)


def test_wxinlong_decoupled_solo_light_imports_through_the_cli(tmp_path: Path) -> None:
    """WXinlong/SOLO's DecoupledSOLOLightHead (mapped, not parity-tested): a strict decoupled model
    with the family's test scale (852 x 512) and thresholds, whose network runs."""
    import torch
    from test_legacy_keys import materialise, wxinlong_decoupled_solo_light_r50

    from solo_deploy.model.modelfile import build_network

    torch.manual_seed(0)
    state = materialise(wxinlong_decoupled_solo_light_r50(), device="cpu")
    ckpt = tmp_path / "decoupled_solo_light_release_r50_fpn_8gpu_3x.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 36}}, ckpt)
    out = tmp_path / "dsolo light.safetensors"
    proc = run_cli("import", ckpt, "-o", out, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "(wxinlong checkpoint, decoupled-solo-light resnet50" in proc.stdout, proc.stdout
    assert "keep ratio into 852 x 512" in proc.stdout, proc.stdout
    net, meta = build_network(out)
    assert meta.preset == "decoupled-solo-light-r50" and meta.model.num_classes == 80
    assert torch.equal(net.head.mask_y_out[3].weight, state["bbox_head.dsolo_ins_list_y.3.weight"])
    assert torch.equal(net.head.mask_convs[0][0].weight, state["bbox_head.ins_convs.0.conv.weight"])
    with torch.inference_mode():
        raw = net(torch.zeros(1, 3, 64, 96))
    sizes = ((16, 24), (16, 24), (8, 12), (4, 6), (4, 6))  # strides 4, 4, 8, 16, 16 of 64 x 96
    assert [tuple(t.shape) for t in raw.mask_x] == [(1, s, h, w) for s, (h, w) in zip((40, 36, 24, 16, 12), sizes)]


def test_fine_tune_an_imported_model_on_a_coco_folder(tmp_path: Path) -> None:
    """import -> train --from on other classes (a user's COCO folder) -> a model of the same architecture."""
    from solo_deploy.model.modelfile import read_model

    ckpt = mmdet_checkpoint("solov2_light", tmp_path / "ckpt" / "epoch_36.pth")
    imported = tmp_path / "imported.safetensors"
    assert run_cli("import", ckpt, "-o", imported, cwd=tmp_path).returncode == 0
    assert run_cli("data", "synthetic", "-o", "shapes", "--images", "4", "--imgsz", "64", "64",
                   cwd=tmp_path).returncode == 0
    proc = run_cli("train", "--from", imported, "--data", "shapes", "-o", "run", "--epochs", "1", "--max-steps", "2",
                   "--imgsz", "64", "64", "--batch-size", "2", "--val-images", "2", "--no-progress", cwd=tmp_path,
                   timeout=900)
    assert proc.returncode == 0, proc.stderr
    src, tuned = read_model(imported)[1], read_model(tmp_path / "run" / "model.safetensors")[1]
    assert tuned.model.to_dict() == {**src.model.to_dict(), "num_classes": 4}
    assert tuned.class_names == ("circle", "rectangle", "triangle", "ring") and tuned.preset == src.preset
    assert tuned.preprocess.resize == "letterbox"  # what the fine-tuning trained with


def test_mmdetection_2x_checkpoint(tmp_path: Path) -> None:
    """mmdetection 2.x: meta["config"] and meta["CLASSES"], the test scale inside MultiScaleFlipAug,
    Normalize in the pipeline, the legacy (non-zip) file format of published checkpoints."""
    import torch

    from solo_deploy.model.modelfile import read_model

    model = dict(MANIFEST["architectures"]["solov2"]["mmdet_config"])
    model.pop("data_preprocessor", None)
    text = (f"model = {model!r}\n"
            "img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)\n"
            "data = dict(samples_per_gpu=2, test=dict(type='CocoDataset', pipeline=[dict(type='LoadImageFromFile'), "
            "dict(type='MultiScaleFlipAug', img_scale=(448, 768), flip=False, transforms=[dict(type='Resize', "
            "keep_ratio=True), dict(type='RandomFlip'), dict(type='Normalize', mean=[123.675, 116.28, 103.53], "
            "std=[58.395, 57.12, 57.375], to_rgb=True), dict(type='Pad', size_divisor=32)])]))\n")
    ckpt = mmdet_checkpoint("solov2", tmp_path / "v2.pth", config="")
    raw = torch.load(ckpt, weights_only=False)
    raw["meta"] = {"config": text, "CLASSES": ("a", "b", "c"), "mmdet_version": "2.28.2"}
    torch.save(raw, ckpt, _use_new_zipfile_serialization=False)
    out = tmp_path / "v2.safetensors"
    proc = run_cli("import", ckpt, "-o", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "keep ratio into 768 x 448 (the checkpoint's test pipeline)" in proc.stdout
    assert "the checkpoint's CLASSES" in proc.stdout
    meta = read_model(out)[1]
    assert meta.preprocess.mean == (123.675, 116.28, 103.53) and meta.model.grids == (40, 36, 24, 16, 12)


def test_hostile_config_and_non_checkpoints(tmp_path: Path) -> None:
    deep = mmdet_checkpoint("solov2", tmp_path / "deep.pth", config="x = " + "-" * 5000 + "1\n")
    _refused(tmp_path, deep, "config")
    stretch = mmdet_checkpoint("solov2", tmp_path / "stretch.pth", config=(
        "test_pipeline = [dict(type='Resize', scale=(224, 160), keep_ratio=False)]\n"))
    _refused(tmp_path, stretch, "--test-scale")
    (tmp_path / "notes.pth").write_text("these are my training notes, not weights\n" * 20)
    _refused(tmp_path, tmp_path / "notes.pth", "not a PyTorch checkpoint")
