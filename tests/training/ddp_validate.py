"""Validate a model file with Lightning on N CPU processes and print the metrics as JSON (rank 0).

    python tests/training/ddp_validate.py MODEL N_PROCESSES VAL_IMAGES [local]

Run by test_time_and_ddp.py: the same images through one process and through two (strategy
ddp, gloo) must give the same mask AP, which holds only if validation gathers every rank's
predictions and drops the images the distributed sampler repeats. ``local`` scores each rank's
own slice, as validation did before the gather, to show that the comparison can fail.
"""
from __future__ import annotations

import json
import sys


def main() -> None:
    import pytorch_lightning as pl

    from solo_deploy.model.modelfile import build_network
    from solo_deploy.training.module import SOLODataModule, SOLOModule

    model, processes, images = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if sys.argv[4:] == ["local"]:
        import solo_deploy.training.module as module_mod

        module_mod.gather_validation = lambda local: local
    net, meta = build_network(model)
    module = SOLOModule(json.loads(json.dumps(meta.to_dict())), net=net)
    dm = SOLODataModule("synthetic", meta.preprocess, batch_size=1, val_images=images)
    module.val_gt, module.cat_ids = dm.val_gt, dm.cat_ids
    trainer = pl.Trainer(accelerator="cpu", devices=processes, strategy="ddp" if processes > 1 else "auto",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    metrics = trainer.validate(module, datamodule=dm, verbose=False)[0]
    if trainer.is_global_zero:
        print("METRICS " + json.dumps({k: float(v) for k, v in metrics.items()}))


if __name__ == "__main__":
    main()
