#!/usr/bin/env python
"""End-to-end graph vs raw outputs + Python post-processing, side by side (issue #18).

    python benchmarks/bench_end2end.py MODEL.safetensors [--int8 OUT/model.cpu.int8.onnx] \\
        [--images 200] [--rounds 30] --out DIR

1. Exports MODEL to a dynamic-batch FP32 ONNX and appends the post-processing (``export_end2end``:
   uint8 and prob masks); with ``--int8``, appends it to that calibrated graph too.
2. Parity on the first ``--images`` synthetic val images at batch 1 and 4: per image the same
   instances (labels and order), scores within 1e-4, binary masks at stride 4 (IoU), and the
   masks on the image through the host's mapping (IoU of the RLEs), for both mask formats;
   the most candidates above score_thr in one image against K0.
3. COCO mask AP of the raw and the end-to-end models on the same images (``solo-deploy eval``'s
   function, batch 1 and 4).
4. Timing, interleaved in rounds on one image at batch 1 (ONNX Runtime CPU, ``--threads``):
   graph time and host post-processing per frame for raw (Python post-processing, masks on the
   image) and end-to-end (decoding, masks on the image); the post-processing share of the frame
   is the host part for raw, and (end-to-end graph - raw graph) + host part for end-to-end.

Writes ``DIR/end2end.json`` and ``DIR/end2end.md`` (atomically); prints the markdown.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    import solo_deploy  # noqa: F401
except ImportError:  # a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _images(n: int):
    from solo_deploy.data.synthetic import SyntheticDataset

    ds = SyntheticDataset("val", count=n)
    return [ds[i].image_bgr for i in range(n)]


def _rle_ious(a, b) -> list[float]:
    """IoU of each pair of masks on the image; 1.0 when both are empty (pycocotools says 0)."""
    from pycocotools import mask as mask_utils

    return [1.0 if mask_utils.area(x) == 0 and mask_utils.area(y) == 0 else float(mask_utils.iou([x], [y], [0])[0, 0])
            for x, y in zip(a.rles, b.rles)]


def parity(raw_path: Path, e2e_paths: dict[str, Path], images: list, batches: list[int], threads: int) -> dict:
    import onnx

    from solo_deploy.core.inspect import onnx_meta
    from solo_deploy.export.end2end import end2end_parity, parity_session, with_raw_outputs
    from solo_deploy.runtime.predictor import Predictor
    from solo_deploy.runtime.runners import OnnxRunner

    raw_model = onnx.load(str(raw_path))
    raw_pred = Predictor(OnnxRunner(raw_path, threads=threads))
    out: dict[str, Any] = {}
    for fmt, path in e2e_paths.items():
        joined = onnx.load(str(path))
        meta = onnx_meta(path)
        session = parity_session(with_raw_outputs(joined, list(raw_model.graph.output)))
        e2e_pred = Predictor(OnnxRunner(path, threads=threads))
        for b in batches:
            reps, ious, same_image, n_inst = [], [], True, 0
            for start in range(0, len(images) - b + 1, b):
                chunk = images[start:start + b]
                batch, _ = meta.preprocess.batch(chunk)
                reps.append(end2end_parity(None, meta, batch, session=session))
                for x, y in zip(raw_pred.predict_batch(chunk), e2e_pred.predict_batch(chunk)):
                    n_inst += len(x)
                    same_image &= len(x) == len(y) and bool(np.array_equal(x.labels, y.labels))
                    if len(x) == len(y):
                        ious += _rle_ious(x, y)
            out[f"{fmt} batch {b}"] = {
                "images": sum(r.images for r in reps), "instances": n_inst,
                "same_instances": all(r.same_instances for r in reps) and same_image,
                "max_score_diff": max(r.max_score_diff for r in reps),
                "min_mask_iou_stride4": min(r.min_mask_iou for r in reps),
                "image_mask_iou_min": min(ious) if ious else 1.0,
                "image_mask_iou_mean": float(np.mean(ious)) if ious else 1.0,
                "image_mask_iou_share_ge_0999": float(np.mean(np.array(ious) >= 0.999)) if ious else 1.0,
                "max_candidates_seen": max(r.max_candidates_seen for r in reps), "k0": reps[0].k0,
            }
    return out


def mask_ap(paths: dict[str, Path], images: int, batches: list[int]) -> dict:
    from solo_deploy.app.evaluate import evaluate_model

    out = {}
    for name, path in paths.items():
        for b in batches:
            m = evaluate_model(path, data="synthetic", split="val", images=images, batch=b)
            out[f"{name} batch {b}"] = {k: m[k] for k in ("AP", "AP50", "AP75")}
    return out


def timing(pairs: dict[str, tuple[Path, Path]], image, rounds: int, threads: int) -> dict:
    from solo_deploy.runtime.predictor import Predictor
    from solo_deploy.runtime.runners import OnnxRunner

    preds = {}
    for prec, (raw, e2e) in pairs.items():
        preds[f"{prec} raw"] = Predictor(OnnxRunner(raw, threads=threads))
        preds[f"{prec} end-to-end"] = Predictor(OnnxRunner(e2e, threads=threads))
    times: dict[str, dict[str, list[float]]] = {k: {"graph": [], "host": []} for k in preds}
    for r in range(rounds + 2):  # two rounds unrecorded: warm-up
        for name, pred in preds.items():
            batch, lbs = pred.preprocess([image])
            t0 = time.perf_counter()
            scores, kernels, maps = pred.runner(batch)
            t1 = time.perf_counter()
            pred.finish(scores, kernels, maps, lbs)
            t2 = time.perf_counter()
            if r >= 2:
                times[name]["graph"].append(t1 - t0)
                times[name]["host"].append(t2 - t1)
    med = {k: {s: 1e3 * float(np.median(v)) for s, v in d.items()} for k, d in times.items()}
    out = {}
    for prec in pairs:
        raw, e2e = med[f"{prec} raw"], med[f"{prec} end-to-end"]
        raw_total, e2e_total = raw["graph"] + raw["host"], e2e["graph"] + e2e["host"]
        in_graph = max(0.0, e2e["graph"] - raw["graph"])
        out[prec] = {"raw": {**raw, "total": raw_total, "post_ms": raw["host"], "post_share": raw["host"] / raw_total},
                     "end-to-end": {**e2e, "total": e2e_total, "post_ms": in_graph + e2e["host"],
                                    "post_share": (in_graph + e2e["host"]) / e2e_total},
                     "end-to-end / raw": e2e_total / raw_total}
    return out


def render(res: dict) -> str:
    lines = ["# End-to-end graph vs Python post-processing", "", f"Command: `{res['command']}`", "",
             f"Model: {res['model']}; K0 {res['k0']}; ONNX Runtime CPU, {res['threads']} threads; "
             f"{res['images']} synthetic val images.", "", "## Parity", "",
             "| variant | images | instances | same labels and order | max score diff | min IoU at stride 4 | "
             "IoU on the image: min / mean / share >= 0.999 | most candidates in one image |",
             "|---|---|---|---|---|---|---|---|"]
    for k, p in res["parity"].items():
        lines.append(f"| {k} | {p['images']} | {p['instances']} | {p['same_instances']} | "
                     f"{p['max_score_diff']:.1e} | {p['min_mask_iou_stride4']:.4f} | {p['image_mask_iou_min']:.4f} / "
                     f"{p['image_mask_iou_mean']:.5f} / {p['image_mask_iou_share_ge_0999']:.3f} | "
                     f"{p['max_candidates_seen']} of K0 {p['k0']} |")
    lines += ["", "## Mask AP (points)", "", "| model | AP | AP50 | AP75 |", "|---|---|---|---|"]
    for k, m in res["ap"].items():
        lines.append(f"| {k} | {m['AP']:.2f} | {m['AP50']:.2f} | {m['AP75']:.2f} |")
    lines += ["", f"## Time per frame (batch 1, medians of {res['rounds']} interleaved rounds, ms)", "",
              "| precision | variant | graph | host post-processing | total | post-processing (ms, share) |",
              "|---|---|---|---|---|---|"]
    for prec, t in res["timing"].items():
        for v in ("raw", "end-to-end"):
            x = t[v]
            lines.append(f"| {prec} | {v} | {x['graph']:.1f} | {x['host']:.1f} | {x['total']:.1f} | "
                         f"{x['post_ms']:.1f} ({100 * x['post_share']:.0f}%) |")
        lines.append(f"| {prec} | end-to-end / raw total | | | {t['end-to-end / raw']:.2f}x | |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--int8", type=Path, help="a calibrated raw INT8 ONNX of MODEL (solo-deploy calibrate)")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-candidates", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from solo_deploy._atomic import atomic_path
    from solo_deploy.export.end2end import export_end2end
    from solo_deploy.export.onnx_export import export_onnx

    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "models"
    work.mkdir(exist_ok=True)
    raw = export_onnx(args.model, work / "raw.onnx", dynamic=True).path
    e2e = {fmt: export_end2end(raw, work / f"e2e-{fmt}.onnx", mask_format=fmt,
                               max_candidates=args.max_candidates).path for fmt in ("uint8", "prob")}
    pairs = {"fp32": (raw, e2e["uint8"])}
    ap_models = {"raw fp32": raw, "end-to-end fp32 uint8": e2e["uint8"], "end-to-end fp32 prob": e2e["prob"]}
    if args.int8:
        e2e8 = export_end2end(args.int8, work / "e2e-int8.onnx", max_candidates=args.max_candidates).path
        pairs["int8"] = (args.int8, e2e8)
        ap_models.update({"raw int8": args.int8, "end-to-end int8 uint8": e2e8})
    images = _images(args.images)
    from solo_deploy.core.inspect import onnx_meta

    res: dict[str, Any] = {
        "command": "python benchmarks/bench_end2end.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "model": str(args.model), "images": args.images, "rounds": args.rounds, "threads": args.threads,
        "k0": onnx_meta(e2e["uint8"]).end2end.max_candidates,
    }
    t0 = time.perf_counter()
    res["parity"] = parity(raw, e2e, images, [1, 4], args.threads)
    res["ap"] = mask_ap(ap_models, args.images, [1])
    res["ap"].update(mask_ap({"end-to-end fp32 uint8": e2e["uint8"]}, args.images, [4]))
    res["timing"] = timing(pairs, images[0], args.rounds, args.threads)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    md = render(res)
    with atomic_path(args.out / "end2end.json") as tmp:
        tmp.write_text(json.dumps(res, indent=1))
    with atomic_path(args.out / "end2end.md") as tmp:
        tmp.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
