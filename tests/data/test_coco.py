"""COCO loader: layouts, polygon / RLE / crowd handling, label mapping, bad inputs."""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from solo_deploy.data.coco import CocoDataset
from solo_deploy.errors import BadInputError

H, W = 20, 30


def _uncompressed_rle(mask: np.ndarray) -> list[int]:
    """Column-major run lengths starting with a run of zeros (COCO's uncompressed RLE), by hand."""
    flat = mask.T.ravel()
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    return runs


M_UNCOMPRESSED = np.zeros((H, W), np.uint8)
M_UNCOMPRESSED[12:17, 15:26] = 1
M_COMPRESSED = np.zeros((H, W), np.uint8)
M_COMPRESSED[1:6, 20:28] = 1
M_COMPRESSED[3, 22] = 0


def _coco() -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(M_COMPRESSED))
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                   {"id": 2, "file_name": "b.png", "height": H, "width": W}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}, {"id": 5, "name": "zebra"}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 7, "segmentation": [[2, 2, 10, 2, 10, 8, 2, 8]], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 3,
             "segmentation": {"size": [H, W], "counts": _uncompressed_rle(M_UNCOMPRESSED)}},
            {"id": 13, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 39.0, "bbox": [20, 1, 8, 5],
             "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")}},
            {"id": 14, "image_id": 1, "category_id": 5, "iscrowd": 1, "segmentation": [[0, 10, 8, 10, 8, 18, 0, 18]]},
        ],
    }


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _write(folder: Path, coco: dict[str, Any], json_name: str = "annotations.json", img_dir: str = "images") -> Path:
    (folder / img_dir).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / img_dir / "a.png"), _image(0))
    cv2.imwrite(str(folder / img_dir / "b.png"), _image(1))
    path = folder / json_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco))
    return path


def test_polygon_rle_crowd_and_labels(tmp_path: Path) -> None:
    _write(tmp_path, _coco())
    ds = CocoDataset(tmp_path)
    assert ds.cat_ids == [3, 5, 7] and ds.class_names == ("cat", "zebra", "dog")
    assert ds.image_ids == [1, 2] and len(ds) == 2 and ds.num_classes == 3
    s = ds[0]
    assert s.image_id == 1 and np.array_equal(s.image_bgr, _image(0))
    assert s.masks.dtype == np.uint8 and s.masks.shape == (3, H, W)  # crowd (id 14) excluded
    assert s.labels.tolist() == [2, 0, 0] and s.labels.dtype == np.int64
    poly = s.masks[0]
    assert poly[5, 5] == 1 and poly[0, 0] == 0 and poly[15, 5] == 0
    assert 40 <= poly.sum() <= 80  # the 8x6 polygon, rasterised by pycocotools' rules
    assert np.array_equal(s.masks[1], M_UNCOMPRESSED)
    assert np.array_equal(s.masks[2], M_COMPRESSED)
    # The GT dict keeps the crowd region (for evaluation) and fills in area / bbox where missing.
    anns = {a["id"]: a for a in ds.coco_dict["annotations"]}
    assert anns[14]["iscrowd"] == 1 and anns[12]["iscrowd"] == 0
    assert anns[12]["area"] == float(M_UNCOMPRESSED.sum()) and anns[12]["bbox"] == [15.0, 12.0, 11.0, 5.0]
    assert anns[13]["area"] == 39.0
    empty = ds[1]
    assert empty.masks.shape == (0, H, W) and empty.labels.shape == (0,)


def test_layouts(tmp_path: Path) -> None:
    coco = _coco()
    # Official layout: annotations/instances_<split>.json, images in <split>/.
    official = tmp_path / "official"
    _write(official, coco, "annotations/instances_val2017.json", "val2017")
    assert CocoDataset(official)[0].masks.shape[0] == 3
    # A JSON file given directly, file_name relative to its folder ...
    flat = tmp_path / "flat"
    path = _write(flat, coco, "gt.json", ".")
    assert np.array_equal(CocoDataset(path)[1].image_bgr, _image(1))
    # ... or to its images/ subfolder.
    sub = tmp_path / "sub"
    path = _write(sub, coco, "gt.json", "images")
    assert np.array_equal(CocoDataset(path)[0].image_bgr, _image(0))
    # Two candidate JSONs: ambiguous.
    (official / "annotations" / "instances_train2017.json").write_text(json.dumps(coco))
    with pytest.raises(BadInputError, match="several"):
        CocoDataset(official)


