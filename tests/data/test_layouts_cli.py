"""COCO data laid out as people keep it, through the installed script (issue #16): the standard
COCO layout, train/ and val/ folders, one folder with a held-out split, explicit files; the
image limits; bad geometry and paths that leave the data folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli

TRAIN = ("--epochs", "1", "--max-steps", "1", "--imgsz", "64", "64", "--batch", "2", "--no-progress",
         "--accelerator", "cpu")


def _ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """A tiny model and three synthetic COCO folders (6, 5 and 9 images, 64 x 64)."""
    from conftest import tiny_config

    from solo_deploy.model.modelfile import ModelMeta, save_model_file
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec

    root = tmp_path_factory.mktemp("layouts")
    cfg = tiny_config()
    save_model_file(root / "m.safetensors", SOLONet(cfg).state_dict(), ModelMeta(
        model=cfg, preprocess=PreprocessSpec(input_hw=(64, 64)),
        class_names=("circle", "rectangle", "triangle", "ring"), preset="solov2-light-r18"))
    for name, n in (("a", 6), ("b", 5), ("c", 9)):
        _ok(run_cli("data", "synthetic", "-o", name, "--images", str(n), "--imgsz", "64", "64", cwd=root))
    return root


def _standard_layout(sets: Path, dest: Path) -> Path:
    """COCO's own: annotations/instances_{train,val}2017.json, train2017/, val2017/."""
    (dest / "annotations").mkdir(parents=True)
    for split, src in (("train2017", "a"), ("val2017", "b")):
        shutil.copytree(sets / src / "images", dest / split)
        shutil.copy(sets / src / "annotations.json", dest / "annotations" / f"instances_{split}.json")
    return dest


def test_standard_coco_layout(sets: Path, tmp_path: Path) -> None:
    coco = _standard_layout(sets, tmp_path / "coco 2017")
    out = _ok(run_cli("train", "--data", coco, "-o", "run", *TRAIN, cwd=tmp_path, timeout=600))
    assert "annotations/instances_train2017.json" in out and "annotations/instances_val2017.json" in out
    assert "(6 training, 5 validation images)" in out
    assert (tmp_path / "run" / "model.safetensors").is_file()
    out = _ok(run_cli("eval", sets / "m.safetensors", "--data", coco, cwd=tmp_path))
    assert ":val (5 images" in out and "instances_val2017.json" in out
    out = _ok(run_cli("eval", sets / "m.safetensors", "--data", coco, "--split", "train", "--images", "4",
                      cwd=tmp_path))
    assert ":train (4 images" in out and "instances_train2017.json" in out
    # Which file is which cannot be guessed: one line asking for them.
    shutil.copy(coco / "annotations" / "instances_val2017.json", coco / "annotations" / "instances_val2014.json")
    assert_one_line_error(run_cli("train", "--data", coco, "-o", "run2", *TRAIN, cwd=tmp_path), 2,
                          "cannot tell the train and val files apart", "--train-ann")


def test_train_and_val_folders(sets: Path, tmp_path: Path) -> None:
    data = tmp_path / "my data"
    shutil.copytree(sets / "a", data / "train")
    shutil.copytree(sets / "b", data / "val")
    out = _ok(run_cli("train", "--data", data, "-o", "run", *TRAIN, "--train-images", "3", cwd=tmp_path, timeout=600))
    assert "(split folders)" in out and "(3 training, 5 validation images)" in out
    out = _ok(run_cli("eval", sets / "m.safetensors", "--data", data, "--split", "train", cwd=tmp_path))
    assert ":train (6 images" in out


