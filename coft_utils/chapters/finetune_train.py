"""Chapters 03 and 04, the training: fine-tune one model with the Hugging Face ``Trainer``.

AdamW, linear warmup then the configured schedule, the same number of optimizer steps for every
checkpoint, loss on the target tokens only (examples encoded by
:func:`coft_utils.chapters.finetune_eval.encode`). Under ``accelerate launch`` / ``torchrun`` the
Trainer runs DDP or FSDP; a loss that goes non-finite is recorded (``coft_utils.foundation.divergence``)::

    from coft_utils.chapters import finetune, finetune_train
    cfg = finetune.resolve("03_fixed_lr_finetuning", "smoke")
    log = finetune_train.train(model, tok, "gsm8k", examples, cfg, lr=1e-2, seed=0)
    log["train_loss_first"], log["train_loss_last"], log["diverged"]

A unit of the chapters (load, measure, train, measure again, store) is
:func:`coft_utils.chapters.finetune.run_unit`.
"""
from __future__ import annotations

import math
import os
import tempfile
import time
from typing import TYPE_CHECKING

from ..foundation import divergence, tasks as tasks_mod
from .finetune_eval import _pad, encode

if TYPE_CHECKING:
    from .finetune import Config

__all__ = ["train"]


def _check_lr(lr) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"learning rate must be a finite number > 0, got {lr!r}")
    return float(lr)


class _Collator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, feats):
        import torch
        L = max(len(f["input_ids"]) for f in feats)
        x = torch.full((len(feats), L), self.pad_id, dtype=torch.long)
        y = torch.full((len(feats), L), -100, dtype=torch.long)
        m = torch.zeros((len(feats), L), dtype=torch.long)
        for r, f in enumerate(feats):
            ids, n = f["input_ids"], f["n_target"]
            x[r, :len(ids)] = torch.tensor(ids)
            y[r, len(ids) - n:len(ids)] = torch.tensor(ids[len(ids) - n:])
            m[r, :len(ids)] = 1
        return {"input_ids": x, "labels": y, "attention_mask": m}


def _is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train(model, tok, task, examples: list[dict], cfg: Config, lr: float, seed: int,
          out_dir: str | os.PathLike | None = None) -> dict:
    """Fine-tune ``model`` in place with ``transformers.Trainer``; returns the training log.

    AdamW (``adamw_torch``), ``warmup_ratio`` linear warmup then ``lr_schedule``, ``steps``
    optimizer steps of ``batch_size`` examples (the data is cycled), loss on target tokens only.
    Under ``accelerate launch`` / ``torchrun`` the Trainer runs DDP or FSDP (config file);
    ``batch_size`` stays the global batch. Nothing is written unless ``out_dir`` is given.
    """
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments
    lr = _check_lr(lr)
    task = tasks_mod.get(task)
    gen = task.kind == "generative"
    feats = []
    for e in examples:
        ids, n = encode(tok, e["prompt"], e["target"], cfg.max_len, eos=gen)
        feats.append({"input_ids": ids, "n_target": n})
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_dev = max(1, cfg.batch_size // world)
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="coft-ft-") as tmp:
        args = TrainingArguments(
            output_dir=str(out_dir) if out_dir else tmp, max_steps=cfg.steps,
            per_device_train_batch_size=per_dev, learning_rate=lr,
            lr_scheduler_type=cfg.lr_schedule, warmup_steps=int(round(cfg.warmup_ratio * cfg.steps)),
            weight_decay=cfg.weight_decay, adam_beta1=0.9, adam_beta2=cfg.beta2,
            max_grad_norm=cfg.grad_clip if cfg.grad_clip > 0 else 1e9, optim="adamw_torch",
            seed=seed, data_seed=seed, logging_steps=max(1, cfg.steps // 10), report_to=[],
            save_strategy="no", disable_tqdm=True, use_cpu=not cuda, dataloader_num_workers=0,
            remove_unused_columns=False, bf16=cfg.mixed_precision == "bf16" and cuda, logging_nan_inf_filter=False,
            fp16=cfg.mixed_precision == "fp16" and cuda,
        )
        trainer = divergence.watch(Trainer)(model=model, args=args, train_dataset=feats,
                                            data_collator=_Collator(_pad(tok)))
        trainer.remove_callback(PrinterCallback)  # logs go to trainer.state.log_history, not stdout
        t0 = time.time()
        out = trainer.train()
        wall = time.time() - t0
        if out_dir and trainer.diverged_step is None:
            trainer.save_model(str(out_dir))
            if _is_main():
                tok.save_pretrained(str(out_dir))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    model.eval()
    return {"train_loss": float(out.training_loss), "train_loss_first": losses[0] if losses else float("nan"),
            "train_loss_last": losses[-1] if losses else float("nan"), "train_wall_s": wall,
            "steps": int(trainer.state.global_step), **divergence.check(trainer, model), "_trainer": trainer}
