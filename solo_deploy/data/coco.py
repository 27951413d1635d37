"""COCO-format instance segmentation data: validated up front, decoded lazily.

Accepted layouts for ``CocoDataset(root)``:

* ``root/annotations.json`` with images in ``root/images/`` (what ``write_coco`` writes) or in ``root``;
* ``root/annotations/instances_<split>.json`` (exactly one) with images in ``root/<split>/``,
  ``root/images/`` or ``root`` (the official COCO layout);
* ``root`` is the JSON file itself; ``file_name`` is then relative to the JSON's folder or
  to its ``images/`` subfolder.

Every structural problem (including corrupt RLE strings) is reported as one ``BadInputError``
line that names the file and the record (image, annotation or category id), before any image
is read. Problems that need the pixels (missing or undecodable image, size mismatch) are
raised when that image is loaded, naming the image file.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError
from ..limits import MAX_ANNOTATIONS, MAX_IMAGE_PIXELS, check_image_pixels
from .sample import Sample

# Compressed RLE strings use the characters 48..111 ('0'..'o'); anything else is corrupt.
_RLE_CHARS = re.compile(r"[0-o]*")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _rle_total(counts: str) -> int:
    """Total run length (must equal H*W) of a compressed COCO RLE string; -1 if it is malformed.

    The format stores each run in 5-bit groups (char - 48), bit 0x20 = "more groups follow",
    bit 0x10 of the last group = sign; from the third run on, values are deltas to the run two
    places back.
    """
    runs: list[int] = []
    i, n = 0, len(counts)
    while i < n:
        value, shift, more = 0, 0, True
        while more:
            if i >= n:
                return -1
            c = ord(counts[i]) - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            i += 1
            shift += 5
            if not more and (c & 0x10):
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return -1
        runs.append(value)
    return sum(runs)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class CocoDataset:
    """Map-style, torch-free COCO instance-segmentation data set.

    ``ds[i]`` is a ``Sample`` of image ``image_ids[i]``: ``image_bgr`` uint8 (H, W, 3), ``masks``
    uint8 (K, H, W) of the non-crowd instances with a non-empty mask, ``labels`` int64 (K,)
    (contiguous, categories sorted by id), ``image_id``. Crowd regions stay in ``coco_dict``
    for evaluation but are never training targets.
    """

    def __init__(self, root: str | Path | None = None, *, ann: str | Path | None = None,
                 image_dirs: Sequence[str | Path] = ()) -> None:
        """``root``: a folder or JSON file in one of the accepted layouts; or ``ann`` (the JSON)
        with ``image_dirs`` (folders searched in order; default: the JSON's folder and its
        ``images/``)."""
        if ann is not None:
            ann = Path(ann)
            if not ann.is_file():
                raise BadInputError(f"annotation file not found: {ann}")
            dirs = [Path(d) for d in image_dirs] or [ann.parent, ann.parent / "images"]
            for d in dirs:
                if image_dirs and not d.is_dir():
                    raise BadInputError(f"image folder not found: {d}")
            self.json_path, self._image_dirs = ann, dirs
        elif root is not None:
            self.json_path, self._image_dirs = _locate(Path(root))
        else:
            raise BadInputError("a COCO data set needs a folder or an annotation file")
        self.coco_dict: dict[str, Any] = self._load_and_validate()
        cats = sorted(self.coco_dict["categories"], key=lambda c: c["id"])
        self.cat_ids: list[int] = [int(c["id"]) for c in cats]  # label -> COCO category id
        self.class_names: tuple[str, ...] = tuple(str(c["name"]) for c in cats)
        self.label_of: dict[int, int] = {cid: i for i, cid in enumerate(self.cat_ids)}  # COCO id -> label
        self._images: list[dict[str, Any]] = list(self.coco_dict["images"])
        self.image_ids: list[int] = [int(im["id"]) for im in self._images]
        self._anns_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ann in self.coco_dict["annotations"]:
            self._anns_of[int(ann["image_id"])].append(ann)

    # -- loading / validation --------------------------------------------------------------------
    def _bad(self, what: str) -> BadInputError:
        return BadInputError(_one_line(f"{self.json_path}: {what}"))

    def _load_and_validate(self) -> dict[str, Any]:
        path = self.json_path
        try:
            with open(path, "rb") as fh:
                coco = json.loads(fh.read())
        except json.JSONDecodeError as exc:
            where = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
            raise BadInputError(_one_line(f"{path}: not valid JSON ({where})")) from None
        except UnicodeDecodeError:
            raise BadInputError(f"{path}: not valid JSON (not UTF-8 text)") from None
        except OSError as exc:
            raise BadInputError(_one_line(f"cannot read {path}: {exc.strerror or exc}")) from None
        if not isinstance(coco, dict):
            raise self._bad("expected a JSON object with images, annotations and categories")
        missing = [k for k in ("images", "annotations", "categories") if k not in coco]
        if missing:
            raise self._bad(f"missing required key(s) {', '.join(missing)}")
        for key in ("images", "annotations", "categories"):
            if not isinstance(coco[key], list):
                raise self._bad(f"'{key}' must be a list")

        cat_ids: set[int] = set()
        for i, cat in enumerate(coco["categories"]):
            self._require(cat, ("id", "name"), f"category #{i}")
            if not _is_int(cat["id"]):
                raise self._bad(f"category #{i}: id must be an integer, got {cat['id']!r}")
            if cat["id"] in cat_ids:
                raise self._bad(f"category id {cat['id']} appears twice")
            cat_ids.add(cat["id"])
        if not cat_ids:
            raise self._bad("no categories")

        sizes: dict[int, tuple[int, int]] = {}
        for i, im in enumerate(coco["images"]):
            self._require(im, ("id", "file_name", "height", "width"), f"image #{i}")
            if not _is_int(im["id"]):
                raise self._bad(f"image #{i}: id must be an integer, got {im['id']!r}")
            if im["id"] in sizes:
                raise self._bad(f"image id {im['id']} appears twice")
            if not isinstance(im["file_name"], str) or not im["file_name"]:
                raise self._bad(f"image id {im['id']}: file_name must be a non-empty string")
            if not _inside(im["file_name"]):
                raise self._bad(f"image id {im['id']}: file_name {im['file_name']!r} points outside the data folder "
                                "(absolute, or climbing out with '..')")
            if not (_is_int(im["height"]) and _is_int(im["width"]) and im["height"] > 0 and im["width"] > 0):
                raise self._bad(f"image id {im['id']}: height and width must be positive integers")
            MAX_IMAGE_PIXELS.check(im["height"] * im["width"], f"{path}: image id {im['id']} "
                                   f"({im['width']}x{im['height']})", "pixels")
            sizes[im["id"]] = (im["height"], im["width"])

        # Training decodes every mask of an image at once: bound the count before anything is decoded.
        per_image = Counter(a.get("image_id") for a in coco["annotations"]
                            if isinstance(a, dict) and _is_int(a.get("image_id")) and a.get("iscrowd") != 1)
        if per_image:
            image_id, most = per_image.most_common(1)[0]
            MAX_ANNOTATIONS.check(most, f"{path}: image id {image_id}", "annotations")
        ann_ids: set[int] = set()
        for i, ann in enumerate(coco["annotations"]):
            self._require(ann, ("id", "image_id", "category_id", "segmentation"), f"annotation #{i}")
            aid = ann["id"]
            if not _is_int(aid):
                raise self._bad(f"annotation #{i}: id must be an integer, got {aid!r}")
            if aid in ann_ids:
                raise self._bad(f"annotation id {aid} appears twice")
            ann_ids.add(aid)
            if ann["image_id"] not in sizes:
                raise self._bad(f"annotation id {aid}: unknown image id {ann['image_id']!r}")
            if ann["category_id"] not in cat_ids:
                raise self._bad(f"annotation id {aid}: unknown category id {ann['category_id']!r}")
            crowd = ann.setdefault("iscrowd", 0)
            if crowd not in (0, 1) or isinstance(crowd, bool):
                raise self._bad(f"annotation id {aid}: iscrowd must be 0 or 1, got {crowd!r}")
            self._check_segmentation(ann, sizes[ann["image_id"]])
            for key, n in (("area", 1), ("bbox", 4)):  # COCOeval reads both
                value = ann.get(key)
                values = value if isinstance(value, list) else [value]
                if key in ann and (len(values) != n or not all(_is_number(v) for v in values)):
                    what = "a finite number" if n == 1 else "4 finite numbers"
                    raise self._bad(f"annotation id {aid}: {key} must be {what}, got {str(value)[:80]}")
        self._fill_area_bbox(coco, sizes)
        return coco

    def _require(self, rec: Any, keys: tuple[str, ...], name: str) -> None:
        if not isinstance(rec, dict):
            raise self._bad(f"{name} is not a JSON object")
        missing = [k for k in keys if k not in rec]
        if missing:
            ident = f"{name.split(' #')[0]} id {rec['id']}" if "id" in rec and "id" not in missing else name
            raise self._bad(f"{ident}: missing required key(s) {', '.join(missing)}")

    def _check_segmentation(self, ann: dict[str, Any], hw: tuple[int, int]) -> None:
        aid, seg = ann["id"], ann["segmentation"]
        if isinstance(seg, list):
            if not seg:
                raise self._bad(f"annotation id {aid}: empty polygon list")
            h, w = hw
            for poly in seg:
                if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
                    raise self._bad(f"annotation id {aid}: a polygon must be a list of finite numbers "
                                    "[x1, y1, x2, y2, ...]")
                if len(poly) < 6 or len(poly) % 2:
                    raise self._bad(f"annotation id {aid}: degenerate polygon with {len(poly)} coordinates "
                                    "(need an even number, at least 3 points)")
                # pycocotools rasterises in C with int arithmetic: coordinates like 1e12 overflow
                # it (a crash, not an error). Real data overshoots the border by a pixel or so.
                xs, ys = poly[0::2], poly[1::2]
                if (min(xs) < -_FAR * w or max(xs) > (1 + _FAR) * w or min(ys) < -_FAR * h
                        or max(ys) > (1 + _FAR) * h):
                    raise self._bad(f"annotation id {aid}: polygon coordinates out to x {min(xs):g}..{max(xs):g}, "
                                    f"y {min(ys):g}..{max(ys):g}, more than {_FAR}x the {w}x{h} image away from it")
                # Overshoots of up to a pixel (rounding at the border) snap to it; larger ones
                # stay: pycocotools clips a polygon to the image when rasterising it (moving
                # a far vertex onto the border would change the shape inside the image).
                if min(xs) < 0 or max(xs) > w or min(ys) < 0 or max(ys) > h:
                    poly[0::2] = [_snap(x, w) for x in xs]
                    poly[1::2] = [_snap(y, h) for y in ys]
        elif isinstance(seg, dict):
            if "size" not in seg or "counts" not in seg:
                raise self._bad(f"annotation id {aid}: RLE segmentation needs 'size' and 'counts'")
            if not isinstance(seg["size"], list) or seg["size"] != [hw[0], hw[1]]:
                raise self._bad(f"annotation id {aid}: RLE size {seg['size']} differs from its image's "
                                f"height/width {list(hw)}")
            counts = seg["counts"]
            if isinstance(counts, list):
                if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != hw[0] * hw[1]:
                    raise self._bad(f"annotation id {aid}: uncompressed RLE counts must be non-negative "
                                    f"integers summing to {hw[0] * hw[1]}")
            elif isinstance(counts, str):
                # pycocotools decodes without bounds checks: a string whose runs do not add up to
                # H*W would make it write past the mask, so check every string here (~70 us each).
                if not _RLE_CHARS.fullmatch(counts) or _rle_total(counts) != hw[0] * hw[1]:
                    raise self._bad(f"annotation id {aid}: corrupt compressed RLE (runs do not cover "
                                    f"{hw[0]}x{hw[1]})")
            else:
                raise self._bad(f"annotation id {aid}: RLE counts must be a string or a list of integers")
        else:
            raise self._bad(f"annotation id {aid}: segmentation must be polygons or RLE, got {type(seg).__name__}")

    def _fill_area_bbox(self, coco: dict[str, Any], sizes: dict[int, tuple[int, int]]) -> None:
        """COCOeval needs ``area`` and ``bbox``: compute them where the file leaves them out."""
        from pycocotools import mask as mask_utils

        todo = [a for a in coco["annotations"] if "area" not in a or "bbox" not in a]
        for ann in todo:
            h, w = sizes[ann["image_id"]]
            rle = self._to_rle(ann, h, w)
            ann.setdefault("area", float(mask_utils.area(rle)))
            ann.setdefault("bbox", [float(v) for v in mask_utils.toBbox(rle)])

    def _to_rle(self, ann: dict[str, Any], h: int, w: int) -> dict[str, Any]:
        """One compressed RLE (counts as bytes) for any segmentation; polygons are merged."""
        from pycocotools import mask as mask_utils

        seg = ann["segmentation"]
        if isinstance(seg, list):
            return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        if isinstance(seg["counts"], list):
            return mask_utils.frPyObjects(seg, h, w)
        return {"size": [h, w], "counts": seg["counts"].encode("ascii")}

    # -- access ----------------------------------------------------------------------------------
    def take(self, n: int) -> CocoDataset:
        """The same data set limited to its first ``n`` images (their annotations, all categories)."""
        return self._subset(self._images[:max(0, n)])

    def _subset(self, images: list[dict[str, Any]]) -> CocoDataset:
        import copy

        sub = copy.copy(self)
        sub._images = images
        sub.image_ids = [int(im["id"]) for im in sub._images]
        keep = set(sub.image_ids)
        sub._anns_of = defaultdict(list, {i: a for i, a in self._anns_of.items() if i in keep})
        sub.coco_dict = {**self.coco_dict, "images": sub._images,
                         "annotations": [a for a in self.coco_dict["annotations"] if a["image_id"] in keep]}
        return sub

    def select(self, ids: Iterable[int]) -> CocoDataset:
        """The same data set limited to the images whose id is in ``ids`` (file order kept)."""
        wanted = {int(i) for i in ids}
        return self._subset([im for im in self._images if int(im["id"]) in wanted])

    def __len__(self) -> int:
        return len(self._images)

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def image_path(self, index: int) -> Path:
        """The file of image ``index`` (first match among the layout's image folders)."""
        im = self._images[index]
        rel = Path(im["file_name"])
        for d in self._image_dirs:
            p = d / rel
            if p.is_file():
                return p
        raise BadInputError(_one_line(f"image file {im['file_name']} of image id {im['id']} not found "
                                      f"(looked in {', '.join(str(d) for d in self._image_dirs)})"))

    def load_image(self, index: int) -> np.ndarray:
        """BGR uint8 (H, W, 3) of image ``index``; checked against the JSON's height/width."""
        import cv2

        im = self._images[index]
        path = self.image_path(index)
        check_image_pixels(path)  # a file larger than its JSON entry says: refused before decoding
        try:
            data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode: non-ASCII paths work too
        except OSError as exc:
            raise BadInputError(_one_line(f"cannot read image {path}: {exc.strerror or exc}")) from None
        try:
            image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        except cv2.error as exc:  # OpenCV's own size limit and codec failures
            raise BadInputError(_one_line(f"cannot decode image {path}: {exc}")) from None
        if image is None:
            raise BadInputError(f"cannot decode image {path}: not an image file or corrupt")
        if image.shape[:2] != (im["height"], im["width"]):
            raise BadInputError(_one_line(f"image {path} is {image.shape[1]}x{image.shape[0]} but {self.json_path} "
                                          f"says {im['width']}x{im['height']} (image id {im['id']})"))
        return image

    def __getitem__(self, index: int) -> Sample:
        from pycocotools import mask as mask_utils

        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index = int(index) % n
        im = self._images[index]
        image = self.load_image(index)
        h, w = image.shape[:2]
        anns = [a for a in self._anns_of.get(int(im["id"]), []) if not a["iscrowd"]]
        if anns:
            rles = [self._to_rle(a, h, w) for a in anns]
            masks = np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))
            labels = np.array([self.label_of[a["category_id"]] for a in anns], dtype=np.int64)
            # Empty masks (zero-area polygons, boxes outside the image) cannot be learnt: drop them.
            keep = masks.reshape(len(anns), -1).any(1)
            if not keep.all():
                masks, labels = np.ascontiguousarray(masks[keep]), labels[keep]
        else:
            masks = np.zeros((0, h, w), np.uint8)
            labels = np.zeros((0,), np.int64)
        return Sample(image_bgr=image, masks=masks, labels=labels, image_id=int(im["id"]))


