"""Tracking (issue #20): ids that persist on a clip with known identities -- objects that cross,
one hidden for a few frames, one whose score dips -- in both association modes; the demo's
ground-truth identities; `run --track` and `eval-track` through the installed script."""
from __future__ import annotations

import json
import threading
from importlib import resources

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli

from solo_deploy.core.instances import Instances
from solo_deploy.errors import BadInputError
from solo_deploy.runtime.tracking import Tracker, TrackerConfig

H, W = 120, 200
NAMES = ("circle", "rectangle", "triangle", "ring")


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _clip(n: int = 40):
    """Per frame: [(identity, mask, score)]. A and B cross (B in front: at the crossing half of A
    is hidden); C is hidden for frames 15-18; D's score dips to 0.15 for frames 20-24."""
    frames = []
    for t in range(n):
        objs = []
        a = _disc(30 + 3.5 * t, 40, 12)
        b = _disc(170 - 3.5 * t, 50, 12)
        objs.append(("A", a & ~b, 0.9))  # B is painted on top: A loses what B covers
        objs.append(("B", b, 0.85))
        if not 15 <= t <= 18:
            objs.append(("C", _disc(20 + 2.0 * t, 95, 9), 0.8))
        objs.append(("D", _disc(185, 100 - 0.5 * t, 8), 0.15 if 20 <= t <= 24 else 0.7))
        frames.append(objs)
    return frames


def _instances(objs) -> Instances:
    masks = np.stack([m for _, m, _ in objs])
    return Instances.from_masks(masks, np.zeros(len(objs), np.int64), np.array([s for *_, s in objs], np.float32),
                                NAMES)


def _track(frames, config: TrackerConfig) -> dict[str, list[int]]:
    tracker = Tracker(config)
    seen: dict[str, list[int]] = {}
    for objs in frames:
        out = tracker.update(_instances(objs))
        assert out.track_ids is not None and len(out.track_ids) == len(objs)
        for (name, _, _), tid in zip(objs, out.track_ids.tolist()):
            seen.setdefault(name, []).append(tid)
    return seen


@pytest.mark.parametrize("match", ["mask", "box"])
def test_identities_survive_crossing_hiding_and_a_score_dip(match):
    seen = _track(_clip(), TrackerConfig(match=match))
    for name, ids in seen.items():
        assert len(set(ids)) == 1 and ids[0] >= 1, f"{name} changed id or went untracked: {ids}"
    assert len({ids[0] for ids in seen.values()}) == 4  # four objects, four tracks
    assert len(seen["C"]) == 36  # absent for 4 frames, then back under its old id


def test_a_track_ends_after_its_buffer_and_low_scores_start_nothing():
    frames = [[("A", _disc(50, 50, 10), 0.9), ("faint", _disc(150, 60, 10), 0.15)] for _ in range(3)]
    frames += [[("faint", _disc(150, 60, 10), 0.15)] for _ in range(4)]  # A unseen for 4 frames
    frames += [[("A", _disc(50, 50, 10), 0.9)], [("A", _disc(50, 50, 10), 0.9)]]
    seen = _track(frames, TrackerConfig(max_misses=3))
    assert seen["faint"] == [-1] * 7  # never confident enough to start a track
    # Its track ended after 3 misses: a new one, confirmed (given an id) when a second frame matches.
    assert seen["A"] == [1, 1, 1, -1, 2]
    kept = _track(frames, TrackerConfig(max_misses=4))
    assert kept["A"] == [1, 1, 1, 1, 1]
    # After the first frame, an instance seen on one frame only (a flicker) never gets an id.
    flicker = [[("A", _disc(50, 50, 10), 0.9)], [("A", _disc(50, 50, 10), 0.9), ("X", _disc(150, 60, 10), 0.8)],
               [("A", _disc(50, 50, 10), 0.9)], [("A", _disc(50, 50, 10), 0.9), ("X", _disc(150, 60, 10), 0.8)]]
    seen = _track(flicker, TrackerConfig())
    assert seen["A"] == [1, 1, 1, 1] and seen["X"] == [-1, -1]


def test_tracker_config_and_records():
    for bad in ({"match": "centroid"}, {"high_thresh": 1.5}, {"low_thresh": 0.5, "high_thresh": 0.3},
                {"max_misses": -1}):
        with pytest.raises(BadInputError):
            TrackerConfig(**bad)
    out = Tracker().update(_instances(_clip()[0]))
    recs = out.to_records()
    assert [r["track_id"] for r in recs] == [1, 2, 3, 4]
    # Cached encodings survive the tracker (the JSON lines and the demo's AP share them).
    inst = _instances(_clip()[1])
    rles = inst.rles
    assert Tracker().update(inst).rles is rles
    assert out[1:].track_ids.tolist() == [2, 3, 4]  # ids follow indexing
    sv = pytest.importorskip("supervision")
    assert isinstance(out.to_supervision(), sv.Detections) and out.to_supervision().tracker_id.tolist() == [1, 2, 3, 4]


