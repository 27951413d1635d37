"""LightningModule (network injected) and LightningDataModule for SOLO / SOLOv2."""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from ..core.config import ModelConfig
from ..core.meta import ModelMeta
from ..model.decode import Decode
from ..model.network import SOLONet
from .losses import solo_loss
from .targets import build_targets

log = logging.getLogger("solo_deploy.training")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule. Defaults are our CPU recipe's (recipes/solov2-cpu-r18.yaml);
    the SOLO reference uses SGD lr 0.01 (batch 16), momentum 0.9, wd 1e-4, linear warm-up 500
    iterations, step decay at epochs 27/33 of 36."""

    optimizer: str = "adamw"  # "adamw" | "sgd"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9  # SGD only
    warmup_steps: int = 300
    warmup_ratio: float = 0.01  # SOLO reference: warmup_ratio=1/100... linear from lr*ratio
    schedule: str = "cosine"  # "cosine" | "step"
    steps: tuple[float, ...] = (0.75, 0.92)  # step schedule milestones as fractions of training
    min_lr_ratio: float = 0.01
    grad_clip: float = 35.0  # SOLO reference: grad_clip max_norm=35
    # When set, the decay follows training wall time instead of steps, ending at this many
    # seconds: a CPU shared with other work gets a finished schedule inside a fixed time budget.
    time_budget_s: float | None = None


class SOLOModule(pl.LightningModule):
    """Trains a ``SOLONet``; validation computes COCO mask AP with the runtime's post-processing.

    Hyper-parameters are plain dicts so that ``torch.load(weights_only=True)`` reads checkpoints.
    """

    def __init__(self, meta: dict[str, Any], optim: dict[str, Any] | None = None, net: nn.Module | None = None,
                 total_steps: int = 1000) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"])
        self.meta = ModelMeta.from_dict(meta)
        self.cfg: ModelConfig = self.meta.model
        self.optim_cfg = OptimConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in (optim or {}).items()})
        self.net = net if net is not None else SOLONet(self.cfg)
        self.decode = Decode()
        self.total_steps = total_steps
        spec = self.meta.preprocess
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        self._val_results: list[dict[str, Any]] = []
        import time

        self._t_start = time.time()
        self._elapsed_offset = 0.0  # training seconds before a resume
        self.val_gt: dict[str, Any] | None = None
        self.cat_ids: list[int] = list(range(1, self.cfg.num_classes + 1))

    def on_train_start(self) -> None:
        import time

        self._t_start = time.time()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        import time

        checkpoint["solo_deploy_train_seconds"] = self._elapsed_offset + time.time() - self._t_start

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._elapsed_offset = float(checkpoint.get("solo_deploy_train_seconds", 0.0))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) RGB -> float32 normalised (N, 3, H, W)."""
        return (images.float() - self.mean) * self.inv_std

    def forward(self, images: torch.Tensor):
        return self.net(self.normalize(images))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images = batch["images"]
        out = self(images)
        targets = build_targets(self.cfg, batch["masks"], batch["labels"], tuple(images.shape[-2:]))
        losses = solo_loss(self.cfg, out, targets)
        bs = images.shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=bs)
        self.log("train/loss_cate", losses["loss_cate"], batch_size=bs)
        self.log("train/loss_mask", losses["loss_mask"], batch_size=bs)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=bs)
        return losses["loss"]

    # -- validation: same post-processing and COCO evaluation as `solo-deploy eval` ----------
    def on_validation_epoch_start(self) -> None:
        self._val_results: list[tuple[int, list[dict[str, Any]]]] = []  # (image id, its COCO results)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from ..runtime.inference import detections_to_results

        images = batch["images"]
        out = self(images)
        scores, kernels, maps = self.decode(out)
        ids = [int(m["image_id"]) for m in batch["meta"]]
        results = detections_to_results(self.meta, scores, kernels, maps, [m["letterbox"] for m in batch["meta"]],
                                        ids, self.cat_ids)
        for image_id in ids:
            self._val_results.append((image_id, [r for r in results if r["image_id"] == image_id]))

    def on_validation_epoch_end(self) -> None:
        from ..evaluation.coco_eval import evaluate

        if self.val_gt is None:
            return
        per_image = gather_validation(self._val_results)
        results = [r for _, rs in per_image for r in rs]
        metrics = evaluate(self.val_gt, results, class_names=list(self.meta.class_names))
        # Every rank scores the same gathered results: the values agree, sync_dist only averages equals.
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            value = metrics.get(key)
            self.log(f"val/{key}", float(value) if value is not None and value >= 0 else 0.0,
                     prog_bar=key in ("AP", "AP50"), sync_dist=distributed)
        self.log("val/images", float(len(per_image)), sync_dist=distributed)

    # -- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.optim_cfg
        decay, no_decay = [], []
        for _name, p in self.net.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on norms and biases
        groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if o.optimizer == "sgd":
            opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
        elif o.optimizer == "adamw":
            opt = torch.optim.AdamW(groups, lr=o.lr)
        else:
            from ..errors import BadInputError

            raise BadInputError(f"unknown optimizer {o.optimizer!r}: expected adamw or sgd")
        total = self.total_steps
        if total <= 0 and self._trainer is not None:
            # This process's optimiser steps for the run: Lightning counts the epochs, max_steps,
            # and the share of the data each distributed rank gets. Infinite when only a time
            # budget bounds the run.
            estimate = float(self.trainer.estimated_stepping_batches)
            total = int(estimate) if math.isfinite(estimate) else 0
        import time

        def progress(step: int) -> float:
            by_steps = step / total if total > 0 else 0.0
            if o.time_budget_s:
                # A budget beside epochs / steps: whichever runs out first ends the schedule.
                elapsed = (self._elapsed_offset + time.time() - self._t_start) / o.time_budget_s
                return min(1.0, max(by_steps, elapsed))
            return min(1.0, step / max(1, total))

        def factor(step: int) -> float:
            if step < o.warmup_steps:
                a = step / max(1, o.warmup_steps)
                warm = o.warmup_ratio + (1 - o.warmup_ratio) * a
            else:
                warm = 1.0
            frac = progress(step)
            if o.schedule == "cosine":
                decay_f = o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
            else:
                decay_f = 0.1 ** sum(frac >= m for m in o.steps)
            return warm * decay_f

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def optim_to_dict(o: OptimConfig) -> dict[str, Any]:
    d = asdict(o)
    d["steps"] = list(o.steps)
    return d