def test_one_folder_gets_a_deterministic_held_out_split(sets: Path, tmp_path: Path) -> None:
    from solo_deploy.data.splits import held_out_ids

    data = sets / "c"  # 9 images
    val_runs = [json.loads((tmp_path / f"v{i}.json").read_text()) if _ok(run_cli(
        "eval", sets / "m.safetensors", "--data", data, "--json", f"v{i}.json", cwd=tmp_path)) else None
        for i in range(2)]
    train = _ok(run_cli("eval", sets / "m.safetensors", "--data", data, "--split", "train", "--json", "t.json",
                        cwd=tmp_path))
    assert val_runs[0] == {**val_runs[1], "seconds": val_runs[0]["seconds"]}  # same images, same numbers
    assert val_runs[0]["images"] == 1 and ":train (8 images" in train
    assert "held-out split by image id, 10% for validation" in val_runs[0]["data_source"]
    half = json.loads((tmp_path / "h.json").read_text()) if _ok(run_cli(
        "eval", sets / "m.safetensors", "--data", data, "--val-fraction", "0.5", "--json", "h.json",
        cwd=tmp_path)) else None
    assert half["images"] == 4 and "50% for validation" in half["data_source"]
    most = json.loads((tmp_path / "m.json").read_text()) if _ok(run_cli(
        "eval", sets / "m.safetensors", "--data", data, "--val-fraction", "0.99", "--split", "train", "--json",
        "m.json", cwd=tmp_path)) else None
    assert most["images"] == 1  # the training side keeps at least one image
    # The rule itself: by image id (a hash), not by file order; the sides never overlap.
    ids = list(range(1, 10))
    tr, va = held_out_ids(ids, 0.5)
    assert len(va) == 4 and not set(tr) & set(va) and sorted(tr + va) == ids
    assert held_out_ids(ids[::-1], 0.5) == (tr[::-1], va[::-1])
    out = _ok(run_cli("train", "--data", data, "-o", "run", *TRAIN, "--val-fraction", "0.3", cwd=tmp_path,
                      timeout=600))
    assert "held-out split by image id, 30% for validation" in out and "(6 training, 3 validation images)" in out
    assert_one_line_error(run_cli("eval", sets / "m.safetensors", "--data", data, "--split", "test", cwd=tmp_path),
                          2, "--split is train or val")


def test_explicit_files_for_train_eval_and_calibrate(sets: Path, tmp_path: Path) -> None:
    labels, pictures = tmp_path / "labels", tmp_path / "pictures from the camera"
    labels.mkdir()
    shutil.copy(sets / "a" / "annotations.json", labels / "train.json")
    shutil.copy(sets / "b" / "annotations.json", labels / "val.json")
    shutil.copytree(sets / "a" / "images", pictures / "t")
    shutil.copytree(sets / "b" / "images", pictures / "v")
    out = _ok(run_cli("train", "--train-ann", labels / "train.json", "--train-dir", pictures / "t",
                      "--val-ann", labels / "val.json", "--val-dir", pictures / "v", "-o", "run", *TRAIN,
                      cwd=tmp_path, timeout=600))
    assert "(--train-ann)" in out and "(--val-ann)" in out and "(6 training, 5 validation images)" in out
    out = _ok(run_cli("eval", sets / "m.safetensors", "--ann", labels / "val.json", "--images-dir", pictures / "v",
                      cwd=tmp_path))
    assert "(5 images" in out
    out = _ok(run_cli("calibrate", sets / "m.safetensors", "--data", sets / "a", "-o", "cal", "--images", "4",
                      "--force", "--ann", labels / "val.json", "--images-dir", pictures / "v", "--eval-images", "2",
                      "--max-ap-drop", "100", cwd=tmp_path, timeout=600))
    report = json.loads((tmp_path / "cal" / "calibration_report.json").read_text())
    assert report["accuracy"]["images"] == 2 and report["accuracy"]["data"].endswith("val.json")
    # --ann alone: images beside the file (no images/ folder there).
    flat = tmp_path / "flat"
    shutil.copytree(sets / "b" / "images", flat)
    shutil.copy(sets / "b" / "annotations.json", flat / "labels.json")
    out = _ok(run_cli("eval", sets / "m.safetensors", "--ann", flat / "labels.json", cwd=tmp_path))
    assert "(5 images" in out and "images beside it" in out
    # One folder with an explicit validation set: all of the folder trains, nothing is held out.
    out = _ok(run_cli("train", "--data", sets / "c", "--val-ann", labels / "val.json", "--val-dir", pictures / "v",
                      "-o", "run3", *TRAIN, cwd=tmp_path, timeout=600))
    assert "(all of it: the other side is --val-ann)" in out and "(9 training, 5 validation images)" in out
    # Typos: a missing file or folder, a folder without its file.
    assert_one_line_error(run_cli("eval", sets / "m.safetensors", "--ann", labels / "vall.json", cwd=tmp_path), 2,
                          "--ann: annotation file not found", "vall.json")
    assert_one_line_error(run_cli("eval", sets / "m.safetensors", "--images-dir", pictures / "v", cwd=tmp_path), 2,
                          "--images-dir needs --ann")
    assert_one_line_error(run_cli("train", "--train-ann", labels / "train.json", "--train-dir", pictures / "x",
                                  "--val-ann", labels / "val.json", "-o", "run2", *TRAIN, cwd=tmp_path), 2,
                          "--train-dir: image folder not found")


