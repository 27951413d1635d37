"""The README's flow through the installed `solo-deploy` script, as a subprocess, on tiny data laid
out as people keep it: data synthetic -> train on that COCO folder -> eval -> predict -> export ->
calibrate -> run (issue #12). Each step uses what the previous one wrote."""
from __future__ import annotations

import json

import pytest
from cli_helpers import count_lines, run_cli


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """One scratch folder shared by the steps, in order."""
    return tmp_path_factory.mktemp("flow")


def _ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def test_1_data_synthetic_writes_a_coco_folder(flow):
    _ok(run_cli("data", "synthetic", "-o", "shapes", "--images", "8", "--imgsz", "64", "64", cwd=flow))
    _ok(run_cli("data", "synthetic", "-o", "clip.mp4", "--images", "6", "--imgsz", "64", "64", "--video",
                "--fps", "10", cwd=flow))
    coco = json.loads((flow / "shapes" / "annotations.json").read_text())
    assert len(coco["images"]) == 8 and coco["annotations"]
    assert (flow / "clip.mp4").stat().st_size > 0


def test_2_train_one_tiny_epoch_on_the_coco_folder(flow):
    out = _ok(run_cli("train", "--data", "shapes", "-o", "runs/tiny", "--epochs", "1", "--max-steps", "2",
                      "--imgsz", "64", "64", "--batch", "2", "--val-images", "3", "--no-progress",
                      "--accelerator", "cpu", cwd=flow, timeout=600))
    assert "model.safetensors" in out
    assert "held-out split by image id, 10% for validation" in out and "(7 training, 1 validation images)" in out
    for name in ("model.safetensors", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (flow / "runs/tiny" / name).is_file(), name


@pytest.mark.parametrize(("args", "count"), [
    (["--ann", "shapes/annotations.json"], 8),  # every image of the file
    (["--ann", "shapes/annotations.json", "--images-dir", "shapes/images", "--images", "5"], 5),
    ([], 1),  # one folder: the held-out validation side (10% of 8 images, at least one)
    (["--split", "train"], 7),  # ... and its training side
], ids=["ann-all", "ann-first-5", "held-out-val", "held-out-train"])
def test_3_eval_on_the_coco_folder(flow, args, count):
    name = f"metrics{'-'.join(args).replace('/', '_')}.json"
    out = _ok(run_cli("eval", "runs/tiny/model.safetensors", "--data", "shapes", *args, "--json", name, cwd=flow))
    metrics = json.loads((flow / name).read_text())
    assert metrics["images"] == count
    assert 0.0 <= metrics["AP"] <= 100.0 or metrics["AP"] == -1.0
    assert f"({metrics['images']} images" in out
    assert set(metrics["per_class"]) == {"circle", "rectangle", "triangle", "ring"}
    if not args or args[0] == "--split":
        assert "held-out split by image id, 10% for validation" in out, out


def test_4_predict_on_the_image_folder(flow):
    out = _ok(run_cli("predict", "runs/tiny/model.safetensors", "--source", "shapes/images", "-o", "pred",
                      cwd=flow))
    assert "[onnxruntime/cpu]" in out
    pred = json.loads((flow / "pred" / "predictions.json").read_text())
    assert len(pred["images"]) == 8
    assert len(list((flow / "pred").glob("*.jpg"))) == 8


def test_5_export_onnx(flow):
    _ok(run_cli("export", "runs/tiny/model.safetensors", "-o", "tiny.onnx", cwd=flow))
    assert (flow / "tiny.onnx").stat().st_size > 1000


def test_6_calibrate_tiny(flow):
    out = _ok(run_cli("calibrate", "tiny.onnx", "--data", "shapes/images", "--images", "4", "--force",
                      "--eval-data", "shapes", "--eval-images", "3", "--max-ap-drop", "100", "--threads", "1",
                      "-o", "int8", cwd=flow, timeout=600))
    assert "mask AP" in out
    report = json.loads((flow / "int8" / "calibration_report.json").read_text())
    assert report["accuracy"]["device"] == "cpu"
    assert (flow / "int8" / "model.cpu.int8.onnx").is_file()


def test_7_run_on_a_file_with_every_model_format(flow):
    for i, model in enumerate(("tiny.onnx", "runs/tiny/model.safetensors", "int8/model.cpu.int8.onnx")):
        out = _ok(run_cli("run", "--video", "clip.mp4", "--model", model, "-o", f"out{i}.mp4", "--save-json",
                          f"out{i}.jsonl", "--no-progress", cwd=flow))
        assert "onnxruntime/cpu" in out
        assert count_lines(flow / f"out{i}.jsonl") == 6
        assert (flow / f"out{i}.mp4").stat().st_size > 0
