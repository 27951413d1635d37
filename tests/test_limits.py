"""Resource limits (issue #17): pixels per image, annotations per image, checkpoint size and
instances per image. Each is refused in one line that names the limit and its environment
variable, before anything large is allocated; raising the variable lets the input through.
The CLI cases run the installed script, the memory cases under a capped address space."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli

from solo_deploy.errors import BadInputError
from solo_deploy.limits import (
    MAX_ANNOTATIONS,
    MAX_CHECKPOINT_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_INSTANCES,
    check_checkpoint_size,
    image_size_of,
)
from solo_deploy.testing import deflate_bomb, png_claiming


# -- the limits themselves -------------------------------------------------------------------------
def test_defaults_and_environment_overrides(monkeypatch):
    assert (MAX_IMAGE_PIXELS.value(), MAX_ANNOTATIONS.value(), MAX_CHECKPOINT_BYTES.value(),
            MAX_INSTANCES.value()) == (1 << 28, 2000, 4 << 30, 1000)
    assert 16320 * 12240 <= MAX_IMAGE_PIXELS.value() < 20000 * 20000  # a 200 MP photo fits, 400 MP does not
    monkeypatch.setenv("SOLO_DEPLOY_MAX_IMAGE_PIXELS", "400_000_000")
    assert MAX_IMAGE_PIXELS.value() == 400_000_000
    MAX_IMAGE_PIXELS.check(20000 * 20000, "x")
    monkeypatch.setenv("SOLO_DEPLOY_MAX_IMAGE_PIXELS", "1e6")
    assert MAX_IMAGE_PIXELS.value() == 1_000_000
    with pytest.raises(BadInputError, match=r"x has 1,000,001 pixels, over the limit of 1,000,000 pixels per image "
                                            r"\(set SOLO_DEPLOY_MAX_IMAGE_PIXELS to raise it\)"):
        MAX_IMAGE_PIXELS.check(1_000_001, "x", "pixels")
    for bad in ("lots", "0", "-5", "1.9", "1e400", "nan"):
        monkeypatch.setenv("SOLO_DEPLOY_MAX_IMAGE_PIXELS", bad)
        with pytest.raises(BadInputError, match="SOLO_DEPLOY_MAX_IMAGE_PIXELS"):
            MAX_IMAGE_PIXELS.value()


def test_image_size_comes_from_the_header(tmp_path):
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    assert image_size_of(png_claiming(tmp_path / "big.png", 100_000, 100_000)) == (100_000, 100_000)
    assert before == Image.MAX_IMAGE_PIXELS  # Pillow's global bomb setting is left alone
    cv2.imwrite(str(tmp_path / "small.jpg"), np.zeros((30, 40, 3), np.uint8))
    assert image_size_of(tmp_path / "small.jpg") == (40, 30)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert image_size_of(tmp_path / "junk.png") is None


def test_checkpoint_size_counts_inflated_bytes(tmp_path, monkeypatch):
    bomb = deflate_bomb(tmp_path / "bomb.ckpt", 8 << 20)
    assert bomb.stat().st_size < 100_000
    check_checkpoint_size(bomb)  # 8 MiB is under the default
    monkeypatch.setenv("SOLO_DEPLOY_MAX_CHECKPOINT_BYTES", str(4 << 20))
    with pytest.raises(BadInputError, match=r"checkpoint .*bomb.ckpt has 8,3\d\d,\d\d\d bytes of data, over the limit "
                                            r"of 4,194,304 bytes of checkpoint data"):
        check_checkpoint_size(bomb)
    # A non-zip checkpoint with an empty zip directory appended is still counted by its size.
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(bytes(5 << 20) + b"PK\x05\x06" + bytes(18))
    with pytest.raises(BadInputError, match="legacy.pth has 5,242,9"):
        check_checkpoint_size(legacy)


def test_model_file_asking_for_too_many_instances_is_refused(monkeypatch):
    from solo_deploy.core.config import PostprocessConfig

    assert PostprocessConfig(max_per_img=1000).max_per_img == 1000
    with pytest.raises(BadInputError, match="max_per_img has 1,001 instances, over the limit of 1,000 instances per "
                                            r"image \(set SOLO_DEPLOY_MAX_INSTANCES"):
        PostprocessConfig(max_per_img=1001)
    monkeypatch.setenv("SOLO_DEPLOY_MAX_INSTANCES", "5000")
    assert PostprocessConfig(max_per_img=5000).max_per_img == 5000


# -- through the installed script -------------------------------------------------------------------
def test_predict_refuses_an_image_over_the_pixel_limit_before_decoding(tiny_model_file, tmp_path):
    claim = png_claiming(tmp_path / "claims1e10.png", 100_000, 100_000)
    proc = run_cli("predict", tiny_model_file, "-s", claim, "-o", tmp_path / "out")
    assert_one_line_error(proc, 2, "claims1e10.png (100000x100000) has 10,000,000,000 pixels",
                          "268,435,456 pixels per image", "SOLO_DEPLOY_MAX_IMAGE_PIXELS")
    # Raised past the header's claim, the same file reaches the decoder, which finds no picture.
    proc = run_cli("predict", tiny_model_file, "-s", claim, "-o", tmp_path / "out",
                   env={"SOLO_DEPLOY_MAX_IMAGE_PIXELS": "1e11"})
    line = assert_one_line_error(proc, 2, "cannot decode image")
    assert "SOLO_DEPLOY" not in line
    # A folder: the large image is skipped with its reason, the others are predicted.
    folder = tmp_path / "photos"
    folder.mkdir()
    claim.rename(folder / "claims1e10.png")
    cv2.imwrite(str(folder / "ok.jpg"), np.full((48, 64, 3), 90, np.uint8))
    proc = run_cli("predict", tiny_model_file, "-s", folder, "-o", tmp_path / "out2")
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1 of 2 files" in proc.stderr and "SOLO_DEPLOY_MAX_IMAGE_PIXELS" in proc.stderr
    assert [im["file_name"] for im in json.loads((tmp_path / "out2" / "predictions.json").read_text())["images"]] \
        == ["ok.jpg"]


def test_import_refuses_a_zip_bomb_checkpoint(tmp_path):
    bomb = deflate_bomb(tmp_path / "bomb.pth", 64 << 20)
    proc = run_cli("import", bomb, "-o", tmp_path / "m.safetensors", env={"SOLO_DEPLOY_MAX_CHECKPOINT_BYTES": "32e6"})
    assert_one_line_error(proc, 2, "bomb.pth has 67,1", "over the limit of 32,000,000 bytes of checkpoint data",
                          "SOLO_DEPLOY_MAX_CHECKPOINT_BYTES")
    assert not (tmp_path / "m.safetensors").exists()
    # Under a higher limit it is read, and then refused for what it is: not a SOLO model.
    proc = run_cli("import", bomb, "-o", tmp_path / "m.safetensors")
    assert_one_line_error(proc, 2, "unrecognised weights")


def test_training_refuses_an_image_with_too_many_annotations(tmp_path):
    """A user's COCO folder (annotations.json + images/) with 40 polygons on one image."""
    root = tmp_path / "crowded"
    (root / "images").mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "a.jpg"), np.full((48, 64, 3), 90, np.uint8))
    anns = [{"id": i + 1, "image_id": 7, "category_id": 1, "iscrowd": 0,
             "segmentation": [[2.0 + i, 2.0, 10.0 + i, 2.0, 10.0 + i, 10.0, 2.0 + i, 10.0]]} for i in range(40)]
    (root / "annotations.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a.jpg", "width": 64, "height": 48}], "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}]}))
    proc = run_cli("train", "--data", root, "--epochs", "1", "-o", tmp_path / "run",
                   env={"SOLO_DEPLOY_MAX_ANNOTATIONS": "30"})
    assert_one_line_error(proc, 2, "annotations.json: image id 7 has 40 annotations",
                          "over the limit of 30 annotations per image", "SOLO_DEPLOY_MAX_ANNOTATIONS")
    assert not (tmp_path / "run").exists()


