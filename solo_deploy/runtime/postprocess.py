"""SOLO / SOLOv2 post-processing, written once against the array API.

The same code runs on numpy, torch (CPU or CUDA) and CuPy arrays: every operation goes through
``xp = array_namespace(...)`` of the inputs, so a CUDA tensor stays on its device until the
caller asks for host arrays with :func:`to_numpy`. torch / cupy are never imported here;
array-api-compat only touches them when the inputs are of that kind.

Inputs are the network outputs after the shared decode step (done by the model code):

* ``scores``  (N, cells, C) float32: sigmoid category scores, point-NMS applied (non-peaks are 0);
  cells are ordered level by level, row-major inside a level.
* ``kernels`` (N, cells, E) float32: each cell's mask kernel.
* ``mask_feats``: L arrays (N, E, h_l, w_l). L == 1 for SOLOv2 (one stride-4 map shared by every
  cell); L == num_levels for SOLO (cells of level l use map l, upsampled to stride 4).
* decoupled SOLO has no ``kernels`` (None); its ``mask_feats`` are the num_levels x-maps, then the
  num_levels y-maps, (N, S_l, h_l, w_l) logits of the grid's columns and rows.

Per image (the mmdetection SOLO / SOLOv2 test procedure, vectorised, with bounded memory):

1. candidates (cell, class) with score > ``score_thr``; at most ``max_candidates`` (K0) of them,
   the top category scores. The reference has no such cap; its results are ours exactly
   whenever an image has at most K0 candidates (3840 by default, TensorRT's largest TopK);
2. masks at stride 4: SOLOv2 ``sigmoid(kernels @ features)``; SOLO ``sigmoid`` at each level's
   resolution, then bilinear upsampling of the probabilities (the reference's order); decoupled
   SOLO the same for the cell's column x-map and row y-map, then their product;
3. binary = soft > ``mask_thr``; keep candidates whose mask area is larger than their cell's stride;
4. score *= maskness (mean soft value inside the binary mask);
5. sort, keep the top ``nms_pre``, Matrix NMS (same class only), keep decayed score >=
   ``update_thr``, top ``max_per_img``.

Steps 2-4 run in chunks of candidates, so the number of candidates (up to K0) does not decide
the memory: when the masks of all candidates do not fit in one chunk (``_MASK_CHUNK_ELEMS``
floats), only the ``nms_pre`` kept in step 5 are computed a second time. Peak memory is about
max(``nms_pre``, chunk) x (h/4 x w/4) x 5 bytes (float masks and their binary form), ~170 MB
at 1333 x 800 with ``nms_pre`` 500.

The only Python loops are over images, over the (<= 5) SOLO feature levels, over the classes
present in the CPU Matrix NMS, and over paste groups in :func:`masks_to_image`; never over
instances or grid cells.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from array_api_compat import array_namespace, is_cupy_array, is_numpy_array, is_torch_array
from array_api_compat import device as array_device

from ..errors import BadInputError

if TYPE_CHECKING:  # type-only: the runtime must not import the model package (it may pull in torch)
    from ..core.config import PostprocessConfig
    from ..preprocess import Letterbox

Array = Any  # an array of any array-API namespace (numpy.ndarray, torch.Tensor, cupy.ndarray)

__all__ = [
    "CellInfo",
    "Detections",
    "cell_info",
    "logit",
    "masks_to_crops",
    "masks_to_image",
    "matrix_nms",
    "postprocess_batch",
    "postprocess_single",
    "resize_bilinear",
    "resize_matrix",
    "to_numpy",
]

# Logits are clipped before exp(): sigmoid(30) is exactly 1.0 in float32 and sigmoid(-30) < 1e-13,
# so nothing a threshold or a mean can see changes, while exp() never overflows (no inf, no
# RuntimeWarning on numpy) and never returns a subnormal float (exp(-88) would; subnormals take
# a slow path on x86 CPUs).
_LOGIT_CLIP = 30.0
# Floats in one masks_to_image temporary (256 MiB of float32): bounds memory on large images.
_IMAGE_CHUNK_ELEMS = 1 << 26
# Floats of candidate masks computed at once in postprocess_single (64 MiB of float32).
_MASK_CHUNK_ELEMS = 1 << 24
_PASTE_GROUP = 16  # instances pasted per group in masks_to_image (one window size per group)


# ---------------------------------------------------------------------------------------------
# Grid cell bookkeeping
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CellInfo:
    """Per-cell metadata for the flattened grid (host numpy, read-only).

    ``level`` (cells,) int64: pyramid level of each cell. ``stride`` (cells,) int64: that level's
    stride (the mask-area threshold of step 3). ``feat_index`` (cells,) int64: which entry of
    ``mask_feats`` the cell's mask uses (all 0 for SOLOv2, ``level`` for SOLO and for the x-maps
    of decoupled SOLO, whose y-maps follow at ``num_levels + level``). ``row`` / ``col`` (cells,)
    int64: the cell's place in its level's grid (decoupled SOLO's y-map and x-map channels).
    """

    grids: tuple[int, ...]
    strides: tuple[int, ...]
    num_feature_levels: int
    level: np.ndarray
    stride: np.ndarray
    feat_index: np.ndarray
    row: np.ndarray
    col: np.ndarray
    decoupled: bool = False

    @property
    def num_cells(self) -> int:
        return int(self.level.shape[0])


def cell_info(grids: Sequence[int], strides: Sequence[int], num_feature_levels: int,
              decoupled: bool = False) -> CellInfo:
    """Build :class:`CellInfo` for grids S_l (cells = sum S_l^2) and their strides.

    ``num_feature_levels`` is 1 (SOLOv2, one shared mask feature map) or ``len(grids)`` (SOLO);
    ``decoupled`` (decoupled SOLO: x- and y-maps per level) needs ``2 * len(grids)``.
    """
    grids_t = tuple(int(g) for g in grids)
    strides_t = tuple(int(s) for s in strides)
    if not grids_t or len(grids_t) != len(strides_t):
        raise BadInputError(f"need one stride per grid, got grids {grids_t} and strides {strides_t}")
    if min(grids_t) < 1 or min(strides_t) < 1:
        raise BadInputError(f"grids and strides must be positive, got {grids_t} and {strides_t}")
    if decoupled and num_feature_levels != 2 * len(grids_t):
        raise BadInputError(f"decoupled SOLO needs {2 * len(grids_t)} mask maps (x and y per level), "
                            f"got {num_feature_levels}")
    if not decoupled and num_feature_levels not in (1, len(grids_t)):
        raise BadInputError(
            f"num_feature_levels must be 1 (SOLOv2) or {len(grids_t)} (SOLO), got {num_feature_levels}"
        )
    counts = [g * g for g in grids_t]
    level = np.repeat(np.arange(len(grids_t), dtype=np.int64), counts)
    stride = np.repeat(np.asarray(strides_t, dtype=np.int64), counts)
    feat_index = level.copy() if num_feature_levels > 1 else np.zeros_like(level)
    in_level = np.concatenate([np.arange(c, dtype=np.int64) for c in counts])
    side = np.repeat(np.asarray(grids_t, dtype=np.int64), counts)
    row, col = in_level // side, in_level % side
    for a in (level, stride, feat_index, row, col):
        a.setflags(write=False)  # shared by every call: nobody may edit them in place
    return CellInfo(grids_t, strides_t, int(num_feature_levels), level, stride, feat_index, row, col, bool(decoupled))


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------
@dataclass
class Detections:
    """Instances of one image, in the input's namespace and device, sorted by score (desc).

    ``soft_masks`` (K, h4, w4) float32 at stride 4 of the network input; ``labels`` (K,) int64
    (contiguous class index 0..C-1); ``scores`` (K,) float32 (after maskness and Matrix NMS).
    """

    soft_masks: Array
    labels: Array
    scores: Array

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def to_numpy(self) -> Detections:
        """The same detections as host numpy arrays."""
        return Detections(to_numpy(self.soft_masks), to_numpy(self.labels), to_numpy(self.scores))


def to_numpy(x: Array) -> np.ndarray:
    """Any supported array (numpy, torch on any device, CuPy) -> host numpy array."""
    if is_numpy_array(x):
        return np.asarray(x)
    if is_torch_array(x):
        return x.detach().cpu().numpy()
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


# ---------------------------------------------------------------------------------------------
# Bilinear resizing as interpolation matrices
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def _resize_matrix_f64(in_size: int, out_size: int) -> np.ndarray:
    # Half-pixel centres (align_corners=False): output pixel o samples source x = (o+.5)*in/out-.5,
    # clamped to the first pixel on the left and to the last one on the right, exactly as
    # torch's upsample_bilinear2d and cv2.INTER_LINEAR do (no antialiasing when shrinking).
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    src = np.maximum(src, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = np.clip(src - i0, 0.0, 1.0)
    m = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), 1.0 - frac)  # add.at: i0 == i1 at the right edge sums to weight 1
    np.add.at(m, (rows, i1), frac)
    m.setflags(write=False)
    return m


def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 host matrix R with ``R @ v`` = 1-D bilinear resize of ``v``.

    Matches ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` per axis
    (torch works out source coordinates in float32, so at non-integer ratios it differs by up to
    ~3e-6 on values in [0, 1]) and ``cv2.resize(..., INTER_LINEAR)`` on float32 to ~1e-7. cv2 on
    uint8 images uses 11-bit fixed-point weights and differs by up to ~1 grey level.
    """
    if in_size < 1 or out_size < 1:
        raise BadInputError(f"cannot resize {in_size} -> {out_size} pixels")
    return _resize_matrix_f64(int(in_size), int(out_size))


@lru_cache(maxsize=64)
def _crop_resize_matrix_f64(mask_size: int, input_size: int, keep: int, out_size: int) -> np.ndarray:
    # Stride-4 -> network input (x4), keep the first `keep` pixels (top-left letterbox: the crop is
    # a row selection), then -> original size. All three are linear, so they fuse into one matrix.
    up = resize_matrix(mask_size, input_size)[:keep]
    return resize_matrix(keep, out_size) @ up


@lru_cache(maxsize=64)
def _support_bounds(mask_size: int, input_size: int, keep: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each stride-4 cell j: the first and last output index whose bilinear weight on j is
    non-zero (out_size and -1 for cells that only feed the cropped padding)."""
    nz = _crop_resize_matrix_f64(mask_size, input_size, keep, out_size) != 0  # (out, mask_size)
    any_ = nz.any(axis=0)
    first = np.where(any_, nz.argmax(axis=0), out_size)
    last = np.where(any_, out_size - 1 - nz[::-1].argmax(axis=0), -1)
    return first.astype(np.int64), last.astype(np.int64)


def _box_range(xp: Any, hit: Array, bounds: tuple[np.ndarray, np.ndarray], dev: Any) -> tuple[Array, Array]:
    """hit (K, n) bool cells above the threshold -> output range [lo, hi) per instance (K,)."""
    first = _as_xp(xp, bounds[0], xp.int64, dev)
    last = _as_xp(xp, bounds[1], xp.int64, dev)
    big = 1 << 30
    lo = xp.min(xp.where(hit, first[None, :], xp.full_like(first[None, :], big)), axis=1)
    hi = xp.max(xp.where(hit, last[None, :] + 1, xp.zeros_like(last[None, :])), axis=1)
    return lo, xp.where(hi > lo, hi, lo)


def _on_gpu(x: Array) -> bool:
    return is_cupy_array(x) or (is_torch_array(x) and x.device.type != "cpu")


def _as_xp(xp: Any, a: np.ndarray, dtype: Any, dev: Any) -> Array:
    # copy=True: cached host arrays are read-only and must never alias a caller-visible tensor.
    return xp.asarray(a, dtype=dtype, device=dev, copy=True)


def _float_dtype(xp: Any, x: Array) -> Any:
    return x.dtype if xp.isdtype(x.dtype, "real floating") else xp.float32


def _apply_separable(xp: Any, x: Array, ry: Array, rx: Array) -> Array:
    """(..., h, w) -> (..., H, W) = ry @ x @ rx^T, multiplying the cheaper axis first.

    ``ry`` (H, h) and ``rx`` (W, w), or stacks of them that broadcast against ``x``."""
    h, w = x.shape[-2], x.shape[-1]
    out_h, out_w = ry.shape[-2], rx.shape[-2]
    if out_h * w * (h + out_w) <= h * out_w * (w + out_h):
        return (ry @ x) @ xp.matrix_transpose(rx)
    return ry @ (x @ xp.matrix_transpose(rx))


def resize_bilinear(x: Array, out_hw: tuple[int, int]) -> Array:
    """Bilinear resize (align_corners=False) of the last two axes: (..., h, w) -> (..., H, W).

    Two small matrix products (Ry @ x @ Rx^T), so numpy, torch and CuPy share it. Float inputs
    keep their dtype, others become float32.
    """
    xp = array_namespace(x)
    dev = array_device(x)
    dtype = _float_dtype(xp, x)
    x = xp.astype(x, dtype, copy=False)
    h, w = x.shape[-2], x.shape[-1]
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    if (h, w) == (out_h, out_w):
        return x
    ry = _as_xp(xp, resize_matrix(h, out_h), dtype, dev)
    rx = _as_xp(xp, resize_matrix(w, out_w), dtype, dev)
    return _apply_separable(xp, x, ry, rx)


# ---------------------------------------------------------------------------------------------
# Matrix NMS
# ---------------------------------------------------------------------------------------------
def _decay(xp: Any, masks: Array, scores: Array, sum_masks: Array, kernel: str, sigma: float,
           labels: Array | None = None) -> Array:
    """Matrix-NMS decayed scores (K,) of instances sorted by score (desc).

    ``masks`` (K, P) float32 binary, ``scores`` (K,), ``sum_masks`` (K,); ``labels`` (K,) when
    the instances are of several classes (only same-class pairs decay each other), None for one.
    """
    k = int(scores.shape[0])
    inter = masks @ xp.matrix_transpose(masks)  # (K, K) pixel counts: one matmul
    union = sum_masks[:, None] + sum_masks[None, :] - inter
    iou = inter / xp.maximum(union, 1e-6)  # empty-vs-empty pairs: 0 / eps = 0 instead of NaN
    idx = xp.arange(k, device=array_device(scores))
    # pair[i, j]: i is scored higher than j (upper triangle), of the same class.
    pair = idx[:, None] < idx[None, :]
    if labels is not None:
        pair = pair & (labels[:, None] == labels[None, :])
    decay_iou = xp.where(pair, iou, xp.zeros_like(iou))
    # comp[i]: how much i is itself suppressed, i.e. its max IoU with any higher-scored same-class
    # instance. A suppressor that is already suppressed decays others less (SOLOv2, eq. 4).
    comp = xp.max(decay_iou, axis=0)[:, None]
    if kernel == "gaussian":
        ratio = xp.exp(-sigma * (decay_iou * decay_iou - comp * comp))
    else:
        # The reference divides by (1 - comp) unguarded; comp == 1 (a duplicate of a higher mask)
        # would give inf/NaN there, the clamp gives a large finite ratio instead.
        ratio = (1.0 - decay_iou) / xp.maximum(1.0 - comp, 1e-6)
    # Non-pairs contribute 1 (no decay). Every column has one (the diagonal), so the coefficient is
    # min(1, min over pairs); identical to the reference, whose non-pair entries are all >= 1 and
    # whose first row is exactly 1 or a pair.
    ratio = xp.where(pair, ratio, xp.ones_like(ratio))
    return scores * xp.min(ratio, axis=0)


def _matrix_nms_sorted(
    xp: Any,
    masks: Array,
    rows: Array,
    labels: Array,
    scores: Array,
    sum_masks: Array,
    kernel: str,
    sigma: float,
) -> Array:
    """Decayed scores (K,) for instances already sorted by score (desc).

    ``masks`` (M, P) binary (bool or 0/1 numbers) holds the instances' masks at ``rows`` (K,) int64;
    ``labels`` (K,), ``scores`` (K,), ``sum_masks`` (K,) are in the sorted order.
    """
    if kernel not in ("gaussian", "linear"):
        raise BadInputError(f"unknown Matrix NMS kernel {kernel!r}: expected 'gaussian' or 'linear'")
    k = int(scores.shape[0])
    if k == 0:
        return scores
    if _on_gpu(scores):
        # A GPU computes the one K x K product in a few launches; a loop over classes would
        # add a host sync and a dozen launches per class.
        block = xp.astype(xp.take(masks, rows, axis=0), xp.float32)
        return _decay(xp, block, scores, sum_masks, kernel, sigma, labels=labels)
    # CPU: only same-class pairs decay each other, so the IoUs are computed per class block: with
    # C classes present that is about C times less matmul work than one K x K product. The stable
    # sort keeps the score order inside each block. The loop runs over classes, not instances.
    by_class = xp.argsort(labels, stable=True)
    labels_c = xp.take(labels, by_class)
    (cuts,) = xp.nonzero(labels_c[1:] != labels_c[:-1])
    bounds = [0] + [int(c) + 1 for c in to_numpy(cuts).tolist()] + [k]
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        sel = by_class[a:b]
        # Gathered before the float conversion: with bool masks that moves 4x fewer bytes.
        block = xp.astype(xp.take(masks, xp.take(rows, sel), axis=0), xp.float32)
        parts.append(_decay(xp, block, xp.take(scores, sel), xp.take(sum_masks, sel), kernel, sigma))
    decayed_c = parts[0] if len(parts) == 1 else xp.concat(parts)
    # Back to score order: gathering with the inverse permutation (no scatter needed).
    return xp.take(decayed_c, xp.argsort(by_class))


def matrix_nms(
    masks: Array,
    labels: Array,
    scores: Array,
    kernel: str = "gaussian",
    sigma: float = 2.0,
    sum_masks: Array | None = None,
) -> Array:
    """Matrix NMS (SOLOv2): decayed scores (K,) float32, in the input order.

    ``masks`` (K, H, W) or (K, P) binary (bool or 0/1 numbers); ``labels`` (K,) int; ``scores``
    (K,) float. Only same-class pairs decay each other. ``kernel`` "gaussian":
    decay = min_i exp(-sigma * (iou_ij^2 - comp_i^2)) (sigma=2 is the paper's /0.5 form);
    "linear": min_i (1 - iou_ij) / (1 - comp_i). ``sum_masks`` (K,) optional mask areas.
    Ties in score keep their input order (stable sort).
    """
    xp = array_namespace(masks, labels, scores)
    k = int(scores.shape[0])
    if masks.shape[0] != k or labels.shape[0] != k:
        raise BadInputError(f"matrix_nms: {masks.shape[0]} masks, {labels.shape[0]} labels, {k} scores")
    scores = xp.astype(scores, xp.float32, copy=False)
    if k == 0:
        return scores
    flat = xp.reshape(masks, (k, -1))
    order = xp.argsort(scores, descending=True, stable=True)
    sums = xp.sum(xp.astype(flat, xp.float32), axis=1) if sum_masks is None else xp.astype(sum_masks, xp.float32)
    decayed = _matrix_nms_sorted(
        xp, flat, order, xp.take(labels, order), xp.take(scores, order), xp.take(sums, order), kernel, float(sigma)
    )
    # Back to the caller's order: gathering with the inverse permutation (no scatter needed).
    return xp.take(decayed, xp.argsort(order))


# ---------------------------------------------------------------------------------------------
# Post-processing
# ---------------------------------------------------------------------------------------------
def _sigmoid(xp: Any, x: Array) -> Array:
    t = xp.exp(-xp.clip(x, -_LOGIT_CLIP, _LOGIT_CLIP))
    t += 1.0  # in place: the (K, h, w) temporaries dominate this function's cost
    return 1.0 / t


def logit(p: float) -> float:
    """The logit threshold equivalent to ``sigmoid(x) > p`` (+-inf outside (0, 1))."""
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


def _mask_values(xp: Any, kern: Array, feat_index: Array, mask_feats: Sequence[Array], out_hw: tuple[int, int],
                 probs: bool) -> Array:
    """Masks of M candidates at stride 4, flattened: (M, P) float32, P = out_h * out_w.

    ``kern`` (M, E) kernels, ``feat_index`` (M,) int64 the feature map each one uses. SOLOv2
    (``probs`` False): logits, from the one stride-4 map. SOLO (``probs`` True): probabilities;
    like the reference, the sigmoid runs at each level's resolution and the probabilities are
    upsampled to stride 4 (upsampling logits first moves the 0.5 contour).
    """
    m = int(kern.shape[0])
    if len(mask_feats) == 1:
        feat = xp.astype(mask_feats[0], xp.float32, copy=False)
        e, h, w = feat.shape
        vals = xp.reshape(kern @ xp.reshape(feat, (e, h * w)), (m, h, w))
        vals = _sigmoid(xp, vals) if probs else vals
        return xp.reshape(resize_bilinear(vals, out_hw), (m, -1))
    out = xp.empty((m, out_hw[0] * out_hw[1]), dtype=xp.float32, device=array_device(kern))
    for lvl, feat in enumerate(mask_feats):
        (sel,) = xp.nonzero(feat_index == lvl)
        if int(sel.shape[0]) == 0:
            continue
        feat = xp.astype(feat, xp.float32, copy=False)
        e, h, w = feat.shape
        k = int(sel.shape[0])
        vals = xp.reshape(xp.take(kern, sel, axis=0) @ xp.reshape(feat, (e, h * w)), (k, h, w))
        vals = _sigmoid(xp, vals) if probs else vals
        # Candidates come in cell order, so one level's rows are one contiguous block.
        lo = int(sel[0])
        if int(sel[-1]) - lo + 1 != k:
            raise RuntimeError("internal: SOLO candidates are not in cell order")
        out[lo : lo + k, ...] = xp.reshape(resize_bilinear(vals, out_hw), (k, -1))
    return out


def _decoupled_values(xp: Any, row: Array, col: Array, feat_index: Array, mask_feats: Sequence[Array],
                      out_hw: tuple[int, int]) -> Array:
    """Decoupled SOLO masks of M candidates at stride 4, flattened: (M, P) float32 probabilities.

    ``row`` / ``col`` / ``feat_index`` (M,) int64: each candidate's grid row, column and level;
    ``mask_feats``: the L x-maps (S_l, h_l, w_l), then the L y-maps. As in the reference, each
    level's maps go through the sigmoid at their own resolution and are all upsampled to stride
    4 before the column's x-map is multiplied by the row's y-map. Upsampling whole levels (S_l
    <= 40 maps) rather than the candidates' rows keeps a cell's mask independent of which other
    candidates are computed with it, so chunks and the recomputation agree bit for bit.
    """
    m = int(row.shape[0])
    levels = len(mask_feats) // 2
    out = xp.empty((m, out_hw[0] * out_hw[1]), dtype=xp.float32, device=array_device(row))
    for lvl in range(levels):
        (sel,) = xp.nonzero(feat_index == lvl)
        k = int(sel.shape[0])
        if k == 0:
            continue
        lo = int(sel[0])
        if int(sel[-1]) - lo + 1 != k:
            raise RuntimeError("internal: decoupled SOLO candidates are not in cell order")
        planes = []
        for maps in (mask_feats[lvl], mask_feats[levels + lvl]):
            s_l = int(maps.shape[0])
            probs = _sigmoid(xp, xp.astype(maps, xp.float32, copy=False))
            planes.append(xp.reshape(resize_bilinear(probs, out_hw), (s_l, -1)))
        xs = xp.take(planes[0], col[lo : lo + k], axis=0)
        ys = xp.take(planes[1], row[lo : lo + k], axis=0)
        out[lo : lo + k, ...] = xs * ys
    return out


def _cat(xp: Any, parts: list[Array]) -> Array:
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def _mask_stats(xp: Any, vals: Array, inside: Array, probs: bool) -> tuple[Array, Array]:
    """Mask areas and maskness (mean probability inside each mask), both float32 (M,).

    ``vals`` (M, P) float32 logits (``probs`` False) or probabilities, ``inside`` (M, P) bool.
    """
    if is_numpy_array(vals):
        # numpy: the sigmoid runs on the mask pixels only (np.extract keeps row order) and
        # np.add.reduceat sums each row's run. A dense sigmoid over all M x P logits made four
        # (M, P) float temporaries: 15 vs 6 ms at 500 candidates of 64 x 64 on this project's
        # CPU. The array API has no segment sum, so the other namespaces take the dense path.
        counts = inside.view(np.uint8).sum(axis=1, dtype=np.int64)  # 2x faster than count_nonzero
        vals_in = np.extract(inside, vals)
        if not probs:
            vals_in = _sigmoid(np, vals_in)
        sums = np.zeros(counts.shape, np.float64)
        rows = counts > 0
        if vals_in.size:
            starts = np.cumsum(counts) - counts
            sums[rows] = np.add.reduceat(vals_in, starts[rows], dtype=np.float64)
        area = counts.astype(np.float32)
        return area, (sums / np.maximum(counts, 1)).astype(np.float32)
    binary = xp.astype(inside, xp.float32)
    area = xp.sum(binary, axis=1)
    soft = vals if probs else _sigmoid(xp, vals)
    return area, xp.vecdot(soft, binary) / xp.maximum(area, 1.0)


def _empty(xp: Any, dev: Any, out_hw: tuple[int, int]) -> Detections:
    return Detections(
        soft_masks=xp.zeros((0, *out_hw), dtype=xp.float32, device=dev),
        labels=xp.zeros((0,), dtype=xp.int64, device=dev),
        scores=xp.zeros((0,), dtype=xp.float32, device=dev),
    )


def postprocess_single(
    scores: Array,
    kernels: Array | None,
    mask_feats: Sequence[Array],
    cells: CellInfo,
    cfg: PostprocessConfig,
    input_hw: tuple[int, int],
) -> Detections:
    """One image: ``scores`` (cells, C), ``kernels`` (cells, E), ``mask_feats`` L x (E, h_l, w_l);
    decoupled SOLO: ``kernels`` None, ``mask_feats`` the x-maps then the y-maps (S_l, h_l, w_l).

    ``input_hw`` is the network input size; masks come out at (input_h // 4, input_w // 4).
    """
    xp = array_namespace(scores, *mask_feats)
    dev = array_device(scores)
    _check_single(scores, kernels, mask_feats, cells)
    out_hw = (int(input_hw[0]) // 4, int(input_hw[1]) // 4)
    num_classes = int(scores.shape[1])
    flat = xp.reshape(xp.astype(scores, xp.float32, copy=False), (-1,))

    # 1. Candidates (cell, class) above score_thr; at most max_candidates (K0) of them, by
    # category score, bound the mask work below. Back in cell order (SOLO's levels are then
    # contiguous, and ties break as the reference's nonzero() order does).
    (cand,) = xp.nonzero(flat > cfg.score_thr)
    if int(cand.shape[0]) > cfg.max_candidates:
        top = xp.argsort(xp.take(flat, cand), descending=True, stable=True)[: cfg.max_candidates]
        cand = xp.sort(xp.take(cand, top))
    m = int(cand.shape[0])
    if m == 0:
        return _empty(xp, dev, out_hw)
    cand_scores = xp.take(flat, cand)
    cell = cand // num_classes
    labels = xp.astype(cand % num_classes, xp.int64)
    feat_index = xp.take(_as_xp(xp, cells.feat_index, xp.int64, dev), cell)
    if cells.decoupled:
        row = xp.take(_as_xp(xp, cells.row, xp.int64, dev), cell)
        col = xp.take(_as_xp(xp, cells.col, xp.int64, dev), cell)
    else:
        kern = xp.take(xp.astype(kernels, xp.float32, copy=False), cell, axis=0)
    # SOLO and decoupled SOLO: probabilities (sigmoid before the upsampling); SOLOv2: logits.
    probs = cells.num_feature_levels > 1
    thr = float(cfg.mask_thr) if probs else logit(float(cfg.mask_thr))

    def values(sel: Array) -> Array:
        """Masks (len(sel), P) of the candidates at positions ``sel`` (ascending)."""
        if cells.decoupled:
            return _decoupled_values(xp, xp.take(row, sel), xp.take(col, sel), xp.take(feat_index, sel),
                                     mask_feats, out_hw)
        return _mask_values(xp, xp.take(kern, sel, axis=0), xp.take(feat_index, sel), mask_feats, out_hw, probs)

    # 2-4. Masks at stride 4 (logits, or SOLO's probabilities), binary = above mask_thr, mask
    # area and maskness (mean probability inside the mask), in chunks of at most _MASK_CHUNK_ELEMS
    # floats. The masks are kept when they are all needed or all fit in one chunk; otherwise only
    # the nms_pre kept after rescoring are computed again below.
    p = out_hw[0] * out_hw[1]
    chunk = max(1, _MASK_CHUNK_ELEMS // max(1, p))
    keep_vals = m <= cfg.nms_pre or m <= chunk
    areas, maskness, vals_parts, inside_parts = [], [], [], []
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        vals = values(xp.arange(start, stop, device=dev))
        inside = vals > thr
        area, mk = _mask_stats(xp, vals, inside, probs)
        areas.append(area)
        maskness.append(mk)
        if keep_vals:
            vals_parts.append(vals)
            inside_parts.append(inside)
    sum_masks = _cat(xp, areas)
    maskness = _cat(xp, maskness)
    # Drop empty masks and those not larger than min_area_factor x their cell's stride.
    cell_stride = xp.take(_as_xp(xp, cells.stride, xp.float32, dev), cell)
    (keep,) = xp.nonzero((sum_masks > cell_stride * float(cfg.min_area_factor)) & (sum_masks > 0))
    if int(keep.shape[0]) == 0:
        return _empty(xp, dev, out_hw)
    rescored = xp.take(cand_scores * maskness, keep)

    # 5. Sort by rescored score, cap at nms_pre, Matrix NMS, update_thr, top max_per_img.
    # `rows` maps this sorted order to rows of `vals`, so the big arrays are gathered only for
    # the IoUs and for the output.
    order = xp.argsort(rescored, descending=True, stable=True)[: cfg.nms_pre]
    idx = xp.take(keep, order)
    sorted_scores = xp.take(rescored, order)
    sorted_labels = xp.take(labels, idx)
    sorted_areas = xp.take(sum_masks, idx)
    if keep_vals:
        vals, inside, rows = _cat(xp, vals_parts), _cat(xp, inside_parts), idx
    else:
        by_cell = xp.argsort(idx)  # computed in cell order (SOLO levels contiguous), used by rank
        vals = values(xp.take(idx, by_cell))
        inside, rows = vals > thr, xp.argsort(by_cell)
        # Areas of exactly these masks: a matmul over another number of rows may round a logit
        # at the threshold the other way, and Matrix NMS's IoUs need areas that match the masks.
        sorted_areas = xp.take(xp.sum(xp.astype(inside, xp.float32), axis=1), rows)
    decayed = _matrix_nms_sorted(
        xp, inside, rows, sorted_labels, sorted_scores, sorted_areas, cfg.kernel, float(cfg.sigma),
    )
    (survive,) = xp.nonzero(decayed >= cfg.update_thr)
    if int(survive.shape[0]) == 0:
        return _empty(xp, dev, out_hw)
    decayed = xp.take(decayed, survive)
    final = xp.argsort(decayed, descending=True, stable=True)[: cfg.max_per_img]
    pick = xp.take(xp.take(rows, survive), final)
    soft = xp.take(vals, pick, axis=0)
    return Detections(
        soft_masks=xp.reshape(soft if probs else _sigmoid(xp, soft), (int(pick.shape[0]), *out_hw)),
        labels=xp.take(sorted_labels, xp.take(survive, final)),
        scores=xp.take(decayed, final),
    )


def postprocess_batch(
    scores: Array,
    kernels: Array | None,
    mask_feats: Sequence[Array],
    cells: CellInfo,
    cfg: PostprocessConfig,
    input_hw: tuple[int, int],
) -> list[Detections]:
    """N images: ``scores`` (N, cells, C), ``kernels`` (N, cells, E), ``mask_feats`` L x (N, E, h, w);
    decoupled SOLO: ``kernels`` None, ``mask_feats`` the x-maps then the y-maps (N, S_l, h_l, w_l).

    Returns one :class:`Detections` per image, arrays in the inputs' namespace and device.
    """
    if kernels is None and not cells.decoupled:
        raise BadInputError("kernels are missing: only decoupled SOLO models have none")
    if getattr(scores, "ndim", None) != 3 or (kernels is not None and getattr(kernels, "ndim", None) != 3):
        raise BadInputError(
            f"expected scores (N, cells, C) and kernels (N, cells, E), got shapes "
            f"{tuple(getattr(scores, 'shape', ()))} and {tuple(getattr(kernels, 'shape', ()))}"
        )
    n = int(scores.shape[0])
    if (kernels is not None and int(kernels.shape[0]) != n) or any(
            f.ndim != 4 or int(f.shape[0]) != n for f in mask_feats):
        raise BadInputError(
            f"batch sizes differ: scores {n}, kernels {None if kernels is None else kernels.shape[0]}, "
            f"mask_feats {[tuple(f.shape) for f in mask_feats]} (each must be (N, E, h, w))"
        )
    return [
        postprocess_single(scores[i, ...], None if kernels is None else kernels[i, ...],
                           [f[i, ...] for f in mask_feats], cells, cfg, input_hw)
        for i in range(n)
    ]


def _check_single(scores: Array, kernels: Array | None, mask_feats: Sequence[Array], cells: CellInfo) -> None:
    if cells.decoupled:
        _check_decoupled(scores, kernels, mask_feats, cells)
        return
    if kernels is None:
        raise BadInputError("kernels are missing: only decoupled SOLO models have none")
    if scores.ndim != 2 or kernels.ndim != 2:
        raise BadInputError(
            f"expected scores (cells, C) and kernels (cells, E), got {tuple(scores.shape)} and {tuple(kernels.shape)}"
        )
    if int(scores.shape[0]) != cells.num_cells or int(kernels.shape[0]) != cells.num_cells:
        raise BadInputError(
            f"model outputs have {scores.shape[0]} score cells and {kernels.shape[0]} kernel cells, "
            f"but grids {cells.grids} give {cells.num_cells}"
        )
    if len(mask_feats) != cells.num_feature_levels:
        raise BadInputError(f"expected {cells.num_feature_levels} mask feature map(s), got {len(mask_feats)}")
    e = int(kernels.shape[1])
    for f in mask_feats:
        if f.ndim != 3 or int(f.shape[0]) != e:
            raise BadInputError(f"mask features {tuple(f.shape)} do not match kernels of length {e}")


def _check_decoupled(scores: Array, kernels: Array | None, maps: Sequence[Array], cells: CellInfo) -> None:
    if kernels is not None:
        raise BadInputError("decoupled SOLO outputs have no kernels")
    if scores.ndim != 2 or int(scores.shape[0]) != cells.num_cells:
        raise BadInputError(f"expected scores ({cells.num_cells}, C) for grids {cells.grids}, "
                            f"got {tuple(scores.shape)}")
    if len(maps) != cells.num_feature_levels:
        raise BadInputError(f"expected {cells.num_feature_levels} mask maps (x then y per level), got {len(maps)}")
    levels = len(cells.grids)
    for i, f in enumerate(maps):
        s = cells.grids[i % levels]
        if f.ndim != 3 or int(f.shape[0]) != s:
            raise BadInputError(f"mask map {'xy'[i // levels]}_{i % levels} has shape {tuple(f.shape)}, "
                                f"expected ({s}, h, w) for a grid of {s}")


# ---------------------------------------------------------------------------------------------
# Back to the original image
# ---------------------------------------------------------------------------------------------
def _paste_windows(det: Detections, input_hw: tuple[int, int], letterbox: Letterbox, mask_thr: float):
    """The thresholded masks on the original image, window by window.

    Yields ``(sel, y0, x0, hb, r0, hit)``: for the instances ``sel`` (host int64 (G,)), whose
    windows are ``hb`` rows from ``y0`` (host int64 (G,)) and ``wb`` columns from ``x0``, rows
    ``r0 .. r0 + rows`` of the windows are ``hit`` (bool (G, rows, wb), the input's namespace).
    Every pixel outside the windows is False. Nothing frame-sized is allocated: a window is an
    instance's box (rounded up to its group's largest), and windows taller than the temporary
    budget come in row strips.
    """
    soft = det.soft_masks
    xp = array_namespace(soft)
    dev = array_device(soft)
    ih, iw = int(input_hw[0]), int(input_hw[1])
    if (ih, iw) != tuple(letterbox.input_hw):
        raise BadInputError(f"input size {ih}x{iw} does not match the letterbox input {letterbox.input_hw}")
    rh, rw = letterbox.resized_hw
    out_h, out_w = letterbox.orig_hw
    if soft.ndim != 3:
        raise BadInputError(f"expected soft masks (K, h, w), got {tuple(soft.shape)}")
    k, h4, w4 = (int(v) for v in soft.shape)
    if k == 0:
        return
    soft = xp.astype(soft, xp.float32, copy=False)
    ay = _as_xp(xp, _crop_resize_matrix_f64(h4, ih, rh, out_h), xp.float32, dev)
    ax = _as_xp(xp, _crop_resize_matrix_f64(w4, iw, rw, out_w), xp.float32, dev)

    # Each output pixel is a convex combination (non-negative weights summing to 1) of the
    # stride-4 cells in its bilinear support, so it can exceed mask_thr only if one of those cells
    # does. Only the output rows/columns whose support meets such a cell are computed: a box per
    # instance, usually a small part of the frame. Exact, not an approximation.
    low = soft > mask_thr
    ry0, ry1 = _box_range(xp, xp.any(low, axis=2), _support_bounds(h4, ih, rh, out_h), dev)
    rx0, rx1 = _box_range(xp, xp.any(low, axis=1), _support_bounds(w4, iw, rw, out_w), dev)
    extent = xp.astype(xp.maximum(ry1 - ry0, 0) * xp.maximum(rx1 - rx0, 0), xp.int64)
    order = to_numpy(xp.argsort(extent, stable=True))
    ry0, ry1, rx0, rx1 = (to_numpy(v) for v in (ry0, ry1, rx0, rx1))
    # Instances go in groups of similar box size, one window size per group: a loop over groups,
    # not over instances. A group's float temporary is at most group x rows x wb floats: the group
    # shrinks on large frames, and a window over _IMAGE_CHUNK_ELEMS goes in row strips.
    group = max(1, min(_PASTE_GROUP, _IMAGE_CHUNK_ELEMS // max(1, out_h * out_w)))
    for start in range(0, k, group):
        sel = order[start : start + group]
        hb, wb = int((ry1[sel] - ry0[sel]).max()), int((rx1[sel] - rx0[sel]).max())
        if hb <= 0 or wb <= 0:
            continue
        y0 = np.minimum(np.maximum(ry0[sel], 0), out_h - hb)  # windows of one size, inside the frame
        x0 = np.minimum(np.maximum(rx0[sel], 0), out_w - wb)
        g = int(sel.shape[0])
        cols = x0[:, None] + np.arange(wb)[None, :]  # (G, wb) host indices
        ax_w = xp.reshape(xp.take(ax, _as_xp(xp, cols.reshape(-1), xp.int64, dev), axis=0), (g, wb, w4))
        m = xp.take(soft, _as_xp(xp, sel, xp.int64, dev), axis=0)
        strip = max(1, min(hb, _IMAGE_CHUNK_ELEMS // (g * wb)))
        for r0 in range(0, hb, strip):
            r1 = min(hb, r0 + strip)
            rows = y0[:, None] + np.arange(r0, r1)[None, :]  # (G, rows) host indices
            ay_w = xp.reshape(xp.take(ay, _as_xp(xp, rows.reshape(-1), xp.int64, dev), axis=0), (g, r1 - r0, h4))
            yield sel, y0, x0, hb, r0, _apply_separable(xp, m, ay_w, ax_w) > mask_thr


def masks_to_image(
    det: Detections,
    input_hw: tuple[int, int],
    letterbox: Letterbox,
    mask_thr: float,
) -> Array:
    """Stride-4 soft masks -> bool (K, H, W) masks on the original image.

    Upsample x4 to the network input, crop the letterbox padding (top-left anchor: keep
    [:resized_h, :resized_w]), bilinear-resize to ``letterbox.orig_hw`` and threshold
    (``> mask_thr``). All three linear steps are fused into one matrix per axis and applied to
    all instances at once (in memory-bounded chunks). Result stays in the input's namespace.
    It is K full frames: :func:`masks_to_crops` gives the same masks at the cost of their boxes.
    """
    soft = det.soft_masks
    xp = array_namespace(soft)
    out_h, out_w = letterbox.orig_hw
    out = xp.zeros((int(soft.shape[0]) if soft.ndim == 3 else 0, out_h, out_w), dtype=xp.bool,
                   device=array_device(soft))
    for sel, y0, x0, _, r0, hit in _paste_windows(det, input_hw, letterbox, mask_thr):
        rows, wb = int(hit.shape[1]), int(hit.shape[2])
        # Placement only: one slice copy per instance (~1 us each). The arithmetic is batched per
        # group; integer-array scatter (the vectorised alternative) measured 80x slower here.
        for n, idx in enumerate(sel.tolist()):
            top = int(y0[n]) + r0
            out[idx, top : top + rows, int(x0[n]) : int(x0[n]) + wb] = hit[n, ...]
    return out


def masks_to_crops(
    det: Detections,
    input_hw: tuple[int, int],
    letterbox: Letterbox,
    mask_thr: float,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Stride-4 soft masks -> each instance's mask inside its tight box, on the host.

    Returns ``(crops, boxes)``: ``crops[k]`` bool (y1 - y0, x1 - x0) and ``boxes`` int64 (K, 4)
    x0, y0, x1, y1 (exclusive ends; all zero, with a (0, 0) crop, for an empty mask), such that
    ``masks_to_image(...)[k]`` is ``crops[k]`` at its box and False elsewhere. Memory is what the
    instances cover, never K frames (a 20000 x 20000 image with 100 instances would be 40 GB).
    """
    k = int(det.soft_masks.shape[0]) if det.soft_masks.ndim == 3 else 0
    crops = [np.zeros((0, 0), bool)] * k
    boxes = np.zeros((k, 4), np.int64)
    strips: dict[int, np.ndarray] = {}  # windows that come in row strips, while incomplete
    for sel, y0, x0, hb, r0, hit in _paste_windows(det, input_hw, letterbox, mask_thr):
        hit = to_numpy(hit)  # one transfer per group (or strip), not per instance
        rows = hit.shape[1]
        for n, idx in enumerate(sel.tolist()):
            if rows == hb:
                win = hit[n]
            else:
                win = strips.setdefault(idx, np.zeros((hb, hit.shape[2]), bool))
                win[r0 : r0 + rows] = hit[n]
                if r0 + rows < hb:
                    continue
                del strips[idx]
            ys, xs = np.flatnonzero(win.any(axis=1)), np.flatnonzero(win.any(axis=0))
            if ys.size == 0:
                continue
            t, b, lft, r = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
            crops[idx] = np.ascontiguousarray(win[t:b, lft:r])  # a copy: the group's buffer is freed
            boxes[idx] = (int(x0[n]) + lft, int(y0[n]) + t, int(x0[n]) + r, int(y0[n]) + b)
    return crops, boxes
