"""Chapters 03 and 04, the training: fine-tune one model with the Hugging Face ``Trainer``.

AdamW, linear warmup then the configured schedule, the same number of optimizer steps for every
checkpoint, loss on the target tokens only (examples encoded by
:func:`coft_utils.chapters.finetune_eval.encode`). Under ``accelerate launch`` / ``torchrun`` the
Trainer runs DDP or FSDP; a loss that goes non-finite is recorded (``coft_utils.foundation.divergence``)::

    from coft_utils.chapters import finetune, finetune_train
    cfg = finetune.resolve("03_fixed_lr_finetuning", "smoke")
    log = finetune_train.train(model, tok, "gsm8k", examples, cfg, lr=1e-2, seed=0)
    log["train_loss_first"], log["train_loss_last"], log["diverged"]
    log["dist_to_start"], log["dist_to_start_rel"]   # ||θ - θ0||₂ after training, and / ||θ0||₂

    # the same fine-tuning with an L2 penalty toward the pre-trained weights (chapter 06):
    cfg = finetune.resolve("03_fixed_lr_finetuning", "smoke", {"l2_start": 10.0})
    log = finetune_train.train(model, tok, "gsm8k", examples, cfg, lr=1e-2, seed=0)
    log["l2_start"], log["train_penalty_last"], log["dist_to_start"]

A unit of the chapters (load, measure, train, measure again, store) is
:func:`coft_utils.chapters.finetune.run_unit`.

Launch-independent batch. ``batch_size`` is the *global* batch (examples per optimizer step),
whatever the launch: ``per_device_batch_size x grad_accum x world = batch_size``, with
``grad_accum`` derived (:func:`batch_plan`); ``per_device_batch_size = 0`` means
``batch_size / world`` (no accumulation). A batch that cannot be split so is a ``ValueError``
naming the numbers, raised before any work (:func:`coft_utils.chapters.finetune.sweep` calls
:func:`batch_plan` first). ``max_epochs`` caps the optimizer steps by the data size
(:func:`effective_steps`: a 131-problem HumanEval train split would otherwise be seen ~977 times
at 2,000 x 64); every unit records ``steps_planned``, ``epochs`` and ``grad_accum``.

Memory. ``gradient_checkpointing=True`` recomputes activations in the backward pass (the
Trainer's ``activation_checkpointing`` (``gradient_checkpointing`` before transformers 5),
non-reentrant; the record's ``gradient_checkpointing`` is the model's own state after training);
``mixed_precision="bf16"`` trains in bf16 autocast on CUDA. On a machine without CUDA bf16/fp16
are not applied (as before: CPU runs stay float32), and the record says ``precision_used`` =
``"fp32"``, so a record always says what actually ran.

Distance to the start. Every unit records ``dist_to_start`` = ‖θ − θ0‖₂ over the trainable
parameters after training (each tied tensor once: ``model.named_parameters()``) and
``dist_to_start_rel`` = that / ‖θ0‖₂, θ0 being the weights training started from (NaN under
FSDP and above 2B parameters, where no copy of θ0 is kept).

L2-to-start penalty (``cfg.l2_start`` = λ > 0; :func:`l2_start_trainer`). The loss minimized is
task loss + λ/2 · ‖θ − θ0‖², θ0 a detached copy of the weights taken at the first training
forward, on their device. The *strength* λ is a coefficient of the loss, not of the update: the
penalty's gradient λ(θ − θ0) is added to the task gradient before clipping and AdamW, so it is
clipped and normalized by Adam's second moment like any other gradient. λ is therefore not
comparable to ``weight_decay`` (decoupled, applied to the update as lr · wd · θ), and a given λ
pulls harder where the task gradient is small. The penalty counts once per optimizer step
whatever the gradient accumulation (see :func:`l2_start_trainer`). The logged losses
(``train_loss``, ``train_loss_first/last``) stay the task loss; ``train_penalty_last`` is the
penalty at the last micro-batch's forward and ``l2_start`` the strength, both recorded only when
λ > 0. With λ = 0 the plain ``Trainer`` runs, as before. Single process or DDP only: FSDP shards
the parameters, and a penalty over them is a ``ValueError`` before training.
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

__all__ = ["train", "batch_plan", "effective_steps", "l2_start_trainer"]


def _check_l2(lam) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"l2_start (penalty strength) must be a finite number >= 0, got {lam!r}")
    return float(lam)


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


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def batch_plan(global_batch: int, per_device: int = 0, world: int | None = None) -> dict:
    """``{"per_device", "grad_accum", "world", "global"}`` with per_device x grad_accum x world =
    global_batch; ``per_device = 0``: global_batch / world. A ``ValueError`` naming the numbers when
    the global batch cannot be reached exactly (never a silently different batch)."""
    world = _world() if world is None else int(world)
    for name, v in (("batch_size", global_batch), ("world", world)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if isinstance(per_device, bool) or not isinstance(per_device, int) or per_device < 0:
        raise ValueError(f"per_device_batch_size must be an integer >= 0, got {per_device!r}")
    per = per_device or global_batch // world
    if per < 1 or global_batch % (per * world):
        raise ValueError(
            f"global batch_size = {global_batch} cannot be reached with per_device_batch_size = "
            f"{per_device or 'batch_size / world'} on {world} process(es): it must be a multiple of "
            f"per_device_batch_size x world = {max(per, 1) * world}; allowed: a batch_size divisible by "
            f"{max(per, 1) * world}, or a per_device_batch_size dividing batch_size / world")
    return {"per_device": per, "grad_accum": global_batch // (per * world), "world": world, "global": global_batch}


def effective_steps(steps: int, n_examples: int, batch_size: int, max_epochs: float = 0.0) -> int:
    """Optimizer steps actually run: ``steps``, capped at ``max_epochs`` passes over ``n_examples``
    (``max_epochs = 0``: no cap); at least 1. The same for every checkpoint of a sweep."""
    if n_examples < 1:
        raise ValueError(f"no training examples (n_examples = {n_examples})")
    if not max_epochs:
        return int(steps)
    return max(1, min(int(steps), int(math.floor(max_epochs * n_examples / batch_size))))


def _checkpointing_args(args_cls, on: bool) -> dict:
    """Activation (gradient) checkpointing in the Trainer's own arguments: transformers >= 5.x
    names them ``activation_checkpointing[_kwargs]`` (``gradient_checkpointing`` is deprecated)."""
    import dataclasses
    names = {f.name for f in dataclasses.fields(args_cls)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {key: on, f"{key}_kwargs": {"use_reentrant": False} if on else None}


class _SqDist:
    """``((p − p0)²).sum()`` with gradient ``2(p − p0)`` w.r.t. ``p``, saving only the two tensors
    (no ``p − p0`` copy kept for the backward: one parameter-sized temporary at a time)."""
    fn = None

    @classmethod
    def apply(cls, p, p0):
        if cls.fn is None:
            import torch

            class F(torch.autograd.Function):
                @staticmethod
                def forward(ctx, p, p0):
                    ctx.save_for_backward(p, p0)
                    return (p.detach() - p0).pow(2).sum()

                @staticmethod
                def backward(ctx, g):
                    p, p0 = ctx.saved_tensors
                    return g * 2 * (p.detach() - p0), None

            cls.fn = F
        return cls.fn.apply(p, p0)


def l2_start_trainer(trainer_cls):
    """A subclass of ``trainer_cls`` (a ``Trainer``, e.g. ``divergence.watch(Trainer)``) whose
    training loss is task loss + λ/2 · Σ‖θ − θ0‖², λ = its ``l2_start`` keyword argument.

    θ0: ``{name: detached copy}`` of the trainable parameters (``named_parameters()`` of the
    unwrapped model: tied weights once) taken at the first training forward, on their device;
    ``trainer.l2_theta0`` after training. Once per optimizer step: ``Trainer.training_step``
    (transformers 5) divides the loss by the number of micro-batches of the step unless it counts
    as already scaled for accumulation (``loss_is_scaled_for_ga``; by default when the model takes
    ``num_items_in_batch``, as the causal LMs here do: each micro-batch's task loss is then its
    share of the whole step's mean). So each micro-batch adds λ/2 · ‖θ − θ0‖² / k in the scaled
    case (k = ``current_gradient_accumulation_steps``) and the whole penalty otherwise: the
    gradients of a step sum to one penalty gradient λ(θ − θ0) for any accumulation. Under DDP every
    rank adds the same penalty and the gradient average keeps it once.

    ``training_step`` returns (and the Trainer logs) the task loss, scaled as the Trainer scales
    it, so ``train_loss`` is comparable with the plain Trainer's; the divergence watch (when it is
    ``trainer_cls``) sees the full objective. ``trainer.l2_penalty_last`` is the penalty at the
    last training forward. At λ = 0 the penalty is still computed (times 0), and training is
    bitwise the plain one's."""

    class L2Start(trainer_cls):
        def __init__(self, *args, l2_start: float = 0.0, **kwargs):
            self.l2_start = _check_l2(l2_start)
            self.l2_theta0 = None
            self.l2_penalty_last = None
            self._l2_pairs = None
            self._l2_task = None
            super().__init__(*args, **kwargs)

        def train(self, *args, **kwargs):
            if getattr(self, "is_fsdp_enabled", False):
                raise ValueError(f"l2_start = {self.l2_start:g}: an L2 penalty toward the start is not supported "
                                 "under FSDP (sharded parameters); allowed: a single process or DDP, or l2_start = 0")
            self.l2_theta0 = self._l2_pairs = None  # taken at the first training forward
            return super().train(*args, **kwargs)

        def _pairs(self, model):
            if self._l2_pairs is None:
                named = [(n, p) for n, p in self.accelerator.unwrap_model(model).named_parameters() if p.requires_grad]
                self.l2_theta0 = {n: p.detach().clone() for n, p in named}
                self._l2_pairs = [(p, self.l2_theta0[n]) for n, p in named]
            return self._l2_pairs

        def _scaled_for_ga(self, num_items_in_batch) -> bool:
            s = getattr(self, "loss_is_scaled_for_ga", None)  # what Trainer.training_step decides
            if s is not None:
                return bool(s)
            return bool((self.model_accepts_loss_kwargs and num_items_in_batch is not None)
                        or self.compute_loss_func is not None)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
            if not model.training:  # an evaluation: the task loss only
                return out
            loss = out[0] if return_outputs else out
            sq = sum(_SqDist.apply(p, p0) for p, p0 in self._pairs(model))
            pen = 0.5 * self.l2_start * sq
            self.l2_penalty_last = pen.detach()
            self._l2_task = loss.detach()
            if self._scaled_for_ga(num_items_in_batch):
                pen = pen / getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
            total = loss + pen
            return (total, *out[1:]) if return_outputs else total

        def training_step(self, model, inputs, num_items_in_batch=None):
            super().training_step(model, inputs, num_items_in_batch)
            task = self._l2_task  # scaled the way Trainer.training_step scales the loss it returns
            if self.args.n_gpu > 1:
                task = task.mean()
            if not self._scaled_for_ga(num_items_in_batch):
                task = task / getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
            return task

    L2Start.__name__ = L2Start.__qualname__ = f"L2Start{trainer_cls.__name__}"
    return L2Start


