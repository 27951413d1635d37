"""Lightning callbacks: curves as PNG, the progress bar, the inference model file, atomic checkpoint writes."""
from __future__ import annotations

import csv
import io
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm, convert_inf
from pytorch_lightning.loggers import CSVLogger

from .._atomic import atomic_path, write_json


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary name and are renamed, so a crash never leaves half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        import torch

        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class KeepingCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger``, except that it keeps an existing ``metrics.csv``.

    Lightning's CSV writer deletes the file when it opens a folder that holds one (its
    ``_check_log_dir_exists``, lightning_fabric 2.x), so ``train --resume`` lost the first run's
    rows. Here the file's bytes are put back once the writer exists, and its header's columns are
    given to the writer, whose first save then appends (or rewrites with the union of columns).
    """

    @property
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / "metrics.csv"
        kept = path.read_bytes() if path.is_file() else None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            exp = super().experiment
        if kept is not None and hasattr(exp, "metrics_keys"):  # rank 0's writer (others get a dummy)
            with atomic_path(path) as tmp:
                tmp.write_bytes(kept)
            header = next(csv.reader(io.StringIO(kept.decode("utf-8", errors="replace"))), [])
            exp.metrics_keys = sorted(set(header) | set(exp.metrics_keys))
        return exp


class EpochProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, on stderr (stdout keeps the command's own lines), with the epoch counted
    from 1 out of the epochs this run will really take: a run bounded by steps stops before its
    ``max_epochs`` (Lightning itself shows the 0-based epoch, "Epoch 0/0" for a one-epoch run)."""

    # Lightning's own settings for these two bars, but for the stream (it hard-codes sys.stdout).
    def init_train_tqdm(self) -> Tqdm:
        return Tqdm(desc=self.train_description, position=2 * self.process_position, disable=self.is_disabled,
                    leave=True, dynamic_ncols=True, file=sys.stderr, smoothing=0, bar_format=self.BAR_FORMAT)

    def init_validation_tqdm(self) -> Tqdm:
        has_main_bar = self.trainer.state.fn != "validate"
        return Tqdm(desc=self.validation_description, position=2 * self.process_position + has_main_bar,
                    disable=self.is_disabled, leave=not has_main_bar, dynamic_ncols=True, file=sys.stderr,
                    bar_format=self.BAR_FORMAT)

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        # Lightning's hook without its 0-based description (drawn first, it would flicker); the
        # bar is made once per run (leave=False, Lightning's default for this callback).
        bar = self.train_progress_bar
        bar.set_description(epoch_description(trainer), refresh=False)
        bar.reset(total=convert_inf(self.total_train_batches))
        bar.initial = 0


def planned_epochs(trainer: pl.Trainer) -> int | None:
    """The epochs this run will take (None: bounded by wall time only, or the count is unknown)."""
    epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
    batches = trainer.num_training_batches
    if trainer.max_steps and trainer.max_steps > 0 and isinstance(batches, int) and batches > 0:
        by_steps = math.ceil(trainer.max_steps / math.ceil(batches / trainer.accumulate_grad_batches))
        epochs = min(epochs, by_steps) if epochs else by_steps
    return epochs


def epoch_description(trainer: pl.Trainer) -> str:
    """"Epoch 2/5": 1-based, out of :func:`planned_epochs` ("Epoch 2" without a known end)."""
    total = planned_epochs(trainer)
    return f"Epoch {trainer.current_epoch + 1}" + (f"/{total}" if total else "")


class WallClockSnapshots(pl.Callback):
    """Saves ``checkpoints/at-<M>min.ckpt`` when training wall time first passes each of ``minutes``,
    so accuracy after a time budget (e.g. 45 minutes) can be measured honestly afterwards."""

    def __init__(self, run_dir: str | Path, minutes: list[float]) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.pending = sorted(float(m) for m in minutes)
        self._t0 = time.time()
        self._offset = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"pending": self.pending, "wall_s": self._offset + time.time() - self._t0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pending = list(state["pending"])
        self._offset, self._t0 = float(state["wall_s"]), time.time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        elapsed = (self._offset + time.time() - self._t0) / 60
        while self.pending and elapsed >= self.pending[0]:
            m = self.pending.pop(0)
            trainer.save_checkpoint(self.dir / f"at-{m:g}min.ckpt")


