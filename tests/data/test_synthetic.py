"""Synthetic data: determinism, statistics, visible masks, COCO/video export."""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from solo_deploy.data import Sample
from solo_deploy.data.coco import CocoDataset
from solo_deploy.data.synthetic import (
    SPLITS,
    SyntheticConfig,
    SyntheticDataset,
    render_sample,
    render_video_frames,
    sample_rng,
    synthetic_coco_dict,
    write_coco,
    write_video,
)
from solo_deploy.errors import BadInputError

CFG = SyntheticConfig()


@pytest.fixture(scope="module")
def many() -> list[Sample]:
    """300 training samples, shared by the statistics tests (~1 s)."""
    ds = SyntheticDataset("train", count=300)
    return [ds[i] for i in range(len(ds))]


def test_sample_types_and_shapes() -> None:
    s = SyntheticDataset("val")[0]
    assert s.image_bgr.dtype == np.uint8 and s.image_bgr.shape == (256, 256, 3)
    assert s.masks.dtype == np.uint8 and s.masks.shape[1:] == (256, 256)
    assert s.labels.dtype == np.int64 and s.labels.shape == (s.masks.shape[0],)
    assert s.image_id == 1
    assert set(np.unique(s.masks)) <= {0, 1}


def test_determinism_per_index() -> None:
    ds = SyntheticDataset("train")
    a, b = ds[17], SyntheticDataset("train")[17]
    assert np.array_equal(a.image_bgr, b.image_bgr)
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.labels, b.labels)
    # Independent of access order / other indices.
    ds[3]
    c = ds[17]
    assert np.array_equal(a.image_bgr, c.image_bgr)
    assert not np.array_equal(a.image_bgr, ds[18].image_bgr)
    assert not np.array_equal(a.image_bgr, SyntheticDataset("val", count=18)[17].image_bgr)
    img, masks, _ = render_sample(sample_rng(SPLITS["train"].seed, 17), CFG)
    assert np.array_equal(img, a.image_bgr) and np.array_equal(masks, a.masks)


def test_splits_are_fixed() -> None:
    assert len(SyntheticDataset("train")) == SPLITS["train"].count == 4000
    assert len(SyntheticDataset("val")) == 200
    assert len(SyntheticDataset("calib")) == 128
    assert len({sp.seed for sp in SPLITS.values()}) == len(SPLITS)
    with pytest.raises(BadInputError, match="unknown synthetic split"):
        SyntheticDataset("nope")
    with pytest.raises(IndexError):
        SyntheticDataset("val")[200]


def test_class_frequencies_follow_config(many: list[Sample]) -> None:
    labels = np.concatenate([s.labels for s in many])
    assert labels.min() >= 0 and labels.max() < CFG.num_classes
    freq = np.bincount(labels, minlength=CFG.num_classes) / len(labels)
    expected = np.asarray(CFG.class_freqs) / sum(CFG.class_freqs)
    assert np.all(np.abs(freq - expected) < 0.07), (freq, expected)
    assert freq[0] > freq[1] > freq[2] > freq[3]  # uneven on purpose


def test_visible_masks_disjoint_nonempty(many: list[Sample]) -> None:
    for s in many[:100]:
        if len(s.masks):
            assert s.masks.sum(0).max() <= 1  # later objects occlude earlier ones
            assert s.masks.reshape(len(s.masks), -1).sum(1).min() >= CFG.min_visible_px
    counts = [len(s.labels) for s in many]
    assert min(counts) >= 1 and max(counts) <= CFG.objects_per_image[1] and np.mean(counts) > 3


def test_sizes_span_small_to_large_and_thin_bars(many: list[Sample]) -> None:
    sizes, bars, rings_with_hole = [], 0, 0
    for s in many:
        for m, lab in zip(s.masks, s.labels):
            sizes.append(np.sqrt(m.sum()))
            cnts, hier = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            name = CFG.class_names[lab]
            if name == "rectangle" and len(cnts) == 1 and m.sum() > 30:
                (_, _), (rw, rh), _ = cv2.minAreaRect(cnts[0])
                if max(rw, rh) / max(1.0, min(rw, rh)) >= 4:
                    bars += 1
            if name == "ring" and hier is not None and (hier[0][:, 3] >= 0).any():
                rings_with_hole += 1
    sizes = np.asarray(sizes)
    assert sizes.min() < 8 and sizes.max() > 90
    assert np.mean(sizes < 20) > 0.3  # log-uniform sizes: small objects are frequent
    assert bars >= 10 and rings_with_hole >= 10


