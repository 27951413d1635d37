"""The Python API: ``solo_deploy.load(MODEL).predict(image)`` -> ``Instances``."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .._lazy import lazy_import
from .._stderr import quiet_native_stderr
from ..core.instances import Instances
from ..core.meta import ModelMeta
from ..errors import BadInputError, one_line
from ..limits import check_image_pixels, check_image_shape
from ..preprocess import Letterbox, as_bgr_uint8
from .inference import final_instances, postprocess_outputs
from .postprocess import to_numpy

cv2 = lazy_import("cv2")
array_api_compat = lazy_import("array_api_compat")

def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as BGR uint8 (H, W, 3), turned upright as its EXIF orientation says
    (what photo viewers show); grayscale, alpha and 16-bit are handled; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"image not found: {path}")
    if path.stat().st_size == 0:
        raise BadInputError(f"image file is empty: {path}")
    check_image_pixels(path)  # from the header, before anything is decoded
    data = np.fromfile(str(path), dtype=np.uint8)
    # ANYDEPTH | ANYCOLOR keeps 16-bit and grayscale as stored and, unlike IMREAD_UNCHANGED,
    # applies the EXIF orientation (alpha is dropped: as_bgr_uint8 drops it anyway).
    try:
        with quiet_native_stderr():
            img = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    except cv2.error as exc:  # OpenCV's own size check (OPENCV_IO_MAX_IMAGE_PIXELS) and codec failures
        raise BadInputError(f"cannot decode image {path}: {one_line(exc)[:200]}") from None
    if img is None:
        raise BadInputError(f"cannot decode image {path}: not an image OpenCV can read, or truncated")
    check_image_shape(img.shape, f"image {path}")  # formats whose header Pillow cannot read
    return as_bgr_uint8(img)


def _as_bgr(image: Any) -> np.ndarray:
    """A path, a PIL image or a BGR array -> BGR uint8 (H, W, 3)."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if type(image).__module__.startswith("PIL.") and hasattr(image, "convert"):
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # PIL is RGB
    if not isinstance(image, np.ndarray):
        raise BadInputError(f"cannot predict on a {type(image).__name__}: give a BGR numpy array, a file path or a "
                            f"PIL image (or a list of them)")
    return image


def check_conf(conf: float | None) -> float | None:
    """``--conf``: None (keep every instance) or a score within [0, 1]; one line otherwise."""
    if conf is not None and not 0.0 <= conf <= 1.0:
        raise BadInputError(f"--conf must be within [0, 1], got {conf}")
    return conf


def class_filter(values: Sequence[str] | None, class_names: Sequence[str],
                 category_ids: Sequence[int] = ()) -> frozenset[int] | None:
    """``--classes``: class names or the category ids of the JSON outputs (``category_ids``, 1..C
    when empty), comma-separated or repeated -> class indices (0-based); None keeps every class."""
    if not values:
        return None
    names = list(class_names)
    ids = [int(c) for c in category_ids] or list(range(1, len(names) + 1))
    wanted: set[int] = set()
    for raw in values:
        for item in (s.strip() for s in str(raw).split(",")):
            if not item:
                continue
            if item in names:
                wanted.add(names.index(item))
            elif item.isdigit() and int(item) in ids:
                wanted.add(ids.index(int(item)))
            else:
                shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                id_text = (f"{ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[0] + len(ids)))
                           else f"{', '.join(map(str, ids[:12]))}{', ...' if len(ids) > 12 else ''}")
                raise BadInputError(f"--classes: this model has no class {item!r} (its classes: {shown}; or category "
                                    f"ids {id_text})")
    return frozenset(wanted)


class Predictor:
    """A runner plus the shared pre- and post-processing. ``conf`` and ``classes`` (class indices)
    filter the final instances."""

    def __init__(self, runner, conf: float | None = None, classes: frozenset[int] | None = None) -> None:
        self.runner = runner
        self.meta: ModelMeta = runner.meta
        self.conf = conf
        self.classes = classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.meta.class_names

    def preprocess(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Letterbox]]:
        return self.meta.preprocess.batch(images)

    def predict(self, images: Any, conf: float | None = None) -> Instances | list[Instances]:
        """One image -> ``Instances``; a list (or tuple) of images -> a list of them, with scores
        >= conf. An image is a BGR numpy array (OpenCV's order), a file path or a PIL image."""
        if isinstance(images, (list, tuple)):
            return self.predict_batch([_as_bgr(im) for im in images], conf=conf)
        return self.predict_batch([_as_bgr(images)], conf=conf)[0]

    def predict_batch(self, images: Sequence[np.ndarray], conf: float | None = None) -> list[Instances]:
        """BGR images -> ``Instances`` each. Images whose graph inputs differ in size (keep-ratio
        models) run in separate groups, so each image's result is what it gives alone."""
        images = [as_bgr_uint8(im) for im in images]
        if not images:
            return []
        out: list[Instances | None] = [None] * len(images)
        for idx in self.meta.preprocess.size_groups([im.shape[:2] for im in images]):
            batch, letterboxes = self.preprocess([images[i] for i in idx])
            scores, kernels, feats = self.runner(batch)
            for i, inst in zip(idx, self.finish(scores, kernels, feats, letterboxes, conf)):
                out[i] = inst
        return out  # type: ignore[return-value]

    def finish(
        self, scores, kernels, feats, letterboxes: Sequence[Letterbox], conf: float | None = None
    ) -> list[Instances]:
        """Raw outputs of a batch -> ``Instances`` per image."""
        conf = self.conf if conf is None else conf
        post = self.meta.postprocess
        out = []
        for det, lb in zip(postprocess_outputs(self.meta, scores, kernels, feats, post), letterboxes):
            if len(det) and (conf is not None or self.classes is not None):
                keep = np.ones(len(det), bool)
                if conf is not None:
                    keep &= to_numpy(det.scores) >= conf
                if self.classes is not None:
                    keep &= np.isin(to_numpy(det.labels), sorted(self.classes))
                if not keep.all():
                    xp = array_api_compat.array_namespace(det.scores)
                    idx = xp.asarray(np.nonzero(keep)[0], device=array_api_compat.device(det.scores))
                    det = replace(det, soft_masks=xp.take(det.soft_masks, idx, axis=0),
                                  labels=xp.take(det.labels, idx), scores=xp.take(det.scores, idx))
            out.append(final_instances(det, lb, post.mask_thr, self.meta.class_names, self.meta.category_ids))
        return out
