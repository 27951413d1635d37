"""Accuracy guard: keep the most quantization-sensitive layers in FP32 until the AP drop fits.

Sensitivity (one cheap pass): run the FP32 model and the fully quantized model on a few
calibration images with every candidate layer's output (Conv/MatMul/Gemm) exposed, and measure
each output's relative error ``e = ||q - f|| / ||f||``. Errors accumulate down the network, so
a layer's own contribution is the error it *adds*: ``e(layer) - max e(nearest upstream compute
layers)`` (its input and weight quantization, plus its amplification of what came in). Layers
are ranked by that local gain (ties: by their total error). Two inference passes, no
re-quantization: seconds, where quantizing one layer at a time would cost one quantization and
one evaluation per layer.

Search (at most ``max_tries`` AP evaluations, within a time budget): all layers quantized first;
when the drop exceeds ``max_ap_drop`` (AP points), exclude the top-k ranked layers with k growing
geometrically (N/16, doubling, capped at N), stopping at the first k that meets the limit. When
none does, the try with the smallest drop wins and ``met`` is False.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("solo_deploy.calibration")

__all__ = ["GuardResult", "LayerSensitivity", "exclusion_schedule", "output_errors", "rank_sensitivity", "run_guard"]

COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass(frozen=True)
class LayerSensitivity:
    """``error``: relative output error in the quantized model; ``gain``: the part it adds."""

    node: str
    error: float
    gain: float


@dataclass
class GuardResult:
    """The chosen exclusion (``excluded`` node names, most sensitive first) and every try."""

    met: bool
    excluded: tuple[str, ...]
    ap_fp32: float
    ap: float
    max_ap_drop: float
    tries: list[dict[str, Any]] = field(default_factory=list)
    ranking: list[LayerSensitivity] = field(default_factory=list)
    stopped: str = ""  # why the search ended: met / schedule exhausted / time budget

    @property
    def drop(self) -> float:
        return self.ap_fp32 - self.ap

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        return {"met": self.met, "max_ap_drop": self.max_ap_drop, "ap_fp32": self.ap_fp32, "ap_int8": self.ap,
                "ap_drop": round(self.drop, 4), "excluded": list(self.excluded), "tries": self.tries,
                "stopped": self.stopped,
                "ranking_top": [{"node": s.node, "error": round(s.error, 6), "gain": round(s.gain, 6)}
                                for s in self.ranking[:top]]}


def exclusion_schedule(n_candidates: int, max_tries: int = 5) -> list[int]:
    """How many top-ranked layers each try keeps in FP32: 0, then N/16 doubling up to N.

    ``max_tries`` counts every AP evaluation of an INT8 model (the all-quantized one included).
    """
    sizes = [0]
    if n_candidates <= 0:
        return sizes
    k = max(1, math.ceil(n_candidates / 16))
    while len(sizes) < max_tries:
        sizes.append(min(k, n_candidates))
        if k >= n_candidates:
            break
        k *= 2
    return sizes


def _upstream(model: Any, candidates: Sequence[str]) -> dict[str, set[str]]:
    """For each candidate node: output tensors of the nearest compute nodes above it."""
    producer = {o: n for n in model.graph.node for o in n.output}
    initializers = {i.name for i in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    out: dict[str, set[str]] = {}
    for name in candidates:
        node = by_name[name]
        found: set[str] = set()
        stack = [t for t in node.input[:1] if t not in initializers]  # the data input, not weights/bias
        if node.op_type in ("MatMul",):
            stack = [t for t in node.input if t not in initializers]
        seen: set[str] = set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            p = producer.get(t)
            if p is None:
                continue
            if p.op_type in COMPUTE_OPS:
                found.add(p.output[0])
                continue
            stack.extend(i for i in p.input if i and i not in initializers)
        out[name] = found
    return out


def output_errors(fp32_path: str | Path, int8_path: str | Path, images: np.ndarray, tensors: Sequence[str],
                  threads: int | None = None) -> dict[str, float]:
    """Relative L2 error ``||q - f|| / ||f||`` of each named tensor, int8 model vs FP32 model,
    accumulated over ``images`` (uint8 (N, H, W, 3), fed in the model's static batch, else one by one)."""
    import onnx
    import onnxruntime as ort

    def session(path: str | Path):
        model = onnx.load(str(path))
        have = {o.name for o in model.graph.output}
        for t in tensors:
            if t not in have:
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
        return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])

    s_f, s_q = session(fp32_path), session(int8_path)
    inp = s_f.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 1  # static batch, else 1
    if images.shape[0] < batch:
        images = np.concatenate([images] * math.ceil(batch / images.shape[0]))[:batch]
    names = list(tensors)
    num = dict.fromkeys(names, 0.0)
    den = dict.fromkeys(names, 0.0)
    for i in range(0, images.shape[0] - batch + 1, batch):
        feed = {inp.name: images[i:i + batch]}
        f = dict(zip(names, s_f.run(names, feed)))
        q = dict(zip(names, s_q.run(names, feed)))
        for t in names:
            a, b = f[t].astype(np.float64), q[t].astype(np.float64)
            num[t] += float(np.sum((a - b) ** 2))
            den[t] += float(np.sum(a ** 2))
    return {t: math.sqrt(num[t] / den[t]) if den[t] > 0 else math.sqrt(num[t]) for t in names}


