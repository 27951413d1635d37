"""Print the reference-parity table of the README from the committed fixtures (no mmdetection).

For every architecture of tests/reference/fixtures: the largest raw-output difference from
mmdetection (relative to each output's largest value), then the final instances of an
mmdetection-format checkpoint imported with ``solo_deploy.importing.import_checkpoint`` and run
through PyTorch, ONNX Runtime FP32 and ONNX Runtime FP16 against mmdetection's instances: rank
by rank for FP32 (same label, score difference, mask IoU), greedy same-label matching for FP16.

    python tools/reference/parity_table.py [--archs decoupled_solo ...]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
for sub in ("", "tests", "tests/reference", "tests/importing"):
    sys.path.insert(0, str(ROOT / sub))

import test_instance_parity as inst  # noqa: E402
import test_raw_parity as raw  # noqa: E402
from import_helpers import mmdet_checkpoint  # noqa: E402

import solo_deploy  # noqa: E402
from solo_deploy.export.onnx_export import export_onnx  # noqa: E402
from solo_deploy.importing.importer import import_checkpoint  # noqa: E402
from solo_deploy.model.network import SOLONet  # noqa: E402


def raw_worst(arch: str) -> float:
    """Largest raw-output difference over the fixture's images, relative to each output's max."""
    cfg = raw.model_config(arch)
    net = SOLONet(cfg).eval()
    net.load_state_dict(raw.from_mmdet(raw.mmdet_weights(arch), cfg), strict=True)
    worst = 0.0
    with np.load(raw.FIXTURES / raw.MANIFEST["architectures"][arch]["file"]) as ref:
        for i in range(len(raw.MANIFEST["images"])):
            p = f"img{i}."
            with torch.no_grad():
                out = net(torch.from_numpy(ref[p + "input"]))
            pairs = [(f"cate{lvl}", t) for lvl, t in enumerate(out.cate)]
            if cfg.arch == "solov2":
                pairs += [(f"kernel{lvl}", t) for lvl, t in enumerate(out.kernel)] + [("mask_feat", out.mask_feat[0])]
            elif cfg.decoupled:
                pairs += [(f"mask_x{lvl}", t) for lvl, t in enumerate(out.mask_x)]
                pairs += [(f"mask_y{lvl}", t) for lvl, t in enumerate(out.mask_y)]
            for name, t in pairs:
                worst = max(worst, raw.compare(ref, p + name, t))
            if cfg.arch == "solo":
                for lvl, (k, f) in enumerate(zip(out.kernel, out.mask_feat)):
                    name = f"{p}mask_logits{lvl}"
                    shape = tuple(int(d) for d in ref[f"{name}.shape"])
                    worst = max(worst, raw.compare(ref, name, sampled=raw.solo_mask_logits(k, f, shape,
                                                                                          ref[f"{name}.idx"])))
    return worst


def fp32_row(pred, refs) -> str:
    same = total = 0
    diffs, ious = [], []
    for ref in refs:
        got = pred.predict(ref["image"])
        n = len(ref["labels"])
        total += n
        k = min(n, len(got))
        same += int((got.labels[:k] == ref["labels"][:k]).sum())
        diffs.append(np.abs(got.scores[:k] - ref["scores"][:k]))
        ious.append(inst.iou(got.masks[:k], ref["masks"][:k]))
    d, u = np.concatenate(diffs), np.concatenate(ious)
    return (f"{same}/{total} same label at the same rank; scores within {d.max():.1e} "
            f"({(d <= 1e-4).mean():.0%} within 1e-4); IoU >= {u.min():.4f} (median {np.median(u):.4f})")


def fp16_row(pred, refs) -> str:
    at95 = at99 = total = 0
    for ref in refs:
        got = pred.predict(ref["image"])
        total += len(ref["labels"])
        taken = np.zeros(len(got), bool)
        for label, mask in zip(ref["labels"], ref["masks"]):
            cand = np.nonzero((got.labels == label) & ~taken)[0]
            if not len(cand):
                continue
            ious = inst.iou(got.masks[cand], mask[None])
            best = int(np.argmax(ious))
            if ious[best] >= 0.95:
                taken[cand[best]] = True
                at95 += 1
                at99 += bool(ious[best] >= 0.99)
    return f"{at95}/{total} at IoU >= 0.95, {at99} at >= 0.99"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=inst.ARCHS, choices=inst.ARCHS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            folder = Path(tmp) / arch
            ckpt = mmdet_checkpoint(arch, folder / "epoch_36.pth", classes=inst.CLASS_NAMES)
            model = import_checkpoint(ckpt, folder / f"{arch}.safetensors").path
            refs = inst.reference_instances(arch)
            print(f"## {arch}")
            print(f"raw outputs: within {raw_worst(arch):.1e} of the largest value")
            print("PyTorch FP32:", fp32_row(solo_deploy.load(model, backend="torch"), refs))
            onnx32 = export_onnx(model, folder / "fp32.onnx").path
            print("ORT FP32:", fp32_row(solo_deploy.load(onnx32, backend="onnxruntime"), refs))
            onnx16 = export_onnx(model, folder / "fp16.onnx", half=True).path
            print("ORT FP16:", fp16_row(solo_deploy.load(onnx16, backend="onnxruntime"), refs))


if __name__ == "__main__":
    main()
