"""Resource cases of issue #17: small files that ask for a lot of memory, run through the CLI.

Each case is one `solo-deploy` command on a generated input, run under GNU ``time -v`` inside an
address-space cap (so that a case which asks for 20 GiB fails here instead of taking the machine
down). For each: exit code, stderr lines, traceback yes/no, peak resident memory, wall time.

    python benchmarks/hostile_inputs.py --work /tmp/hostile                 # solo-deploy on PATH
    python benchmarks/hostile_inputs.py --work /tmp/hostile --pythonpath /tmp/old-checkout
                                                      # `python -m solo_deploy` of another checkout

Inputs are generated once under ``--work/inputs`` (a 20000x20000 JPEG, a 30000x30000 PNG, a PNG
header that claims 1e10 pixels, a 4000x3000 photo-like scene with ~100 objects, a deflate
"zip bomb" checkpoint that unpacks to 6 GiB, and a COCO folder with 100,000 annotations on one
image). The shipped default model is the model of every `predict` case.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

GIB = 1 << 30


def _scene(hw: tuple[int, int], tiles: tuple[int, int], seed: int):
    """A BGR image of tiles x synthetic scenes (each with several objects), resized to ``hw``."""
    import cv2
    import numpy as np

    from solo_deploy.data.synthetic import SyntheticDataset

    ds = SyntheticDataset("val")
    rows = []
    for r in range(tiles[0]):
        rows.append(np.concatenate([ds[seed + r * tiles[1] + c].image_bgr for c in range(tiles[1])], axis=1))
    return cv2.resize(np.concatenate(rows, axis=0), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


def _many_annotations(root: Path, n: int) -> None:
    """A COCO folder: two 640x480 images with ``n`` small square polygons each (whichever image
    the held-out split trains on, it has ``n``)."""
    import cv2
    import numpy as np

    (root / "images").mkdir(parents=True, exist_ok=True)
    img = _scene((480, 640), (1, 1), 3)
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(root / "images" / name), img)
    rng = np.random.default_rng(0)
    anns = []
    for image_id in (1, 2):
        for _ in range(n):
            x, y = float(rng.integers(0, 620)), float(rng.integers(0, 460))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0, "area": 100.0,
                         "bbox": [x, y, 10.0, 10.0], "segmentation": [[x, y, x + 10, y, x + 10, y + 10, x, y + 10]]})
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480},
                       {"id": 2, "file_name": "b.jpg", "width": 640, "height": 480}],
            "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    (root / "annotations.json").write_text(json.dumps(coco))


def make_inputs(inputs: Path) -> None:
    import cv2
    import numpy as np

    from solo_deploy.testing import deflate_bomb, png_claiming

    inputs.mkdir(parents=True, exist_ok=True)
    if not (inputs / "big20000.jpg").exists():
        cv2.imwrite(str(inputs / "big20000.jpg"), _scene((20000, 20000), (2, 2), 0), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not (inputs / "big30000.png").exists():
        img = np.zeros((30000, 30000), np.uint8)
        cv2.circle(img, (15000, 15000), 9000, 255, -1)
        cv2.imwrite(str(inputs / "big30000.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not (inputs / "claims1e10.png").exists():
        png_claiming(inputs / "claims1e10.png", 100_000, 100_000)
    if not (inputs / "scene4000x3000.jpg").exists():
        cv2.imwrite(str(inputs / "scene4000x3000.jpg"), _scene((3000, 4000), (2, 2), 0))
    if not (inputs / "bomb.ckpt").exists():
        deflate_bomb(inputs / "bomb.ckpt", 6 * GIB)
    crowded = inputs / "crowded" / "annotations.json"
    if not crowded.exists() or crowded.stat().st_size < 25e6:  # 100,000 on each of two images
        _many_annotations(inputs / "crowded", 100_000)


def cases(inputs: Path, model: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, arguments, extra environment) of each case."""
    pred = ["predict", str(model), "-s"]
    raised = {"SOLO_DEPLOY_MAX_IMAGE_PIXELS": "400000000"}
    return [(name, args, env) for name, args, env in [
        ("predict 20000x20000 JPEG", pred + [str(inputs / "big20000.jpg"), "-o", "p20000"], {}),
        ("predict 20000x20000 JPEG, limit raised to 4e8", pred + [str(inputs / "big20000.jpg"), "-o", "p20000r"],
         raised),
        ("predict 30000x30000 PNG", pred + [str(inputs / "big30000.png"), "-o", "p30000"], {}),
        ("predict PNG header 1e10 px", pred + [str(inputs / "claims1e10.png"), "-o", "p1e10"], {}),
        ("predict 4000x3000, ~100 instances", pred + [str(inputs / "scene4000x3000.jpg"), "-o", "p4000"], {}),
        ("import zip-bomb .ckpt (6 GiB inflated)", ["import", str(inputs / "bomb.ckpt"), "-o", "bomb.safetensors"],
         {}),
        ("train, 100,000 annotations on one image",
         ["train", "--data", str(inputs / "crowded"), "--epochs", "1", "--max-steps", "1", "--batch-size", "1",
          "--imgsz", "64", "64", "--val-fraction", "0.5", "-o", "crowded-run"], {}),
    ]]


