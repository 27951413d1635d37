"""`solo-deploy bench` of two source trees on one model, interleaved in one run: did a change move
any stage? For a refactor that should change nothing (issue #13), every stage's share of the frame
time should agree within a few hundredths.

    python benchmarks/bench_before_after.py --before /path/to/old/checkout [--model M] [--rounds 3]

Each round runs the bench of the old tree (``PYTHONPATH=<before>``), then of this tree, so that
the machine's drift (this 2-vCPU VM moves by 2x over minutes) hits both alike. Per row (backend)
and stage it prints the medians over rounds, the after/before latency ratio, each stage's share
of the summed stages before and after, and their difference; and the rows' speed-up vs torch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("preprocess", "host_to_device", "inference", "device_to_host", "postprocess")


def bench(tree: Path | None, model: str, args: argparse.Namespace, out: Path) -> dict:
    env = {**os.environ}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    cmd = [sys.executable, "-c", "from solo_deploy.cli import main; main()", "bench", model, "--backends",
           args.backends, "--devices", "cpu", "--frames", str(args.frames), "--warmup", str(args.warmup), "--json",
           str(out)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    if proc.returncode != 0:
        raise SystemExit(f"bench failed ({'before' if tree else 'after'}): {proc.stderr.strip()[-500:]}")
    return json.loads(out.read_text())


def stage_ms(result: dict) -> dict[str, dict[str, float]]:
    """row id -> stage -> median ms of that run."""
    rows = {}
    for m in result["models"]:
        for r in m["rows"]:
            if r.get("status") == "ok":
                rows[r["backend"]] = {s: float(r["stages"][s]["p50_ms"]) for s in STAGES if s in r["stages"]}
                rows[r["backend"]]["speedup_vs_torch"] = float(r.get("speedup_vs_torch") or 0.0)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="Checkout of the old tree (its repository root).")
    ap.add_argument("--model", default=str(REPO / "solo_deploy" / "assets" / "default.safetensors"))
    ap.add_argument("--backends", default="torch,onnxruntime")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, help="Write the per-round figures as JSON.")
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for side, tree in (("before", args.before.resolve()), ("after", None)):
                runs[side].append(stage_ms(bench(tree, args.model, args, Path(tmp) / f"{side}{i}.json")))
                print(f"round {i + 1}/{args.rounds} {side}: "
                      + ", ".join(f"{b} inference {v['inference']:.1f} ms" for b, v in runs[side][-1].items()),
                      flush=True)
    print(f"\nmedians of {args.rounds} interleaved rounds; share = stage / sum of stages")
    print(f"{'row':12s} {'stage':15s} {'before ms':>10s} {'after ms':>9s} {'ratio':>6s} {'share b':>8s} "
          f"{'share a':>8s} {'diff':>6s}")
    worst = 0.0
    table = {}
    for backend in runs["before"][0]:
        med = {side: {k: statistics.median(r[backend][k] for r in runs[side]) for k in runs[side][0][backend]}
               for side in runs}
        tot = {side: sum(med[side][s] for s in STAGES if s in med[side]) for side in med}
        for s in STAGES:
            if s not in med["before"]:
                continue
            b, a = med["before"][s], med["after"][s]
            sb, sa = b / tot["before"], a / tot["after"]
            worst = max(worst, abs(sa - sb))
            table.setdefault(backend, {})[s] = {"before_ms": b, "after_ms": a, "share_before": sb, "share_after": sa}
            print(f"{backend:12s} {s:15s} {b:10.2f} {a:9.2f} {a / b if b else float('nan'):6.2f} {sb:8.3f} {sa:8.3f} "
                  f"{sa - sb:+6.3f}")
        if backend != "torch":
            print(f"{backend:12s} {'speed-up vs torch':15s} {med['before']['speedup_vs_torch']:10.2f} "
                  f"{med['after']['speedup_vs_torch']:9.2f}")
    print(f"\nlargest change of a stage's share: {worst:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": runs, "medians": table, "largest_share_change": worst}, indent=1))


if __name__ == "__main__":
    main()