def test_the_demo_carries_identities_and_stays_pixel_identical():
    from solo_deploy.data.synthetic import render_video_frames, render_video_tracks
    from solo_deploy.runtime.sources import DemoSource

    plain = list(render_video_frames(n_frames=6))
    tracked = list(render_video_tracks(n_frames=6))
    for (img, masks, labels), (img2, masks2, labels2, ids) in zip(plain, tracked):
        np.testing.assert_array_equal(img, img2)
        np.testing.assert_array_equal(masks, masks2)
        assert labels.tolist() == labels2.tolist() and len(ids) == len(labels)
    src = DemoSource(n_frames=3).open()
    try:
        frame = next(iter(src.frames(threading.Event())))
        assert len(frame.gt) == 3 and frame.gt[2].tolist() == tracked[0][3].tolist()
    finally:
        src.close()


def test_run_track_and_eval_track_through_the_cli(tmp_path):
    pytest.importorskip("motmetrics", reason="eval-track needs py-motmetrics (the track-eval extra)")
    jsonschema = pytest.importorskip("jsonschema")
    lines = tmp_path / "tracks.jsonl"
    proc = run_cli("run", "--video", "demo", "--max-frames", "12", "--track", "--save-json", lines, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "tracking (mask IoU):" in proc.stdout and "% of frame time" in proc.stdout
    schema = json.loads(resources.files("solo_deploy").joinpath("assets/schemas/frames.schema.json").read_text())
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(records) == 12
    for rec in records:
        jsonschema.validate(rec, schema)
        assert all(isinstance(i["track_id"], int) and i["track_id"] >= 1 for i in rec["instances"])
    ids = [{i["track_id"] for i in rec["instances"]} for rec in records]
    assert ids[0] & ids[-1]  # some object is followed from the first frame to the last
    out = tmp_path / "m.json"
    proc = run_cli("eval-track", lines, "--gt", "demo", "--json", out)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(out.read_text())
    assert m["frames"] == 12 and m["num_objects"] > 0 and 0 <= m["idf1"] <= 1 and "MOTA" in proc.stdout
    assert m["recall"] > 0.5  # the shipped model finds most demo objects, so matches happened
    # Lines without track ids (a run without --track) are one line.
    plain = tmp_path / "plain.jsonl"
    assert run_cli("run", "--video", "demo", "--max-frames", "2", "--save-json", plain, "--no-progress").returncode == 0
    assert_one_line_error(run_cli("eval-track", plain), 2, "without track_id", "--track")
    assert_one_line_error(run_cli("eval-track", tmp_path / "nope.jsonl"), 2, "not found")


def test_eval_track_on_a_video_the_user_wrote(tmp_path):
    """`data synthetic --video` writes a video and its ground truth; run --track on the file and
    score it against that file, as a user with their own annotated clip would."""
    pytest.importorskip("motmetrics", reason="eval-track needs py-motmetrics (the track-eval extra)")
    proc = run_cli("data", "synthetic", "--video", "-o", "clip.mp4", "--images", "10", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("run", "--video", "clip.mp4", "--track", "--track-match", "box", "--save-json", "t.jsonl",
                   "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "tracking (box IoU)" in proc.stdout
    proc = run_cli("eval-track", "t.jsonl", "--gt", "clip.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "10 frames" in proc.stdout and "IDF1" in proc.stdout
    assert_one_line_error(run_cli("eval-track", "t.jsonl", "--gt", "t.jsonl", cwd=tmp_path), 2,
                          "not a video ground truth")


@pytest.mark.parametrize("match", ["mask", "box"])
def test_the_trackers_iou_equals_pycocotools(match):
    """The crop-window IoU against pycocotools' mask.iou (RLEs) and box IoU, on random blobs."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(3)
    masks = [_disc(rng.uniform(20, 180), rng.uniform(20, 100), rng.uniform(5, 25)) & (rng.random((H, W)) > 0.3)
             for _ in range(12)]
    dets, trks = _instances([("d", m, 0.9) for m in masks[:7]]), _instances([("t", m, 0.9) for m in masks[7:]])
    tracker = Tracker(TrackerConfig(match=match))
    predicted = [(trks.crops[k], trks.crop_boxes[k]) for k in range(len(trks))]
    got = tracker._iou(dets, np.arange(len(dets)), predicted)
    if match == "mask":
        want = mask_utils.iou(dets.rles, trks.rles, [0] * len(trks))
    else:
        xywh = [[float(v) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])] for b in trks.crop_boxes]
        want = mask_utils.iou([[float(v) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])] for b in dets.crop_boxes],
                              xywh, [0] * len(trks))
    assert (np.asarray(want) > 0).sum() >= 3  # overlapping pairs exist
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_time_counts_source_frames():
    """With frame indices (a live run's drops, --vid-stride), velocity and the buffer count source
    frames: a disc moving 1.5 px per frame seen every 6th frame keeps its id and its velocity is per
    frame; a gap longer than the buffer ends the track even when only one call came between."""
    tracker = Tracker(TrackerConfig(max_misses=10))
    ids = [tracker.update(_instances([("A", _disc(20 + 1.5 * i, 60, 12), 0.9)]), frame_index=i).track_ids[0]
           for i in range(0, 48, 6)]
    assert ids == [1] * 8
    np.testing.assert_allclose(tracker.tracks[0].velocity, [1.5, 0.0], atol=0.2)
    late = tracker.update(_instances([("A", _disc(20 + 1.5 * 60, 60, 12), 0.9)]), frame_index=60)
    assert late.track_ids.tolist() == [-1]  # 18 source frames unseen > 10: a new, unconfirmed track