def run_case(cmd: list[str], cwd: Path, cap_bytes: int, env: dict[str, str], timeout: float) -> dict:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))

    t0 = time.perf_counter()
    try:
        p = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=timeout, preexec_fn=cap)
        rc, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired as exc:
        rc, err = "timeout", (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
    wall = time.perf_counter() - t0
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    own = err.split("\tCommand being timed:")[0].strip().splitlines()
    own = [line for line in own if line.strip() and not line.startswith("Command exited with non-zero status")]
    return {"rc": rc, "stderr_lines": len(own), "traceback": any("Traceback" in line for line in own),
            "peak_mib": round(int(peak.group(1)) / 1024) if peak else None, "wall_s": round(wall, 1),
            "last_line": own[-1][:200] if own else ""}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--pythonpath", type=Path, help="run `python -m solo_deploy` with this checkout first on the path")
    ap.add_argument("--cap-gib", type=float, default=12.0, help="address-space cap per case (GiB)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--only", nargs="*", help="substrings of case names to run")
    ap.add_argument("--label", default="run")
    args = ap.parse_args()
    inputs = args.work / "inputs"
    make_inputs(inputs)
    import solo_deploy

    model = Path(solo_deploy.__file__).parent / "assets" / "default.safetensors"
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = str(args.pythonpath)
        exe = [sys.executable, "-m", "solo_deploy"]
    else:
        exe = [shutil.which("solo-deploy") or "solo-deploy"]
    env.setdefault("SOLO_DEPLOY_CACHE", str(args.work / f"cache-{args.label}"))
    out = args.work / args.label
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # Warm the ONNX cache of the default model outside the measured cases.
    small = inputs / "small.jpg"
    if not small.exists():
        import cv2

        cv2.imwrite(str(small), _scene((480, 640), (1, 1), 1))
    subprocess.run([*exe, "predict", str(model), "-s", str(small), "-o", "warm"],
                   cwd=out, env=env, capture_output=True, check=False)
    rows = []
    for name, cmd, extra in cases(inputs, model):
        if args.only and not any(s in name for s in args.only):
            continue
        row = {"case": name, **run_case([*exe, *cmd], out, int(args.cap_gib * GIB), {**env, **extra}, args.timeout)}
        preds = out / cmd[-1] / "predictions.json" if cmd[0] == "predict" else None
        if preds and preds.exists():
            row["instances"] = len(json.loads(preds.read_text())["annotations"])
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n| case | exit | stderr lines | traceback | peak RSS (MiB) | wall (s) | last stderr line |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['rc']} | {r['stderr_lines']} | {'yes' if r['traceback'] else 'no'} | "
              f"{r['peak_mib']} | {r['wall_s']} | {r['last_line'].replace('|', '/')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