_FAR = 4  # polygon coordinates further than this many image sizes outside the image are refused


def _snap(v: float, size: int) -> float:
    """A coordinate at most one pixel outside [0, size] moved onto the border; others unchanged."""
    if -1.0 <= v < 0.0:
        return 0.0
    if size < v <= size + 1.0:
        return float(size)
    return v


def _inside(file_name: str) -> bool:
    """A relative path that stays inside the folder it is joined to (no root, drive or '..')."""
    from pathlib import PurePosixPath, PureWindowsPath

    for pure in (PurePosixPath(file_name), PureWindowsPath(file_name)):
        if pure.is_absolute() or pure.anchor or ".." in pure.parts:
            return False
    return True


def _locate(root: Path) -> tuple[Path, list[Path]]:
    """The annotation JSON under ``root`` and the folders to look for images in, in order."""
    if not root.exists():
        raise BadInputError(f"data set {root} does not exist")
    if root.is_file():
        base = root.parent
        return root, [base, base / "images"]
    if not root.is_dir():
        raise BadInputError(f"data set {root} is neither a folder nor a JSON file")
    direct = root / "annotations.json"
    if direct.is_file():
        return direct, [root / "images", root]
    found = sorted((root / "annotations").glob("instances_*.json")) if (root / "annotations").is_dir() else []
    if len(found) == 1:
        split = found[0].stem[len("instances_"):]
        return found[0], [root / split, root / "images" / split, root / "images", root]
    if len(found) > 1:
        raise BadInputError(_one_line(f"{root / 'annotations'} has several instances_*.json files "
                                      f"({', '.join(p.name for p in found)}): pass the one to use"))
    raise BadInputError(f"no annotations.json (nor annotations/instances_*.json) in {root}")
