"""Lightning callbacks: curves as PNG, the inference model file, atomic checkpoint writes."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from .._atomic import atomic_path, write_json


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints go to a temporary name and are renamed, so a crash never leaves half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        import torch

        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


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


def plot_history(h: dict[str, list], path: str | Path) -> None:
    """Two panels: training losses against steps, validation mask AP / AP50 against wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "loss_cate", "loss_mask"):
        if h.get(key):
            a.plot(h["step"], h[key], label=key)
    a.set_xlabel("step")
    a.set_ylabel("training loss")
    a.set_yscale("log")
    if h.get("loss"):
        a.legend()
    a.grid(alpha=0.3)
    if h.get("val_AP"):
        minutes = [s / 60 for s in h["val_wall_s"]]
        b.plot(minutes, h["val_AP"], "o-", label="mask AP")
        b.plot(minutes, h["val_AP50"], "s-", label="mask AP50")
        b.legend()
    b.set_xlabel("training wall time (min)")
    b.set_ylabel("COCO mask AP (points)")
    b.set_ylim(0, 100)
    b.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