def rank_sensitivity(fp32_path: str | Path, int8_path: str | Path, images: np.ndarray, candidates: Sequence[str],
                     threads: int | None = None) -> list[LayerSensitivity]:
    """Rank ``candidates`` (compute node names) by the output error they add when quantized,
    most sensitive first. ``int8_path``: the model with every candidate quantized."""
    import onnx

    model = onnx.load(str(fp32_path), load_external_data=False)
    by_name = {n.name: n for n in model.graph.node}
    missing = [c for c in candidates if c not in by_name]
    if missing:
        raise ValueError(f"unknown candidate nodes: {missing[:3]}")
    out_of = {c: by_name[c].output[0] for c in candidates}
    upstream = _upstream(model, candidates)
    tensors = sorted(set(out_of.values()) | {t for ups in upstream.values() for t in ups})
    t0 = time.perf_counter()
    err = output_errors(fp32_path, int8_path, images, tensors, threads=threads)
    ranking = []
    for c in candidates:
        e = err[out_of[c]]
        base = max((err[t] for t in upstream[c]), default=0.0)
        ranking.append(LayerSensitivity(node=c, error=e, gain=e - base))
    ranking.sort(key=lambda s: (-s.gain, -s.error))
    log.info("ranked %d layers by quantization sensitivity in %.1f s", len(ranking), time.perf_counter() - t0)
    return ranking


def run_guard(try_exclusion: Callable[[tuple[str, ...]], float], rank: Callable[[], Sequence[LayerSensitivity]],
              ap_fp32: float, max_ap_drop: float, schedule: Sequence[int] | None = None,
              budget_s: float = 1200.0) -> GuardResult:
    """Search the smallest scheduled exclusion whose INT8 AP is within ``max_ap_drop`` of ``ap_fp32``.

    ``try_exclusion(excluded) -> AP`` quantizes with ``excluded`` kept FP32 and evaluates it;
    ``rank()`` is called once, only when the all-quantized model misses the limit.
    """
    schedule = list(schedule) if schedule is not None else [0]
    t0 = time.perf_counter()
    ranking: list[LayerSensitivity] = []
    tries: list[dict[str, Any]] = []
    best: tuple[float, int, tuple[str, ...], float] | None = None  # (drop, k, excluded, ap)
    stopped = "schedule exhausted"
    for i, k in enumerate(schedule):
        if i > 0 and time.perf_counter() - t0 > budget_s:
            stopped = "time budget"
            break
        if k > 0 and not ranking:
            ranking = list(rank())
        excluded = tuple(s.node for s in ranking[:k])
        t_try = time.perf_counter()
        ap = float(try_exclusion(excluded))
        drop = ap_fp32 - ap
        tries.append({"excluded": len(excluded), "ap_int8": ap, "ap_drop": round(drop, 4),
                      "seconds": round(time.perf_counter() - t_try, 2)})
        log.info("guard try %d: %d layer(s) FP32 -> AP %.2f (drop %.2f, limit %.2f)", i + 1, len(excluded), ap, drop,
                 max_ap_drop)
        if best is None or (drop, len(excluded)) < (best[0], best[1]):
            best = (drop, len(excluded), excluded, ap)
        if drop <= max_ap_drop:
            return GuardResult(met=True, excluded=excluded, ap_fp32=ap_fp32, ap=ap, max_ap_drop=max_ap_drop,
                               tries=tries, ranking=ranking, stopped="met")
    assert best is not None
    return GuardResult(met=False, excluded=best[2], ap_fp32=ap_fp32, ap=best[3], max_ap_drop=max_ap_drop,
                       tries=tries, ranking=ranking, stopped=stopped)
