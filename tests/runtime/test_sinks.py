"""Sinks: atomic video and JSONL files, the JSONL schema, --show without a display, demo AP."""
from __future__ import annotations

import json
import logging
import time

import cv2
import numpy as np
import pytest
from tests_helpers import count_frames

from solo_deploy.app.run import GroundTruthEval
from solo_deploy.core.instances import Instances
from solo_deploy.errors import BadInputError
from solo_deploy.runtime.sinks import (
    FrameResult,
    JsonlSink,
    ProgressSink,
    ShowSink,
    VideoSink,
    h264_unavailable,
    stream_path,
)
from solo_deploy.runtime.sources import Frame

NAMES = ("circle", "rectangle", "triangle", "ring")
H, W = 48, 64


def _result(i: int, stream: int = 0, k: int = 2) -> FrameResult:
    img = np.full((H, W, 3), 10 * i % 255, np.uint8)
    masks = np.zeros((k, H, W), bool)
    for j in range(k):
        masks[j, 5 + j: 20 + j, 3 + 2 * j: 30] = True
    inst = Instances.from_masks(masks, np.arange(k, dtype=np.int64) % 4, np.linspace(0.9, 0.5, k).astype(np.float32),
                                NAMES)
    frame = Frame(image=img, index=i, t_capture=time.perf_counter(), wall_time=time.time(), media_time=i / 30,
                  stream=stream)
    return FrameResult(frame, inst, source="test")


def _hidden(folder) -> list:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_sink_is_atomic_and_readable(tmp_path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    sink = VideoSink(path, fps=25.0, stream=0)
    for i in range(7):
        sink.write(_result(i))
        sink.write(_result(i, stream=1))  # another stream's frames are not this sink's
    assert not path.exists() and len(_hidden(tmp_path)) == 1  # still a temporary name
    sink.close()
    assert path.exists() and not _hidden(tmp_path)
    cap = cv2.VideoCapture(str(path))
    assert (
        count_frames(path) == 7
        and cap.get(cv2.CAP_PROP_FRAME_WIDTH) == W
        and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    )
    codec = {".avi": "MJPG", ".mp4": "mp4v" if h264_unavailable() else "h264"}[suffix]
    assert sink.summary() == {"video": str(path), "frames": 7, "codec": codec}


def test_video_sink_discard_and_empty(tmp_path, caplog) -> None:
    sink = VideoSink(tmp_path / "a.mp4", fps=30.0)
    sink.write(_result(0))
    sink.discard()
    with caplog.at_level(logging.WARNING):
        VideoSink(tmp_path / "b.mp4", fps=30.0).close()  # no frame: no file that looks like a video
    assert list(tmp_path.iterdir()) == [] and "not written" in caplog.text


def test_video_sink_bad_names(tmp_path) -> None:
    with pytest.raises(BadInputError, match=".mp4"):
        VideoSink(tmp_path / "out.mkv", fps=30)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError, match="not a folder"):
        VideoSink(tmp_path / "file" / "out.mp4", fps=30)
    assert stream_path(tmp_path / "o.mp4", 1, 1) == tmp_path / "o.mp4"
    assert stream_path(tmp_path / "o.mp4", 1, 3) == tmp_path / "o_1.mp4"