def test_generation_speed() -> None:
    ds = SyntheticDataset("val")
    ds[0]
    t = time.perf_counter()
    for i in range(50):
        ds[i]
    per = (time.perf_counter() - t) / 50
    assert per < 0.02, f"{per * 1e3:.1f} ms per sample"  # ~2-3 ms normally; generous for shared CPUs


def test_config_validation() -> None:
    with pytest.raises(BadInputError):
        SyntheticConfig(class_names=("circle",), class_freqs=(0.5, 0.5))
    with pytest.raises(BadInputError):
        SyntheticConfig(class_names=("hexagon",), class_freqs=(1.0,))
    small = SyntheticConfig(image_hw=(64, 96), class_names=("ring", "circle"), class_freqs=(1, 1))
    img, masks, labels = render_sample(np.random.default_rng(0), small)
    assert img.shape == (64, 96, 3) and masks.shape[1:] == (64, 96) and set(labels) <= {0, 1}


def test_write_coco_round_trip(tmp_path: Path) -> None:
    path = write_coco(tmp_path / "set", "val", 4)
    assert path == tmp_path / "set" / "annotations.json"
    ds = CocoDataset(tmp_path / "set")
    assert ds.class_names == CFG.class_names and ds.cat_ids == [1, 2, 3, 4]
    assert ds.image_ids == [1, 2, 3, 4]
    ref = SyntheticDataset("val", count=4)
    for i in range(4):
        a, b = ref[i], ds[i]
        assert a.image_id == b.image_id
        assert np.array_equal(a.image_bgr, b.image_bgr)  # PNG is lossless
        assert np.array_equal(a.masks, b.masks) and np.array_equal(a.labels, b.labels)
    on_disk = json.loads(path.read_text())
    in_memory = synthetic_coco_dict("val", 4)
    assert on_disk == json.loads(json.dumps(in_memory))
    ann = on_disk["annotations"][0]
    assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0 and len(ann["bbox"]) == 4
    assert ann["id"] == 1 and ann["area"] > 0
    # The GT dict works with pycocotools as is.
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = in_memory
    coco.createIndex()
    assert len(coco.getAnnIds()) == len(in_memory["annotations"])


def test_write_video(tmp_path: Path) -> None:
    for suffix in (".mp4", ".avi"):
        video, gt = write_video(tmp_path / f"demo{suffix}", n_frames=12, seed=7)
        assert video.is_file() and gt == video.with_suffix(".json")
        cap = cv2.VideoCapture(str(video))
        frames = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (256, 256, 3)
            frames += 1
        cap.release()
        assert frames == 12
        coco = json.loads(gt.read_text())
        assert [im["frame_index"] for im in coco["images"]] == list(range(12))
        assert {a["image_id"] for a in coco["annotations"]} <= {im["id"] for im in coco["images"]}
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind
    with pytest.raises(BadInputError):
        write_video(tmp_path / "demo.gif", n_frames=2)


def test_video_motion_is_smooth_and_tracks_stable(tmp_path: Path) -> None:
    frames = list(render_video_frames(seed=3, n_frames=8))
    again = list(render_video_frames(seed=3, n_frames=8))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(frames, again))
    assert not np.array_equal(frames[0][0], frames[1][0])  # things move
    _, gt = write_video(tmp_path / "v.avi", n_frames=8, seed=3)
    anns = json.loads(gt.read_text())["annotations"]
    by_track: dict[int, list[tuple[int, float, float, int]]] = {}
    for a in anns:
        x, y, w, h = a["bbox"]
        by_track.setdefault(a["track_id"], []).append((a["image_id"], x + w / 2, y + h / 2, a["category_id"]))
    assert by_track
    for track in by_track.values():
        assert len({t[3] for t in track}) == 1  # a track never changes class
        for (i0, x0, y0, _), (i1, x1, y1, _) in itertools.pairwise(track):
            if i1 == i0 + 1 and len(track) == 8:  # unoccluded tracks: box centres move a few px per frame
                assert abs(x1 - x0) < 6 and abs(y1 - y0) < 6
