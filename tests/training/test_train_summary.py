"""`solo-deploy train` as a person sees it: the epoch bar on a terminal only ("Epoch 1/2", counted from 1 out
of the epochs the run takes), no Lightning warning, and a closing summary; curves.png's panels share one x axis."""
from __future__ import annotations

import json

import pytest
from cli_helpers import run_cli, run_cli_tty

from solo_deploy.training.callbacks import history_figure

TINY_RECIPE = """imgsz: [64, 64]
batch_size: 2
train_images: 4
val_images: 2
val_every_steps: 2
num_workers: 0
snapshot_minutes: []
"""


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(TINY_RECIPE)
    return path


def test_terminal_shows_epochs_from_one_and_the_run_ends_with_a_summary(recipe, tmp_path):
    # 4 images in batches of 2: 2 steps an epoch; --max-steps 3 stops inside the 2nd of --epochs 3.
    code, out, err = run_cli_tty("train", "--recipe", str(recipe), "--epochs", "3", "--max-steps", "3",
                                         "-o", str(tmp_path / "run"))
    assert code == 0, out + err
    assert "Epoch 1/2" in err and "Epoch 2/2" in err, err[-2000:]
    assert "Epoch 0" not in err and "/3" not in err.split("Validation")[0], err[-2000:]
    assert "transfer_batch_to_device" not in err and "Warning" not in err, err[-2000:]
    assert "Epoch" not in out  # the bar is on stderr: stdout keeps the command's own lines
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["epochs"] == 1.5 and summary["best_step"] == 2
    assert summary["wall_s"] > 0
    last = out.strip().splitlines()[-2:]
    assert last[0].startswith("trained 3 steps (1.5 epochs) in ") and "best mask AP 0.0 (AP50 0.0) at step 2" in last[0]
    assert last[1] == f"model file: {tmp_path / 'run' / 'model.safetensors'}"


def test_pipe_gets_no_bar_and_no_warning(recipe, tmp_path):
    proc = run_cli("train", "--recipe", str(recipe), "--max-steps", "2", "-o", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no bar, no Lightning warning (transfer_batch_to_device) on a pipe
    assert "Epoch" not in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == f"model file: {tmp_path / 'run' / 'model.safetensors'}"


def test_curves_share_one_time_axis_and_show_the_learning_rate():
    h = {"step": [20, 40, 60], "wall_s": [60.0, 120.0, 180.0], "loss": [3.0, 2.0, 1.5], "loss_cate": [1.0, 0.8, 0.6],
         "loss_mask": [2.0, 1.2, 0.9], "lr": [1e-4, 1e-3, 5e-4], "val_step": [40, 60], "val_AP": [5.0, 9.0],
         "val_AP50": [12.0, 20.0], "val_wall_s": [130.0, 190.0]}
    fig = history_figure(h)
    try:
        losses, lr, ap = fig.axes
        assert losses.get_shared_x_axes().joined(losses, ap) and lr.get_shared_x_axes().joined(lr, ap)
        assert ap.get_xlabel() == "training wall time (min)" and lr.get_ylabel() == "learning rate"
        (line,) = lr.get_lines()
        assert list(line.get_xdata()) == [1.0, 2.0, 3.0] and list(line.get_ydata()) == h["lr"]
        assert list(ap.get_lines()[0].get_xdata()) == pytest.approx([130 / 60, 190 / 60])
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
