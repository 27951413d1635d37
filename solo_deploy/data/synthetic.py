"""The built-in synthetic instance-segmentation data set (shapes on cluttered backgrounds).

Every image is a pure function of ``(seed, index)``: sample ``i`` of a split is drawn with
``np.random.default_rng([split.seed, i])``, so any sample can be regenerated on its own, in
any process, in any order. Classes are defined by *shape* (circle, rectangle, triangle, ring);
colours are random per object, so a model cannot shortcut on colour.

Masks are the *visible* masks: objects are painted in order and later ones hide earlier ones.
Instances that end up (almost) hidden are removed from the annotations *and* from the image
(their pixels show what lies beneath), so every visible object is annotated.

Image ids are ``index + 1`` (COCO tools treat id 0 as "no match"); annotation ids start at 1.
"""
from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .._atomic import atomic_path, write_bytes, write_json
from ..errors import BadInputError, RuntimeFailure
from .sample import Sample

KNOWN_SHAPES = ("circle", "rectangle", "triangle", "ring")

_SHIFT = 4  # cv2 drawing with 4 fractional bits: sub-pixel object outlines, no 1-px snapping
_ONE = 1 << _SHIFT
_VIDEO_STREAM = 1 << 40  # rng stream key for videos; never equal to a sample index


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that shapes the synthetic data. Defaults are pinned: the shipped model trains on them."""

    image_hw: tuple[int, int] = (256, 256)  # (H, W); the CPU preset trains and runs at 256x256
    # Label i is class_names[i]; the name picks the shape drawn (any subset/order of KNOWN_SHAPES).
    class_names: tuple[str, ...] = ("circle", "rectangle", "triangle", "ring")
    # Deliberately uneven so that training and per-class AP see a rare class (ring, 10%).
    class_freqs: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)
    objects_per_image: tuple[int, int] = (2, 8)  # inclusive range, drawn before occlusion drops
    min_size: float = 6.0  # smallest extent sqrt(area) in px: about the least a stride-8 level resolves
    max_size_frac: float = 0.5  # largest extent as a fraction of min(H, W): half the image
    ring_min_size: float = 14.0  # smaller rings would have a 1-2 px hole and look like circles
    ring_hole: tuple[float, float] = (0.35, 0.65)  # inner/outer radius ratio of rings
    rect_aspect: tuple[float, float] = (1.0, 3.0)  # ordinary rectangles, long/short side (log-uniform)
    bar_prob: float = 0.3  # share of rectangles drawn as thin bars
    bar_aspect: tuple[float, float] = (4.0, 10.0)  # thin bars, long/short side up to 10:1
    triangle_min_angle: float = 20.0  # degrees; thinner slivers read as lines, not triangles
    min_visible_px: int = 12  # drop an instance whose visible area is below this many pixels
    min_visible_frac: float = 0.15  # ... or that shows less than this share of its in-image area
    # Colour distances (RGB, 0..441) are measured after lighting, so no object is washed out.
    min_contrast: float = 60.0  # object colour vs the mean background under its box
    min_object_contrast: float = 40.0  # colours of objects whose boxes overlap (keeps touching ones apart)
    distractor_lines: tuple[int, int] = (0, 6)  # low-contrast background lines per image (not objects)
    distractor_blobs: tuple[int, int] = (0, 5)  # soft background blobs per image (not objects)
    distractor_contrast: float = 40.0  # max per-channel delta of a distractor against the background
    brightness: float = 30.0  # global brightness offset, uniform in +-brightness (uint8 levels)
    contrast: tuple[float, float] = (0.7, 1.3)  # global contrast gain around mid-grey
    illumination: float = 0.3  # max relative gain change of the smooth illumination ramp, centre to edge
    noise_sigma: tuple[float, float] = (2.0, 8.0)  # per-pixel gaussian sensor noise, uint8 levels
    blur_prob: float = 0.5  # chance of a slight gaussian blur (sigma 0.5..1): soft, camera-like edges

    def __post_init__(self) -> None:
        h, w = self.image_hw
        if h < 16 or w < 16:
            raise BadInputError(f"synthetic image size {h}x{w} is too small: both sides must be at least 16")
        if len(self.class_names) != len(self.class_freqs) or not self.class_names:
            raise BadInputError("synthetic config: class_names and class_freqs must be non-empty, of equal length")
        bad = [n for n in self.class_names if n not in KNOWN_SHAPES]
        if bad or len(set(self.class_names)) != len(self.class_names):
            raise BadInputError(f"synthetic config: class names must be distinct shapes from {KNOWN_SHAPES}, "
                                f"got {self.class_names}")
        if any(f < 0 for f in self.class_freqs) or sum(self.class_freqs) <= 0:
            raise BadInputError("synthetic config: class_freqs must be non-negative with a positive sum")
        lo, hi = self.objects_per_image
        if not 0 <= lo <= hi <= 254:  # instance ids live in a uint8 map, 0 = background
            raise BadInputError(f"synthetic config: objects_per_image must satisfy 0 <= min <= max <= 254, "
                                f"got {lo}..{hi}")
        if not 0 < self.min_size <= self.max_size:
            raise BadInputError(f"synthetic config: min_size {self.min_size} must be in (0, {self.max_size:.1f}]")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def max_size(self) -> float:
        return self.max_size_frac * min(self.image_hw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Split:
    """A named, reproducible stream of samples: sample i uses ``default_rng([seed, i])``."""

    seed: int
    count: int


# Fixed seeds and sizes of the built-in splits. Different seeds give independent rng streams.
SPLITS: dict[str, Split] = {
    "train": Split(seed=1000, count=4000),  # rendered on the fly (~2.5 ms each): a count, not a file size
    "val": Split(seed=2000, count=200),  # evaluation (mask AP) of the shipped model
    "calib": Split(seed=3000, count=128),  # INT8 calibration images, disjoint from train/val
    "demo": Split(seed=4000, count=300),  # frames of the demo video (10 s at 30 fps)
}


def get_split(split: str | int | Split, count: int | None = None) -> Split:
    """A named split, a bare seed (``count`` then required) or a ``Split``; ``count`` overrides the size."""
    if isinstance(split, Split):
        base = split
    elif isinstance(split, str):
        if split not in SPLITS:
            raise BadInputError(f"unknown synthetic split {split!r}: choose one of {', '.join(SPLITS)}")
        base = SPLITS[split]
    elif isinstance(split, (int, np.integer)) and not isinstance(split, bool):
        if count is None:
            raise BadInputError(f"synthetic seed {split} needs an explicit image count")
        base = Split(seed=int(split), count=int(count))
    else:
        raise BadInputError(f"expected a split name or an integer seed, got {split!r}")
    if count is not None:
        if count < 0:
            raise BadInputError(f"image count must be non-negative, got {count}")
        base = Split(seed=base.seed, count=int(count))
    return base


# ---------------------------------------------------------------------------------------------
# Scene description
# ---------------------------------------------------------------------------------------------
@dataclass
class _Obj:
    """One object: shape geometry relative to its centre, plus appearance."""

    label: int
    shape: str
    size: float  # extent sqrt(area) in px (outer disc for rings)
    cx: float
    cy: float
    radius: float = 0.0  # circle / ring outer radius
    inner: float = 0.0  # ring inner radius
    poly: np.ndarray | None = None  # (N, 2) float64 vertices relative to the centre, unrotated
    angle: float = 0.0  # rotation of ``poly`` in radians
    colour: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))  # BGR float32
    # Video only: constant velocity (px/frame) and angular velocity (rad/frame).
    vx: float = 0.0
    vy: float = 0.0
    omega: float = 0.0

    def extent(self) -> float:
        """Half-size of an axis-aligned box that always contains the shape (any rotation)."""
        if self.poly is not None:
            return float(np.sqrt((self.poly ** 2).sum(1)).max()) + 1.0
        return self.radius + 1.0


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else float(lo)


def _triangle(rng: np.random.Generator, size: float, min_angle_deg: float) -> np.ndarray:
    """Random triangle with area size**2 and all angles >= min_angle; vertices around the centroid."""
    min_angle = math.radians(min_angle_deg)
    pts = None
    for _ in range(30):
        # Three points on a circle: the triangle's angles are half the arcs opposite them.
        t = np.sort(rng.uniform(0.0, 2 * math.pi, 3))
        arcs = np.diff(np.concatenate([t, t[:1] + 2 * math.pi]))
        pts = np.stack([np.cos(t), np.sin(t)], 1)
        if (arcs / 2).min() >= min_angle:
            break
    else:  # fall back to an equilateral triangle, rotated
        t = rng.uniform(0, 2 * math.pi) + np.arange(3) * 2 * math.pi / 3
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    assert pts is not None
    pts = pts - pts.mean(0)
    (x0, y0), (x1, y1), (x2, y2) = pts
    area = abs((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)) / 2
    return pts * (size / math.sqrt(area))


def _sample_shape(rng: np.random.Generator, cfg: SyntheticConfig, label: int, cx: float, cy: float,
                  max_size: float | None = None) -> _Obj:
    """Geometry of one object of class ``label`` (size drawn log-uniformly so small ones are common)."""
    shape = cfg.class_names[label]
    hi = cfg.max_size if max_size is None else max_size
    lo = min(cfg.ring_min_size, hi) if shape == "ring" else min(cfg.min_size, hi)
    size = _log_uniform(rng, lo, hi)
    obj = _Obj(label=label, shape=shape, size=size, cx=cx, cy=cy)
    if shape in ("circle", "ring"):
        obj.radius = size / math.sqrt(math.pi)  # disc area = size**2
        if shape == "ring":
            obj.inner = obj.radius * rng.uniform(*cfg.ring_hole)
    elif shape == "rectangle":
        bar = rng.random() < cfg.bar_prob
        aspect = _log_uniform(rng, *(cfg.bar_aspect if bar else cfg.rect_aspect))
        long_, short = size * math.sqrt(aspect), size / math.sqrt(aspect)
        obj.poly = np.array([[-long_, -short], [long_, -short], [long_, short], [-long_, short]]) / 2
        obj.angle = rng.uniform(0, math.pi)
    else:  # triangle
        obj.poly = _triangle(rng, size, cfg.triangle_min_angle)
        obj.angle = rng.uniform(0, 2 * math.pi)
    return obj


def _rasterize(obj: _Obj, hw: tuple[int, int]) -> tuple[np.ndarray, tuple[slice, slice]] | None:
    """Unoccluded mask of ``obj`` inside its in-image box: uint8 (y1-y0, x1-x0) 0/1 and the box slices.

    Drawing into the box only (not a full-size canvas) keeps the cost proportional to the object.
    Returns None when the object lies entirely outside the image.
    """
    h, w = hw
    e = obj.extent()
    x0, x1 = max(0, int(obj.cx - e)), min(w, int(math.ceil(obj.cx + e)) + 1)
    y0, y1 = max(0, int(obj.cy - e)), min(h, int(math.ceil(obj.cy + e)) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    # cv2 puts pixel centres at integer coordinates; our geometry uses the same convention.
    cx, cy = obj.cx - x0, obj.cy - y0
    if obj.poly is None:
        centre = (int(round(cx * _ONE)), int(round(cy * _ONE)))
        cv2.circle(mask, centre, int(round(obj.radius * _ONE)), 1, -1, cv2.LINE_8, _SHIFT)
        if obj.shape == "ring":
            cv2.circle(mask, centre, int(round(obj.inner * _ONE)), 0, -1, cv2.LINE_8, _SHIFT)
    else:
        c, s = math.cos(obj.angle), math.sin(obj.angle)
        rot = obj.poly @ np.array([[c, s], [-s, c]])
        pts = np.round((rot + (cx, cy)) * _ONE).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, _SHIFT)
    return mask, (slice(y0, y1), slice(x0, x1))


def _pick_colour(rng: np.random.Generator, ref: np.ndarray, min_ref: float, others: list[np.ndarray],
                 min_other: float, lit: tuple[float, np.ndarray]) -> np.ndarray:
    """A random BGR colour float32 (3,), at least ``min_ref`` from ``ref`` and ``min_other`` from ``others``.

    Distances are measured *after* the image's lighting (``lit`` = (offset, gain (3,)) at the
    object) and clipping to 0..255, so over-exposure cannot silently erase an object.
    """
    offset, gain = lit

    def light(c: np.ndarray) -> np.ndarray:
        return np.clip((c + offset) * gain, 0, 255)

    ref_l = light(ref)
    others_l = [light(o) for o in others]
    best, best_margin = None, -np.inf
    for _ in range(24):  # rejection sampling; usually the first or second draw qualifies
        col = rng.uniform(0, 255, 3).astype(np.float32)
        col_l = light(col)
        margin = min([float(np.linalg.norm(col_l - ref_l)) - min_ref]
                     + [float(np.linalg.norm(col_l - o)) - min_other for o in others_l])
        if margin >= 0:
            return col
        if margin > best_margin:
            best, best_margin = col, margin
    assert best is not None  # no draw qualified: the one with the best worst-case margin
    return best


def _lowres(hw: tuple[int, int]) -> tuple[int, int]:
    """Quarter resolution, where the background is built (upsampling once is much cheaper)."""
    return max(4, -(-hw[0] // 4)), max(4, -(-hw[1] // 4))


@functools.lru_cache(maxsize=8)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised coordinates X, Y float32 (n, n, 3) in [-1, 1] of a tiny n x n grid."""
    v = np.linspace(-1, 1, n, dtype=np.float32)
    X = np.ascontiguousarray(np.broadcast_to(v[None, :, None], (n, n, 3)))
    Y = np.ascontiguousarray(np.broadcast_to(v[:, None, None], (n, n, 3)))
    return X, Y


