#!/usr/bin/env bash
# Reproduces the figures the README quotes for the shipped model, side by side on this machine:
# accuracy (torch, ONNX FP32, ONNX FP16, INT8), the INT8 calibration report, and the bench table.
# Usage: bash benchmarks/shipped_model_report.sh [MODEL] [OUT_DIR]     (about 15 minutes on 2 cores)
set -euo pipefail
M=${1:-solo_deploy/assets/default.safetensors}
OUT=${2:-runs/release}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

solo-deploy eval "$M" --backend torch --json "$OUT/eval_torch.json"
solo-deploy export "$M" -o "$OUT/default.onnx"
solo-deploy eval "$OUT/default.onnx" --json "$OUT/eval_onnx_fp32.json"
solo-deploy export "$M" --half -o "$OUT/default.fp16.onnx"
solo-deploy eval "$OUT/default.fp16.onnx" --json "$OUT/eval_onnx_fp16.json"
solo-deploy calibrate "$M" --data synthetic --images 128 --method minmax -o "$OUT/int8" \
  --max-ap-drop 1.0 --eval-images 200 --threads 2
python3 benchmarks/readme_perf.py "$M" --int8 "$OUT/int8/model.cpu.int8.onnx" --out docs/perf
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = {k: json.load(open(f"{out}/{k}.json")) for k in ("eval_torch", "eval_onnx_fp32", "eval_onnx_fp16")}
for k, m in rows.items():
    print(f"{k:16s} AP {m['AP']:.2f}  AP50 {m['AP50']:.2f}  AP75 {m['AP75']:.2f}")
print(f"FP16 - FP32 AP: {rows['eval_onnx_fp16']['AP'] - rows['eval_onnx_fp32']['AP']:+.2f} points")
PY
