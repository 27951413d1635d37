"""Overlay labels (issue #19, item 1: scaled font, filled background, one per instance, none
hidden under another where there is room) and ``Instances.to_supervision()`` (item 4)."""
from __future__ import annotations

import numpy as np
import pytest

from solo_deploy.core.instances import PALETTE, Instances, label_font

NAMES = ("circle", "rectangle", "triangle", "ring")


def _instances(h: int, w: int, boxes: list[tuple[int, int, int, int]], labels: list[int]) -> Instances:
    masks = np.zeros((len(boxes), h, w), bool)
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        masks[k, y0:y1, x0:x1] = True
    scores = np.linspace(0.9, 0.5, len(boxes)).astype(np.float32)
    return Instances.from_masks(masks, np.array(labels), scores, NAMES, category_ids=(3, 5, 8, 13))


def _label_boxes(out: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Pixels of ``out`` that are exactly ``colour`` (a label's filled background; masks are blended)."""
    return (out == np.array(colour, np.uint8)).all(axis=2)


def test_the_font_grows_with_the_image():
    small, photo, hd, uhd = (label_font(*hw)[0] for hw in ((256, 256), (480, 640), (1080, 1920), (2160, 3840)))
    assert small == 0.4 and photo == pytest.approx(480 / 1080)
    assert hd == pytest.approx(1.0) and uhd == pytest.approx(2.0)
    assert label_font(2160, 3840)[1] > label_font(480, 640)[1]  # thicker strokes on large frames


@pytest.mark.parametrize("hw", [(120, 160), (1080, 1920)])
def test_each_instance_gets_one_filled_label_that_stays_on_the_image(hw):
    h, w = hw
    # Two instances at the same corner (their labels would cover each other) and one at the right edge.
    inst = _instances(h, w, [(0, 0, w // 4, h // 4), (0, 0, w // 5, h // 5), (w - 6, h // 2, w, h // 2 + 8)],
                      [0, 1, 3])
    out = inst.plot(np.zeros((h, w, 3), np.uint8), alpha=0.0)
    import cv2

    for label, k in ((0, 0), (1, 1), (3, 2)):
        filled = _label_boxes(out, PALETTE[label])
        n, parts = cv2.connectedComponents(filled.view(np.uint8))
        n -= 1  # the background component
        assert n >= 1, f"no label background for instance {k}"
        biggest = max(range(1, n + 1), key=lambda i: (parts == i).sum())
        ys, xs = np.nonzero(parts == biggest)
        th = (ys.max() - ys.min() + 1)
        # A text line: at least 10 px tall, scaled with the frame.
        assert th >= 10 and (th >= 25 if h >= 1080 else True)
        assert xs.max() < w and ys.max() < h  # clipped into the image, not drawn off it
    # The two corner labels do not overlap: both backgrounds keep their full height.
    a, b = _label_boxes(out, PALETTE[0]), _label_boxes(out, PALETTE[1])
    rows_a, rows_b = set(np.nonzero(a.any(axis=1))[0]), set(np.nonzero(b.any(axis=1))[0])
    assert not rows_a & rows_b


def test_only_the_instances_kept_get_labels():
    inst = _instances(100, 100, [(10, 40, 40, 70), (60, 40, 90, 70)], [0, 2])
    kept = inst[inst.scores > 0.7]
    out = kept.plot(np.zeros((100, 100, 3), np.uint8), alpha=0.0)
    assert _label_boxes(out, PALETTE[0]).any() and not _label_boxes(out, PALETTE[2]).any()


def test_to_supervision_feeds_supervisions_annotators():
    sv = pytest.importorskip("supervision", reason="to_supervision() needs supervision (the supervision extra)")
    inst = _instances(60, 80, [(5, 5, 30, 25), (40, 30, 70, 55)], [2, 0])
    det = inst.to_supervision()
    assert isinstance(det, sv.Detections) and len(det) == 2
    np.testing.assert_array_equal(det.xyxy, [[5, 5, 30, 25], [40, 30, 70, 55]])  # x0, y0, x1, y1
    np.testing.assert_array_equal(det.mask, inst.masks)
    np.testing.assert_array_equal(det.class_id, [2, 0])
    assert det.data["class_name"].tolist() == ["triangle", "circle"] and det.data["category_id"].tolist() == [8, 3]
    np.testing.assert_allclose(det.confidence, inst.scores)
    # supervision's own tools on our results: filtering, a zone, an annotator.
    assert len(det[det.confidence > 0.7]) == 1
    zone = sv.PolygonZone(polygon=np.array([[0, 0], [40, 0], [40, 40], [0, 40]]))
    assert zone.trigger(det).tolist() == [True, False]
    drawn = sv.MaskAnnotator().annotate(np.zeros((60, 80, 3), np.uint8), det)
    assert drawn[10, 10].any() and not drawn[0, 79].any()
    assert len(_instances(10, 10, [], []).to_supervision()) == 0
