"""`solo-deploy train`: build the run from a preset, a recipe and overrides, then fit with Lightning."""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .._atomic import write_json
from ..errors import BadInputError

log = logging.getLogger("solo_deploy.train")
RECIPES = Path(__file__).with_name("recipes")

_RECIPE_KEYS = {
    "model_file_dtype",
    "imgsz",
    "batch_size",
    "epochs",
    "optimizer",
    "lr",
    "weight_decay",
    "warmup_steps",
    "schedule",
    "grad_clip",
    "val_images",
    "train_images",
    "max_time",
    "num_workers",
    "momentum",
    "max_steps",
    "precision",
    "time_budget_s",
    "val_every",
    "val_every_steps",
    "seed",
    "min_lr_ratio",
    "snapshot_minutes",
    "postprocess",
}


@dataclass(frozen=True)
class TrainRequest:
    preset: str = "solov2-cpu-r18"
    data: str = "synthetic"
    output: str = "runs/train"
    recipe: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()  # CLI values that win over the recipe
    resume: str | None = None
    from_model: str | None = None
    backbone_weights: str | None = None
    devices: str = "auto"
    accelerator: str = "auto"
    progress: bool | None = None  # the epoch bar: None shows it when stderr is a terminal
    strategy: str = "auto"  # Lightning's: ddp, ddp_spawn, fsdp, ... ("auto": one process per device)
    num_nodes: int = 1
    max_time: str | None = None  # "[DD:]HH:MM:SS" budget on any run (the schedule follows it), or "off"
    # Explicit annotation files and image folders (``data.splits.coco_sides``), a single
    # folder's held-out share for validation.
    files: tuple[tuple[str, str | None], ...] = ()
    val_fraction: float | None = None
    echo: Callable[[str], None] | None = field(default=None, compare=False)  # the CLI's line printer


