"""What `predict` and `run` write (issue #19, items 1-3), through the installed script: numbered
output folders and the refusal of a used one, --imgsz and --batch, and one result convention
(COCO category ids, [x, y, w, h] boxes, names beside ids) checked against the shipped JSON schemas."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli

jsonschema = pytest.importorskip("jsonschema", reason="the JSON schema checks need jsonschema (the dev extra)")


def _schema(name: str) -> dict:
    return json.loads(resources.files("solo_deploy").joinpath(f"assets/schemas/{name}.schema.json").read_text())


def _ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def _annotations(folder: Path) -> list[dict]:
    return json.loads((folder / "predictions.json").read_text())["annotations"]


def test_each_predict_without_output_gets_a_numbered_folder(lively_model, photos, tmp_path):
    for _ in range(3):
        out = _ok(run_cli("predict", lively_model, "-s", photos / "p0.jpg", cwd=tmp_path))
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["predict", "predict2", "predict3"]
    assert "runs/predict3/predictions.json" in out
    for folder in runs.iterdir():
        assert sorted(p.name for p in folder.iterdir()) == ["p0.jpg", "predictions.json"]


def test_an_output_folder_that_holds_files_needs_exist_ok(lively_model, photos, tmp_path):
    used = tmp_path / "out"
    used.mkdir()
    (used / "old.jpg").write_bytes(b"an earlier overlay")
    proc = run_cli("predict", lively_model, "-s", photos, "-o", used)
    assert_one_line_error(proc, 2, "already holds files", "--exist-ok")
    assert [p.name for p in used.iterdir()] == ["old.jpg"] and (used / "old.jpg").read_bytes() == b"an earlier overlay"
    _ok(run_cli("predict", lively_model, "-s", photos, "-o", used, "--exist-ok"))
    assert {p.name for p in used.iterdir()} == {"old.jpg", "p0.jpg", "p1.jpg", "p2.jpg", "predictions.json"}
    empty = tmp_path / "empty"
    empty.mkdir()
    _ok(run_cli("predict", lively_model, "-s", photos, "-o", empty))  # an empty folder holds nothing to lose
    (tmp_path / "a file").write_text("x")
    assert_one_line_error(run_cli("predict", lively_model, "-s", photos, "-o", tmp_path / "a file"), 2,
                          "is a file, not a folder")
    # The source folder itself is never an output, --exist-ok or not.
    assert_one_line_error(run_cli("predict", lively_model, "-s", photos, "-o", photos, "--exist-ok"), 2,
                          "is the --source folder")


def test_predictions_follow_the_schema_and_coco_conventions(lively_model, photos, tmp_path):
    _ok(run_cli("predict", lively_model, "-s", photos, "-o", tmp_path / "p", "--conf", "0"))
    doc = json.loads((tmp_path / "p" / "predictions.json").read_text())
    jsonschema.validate(doc, _schema("predictions"))
    assert doc["info"]["schema_version"] == 1 and doc["info"]["model"].endswith("lively.safetensors")
    names = {c["id"]: c["name"] for c in doc["categories"]}
    assert names == {1: "circle", 2: "rectangle", 3: "triangle", 4: "ring"}  # save_tiny's classes, ids 1..C
    anns = doc["annotations"]
    assert len(anns) > 5
    from pycocotools import mask as mask_utils

    for a in anns:
        assert names[a["category_id"]] == a["category_name"]
        m = mask_utils.decode(a["segmentation"]).astype(bool)
        ys, xs = m.nonzero()
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]  # x, y, w, h
        assert a["area"] == m.sum()
    # The schema is not vacuous: version 1's record (0-based class_id, "box") fails it.
    old = {**doc, "annotations": [{"image_id": 1, "class": "circle", "class_id": 0, "score": 0.5,
                                   "box": [0, 0, 1, 1], "mask": anns[0]["segmentation"]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(old, _schema("predictions"))


def test_run_json_lines_follow_the_schema(lively_model, tmp_path):
    js = tmp_path / "frames.jsonl"
    _ok(run_cli("run", "--model", lively_model, "--video", "demo", "--max-frames", "3", "--save-json", js,
                "--conf", "0", "--no-progress"))
    schema = _schema("frames")
    lines = [json.loads(line) for line in js.read_text().splitlines()]
    assert lines and sum(len(rec["instances"]) for rec in lines) > 0
    for rec in lines:
        jsonschema.validate(rec, schema)
    # Both files describe an instance the same way.
    assert schema["$defs"]["instance"] == _schema("predictions")["$defs"]["instance"]


def test_imgsz_and_batch_on_predict(lively_model, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("SOLO_DEPLOY_CACHE", str(tmp_path / "cache"))  # a cache of this test's own
    base = _ok(run_cli("predict", lively_model, "-s", photos, "-o", tmp_path / "b1"))
    assert "at input 64x64" in base
    # --batch groups images per network call; the results are each image's own.
    _ok(run_cli("predict", lively_model, "-s", photos, "-o", tmp_path / "b2", "--batch", "2"))
    one, two = _annotations(tmp_path / "b1"), _annotations(tmp_path / "b2")
    assert [(a["image_id"], a["category_id"], a["bbox"]) for a in one] == [
        (a["image_id"], a["category_id"], a["bbox"]) for a in two]
    assert [a["score"] for a in one] == pytest.approx([a["score"] for a in two], abs=1e-4)
    # --imgsz: the model file runs at another input size (its own cached ONNX export at that size).
    big = _ok(run_cli("predict", lively_model, "-s", photos, "-o", tmp_path / "i", "--imgsz", "128", "96"))
    assert "at input 128x96" in big
    assert len(list((tmp_path / "cache" / "onnx").glob("*-128x96.onnx"))) == 1
    torch_out = _ok(run_cli("predict", lively_model, "-s", photos, "-o", tmp_path / "t", "--imgsz", "128", "96",
                            "--backend", "torch"))
    assert "[torch/cpu] at input 128x96" in torch_out
    assert_one_line_error(run_cli("predict", lively_model, "-s", photos, "-o", tmp_path / "x", "--imgsz", "100", "96"),
                          2, "multiples of 32")
    assert_one_line_error(run_cli("predict", lively_model, "-s", photos, "-o", tmp_path / "x", "--batch", "0"), 2,
                          "--batch")


def test_imgsz_on_a_fixed_onnx_graph_is_one_line(lively_model, photos, tmp_path):
    onnx = tmp_path / "m.onnx"
    _ok(run_cli("export", lively_model, "-o", onnx, cwd=tmp_path, timeout=600))
    line = assert_one_line_error(run_cli("predict", onnx, "-s", photos, "-o", tmp_path / "x", "--imgsz", "128", "128"),
                                 2, "fixed at 64 x 64", "--imgsz 128 128")
    assert "--dynamic" in line
    assert not (tmp_path / "x").exists()
    dyn = tmp_path / "dyn.onnx"
    _ok(run_cli("export", lively_model, "-o", dyn, "--dynamic", cwd=tmp_path, timeout=600))
    out = _ok(run_cli("predict", dyn, "-s", photos, "-o", tmp_path / "d", "--imgsz", "128", "128"))
    assert "at input 128x128" in out


def test_run_takes_imgsz(lively_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SOLO_DEPLOY_CACHE", str(tmp_path / "cache"))
    js = tmp_path / "f.jsonl"
    _ok(run_cli("run", "--model", lively_model, "--video", "demo", "--max-frames", "2", "--save-json", js,
                "--imgsz", "96", "96", "--no-progress"))
    assert list((tmp_path / "cache" / "onnx").glob("*-96x96.onnx"))
    assert len(js.read_text().splitlines()) == 2


def test_a_data_sets_category_ids_reach_every_output(lively_model, photos, tmp_path):
    """A model trained on a COCO folder whose category ids are not 1..C writes those ids (and
    takes them in --classes), as COCO-trained detectors must."""
    _ok(run_cli("data", "synthetic", "-o", "d", "--images", "4", "--imgsz", "64", "64", cwd=tmp_path))
    ann_file = tmp_path / "d" / "annotations.json"
    coco = json.loads(ann_file.read_text())
    ids = {c["id"]: 10 * c["id"] + 7 for c in coco["categories"]}  # 17, 27, 37, 47
    for c in coco["categories"]:
        c["id"] = ids[c["id"]]
    for a in coco["annotations"]:
        a["category_id"] = ids[a["category_id"]]
    ann_file.write_text(json.dumps(coco))
    # Fine-tuned for one step from a model that finds instances (a fresh one finds none).
    _ok(run_cli("train", "--data", "d", "-o", "run", "--from", lively_model, "--epochs", "1", "--max-steps", "1",
                "--imgsz", "64", "64", "--batch", "2", "--lr", "1e-6", "--no-progress", "--accelerator", "cpu",
                cwd=tmp_path, timeout=600))
    model = tmp_path / "run" / "model.safetensors"
    out = tmp_path / "p"
    _ok(run_cli("predict", model, "-s", photos, "-o", out, "--conf", "0"))
    doc = json.loads((out / "predictions.json").read_text())
    assert [c["id"] for c in doc["categories"]] == [17, 27, 37, 47]
    assert doc["annotations"] and {a["category_id"] for a in doc["annotations"]} <= {17, 27, 37, 47}
    _ok(run_cli("predict", model, "-s", photos, "-o", tmp_path / "q", "--conf", "0", "--classes", "27"))
    assert {a["category_id"] for a in _annotations(tmp_path / "q")} <= {27}
    assert_one_line_error(run_cli("predict", model, "-s", photos, "-o", tmp_path / "x", "--classes", "2"), 2,
                          "category ids 17, 27, 37, 47")
    # The demo's own AP still pairs the model's classes with the demo's ground truth (ids 1..4 there).
    demo = _ok(run_cli("run", "--model", model, "--video", "demo", "--max-frames", "2", "--no-progress"))
    assert "demo mask AP" in demo


def test_eval_takes_imgsz_on_a_model_file(lively_model, tmp_path, monkeypatch):
    """eval --imgsz on a .safetensors (CPU, auto): its cached ONNX export at that size, as predict."""
    monkeypatch.setenv("SOLO_DEPLOY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "m.json"
    _ok(run_cli("eval", lively_model, "-n", "2", "--imgsz", "96", "96", "--json", out))
    m = json.loads(out.read_text())
    assert m["input_hw"] == [96, 96] and m["backend"] == "onnxruntime"
    assert list((tmp_path / "cache" / "onnx").glob("*-96x96.onnx"))


def test_a_failed_predict_leaves_no_empty_numbered_folder(lively_model, photos, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert_one_line_error(run_cli("predict", lively_model, "-s", "broken.jpg", cwd=tmp_path), 2, "broken.jpg")
    assert not (tmp_path / "runs" / "predict").exists()
    # A dangling link named runs/predict takes the name: the next call uses runs/predict2.
    (tmp_path / "runs" / "predict").symlink_to(tmp_path / "gone")
    out = _ok(run_cli("predict", lively_model, "-s", photos / "p0.jpg", cwd=tmp_path))
    assert "runs/predict2/predictions.json" in out and (tmp_path / "runs" / "predict2" / "p0.jpg").is_file()
