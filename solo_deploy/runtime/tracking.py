"""Tracking: instance identities that persist across the frames of one stream (``run --track``).

ByteTrack's two-pass association (Zhang et al., ECCV 2022; the defaults of Ultralytics'
``bytetrack.yaml``), with the overlap measured on the masks instead of boxes:

1. instances scoring >= ``high_thresh`` are matched to every live track (seen last frame, or
   missed for at most ``max_misses`` frames) by IoU with the track's predicted mask;
2. instances scoring in [``low_thresh``, ``high_thresh``) -- often an object partly hidden -- are
   matched to the tracks seen last frame that are still unmatched (a stricter IoU);
3. unmatched instances scoring >= ``new_thresh`` start tracks; tracks missed for more than
   ``max_misses`` frames end. As in ByteTrack, a track started after the first frame is
   confirmed -- given an id in the outputs -- only when the next frame matches it again, and is
   dropped otherwise: a false positive of one frame starts nothing.

Each assignment is scipy's ``linear_sum_assignment`` on 1 - IoU. Mask IoUs are counted on the
window two boxes share, from the crops the instances already hold (checked against pycocotools'
``mask.iou`` in the tests). A track's mask is predicted
by moving its template -- its last mask not much smaller than the largest one seen lately -- by
the track's velocity (constant velocity, as ByteTrack's Kalman filter assumes, without its
covariance). An object partly hidden by another shrinks to what stays visible: it is then matched
against its whole former shape, and its velocity is not disturbed by the visible part's drift.
Pure numpy + pycocotools + scipy: no torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._lazy import lazy_import
from ..core.instances import Instances
from ..errors import BadInputError

optimize = lazy_import("scipy.optimize")

__all__ = ["MATCH_MODES", "Tracker", "TrackerConfig"]

MATCH_MODES = ("mask", "box")


@dataclass(frozen=True)
class TrackerConfig:
    """Association settings (defaults: Ultralytics' ``bytetrack.yaml`` unless noted)."""

    match: str = "mask"  # "mask": IoU of masks; "box": IoU of boxes (ByteTrack's own measure)
    high_thresh: float = 0.25  # track_high_thresh: first-pass instances
    low_thresh: float = 0.1  # track_low_thresh: second-pass instances (also SOLO's score_thr)
    new_thresh: float = 0.25  # new_track_thresh: an unmatched instance starts a track
    match_iou: float = 0.2  # 1 - match_thresh (0.8): least IoU of a first-pass match
    low_match_iou: float = 0.5  # ByteTrack's second association (cost 0.5)
    max_misses: int = 30  # track_buffer: source frames a track survives unseen (1 s at 30 fps)
    velocity_momentum: float = 0.5  # weight of the newest displacement in the velocity (ours)
    # A mask smaller than this share of the track's reference area (its largest recent mask) is
    # taken as partly hidden: template and velocity stay. The reference decays by ``area_decay``
    # per frame, so that an object that really shrinks is followed within a few frames (ours).
    occluded_area: float = 0.8
    area_decay: float = 0.97

    def __post_init__(self) -> None:
        if self.match not in MATCH_MODES:
            raise BadInputError(f"unknown track matching {self.match!r}: choose mask or box")
        for name in ("high_thresh", "low_thresh", "new_thresh", "match_iou", "low_match_iou", "velocity_momentum",
                     "occluded_area", "area_decay"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise BadInputError(f"tracker {name} must be within [0, 1], got {value}")
        if self.low_thresh > self.high_thresh:
            raise BadInputError(f"tracker low_thresh {self.low_thresh} is above high_thresh {self.high_thresh}")
        if not isinstance(self.max_misses, int) or self.max_misses < 0:
            raise BadInputError(f"--track-buffer must be a non-negative number of frames, got {self.max_misses}")


@dataclass
class _Track:
    id: int
    label: int
    crop: np.ndarray  # bool (h, w): the template mask, inside ``box``
    box: np.ndarray  # float64 x0, y0, x1, y1 where the template was, at frame ``frame``
    frame: int  # the tracker's frame count when the template was taken
    area: float  # reference area: the largest recent template's pixels, as of ``frame``
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # px per frame (x, y)
    last_seen: int = 0  # the frame (tracker clock) it was last matched on
    hits: int = 1
    confirmed: bool = False  # matched on a second frame (or started on the first)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 (N, M) IoU of x0, y0, x1, y1 boxes ``a`` (N, 4) and ``b`` (M, 4); 0 for empty ones."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class Tracker:
    """Track ids for the instances of consecutive frames of one stream.

    ``update(instances, frame_index)`` returns the instances with ``track_ids`` int64 (K,): the id
    of the track each continues or starts (ids count from 1 per tracker), -1 for instances no track
    takes. ``frame_index`` is the frame's index in its source: velocities, template ages and
    ``max_misses`` count source frames, so frames a live run dropped or ``--vid-stride`` skipped
    are time that passed (without it, each call is one frame).
    """

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self.tracks: list[_Track] = []
        self._next_id = 1
        self.frames = 0  # the clock: source frame index + 1 of the latest update
        self._updates = 0
        self._previous = 0  # the clock of the update before
        optimize.linear_sum_assignment  # noqa: B018 - import scipy now, not inside the first frame's timing

    def update(self, inst: Instances, frame_index: int | None = None) -> Instances:
        cfg = self.config
        self._previous = self.frames
        self.frames = self.frames + 1 if frame_index is None else max(int(frame_index) + 1, self.frames + 1)
        self._updates += 1
        # A gap in the source (drops, --vid-stride) ages the tracks before they are matched.
        self.tracks = [t for t in self.tracks if self.frames - t.last_seen - 1 <= cfg.max_misses]
        k = len(inst)
        ids = np.full(k, -1, np.int64)
        scores = inst.scores
        h, w = inst.image_hw
        predicted = [self._predict(t, h, w, self.frames) for t in self.tracks]
        high = np.flatnonzero(scores >= cfg.high_thresh)
        low = np.flatnonzero((scores >= cfg.low_thresh) & (scores < cfg.high_thresh))
        free_tracks = list(range(len(self.tracks)))
        matches: list[tuple[int, int]] = []
        # First pass: confident instances against every live track.
        pairs = self._assign(inst, high, predicted, free_tracks, cfg.match_iou)
        matches += pairs
        taken = {t for _, t in pairs}
        # Second pass: the low-score instances against the tracks seen last frame that are left.
        recent = [t for t in free_tracks if t not in taken and self.tracks[t].last_seen == self._previous]
        pairs = self._assign(inst, low, predicted, recent, cfg.low_match_iou)
        matches += pairs
        taken |= {t for _, t in pairs}
        matched_dets = {d for d, _ in matches}
        for d, t in matches:
            track = self.tracks[t]
            self._refresh(track, inst, d)
            if not track.confirmed:
                track.confirmed, track.id = True, self._new_id()
            ids[d] = track.id
        survivors = []
        for track in self.tracks:
            if self.frames - track.last_seen <= (cfg.max_misses if track.confirmed else 0):
                survivors.append(track)
        self.tracks = survivors
        for d in high.tolist():
            if d not in matched_dets and scores[d] >= cfg.new_thresh:
                first = self._updates == 1
                track = _Track(id=self._new_id() if first else -1, label=int(inst.labels[d]), crop=inst.crops[d],
                               box=inst.crop_boxes[d].astype(np.float64), frame=self.frames, last_seen=self.frames,
                               area=int(np.count_nonzero(inst.crops[d])), confirmed=first)
                self.tracks.append(track)
                ids[d] = track.id
        return inst.with_track_ids(ids)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    @property
    def started(self) -> int:
        """Tracks started so far."""
        return self._next_id - 1

    # -- internals ---------------------------------------------------------------------------------
    def _predict(self, track: _Track, h: int, w: int, now: int) -> tuple[np.ndarray, np.ndarray]:
        """(crop, int box x0, y0, x1, y1) of the track's template moved by its velocity over the
        frames since it was taken, clipped to the (h, w) frame (an empty crop if it left)."""
        shift = np.rint(track.velocity * (now - track.frame)).astype(np.int64)
        x0, y0, x1, y1 = (np.rint(track.box).astype(np.int64) + np.r_[shift, shift]).tolist()
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if cx1 <= cx0 or cy1 <= cy0:
            return np.zeros((0, 0), bool), np.zeros(4, np.int64)
        crop = track.crop[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        return crop, np.array([cx0, cy0, cx1, cy1], np.int64)

    def _assign(self, inst: Instances, dets: np.ndarray, predicted: list[tuple[np.ndarray, np.ndarray]],
                tracks: list[int], min_iou: float) -> list[tuple[int, int]]:
        """Optimal (instance, track) pairs among ``dets`` x ``tracks`` with IoU >= ``min_iou``."""
        if dets.size == 0 or not tracks:
            return []
        iou = self._iou(inst, dets, [predicted[t] for t in tracks])
        rows, cols = optimize.linear_sum_assignment(1.0 - iou)
        return [(int(dets[r]), tracks[c]) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]

    def _iou(self, inst: Instances, dets: np.ndarray, predicted: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """float64 (len(dets), len(predicted)) IoU of instances and predicted tracks."""
        det_boxes = inst.crop_boxes[dets].astype(np.float64).reshape(-1, 4)
        trk_boxes = np.stack([b for _, b in predicted]).astype(np.float64).reshape(-1, 4)
        box_iou = _box_iou(det_boxes, trk_boxes)
        if self.config.match == "box":
            return box_iou
        # Masks overlap only where boxes do; each such pair is compared on the window the two
        # boxes share, straight from the crops (pycocotools' mask.iou would need the tracks'
        # shifted masks encoded as RLEs first: about 4x the time at 15 tracks).
        out = np.zeros_like(box_iou)
        det_area = [int(np.count_nonzero(inst.crops[d])) for d in dets.tolist()]
        trk_area = [int(np.count_nonzero(c)) for c, _ in predicted]
        for i, j in zip(*np.nonzero(box_iou > 0)):
            d = int(dets[i])
            dc, (dx0, dy0, _, _) = inst.crops[d], inst.crop_boxes[d].tolist()
            tc, (tx0, ty0, tx1, ty1) = predicted[j][0], predicted[j][1].tolist()
            x0, y0 = max(dx0, tx0), max(dy0, ty0)
            x1, y1 = min(dx0 + dc.shape[1], tx1), min(dy0 + dc.shape[0], ty1)
            inter = int(np.count_nonzero(dc[y0 - dy0 : y1 - dy0, x0 - dx0 : x1 - dx0]
                                         & tc[y0 - ty0 : y1 - ty0, x0 - tx0 : x1 - tx0]))
            union = det_area[i] + trk_area[j] - inter
            out[i, j] = inter / union if union else 0.0
        return out

    def _refresh(self, track: _Track, inst: Instances, d: int) -> None:
        cfg = self.config
        area = int(np.count_nonzero(inst.crops[d]))
        age = self.frames - track.frame
        reference = track.area * cfg.area_decay ** age
        if area >= cfg.occluded_area * reference or age > cfg.max_misses:
            # Seen whole (or the template is too old to trust): the velocity from the template's
            # box centre to this one, per frame elapsed, and this mask becomes the template.
            new_box = inst.crop_boxes[d].astype(np.float64)
            step = ((new_box[:2] + new_box[2:]) - (track.box[:2] + track.box[2:])) / 2 / max(age, 1)
            m = cfg.velocity_momentum
            track.velocity = step if track.hits == 1 else m * step + (1 - m) * track.velocity
            track.box, track.crop, track.frame = new_box, inst.crops[d], self.frames
            track.area = max(float(area), reference)
        track.label = int(inst.labels[d])
        track.last_seen = self.frames
        track.hits += 1