def test_jsonl_sink_schema_and_atomicity(tmp_path) -> None:
    from pycocotools import mask as mask_utils

    path = tmp_path / "out.jsonl"
    sink = JsonlSink(path)
    results = [_result(i, k=i % 3) for i in range(5)]
    for r in results:
        sink.write(r)
    assert not path.exists()
    sink.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 5 and not _hidden(tmp_path)
    for line, r in zip(lines, results):
        rec = json.loads(line)
        assert rec["schema_version"] == 2 and rec["frame"] == r.frame.index and rec["stream"] == 0
        assert rec["timestamp"] == pytest.approx(r.frame.index / 30, abs=1e-6) and (rec["height"], rec["width"]) == (
            H,
            W,
        )
        assert len(rec["instances"]) == len(r.instances)
        for j, ins in enumerate(rec["instances"]):
            # COCO's conventions: category ids 1..C (this model's), [x, y, w, h] boxes, the name beside the id.
            assert ins["category_name"] == NAMES[r.instances.labels[j]]
            assert ins["category_id"] == r.instances.labels[j] + 1
            assert ins["score"] == pytest.approx(float(r.instances.scores[j]), abs=1e-5)
            m = mask_utils.decode(ins["segmentation"]).astype(bool)
            assert ins["area"] == m.sum()
            np.testing.assert_array_equal(m, r.instances.masks[j])
            ys, xs = np.nonzero(m)
            assert ins["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
    sink2 = JsonlSink(tmp_path / "gone.jsonl")
    sink2.write(results[1])
    sink2.discard()
    assert not (tmp_path / "gone.jsonl").exists() and not _hidden(tmp_path)


def test_show_without_display_warns_once(monkeypatch, caplog) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    with caplog.at_level(logging.WARNING):
        sink = ShowSink()
        for i in range(3):
            sink.write(_result(i))
        sink.close()
    assert not sink.enabled and caplog.text.count("no display") == 1


def test_overlay_is_drawn_once() -> None:
    r = _result(1)
    a = r.overlay
    assert a is r.overlay and a.shape == (H, W, 3) and not np.array_equal(a, r.frame.image)


def test_progress_sink_counts() -> None:
    sink = ProgressSink(total=3, disable=True)
    for i in range(3):
        sink.write(_result(i))
    assert sink.count == 3
    sink.close()


def test_ground_truth_eval_perfect_and_empty() -> None:
    sink = GroundTruthEval(NAMES)
    for i in range(3):
        r = _result(i, k=2)
        r.frame.gt = (r.instances.masks.astype(np.uint8), r.instances.labels)
        sink.write(r)
    sink.write(_result(9))  # no ground truth: not evaluated
    sink.close()
    assert sink.metrics["frames"] == 3 and sink.metrics["AP"] == pytest.approx(100.0)
    empty = GroundTruthEval(NAMES)
    empty.close()
    assert empty.summary() is None


def test_plot_blends_exactly_the_mask_pixels_higher_score_on_top() -> None:
    from solo_deploy.core.instances import PALETTE, Instances

    h, w = 40, 60
    image = np.full((h, w, 3), 100, np.uint8)
    masks = np.zeros((2, h, w), bool)
    masks[0, 5:25, 5:35] = True
    masks[1, 15:35, 20:50] = True
    inst = Instances.from_masks(masks, np.array([0, 1]), np.array([0.9, 0.4], np.float32), ("a", "b"))
    out = inst.plot(image, alpha=0.5, labels=False)
    inner0, inner1, overlap = (8, 8), (32, 45), (20, 30)  # away from the white outlines
    assert np.abs(out[inner0].astype(int) - (100 + np.array(PALETTE[0])) / 2).max() <= 1
    assert np.abs(out[inner1].astype(int) - (100 + np.array(PALETTE[1])) / 2).max() <= 1
    assert np.abs(out[overlap].astype(int) - (100 + np.array(PALETTE[0])) / 2).max() <= 1  # 0.9 wins
    far = np.ones((h, w), bool)  # pixels well away from every mask are untouched
    far[3:38, 3:53] = False
    assert (out[far] == 100).all()
    outline = (out == 255).all(axis=2)
    assert outline[5, 10] and outline[24, 10] and not outline[8, 8]


def test_plot_keeps_colours_and_outlines_apart_beyond_254_instances() -> None:
    # Past 254 instances the overlay leaves the uint8 lookup table for a uint16 id map: instance
    # 290 must still get its own colour, with an outline against its neighbour.
    from solo_deploy.core.instances import PALETTE, Instances

    k, side, pitch, cols = 300, 6, 7, 20
    h, w = pitch * (k // cols), pitch * cols
    masks = np.zeros((k, h, w), bool)
    for i in range(k):
        y, x = pitch * (i // cols), pitch * (i % cols)
        masks[i, y:y + side, x:x + side] = True
    labels = np.arange(k) % len(PALETTE)
    inst = Instances.from_masks(masks, labels, np.linspace(1, 0.1, k).astype(np.float32), [f"c{i}" for i in range(8)])
    out = inst.plot(np.full((h, w, 3), 100, np.uint8), alpha=0.5, labels=False)
    for i in (3, 290, 299):
        y, x = pitch * (i // cols) + side // 2, pitch * (i % cols) + side // 2
        want = (100 + np.array(PALETTE[labels[i]])) / 2
        assert np.abs(out[y, x].astype(int) - want).max() <= 1, i
        assert (out[y, x - side // 2] == 255).all()  # its left edge is outlined


def test_json_lines_and_coco_results_share_one_encoding() -> None:
    # A demo run writes JSON lines and evaluates against the ground truth: both take the masks'
    # RLEs from the instances, encoded once, and they decode back to the masks.
    from pycocotools import mask as mask_utils

    from solo_deploy.core.instances import Instances
    from solo_deploy.runtime.sinks import instances_to_json

    masks = np.zeros((2, 12, 16), bool)
    masks[0, 2:6, 3:9] = True
    masks[1, 5:12, 10:16] = True
    inst = Instances.from_masks(masks, np.array([0, 1]), np.array([0.9, 0.5], np.float32), ("a", "b"))
    lines, coco = instances_to_json(inst), inst.to_coco(image_id=3)
    assert all(a["segmentation"] is b["segmentation"] for a, b in zip(lines, coco))
    assert [{**a, "image_id": 3} for a in lines] == coco  # one record convention: COCO results plus the name
    np.testing.assert_array_equal(mask_utils.decode([c["segmentation"] for c in coco]).transpose(2, 0, 1), masks)