def load_recipe(preset: str, path: str | None) -> dict[str, Any]:
    import yaml

    file = Path(path) if path else RECIPES / f"{preset}.yaml"
    if not file.is_file():
        if path:
            raise BadInputError(f"recipe file not found: {file}")
        return {}
    try:
        recipe = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BadInputError(f"recipe {file} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(recipe, dict):
        raise BadInputError(f"recipe {file} must be a mapping of settings")
    unknown = set(recipe) - _RECIPE_KEYS
    if unknown:
        raise BadInputError(f"recipe {file} has unknown keys: {', '.join(sorted(unknown))}")
    dtype = str(recipe.get("model_file_dtype", "float32"))
    if dtype not in ("float32", "float16"):  # checked before training, not after it
        raise BadInputError(f"recipe {file}: model_file_dtype must be float32 or float16, got {dtype!r}")
    return recipe


def train(req: TrainRequest) -> Path:
    """Run a training; returns the run folder (checkpoints/, model.safetensors, logs, curves.png)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import TensorBoardLogger

    from ..core.config import PostprocessConfig, get_preset
    from ..model.modelfile import ModelMeta, read_model, save_model_file
    from ..model.network import SOLONet
    from ..preprocess import PreprocessSpec
    from .callbacks import AtomicCheckpointIO, CurvesCallback, EpochProgressBar, KeepingCSVLogger, WallClockSnapshots
    from .module import OptimConfig, SOLODataModule, SOLOModule, optim_to_dict

    _quiet_lightning()
    recipe = load_recipe(req.preset, req.recipe)
    recipe.update({k: v for k, v in req.overrides if v is not None})
    _apply_time_budget(recipe, req)
    imgsz = tuple(int(v) for v in recipe.get("imgsz", (256, 256)))
    loaded = read_model(req.from_model) if req.from_model else None
    spec = PreprocessSpec(input_hw=imgsz)
    if loaded is not None:
        # Fine-tuning keeps the normalisation the weights were trained with (an imported
        # detectron2 model takes std 1, not ImageNet's); training itself always letterboxes.
        spec = PreprocessSpec(input_hw=imgsz, mean=loaded[1].preprocess.mean, std=loaded[1].preprocess.std)
    seed = int(recipe.get("seed", 0))
    pl.seed_everything(seed, workers=True, verbose=False)

    run = Path(req.output)
    if req.resume is None and (run / "checkpoints" / "last.ckpt").exists():
        raise BadInputError(f"run folder {run} already has a checkpoint: pass --resume {run}/checkpoints/last.ckpt "
                            f"or choose another --output")
    dm = SOLODataModule(req.data, spec, batch_size=int(recipe.get("batch_size", 8)),
                        num_workers=int(recipe.get("num_workers", 0)), val_images=recipe.get("val_images"),
                        train_images=recipe.get("train_images"), seed=seed, files=dict(req.files),
                        val_fraction=req.val_fraction)
    if req.echo is not None:
        req.echo(f"data: {dm.data_description} ({len(dm.train_set)} training, {len(dm.val_set)} validation images)")
    if loaded is not None:
        # Fine-tuning: the architecture is the file's (an imported model need not equal a preset);
        # only the number of classes follows the data.
        model_cfg = replace(loaded[1].model, num_classes=len(dm.class_names))
    else:
        model_cfg = get_preset(req.preset, num_classes=len(dm.class_names))
    post_over = dict(recipe.get("postprocess") or {})
    unknown = sorted(set(post_over) - set(PostprocessConfig.__dataclass_fields__))
    if unknown:
        raise BadInputError(
            f"recipe postprocess: unknown keys {unknown}; known: {sorted(PostprocessConfig.__dataclass_fields__)}"
        )
    post = PostprocessConfig(**post_over)
    meta = ModelMeta(model=model_cfg, preprocess=spec, class_names=tuple(dm.class_names),
                     category_ids=tuple(int(c) for c in dm.cat_ids),  # the data set's ids, as JSON outputs write
                     preset=loaded[1].preset if loaded is not None else req.preset,
                     postprocess=post, extra={"data": req.data, "data_sides": dm.data_description,
                                              "recipe": dict(recipe)})
    net = SOLONet(model_cfg, req.backbone_weights)
    if req.from_model:
        _init_from(net, req.from_model, meta, loaded)

    steps_per_epoch = max(1, len(dm.train_set) // dm.batch_size)
    until_time = bool(recipe.pop("_until_time", False))
    epochs = -1 if until_time else int(recipe.get("epochs", 1))
    total = -1 if until_time else int(recipe.get("max_steps") or epochs * steps_per_epoch)
    optim = OptimConfig(**{k: recipe[k] for k in ("optimizer", "lr", "weight_decay", "warmup_steps", "schedule",
                                                  "momentum", "min_lr_ratio", "time_budget_s") if k in recipe})
    # The schedule's length: --max-steps as given, else Lightning's own count for this process
    # (epochs x batches per rank: a distributed run divides the data among the ranks).
    sched_total = int(recipe["max_steps"]) if recipe.get("max_steps") and not until_time else -1
    module = SOLOModule(json.loads(json.dumps(meta.to_dict())), optim_to_dict(optim), net=net,
                        total_steps=sched_total)
    module.val_gt, module.cat_ids = dm.val_gt, dm.cat_ids

    curves = CurvesCallback(run)
    ckpt = ModelCheckpoint(dirpath=run / "checkpoints", filename="best", monitor="val/AP", mode="max",
                           save_last=True, save_top_k=1, auto_insert_metric_name=False,
                           enable_version_counter=False)
    show_bar = req.progress if req.progress is not None else sys.stderr.isatty()
    trainer = pl.Trainer(
        default_root_dir=run,
        max_epochs=epochs,
        max_steps=total,
        max_time=recipe.get("max_time"),
        accelerator=req.accelerator,
        devices=req.devices,
        strategy=req.strategy,
        num_nodes=req.num_nodes,
        precision=recipe.get("precision", _default_precision()),
        gradient_clip_val=float(recipe.get("grad_clip", 35.0)),
        callbacks=[ckpt, curves, WallClockSnapshots(run, recipe.get("snapshot_minutes", [])),
                   *([EpochProgressBar()] if show_bar else [])],
        logger=[KeepingCSVLogger(run, name="logs", version=""),
                TensorBoardLogger(run, name="tensorboard", version="")],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=10,
        enable_progress_bar=show_bar,
        num_sanity_val_steps=0,
        **_val_schedule(recipe, total, steps_per_epoch),
        enable_model_summary=False,
    )
    t_fit = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=req.resume)
    fit_s = time.perf_counter() - t_fit
    best = ckpt.best_model_path or ckpt.last_model_path
    if best and Path(best).exists() and trainer.is_global_zero:
        try:
            state, best_meta = read_model(best)
        except BadInputError as exc:
            if "NaN or infinite" not in str(exc):
                raise
            raise BadInputError(f"training diverged: {exc} (try a lower --lr or --precision 32-true)") from None
        # float32 unless the recipe asks for float16 (model_file_dtype): half-precision weights
        # move outputs (median mask IoU 0.997 against float32, scores by up to 1e-3).
        dtype = str(recipe.get("model_file_dtype", "float32"))
        save_model_file(run / "model.safetensors", state, best_meta, dtype=dtype)
        log.info("wrote %s from %s", run / "model.safetensors", best)
    if trainer.is_global_zero:
        per_epoch = trainer.num_training_batches
        per_epoch = math.ceil(per_epoch / trainer.accumulate_grad_batches) if isinstance(per_epoch, int) else 0
        epochs = trainer.global_step / per_epoch if per_epoch else float(trainer.current_epoch)
        _write_summary(run, curves.history, steps=int(trainer.global_step), epochs=round(epochs, 2),
                       wall_s=fit_s, total_wall_s=curves.wall_s, best=best)
    return run


SUMMARY_FILE = "summary.json"


def _write_summary(run: Path, history: dict[str, list], *, steps: int, epochs: float, wall_s: float,
                   total_wall_s: float, best: str) -> None:
    """``summary.json`` in the run folder: what :func:`summary_lines` prints at the end of `train`."""
    aps = history.get("val_AP") or []
    i = max(range(len(aps)), key=aps.__getitem__) if aps else None
    model = run / "model.safetensors"
    write_json(run / SUMMARY_FILE, {
        "best_AP": aps[i] if i is not None else None,
        "best_AP50": history["val_AP50"][i] if i is not None else None,
        "best_step": history["val_step"][i] if i is not None else None,
        "validations": len(aps), "steps": steps, "epochs": epochs,
        "wall_s": round(wall_s, 1), "total_wall_s": round(total_wall_s, 1),
        "checkpoint": best or None, "model": str(model) if model.is_file() else None,
    })


def summary_lines(run: str | Path) -> list[str]:
    """The end-of-training summary from the run's ``summary.json``: best AP and its step, wall time, model file."""
    s = json.loads((Path(run) / SUMMARY_FILE).read_text())
    if s["best_AP"] is not None:
        best = f"best mask AP {s['best_AP']:.1f} (AP50 {s['best_AP50']:.1f}) at step {s['best_step']}"
    else:
        best = "no validation ran: no AP"
    wall = format_seconds(s["wall_s"])
    if s["total_wall_s"] > s["wall_s"] + 1:  # resumed: earlier runs' training time too
        wall += f" ({format_seconds(s['total_wall_s'])} with the runs before the resume)"
    epochs = f"{s['epochs']:g} epoch" + ("" if s["epochs"] == 1 else "s")
    return [f"trained {s['steps']} steps ({epochs}) in {wall}; {best}",
            f"model file: {s['model'] or 'none written (no checkpoint)'}"]


def format_seconds(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 57 min'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def parse_duration(text: str) -> int:
    """``[DD:]HH:MM:SS`` -> seconds (positive); BadInputError naming the value otherwise."""
    parts = str(text).strip().split(":")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (3, 4) or any(v < 0 for v in values) or any(v > 59 for v in values[-2:]):
        raise BadInputError(f"--max-time must be HH:MM:SS or DD:HH:MM:SS, got {text!r}")
    days, hours, minutes, seconds = ([0] * (4 - len(values))) + values
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise BadInputError(f"--max-time must be longer than 0 seconds, got {text!r}")
    return total


def _apply_time_budget(recipe: dict[str, Any], req: TrainRequest) -> None:
    """One wall-clock budget rule for every run, applied to ``recipe`` in place.

    ``--max-time`` sets a budget (Lightning stops the run there, the learning-rate schedule runs
    over that wall time); ``--max-time off`` removes one. Otherwise a recipe's own budget (the
    shipped CPU recipe's 1 h 57 min) holds only while the run's length is the recipe's too:
    ``--epochs`` or ``--max-steps`` make the schedule follow epochs or steps instead.
    """
    given = {k for k, v in req.overrides if v is not None}
    had = recipe.get("max_time") or recipe.get("time_budget_s")
    if req.max_time is not None:
        recipe.pop("max_time", None)
        recipe.pop("time_budget_s", None)
        if str(req.max_time).strip().lower() not in ("off", "none"):
            seconds = parse_duration(req.max_time)
            recipe["max_time"] = {"seconds": seconds}
            recipe["time_budget_s"] = float(seconds)
            # Without --epochs / --max-steps the budget alone ends the run (the recipe's epochs
            # would otherwise stop it before its schedule has run).
            recipe["_until_time"] = not given & {"epochs", "max_steps"}
            log.info("time budget: %s (--max-time); the learning-rate schedule follows it", req.max_time)
    elif had and given & {"epochs", "max_steps"}:
        recipe.pop("max_time", None)
        recipe.pop("time_budget_s", None)
        log.info("the recipe's time budget is off: --%s sets the run's length (--max-time adds one)",
                 "epochs" if "epochs" in given else "max-steps")
    elif had:
        log.info("time budget from the recipe: max_time %s, schedule over %s s (--max-time changes it)",
                 recipe.get("max_time"), recipe.get("time_budget_s"))


def _val_schedule(recipe: dict[str, Any], total: int, steps_per_epoch: int) -> dict[str, Any]:
    """Validate every N optimiser steps (across epochs) when the recipe says so, else per epoch."""
    every = recipe.get("val_every_steps")
    if every:
        every = int(min(int(every), total)) if total > 0 else int(every)  # total -1: until the time budget
        if every <= steps_per_epoch:
            return {"val_check_interval": every, "check_val_every_n_epoch": None}
    return {"check_val_every_n_epoch": int(recipe.get("val_every", 1))}


def _quiet_lightning() -> None:
    """Lightning installs INFO-level handlers when imported; follow our --log-level instead."""
    root = logging.getLogger().getEffectiveLevel()
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(max(root, logging.WARNING) if root > logging.DEBUG else root)
    import warnings

    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


def _default_precision() -> str:
    import torch

    # Mixed precision where the device supports it; full precision on a CPU (no fast bf16 here).
    return "16-mixed" if torch.cuda.is_available() else "32-true"


def _init_from(net, path: str, meta, loaded) -> None:
    """Fine-tuning: take every weight of ``path`` (``loaded``: what ``read_model`` returned for
    it) whose shape fits; re-initialise only the class-dependent layers when the class list differs."""
    state, src = loaded
    if src.model.arch != meta.model.arch:
        raise BadInputError(f"--from {path} is a {src.model.arch} model, the preset is {meta.model.arch}")
    same_classes = tuple(src.class_names) == tuple(meta.class_names)
    prefixes = () if same_classes else net.class_dependent_prefixes()
    own = net.state_dict()
    taken = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not k.startswith(prefixes)}
    mismatched = [k for k in own if k not in taken and not k.startswith(prefixes)]
    if mismatched:
        raise BadInputError(f"--from {path} does not fit preset {meta.preset}: {len(mismatched)} layers differ, "
                            f"e.g. {mismatched[0]}")
    net.load_state_dict(taken, strict=False)
    log.info("initialised from %s (%d tensors; class layers %s)", path, len(taken),
             "kept" if same_classes else "re-initialised")