class CurvesCallback(pl.Callback):
    """Keeps loss and validation-AP history (saved in checkpoints, so resumed runs keep it) and
    writes ``curves.png`` and ``history.json`` into the run folder after every validation."""

    def __init__(self, run_dir: str | Path, every_n_steps: int = 20) -> None:
        self.run_dir = Path(run_dir)
        self.every = every_n_steps
        self.history: dict[str, list] = {"step": [], "loss": [], "loss_cate": [], "loss_mask": [], "lr": [],
                                         "val_step": [], "val_AP": [], "val_AP50": [], "wall_s": [], "val_wall_s": []}
        self._t0 = time.time()
        self._offset = 0.0
        self._acc: dict[str, float] = {}
        self._n = 0

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "wall_s": self._elapsed()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {k: list(v) for k, v in state["history"].items()}
        self._offset = float(state.get("wall_s", 0.0))
        self._t0 = time.time()

    def _elapsed(self) -> float:
        return self._offset + time.time() - self._t0

    @property
    def wall_s(self) -> float:
        """Training wall time so far, the runs before a resume included."""
        return self._elapsed()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        m = trainer.callback_metrics
        for key in ("loss", "loss_cate", "loss_mask"):
            if f"train/{key}" in m:
                self._acc[key] = self._acc.get(key, 0.0) + float(m[f"train/{key}"])
        self._n += 1
        if self._n >= self.every:
            h = self.history
            h["step"].append(int(trainer.global_step))
            for key in ("loss", "loss_cate", "loss_mask"):
                h[key].append(self._acc.get(key, 0.0) / self._n)
            h["lr"].append(float(trainer.optimizers[0].param_groups[0]["lr"]))
            h["wall_s"].append(self._elapsed())
            self._acc, self._n = {}, 0

    def on_validation_end(self, trainer, pl_module) -> None:
        # on_validation_end: after the module's own epoch-end hook has logged val/AP.
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        if "val/AP" not in m:
            return
        h = self.history
        h["val_step"].append(int(trainer.global_step))
        h["val_AP"].append(float(m["val/AP"]))
        h["val_AP50"].append(float(m.get("val/AP50", 0.0)))
        h["val_wall_s"].append(self._elapsed())
        if trainer.is_global_zero:
            self.write()

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.write()

    def write(self) -> None:
        write_json(self.run_dir / "history.json", self.history)
        plot_history(self.history, self.run_dir / "curves.png")


def history_figure(h: dict[str, list]):
    """Three panels on one x axis, training wall time in minutes (the recipes budget time, and the
    learning-rate schedule follows it): training losses, the learning rate, validation mask AP / AP50."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, lr, b) = plt.subplots(3, 1, figsize=(8, 9), sharex=True, height_ratios=(3, 1.5, 3))
    minutes = [s / 60 for s in h.get("wall_s", [])]
    for key in ("loss", "loss_cate", "loss_mask"):
        if h.get(key) and len(h[key]) == len(minutes):
            a.plot(minutes, h[key], label=key)
    a.set_ylabel("training loss")
    if h.get("loss"):
        a.set_yscale("log")
        a.legend()
    a.grid(alpha=0.3)
    if h.get("lr") and len(h["lr"]) == len(minutes):
        lr.plot(minutes, h["lr"], color="tab:purple")
    lr.set_ylabel("learning rate")
    lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    lr.grid(alpha=0.3)
    if h.get("val_AP"):
        val_minutes = [s / 60 for s in h["val_wall_s"]]
        b.plot(val_minutes, h["val_AP"], "o-", label="mask AP")
        b.plot(val_minutes, h["val_AP50"], "s-", label="mask AP50")
        b.legend()
    b.set_xlabel("training wall time (min)")
    b.set_ylabel("COCO mask AP (points)")
    b.set_ylim(0, 100)
    b.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_history(h: dict[str, list], path: str | Path) -> None:
    """Writes :func:`history_figure` to ``path`` (PNG, atomically)."""
    import matplotlib.pyplot as plt

    fig = history_figure(h)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