def test_a_malformed_limit_variable_stops_every_command_in_one_line(tmp_path):
    proc = run_cli("info", env={"SOLO_DEPLOY_MAX_INSTANCES": "lots"})
    assert_one_line_error(proc, 2, "SOLO_DEPLOY_MAX_INSTANCES='lots' is not a whole number")


# -- memory under a capped address space ------------------------------------------------------------
CAPPED = r"""
import resource, sys
cap = int(sys.argv[1]) << 20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
import numpy as np
from solo_deploy.core.instances import Instances
from solo_deploy.preprocess import PreprocessSpec
from solo_deploy.runtime.postprocess import Detections, masks_to_crops, masks_to_image

# 100 instances of a 6000 x 8000 frame: as full frames 100 x 48 MB = 4.8 GB of masks alone.
h, w, k = 6000, 8000, 100
spec = PreprocessSpec(input_hw=(192, 256))
lb = spec.plan((h, w))
soft = np.zeros((k, 48, 64), np.float32)
for i in range(k):
    y, x = 4 * (i // 10) + 2, 6 * (i % 10) + 2
    soft[i, y : y + 3, x : x + 4] = 0.9
det = Detections(soft, np.arange(k) % 4, np.linspace(1, 0.1, k, dtype=np.float32))
if sys.argv[2] == "full":
    masks_to_image(det, (192, 256), lb, 0.5)
    sys.exit(0)
crops, boxes = masks_to_crops(det, (192, 256), lb, 0.5)
inst = Instances(labels=np.arange(k) % 4, scores=np.linspace(1, 0.1, k, dtype=np.float32),
                 class_names=("a", "b", "c", "d"), image_hw=(h, w), crops=crops, crop_boxes=boxes)
rles = inst.rles
overlay = inst.plot(np.zeros((h, w, 3), np.uint8))
assert len(rles) == k and overlay.shape == (h, w, 3) and all(c.size for c in crops)
print("covered", sum(c.size for c in crops), "peak_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_large_frame_with_many_instances_fits_a_small_address_space(tmp_path):
    """Crops, RLEs and the overlay of 100 instances on a 48 MP frame within 1.5 GiB of address
    space; the same detections as full-frame masks (4.8 GB) fail under the same cap, so the cap
    is real."""
    import subprocess
    import sys

    script = tmp_path / "capped.py"
    script.write_text(CAPPED)
    ok = subprocess.run([sys.executable, str(script), "1536", "crops"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    covered = int(ok.stdout.split()[1])
    assert 0 < covered < 100 * 6000 * 8000 // 20
    full = subprocess.run([sys.executable, str(script), "1536", "full"], capture_output=True, text=True, timeout=300)
    assert full.returncode != 0 and "MemoryError" in full.stderr, full.stderr[-2000:]


def test_crowd_regions_do_not_count_towards_the_annotation_limit(tmp_path, monkeypatch):
    from solo_deploy.data.coco import CocoDataset

    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.full((48, 64, 3), 90, np.uint8))
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": int(i >= 10),
             "segmentation": [[2.0, 2.0, 10.0, 2.0, 10.0, 10.0, 2.0, 10.0]]} for i in range(40)]
    (tmp_path / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}], "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}]}))
    monkeypatch.setenv("SOLO_DEPLOY_MAX_ANNOTATIONS", "10")
    assert len(CocoDataset(tmp_path)[0].labels) == 10  # 10 objects, 30 crowd regions: admitted
    monkeypatch.setenv("SOLO_DEPLOY_MAX_ANNOTATIONS", "9")
    with pytest.raises(BadInputError, match="image id 1 has 10 annotations"):
        CocoDataset(tmp_path)
