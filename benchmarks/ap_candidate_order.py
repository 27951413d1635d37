"""Mask AP of one model under the old and the new candidate order, side by side (issue #14).

The network runs once per image; its raw outputs are post-processed twice:

* old order: the top ``nms_pre`` (500) candidates by category score, before any mask
  (``PostprocessConfig(max_candidates=500)``, what solo-deploy 0.2.1 did);
* new order (mmdetection's): masks and maskness of up to ``max_candidates`` (3840) candidates,
  then the top ``nms_pre`` after maskness rescoring.

Both are scored with pycocotools against the same ground truth. A script, not a test::

    OMP_NUM_THREADS=2 python benchmarks/ap_candidate_order.py [--model M] [--images N] [--json out.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from solo_deploy._atomic import write_json
from solo_deploy.app.models import load
from solo_deploy.data.splits import open_split
from solo_deploy.evaluation.coco_eval import evaluate
from solo_deploy.runtime.inference import detections_to_results
from solo_deploy.runtime.postprocess import to_numpy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model file (default: the shipped model)")
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--split", default="val")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--json", default="runs/bench/ap_candidate_order.json")
    args = ap.parse_args()
    model = args.model
    if model is None:
        from solo_deploy.runtime.defaults import default_model_path

        model = str(default_model_path())
    pred = load(model, backend=args.backend)
    meta = pred.meta
    new = meta.postprocess
    old = replace(new, max_candidates=new.nms_pre)
    ds, gt, class_names, cat_ids = open_split(args.data, args.split, args.images)
    results: dict[str, list] = {"old": [], "new": []}
    seconds = {"old": 0.0, "new": 0.0}
    candidates = []
    for i in range(len(ds)):
        s = ds[i]
        imgs, lbs = pred.preprocess([s.image_bgr])
        scores, kernels, feats = pred.runner(imgs)
        candidates.append(int((to_numpy(scores) > new.score_thr).sum()))
        for name, cfg in (("old", old), ("new", new)) if i % 2 else (("new", new), ("old", old)):
            t0 = time.perf_counter()
            results[name] += detections_to_results(meta, scores, kernels, feats, lbs, [s.image_id], cat_ids, post=cfg)
            seconds[name] += time.perf_counter() - t0
    metrics = {name: evaluate(gt, results[name], class_names=class_names) for name in ("old", "new")}
    cand = np.asarray(candidates)
    out = {
        "model": str(model), "backend": pred.runner.backend, "data": args.data, "split": args.split,
        "images": len(ds), "candidates": {"median": float(np.median(cand)), "max": int(cand.max()),
                                          "images_over_nms_pre": int((cand > new.nms_pre).sum())},
        "old": {"mask_AP": metrics["old"]["AP"], "AP50": metrics["old"]["AP50"],
                "postprocess_ms_per_image": round(1e3 * seconds["old"] / len(ds), 2)},
        "new": {"mask_AP": metrics["new"]["AP"], "AP50": metrics["new"]["AP50"],
                "postprocess_ms_per_image": round(1e3 * seconds["new"] / len(ds), 2)},
    }
    print(f"{model} on {args.data}/{args.split} ({len(ds)} images, {pred.runner.backend}); candidates per image: "
          f"median {out['candidates']['median']:.0f}, max {out['candidates']['max']}, "
          f"{out['candidates']['images_over_nms_pre']} images over nms_pre={new.nms_pre}")
    print(f"{'order':<8s}{'mask AP':>10s}{'AP50':>10s}{'post ms/img':>14s}")
    for name in ("old", "new"):
        r = out[name]
        ap50 = f"{r['AP50']:10.2f}" if r["AP50"] is not None else f"{'-':>10s}"
        print(f"{name:<8s}{r['mask_AP']:10.2f}{ap50}{r['postprocess_ms_per_image']:14.2f}")
    write_json(args.json, out)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
