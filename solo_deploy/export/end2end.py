"""End-to-end models: SOLOv2's post-processing as an ONNX graph appended to a raw-output export.

``solo-deploy export MODEL --end2end`` writes a graph whose outputs are instances:

- ``masks``  (N, K, H/4, W/4): uint8 probabilities x 255 (``--mask-format uint8``, the default)
  or float32 probabilities (``prob``), at stride 4 of the network input;
- ``boxes``  float32 (N, K, 4): x0, y0, x1, y1 of each mask above ``mask_thr`` at stride 4,
  in network-input pixels (x 4; the host's tight boxes come from the full-size masks);
- ``labels`` int64 (N, K): class index 0..C-1 (-1 in padding slots);
- ``scores`` float32 (N, K): after maskness and Matrix NMS, descending (0 in padding slots);
- ``num_detections`` int64 (N,): how many of the K slots hold instances.

K is the model's ``max_per_img`` (100). The order is the Python post-processing's
(``runtime.postprocess.postprocess_single``, mmdetection's ``SOLOV2Head._predict_by_feat_single``):

1. the K0 (``max_candidates``, <= 3840: TensorRT's TopK limit) (cell, class) pairs with the
   highest category scores; those at or below ``score_thr`` are marked invalid;
2. their masks (kernel x mask features: a batched MatMul, SOLOv2's 1x1 dynamic convolution),
   binary above ``mask_thr``, area and maskness for all K0;
3. invalid: empty masks and those not larger than ``min_area_factor`` x the cell's stride;
4. rescored = score x maskness; the top ``nms_pre`` by it;
5. Matrix NMS as matrix products (IoU = B B^T over binary masks) with class-aware masking;
6. ``update_thr``, then the top K.

No data-dependent shapes (no NonZero): invalid candidates carry a score of -1 through every
TopK. The post-processing graph is exported on its own from :class:`End2EndPostprocess` and joined
to the raw graph's outputs (``onnx.compose``), so it stays float32 whatever precision the network
has: FP32, FP16 or an INT8 Q/DQ graph from ``solo-deploy calibrate``.

The Python post-processing gives the same instances while an image has at most K0 candidates
above ``score_thr`` (beyond that, both keep the K0 best by category score, but Python keeps them
in cell order, so ties may resolve differently). The memory of step 2 is K0 x H/4 x W/4 floats
per image (63 MB at K0 3840 for a 256 x 256 input; keep-ratio 1333 x 800 models want a smaller
``--max-candidates``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._atomic import atomic_path
from .._paths import check_outputs
from ..core.inspect import onnx_meta
from ..core.meta import END2END_OUTPUTS, End2EndSpec, ModelMeta, split_outputs
from ..data.synthetic import SyntheticDataset
from ..errors import BadInputError, RuntimeFailure, one_line
from ..runtime.inference import postprocess_outputs
from ..runtime.postprocess import logit
from .onnx_checks import load_onnx_checked
from .onnx_export import report_lines
from .parity import ParityError
from .trt_ops import check_tensorrt_compat

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch

log = logging.getLogger("solo_deploy.export")

__all__ = ["END2END_CANDIDATES", "End2EndExport", "End2EndParity", "End2EndPostprocess", "append_postprocess",
           "end2end_parity", "export_end2end", "parity_session", "postprocess_graph", "with_raw_outputs"]

_RAW_PREFIX = "raw/"  # the raw graph's tensors and nodes, once joined
# Default K0 of an end-to-end graph (the Python post-processing caps at 3840).
END2END_CANDIDATES = 1000


def _module_class():
    import torch
    from torch import nn

    def take_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """x (N, M, P), idx (N, K) int64 -> (N, K, P): each image's rows ``idx``. One Gather on the
        flattened batch: GatherElements would need its index expanded to (N, K, P) int64 first
        (16 MB and ~2 ms on a CPU for 500 masks of 64 x 64)."""
        n, m = x.shape[0], x.shape[1]
        offsets = (torch.arange(n, device=idx.device) * m).unsqueeze(1)
        return x.reshape(n * m, -1)[(idx + offsets).reshape(-1)].reshape(n, idx.shape[1], -1)

    class End2EndPostprocess(nn.Module):
        """SOLOv2 post-processing over a batch, as static-shape tensor operations.

        forward(scores (N, cells, C), kernels (N, cells, E), mask_feat (N, E, h, w)) ->
        (masks (N, K, h, w) uint8 or float32, boxes (N, K, 4) float32, labels (N, K) int64,
        scores (N, K) float32, num_detections (N,) int64); see the module docstring.
        """

        def __init__(self, meta: ModelMeta, spec: End2EndSpec) -> None:
            super().__init__()
            cfg, post = meta.model, meta.postprocess
            self.num_classes = int(cfg.num_classes)
            self.k0 = min(int(spec.max_candidates), cfg.num_cells * cfg.num_classes)
            self.n_pre = min(int(post.nms_pre), self.k0)
            self.k = min(int(spec.max_per_img), self.n_pre)
            self.score_thr = float(post.score_thr)
            # The Python post-processing's threshold, with +-inf (mask_thr outside (0, 1)) as finite
            # constants in the graph.
            self.logit_thr = min(max(logit(float(post.mask_thr)), -1e30), 1e30)
            self.update_thr = float(post.update_thr)
            self.min_area_factor = float(post.min_area_factor)
            self.sigma = float(post.sigma)
            self.gaussian = post.kernel == "gaussian"
            self.uint8 = spec.mask_format == "uint8"
            # uint8 masks: q / 255 > mask_thr exactly where the probability is above it, so the
            # host's threshold gives the graph's binary masks at stride 4.
            self.q_thr = float(min(max(math.floor(float(post.mask_thr) * 255.0), 0), 254))
            strides = [float(s) for s, g in zip(cfg.strides, cfg.grids) for _ in range(g * g)]
            self.register_buffer("cell_stride", torch.tensor(strides, dtype=torch.float32), persistent=False)
            # pair[i, j]: i ranks above j (strict upper triangle), as a constant.
            self.register_buffer("upper", torch.ones(self.n_pre, self.n_pre).triu(1) > 0, persistent=False)

        def forward(self, scores: torch.Tensor, kernels: torch.Tensor,
                    mask_feat: torch.Tensor) -> tuple[torch.Tensor, ...]:
            scores, kernels, mask_feat = scores.float(), kernels.float(), mask_feat.float()
            n, e = kernels.shape[0], kernels.shape[2]
            h, w = mask_feat.shape[2], mask_feat.shape[3]
            # 1. K0 candidates by category score.
            top_s, top_i = scores.reshape(n, -1).topk(self.k0, dim=1)
            cell = torch.div(top_i, self.num_classes, rounding_mode="floor")
            label = top_i - cell * self.num_classes
            # 2. Masks: (N, K0, E) @ (N, E, h*w).
            kern = take_rows(kernels, cell)
            logits = torch.bmm(kern, mask_feat.reshape(n, e, -1))
            binary = (logits > self.logit_thr).float()
            area = binary.sum(-1)
            maskness = (torch.sigmoid(logits) * binary).sum(-1) / area.clamp(min=1.0)
            # 3. The area rule.
            stride = self.cell_stride[cell]
            valid = (top_s > self.score_thr) & (area > stride * self.min_area_factor) & (area > 0)
            # 4. Rescore, keep nms_pre.
            rescored = torch.where(valid, top_s * maskness, torch.full_like(top_s, -1.0))
            s2, o2 = rescored.topk(self.n_pre, dim=1)
            valid2 = torch.gather(valid, 1, o2)
            lab2 = torch.gather(label, 1, o2)
            area2 = torch.gather(area, 1, o2)
            b2 = take_rows(binary, o2)
            # 5. Matrix NMS: same-class pairs of valid instances decay each other.
            inter = torch.bmm(b2, b2.transpose(1, 2))
            union = area2.unsqueeze(2) + area2.unsqueeze(1) - inter
            iou = inter / union.clamp(min=1e-6)
            pair = self.upper.unsqueeze(0) & (lab2.unsqueeze(2) == lab2.unsqueeze(1)) & valid2.unsqueeze(2)
            decay_iou = torch.where(pair, iou, torch.zeros_like(iou))
            comp = decay_iou.amax(dim=1).unsqueeze(2)  # how much each instance is itself suppressed
            if self.gaussian:
                ratio = torch.exp(-self.sigma * (decay_iou * decay_iou - comp * comp))
            else:
                ratio = (1.0 - decay_iou) / (1.0 - comp).clamp(min=1e-6)
            ratio = torch.where(pair, ratio, torch.ones_like(ratio))
            decayed = s2 * ratio.amin(dim=1)
            # 6. update_thr, top K.
            keep = valid2 & (decayed >= self.update_thr)
            final = torch.where(keep, decayed, torch.full_like(decayed, -1.0))
            fs, fo = final.topk(self.k, dim=1)
            kept = fs >= 0
            num = kept.sum(dim=1)
            pick = torch.gather(o2, 1, fo)  # positions among the K0 candidates
            out_logits = take_rows(logits, pick)
            fg = (out_logits > self.logit_thr) & kept.unsqueeze(-1)
            prob = torch.sigmoid(out_logits) * kept.unsqueeze(-1).float()
            if self.uint8:
                q = torch.round(prob * 255.0)
                q = torch.where(fg, q.clamp(min=self.q_thr + 1.0), q.clamp(max=self.q_thr))
                # Cast last: TensorRT takes uint8 only into or out of the network through a Cast.
                masks = q.reshape(n, self.k, h, w).to(torch.uint8)
            else:
                masks = prob.reshape(n, self.k, h, w)
            # Boxes of the binary masks at stride 4, in input pixels.
            fg = fg.reshape(n, self.k, h, w).float()  # ReduceMax takes no bool in ONNX Runtime
            rows, cols = fg.amax(dim=3) > 0, fg.amax(dim=2) > 0
            ys = torch.arange(h, device=fg.device, dtype=torch.float32)
            xs = torch.arange(w, device=fg.device, dtype=torch.float32)
            big = torch.full_like(rows, 1e9, dtype=torch.float32)
            y0 = torch.where(rows, ys, big.expand_as(rows)).amin(dim=2)
            y1 = torch.where(rows, ys + 1, torch.zeros_like(big)).amax(dim=2)
            bigx = torch.full_like(cols, 1e9, dtype=torch.float32)
            x0 = torch.where(cols, xs, bigx).amin(dim=2)
            x1 = torch.where(cols, xs + 1, torch.zeros_like(bigx)).amax(dim=2)
            has = (y1 > 0).unsqueeze(-1).float()  # a product, not where(): no CPU constant on a GPU
            boxes = torch.stack([x0, y0, x1, y1], dim=2) * 4.0 * has
            labels = torch.where(kept, torch.gather(lab2, 1, fo), torch.full_like(fo, -1))
            return masks, boxes, labels, fs.clamp(min=0.0), num

    return End2EndPostprocess


def End2EndPostprocess(meta: ModelMeta, spec: End2EndSpec) -> torch.nn.Module:
    """The post-processing module (built lazily: importing this module does not import torch)."""
    return _module_class()(meta, spec)


def check_supported(meta: ModelMeta, spec: End2EndSpec) -> None:
    """One line for what the end-to-end graph does not cover."""
    if meta.model.arch != "solov2":
        raise BadInputError(f"--end2end supports SOLOv2 models; this is a {meta.model.arch} model (SOLO and decoupled "
                            f"SOLO keep raw outputs and the Python post-processing)")
    if not 1 <= spec.max_candidates <= 3840:
        raise BadInputError(f"--max-candidates must be 1..3840 (TensorRT's TopK limit), got {spec.max_candidates}")


def postprocess_graph(meta: ModelMeta, spec: End2EndSpec, opset: int, dims: dict[str, Any]) -> onnx.ModelProto:
    """The post-processing alone as ONNX: inputs ``in_scores``, ``in_kernels``, ``in_mask_feat``
    (float32; ``dims`` gives each one's declared shape), outputs :data:`END2END_OUTPUTS`."""
    import onnx
    import torch

    module = End2EndPostprocess(meta, spec).eval()
    cfg = meta.model
    e = dims["in_kernels"][2]
    if not isinstance(e, int) or e < 1:
        raise BadInputError(f"the raw graph's kernels output has no static length: {dims['in_kernels']}")
    h4, w4 = (max(int(s) // 4, 8) for s in meta.preprocess.input_hw)
    sample = (torch.rand(2, cfg.num_cells, cfg.num_classes), torch.randn(2, cfg.num_cells, e),
              torch.randn(2, e, h4, w4))
    names_in = ["in_scores", "in_kernels", "in_mask_feat"]
    dynamic_axes = {"in_scores": {0: "batch"}, "in_kernels": {0: "batch"},
                    "in_mask_feat": {0: "batch", 2: "mask_height", 3: "mask_width"}}
    dynamic_axes.update({name: {0: "batch"} for name in END2END_OUTPUTS})
    dynamic_axes["masks"].update({2: "mask_height", 3: "mask_width"})
    with tempfile.TemporaryDirectory(prefix="solo-deploy-e2e-") as tmp, torch.no_grad():
        path = Path(tmp) / "post.onnx"
        try:
            torch.onnx.export(module, sample, str(path), input_names=names_in, output_names=list(END2END_OUTPUTS),
                              opset_version=opset, dynamo=False, do_constant_folding=True,
                              dynamic_axes=dynamic_axes)
        except Exception as exc:  # noqa: BLE001 - exporter errors of every kind
            raise RuntimeFailure(f"exporting the end-to-end post-processing failed: {one_line(exc)}") from None
        graph = onnx.load(str(path))
    return graph


def _restore_input_names(model: onnx.ModelProto, names: list[str]) -> None:
    """Give the graph inputs back their names: onnx < 1.19's ``add_prefix`` renames them even
    with ``rename_inputs=False`` (onnx/onnx#6754)."""
    renamed = {f"{_RAW_PREFIX}{n}": n for n in names}
    for vi in model.graph.input:
        if vi.name in renamed:
            vi.name = renamed[vi.name]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]


def effective_spec(meta: ModelMeta, spec: End2EndSpec) -> End2EndSpec:
    """``spec`` with the slot count the graph really has: K = min(max_per_img, nms_pre, K0,
    cells x classes)."""
    k0 = min(spec.max_candidates, meta.model.num_cells * meta.model.num_classes)
    k = min(spec.max_per_img, meta.postprocess.nms_pre, k0)
    return dataclasses.replace(spec, max_per_img=k)


def append_postprocess(raw: onnx.ModelProto, meta: ModelMeta, spec: End2EndSpec) -> onnx.ModelProto:
    """``raw`` (a solo-deploy SOLOv2 raw-output graph of any precision) with the post-processing
    joined to its outputs; metadata updated (``end2end``, outputs)."""
    import onnx
    from onnx import compose

    check_supported(meta, spec)
    spec = effective_spec(meta, spec)
    outs = [o.name for o in raw.graph.output]
    if outs != ["scores", "kernels", "mask_feat"]:
        raise BadInputError(f"cannot append post-processing: the graph's outputs are {outs}, not a raw SOLOv2 export's "
                            f"scores, kernels, mask_feat")
    opset = next((o.version for o in raw.opset_import if o.domain in ("", "ai.onnx")), 17)
    dims = {}
    for o, name in zip(raw.graph.output, ("in_scores", "in_kernels", "in_mask_feat")):
        dims[name] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in o.type.tensor_type.shape.dim]
    post = postprocess_graph(meta, spec, opset, dims)
    post.ir_version = raw.ir_version
    del post.opset_import[:]
    post.opset_import.extend(raw.opset_import)
    props = {p.key: p.value for p in raw.metadata_props}
    prefixed = compose.add_prefix(raw, _RAW_PREFIX, rename_inputs=False, rename_outputs=True)
    _restore_input_names(prefixed, [i.name for i in raw.graph.input])
    try:
        joined = compose.merge_models(
            prefixed, post, io_map=[(f"{_RAW_PREFIX}scores", "in_scores"), (f"{_RAW_PREFIX}kernels", "in_kernels"),
                                    (f"{_RAW_PREFIX}mask_feat", "in_mask_feat")],
            outputs=list(END2END_OUTPUTS), producer_name=raw.producer_name, producer_version=raw.producer_version,
            doc_string=raw.doc_string)
    except Exception as exc:  # noqa: BLE001 - onnx.compose raises ValueError / checker errors
        raise RuntimeFailure(f"joining the post-processing to the graph failed: {one_line(exc)}") from None
    if [i.name for i in joined.graph.input] != [i.name for i in raw.graph.input]:
        raise RuntimeFailure(f"joining renamed the graph's inputs to {[i.name for i in joined.graph.input]}")
    payload = json.loads(props.get("solo_deploy", "{}"))
    e2e_meta = dataclasses.replace(meta, end2end=spec)
    # The source's own blocks (an INT8 graph's "quantization") stay; the model description is new.
    new_payload = {**payload, **e2e_meta.to_dict()}
    export = dict(payload.get("export") or {})
    export["outputs"] = {o.name: [d.dim_value if d.HasField("dim_value") else d.dim_param
                                  for d in o.type.tensor_type.shape.dim] for o in joined.graph.output}
    export["end2end"] = {"raw_outputs": payload.get("export", {}).get("outputs"), "post_precision": "fp32"}
    new_payload["export"] = export
    props["solo_deploy"] = json.dumps(new_payload, sort_keys=True)
    del joined.metadata_props[:]
    for key, value in props.items():
        entry = joined.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(joined)
    return joined


# ---------------------------------------------------------------------------------------------
# Parity: the graph's instances against the Python post-processing of the same raw outputs
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class End2EndParity:
    """One batch: the end-to-end graph vs ``runtime.postprocess`` on the graph's own raw outputs."""

    images: int
    instances: int  # Python's instances over the images
    same_instances: bool  # per image: the same count, labels in the same order
    max_score_diff: float
    min_mask_iou: float  # binary masks at stride 4 (1.0 when there are none)
    max_candidates_seen: int  # most candidates above score_thr in one image (parity holds up to K0)
    k0: int

    @property
    def ok(self) -> bool:
        return self.same_instances and self.max_score_diff <= 1e-4 and self.min_mask_iou >= 0.999

    def summary(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return (f"end-to-end vs Python post-processing on {self.images} image(s): {self.instances} instances, "
                f"{'same' if self.same_instances else 'DIFFERENT'} labels and order, max score diff "
                f"{self.max_score_diff:.1e}, min mask IoU {self.min_mask_iou:.4f} (candidates <= "
                f"{self.max_candidates_seen} of K0 {self.k0}): {verdict}")


def with_raw_outputs(joined: onnx.ModelProto, raw_outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
    """A copy of an end-to-end graph that also outputs its raw tensors (``raw/scores``, ...)."""
    import copy

    model = copy.deepcopy(joined)
    for vi in raw_outputs:
        extra = copy.deepcopy(vi)
        extra.name = f"{_RAW_PREFIX}{vi.name}"
        model.graph.output.append(extra)
    return model


def parity_session(checking: onnx.ModelProto) -> Any:
    """An ONNX Runtime CPU session of a ``with_raw_outputs`` graph, for :func:`end2end_parity`."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(checking.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def end2end_parity(checking: onnx.ModelProto | None, meta: ModelMeta, images: Any,
                   session: Any = None) -> End2EndParity:
    """Run ``checking`` (``with_raw_outputs``; or its ``session`` from :func:`parity_session`) on
    uint8 ``images`` (N, H, W, 3) with ONNX Runtime and compare its instances with the Python
    post-processing of its raw outputs."""
    import numpy as np


    sess = session if session is not None else parity_session(checking)
    names = [o.name for o in sess.get_outputs()]
    outs = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: images})))
    raw_meta = dataclasses.replace(meta, end2end=None)
    raw = [outs[f"{_RAW_PREFIX}{n}"] for n in raw_meta.output_names]
    py = postprocess_outputs(raw_meta, *split_outputs(raw_meta, raw))
    e2e = postprocess_outputs(meta, *split_outputs(meta, [outs[n] for n in meta.output_names]))
    thr = meta.postprocess.mask_thr
    same, score_diff, min_iou, count = True, 0.0, 1.0, 0
    for a, b in zip(py, e2e):
        a, b = a.to_numpy(), b.to_numpy()
        count += len(a)
        if len(a) != len(b) or not np.array_equal(a.labels, b.labels):
            same = False
            continue
        if len(a):
            score_diff = max(score_diff, float(np.abs(a.scores - b.scores).max()))
            ma, mb = a.soft_masks > thr, b.soft_masks > thr
            inter = (ma & mb).reshape(len(a), -1).sum(1)
            union = (ma | mb).reshape(len(a), -1).sum(1)
            min_iou = min(min_iou, float(np.min(np.where(union > 0, inter / np.maximum(union, 1), 1.0))))
    cands = int((raw[0] > meta.postprocess.score_thr).reshape(raw[0].shape[0], -1).sum(1).max())
    k0 = min(meta.end2end.max_candidates if meta.end2end else 0, meta.model.num_cells * meta.model.num_classes)
    return End2EndParity(images=int(images.shape[0]), instances=count, same_instances=same,
                         max_score_diff=score_diff, min_mask_iou=min_iou, max_candidates_seen=cands, k0=k0)


# ---------------------------------------------------------------------------------------------
# `solo-deploy export ... --end2end`
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class End2EndExport:
    """What :func:`export_end2end` wrote and found."""

    path: Path
    meta: ModelMeta
    parity: End2EndParity | None
    trt_problems: tuple[str, ...]
    size_bytes: int

    @property
    def lines(self) -> list[str]:
        spec = self.meta.end2end
        assert spec is not None
        return report_lines(f"wrote {self.path} ({self.size_bytes / 2**20:.1f} MiB, end-to-end: {spec.max_per_img} "
                            f"instance slots, {spec.mask_format} masks at 1/4 of the input, K0 "
                            f"{spec.max_candidates} candidates)", self.parity, self.trt_problems)


def _parity_images(meta: ModelMeta, model: onnx.ModelProto, count: int = 2) -> Any:
    """Synthetic val images (built in, no download) as the graph's input batch."""

    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    batch = int(dim0.dim_value) if dim0.HasField("dim_value") and dim0.dim_value > 0 else count
    data = SyntheticDataset("val")
    images, _ = meta.preprocess.batch([data[i % len(data)].image_bgr for i in range(batch)])
    return images


def export_end2end(raw_path: str | Path, output: str | Path, *, mask_format: str | None = None,
                   max_candidates: int | None = None, check_parity: bool = True) -> End2EndExport:
    """Append the post-processing to the raw-output solo-deploy ONNX at ``raw_path`` (any
    precision) and write the end-to-end graph to ``output`` atomically, after its parity check
    against the Python post-processing (``ParityError``, nothing written, when it fails)."""
    import onnx


    raw_path, output = Path(raw_path), Path(output)
    check_outputs([("output", output)], [("model", raw_path)])
    model = load_onnx_checked(raw_path)
    meta = onnx_meta(raw_path, {p.key: p.value for p in model.metadata_props})
    if meta.end2end is not None:
        raise BadInputError(f"{raw_path} is already an end-to-end model")
    spec = effective_spec(meta, End2EndSpec(
        max_per_img=meta.postprocess.max_per_img, mask_format=mask_format or "uint8",
        max_candidates=END2END_CANDIDATES if max_candidates is None else max_candidates))
    raw_outputs = list(model.graph.output)
    joined = append_postprocess(model, meta, spec)
    del model
    e2e_meta = dataclasses.replace(meta, end2end=spec)
    problems = tuple(check_tensorrt_compat(joined))
    for p in problems:
        log.warning("TensorRT compatibility: %s", p)
    parity = None
    if check_parity:
        parity = end2end_parity(with_raw_outputs(joined, raw_outputs), e2e_meta, _parity_images(meta, joined))
        if not parity.ok:
            raise ParityError(f"end-to-end export of {raw_path.name} rejected, nothing written: {parity.summary()}")
    data = joined.SerializeToString()
    if len(data) >= 2**31:
        raise BadInputError(f"the end-to-end model is {len(data) / 2**30:.1f} GiB, over ONNX's 2 GiB single-file limit")
    onnx.checker.check_model(data)
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
    return End2EndExport(path=output, meta=e2e_meta, parity=parity, trt_problems=problems, size_bytes=len(data))
