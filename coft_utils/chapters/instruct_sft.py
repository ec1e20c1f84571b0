"""Chapter 01's supervised fine-tuning with TRL's ``SFTTrainer``, and the device and process
helpers the experiment shares with it.

::

    from coft_utils.chapters import instruct_sft
    args = instruct_sft.sft_config(cfg, 1e-3, out_dir, seed=0, max_length=512)   # TRL SFTConfig of one run
    ds = instruct_sft.prepare_sft_dataset(model, tok, dialogues, cfg, out_dir)  # input_ids + labels (-100 off responses)
    info, trainer = instruct_sft.sft(model, tok, ds, 1e-3, cfg, out_dir, seed=0)  # train_loss, steps, diverged, ...
    instruct_sft.batch_plan(cfg, world=8)   # {'per_device': 8, 'grad_accum': 2, 'world': 8, 'global_batch': 128}

**The global batch does not depend on the launch.** ``cfg.global_batch`` is the number of
sequences per optimizer step; ``cfg.batch_size`` is the micro-batch of one process. At run time
the number of processes (``WORLD_SIZE``, set by ``accelerate launch``/``torchrun``; 1 otherwise)
fixes the gradient accumulation: ``per_device x grad_accum x world = global_batch``
(:func:`batch_plan`), so the paper preset trains at 128 from one process (accumulation 16) as
under 8 (accumulation 2). A global batch that is not a multiple of ``per_device x world`` is a
:class:`~coft_utils.foundation.profiles.ProfileError` before any work. The loss of an
accumulated step is normalized by the response tokens of the whole global batch (transformers'
``num_items_in_batch``, ``average_tokens_across_devices``), so the split does not change it.

**bf16 and activation checkpointing.** ``precision = "bf16"`` trains with bf16 autocast on fp32
master weights; ``grad_checkpointing`` turns on the model's activation checkpointing, unless FSDP
does its own (``fsdp_activation_checkpointing: true`` in the accelerate config, seen here as
``FSDP_ACTIVATION_CHECKPOINTING=true``): transformers refuses both at once.

The loss is on the assistant responses only (TRL's ``assistant_only_loss=True``; the chat template
marks them with ``{% generation %}``, :data:`coft_utils.foundation.models.CHAT_TEMPLATE`), no
packing, sequences cut to the context (:func:`_context`); divergence is watched
(:mod:`coft_utils.foundation.divergence`) and recorded in ``info``.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..foundation import divergence, profiles

if TYPE_CHECKING:
    from .instruct import Config

__all__ = ["sft_config", "prepare_sft_dataset", "sft", "batch_plan", "world_size"]


def _device(cfg: Config) -> str:
    import torch
    if profiles.get_profile(cfg.profile).device == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        from accelerate import PartialState
        return str(PartialState().device)
    return "cpu"


def _dtype(cfg: Config):
    import torch
    return torch.bfloat16 if cfg.precision == "bf16" else torch.float32


def _context(model, cfg: Config) -> int:
    ctx = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    return min(cfg.max_seq_len or ctx, 2048)


def _is_main() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def _barrier():
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
    except Exception:  # single process
        pass



def world_size() -> int:
    """Processes of this launch (``WORLD_SIZE`` from accelerate/torchrun; 1 without)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def batch_plan(cfg: Config, world: int | None = None) -> dict:
    """per-device batch x gradient accumulation x processes = ``cfg.global_batch``; a
    :class:`~coft_utils.foundation.profiles.ProfileError` when the global batch is not a multiple of
    ``batch_size x world`` (naming the values and what would be allowed)."""
    world = world_size() if world is None else int(world)
    per = cfg.batch_size * world
    if cfg.global_batch % per:
        ok = [b for b in range(1, cfg.batch_size + 1) if cfg.global_batch % (b * world) == 0]
        raise profiles.ProfileError(
            f"parameter 'global_batch' = {cfg.global_batch} is not a multiple of batch_size ({cfg.batch_size}) x "
            f"processes ({world}) = {per}; allowed: a global_batch that is a multiple of {per}, or with "
            f"{world} process(es) a batch_size in {ok or 'none: change global_batch'}")
    return {"per_device": cfg.batch_size, "grad_accum": cfg.global_batch // per, "world": world,
            "global_batch": cfg.global_batch}


def _fsdp_checkpoints() -> bool:
    return (os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
            and os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "").lower() == "true")


