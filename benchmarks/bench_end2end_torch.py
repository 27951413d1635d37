#!/usr/bin/env python
"""The end-to-end post-processing in PyTorch (CUDA graphs on a GPU) vs the Python post-processing,
per stage, at batch 1 and 8 (issue #18, item 3).

    python benchmarks/bench_end2end_torch.py MODEL.safetensors --device cuda [--iters 50] [--out FILE.json]

Both paths start from the same network outputs on the device:

- ``python``: ``runtime.postprocess`` on torch tensors (the array-API code ``predict`` runs on a
  GPU), then decoding to ``Detections``;
- ``end2end``: :class:`solo_deploy.export.end2end.End2EndPostprocess` (the module exported into
  end-to-end graphs), captured in a CUDA graph and replayed when the device is a GPU, eagerly
  otherwise; then the same decoding.

Stages per batch: network, post-processing, decoding (to per-image ``Detections``), timed with
CUDA events on a GPU and ``perf_counter`` after a synchronise on a CPU. Also checks that both
give the same instances (labels and order, scores within 1e-4). ``--device cpu`` runs the same
code without CUDA graphs (how CI exercises it).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    import solo_deploy  # noqa: F401
except ImportError:  # a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class _Clock:
    def __init__(self, device: Any) -> None:
        import torch

        self.torch, self.cuda = torch, device.type == "cuda"

    def start(self) -> Any:
        if self.cuda:
            e = self.torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def ms(self, a: Any, b: Any) -> float:
        if self.cuda:
            b.synchronize()
            return float(a.elapsed_time(b))
        return 1e3 * (b - a)


def run(model: Path, device_name: str, batches: list[int], iters: int, use_graphs: bool) -> dict[str, Any]:
    import torch

    from solo_deploy.core.meta import End2EndSpec
    from solo_deploy.data.synthetic import SyntheticDataset
    from solo_deploy.export.end2end import END2END_CANDIDATES, End2EndPostprocess
    from solo_deploy.model.deploy import DeployWrapper
    from solo_deploy.model.modelfile import build_network
    from solo_deploy.runtime.inference import decode_end2end, postprocess_outputs

    device = torch.device(device_name)
    net, meta = build_network(model)
    deploy = DeployWrapper(net, meta.preprocess).eval().to(device)
    spec = End2EndSpec(max_per_img=meta.postprocess.max_per_img, max_candidates=END2END_CANDIDATES)
    post = End2EndPostprocess(meta, spec).eval().to(device)
    ds = SyntheticDataset("val", count=max(batches))
    clock = _Clock(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out: dict[str, Any] = {"model": str(model), "device": str(device), "cuda_graphs": bool(use_graphs),
                           "k0": spec.max_candidates, "batches": {}}
    for b in batches:
        images, _ = meta.preprocess.batch([ds[i].image_bgr for i in range(b)])
        x = torch.from_numpy(images).to(device)
        with torch.inference_mode():
            raw = deploy(x)
            static_in = [t.clone() for t in raw]
            graph, static_out = None, None
            if use_graphs:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        post(*static_in)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = post(*static_in)
            t: dict[str, list[float]] = {k: [] for k in ("network", "python_post", "python_decode",
                                                        "e2e_post", "e2e_decode")}
            same, score_diff = True, 0.0
            for i in range(iters + 3):
                a = clock.start()
                raw = deploy(x)
                b_ = clock.start()
                dets = postprocess_outputs(meta, raw[0], raw[1], list(raw[2:]))
                c = clock.start()
                host = [d.to_numpy() for d in dets]
                d_ = clock.start()
                if graph is not None:
                    for s, r in zip(static_in, raw):
                        s.copy_(r)
                    graph.replay()
                    e2e = static_out
                else:
                    e2e = post(*raw)
                e_ = clock.start()
                got = [g.to_numpy() for g in decode_end2end(e2e[3], e2e[0], e2e[2], e2e[4], spec.mask_format)]
                f = clock.start()
                sync()
                if i >= 3:
                    t["network"].append(clock.ms(a, b_))
                    t["python_post"].append(clock.ms(b_, c))
                    t["python_decode"].append(clock.ms(c, d_))
                    t["e2e_post"].append(clock.ms(d_, e_))
                    t["e2e_decode"].append(clock.ms(e_, f))
                for p, g in zip(host, got):
                    same &= len(p) == len(g) and bool(np.array_equal(p.labels, g.labels))
                    if len(p) == len(g) and len(p):
                        score_diff = max(score_diff, float(np.abs(p.scores - g.scores).max()))
        med = {k: float(np.median(v)) for k, v in t.items()}
        py = med["python_post"] + med["python_decode"]
        e2 = med["e2e_post"] + med["e2e_decode"]
        out["batches"][b] = {"median_ms": med, "python_total_ms": med["network"] + py,
                             "e2e_total_ms": med["network"] + e2, "post_python_ms": py, "post_e2e_ms": e2,
                             "post_share_python": py / (med["network"] + py),
                             "post_share_e2e": e2 / (med["network"] + e2),
                             "same_instances": same, "max_score_diff": score_diff}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--no-graphs", action="store_true", help="eager on a GPU too")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device here (use --device cpu)", file=sys.stderr)
        return 2
    res = run(args.model, args.device, args.batches, args.iters,
              use_graphs=args.device.startswith("cuda") and not args.no_graphs)
    text = json.dumps(res, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
