"""Instances of one image and the box and COCO RLE helpers they need (torch-free, numpy + OpenCV
for drawing + pycocotools for RLE compression, each loaded on use).

Shared by the runtime (predictor, sinks), evaluation (COCO results) and the API.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from .._lazy import lazy_import
from ..errors import BadInputError
from ..preprocess import as_bgr_uint8

mask_utils = lazy_import("pycocotools.mask")
cv2 = lazy_import("cv2")

__all__ = ["PALETTE", "Instances", "detections_to_coco", "encode_crops", "encode_masks", "masks_to_boxes",
           "masks_to_crops"]


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """bool (K, H, W) -> float32 (K, 4) x0, y0, x1, y1 (exclusive ends); zeros for empty masks."""
    k = masks.shape[0]
    if k == 0:
        return np.zeros((0, 4), np.float32)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    has = rows.any(axis=1)
    y0 = np.where(has, rows.argmax(axis=1), 0)
    y1 = np.where(has, rows.shape[1] - rows[:, ::-1].argmax(axis=1), 0)
    x0 = np.where(has, cols.argmax(axis=1), 0)
    x1 = np.where(has, cols.shape[1] - cols[:, ::-1].argmax(axis=1), 0)
    return np.stack([x0, y0, x1, y1], 1).astype(np.float32)


def _rle_counts(crop: np.ndarray, x0: int, y0: int, h: int, w: int) -> list[int]:
    """Uncompressed COCO RLE counts (column-major runs, zeros first) of an (h, w) mask that is
    ``crop`` (bool (hc, wc)) at rows y0.., columns x0.. and zero elsewhere."""
    hc, wc = crop.shape
    if crop.size == 0:
        return [h * w]
    # Each image column is a crop row of crop.T, padded with a zero at both ends; a change
    # between padded entries j and j+1 sits at image row y0 + j.
    padded = np.zeros((wc, hc + 2), np.int8)
    padded[:, 1:-1] = crop.T
    col, row = np.nonzero(np.diff(padded, axis=1))  # sorted by column, then row: by position
    pos = (x0 + col) * h + y0 + row
    # A run that ends at the bottom of a column while the next column starts with 1 (only when
    # the box spans all rows) is no change at all: drop such equal end/start pairs.
    same = pos[1:] == pos[:-1]
    if same.any():
        keep = np.ones(pos.shape, bool)
        keep[1:][same] = False
        keep[:-1][same] = False
        pos = pos[keep]
    if pos.size and pos[-1] == h * w:  # ones up to the last pixel: no trailing zero run
        pos = pos[:-1]
    return np.diff(pos, prepend=0, append=h * w).tolist()


def encode_crops(crops: Sequence[np.ndarray], boxes: np.ndarray, image_hw: tuple[int, int]) -> list[dict[str, Any]]:
    """Masks given as crops -> COCO compressed RLEs ``{"size": [H, W], "counts": str}``.

    ``crops[k]`` bool (y1 - y0, x1 - x0) is mask k inside its box ``boxes[k]`` (int x0, y0, x1, y1,
    exclusive ends, inside the (H, W) image); the mask is False outside the box. Run lengths come
    from the crops only (pycocotools' encoder scans whole frames: 20 masks of a 1080p frame are
    40 MB per frame); pycocotools compresses them into its string format.
    """
    h, w = int(image_hw[0]), int(image_hw[1])
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    if len(crops) != boxes.shape[0]:
        raise BadInputError(f"{len(crops)} crops but {boxes.shape[0]} boxes")
    if len(crops) == 0:
        return []
    counts = [_rle_counts(np.asarray(c, bool), x0, y0, h, w) for c, (x0, y0, _, _) in zip(crops, boxes.tolist())]
    rles = mask_utils.frPyObjects([{"size": [h, w], "counts": c} for c in counts], h, w)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")  # bytes are not JSON-serialisable
    return rles


def masks_to_crops(masks: np.ndarray, boxes: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """bool (K, H, W) -> (crops, int64 (K, 4) boxes): each mask inside ``boxes`` (x0, y0, x1, y1,
    exclusive; may be fractional, whole pixels covering them are taken) or, when omitted, its
    tight box."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise BadInputError(f"expected masks (K, H, W), got shape {masks.shape}")
    k, h, w = masks.shape
    if boxes is None:
        boxes = masks_to_boxes(masks)
    boxes = np.asarray(boxes, np.float64)
    if boxes.shape != (k, 4):
        raise BadInputError(f"expected boxes (K={k}, 4) for masks {masks.shape}, got {boxes.shape}")
    lo = np.clip(np.floor(boxes[:, :2]), 0, [w, h]).astype(np.int64)
    hi = np.maximum(np.clip(np.ceil(boxes[:, 2:]), 0, [w, h]).astype(np.int64), lo)
    ibox = np.concatenate([lo, hi], axis=1)
    crops = [np.ascontiguousarray(masks[i, y0:y1, x0:x1], dtype=bool)
             for i, (x0, y0, x1, y1) in enumerate(ibox.tolist())]
    return crops, ibox


