"""Train the full-size presets for a few steps on CPU and show that the loss falls.

Usage: python benchmarks/train_steps_presets.py [--presets solo-r50 solov2-r50] [--steps 12] [--imgsz 128]
Repeats one fixed synthetic batch (an overfitting check: each preset's loss must fall); prints a table
and writes runs/train_steps_presets.json.
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["solo-r50", "solov2-r50"])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--imgsz", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--out", default="runs/train_steps_presets.json")
    args = ap.parse_args()

    from solo_deploy._atomic import write_json
    from solo_deploy.core.config import get_preset
    from solo_deploy.data.synthetic import SyntheticDataset
    from solo_deploy.data.transforms import EvalTransform, collate
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec
    from solo_deploy.training.losses import solo_loss
    from solo_deploy.training.targets import build_targets

    spec = PreprocessSpec(input_hw=(args.imgsz, args.imgsz))
    ds = SyntheticDataset("train")
    batch = collate([EvalTransform(spec)(ds[i]) for i in range(args.batch)])
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    x = (batch["images"].float() - mean) / std
    results = {}
    for name in args.presets:
        torch.manual_seed(0)
        cfg = get_preset(name, num_classes=4)
        net = SOLONet(cfg)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        targets = build_targets(cfg, batch["masks"], batch["labels"], spec.input_hw)
        losses, t0 = [], time.perf_counter()
        for _ in range(args.steps):
            loss = solo_loss(cfg, net(x), targets)["loss"]
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 35.0)
            opt.step()
            losses.append(float(loss))
        secs = (time.perf_counter() - t0) / args.steps
        results[name] = {"losses": losses, "seconds_per_step": secs, "falls": losses[-1] < losses[0]}
        print(f"{name:>18s}: loss {losses[0]:.3f} -> {losses[-1]:.3f} over {args.steps} steps "
              f"({secs:.1f} s/step, batch {args.batch} at {args.imgsz}px)")
    write_json(args.out, {"args": vars(args), "results": results})
    assert all(r["falls"] for r in results.values()), "a preset's loss did not fall"


if __name__ == "__main__":
    main()
