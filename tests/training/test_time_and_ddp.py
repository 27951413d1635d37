"""Training's wall-clock budget and distributed validation (issue #16), through the installed
script and, for the exact AP comparison, Lightning's own validate loop in subprocesses."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run_cli

ROOT = Path(__file__).parents[2]
SHIPPED = ROOT / "solo_deploy" / "assets" / "default.safetensors"
TINY = ("--imgsz", "64", "64", "--batch", "2", "--train-images", "8", "--val-images", "2", "--no-progress",
        "--accelerator", "cpu")


def _cosine_recipe(folder: Path, *extra: str, batch_size: int = 2) -> Path:
    """A recipe whose learning rate is the bare cosine from 1e-3 (no warm-up), 64 x 64 inputs."""
    path = folder / "cosine.yaml"
    path.write_text("\n".join(["imgsz: [64, 64]", f"batch_size: {batch_size}", "warmup_steps: 0", "schedule: cosine",
                               "lr: 0.001", *extra]) + "\n")
    return path


def _rows(run: Path, key: str) -> list[float]:
    with open(run / "logs" / "metrics.csv", newline="") as fh:
        return [float(r[key]) for r in csv.DictReader(fh) if r.get(key)]


def test_max_time_stops_the_run_and_the_schedule_follows_it(tmp_path: Path) -> None:
    # No warm-up and no validation in the way: the learning rate shows the schedule's progress.
    recipe = _cosine_recipe(tmp_path, "val_every: 1000")
    proc = run_cli("train", "-o", "run", "--recipe", recipe, "--max-time", "00:00:10", "--train-images", "8",
                   "--no-progress", "--accelerator", "cpu", "--log-level", "info", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "time budget: 00:00:10 (--max-time)" in proc.stderr
    lrs, steps = _rows(tmp_path / "run", "train/lr"), _rows(tmp_path / "run", "step")
    assert len(lrs) >= 2 and max(steps) > 4 * 2, (lrs, steps)  # more than 2 epochs of 4 steps: time ended it
    # Cosine over the 10 s of training, from 1e-3: down by half or more at the last logged step,
    # and falling all along.
    assert lrs[-1] < 0.5e-3 and lrs == sorted(lrs, reverse=True), lrs
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_a_time_cap_beside_max_steps_leaves_the_schedule_to_the_steps(tmp_path: Path) -> None:
    """--max-time as a safety cap on a run with --max-steps: the rate reaches its floor with the
    last step, not an hour later. The row logged at the 10th step shows the rate after 9 of 12
    scheduler steps: cosine factor 0.155 (an hour-long schedule would still be at ~1)."""
    recipe = _cosine_recipe(tmp_path, "val_every: 1000", "epochs: 100")
    proc = run_cli("train", "-o", "run", "--recipe", recipe, "--max-time", "01:00:00", "--max-steps", "12",
                   "--train-images", "8", "--no-progress", "--accelerator", "cpu", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert _rows(tmp_path / "run", "train/lr") == pytest.approx([1e-3 * (0.01 + 0.99 * 0.5 * (1 + math.cos(
        math.pi * 9 / 12)))], rel=1e-3)


def test_epochs_turn_the_recipe_budget_off_and_bad_budgets_are_usage_errors(tmp_path: Path) -> None:
    proc = run_cli("train", "-o", "run", "--epochs", "1", "--max-steps", "1", *TINY, "--log-level", "info",
                   cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "the recipe's time budget is off: --epochs sets the run's length" in proc.stderr
    for bad in ("8s", "00:61:00", "0:0:0", "1:2"):
        assert_one_line_error(run_cli("train", "-o", "run2", "--max-time", bad, cwd=tmp_path), 2, "--max-time", bad)


def _validate(processes: int, *extra: str) -> dict[str, float]:
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "training" / "ddp_validate.py"), str(SHIPPED),
                           str(processes), "5", *extra], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("METRICS "))
    return json.loads(line[len("METRICS "):])


def test_two_process_validation_equals_one_process() -> None:
    """5 validation images (odd: the distributed sampler repeats one) on the shipped model."""
    one, two = _validate(1), _validate(2)
    assert one["val/images"] == two["val/images"] == 5
    assert one["val/AP"] > 20  # a real model: the comparison means something
    for key in ("val/AP", "val/AP50", "val/AP75"):
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
    local = _validate(2, "local")  # each rank on its own slice, as before the gather
    assert local["val/images"] == 3 and abs(local["val/AP"] - one["val/AP"]) > 5


def test_train_with_two_cpu_processes(tmp_path: Path) -> None:
    """Two processes share the 8 training images: 4 steps per epoch each, 12 in 3 epochs, so the
    rate logged at the 10th step is the cosine's at 9/12 (a one-process count, 24, would leave it
    at 9/24: 6.9e-4 instead of 1.55e-4)."""
    recipe = _cosine_recipe(tmp_path, batch_size=1)
    proc = run_cli("train", "-o", "run", "--recipe", recipe, "--strategy", "ddp", "--devices", "2", "--epochs", "3",
                   "--train-images", "8", "--val-images", "5", "--no-progress", "--accelerator", "cpu", cwd=tmp_path,
                   timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert _rows(tmp_path / "run", "val/images") == [5.0] * 3  # 3 + 3 on the ranks, the repeat dropped
    assert max(_rows(tmp_path / "run", "step")) <= 12
    assert _rows(tmp_path / "run", "train/lr") == pytest.approx([1e-3 * (0.01 + 0.99 * 0.5 * (1 + math.cos(
        math.pi * 9 / 12)))], rel=1e-3)
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert_one_line_error(run_cli("train", "-o", "run2", "--num-nodes", "0", cwd=tmp_path), 2, "--num-nodes")