def encode_masks(masks: np.ndarray, boxes: np.ndarray | None = None) -> list[dict[str, Any]]:
    """bool (K, H, W) -> K COCO compressed RLEs ``{"size": [H, W], "counts": str}``.

    ``boxes`` (K, 4) x0, y0, x1, y1 (exclusive) must contain each mask; computed when omitted.
    """
    masks = np.asarray(masks)
    crops, ibox = masks_to_crops(masks, boxes)
    return encode_crops(crops, ibox, masks.shape[1:])


def detections_to_coco(
    image_id: int,
    masks: np.ndarray | None,
    labels: np.ndarray,
    scores: np.ndarray,
    cat_ids: Sequence[int],
    rles: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One image's detections in the COCO results format.

    ``masks`` bool (K, H, W) on the original image (unused when ``rles`` is given), ``labels``
    (K,) contiguous class indices into ``cat_ids`` (the dataset's category ids), ``scores`` (K,).
    The bbox [x, y, w, h] is the tight box of each mask ([0, 0, 0, 0] for an empty mask).
    ``rles``: the masks' encoding
    (``encode_masks``) when the caller already has it.
    """
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    rles = encode_masks(masks) if rles is None else rles
    if not (len(rles) == labels.shape[0] == scores.shape[0]):
        raise BadInputError(f"{len(rles)} masks, {labels.shape[0]} labels and {scores.shape[0]} scores differ")
    if labels.size and (labels.min() < 0 or labels.max() >= len(cat_ids)):
        raise BadInputError(f"class index out of range for {len(cat_ids)} categories: {labels.tolist()}")
    boxes = mask_utils.toBbox(rles) if rles else np.zeros((0, 4))
    return [
        {
            "image_id": int(image_id),
            "category_id": int(cat_ids[int(lab)]),
            "segmentation": rle,
            "score": float(score),
            "bbox": [float(v) for v in box],
        }
        for rle, lab, score, box in zip(rles, labels, scores, boxes)
    ]


# Distinct, colour-blind friendly overlay colours (BGR), cycled by class.
PALETTE = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
           (204, 121, 167), (120, 120, 120)]



def track_colours(track_ids: np.ndarray) -> np.ndarray:
    """uint8 (K, 3) BGR: a stable colour per track id (golden-ratio hues, so that consecutive ids
    differ); grey for -1 (no track)."""
    ids = np.asarray(track_ids, np.int64).reshape(-1)
    hue = ((ids * 0.618033988749895) % 1.0 * 180).astype(np.uint8)  # OpenCV's hue is 0..179
    hsv = np.stack([hue, np.full_like(hue, 200), np.full_like(hue, 235)], axis=-1)[None]
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0]
    out[ids < 0] = PALETTE[-1]
    return out


# Pixels per strip of Instances.plot's frame-sized temporaries (an id map, a colour image, a blend):
# 4 MP keeps a 1080p frame in one strip and a 20000 x 20000 frame's temporaries near 100 MB.
_PLOT_STRIP_PIXELS = 1 << 22


def label_font(h: int, w: int) -> tuple[float, int]:
    """(OpenCV font scale, stroke thickness) for labels on an (h, w) image: text about 2 % of the
    shorter side tall (13 px at 640, 22 px at 1080p), never under 10 px (small images)."""
    scale = max(0.4, min(h, w) / 1080 * 1.0)
    return scale, max(1, round(scale * 1.5))


@dataclass(kw_only=True, eq=False)
class Instances:
    """Instances of one image, each mask kept as the crop of its box.

    ``labels`` int64 (K,) class indices into ``class_names``; ``scores`` float32 (K,), descending;
    ``image_hw`` the original image's (H, W); ``crops[k]`` bool (y1 - y0, x1 - x0), mask k inside
    ``crop_boxes[k]`` = int64 x0, y0, x1, y1 (exclusive ends; the tight box, all zero for an empty
    mask). Memory is what the instances cover: 100 instances of a 4000 x 3000 photo as full frames
    would be 1.2 GB. ``masks`` builds the full-frame (K, H, W) array on first use;
    ``Instances.from_masks`` builds instances from one.
    """

    labels: np.ndarray
    scores: np.ndarray
    class_names: tuple[str, ...]
    image_hw: tuple[int, int]
    crops: tuple[np.ndarray, ...]
    crop_boxes: np.ndarray
    # The data set's category id of each class (``ModelMeta.category_ids``); () means 1..C.
    category_ids: tuple[int, ...] = ()
    # int64 (K,) track ids from ``run --track`` (``runtime.tracking``; -1: no track), else None.
    track_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.category_ids = tuple(int(c) for c in self.category_ids)
        if self.category_ids and len(self.category_ids) != len(self.class_names):
            raise BadInputError(f"{len(self.category_ids)} category ids for {len(self.class_names)} classes")
        if self.track_ids is not None:
            self.track_ids = np.asarray(self.track_ids, np.int64).reshape(-1)
            if self.track_ids.shape[0] != len(self.crops):
                raise BadInputError(f"{self.track_ids.shape[0]} track ids for {len(self.crops)} instances")
        self.image_hw = (int(self.image_hw[0]), int(self.image_hw[1]))
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        self.scores = np.asarray(self.scores, np.float32).reshape(-1)
        self.crops = tuple(np.asarray(c, bool) for c in self.crops)
        self.crop_boxes = np.asarray(self.crop_boxes, np.int64).reshape(-1, 4)
        k = int(self.scores.shape[0])
        if not (len(self.crops) == self.crop_boxes.shape[0] == self.labels.shape[0] == k):
            raise BadInputError(f"{len(self.crops)} crops, {self.crop_boxes.shape[0]} boxes, "
                                f"{self.labels.shape[0]} labels and {k} scores differ")
        h, w = self.image_hw
        x0, y0, x1, y1 = self.crop_boxes.T
        if k and ((x0 < 0).any() or (y0 < 0).any() or (x1 > w).any() or (y1 > h).any()):
            raise BadInputError(f"instance boxes reach outside the {w}x{h} image")
        for c, (bx0, by0, bx1, by1) in zip(self.crops, self.crop_boxes.tolist()):
            if c.shape != (by1 - by0, bx1 - bx0):
                raise BadInputError(f"a crop of shape {c.shape} does not fit its box {[bx0, by0, bx1, by1]}")

    @classmethod
    def from_masks(cls, masks: np.ndarray, labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str],
                   image_hw: tuple[int, int] | None = None, category_ids: Sequence[int] = ()) -> Instances:
        """Instances from full-frame bool (K, H, W) masks (cropped to their tight boxes)."""
        masks = np.asarray(masks, bool)
        crops, boxes = masks_to_crops(masks)
        return cls(labels=np.asarray(labels, np.int64), scores=np.asarray(scores, np.float32),
                   class_names=tuple(class_names), image_hw=tuple(image_hw or masks.shape[1:]), crops=crops,
                   crop_boxes=boxes, category_ids=tuple(category_ids))

    @property
    def cat_ids(self) -> tuple[int, ...]:
        """The category id of each class (what the JSON outputs write): ``category_ids`` or 1..C."""
        return self.category_ids or tuple(range(1, len(self.class_names) + 1))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, index: Any) -> Instances:
        """A new ``Instances`` of the selected ones (crops shared, not copied): an integer (one
        instance), a slice, a boolean mask of length K (``inst[inst.scores > 0.5]``) or an integer
        array. The order is the index's."""
        idx = self._positions(index)
        return Instances(labels=self.labels[idx], scores=self.scores[idx], class_names=self.class_names,
                         image_hw=self.image_hw, crops=[self.crops[i] for i in idx.tolist()],
                         crop_boxes=self.crop_boxes[idx], category_ids=self.category_ids,
                         track_ids=None if self.track_ids is None else self.track_ids[idx])

    def with_track_ids(self, track_ids: np.ndarray) -> Instances:
        """These instances with ``track_ids`` (K,); cached encodings (``rles``, ``masks``) are kept
        rather than computed again."""
        out = replace(self, track_ids=track_ids)
        for cached in ("rles", "masks"):
            if cached in self.__dict__:
                out.__dict__[cached] = self.__dict__[cached]
        return out

    def __iter__(self):
        """One single-instance ``Instances`` per instance, in score order."""
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        h, w = self.image_hw
        if not len(self):
            return f"Instances(0 on {w}x{h})"
        counts: dict[str, int] = {}
        for c in self.labels.tolist():
            name = self.class_names[c] if 0 <= c < len(self.class_names) else str(c)
            counts[name] = counts.get(name, 0) + 1
        top = sorted(counts.items(), key=lambda kv: -kv[1])
        what = ", ".join(f"{n} {name}" for name, n in top[:5]) + (", ..." if len(top) > 5 else "")
        return (f"Instances({len(self)} on {w}x{h}: {what}; scores {float(self.scores.max()):.2f}.."
                f"{float(self.scores.min()):.2f})")

    def _positions(self, index: Any) -> np.ndarray:
        k = len(self)
        if isinstance(index, (bool, np.bool_)):
            raise TypeError("Instances cannot be indexed by a single bool; use a boolean mask of length K")
        if isinstance(index, (int, np.integer)):
            if not -k <= int(index) < k:
                raise IndexError(f"instance {int(index)} out of range for {k} instances")
            return np.array([int(index) % k], np.int64)
        if isinstance(index, slice):
            return np.arange(k)[index]
        arr = np.asarray(index)
        if arr.dtype == np.bool_:
            if arr.shape != (k,):
                raise IndexError(f"boolean index of shape {arr.shape} for {k} instances")
            return np.flatnonzero(arr)
        if arr.dtype.kind in "iu" and arr.ndim <= 1:
            arr = arr.reshape(-1).astype(np.int64)
            if arr.size and (arr.min() < -k or arr.max() >= k):
                raise IndexError(f"instance index out of range for {k} instances: {arr.tolist()[:8]}")
            return arr % max(k, 1)
        raise TypeError(f"Instances indices must be integers, slices or boolean masks, not {type(index).__name__}")

    @property
    def boxes(self) -> np.ndarray:
        """float32 (K, 4) x0, y0, x1, y1 (exclusive ends): each mask's tight box."""
        return self.crop_boxes.astype(np.float32)

    def mask(self, k: int) -> np.ndarray:
        """bool (H, W): instance ``k``'s mask on the whole image."""
        out = np.zeros(self.image_hw, bool)
        x0, y0, x1, y1 = self.crop_boxes[k].tolist()
        out[y0:y1, x0:x1] = self.crops[k]
        return out

    @cached_property
    def masks(self) -> np.ndarray:
        """bool (K, H, W), the full-frame masks, built on first use (K x H x W bytes) and kept."""
        out = np.zeros((len(self), *self.image_hw), bool)
        for k, (x0, y0, x1, y1) in enumerate(self.crop_boxes.tolist()):
            out[k, y0:y1, x0:x1] = self.crops[k]
        return out

    @cached_property
    def rles(self) -> list[dict[str, Any]]:
        """COCO compressed RLEs of the masks, from the crops; cached: the JSON lines and the demo's
        evaluation both need them."""
        return encode_crops(self.crops, self.crop_boxes, self.image_hw)

    def to_supervision(self) -> Any:
        """The instances as ``supervision.Detections`` (the ``supervision`` extra), so that its
        annotators, zones and trackers work on them: ``xyxy`` (the tight boxes), ``mask`` bool
        (K, H, W), ``confidence``, ``class_id`` (0-based class indices, as ``labels``), and
        ``data["class_name"]`` and ``data["category_id"]`` (the JSON outputs' COCO ids)."""
        try:
            import supervision as sv
        except ImportError:
            raise BadInputError("Instances.to_supervision() needs supervision: pip install 'solo-deploy[supervision]'"
                                ) from None
        names = np.array([self.class_names[c] for c in self.labels.tolist()], dtype=str)
        ids = np.array([self.cat_ids[c] for c in self.labels.tolist()], dtype=np.int64)
        return sv.Detections(xyxy=self.boxes.reshape(-1, 4), mask=self.masks, confidence=self.scores.copy(),
                             class_id=self.labels.copy(), data={"class_name": names, "category_id": ids},
                             tracker_id=None if self.track_ids is None else self.track_ids.copy())

    def to_records(self) -> list[dict[str, Any]]:
        """The instances as the JSON outputs write them (schema: ``solo_deploy/assets/schemas``), in
        score order: ``category_id`` (the data set's COCO id), ``category_name``, ``score``, ``bbox``
        [x, y, w, h] (COCO's, in pixels: the mask's tight box), ``area`` (mask pixels),
        ``segmentation`` (COCO compressed RLE of the full image) and, for tracked instances,
        ``track_id`` (null for an instance no track took)."""
        if not len(self):
            return []
        ids, boxes = self.cat_ids, self.crop_boxes
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).tolist()
        areas = [int(np.count_nonzero(c)) for c in self.crops]
        out = [{"category_id": int(ids[c]), "category_name": self.class_names[c], "score": round(float(sc), 5),
                "bbox": [float(v) for v in b], "area": a, "segmentation": rle}
               for c, sc, b, a, rle in zip(self.labels.tolist(), self.scores.tolist(), xywh, areas, self.rles)]
        if self.track_ids is not None:
            for rec, t in zip(out, self.track_ids.tolist()):
                rec["track_id"] = t if t >= 1 else None  # ids count from 1; below: no track
        return out

    def to_coco(self, image_id: int = 0, cat_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """COCO results for this image: :meth:`to_records` with ``image_id``; ``cat_ids`` replaces
        the instances' own category ids (evaluation against a data set's ground truth)."""
        recs = self.to_records()
        if cat_ids is not None:
            cat_ids = list(cat_ids)
            if len(cat_ids) != len(self.class_names):
                raise BadInputError(f"{len(cat_ids)} category ids for {len(self.class_names)} classes")
            for r, c in zip(recs, self.labels.tolist()):
                r["category_id"] = int(cat_ids[c])
        return [{"image_id": int(image_id), **r} for r in recs]

    def plot(self, image_bgr: np.ndarray, alpha: float = 0.5, labels: bool = True) -> np.ndarray:
        """A copy of ``image_bgr`` with masks, outlines and class/score labels drawn (BGR uint8)."""
        out = as_bgr_uint8(image_bgr).copy()
        if len(self) == 0:
            return out
        h, w = out.shape[:2]
        if (h, w) != self.image_hw:
            raise BadInputError(f"cannot draw instances of a {self.image_hw[1]}x{self.image_hw[0]} image on a "
                                f"{w}x{h} one")
        colours = (np.array([PALETTE[int(c) % len(PALETTE)] for c in self.labels], np.uint8) if self.track_ids is None
                   else track_colours(self.track_ids))
        back_to_front = np.argsort(self.scores, kind="stable")  # higher scores end on top
        top, bottom = self.crop_boxes[back_to_front, 1], self.crop_boxes[back_to_front, 3]
        rows = max(1, _PLOT_STRIP_PIXELS // w)
        for s0 in range(0, h, rows):
            s1 = min(h, s0 + rows)
            # One row of context each side: the outline at a strip's edge depends on its neighbours.
            c0, c1 = max(0, s0 - 1), min(h, s1 + 1)
            self._plot_strip(out, c0, c1, s0, s1, back_to_front[(top < c1) & (bottom > c0)], colours, alpha)
        if labels:
            self._draw_labels(out, back_to_front, colours)
        return out

    def _draw_labels(self, out: np.ndarray, order: np.ndarray, colours: np.ndarray) -> None:
        """One "class score" label per instance at its box's top-left corner, on a filled box of
        its colour, the font scaled to the image. Labels are placed best score first; one that
        would cover a placed label moves down (or up) a few label heights where that is free."""
        h, w = out.shape[:2]
        scale, thick = label_font(h, w)
        pad = max(1, round(3 * scale))
        placed: list[tuple[int, int, int, int, int, str, int, int]] = []
        for k in order[::-1].tolist():
            x0, y0 = (int(v) for v in self.crop_boxes[k, :2])
            text = f"{self.class_names[int(self.labels[k])]} {float(self.scores[k]):.2f}"
            if self.track_ids is not None and self.track_ids[k] >= 0:
                text = f"#{int(self.track_ids[k])} {text}"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            bw, bh = tw + 2 * pad, th + base + 2 * pad
            # Above the box where there is room, else just inside its top edge; never off the image.
            left = max(0, min(x0, w - bw))
            top = y0 - bh if y0 - bh >= 0 else min(y0, max(0, h - bh))
            for step in (0, 1, 2, 3, -1, -2, -3):
                y = top + step * bh
                if 0 <= y <= h - bh and not any(left < px + pw and px < left + bw and y < py + ph and py < y + bh
                                                 for px, py, pw, ph, *_ in placed):
                    top = y
                    break
            placed.append((left, top, bw, bh, k, text, th, pad))
        for left, top, bw, bh, k, text, th, pad in reversed(placed):  # the best-scoring drawn last, on top
            colour = tuple(int(c) for c in colours[k])
            cv2.rectangle(out, (left, top), (left + bw - 1, top + bh - 1), colour, cv2.FILLED)
            # Dark text on light colours, white on dark ones (ITU-R BT.601 luma of the BGR colour).
            luma = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
            ink = (0, 0, 0) if luma > 150 else (255, 255, 255)
            cv2.putText(out, text, (left + pad, top + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thick,
                        cv2.LINE_AA)

    def _plot_strip(self, out: np.ndarray, c0: int, c1: int, s0: int, s1: int, order: np.ndarray,
                    colours: np.ndarray, alpha: float) -> None:
        """Draw the instances ``order`` (back to front) on rows s0..s1 of ``out``, from an id map of
        rows c0..c1 (the strip and its context rows)."""
        w = out.shape[1]
        small = len(self) < 255  # ids fit a uint8 map: a cv2.LUT gives the colour image
        ids = np.zeros((c1 - c0, w), np.uint8 if small else np.uint16)  # 0 = background, k + 1
        for k in order.tolist():
            x0, y0, x1, y1 = self.crop_boxes[k].tolist()
            a, b = max(y0, c0), min(y1, c1)
            np.copyto(ids[a - c0 : b - c0, x0:x1], k + 1, where=self.crops[k][a - y0 : b - y0])
        if not ids.any():
            return
        region = out[c0:c1]
        # Whole-strip blend with OpenCV, copied back under the foreground: several times faster
        # than gathering the foreground pixels into float arrays.
        if small:
            lut = np.zeros((256, 1, 3), np.uint8)
            lut[1 : len(self) + 1, 0] = colours
            colour_img = cv2.LUT(cv2.merge([ids, ids, ids]), lut)
        else:
            colour_img = np.take(np.vstack([np.zeros((1, 3), np.uint8), colours]), ids, axis=0)
        blended = cv2.addWeighted(region, 1 - alpha, colour_img, alpha, 0)
        edges = cv2.morphologyEx(ids, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        inner = slice(s0 - c0, s1 - c0)  # the context rows belong to the neighbouring strips
        cv2.copyTo(blended[inner], (ids[inner] > 0).view(np.uint8), region[inner])
        region[inner][edges[inner]] = (255, 255, 255)
