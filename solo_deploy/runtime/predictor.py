"""The Python API: ``solo_deploy.load(MODEL).predict(image)`` -> ``Instances``."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._stderr import quiet_native_stderr
from ..errors import BadInputError
from ..evaluation.coco_eval import masks_to_boxes
from ..model.modelfile import ModelMeta
from ..preprocess import Letterbox, as_bgr_uint8
from .inference import final_masks, postprocess_outputs
from .postprocess import to_numpy

# Distinct, colour-blind friendly overlay colours (BGR), cycled by class.
PALETTE = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
           (204, 121, 167), (120, 120, 120)]


@dataclass
class Instances:
    """Instances of one image on its original grid.

    masks bool (K, H, W); labels int64 (K,); scores float32 (K,); boxes float32 (K, 4) as x0, y0, x1, y1,
    and ``rles`` computed from ``masks`` on first use and kept (build a new ``Instances`` to change masks).
    """

    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    class_names: tuple[str, ...]
    image_hw: tuple[int, int]

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @cached_property
    def boxes(self) -> np.ndarray:
        # Cached: the overlay and the JSON lines both need them (a pass over every mask).
        return masks_to_boxes(self.masks)

    @cached_property
    def rles(self) -> list[dict[str, Any]]:
        """COCO compressed RLEs of ``masks``; cached: the JSON lines and the demo's evaluation
        both need them."""
        from ..evaluation.coco_eval import encode_masks

        return encode_masks(self.masks, self.boxes)

    def to_coco(self, image_id: int = 0, cat_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """COCO results (RLE masks) for this image."""
        from ..evaluation.coco_eval import detections_to_coco

        cat_ids = list(cat_ids) if cat_ids is not None else list(range(1, len(self.class_names) + 1))
        return detections_to_coco(image_id, self.masks, self.labels, self.scores, cat_ids, rles=self.rles)

    def plot(self, image_bgr: np.ndarray, alpha: float = 0.5, labels: bool = True) -> np.ndarray:
        """A copy of ``image_bgr`` with masks, outlines and class/score labels drawn (BGR uint8)."""
        import cv2

        out = as_bgr_uint8(image_bgr).copy()
        if len(self) == 0:
            return out
        colours = np.array([PALETTE[int(c) % len(PALETTE)] for c in self.labels], np.uint8)
        boxes = self.boxes.astype(np.int64)
        # Paint back to front so higher scores end on top. Each instance touches only its box
        # (a full-frame boolean assignment per instance cost ~5 ms at 640x480 with 20 instances).
        idmap = np.full(self.image_hw, -1, np.int32)
        for k in np.argsort(self.scores).tolist():
            x0, y0, x1, y1 = boxes[k].tolist()
            np.copyto(idmap[y0:y1, x0:x1], k, where=self.masks[k, y0:y1, x0:x1])
        # Whole-frame blend with OpenCV, copied back under the foreground: several times faster
        # than gathering the foreground pixels into float arrays (the overlay was ~40% of the
        # sinks' time at 640x480 with 20 instances).
        if len(self) < 255:  # ids fit a uint8 map: a cv2.LUT gives the colour image
            ids = (idmap + 1).astype(np.uint8)  # 0 = background
            lut = np.zeros((256, 1, 3), np.uint8)
            lut[1:len(self) + 1, 0] = colours
            colour_img = cv2.LUT(cv2.merge([ids, ids, ids]), lut)
        else:
            ids = (idmap + 1).astype(np.uint16)
            colour_img = np.take(np.vstack([np.zeros((1, 3), np.uint8), colours]), ids, axis=0)
        blended = cv2.addWeighted(out, 1 - alpha, colour_img, alpha, 0)
        cv2.copyTo(blended, (ids > 0).view(np.uint8), out)
        edges = cv2.morphologyEx(ids, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
        out[edges] = (255, 255, 255)
        if labels:
            for k, (x0, y0, _, _) in enumerate(boxes.tolist()):
                text = f"{self.class_names[int(self.labels[k])]} {self.scores[k]:.2f}"
                cv2.putText(out, text, (int(x0), max(10, int(y0) - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                            tuple(int(c) for c in PALETTE[int(self.labels[k]) % len(PALETTE)]), 1, cv2.LINE_AA)
        return out


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3), turned upright as its EXIF orientation says
    (what photo viewers show); grayscale, alpha and 16-bit are handled; one-line errors."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise BadInputError(f"image file is empty: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    # ANYDEPTH | ANYCOLOR keeps 16-bit and grayscale as stored and, unlike IMREAD_UNCHANGED,
    # applies the EXIF orientation (alpha is dropped: as_bgr_uint8 drops it anyway).
    with quiet_native_stderr():
        img = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if img is None:
        raise BadInputError(f"cannot decode image {path}: not an image OpenCV can read, or truncated")
    return as_bgr_uint8(img)


class Predictor:
    """A runner plus the shared pre- and post-processing."""

    def __init__(self, runner, conf: float | None = None) -> None:
        self.runner = runner
        self.meta: ModelMeta = runner.meta
        self.conf = conf

    @classmethod
    def from_file(cls, model: str | Path, backend: str = "auto", device: str = "cpu", conf: float | None = None,
                  **kwargs: Any) -> "Predictor":
        from .runners import make_runner

        return cls(make_runner(model, backend=backend, device=device, **kwargs), conf=conf)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.meta.class_names

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        spec = self.meta.preprocess
        boxes = [spec.letterbox(im) for im in images]
        return np.stack([b[0] for b in boxes]), [b[1] for b in boxes]

    def predict(self, image: np.ndarray | str | Path, conf: float | None = None) -> Instances:
        """One BGR image (array or path) -> ``Instances`` with scores >= conf."""
        if isinstance(image, (str, Path)):
            image = read_image(image)
        return self.predict_batch([image], conf=conf)[0]

    def predict_batch(self, images: Sequence[np.ndarray], conf: float | None = None) -> list[Instances]:
        batch, letterboxes = self.preprocess(images)
        scores, kernels, feats = self.runner(batch)
        return self.finish(scores, kernels, feats, letterboxes, conf)

    def finish(self, scores, kernels, feats, letterboxes: Sequence[Letterbox], conf: float | None = None) -> list[Instances]:
        """Raw outputs of a batch -> ``Instances`` per image."""
        conf = self.conf if conf is None else conf
        post = self.meta.postprocess
        out = []
        for det, lb in zip(postprocess_outputs(self.meta, scores, kernels, feats, post), letterboxes):
            if conf is not None and len(det):
                keep = to_numpy(det.scores) >= conf
                if not keep.all():
                    import array_api_compat

                    xp = array_api_compat.array_namespace(det.scores)
                    idx = xp.asarray(np.nonzero(keep)[0], device=array_api_compat.device(det.scores))
                    det = replace(det, soft_masks=xp.take(det.soft_masks, idx, axis=0),
                                  labels=xp.take(det.labels, idx), scores=xp.take(det.scores, idx))
            masks = final_masks(det, lb, post.mask_thr) if len(det) else np.zeros((0, *lb.orig_hw), bool)
            out.append(Instances(masks, to_numpy(det.labels).astype(np.int64), to_numpy(det.scores).astype(np.float32),
                                 self.meta.class_names, tuple(lb.orig_hw)))
        return out
