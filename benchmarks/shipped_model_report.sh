#!/usr/bin/env bash
# Reproduces the figures the README quotes for the shipped model, side by side on this machine:
# accuracy (torch, ONNX FP32, ONNX FP16, INT8, after 45 minutes of training), the INT8 calibration
# report, the bench table (docs/perf), the pipeline and post-processing benchmarks and the demo run.
# Usage: bash benchmarks/shipped_model_report.sh [MODEL] [OUT_DIR] [TRAIN_RUN_DIR]
# About 20 minutes on 2 cores; run it on an otherwise idle machine (the timings are side by side).
set -euo pipefail
M=${1:-solo_deploy/assets/default.safetensors}
OUT=${2:-runs/release}
RUN=${3:-runs/default}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

solo-deploy eval "$M" --backend torch --json "$OUT/eval_torch.json"
if [ -f "$RUN/checkpoints/at-45min.ckpt" ]; then
  solo-deploy eval "$RUN/checkpoints/at-45min.ckpt" --backend torch --json "$OUT/eval_at45min.json"
fi
solo-deploy export "$M" -o "$OUT/default.onnx"
solo-deploy eval "$OUT/default.onnx" --json "$OUT/eval_onnx_fp32.json"
solo-deploy export "$M" --half -o "$OUT/default.fp16.onnx"
solo-deploy eval "$OUT/default.fp16.onnx" --json "$OUT/eval_onnx_fp16.json"
solo-deploy calibrate "$M" --data synthetic --images 128 --method minmax -o "$OUT/int8" \
  --max-ap-drop 1.0 --eval-images 200 --threads 2
python3 benchmarks/readme_perf.py "$M" --int8 "$OUT/int8/model.cpu.int8.onnx" --out docs/perf
python3 benchmarks/bench_postprocess.py --model "$M" --json "$OUT/bench_postprocess.json"
python3 benchmarks/bench_pipeline.py --model "$M" --json "$OUT/bench_pipeline.json"
solo-deploy run --video demo --max-frames 300 --output "$OUT/demo.mp4" --save-json "$OUT/demo.jsonl" \
  2>&1 | tee "$OUT/demo_run.txt"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
keys = [k for k in ("eval_torch", "eval_at45min", "eval_onnx_fp32", "eval_onnx_fp16") if os.path.exists(f"{out}/{k}.json")]
rows = {k: json.load(open(f"{out}/{k}.json")) for k in keys}
for k, m in rows.items():
    print(f"{k:16s} AP {m['AP']:.2f}  AP50 {m['AP50']:.2f}  AP75 {m['AP75']:.2f}")
print(f"FP16 - FP32 AP: {rows['eval_onnx_fp16']['AP'] - rows['eval_onnx_fp32']['AP']:+.2f} points")
PY
