"""Calibration image sources: preprocessed exactly like the runtime, minimum count, bad folders."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from solo_deploy.calibration.data import MIN_IMAGES, load_calibration_images, source_kind
from solo_deploy.errors import BadInputError
from solo_deploy.preprocess import PreprocessSpec

SPEC = PreprocessSpec(input_hw=(64, 96))


def _write_images(folder, n: int, start: int = 0, size=(40, 70)) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    paths = []
    for i in range(start, start + n):
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        p = folder / f"img_{i:03d}.png"
        assert cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def test_folder_matches_runtime_preprocessing(tmp_path) -> None:
    from solo_deploy.runtime.predictor import Predictor, read_image

    files = _write_images(tmp_path / "imgs" / "a", 20) + _write_images(tmp_path / "imgs" / "b", 20, start=20)
    calib = load_calibration_images(tmp_path / "imgs", SPEC, 10, force=True)
    assert calib.kind == "folder" and calib.found == 40 and calib.count == 10
    assert calib.images.dtype == np.uint8 and calib.images.shape == (10, 64, 96, 3)
    # Evenly spread over the (recursive, sorted) files, not the first ten.
    assert calib.names[0] == "a/img_000.png" and calib.names[-1] == "b/img_039.png"

    class _Stub:  # Predictor.preprocess only needs the runner's metadata
        meta = type("M", (), {"preprocess": SPEC})()

    expected, _ = Predictor(_Stub()).preprocess([read_image(tmp_path / "imgs" / n) for n in calib.names])
    np.testing.assert_array_equal(calib.images, expected)
    assert (
        len(calib.sha256) == 64
        and calib.sha256 == load_calibration_images(tmp_path / "imgs", SPEC, 10, force=True).sha256
    )
    assert files  # silence unused


def test_synthetic_calib_split() -> None:
    calib = load_calibration_images("synthetic", SPEC, 40)
    assert calib.kind == "synthetic" and calib.count == 40 and calib.found == 128
    assert calib.images.shape == (40, 64, 96, 3)
    # Letterboxed: the 256x256 synthetic images fill 64x64 and the right is padding (pad_value 0).
    assert calib.images[:, :, 64:].max() == 0 and calib.images[:, :, :64].max() > 0


def test_video_every_kth_frame(tmp_path) -> None:
    from solo_deploy.data.synthetic import write_video

    video, _ = write_video(tmp_path / "clip.avi", n_frames=40, fps=10)
    calib = load_calibration_images(video, SPEC, 8, force=True)
    assert source_kind(video) == "video" and calib.count == 8
    assert calib.names == tuple(f"frame {i}" for i in range(0, 40, 5))  # stride = 40 // 8
    calib3 = load_calibration_images(video, SPEC, 5, force=True, video_stride=3)
    assert calib3.names == tuple(f"frame {i}" for i in range(0, 15, 3))


def test_coco_dataset(tmp_path) -> None:
    from solo_deploy.data.splits import held_out_ids
    from solo_deploy.data.synthetic import write_coco

    write_coco(tmp_path / "coco", "calib", n_images=6)
    calib = load_calibration_images(tmp_path / "coco", SPEC, 4, force=True)
    # One folder: calibration takes its training side; the held-out image is left for the AP check.
    _, val_ids = held_out_ids([1, 2, 3, 4, 5, 6], 0.1)
    assert calib.kind == "coco" and calib.count == 4 and calib.found == 5 and len(val_ids) == 1
    assert {f"image_id={i}" for i in val_ids}.isdisjoint(calib.names)


def test_train_and_val_folders_calibrate_on_train_only(tmp_path) -> None:
    from solo_deploy.data.synthetic import write_coco

    write_coco(tmp_path / "data" / "train", "calib", n_images=3)
    write_coco(tmp_path / "data" / "val", "val", n_images=4)
    calib = load_calibration_images(tmp_path / "data", SPEC, 8, force=True)
    assert calib.kind == "coco" and calib.found == 3 and calib.count == 3


def test_too_few_images_needs_force(tmp_path) -> None:
    _write_images(tmp_path / "few", 10)
    with pytest.raises(BadInputError) as exc:
        load_calibration_images(tmp_path / "few", SPEC, 64)
    msg = str(exc.value)
    assert "only 10" in msg and str(MIN_IMAGES) in msg and "--force" in msg and "\n" not in msg
    assert load_calibration_images(tmp_path / "few", SPEC, 64, force=True).count == 10
    _write_images(tmp_path / "many", 40)
    with pytest.raises(BadInputError, match="--images 8 is below the minimum of 32"):
        load_calibration_images(tmp_path / "many", SPEC, 8)


def test_bad_sources(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no images"):
        load_calibration_images(tmp_path / "empty", SPEC, 32)
    with pytest.raises(BadInputError, match="not found"):
        load_calibration_images(tmp_path / "missing", SPEC, 32)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BadInputError, match="unsupported calibration data file"):
        load_calibration_images(tmp_path / "notes.txt", SPEC, 32)
    with pytest.raises(BadInputError, match="positive integer"):
        load_calibration_images("synthetic", SPEC, 0)


def test_undecodable_images(tmp_path) -> None:
    folder = tmp_path / "broken"
    _write_images(folder, 33)
    (folder / "img_010.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(BadInputError, match="img_010.png") as exc:
        load_calibration_images(folder, SPEC, 64)
    assert "\n" not in str(exc.value)
    # --force skips it (and then has 32 images, the minimum).
    calib = load_calibration_images(folder, SPEC, 64, force=True)
    assert calib.count == 32 and len(calib.skipped) == 1
    junk = tmp_path / "junk"
    junk.mkdir()
    for i in range(3):
        (junk / f"{i}.jpg").write_bytes(b"garbage")
    with pytest.raises(BadInputError, match="no usable calibration images"):
        load_calibration_images(junk, SPEC, 32, force=True)
