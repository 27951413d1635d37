"""Scoring tracks (``solo-deploy eval-track``): CLEAR MOT and IDF1 from py-motmetrics, matching
predicted instances to ground-truth objects by mask IoU >= 0.5.

Ground truth is either the built-in demo video (each object's identity, rendered again from its
seed) or a COCO file with ``frame_index`` per image and ``track_id`` per annotation (what
``solo-deploy data synthetic --video`` writes next to its video). Predictions are ``run
--track --save-json`` lines. Only the frames the lines hold are scored: a frame a live run dropped
was never seen by the tracker.

HOTA is not reported: the ``trackeval`` package on PyPI is a third party's repackaging of a fork
(kovalp/TrackEval), not the authors' TrackEval, and HOTA is not written here by hand.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .._lazy import lazy_import
from ..core.instances import encode_masks
from ..data import synthetic
from ..errors import BadInputError

mask_utils = lazy_import("pycocotools.mask")

__all__ = ["IOU_THRESHOLD", "METRICS", "demo_ground_truth", "evaluate_tracks", "load_track_lines",
           "load_video_ground_truth"]

IOU_THRESHOLD = 0.5  # a prediction covers an object when their masks' IoU is at least this
# motmetrics' names -> ours, in the order they are printed.
METRICS = {"mota": "MOTA", "idf1": "IDF1", "num_switches": "ID switches", "precision": "precision",
           "recall": "recall", "mostly_tracked": "mostly tracked", "mostly_lost": "mostly lost",
           "num_fragmentations": "fragmentations", "num_objects": "objects", "num_unique_objects": "identities"}

# frame index -> [(identity, COCO RLE)]
Frames = dict[int, list[tuple[int, dict[str, Any]]]]


def load_track_lines(path: str | Path, stream: int = 0) -> tuple[Frames, str]:
    """``run --save-json`` lines of one stream -> (frames, source). Every instance must carry a
    ``track_id`` (a run with ``--track``); an instance no track took (null) is left out."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"track predictions not found: {path}")
    frames: Frames = {}
    source = ""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if rec.get("stream", 0) != stream:
                    continue
                source = str(rec.get("source", ""))
                items = []
                for ins in rec["instances"]:
                    if "track_id" not in ins:
                        raise BadInputError(f"{path} line {n}: an instance without track_id: run with --track")
                    if ins["track_id"] is None:
                        continue
                    items.append((int(ins["track_id"]), ins["segmentation"]))
                frames[int(rec["frame"])] = items
            except BadInputError:
                raise
            except (ValueError, KeyError, TypeError) as exc:
                raise BadInputError(f"{path} line {n} is not a solo-deploy frame record ({type(exc).__name__}: "
                                    f"{exc})") from None
    if not frames:
        raise BadInputError(f"{path} holds no frame of stream {stream}")
    return frames, source


def demo_ground_truth(frames: Iterable[int]) -> Frames:
    """The demo video's objects with their identities, for the given frame indices."""
    wanted = sorted({int(f) for f in frames})
    if wanted and wanted[0] < 0:
        raise BadInputError(f"frame index {wanted[0]} is not a frame of the demo")
    out: Frames = {}
    count = wanted[-1] + 1 if wanted else 0
    want = set(wanted)
    for i, (_, masks, _, tracks) in enumerate(synthetic.render_video_tracks(n_frames=count)):
        if i in want:
            out[i] = list(zip(tracks.tolist(), encode_masks(masks.astype(bool))))
    return out


def load_video_ground_truth(path: str | Path) -> Frames:
    """A COCO file of a video: images with ``frame_index``, annotations with ``track_id`` and a
    ``segmentation`` (RLE or polygons)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        images = {int(im["id"]): (int(im["frame_index"]), int(im["height"]), int(im["width"]))
                  for im in doc["images"]}
        out: Frames = {f: [] for f, _, _ in images.values()}
        for ann in doc["annotations"]:
            frame, h, w = images[int(ann["image_id"])]
            seg = ann["segmentation"]
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list) else seg
            out[frame].append((int(ann["track_id"]), rle))
    except FileNotFoundError:
        raise BadInputError(f"ground truth not found: {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{path} is not a video ground truth (COCO images with frame_index, annotations with "
                            f"track_id): {type(exc).__name__}: {exc}") from None
    return out


def evaluate_tracks(pred: Frames, gt: Frames) -> dict[str, Any]:
    """MOTA, IDF1, ID switches and the rest of :data:`METRICS` over the frames of ``pred``."""
    try:
        import motmetrics as mm
    except ImportError:
        raise BadInputError("eval-track needs py-motmetrics: pip install 'solo-deploy[track-eval]'") from None
    missing = sorted(set(pred) - set(gt))
    if missing:
        raise BadInputError(f"frames {missing[:5]} of the predictions have no ground truth (another video?)")
    acc = mm.MOTAccumulator(auto_id=False)
    for frame in sorted(pred):
        g, p = gt[frame], pred[frame]
        if g and p and list(g[0][1]["size"]) != list(p[0][1]["size"]):
            # pycocotools scores masks of different sizes as IoU -1 (no match) without a word.
            raise BadInputError(f"frame {frame}: predictions are {p[0][1]['size'][1]}x{p[0][1]['size'][0]} but the "
                                f"ground truth is {g[0][1]['size'][1]}x{g[0][1]['size'][0]}: another video?")
        if g and p:
            iou = np.asarray(mask_utils.iou([r for _, r in p], [r for _, r in g], [0] * len(g)), np.float64)
            dist = np.where(iou.T >= IOU_THRESHOLD, 1.0 - iou.T, np.nan)  # rows: objects, columns: predictions
        else:
            dist = np.empty((len(g), len(p)))
        acc.update([i for i, _ in g], [i for i, _ in p], dist, frameid=frame)
    summary = mm.metrics.create().compute(acc, metrics=list(METRICS), name="run")
    row = summary.iloc[0]
    out: dict[str, Any] = {"frames": len(pred), "iou_threshold": IOU_THRESHOLD}
    for key in METRICS:
        value = float(row[key])
        if not np.isfinite(value):  # e.g. precision with no prediction at all: undefined, not NaN in JSON
            out[key] = None
        else:
            out[key] = int(value) if key.startswith(("num_", "mostly_")) else round(value, 4)
    return out