def _use_l2(cfg) -> bool:
    """The penalized trainer runs when the strength is > 0 (tests force it at 0)."""
    return _check_l2(getattr(cfg, "l2_start", 0.0)) > 0


def _snapshot(model) -> dict | None:
    """``{name: CPU copy}`` of the trainable parameters (θ0 of the distance when λ = 0); None (no
    distance recorded) under FSDP, whose sharded parameters do not match the copy, and above 2B
    parameters, where a CPU copy per process would cost tens of GB."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true") or \
            sum(p.numel() for p in model.parameters()) > 2e9:
        return None
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def _distance(model, theta0: dict) -> dict:
    """``dist_to_start`` = ‖θ − θ0‖₂ and ``dist_to_start_rel`` = that / ‖θ0‖₂ over the parameters
    named in ``theta0`` (float64 sums)."""
    import torch
    if not theta0:
        return {"dist_to_start": math.nan, "dist_to_start_rel": math.nan}
    d2 = n2 = 0.0
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in theta0:
                if tuple(p.shape) != tuple(theta0[n].shape):  # wrapped / sharded after training: not measured
                    return {"dist_to_start": math.nan, "dist_to_start_rel": math.nan}
                p0 = theta0[n].double()
                d2 += float((p.detach().to(p0.device, torch.float64) - p0).pow(2).sum())
                n2 += float(p0.pow(2).sum())
    d = math.sqrt(d2)
    return {"dist_to_start": d, "dist_to_start_rel": d / math.sqrt(n2) if n2 > 0 else math.nan}


def train(model, tok, task, examples: list[dict], cfg: Config, lr: float, seed: int,
          out_dir: str | os.PathLike | None = None) -> dict:
    """Fine-tune ``model`` in place with ``transformers.Trainer``; returns the training log.

    AdamW (``adamw_torch``), ``warmup_ratio`` linear warmup then ``lr_schedule``, ``steps``
    optimizer steps of ``batch_size`` examples (the data is cycled), loss on target tokens only.
    Under ``accelerate launch`` / ``torchrun`` the Trainer runs DDP or FSDP (config file);
    ``batch_size`` stays the global batch, reached by gradient accumulation (:func:`batch_plan`);
    steps are capped by ``max_epochs`` (:func:`effective_steps`). Nothing is written unless
    ``out_dir`` is given. ``cfg.l2_start`` > 0 adds the L2 penalty toward the start
    (:func:`l2_start_trainer`); the log has ``dist_to_start`` / ``dist_to_start_rel`` always, and
    ``l2_start`` / ``train_penalty_last`` when the strength is > 0.
    """
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments
    lr = _check_lr(lr)
    lam = _check_l2(getattr(cfg, "l2_start", 0.0))
    task = tasks_mod.get(task)
    gen = task.kind == "generative"
    feats = []
    for e in examples:
        ids, n = encode(tok, e["prompt"], e["target"], cfg.max_len, eos=gen)
        feats.append({"input_ids": ids, "n_target": n})
    plan = batch_plan(cfg.batch_size, getattr(cfg, "per_device_batch_size", 0))
    steps = effective_steps(cfg.steps, len(feats), cfg.batch_size, getattr(cfg, "max_epochs", 0.0))
    ckpt = bool(getattr(cfg, "gradient_checkpointing", False))
    cuda = torch.cuda.is_available()
    precision = cfg.mixed_precision if cuda and cfg.mixed_precision != "no" else "fp32"
    if ckpt:
        model.config.use_cache = False  # a KV cache is useless in training and warns with checkpointing
    with tempfile.TemporaryDirectory(prefix="coft-ft-") as tmp:
        args = TrainingArguments(
            output_dir=str(out_dir) if out_dir else tmp, max_steps=steps,
            per_device_train_batch_size=plan["per_device"], gradient_accumulation_steps=plan["grad_accum"],
            **_checkpointing_args(TrainingArguments, ckpt),
            learning_rate=lr,
            lr_scheduler_type=cfg.lr_schedule, warmup_steps=int(round(cfg.warmup_ratio * steps)),
            weight_decay=cfg.weight_decay, adam_beta1=0.9, adam_beta2=cfg.beta2,
            max_grad_norm=cfg.grad_clip if cfg.grad_clip > 0 else 1e9, optim="adamw_torch",
            seed=seed, data_seed=seed, logging_steps=max(1, steps // 10), report_to=[],
            save_strategy="no", disable_tqdm=True, use_cpu=not cuda, dataloader_num_workers=0,
            remove_unused_columns=False, bf16=cfg.mixed_precision == "bf16" and cuda, logging_nan_inf_filter=False,
            fp16=cfg.mixed_precision == "fp16" and cuda,
        )
        if _use_l2(cfg):
            theta0 = None  # the trainer's own θ0, taken when training starts
            trainer = l2_start_trainer(divergence.watch(Trainer))(
                model=model, args=args, train_dataset=feats, data_collator=_Collator(_pad(tok)), l2_start=lam)
        else:
            theta0 = _snapshot(model)  # for the distance only: training is untouched
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
    dist = _distance(model, theta0 if not _use_l2(cfg) else trainer.l2_theta0)
    pen = {}
    if lam > 0:
        last = trainer.l2_penalty_last
        pen = {"l2_start": lam, "train_penalty_last": float(last) if last is not None else float("nan")}
    return {**dist, **pen, "train_loss": float(out.training_loss), "train_loss_first": losses[0] if losses else float("nan"),
            "train_loss_last": losses[-1] if losses else float("nan"), "train_wall_s": wall,
            "steps": int(trainer.state.global_step), **divergence.check(trainer, model), "_trainer": trainer,
            **_extra_log(cfg, plan, steps, len(feats), bool(getattr(model, "is_gradient_checkpointing", ckpt)),
                         precision)}


def _extra_log(cfg, plan: dict, steps: int, n: int, ckpt: bool, precision: str) -> dict:
    """What the run actually did, beyond the config. Keys appear only where they say something
    new (a cap, accumulation, checkpointing, a precision), so smoke/cpu records keep their keys."""
    out = {}
    if getattr(cfg, "max_epochs", 0.0) or plan["grad_accum"] > 1 or ckpt or cfg.mixed_precision != "no" \
            or getattr(cfg, "gradient_checkpointing", False):
        out = {"steps_planned": steps, "epochs": steps * cfg.batch_size / n, "n_train_used": n,
               "grad_accum": plan["grad_accum"], "per_device_batch_size": plan["per_device"],
               "world_size": plan["world"], "gradient_checkpointing": ckpt, "precision_used": precision}
    return out