# --------------------------------------------------------------------------- SFT
def sft_config(cfg: Config, lr: float, out_dir, seed: int, max_length: int, assistant_only_loss: bool = True):
    """TRL ``SFTConfig`` of one run: no packing, truncation to ``max_length`` (``keep_start``;
    dialogues left without a response token are dropped by TRL)."""
    from trl import SFTConfig
    plan = batch_plan(cfg)
    return SFTConfig(
        output_dir=str(out_dir), max_steps=cfg.sft_steps if cfg.sft_steps else -1, num_train_epochs=1,
        per_device_train_batch_size=plan["per_device"], gradient_accumulation_steps=plan["grad_accum"],
        learning_rate=lr, lr_scheduler_type=cfg.lr_schedule, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, max_length=max_length, assistant_only_loss=assistant_only_loss,
        packing=False, logging_steps=max(1, (cfg.sft_steps or 100) // 10), save_strategy="no",
        report_to=[], seed=seed, data_seed=seed, bf16=cfg.precision == "bf16", use_cpu=_device(cfg) == "cpu",
        dataloader_num_workers=0, disable_tqdm=True, logging_nan_inf_filter=False,
        # TRL defaults to checkpointing: set explicitly; under FSDP with its own checkpointing, FSDP's (the yaml)
        activation_checkpointing=cfg.grad_checkpointing and not _fsdp_checkpoints())


def prepare_sft_dataset(model, tok, dialogues: list[list[dict]], cfg: Config, out_dir):
    """TRL's own preparation of chat ``messages`` with ``assistant_only_loss=True``: a dataset of
    ``input_ids`` and ``labels`` (-100 outside the assistant responses), truncated to the context.

    It depends only on the tokenizer and the dialogues, so it is done once per tokenizer and
    reused by every (checkpoint, learning rate) run (TRL leaves a dataset with ``labels`` as is)."""
    import datasets
    from trl import SFTTrainer
    ds = datasets.Dataset.from_list([{"messages": m} for m in dialogues])
    args = sft_config(cfg, 1e-4, out_dir, cfg.seed, _context(model, cfg), assistant_only_loss=True)
    return SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train_dataset


def sft(model, tok, train_ds, lr: float, cfg: Config, out_dir: Path, seed: int):
    """Fine-tune ``model`` in place with TRL's ``SFTTrainer``; returns (info, trainer).

    ``train_ds`` is either chat ``messages`` (a list of dialogues: prepared here with
    ``assistant_only_loss=True``) or the output of :func:`prepare_sft_dataset` (labels already
    masked to the responses)."""
    from trl import SFTTrainer
    if isinstance(train_ds, list):
        train_ds = prepare_sft_dataset(model, tok, train_ds, cfg, out_dir)
    args = sft_config(cfg, lr, out_dir, seed, _context(model, cfg), assistant_only_loss=False)
    trainer = divergence.watch(SFTTrainer)(model=model, args=args, train_dataset=train_ds, processing_class=tok)
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)  # the loss history is kept in trainer.state.log_history
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    plan = batch_plan(cfg)
    steps, n = int(trainer.state.global_step), len(trainer.train_dataset)
    info = {"train_loss": float(out.training_loss), "final_loss": float(losses[-1]) if losses else float("nan"),
            "steps": steps, "n_train": n, "sft_wall_s": wall,
            # how the global batch was reached in this launch, and how much of the data one run saw
            "global_batch": plan["global_batch"], "per_device_batch": plan["per_device"],
            "grad_accum": plan["grad_accum"], "world_size": plan["world"],
            "epochs": steps * plan["global_batch"] / n if n else float("nan"),
            "activation_checkpointing": bool(args.activation_checkpointing or _fsdp_checkpoints()),
            **divergence.check(trainer, model)}
    return info, trainer


def _save_tuned(trainer, tok, path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    tmp = path.with_name(path.name + ".partial")  # the same name on every rank
    # activation checkpointing switched the KV cache off in the config; the saved model generates
    # (AlpacaEval), so it is saved with the cache on
    cfg = getattr(getattr(trainer, "model", None), "config", None)
    if cfg is not None and hasattr(cfg, "use_cache"):
        cfg.use_cache = True
    trainer.save_model(str(tmp))  # gathers a full state dict under FSDP
    if _is_main():
        tok.save_pretrained(tmp)
        os.replace(tmp, path)
    _barrier()