# -- geometry and paths ---------------------------------------------------------------------------

def _edited(sets: Path, dest: Path, edit) -> Path:
    shutil.copytree(sets / "b", dest)
    coco = json.loads((dest / "annotations.json").read_text())
    edit(coco)
    (dest / "annotations.json").write_text(json.dumps(coco))
    return dest


def _polygon(coco, index: int = 0) -> tuple[dict, list]:
    """Annotation ``index`` as a polygon annotation (the synthetic sets store RLE): a 20-pixel
    square, area and bbox left for the loader to compute."""
    ann = coco["annotations"][index]
    ann["segmentation"] = [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]
    ann.pop("area", None)
    ann.pop("bbox", None)
    return ann, ann["segmentation"][0]


@pytest.mark.parametrize(("value", "needle"), [
    (1e12, "more than 4x the 64x64 image away"),
    (-3e9, "more than 4x the 64x64 image away"),
    (320.5, "more than 4x the 64x64 image away"),  # just past 64 + 4 * 64
])
def test_far_polygon_coordinates_are_one_line(sets: Path, tmp_path: Path, value: float, needle: str) -> None:
    def edit(coco):
        ann, poly = _polygon(coco)
        poly[0] = value
        coco["_aid"] = ann["id"]
    data = _edited(sets, tmp_path / "far", edit)
    aid = json.loads((data / "annotations.json").read_text())["_aid"]
    for cmd in (("eval", sets / "m.safetensors", "--ann", data / "annotations.json"),
                ("train", "--data", data, "-o", "run", *TRAIN)):
        assert_one_line_error(run_cli(*cmd, cwd=tmp_path, timeout=600), 2, needle, f"annotation id {aid}",
                              "annotations.json")


def test_small_overshoots_and_moderate_ones_are_accepted(sets: Path, tmp_path: Path) -> None:
    """Real COCO polygons overshoot the border by a fraction of a pixel; pycocotools clips the
    rest exactly when it rasterises, so both evaluate."""
    def edit(coco):
        _, poly = _polygon(coco, 0)
        poly[0], poly[1] = 64.4, -0.3
        _, other = _polygon(coco, 1)
        other[0] = -40.0
    data = _edited(sets, tmp_path / "edge", edit)
    out = _ok(run_cli("eval", sets / "m.safetensors", "--ann", data / "annotations.json", cwd=tmp_path))
    assert "(5 images" in out


@pytest.mark.parametrize("name", ["/etc/hostname", "../b/images/000000.png", "..\\secret.png", "C:\\x.png"])
def test_image_paths_outside_the_data_folder_are_refused(sets: Path, tmp_path: Path, name: str) -> None:
    def edit(coco):
        coco["images"][0]["file_name"] = name
    data = _edited(sets, tmp_path / "paths", edit)
    assert_one_line_error(run_cli("eval", sets / "m.safetensors", "--ann", data / "annotations.json", cwd=tmp_path),
                          2, "points outside the data folder")


def test_non_finite_area_is_refused(sets: Path, tmp_path: Path) -> None:
    def edit(coco):
        coco["annotations"][0]["area"] = 1e400  # json writes Infinity
    data = _edited(sets, tmp_path / "area", edit)
    assert_one_line_error(run_cli("eval", sets / "m.safetensors", "--ann", data / "annotations.json", cwd=tmp_path),
                          2, "area must be a finite number")


def test_an_empty_coco_file_is_one_line(sets: Path, tmp_path: Path) -> None:
    def edit(coco):
        coco["images"], coco["annotations"] = [], []
    data = _edited(sets, tmp_path / "empty", edit)
    for split in ("val", "train"):
        assert_one_line_error(run_cli("eval", sets / "m.safetensors", "--data", data, "--split", split,
                                      cwd=tmp_path), 2, "has 0 image(s)")
