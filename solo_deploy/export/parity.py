"""Numerical parity between an exported ONNX graph (run by ONNX Runtime) and the PyTorch model.

Two views, both on the same seeded random uint8 batch:

- per output: ``max |onnx - torch| / max |torch|`` (the difference relative to that output's
  largest magnitude, so one figure works for probabilities and for unbounded features);
- post-processed instances (``solo_deploy.runtime.inference.postprocess_outputs``): per image,
  same number of instances, same labels, and masks that overlap (IoU) once matched.

Instances whose score is within ``score_margin`` of the thresholds may legitimately appear on
one side only (a 1e-4 change can move a score across a threshold): they are reported, not failed.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.meta import split_outputs
from ..errors import RuntimeFailure

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch

    from ..core.config import PostprocessConfig
    from ..core.meta import ModelMeta

__all__ = ["InstanceAgreement", "OutputDiff", "ParityError", "ParityReport", "check_parity", "compare_instances",
           "compare_outputs", "ort_outputs", "random_images", "torch_outputs"]


class ParityError(RuntimeFailure):
    """The exported graph does not reproduce the PyTorch model within tolerance (exit code 1)."""


@dataclass(frozen=True)
class OutputDiff:
    """One output: ``rel = max_abs / scale`` where ``scale = max |reference|``."""

    name: str
    max_abs: float
    scale: float
    rel: float
    # "scores" only: cells that are a point-NMS peak on one side and suppressed (0) on the other.
    # Near-tied neighbours flip under float16 or INT8; they are left out of max_abs, and what they
    # change after post-processing is judged by the instance agreement instead.
    peak_flips: int = 0


@dataclass(frozen=True)
class InstanceAgreement:
    """Instances of one image: reference vs tested backend."""

    ref_count: int
    test_count: int
    matched: int  # reference instances with a same-label partner of IoU >= min_iou
    labels_equal: bool  # same multiset of labels
    mean_iou: float  # over reference instances (1.0 when there are none)
    min_iou: float
    borderline: int  # unmatched instances (either side) whose score is near the thresholds
    ok: bool


@dataclass
class ParityReport:
    outputs: list[OutputDiff]
    images: list[InstanceAgreement]
    tolerance: float
    min_iou: float
    reference: str = "torch fp32"
    test: str = "onnxruntime"
    input_shape: tuple[int, ...] = field(default_factory=tuple)

    @property
    def max_rel(self) -> float:
        return max((d.rel for d in self.outputs), default=0.0)

    @property
    def numeric_ok(self) -> bool:
        return all(np.isfinite(d.rel) and d.rel <= self.tolerance for d in self.outputs)

    @property
    def instances_ok(self) -> bool:
        return all(a.ok for a in self.images)

    @property
    def ok(self) -> bool:
        return self.numeric_ok and self.instances_ok

    def summary(self) -> str:
        """One line: worst relative difference per output and the instance agreement."""
        diffs = ", ".join(f"{d.name} {d.rel:.1e}" + (f" ({d.peak_flips} peak flips)" if d.peak_flips else "")
                          for d in self.outputs)
        ref = sum(a.ref_count for a in self.images)
        test = sum(a.test_count for a in self.images)
        matched = sum(a.matched for a in self.images)
        ious = [a.mean_iou for a in self.images if a.ref_count]
        iou = f", mean IoU {float(np.mean(ious)):.3f}" if ious else ""
        verdict = "ok" if self.ok else "FAILED"
        return (f"{self.test} vs {self.reference}: max rel diff {self.max_rel:.1e} (tolerance {self.tolerance:.0e}; "
                f"{diffs}); instances {matched}/{ref} matched, {test} found{iou}: {verdict}")

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "test": self.test, "tolerance": self.tolerance, "min_iou": self.min_iou,
                "input_shape": list(self.input_shape), "max_rel": self.max_rel, "ok": self.ok,
                "outputs": [asdict(d) for d in self.outputs], "images": [asdict(a) for a in self.images]}


def random_images(batch: int, input_hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Seeded random uint8 (N, H, W, 3) batch. Noise exercises every pixel path; the
    post-processing comparison is what ties it back to detections."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(batch, int(input_hw[0]), int(input_hw[1]), 3), dtype=np.uint8)


def torch_outputs(module: torch.nn.Module, images: np.ndarray) -> list[np.ndarray]:
    """Run a deploy module (uint8 NHWC in) on CPU; outputs as float32 numpy arrays."""
    import torch

    with torch.inference_mode():
        out = module(torch.from_numpy(np.ascontiguousarray(images)))
    return [o.detach().float().cpu().numpy() for o in out]


def ort_outputs(model: onnx.ModelProto | bytes | str | os.PathLike[str], images: np.ndarray,
                input_name: str = "images") -> list[np.ndarray]:
    """Run an ONNX model (proto, serialized bytes or path) with ONNX Runtime's CPU provider.

    Uses ``OMP_NUM_THREADS`` threads when that is set (ORT itself ignores the variable), and the
    full graph optimisation level, as the runtime's ``OnnxRunner`` does.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    if isinstance(model, (str, os.PathLike)):
        source: Any = str(Path(model))
    elif isinstance(model, bytes):
        source = model
    else:
        source = model.SerializeToString()
    try:
        sess = ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
        outs = sess.run(None, {input_name: images})
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeFailure(f"ONNX Runtime cannot run the exported graph: {first[:300]}") from None
    return [np.asarray(o, dtype=np.float32) for o in outs]


