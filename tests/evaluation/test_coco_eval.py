"""COCO mask evaluation: our wrapper against pycocotools' COCOeval run directly on files."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from solo_deploy.errors import BadInputError
from solo_deploy.evaluation.coco_eval import SUMMARY_KEYS, detections_to_coco, encode_masks, evaluate

CAT_IDS = [1, 3, 7]  # non-contiguous on purpose
CAT_NAMES = ["cat", "dog", "bird"]
IMAGES = {10: (60, 80), 11: (40, 40), 12: (120, 130)}  # id: (H, W); image 12 can hold a "large" object


def _rect(hw, r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros(hw, bool)
    m[r0:r1, c0:c1] = True
    return m


def _disc(hw, cy, cx, r) -> np.ndarray:
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


# (image_id, category index, mask) of every ground-truth object.
GT_OBJECTS = [
    (10, 0, _rect(IMAGES[10], 5, 25, 5, 30)),
    (10, 1, _disc(IMAGES[10], 35, 55, 20)),  # medium
    (10, 0, _rect(IMAGES[10], 45, 58, 2, 12)),
    (11, 2, _rect(IMAGES[11], 3, 9, 3, 10)),  # small
    (11, 1, _disc(IMAGES[11], 25, 25, 10)),
    (12, 0, _rect(IMAGES[12], 10, 115, 10, 120)),  # large
    (12, 2, _disc(IMAGES[12], 20, 110, 6)),
]


def make_gt(polygon_first: bool = True) -> dict:
    """GT dict without "info"/"licenses"; the first object as a polygon, the rest as RLE."""
    anns = []
    for i, (img, cls, m) in enumerate(GT_OBJECTS):
        rle = encode_masks(m[None])[0]
        seg = rle
        if polygon_first and i == 0:
            r0, c0 = np.argwhere(m).min(0)
            r1, c1 = np.argwhere(m).max(0) + 1
            seg = [[float(c0), float(r0), float(c1), float(r0), float(c1), float(r1), float(c0), float(r1)]]
        anns.append({"id": i + 1, "image_id": img, "category_id": CAT_IDS[cls], "segmentation": seg,
                     "area": float(m.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 0})
    return {
        "images": [{"id": k, "height": h, "width": w, "file_name": f"{k}.png"} for k, (h, w) in IMAGES.items()],
        "annotations": anns,
        "categories": [{"id": c, "name": n} for c, n in zip(CAT_IDS, CAT_NAMES)],
    }


def make_results() -> list[dict]:
    """Imperfect detections: shifted masks, a duplicate, false positives, a miss, spread scores."""
    per_image: dict[int, list[tuple[np.ndarray, int, float]]] = {k: [] for k in IMAGES}
    shifts = [(1, 2), (0, 0), (3, -1), (0, 1), (2, 2), (4, 6), (0, 0)]
    scores = [0.9, 0.75, 0.4, 0.65, 0.3, 0.85, 0.2]
    for (img, cls, m), (dy, dx), s in zip(GT_OBJECTS, shifts, scores):
        if img == 11 and cls == 2:
            continue  # missed
        per_image[img].append((np.roll(m, (dy, dx), axis=(0, 1)), cls, s))
    per_image[10].append((np.roll(GT_OBJECTS[0][2], (6, 6), axis=(0, 1)), 0, 0.5))  # loose duplicate
    per_image[10].append((_rect(IMAGES[10], 30, 50, 60, 78), 0, 0.6))  # false positive
    per_image[11].append((GT_OBJECTS[4][2], 2, 0.7))  # right mask, wrong class
    per_image[12].append((_disc(IMAGES[12], 80, 40, 15), 1, 0.55))  # false positive
    out = []
    for img, dets in per_image.items():
        masks = np.stack([d[0] for d in dets])
        out += detections_to_coco(img, masks, np.array([d[1] for d in dets]), np.array([d[2] for d in dets]), CAT_IDS)
    return out


def cocoeval_on_files(tmp_path: Path, gt: dict, results: list[dict], cat_ids=None) -> np.ndarray:
    """pycocotools run directly, from JSON files, as its README does."""
    gt_file, res_file = tmp_path / "gt.json", tmp_path / "res.json"
    gt_file.write_text(json.dumps(gt))
    res_file.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(res_file)), iouType="segm")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def _expected(stats: np.ndarray) -> dict:
    return {k: (None if v < 0 else v * 100) for k, v in zip(SUMMARY_KEYS, stats[:6])}


def test_matches_cocoeval_run_directly(tmp_path: Path) -> None:
    gt, results = make_gt(), make_results()
    got = evaluate(gt, results)
    want = _expected(cocoeval_on_files(tmp_path, gt, results))
    assert 0 < got["AP"] < 100
    for key in SUMMARY_KEYS:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    assert set(got["per_class"]) == set(CAT_NAMES)


def test_per_class_ap_matches_cocoeval_restricted_to_the_class(tmp_path: Path) -> None:
    gt, results = make_gt(), make_results()
    got = evaluate(gt, results, class_names=["c1", "c3", "c7"])["per_class"]
    for cat, name in zip(CAT_IDS, ["c1", "c3", "c7"]):
        stats = cocoeval_on_files(tmp_path, gt, results, cat_ids=[cat])
        assert got[name] == pytest.approx(stats[0] * 100, abs=1e-9), name
    assert len({round(v, 6) for v in got.values()}) > 1  # the classes really differ


def test_perfect_predictions_score_100() -> None:
    gt = make_gt(polygon_first=False)
    results = []
    for img, cls, m in GT_OBJECTS:
        results += detections_to_coco(img, m[None], np.array([cls]), np.array([1.0]), CAT_IDS)
    got = evaluate(gt, results)
    for key in SUMMARY_KEYS:
        assert got[key] == pytest.approx(100.0), key
    assert all(v == pytest.approx(100.0) for v in got["per_class"].values())


def test_empty_results_score_zero(tmp_path: Path) -> None:
    got = evaluate(make_gt(), [])
    for key in SUMMARY_KEYS:
        assert got[key] == 0.0, key
    assert got["per_class"] == dict.fromkeys(CAT_NAMES, 0.0)


def test_gt_from_path_and_inputs_are_not_modified(tmp_path: Path) -> None:
    gt, results = make_gt(), make_results()
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    before_gt, before_res = json.dumps(gt), json.dumps(results)
    assert evaluate(path, results) == evaluate(gt, results)
    assert json.dumps(gt) == before_gt and json.dumps(results) == before_res


def test_missing_area_and_iscrowd_are_filled() -> None:
    gt, results = make_gt(), make_results()
    bare = json.loads(json.dumps(gt))
    for ann in bare["annotations"]:
        del ann["area"], ann["iscrowd"]
    a, b = evaluate(gt, results), evaluate(bare, results)
    for key in SUMMARY_KEYS:
        assert a[key] == pytest.approx(b[key]), key


def test_no_gt_in_an_area_range_is_none() -> None:
    gt = make_gt()
    # Only small objects, and none of class "dog".
    gt["annotations"] = [a for a in gt["annotations"] if a["area"] < 32 * 32 and a["category_id"] != 3]
    got = evaluate(gt, make_results())
    assert got["APm"] is None and got["APl"] is None and got["APs"] is not None
    assert got["per_class"]["dog"] is None  # no ground truth left for this class


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside pycocotools.mask.decode (numpy 2)
def test_encode_and_detections_to_coco() -> None:
    masks = np.zeros((3, 20, 30), bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 10:20, 0:30] = True
    rles = encode_masks(masks)
    assert all(isinstance(r["counts"], str) and r["size"] == [20, 30] for r in rles)
    json.dumps(rles)
    np.testing.assert_array_equal(mask_utils.decode(rles).transpose(2, 0, 1).astype(bool), masks)
    assert encode_masks(np.zeros((0, 4, 4), bool)) == []
    dets = detections_to_coco(5, masks, np.array([0, 2, 1]), np.array([0.9, 0.5, 0.1], np.float32), CAT_IDS)
    assert [d["category_id"] for d in dets] == [1, 7, 3]
    assert dets[0]["bbox"] == [3.0, 2.0, 6.0, 3.0] and dets[1]["bbox"] == [0.0, 10.0, 30.0, 10.0]
    assert dets[2]["bbox"] == [0.0, 0.0, 0.0, 0.0]  # empty mask
    assert dets[0]["image_id"] == 5 and dets[0]["score"] == pytest.approx(0.9)
    assert detections_to_coco(5, np.zeros((0, 20, 30), bool), np.zeros(0), np.zeros(0), CAT_IDS) == []


def test_bad_inputs() -> None:
    gt, results = make_gt(), make_results()
    with pytest.raises(BadInputError):
        evaluate(gt, results + [dict(results[0], image_id=999)])
    with pytest.raises(BadInputError):
        evaluate(gt, results + [dict(results[0], category_id=2)])
    with pytest.raises(BadInputError):
        evaluate(gt, results, class_names=["a"])
    with pytest.raises(BadInputError):
        evaluate({"images": []}, results)
    with pytest.raises(BadInputError):
        evaluate("/nonexistent/gt.json", results)
    with pytest.raises(BadInputError):
        detections_to_coco(1, np.ones((1, 4, 4), bool), np.array([3]), np.array([0.5]), CAT_IDS)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encode_masks_from_boxes_equals_pycocotools_on_whole_frames(seed: int) -> None:
    # encode_masks copies only each mask's box: the reference is pycocotools on the full frames,
    # with masks touching every border, an empty one and a full one.
    rng = np.random.default_rng(seed)
    h, w = 37, 53
    masks = np.zeros((6, h, w), bool)
    for k in range(4):
        y0, x0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
        y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
        masks[k, y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > 0.3
    masks[0, 0, :] = masks[0, -1, :] = masks[0, :, 0] = masks[0, :, -1] = True
    masks[5] = True  # masks[4] stays empty
    ref = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    got = encode_masks(masks)
    assert [r["counts"] for r in got] == [r["counts"].decode("ascii") for r in ref]
    # Caller-given boxes (the runtime passes the ones it already has) may be loose or fractional:
    # only containment matters.
    loose = np.tile(np.array([[-3.5, -1.0, w + 2.0, h + 0.5]]), (len(masks), 1))
    assert encode_masks(masks, loose) == got
    from solo_deploy.evaluation.coco_eval import masks_to_boxes

    frac = masks_to_boxes(masks) + np.array([0.4, 0.7, -0.6, -0.3], np.float32)  # floor/ceil cover them
    assert encode_masks(masks, frac) == got
    with pytest.raises(BadInputError, match="expected boxes"):
        encode_masks(masks, loose[:2])


def test_encode_masks_run_lengths_match_pycocotools_on_many_shapes() -> None:
    # Boxes that span every row (runs continue across columns), touch the last pixel, hold one
    # pixel, or a single row or column: the run lengths come from the box alone.
    rng = np.random.default_rng(11)
    for h, w in [(1, 1), (1, 7), (6, 1), (9, 13), (16, 5)]:
        masks = rng.random((40, h, w)) > rng.uniform(0.1, 0.9, (40, 1, 1))
        masks[0] = True
        masks[1] = False
        masks[2, -1, -1] = True
        for i in range(3, 40, 4):  # some masks confined to a random box
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            keep = np.zeros((h, w), bool)
            keep[y0:rng.integers(y0 + 1, h + 1), x0:rng.integers(x0 + 1, w + 1)] = True
            masks[i] &= keep
        ref = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
        assert [r["counts"] for r in encode_masks(masks)] == [r["counts"].decode("ascii") for r in ref], (h, w)