@functools.lru_cache(maxsize=4)
def _noise_tile(hw: tuple[int, int]) -> np.ndarray:
    """A fixed N(0, 1) float32 (2H, 2W, 3) tile; each image adds a window at a random offset.

    Drawing 200k fresh normals per image would cost ~2 ms, most of the budget; a random window
    of a fixed tile is as good as fresh noise for training and costs nothing.
    """
    h, w = hw
    tile = np.random.default_rng(0x5EED).standard_normal((2 * h, 2 * w, 3), dtype=np.float32)
    tile.setflags(write=False)
    return tile


@functools.lru_cache(maxsize=4)
def _texture_tile(hw: tuple[int, int]) -> np.ndarray:
    """A fixed smooth grey texture, float32 (2H, 2W, 3) roughly N(0, 1), features ~H/8 px wide.

    Objects are modulated by a random window of it (same trick as ``_noise_tile``).
    """
    h, w = hw
    rng = np.random.default_rng(0x7E47)
    small = rng.standard_normal((16, 16)).astype(np.float32)
    tex = cv2.resize(small, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    tex = np.repeat((tex / tex.std())[:, :, None], 3, axis=2)
    tex.setflags(write=False)
    return tex


def _window(tile: np.ndarray, hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = hw
    oy, ox = int(rng.integers(0, tile.shape[0] - h + 1)), int(rng.integers(0, tile.shape[1] - w + 1))
    return tile[oy:oy + h, ox:ox + w]


def _smooth(rng: np.random.Generator, cells: int, hw: tuple[int, int]) -> np.ndarray:
    """Smooth random field float32 (h, w, 3), roughly N(0, 1), with ``cells`` bumps per side."""
    small = rng.standard_normal((cells, cells, 3)).astype(np.float32)
    return cv2.resize(small, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)


def _up(field: np.ndarray, hw: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Bilinear resampling of a small float32 (h, w, 3) field to (H, W, 3), into ``out`` if given."""
    return cv2.resize(field, (hw[1], hw[0]), dst=out, interpolation=cv2.INTER_LINEAR)


class _Workspace:
    """Reusable full-size buffers of one thread.

    Every fresh 0.8 MB float image costs page faults on first touch (~0.5 ms each on a VM,
    more than the arithmetic); reusing buffers keeps a 256x256 sample near 2 ms.
    """

    def __init__(self, hw: tuple[int, int]) -> None:
        self.hw = hw
        self.bg = np.empty((*hw, 3), np.float32)  # background, then the composed image
        self.gain = np.empty((*hw, 3), np.float32)  # lighting gain
        self.fg = np.empty((*hw, 3), np.float32)  # object colours
        self.tmp = np.empty((*hw, 3), np.float32)
        self.id3 = np.empty((*hw, 3), np.uint8)  # id map replicated for cv2.LUT


_TLS = threading.local()


def _workspace(hw: tuple[int, int]) -> _Workspace:
    ws = getattr(_TLS, "ws", None)
    if ws is None or ws.hw != hw:
        ws = _TLS.ws = _Workspace(hw)
    return ws


def _background(rng: np.random.Generator, cfg: SyntheticConfig, out: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Cluttered background, float32 BGR at full (H, W, 3) (into ``out`` if given) and quarter resolution.

    A colour ramp, large soft patches, mid-frequency texture and soft blobs are built small and
    upsampled once; thin low-contrast lines are drawn at full resolution.
    """
    h, w = cfg.image_hw
    lhw = _lowres(cfg.image_hw)
    X, Y = _grid(4)
    base = rng.uniform(30, 225, 3).astype(np.float32)
    gx, gy = rng.uniform(-40, 40, (2, 3)).astype(np.float32)
    # Ramp + large patches on a 4x4 grid (cubic upsampling keeps the ramp linear) ...
    coarse = base + X * gx + Y * gy + rng.standard_normal((4, 4, 3)).astype(np.float32) * np.float32(rng.uniform(5, 30))
    mid = cv2.resize(coarse, (24, 24), interpolation=cv2.INTER_CUBIC)
    # ... plus mid-frequency texture on a 24x24 grid (features ~ 10 px at 256).
    mid += rng.standard_normal((24, 24, 3)).astype(np.float32) * np.float32(rng.uniform(0, 12))
    low = cv2.resize(mid, (lhw[1], lhw[0]), interpolation=cv2.INTER_CUBIC)

    # Soft blobs: blurred at low resolution so they have no sharp edge (objects always do),
    # but they can be as big as objects and differ from the background around them.
    n_blobs = int(rng.integers(cfg.distractor_blobs[0], cfg.distractor_blobs[1] + 1))
    if n_blobs:
        canvas = np.zeros((*lhw, 3), np.float32)
        for _ in range(n_blobs):
            centre = (int(rng.integers(0, lhw[1])), int(rng.integers(0, lhw[0])))
            axes = (int(rng.integers(2, max(3, lhw[1] // 4))), int(rng.integers(2, max(3, lhw[0] // 4))))
            delta = rng.uniform(-cfg.distractor_contrast, cfg.distractor_contrast, 3)
            cv2.ellipse(canvas, centre, axes, float(rng.uniform(0, 180)), 0, 360, delta.tolist(), -1)
        low += cv2.GaussianBlur(canvas, (0, 0), 1.5)
    bg = _up(low, (h, w), out)

    # Lines and curves: sharp but thin, low-contrast clutter that is *not* an object.
    n_lines = int(rng.integers(cfg.distractor_lines[0], cfg.distractor_lines[1] + 1))
    for _ in range(n_lines):
        delta = rng.uniform(-cfg.distractor_contrast, cfg.distractor_contrast, 3)
        colour = np.clip(base + delta, 0, 255).tolist()
        n_pts = int(rng.integers(2, 5))
        pts = np.stack([rng.uniform(-0.1 * w, 1.1 * w, n_pts), rng.uniform(-0.1 * h, 1.1 * h, n_pts)], 1)
        cv2.polylines(bg, [np.round(pts * _ONE).astype(np.int32)], False, colour,
                      int(rng.integers(1, 3)), cv2.LINE_AA, _SHIFT)
    return bg, low


def _local_mean(low: np.ndarray, obj: _Obj, hw: tuple[int, int]) -> np.ndarray:
    """Mean background colour float32 (3,) under the object's box, from the quarter-res field."""
    lh, lw = low.shape[:2]
    e = obj.extent()
    fy, fx = lh / hw[0], lw / hw[1]
    y0 = min(lh - 1, max(0, int((obj.cy - e) * fy)))
    x0 = min(lw - 1, max(0, int((obj.cx - e) * fx)))
    y1 = max(y0 + 1, min(lh, int(math.ceil((obj.cy + e) * fy))))
    x1 = max(x0 + 1, min(lw, int(math.ceil((obj.cx + e) * fx))))
    return low[y0:y1, x0:x1].reshape(-1, 3).mean(0)


@dataclass
class _Look:
    """Global photometric conditions of one image (or of a whole video)."""

    offset: float  # added before ``gain``: brightness and contrast folded into one affine map
    gain: np.ndarray  # float32 (H, W, 3): contrast times the smooth illumination field
    tex: np.ndarray  # float32 (H, W, 3): smooth field that modulates object colours
    shade: float  # texture amplitude on objects (relative)
    blur: float  # gaussian sigma, 0 = none
    noise: float  # sensor noise sigma (uint8 levels)


def _sample_look(rng: np.random.Generator, cfg: SyntheticConfig, gain_out: np.ndarray | None = None) -> _Look:
    X, Y = _grid(16)
    phi = rng.uniform(0, 2 * math.pi)
    strength = float(rng.uniform(0, cfg.illumination))
    # A linear ramp in a random direction plus a weak off-centre spotlight: smooth, never flat.
    illum = 1 + strength * (math.cos(phi) * X + math.sin(phi) * Y)
    sx, sy = (float(v) for v in rng.uniform(-1, 1, 2))  # python floats keep the maps float32
    spot = np.exp(-((X - sx) ** 2 + (Y - sy) ** 2) / np.float32(rng.uniform(0.3, 1.5)))
    illum += np.float32(rng.uniform(0, cfg.illumination)) * (spot - np.float32(0.5))
    contrast = float(rng.uniform(*cfg.contrast))
    brightness = float(rng.uniform(-cfg.brightness, cfg.brightness))
    blur = float(rng.uniform(0.5, 1.0)) if rng.random() < cfg.blur_prob else 0.0
    # (x - 128) * c + 128 + b == (x + offset) * c, with offset = (128 (1 - c) + b) / c.
    return _Look(offset=(128 * (1 - contrast) + brightness) / contrast,
                 gain=_up(illum * np.float32(contrast), cfg.image_hw, gain_out),
                 tex=_window(_texture_tile(cfg.image_hw), cfg.image_hw, rng),
                 shade=float(rng.uniform(0, 0.15)), blur=blur, noise=float(rng.uniform(*cfg.noise_sigma)))


def _visible(objs: list[_Obj], cfg: SyntheticConfig) -> tuple[np.ndarray, list[int]]:
    """Instance-id map uint8 (H, W) (0 = background, k + 1 = objs[kept[k]]) and the kept indices.

    Objects are painted in list order; instances with too little visible area are removed and
    the map is rebuilt without them, which only uncovers pixels (so kept ones stay kept).
    """
    rasters = [_rasterize(o, cfg.image_hw) for o in objs]
    idx = [i for i, r in enumerate(rasters) if r is not None]
    while True:
        idmap = np.zeros(cfg.image_hw, np.uint8)
        for k, i in enumerate(idx):
            mask, (ys, xs) = rasters[i]  # type: ignore[misc]
            idmap[ys, xs][mask.view(bool)] = k + 1
        ok = []
        for k, i in enumerate(idx):
            mask, (ys, xs) = rasters[i]  # type: ignore[misc]
            vis = int(np.count_nonzero(idmap[ys, xs] == k + 1))
            if vis >= cfg.min_visible_px and vis >= cfg.min_visible_frac * np.count_nonzero(mask):
                ok.append(i)
        if len(ok) == len(idx):
            return idmap, idx
        idx = ok


def _paint(bg: np.ndarray, objs: list[_Obj], idmap: np.ndarray, kept: list[int], look: _Look,
           rng: np.random.Generator, ws: _Workspace) -> np.ndarray:
    """Compose objects over ``bg`` (overwritten), then lighting, blur, noise: new uint8 (H, W, 3) BGR."""
    h, w = idmap.shape
    # Per-pixel colour lookup through cv2.LUT on the id map: ~10x faster than numpy fancy indexing.
    lut = np.zeros((256, 1, 3), np.float32)
    for k, i in enumerate(kept):
        lut[k + 1, 0] = objs[i].colour
    fg = cv2.LUT(cv2.merge([idmap, idmap, idmap], dst=ws.id3), lut, dst=ws.fg)
    tmp = cv2.multiply(fg, look.tex, dst=ws.tmp)
    fg = cv2.scaleAdd(tmp, look.shade, fg, dst=fg)  # colour * (1 + shade * texture)
    img = cv2.copyTo(fg, idmap, bg)  # objects where the id map is non-zero, background elsewhere
    img += np.float32(look.offset)
    img *= look.gain  # lighting acts on the whole scene, objects included
    if look.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), look.blur, dst=ws.tmp)
    img = cv2.scaleAdd(_window(_noise_tile((h, w)), (h, w), rng), look.noise, img, dst=img)
    return cv2.add(img, 0.0, dtype=cv2.CV_8U)  # rounds and saturates to 0..255


def _masks_labels(idmap: np.ndarray, objs: list[_Obj], kept: list[int]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.arange(1, len(kept) + 1, dtype=np.uint8)
    masks = (idmap[None] == ids[:, None, None]).view(np.uint8)
    labels = np.array([objs[i].label for i in kept], dtype=np.int64)
    return masks, labels


def render_sample(rng: np.random.Generator, cfg: SyntheticConfig = SyntheticConfig()
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image from ``rng``.

    Returns ``image_bgr`` uint8 (H, W, 3), ``masks`` uint8 (K, H, W) 0/1 visible and pairwise
    disjoint, ``labels`` int64 (K,) in 0..C-1 (painting order: later masks were drawn on top).
    """
    h, w = cfg.image_hw
    ws = _workspace(cfg.image_hw)
    bg, low = _background(rng, cfg, out=ws.bg)
    probs = np.asarray(cfg.class_freqs, np.float64)
    probs = probs / probs.sum()
    n = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
    labels = rng.choice(len(probs), size=n, p=probs)
    objs = [_sample_shape(rng, cfg, int(lab), rng.uniform(0, w), rng.uniform(0, h)) for lab in labels]
    # Painter's order: mostly large-to-small (small things in front, as in cluttered scenes)
    # with noise on the key so big objects also end up on top of smaller ones at times.
    order = np.argsort(-(np.log([o.size for o in objs]) + rng.normal(0, 0.6, n)), kind="stable")
    objs = [objs[i] for i in order]
    look = _sample_look(rng, cfg, gain_out=ws.gain)
    for k, o in enumerate(objs):
        e = o.extent()
        ref = _local_mean(low, o, cfg.image_hw)
        others = [p.colour for p in objs[:k] if abs(p.cx - o.cx) < e + p.extent() and abs(p.cy - o.cy) < e + p.extent()]
        gain = look.gain[min(h - 1, max(0, int(o.cy))), min(w - 1, max(0, int(o.cx)))]
        o.colour = _pick_colour(rng, ref, cfg.min_contrast, others, cfg.min_object_contrast, (look.offset, gain))
    idmap, kept = _visible(objs, cfg)
    image = _paint(bg, objs, idmap, kept, look, rng, ws)
    masks, out_labels = _masks_labels(idmap, objs, kept)
    return image, masks, out_labels


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of the stream ``seed`` (independent of every other index)."""
    return np.random.default_rng([int(seed), int(index)])


class SyntheticDataset:
    """Map-style, torch-free data set over a synthetic split; samples are generated on access.

    ``ds[i]`` is a ``Sample`` with ``image_id = i + 1``; the same ``(split, i, cfg)`` always
    gives the same pixels.
    """

    def __init__(self, split: str | int | Split = "train", cfg: SyntheticConfig = SyntheticConfig(),
                 count: int | None = None) -> None:
        self.split = get_split(split, count)
        self.cfg = cfg
        self.name = split if isinstance(split, str) else f"seed{self.split.seed}"

    def __len__(self) -> int:
        return self.split.count

    def __getitem__(self, index: int) -> Sample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for synthetic split of {n} samples")
        index = int(index) % n
        image, masks, labels = render_sample(sample_rng(self.split.seed, index), self.cfg)
        return Sample(image_bgr=image, masks=masks, labels=labels, image_id=index + 1)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.cfg.class_names

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    @property
    def cat_ids(self) -> list[int]:
        """COCO category id of each label (label + 1)."""
        return list(range(1, self.cfg.num_classes + 1))

    @property
    def image_ids(self) -> list[int]:
        return list(range(1, len(self) + 1))

    @functools.cached_property
    def coco_dict(self) -> dict[str, Any]:
        """Ground truth in COCO format (renders the whole split once, then cached)."""
        return synthetic_coco_dict(self.split, cfg=self.cfg)

    def materialize(self) -> list[Sample]:
        """All samples in memory (for small splits such as ``calib``)."""
        return list(self)


# ---------------------------------------------------------------------------------------------
# COCO export
# ---------------------------------------------------------------------------------------------
def _categories(cfg: SyntheticConfig) -> list[dict[str, Any]]:
    return [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(cfg.class_names)]


def _coco_annotations(masks: np.ndarray, labels: np.ndarray, image_id: int, first_id: int
                      ) -> list[dict[str, Any]]:
    """COCO annotations (compressed RLE, counts as str) for uint8 (K, H, W) masks."""
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    areas = mask_utils.area(rles)
    boxes = mask_utils.toBbox(rles)
    anns = []
    for k, rle in enumerate(rles):
        anns.append({
            "id": first_id + k,
            "image_id": int(image_id),
            "category_id": int(labels[k]) + 1,
            "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": float(areas[k]),
            "bbox": [float(v) for v in boxes[k]],
            "iscrowd": 0,
        })
    return anns


def _coco_info(cfg: SyntheticConfig, split: Split, what: str) -> dict[str, Any]:
    return {"description": f"solo-deploy synthetic shapes ({what})", "seed": split.seed,
            "count": split.count, "config": cfg.to_dict()}


def _build_coco(sp: Split, cfg: SyntheticConfig, what: str,
                on_image: Callable[[str, np.ndarray], None] | None = None) -> dict[str, Any]:
    """Render a split and collect its COCO dict; ``on_image(file_name, image_bgr)`` sees each image."""
    h, w = cfg.image_hw
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for i in range(sp.count):
        image, masks, labels = render_sample(sample_rng(sp.seed, i), cfg)
        name = f"{i:06d}.png"
        if on_image is not None:
            on_image(name, image)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        anns += _coco_annotations(masks, labels, i + 1, len(anns) + 1)
    return {"info": _coco_info(cfg, sp, what), "images": images, "annotations": anns,
            "categories": _categories(cfg)}


def _describe(split: str | int | Split, sp: Split) -> str:
    return split if isinstance(split, str) else f"seed {sp.seed}"


def synthetic_coco_dict(split: str | int | Split = "val", count: int | None = None,
                        cfg: SyntheticConfig = SyntheticConfig()) -> dict[str, Any]:
    """The COCO ground-truth dict of a split, in memory; identical to what ``write_coco`` writes.

    Image ids are ``index + 1``, category ids ``label + 1``, masks compressed RLE (counts as str).
    """
    sp = get_split(split, count)
    return _build_coco(sp, cfg, _describe(split, sp))


def write_coco(out_dir: str | Path, split_or_seed: str | int | Split = "val", n_images: int | None = None,
               cfg: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write ``out_dir/images/000000.png ...`` and ``out_dir/annotations.json``; return the JSON path.

    ``n_images`` defaults to the split's count (required with a bare seed). ``file_name``
    entries are bare names, resolved under ``images/`` by ``CocoDataset``. Every file is
    written atomically; the JSON goes last, so its presence means the set is complete.
    """
    sp = get_split(split_or_seed, n_images)
    out = Path(out_dir)

    def save(name: str, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(".png", image)
        if not ok:
            raise RuntimeFailure(f"could not encode synthetic image {name} as PNG")
        write_bytes(out / "images" / name, buf.tobytes())

    coco = _build_coco(sp, cfg, _describe(split_or_seed, sp), save)
    path = out / "annotations.json"
    write_json(path, coco)
    return path


# ---------------------------------------------------------------------------------------------
# Video
# ---------------------------------------------------------------------------------------------
def _video_frames(seed: int, n_frames: int, cfg: SyntheticConfig
                  ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Frames with track ids: (image uint8 (H,W,3), masks uint8 (K,H,W), labels int64 (K,), tracks int64 (K,))."""
    rng = np.random.default_rng([int(seed), _VIDEO_STREAM])
    h, w = cfg.image_hw
    bg, low = _background(rng, cfg)
    look = _sample_look(rng, cfg)
    look.shade = 0.0  # the texture is fixed to the frame: moving objects would slide under it
    probs = np.asarray(cfg.class_freqs, np.float64)
    probs = probs / probs.sum()
    n = int(rng.integers(cfg.objects_per_image[0], cfg.objects_per_image[1] + 1))
    labels = rng.choice(len(probs), size=n, p=probs)
    ref = low.reshape(-1, 3).mean(0)  # objects travel everywhere: contrast against the global mean
    objs: list[_Obj] = []
    for lab in labels:
        # Moving objects sweep the whole frame and would hide everything if large: cap at 1/3 of the max.
        o = _sample_shape(rng, cfg, int(lab), rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h,
                          max_size=max(cfg.ring_min_size, cfg.max_size / 3))
        o.colour = _pick_colour(rng, ref, cfg.min_contrast, [p.colour for p in objs], cfg.min_object_contrast,
                                (look.offset, look.gain[h // 2, w // 2]))
        speed, heading = rng.uniform(0.5, 2.5), rng.uniform(0, 2 * math.pi)
        o.vx, o.vy = speed * math.cos(heading), speed * math.sin(heading)
        o.omega = float(rng.uniform(-0.03, 0.03)) if o.poly is not None else 0.0
        objs.append(o)
    tracks_all = np.arange(n, dtype=np.int64)
    for _ in range(n_frames):
        idmap, kept = _visible(objs, cfg)
        ws = _workspace(cfg.image_hw)
        np.copyto(ws.bg, bg)  # the scene's background is reused by every frame
        image = _paint(ws.bg, objs, idmap, kept, look, rng, ws)
        masks, labs = _masks_labels(idmap, objs, kept)
        yield image, masks, labs, tracks_all[kept]
        for o in objs:  # constant velocity; reflect off the borders (centre stays inside the frame)
            o.cx += o.vx
            o.cy += o.vy
            o.angle += o.omega
            if not 0 <= o.cx <= w - 1:
                o.vx = -o.vx
                o.cx = min(max(o.cx, 0.0), w - 1.0)
            if not 0 <= o.cy <= h - 1:
                o.vy = -o.vy
                o.cy = min(max(o.cy, 0.0), h - 1.0)


def render_video_frames(seed: int = SPLITS["demo"].seed, n_frames: int = SPLITS["demo"].count,
                        cfg: SyntheticConfig = SyntheticConfig()
                        ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Frames of a synthetic video: (image_bgr uint8 (H,W,3), masks uint8 (K,H,W), labels int64 (K,)).

    The scene (background, lighting, objects) is fixed; objects move at constant velocity,
    spin slowly and bounce off the borders. Objects keep their painting order, so mask k of
    a frame is the k-th of the objects visible in it (see ``write_video``'s ``track_id``).
    """
    for image, masks, labels, _ in _video_frames(seed, n_frames, cfg):
        yield image, masks, labels


def render_video_tracks(seed: int = SPLITS["demo"].seed, n_frames: int = SPLITS["demo"].count,
                        cfg: SyntheticConfig = SyntheticConfig()
                        ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``render_video_frames`` with each object's identity: (image_bgr, masks, labels, track_ids
    int64 (K,)); an object keeps its id in every frame it is visible in (ids from 0)."""
    yield from _video_frames(seed, n_frames, cfg)


def write_video(path: str | Path, n_frames: int = SPLITS["demo"].count, seed: int = SPLITS["demo"].seed,
                cfg: SyntheticConfig = SyntheticConfig(), fps: float = 30) -> tuple[Path, Path]:
    """Write a synthetic video (``.mp4``: mp4v, ``.avi``: MJPG) and its COCO ground truth.

    The ground truth goes to ``path`` with suffix ``.json``: one image per frame (``id`` =
    frame index + 1, ``frame_index``), annotations carry a stable ``track_id``. Both files are
    written atomically. Returns ``(video_path, json_path)``.
    """
    path = Path(path)
    fourccs = {".mp4": "mp4v", ".avi": "MJPG"}
    suffix = path.suffix.lower()
    if suffix not in fourccs:
        raise BadInputError(f"cannot write video {path}: use a .mp4 or .avi file name")
    if n_frames < 1:
        raise BadInputError(f"a video needs at least one frame, got {n_frames}")
    h, w = cfg.image_hw
    images, anns = [], []
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourccs[suffix]), float(fps), (w, h))
        if not writer.isOpened():
            raise RuntimeFailure(f"OpenCV cannot write {fourccs[suffix]} video to {path}")
        try:
            for i, (image, masks, labels, tracks) in enumerate(_video_frames(seed, n_frames, cfg)):
                writer.write(image)
                images.append({"id": i + 1, "file_name": f"{path.name}#{i:06d}", "frame_index": i,
                               "height": h, "width": w})
                frame_anns = _coco_annotations(masks, labels, i + 1, len(anns) + 1)
                for a, t in zip(frame_anns, tracks):
                    a["track_id"] = int(t)
                anns += frame_anns
        finally:
            writer.release()
        if tmp.stat().st_size == 0:  # VideoWriter.write fails silently
            raise RuntimeFailure(f"OpenCV wrote no video data to {path}")
    sp = Split(seed=int(seed), count=int(n_frames))
    coco = {"info": {**_coco_info(cfg, sp, f"video {path.name}"), "fps": float(fps)},
            "images": images, "annotations": anns, "categories": _categories(cfg)}
    json_path = path.with_suffix(".json")
    write_json(json_path, coco)
    return path, json_path