def _mutate(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    coco = copy.deepcopy(_coco())
    fn(coco)
    return coco


BAD_JSON_CASES = [
    ("missing key", lambda c: c.pop("categories"), ["categories"]),
    ("image without file_name", lambda c: c["images"][0].pop("file_name"), ["image id 1", "file_name"]),
    ("image without id", lambda c: c["images"][1].pop("id"), ["image #1", "id"]),
    ("annotation without segmentation", lambda c: c["annotations"][0].pop("segmentation"),
     ["annotation id 11", "segmentation"]),
    ("unknown category", lambda c: c["annotations"][1].update(category_id=99), ["annotation id 12", "99"]),
    ("unknown image", lambda c: c["annotations"][1].update(image_id=42), ["annotation id 12", "42"]),
    ("degenerate polygon", lambda c: c["annotations"][0].update(segmentation=[[1, 1, 5, 5]]),
     ["annotation id 11", "degenerate"]),
    ("odd polygon", lambda c: c["annotations"][3].update(segmentation=[[1, 1, 5, 5, 6, 2, 9]]),
     ["annotation id 14", "degenerate"]),
    ("rle size mismatch", lambda c: c["annotations"][2]["segmentation"].update(size=[5, 5]),
     ["annotation id 13", "size"]),
    ("rle bad chars", lambda c: c["annotations"][2]["segmentation"].update(counts="ab~~"),
     ["annotation id 13", "RLE"]),
    ("rle bad sum", lambda c: c["annotations"][1]["segmentation"].update(counts=[1, 2, 3]),
     ["annotation id 12", "RLE"]),
    ("duplicate image id", lambda c: c["images"][1].update(id=1), ["image id 1", "twice"]),
    ("not a list", lambda c: c.update(annotations={}), ["annotations"]),
]


@pytest.mark.parametrize("name,mutate,needles", BAD_JSON_CASES, ids=[c[0] for c in BAD_JSON_CASES])
def test_bad_json_records(tmp_path: Path, name: str, mutate: Callable[[dict[str, Any]], None],
                          needles: list[str]) -> None:
    path = _write(tmp_path, _mutate(mutate))
    with pytest.raises(BadInputError) as err:
        CocoDataset(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    for needle in needles:
        assert needle in msg, msg


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist") as err:
        CocoDataset(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no annotations.json"):
        CocoDataset(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "annotations.json").write_text('{"images": [')
    with pytest.raises(BadInputError, match="not valid JSON") as err:
        CocoDataset(broken)
    assert str(broken / "annotations.json") in str(err.value) and "\n" not in str(err.value)
    (broken / "annotations.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BadInputError, match="not valid JSON"):
        CocoDataset(broken)


def test_bad_images_raise_when_loaded(tmp_path: Path) -> None:
    _write(tmp_path, _coco())
    (tmp_path / "images" / "a.png").write_bytes(b"this is not a png")
    (tmp_path / "images" / "b.png").unlink()
    ds = CocoDataset(tmp_path)  # validation does not read pixels
    with pytest.raises(BadInputError, match="cannot decode") as err:
        ds[0]
    assert "a.png" in str(err.value)
    with pytest.raises(BadInputError, match="not found") as err:
        ds[1]
    assert "b.png" in str(err.value) and "image id 2" in str(err.value)
    cv2.imwrite(str(tmp_path / "images" / "b.png"), np.zeros((H + 1, W, 3), np.uint8))
    with pytest.raises(BadInputError, match="b.png") as err:
        ds[1]
    assert f"{W}x{H}" in str(err.value)


def test_corrupt_compressed_rle_is_refused_up_front(tmp_path: Path) -> None:
    # Valid characters, wrong total: pycocotools would decode out of bounds; we refuse first.
    for counts in ("0a", "52", ""):
        _write(tmp_path, _mutate(lambda c, v=counts: c["annotations"][2]["segmentation"].update(counts=v)))
        with pytest.raises(BadInputError, match="annotation id 13.*corrupt compressed RLE"):
            CocoDataset(tmp_path)