def gather_validation(local: list[tuple[int, list[dict[str, Any]]]]) -> list[tuple[int, list[dict[str, Any]]]]:
    """Every rank's (image id, results) pairs, on every rank, each image once.

    Under a distributed strategy each process validates a slice of the images, and the
    distributed sampler repeats a few images to give every rank as many: those repeats would
    count twice. Without a process group this is ``local`` minus repeats.
    """
    parts = [local]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        parts = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, local)
    seen: set[int] = set()
    out = []
    for part in parts:
        for image_id, results in part:
            if image_id not in seen:
                seen.add(image_id)
                out.append((image_id, results))
    return out


class SOLODataModule(pl.LightningDataModule):
    """Train/val loaders over the synthetic splits or a COCO-format folder."""

    def __init__(self, data: str, spec, batch_size: int = 8, num_workers: int = 0, val_images: int | None = None,
                 train_images: int | None = None, augment: bool = True, seed: int = 0,
                 files: dict[str, str | None] | None = None, val_fraction: float | None = None) -> None:
        """``files``: explicit ``train_ann``/``train_dir``/``val_ann``/``val_dir`` (see
        ``data.splits.coco_sides``); ``val_fraction``: a single COCO folder's held-out share."""
        super().__init__()
        self.data, self.spec, self.batch_size, self.num_workers = data, spec, batch_size, num_workers
        self.val_images, self.train_images, self.augment, self.seed = val_images, train_images, augment, seed
        self.files = {k: v for k, v in (files or {}).items() if v is not None}
        self.val_fraction = val_fraction
        self.data_description = "synthetic train and val splits"
        self.train_set = self.val_set = None
        self.class_names: list[str] = []
        self.cat_ids: list[int] = []
        self.val_gt: dict[str, Any] | None = None
        self._prepare()

    def _prepare(self) -> None:
        from ..data.splits import VAL_FRACTION, coco_sides, describe, open_side, open_split
        from ..data.transforms import EvalTransform, TrainTransform

        if self.data == "synthetic" and not self.files:
            from ..data.synthetic import SyntheticDataset

            # Validation data and its ground truth come from the same loader as `solo-deploy eval`.
            val, self.val_gt, self.class_names, self.cat_ids = open_split("synthetic", "val", self.val_images)
            train = SyntheticDataset("train", count=self.train_images)
        else:
            from ..errors import BadInputError

            fraction = VAL_FRACTION if self.val_fraction is None else self.val_fraction
            sides = coco_sides(self.data, val_fraction=fraction, **self.files)
            self.data_description = describe(sides)
            log.info("data: %s", self.data_description)
            train, val = open_side(sides["train"], self.train_images), open_side(sides["val"], self.val_images)
            self.val_gt, self.class_names, self.cat_ids = val.coco_dict, list(val.class_names), list(val.cat_ids)
            if list(train.class_names) != self.class_names or list(train.cat_ids) != self.cat_ids:
                raise BadInputError(f"train and val sets have different categories: {list(train.class_names)} "
                                    f"vs {self.class_names}")
            if not len(train) or not len(val):
                which = "training" if not len(train) else "validation"
                raise BadInputError(f"no {which} images ({self.data_description})")
        self.train_set = _Mapped(train, TrainTransform(self.spec) if self.augment else EvalTransform(self.spec),
                                 self.seed)
        self.val_set = _Mapped(val, EvalTransform(self.spec), self.seed)

    def transfer_batch_to_device(
        self, batch: dict[str, Any], device: torch.device, dataloader_idx: int
    ) -> dict[str, Any]:
        # Only tensors move; per-image metadata (frozen Letterbox records) stays on the host. Here,
        # not in the LightningModule: the batches are this module's, and Lightning warns on every
        # run when a LightningModule overrides the hook while a data module is passed.
        return {**batch, "images": batch["images"].to(device), "masks": [m.to(device) for m in batch["masks"]],
                "labels": [t.to(device) for t in batch["labels"]]}

    def train_dataloader(self):
        from torch.utils.data import DataLoader

        from ..data.transforms import collate

        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers,
                          collate_fn=collate, drop_last=True, persistent_workers=self.num_workers > 0)

    def val_dataloader(self):
        from torch.utils.data import DataLoader

        from ..data.transforms import collate

        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=0, collate_fn=collate)


class _Mapped:
    """Dataset of samples -> transformed samples; the augmentation RNG is seeded per item and epoch."""

    def __init__(self, ds, transform, seed: int) -> None:
        self.ds, self.transform, self.seed, self.epoch = ds, transform, seed, 0

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return self.transform(self.ds[i], rng) if _takes_rng(self.transform) else self.transform(self.ds[i])


def _takes_rng(transform) -> bool:
    import inspect

    try:
        return len(inspect.signature(transform.__call__).parameters) >= 2
    except (TypeError, ValueError):
        return False