def compare_outputs(names: Sequence[str], reference: Sequence[np.ndarray],
                    test: Sequence[np.ndarray]) -> list[OutputDiff]:
    """Per output max abs difference relative to the reference's largest magnitude."""
    if len(reference) != len(test):
        raise RuntimeFailure(f"output count differs: reference {len(reference)}, tested {len(test)}")
    diffs: list[OutputDiff] = []
    for name, ref, got in zip(names, reference, test):
        ref = np.asarray(ref, np.float64)
        got = np.asarray(got, np.float64)
        if ref.shape != got.shape:
            raise RuntimeFailure(f"output {name!r} shape differs: reference {ref.shape}, tested {got.shape}")
        if not (np.isfinite(ref).all() and np.isfinite(got).all()):
            diffs.append(OutputDiff(name, float("inf"), float("nan"), float("inf")))
            continue
        flips = 0
        diff = np.abs(ref - got)
        if name == "scores":
            flipped = (ref == 0) != (got == 0)
            flips = int(flipped.sum())
            diff = np.where(flipped, 0.0, diff)
        max_abs = float(np.max(diff)) if ref.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        # An all-zero reference: any difference is relative to "nothing"; 1e-12 keeps that visible.
        rel = max_abs / max(scale, 1e-12) if max_abs else 0.0
        diffs.append(OutputDiff(name, max_abs, scale, rel, flips))
    return diffs


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def compare_instances(meta: ModelMeta, reference: Sequence[np.ndarray], test: Sequence[np.ndarray],
                      post: PostprocessConfig | None = None, min_iou: float = 0.5,
                      score_margin: float = 0.05) -> list[InstanceAgreement]:
    """Post-process both output sets and match instances per image (greedy by score, same label).

    ``reference``/``test``: raw deploy outputs in ``output_names`` order, as numpy.
    """
    from ..runtime.inference import postprocess_outputs

    post = post or meta.postprocess
    ref_dets = postprocess_outputs(meta, *split_outputs(meta, reference), post)
    test_dets = postprocess_outputs(meta, *split_outputs(meta, test), post)
    border = max(post.score_thr, post.update_thr) + score_margin
    out: list[InstanceAgreement] = []
    for rd, td in zip(ref_dets, test_dets):
        rd, td = rd.to_numpy(), td.to_numpy()
        rmask, tmask = rd.soft_masks > post.mask_thr, td.soft_masks > post.mask_thr
        used = np.zeros(len(td), bool)
        ious: list[float] = []
        matched = 0
        unmatched_ref_scores: list[float] = []
        for i in range(len(rd)):  # reference order is by descending score
            best, best_j = 0.0, -1
            for j in np.flatnonzero((td.labels == rd.labels[i]) & ~used):
                iou = _mask_iou(rmask[i], tmask[j])
                if iou > best:
                    best, best_j = iou, int(j)
            ious.append(best)
            if best_j >= 0 and best >= min_iou:
                used[best_j] = True
                matched += 1
            else:
                unmatched_ref_scores.append(float(rd.scores[i]))
        unmatched_test_scores = [float(s) for s in td.scores[~used]]
        # A full list (max_per_img instances) has a cut of its own: the last kept score.
        cut = max([border] + [float(d.scores.min()) + score_margin for d in (rd, td) if len(d) >= post.max_per_img])
        borderline = sum(s < cut for s in unmatched_ref_scores + unmatched_test_scores)
        hard_misses = len(unmatched_ref_scores) + len(unmatched_test_scores) - borderline
        out.append(InstanceAgreement(
            ref_count=len(rd), test_count=len(td), matched=matched,
            labels_equal=sorted(rd.labels.tolist()) == sorted(td.labels.tolist()),
            mean_iou=float(np.mean(ious)) if ious else 1.0, min_iou=float(np.min(ious)) if ious else 1.0,
            borderline=int(borderline), ok=hard_misses == 0))
    return out


def check_parity(onnx_model: onnx.ModelProto | bytes | str | os.PathLike[str], reference: torch.nn.Module,
                 meta: ModelMeta, *, output_names: Sequence[str], images: np.ndarray | None = None,
                 batch: int = 1, tolerance: float = 1e-4, min_iou: float = 0.5, seed: int = 0,
                 post: PostprocessConfig | None = None, test_label: str = "onnxruntime") -> ParityReport:
    """ORT vs PyTorch on one seeded random batch (or ``images``, uint8 (N, H, W, 3))."""
    if images is None:
        h, w = meta.preprocess.input_hw
        if meta.preprocess.pads_in_graph:
            # The graph pads: check it at a size it must pad (not a multiple of 32).
            h, w = max(1, h - 7), max(1, w - 13)
        images = random_images(batch, (h, w), seed)
    ref = torch_outputs(reference, images)
    got = ort_outputs(onnx_model, images)
    diffs = compare_outputs(output_names, ref, got)
    # Non-finite outputs already fail; post-processing NaNs would only add noise.
    finite = all(np.isfinite(d.rel) for d in diffs)
    agreement = compare_instances(meta, ref, got, post=post, min_iou=min_iou) if finite else []
    return ParityReport(outputs=diffs, images=agreement, tolerance=tolerance, min_iou=min_iou, test=test_label,
                        input_shape=tuple(images.shape))
