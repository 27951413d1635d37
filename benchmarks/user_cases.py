"""Run the user-path cases of issue #12 through the installed `solo-deploy` script and print a table.

Each case is a command a person types, on data laid out as people keep it, in a scratch folder.
For each: exit code, number of stderr lines, whether a traceback or native crash appeared, and
whether any input file changed. Used for the before/after table in the issue's closing note:

    python benchmarks/user_cases.py            # uses `solo-deploy` from PATH
    python benchmarks/user_cases.py --keep DIR # keep the scratch folder

The full-disk cases mount a 16 KiB tmpfs (needs root and mount permission); elsewhere they
are reported as not run. The tests cover the same faults by injecting ENOSPC.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# tests/ holds the tiny-model recipe; reuse it instead of a copy.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _hash_tree(paths: list[Path]) -> dict[str, str]:
    out = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else []
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def make_inputs(root: Path) -> dict[str, str]:
    """Tiny model, COCO folder, video, photos (one with EXIF orientation 6, one truncated PNG)."""
    import cv2
    import numpy as np
    from cli_helpers import write_exif_jpeg
    from conftest import tiny_config

    from solo_deploy.model.modelfile import ModelMeta, save_model_file
    from solo_deploy.model.network import SOLONet
    from solo_deploy.preprocess import PreprocessSpec

    cfg = tiny_config()
    model = root / "m.safetensors"
    save_model_file(model, SOLONet(cfg).state_dict(), ModelMeta(
        model=cfg, preprocess=PreprocessSpec(input_hw=(64, 64)), class_names=("circle", "rectangle", "triangle",
                                                                              "ring"), preset="solov2-light-r18"))
    subprocess.run(["solo-deploy", "data", "synthetic", "-o", str(root / "coco"), "--images", "6", "--imgsz", "64",
                    "64"], check=True, capture_output=True)
    subprocess.run(["solo-deploy", "data", "synthetic", "-o", str(root / "in.mp4"), "--images", "8", "--imgsz", "64",
                    "64", "--video"], check=True, capture_output=True)
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(photos / f"p{i}.jpg"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    (photos / "notes.txt").write_text("not an image\n")
    (photos / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    junk = root / "junk"
    junk.mkdir()
    ok = cv2.imencode(".png", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))[1].tobytes()
    (junk / "good.png").write_bytes(ok)
    (junk / "cut.png").write_bytes(ok[: len(ok) // 2])
    (junk / "fake.jpg").write_bytes(b"hello")
    (root / "cut.png").write_bytes(ok[: len(ok) // 2])
    write_exif_jpeg(root / "rot6.jpg", rng.integers(0, 255, (40, 80, 3), dtype=np.uint8), orientation=6)
    (root / "modeldir").mkdir()
    nl = root / "bad\nname.safetensors"
    shutil.copy(model, nl)
    return {"M": str(model)}


CASES: list[tuple[str, str, str]] = [
    # (defect, label, shell command run in the scratch folder)
    ("1 usage", "unknown command", "solo-deploy frobnicate"),
    ("1 usage", "unknown option", "solo-deploy run --video demo --bogus"),
    ("1 usage", "missing argument", "solo-deploy predict --source photos"),
    ("1 usage", "wrong type", "solo-deploy eval m.safetensors --imgsz abc 64"),
    ("1 usage", "missing option", "solo-deploy export m.safetensors"),
    ("1 usage", "typo in command", "solo-deploy predcit m.safetensors --source photos"),
    ("2 COCO", "eval on a COCO folder", "solo-deploy eval m.safetensors --data coco --images 5 --imgsz 64 64"),
    ("2 COCO", "train on a COCO folder", "solo-deploy train --data coco -o runs/t --epochs 1 --max-steps 1 "
     "--imgsz 64 64 --batch 2 --no-progress --accelerator cpu"),
    ("3 device", "--device gpu", "solo-deploy predict m.safetensors --source photos -o out1 --device gpu"),
    ("3 device", "--device 0 (no GPU)", "solo-deploy predict m.safetensors --source photos -o out2 --device 0"),
    ("3 device", "--device cuda:x", "solo-deploy eval m.safetensors --device cuda:x --images 2"),
    ("4 overwrite", "run -o = input video", "solo-deploy run --video in.mp4 -o in.mp4 --model m.safetensors"),
    ("4 overwrite", "predict -o = source folder", "solo-deploy predict m.safetensors --source photos -o photos"),
    ("4 overwrite", "export -o = model", "solo-deploy export m.safetensors -o m.safetensors --no-parity"),
    ("4 overwrite", "--save-json = --output", "solo-deploy run --video in.mp4 --model m.safetensors -o out.mp4 "
     "--save-json out.mp4"),
    ("5 faults", "run, disk full", "solo-deploy run --video in.mp4 --model m.safetensors -o full/o.avi"),
    ("5 faults", "export, disk full", "solo-deploy export m.safetensors -o full/m.onnx --no-parity"),
    ("6 stderr", "truncated PNG", "solo-deploy predict m.safetensors --source cut.png -o out3"),
    ("6 stderr", "folder with junk", "solo-deploy predict m.safetensors --source junk -o out4"),
    ("6 stderr", "--fps nan", "solo-deploy data synthetic --video -o v1.mp4 --images 3 --imgsz 64 64 --fps nan"),
    ("6 stderr", "--fps 0", "solo-deploy data synthetic --video -o v2.mp4 --images 3 --imgsz 64 64 --fps 0"),
    ("6 stderr", "--threads -1", "solo-deploy run --video in.mp4 --model m.safetensors --threads -1 --max-frames 2"),
    ("6 stderr", "model path with newline", "solo-deploy eval $'no\\nsuch.safetensors' --images 2"),
    ("6 stderr", "folder given as model", "solo-deploy eval modeldir --images 2"),
    ("6 stderr", "triton --name 'm\\n'", "solo-deploy export m.safetensors --format triton -o repo "
     "--name $'m\\n' --no-parity"),
]


def _restore(inputs: list[Path], pristine: Path) -> None:
    """Put every input back as it was made (a case that overwrote one must not spoil the next)."""
    for p in inputs:
        src = pristine / p.name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, p)


def run_case(cmd: str, cwd: Path, inputs: list[Path]) -> dict[str, object]:
    _restore(inputs, cwd / "pristine")
    before = _hash_tree(inputs)
    proc = subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    after = _hash_tree(inputs)
    err = proc.stderr
    lines = [ln for ln in err.splitlines() if ln.strip()]
    crash = proc.returncode < 0 or proc.returncode >= 128 or "terminate called" in err
    return {"rc": proc.returncode, "lines": len(lines), "traceback": "Traceback" in err, "crash": crash,
            "inputs_changed": before != after, "first": lines[0][:110] if lines else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="Scratch folder to use and keep.")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="solo-user-cases-"))
    root.mkdir(parents=True, exist_ok=True)
    make_inputs(root)
    full = root / "full"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(full)],
                             capture_output=True).returncode == 0
    inputs = [root / n for n in ("m.safetensors", "coco", "in.mp4", "photos", "junk", "cut.png")]
    (root / "pristine").mkdir()
    for p in inputs:
        (shutil.copytree if p.is_dir() else shutil.copy2)(p, root / "pristine" / p.name)
    print("| defect | case | command | exit | stderr lines | traceback | crash | inputs changed | first stderr line |")
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        for defect, label, cmd in CASES:
            if "full/" in cmd and not mounted:
                print(f"| {defect} | {label} | `{cmd}` | not run (no tmpfs) | | | | | |")
                continue
            r = run_case(cmd, root, inputs)
            first = str(r["first"]).replace("|", "\\|")
            print(f"| {defect} | {label} | `{cmd}` | {r['rc']} | {r['lines']} | {'yes' if r['traceback'] else 'no'} "
                  f"| {'yes' if r['crash'] else 'no'} | {'YES' if r['inputs_changed'] else 'no'} | {first} |",
                  flush=True)
        # A writer killed mid-way leaves a hidden temporary; the next write to the target removes it.
        stale = root / ".out5.onnx.tmp-dead1234.onnx"
        stale.write_bytes(b"x" * 1000)
        os.utime(stale, (1, 1))
        r = run_case("solo-deploy export m.safetensors -o out5.onnx --no-parity", root, inputs)
        print(f"| 5 faults | stale temp after SIGKILL | `export -o out5.onnx` with `{stale.name}` present | {r['rc']} "
              f"| {r['lines']} | {'yes' if r['traceback'] else 'no'} | no | no | stale file "
              f"{'still there' if stale.exists() else 'removed'} |")
        # EXIF orientation 6: stored 40x80 (H x W), shown by viewers as 80x40.
        r = run_case("solo-deploy predict m.safetensors --source rot6.jpg -o out6", root, inputs)
        import cv2

        ov = cv2.imread(str(root / "out6" / "rot6.jpg"))
        shape = "none" if ov is None else f"{ov.shape[0]}x{ov.shape[1]}"
        print(f"| 7 EXIF | photo with orientation 6 | `solo-deploy predict m.safetensors --source rot6.jpg -o out6` "
              f"| {r['rc']} | {r['lines']} | {'yes' if r['traceback'] else 'no'} | no | no | overlay {shape} "
              f"(viewers show 80x40) |")
    finally:
        if mounted:
            subprocess.run(["umount", str(full)], check=False)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
