"""Fine-tuning every checkpoint of a series: ID metrics, OOD forgetting, LR sweeps (chapters 03, 04).

One *unit* = (series, checkpoint, task, learning rate, seed): load the base checkpoint, measure
its OOD perplexity (the fixed pre-training-domain tokens; cached per checkpoint in a ``_base``
store), fine-tune it with the Hugging Face ``Trainer`` (AdamW, warmup + schedule, the same number
of steps for every checkpoint), then measure ID metrics on validation and test data and the OOD
perplexity again on exactly the same tokens. Each unit is one record of the results store, so a
killed sweep resumes; fine-tuned weights are kept only with ``keep_weights=True``::

    from coft_utils.chapters import finetune
    cfg = finetune.resolve("03_fixed_lr_finetuning", "smoke")            # or profiles.resolve(...)
    series = finetune.load_series(cfg)
    df = finetune.sweep(series, cfg)                  # one row per unit: id_* / ood_* metrics
    finetune.inflection_table(df)                     # per (task, lr): argmin of OOD after, monotone Δ?
    best = finetune.best_lr(df)                       # per (task, checkpoint): LR chosen on validation
    finetune.lr_regime(best, cfg.lrs)                 # constant / slowly / quickly decreasing

    # metrics on any model
    finetune.class_metrics(model, tok, examples)      # accuracy, class perplexity (length-normalized)
    finetune.answer_perplexity(model, tok, examples)  # generative ID metric

    # at gpu / paper scale, the same sweep on several GPUs (the Trainer runs under accelerate):
    #   accelerate launch --config_file coft_utils/configs/accelerate_ddp.yaml \\
    #       -m coft_utils.chapters.finetune --chapter 03_fixed_lr_finetuning --profile gpu
    #   accelerate launch --config_file coft_utils/configs/accelerate_fsdp.yaml \\
    #       -m coft_utils.chapters.finetune --chapter 04_lr_sweep --profile paper
    # (DDP without GPUs, e.g. to check the path: torchrun --nproc_per_node 2 -m coft_utils.chapters.finetune
    #  --profile smoke; the Trainer wraps the model in DistributedDataParallel over gloo, and with the
    #  same global batch the training loss equals the single-process one.)

Metrics (the paper's definitions):

* classification: every class is scored by the *mean* log-probability of its verbalizer tokens
  given the prompt (length-normalized); the scores are normalized over the classes (softmax);
  ``accuracy`` = argmax is the true class; ``class_ppl`` = exp(mean over examples of
  −log p(true class)).
* generative: ``answer_ppl`` = exp of the token-weighted mean NLL of the answer tokens (+ eos).
* ``id_ppl`` is ``class_ppl`` or ``answer_ppl`` (lower is better), the metric the LR is chosen by.
* OOD: token-weighted perplexity on ``ood_blocks`` fixed blocks of the pre-training domain
  (Gutenberg validation books; C4 validation at ``paper``), before and after; ``ood_delta`` =
  after − before. The sha256 of the token ids is stored with both so "same tokens" is checkable.

Both chapters write to the same experiment (``experiment="finetune"``) with the same unit keys:
the sweep chapter's LR grid contains the fixed-LR chapter's LRs, so those units are computed once
and shared. A unit's key holds a hash of every training/evaluation setting (``train_key``), so a
change of steps or data sizes never reuses a stale record.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from ..foundation import divergence, models, plots, profiles, registry, results, tasks as tasks_mod, verdicts
from ..foundation.profiles import param

__all__ = ["Config", "PRESETS", "CHAPTERS", "resolve", "load_series", "encode", "target_logprobs",
           "class_metrics", "answer_perplexity", "id_metrics", "ood_blocks", "ood_perplexity",
           "train", "run_unit", "units", "sweep", "frame", "inflection_table", "best_lr", "lr_regime",
           "pareto_front", "front_comparison", "mean_frame", "replicates", "tuned_replicates", "fixed_lr_summary",
           "sweep_summary", "plot_id", "plot_ood", "plot_best", "plot_pareto", "fixed_lr_verdict",
           "sweep_verdict", "THEIRS", "main"]

CHAPTERS = tuple(n for n, c in registry.CHAPTERS.items() if c.experiment == "coft_utils.chapters.finetune")  # 03, 04
OOD_SOURCES = ("gutenberg", "wikitext", "c4")
SCHEDULES = ("linear", "cosine", "constant_with_warmup", "constant")

THEIRS = {
    "fixed_lr": ("Springer et al. (2025), Sec. 3, Figs. 4-5 (theirs): OLMo-15M/30M/90M pre-trained on C4 for "
                 "4B to 128B tokens, each annealed, then fine-tuned at fixed learning rates: the C4 "
                 "perplexity after fine-tuning first falls and then rises with pre-training tokens "
                 "(an inflection point), and the inflection arrives with fewer pre-training tokens "
                 "for larger fine-tuning learning rates; the rise is driven by the growth of the "
                 "forgetting (after − before)."),
    "sweep": ("Springer et al. (2025), Sec. 3, Fig. 6 (theirs): tuning the fine-tuning learning rate per "
              "checkpoint for ID performance, the optimal learning rate is either constant across "
              "checkpoints (degradation appears), slowly decreasing (the inflection point moves "
              "later but remains), or quickly decreasing (the OOD degradation is avoided, at a cost "
              "in ID performance); catastrophic overtraining is not an artefact of an untuned "
              "learning rate."),
}


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Config(profiles.SeriesConfig):
    tasks: tuple = param(("gsm8k",), "fine-tuning tasks (coft_utils.foundation.tasks registry: "
                         + ", ".join(tasks_mod.names()) + ")")
    lrs: tuple[float, ...] = param((1e-4,), "fine-tuning peak learning rates", min=0.0, min_exclusive=True)
    steps: int = param(100, "optimizer steps (the same for every checkpoint)", min=1,
                       max=10_000_000)
    batch_size: int = param(16, "examples per optimizer step (global)", min=1, max=16384)
    max_len: int = param(128, "max tokens per example (prompt cut from the left)", min=8,
                         max=32768)
    warmup_ratio: float = param(0.1, "linear warmup, as a fraction of steps", min=0.0, max=0.9)
    lr_schedule: str = param("linear", "LR schedule after warmup (Trainer lr_scheduler_type)",
                             choices=SCHEDULES)
    weight_decay: float = param(0.0, "AdamW weight decay", min=0.0)
    beta2: float = param(0.999, "AdamW beta2", min=0.0, max=1.0, max_exclusive=True)
    grad_clip: float = param(1.0, "gradient-norm clip (0: off)", min=0.0)
    n_train: int = param(2000, "training examples per task (prefix of its train split; at most the largest "
                         "train split of the tasks, a smaller split is used whole)", min=1, max=10_000_000)
    n_val: int = param(200, "validation examples (LR selection; at most the largest validation split of the "
                       "tasks)", min=1, max=10_000_000)
    n_test: int = param(500, "test examples (reported; at most the largest test split of the tasks)",
                        min=1, max=10_000_000)
    ood_source: str = param("gutenberg", "pre-training-domain held-out tokens", choices=OOD_SOURCES)
    ood_blocks: int = param(64, "held-out blocks for OOD perplexity (at most what the source "
                                                  "holds)", min=1, max=1_000_000)
    ood_seq_len: int = param(128, "tokens per held-out block", min=2, max=32768)
    eval_batch_size: int = param(32, "evaluation batch size", min=1, max=16384)
    select_metric: str = param("id_ppl", "validation metric the best LR is chosen by",
                               choices=("id_ppl", "accuracy"))
    early_frac: float = param(0.34, "Pareto plot: first fraction of checkpoints drawn as 'early'",
                              min=0.0, max=1.0, min_exclusive=True)
    mixed_precision: str = param("no", "Trainer precision (bf16 on GPU)", choices=("no", "bf16", "fp16"))
    keep_weights: bool = param(False, "save every fine-tuned model under runs/ (off: nothing written)")
    experiment: str = param("finetune", "results-store experiment (shared by chapters 03 and 04)")
    threads: int = param(0, "torch CPU threads (0: leave as is)", min=0, max=256)
    seeds: int = param(1, "fine-tuning seeds per (checkpoint, task, lr): seed, seed+1, ...", min=1, max=20)
    workers: int = param(1, "worker processes for independent units (1 thread each; 1: in-process)",
                         min=1, max=64)

    def check(self):
        if self.ood_source == "c4" and profiles.get_profile(self.profile).offline:
            raise profiles.ProfileError(f"parameter 'ood_source' = 'c4' needs the hub (profile 'paper'); "
                                        f"profile {self.profile!r} is offline; allowed here: gutenberg, wikitext")
        for name in ("lrs", "tasks", "checkpoints"):
            v = getattr(self, name)
            if len(set(v)) != len(v):
                raise profiles.ProfileError(f"parameter {name!r} has duplicates: {v}")
        if not self.lrs:
            raise profiles.ProfileError("parameter 'lrs' must list at least one learning rate")
        if not self.tasks:
            raise profiles.ProfileError("parameter 'tasks' must list at least one task")
        bad = [t for t in self.tasks if t not in tasks_mod.REGISTRY]
        if bad:
            raise profiles.ProfileError(f"parameter 'tasks': unknown task(s) {', '.join(map(repr, bad))}; "
                                        f"allowed: {', '.join(tasks_mod.names())}")
        for name, split in (("n_train", "train"), ("n_val", "validation"), ("n_test", "test")):
            sizes = {t: tasks_mod.split_size(t, split) for t in self.tasks}
            known = [n for n in sizes.values() if n is not None]
            if known and len(known) == len(sizes) and getattr(self, name) > max(known):
                raise profiles.ProfileError(
                    f"parameter {name!r} = {getattr(self, name)} is more than the {split} split of every task has "
                    f"({', '.join(f'{t}: {n}' for t, n in sizes.items())}); allowed: <= {max(known)}")
        from ..foundation import evaluate
        evaluate.check_blocks(self.ood_source, self.ood_blocks, self.ood_seq_len, ("ood_blocks", "ood_seq_len"))
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.experiment) or self.experiment == "claims" \
                or ".." in self.experiment:
            raise profiles.ProfileError(
                f"parameter 'experiment' = {self.experiment!r} is not allowed; allowed: a folder name of letters, "
                "digits, '_', '-', '.' that starts with a letter or digit, without '..', and not 'claims' "
                "(the claims page's store)")


_FIXED = (1e-3, 1e-2, 3e-2, 1e-1)  # cpu: from well below to above the ID-optimal LR of chapter 04
# smoke: a few steps on the 6-checkpoint smoke suite; cpu: ~65k-parameter olmo-pico suite
# (0.25M..8M tokens); gpu: the olmo-micro suite; paper: OLMo-1B revisions, C4, bf16, FSDP/DDP.
_BASE = {
    "smoke": Config(profile="smoke", tasks=("gsm8k", "sst2"), lrs=(1e-3, 1e-2), steps=6, batch_size=8, max_len=64, n_train=64,
                    n_val=16, n_test=16, ood_blocks=8, ood_seq_len=64, eval_batch_size=16, threads=1,
                    seeds=2),
    "cpu": Config(profile="cpu", lrs=_FIXED, steps=120, batch_size=16, max_len=96, n_train=1920,
                  n_val=200, n_test=400, ood_blocks=64, ood_seq_len=128, eval_batch_size=64, threads=1,
                  seeds=3, workers=2),
    "gpu": Config(profile="gpu", tasks=("sst2", "gsm8k"), lrs=(1e-4, 3e-4, 1e-3), steps=1000,
                  batch_size=64, max_len=256, n_train=20000, n_val=500, n_test=1000, ood_blocks=512,
                  ood_seq_len=256, eval_batch_size=128, mixed_precision="bf16", seeds=3),
    "paper": Config(profile="paper", series="olmo-1b", tasks=("sst2", "gsm8k", "humaneval"),
                    lrs=(4e-6, 1e-5, 4e-5), steps=2000, batch_size=64, max_len=1024, n_train=50000,
                    n_val=500, n_test=1000, ood_source="c4", ood_blocks=1024, ood_seq_len=1024,
                    eval_batch_size=32, mixed_precision="bf16", seeds=3),
}
_GRID = {  # chapter 04: a grid per checkpoint that contains chapter 03's LRs (shared units)
    "smoke": (1e-3, 1e-2, 3e-2),
    "cpu": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "gpu": (3e-5, 1e-4, 3e-4, 1e-3, 3e-3),
    "paper": (1e-6, 4e-6, 1e-5, 4e-5, 1e-4),
}
import dataclasses as _dc  # noqa: E402

PRESETS: dict[str, dict[str, Config]] = {
    "03_fixed_lr_finetuning": dict(_BASE),
    "04_lr_sweep": {p: _dc.replace(c, lrs=_GRID[p]) for p, c in _BASE.items()},
}


def resolve(chapter: str = "03_fixed_lr_finetuning", profile: str = "cpu", overrides: dict | None = None,
            seed: int | None = None) -> Config:
    return profiles.resolve(chapter, profile, overrides, seed=seed)


def load_series(cfg: Config) -> models.CheckpointSeries:
    from ..foundation import series
    return series.for_config(cfg)


def _check_lr(lr) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"learning rate must be a finite number > 0, got {lr!r}")
    return float(lr)


# --------------------------------------------------------------------------- encoding
def _bos(tok) -> list[int]:
    b = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    return [b] if b is not None else []


def encode(tok, prompt: str, target: str, max_len: int, eos: bool = False) -> tuple[list[int], int]:
    """Token ids of ``bos + prompt + target (+ eos)`` and the number of target tokens at the end.

    Prompt and target are tokenized separately (the target's tokens are the same in training and
    scoring). Too long: the target is cut at ``max_len - 2`` tokens and the prompt from the left.
    """
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    t = tok(target, add_special_tokens=False)["input_ids"]
    if eos and tok.eos_token_id is not None:
        t = t + [tok.eos_token_id]
    if not t:
        raise ValueError(f"empty target {target!r}")
    bos = _bos(tok)
    t = t[:max_len - len(bos) - 1]
    room = max_len - len(bos) - len(t)
    p = p[-room:] if room > 0 else []
    return bos + p + t, len(t)


def target_logprobs(model, seqs: list[tuple[list[int], int]], batch_size: int = 32,
                    pad_id: int = 0) -> list[tuple[float, int]]:
    """(sum of log p of the last ``n`` tokens of each sequence, n), batched with right padding."""
    import torch
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = [None] * len(seqs)  # type: ignore[list-item]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            L = max(len(seqs[i][0]) for i in idx)
            x = torch.full((len(idx), L), pad_id, dtype=torch.long)
            m = torch.zeros((len(idx), L), dtype=torch.long)
            for r, i in enumerate(idx):
                ids = seqs[i][0]
                x[r, :len(ids)] = torch.tensor(ids)
                m[r, :len(ids)] = 1
            logits = model(input_ids=x.to(device), attention_mask=m.to(device)).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            tok_lp = logp.gather(-1, x[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).double().cpu()
            for r, i in enumerate(idx):
                ids, n = seqs[i]
                out[i] = (float(tok_lp[r, len(ids) - 1 - n:len(ids) - 1].sum()), n)
    return out


def class_metrics(model, tok, examples: list[dict], max_len: int = 128, batch_size: int = 32) -> dict:
    """Accuracy and class perplexity (length-normalized verbalizer scores, softmax over classes)."""
    seqs, owner = [], []
    for e in examples:
        for c in e["choices"]:
            seqs.append(encode(tok, e["prompt"], c, max_len))
            owner.append(len(owner))
    lp = target_logprobs(model, seqs, batch_size, _pad(tok))
    k, nll, correct = 0, [], 0
    for e in examples:
        n = len(e["choices"])
        scores = np.array([s / cnt for s, cnt in lp[k:k + n]])
        k += n
        logz = np.logaddexp.reduce(scores)
        nll.append(-(scores[e["label"]] - logz))
        correct += int(np.argmax(scores) == e["label"])
    mean_nll = float(np.mean(nll))
    return {"accuracy": correct / len(examples), "class_nll": mean_nll, "class_ppl": math.exp(mean_nll),
            "n": len(examples)}


def answer_perplexity(model, tok, examples: list[dict], max_len: int = 128, batch_size: int = 32) -> dict:
    """Token-weighted perplexity of the answer tokens (+ eos) given the prompt."""
    seqs = [encode(tok, e["prompt"], e["target"], max_len, eos=True) for e in examples]
    lp = target_logprobs(model, seqs, batch_size, _pad(tok))
    tot, cnt = -sum(s for s, _ in lp), sum(n for _, n in lp)
    loss = tot / cnt
    return {"answer_nll": loss, "answer_ppl": math.exp(min(loss, 700.0)), "n_tokens": cnt, "n": len(examples)}


def _pad(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def id_metrics(model, tok, task, examples: list[dict], max_len: int, batch_size: int = 32) -> dict:
    """The task's ID metrics with a common ``id_ppl`` (lower is better) and ``accuracy`` (cls only)."""
    task = tasks_mod.get(task)
    if task.kind == "classification":
        m = class_metrics(model, tok, examples, max_len, batch_size)
        return {"id_ppl": m["class_ppl"], "accuracy": m["accuracy"], "id_nll": m["class_nll"]}
    m = answer_perplexity(model, tok, examples, max_len, batch_size)
    return {"id_ppl": m["answer_ppl"], "accuracy": float("nan"), "id_nll": m["answer_nll"]}


# --------------------------------------------------------------------------- OOD tokens
def _c4_ids(tok, n_tokens: int) -> np.ndarray:
    from ..foundation import data, evaluate
    cache = data.cache_dir() / "heldout" / f"c4-{evaluate.tokenizer_fingerprint(tok)}-{n_tokens}.npy"
    if cache.is_file():
        return np.load(cache)
    import datasets
    ids: list[int] = []
    for rec in datasets.load_dataset("allenai/c4", "en", split="validation", streaming=True):
        ids.extend(tok(rec["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        if len(ids) >= n_tokens:
            break
    arr = np.asarray(ids[:n_tokens], dtype=np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, arr)
    return arr


def ood_blocks(tok, cfg: Config):
    """The fixed held-out blocks (LongTensor [ood_blocks, ood_seq_len]) of the pre-training domain."""
    import torch
    from ..foundation import evaluate
    if cfg.ood_source == "c4":
        ids = _c4_ids(tok, cfg.ood_blocks * cfg.ood_seq_len)
        return torch.from_numpy(ids.reshape(cfg.ood_blocks, cfg.ood_seq_len).copy())
    return evaluate.heldout_blocks(tok, cfg.ood_source, cfg.ood_blocks, cfg.ood_seq_len)


def blocks_sha(blocks) -> str:
    return hashlib.sha256(np.ascontiguousarray(blocks.cpu().numpy()).tobytes()).hexdigest()[:16]


def ood_perplexity(model, blocks, batch_size: int = 32) -> dict:
    from ..foundation import evaluate
    r = evaluate.perplexity(model, blocks, batch_size)
    return {"ppl": r["ppl"], "loss": r["loss"], "n_tokens": r["n_tokens"], "tokens_sha": blocks_sha(blocks)}


# --------------------------------------------------------------------------- training
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


# --------------------------------------------------------------------------- units
_TRAIN_FIELDS = ("steps", "batch_size", "max_len", "warmup_ratio", "lr_schedule", "weight_decay", "beta2",
                 "grad_clip", "n_train", "n_val", "n_test", "ood_source", "ood_blocks", "ood_seq_len",
                 "mixed_precision")


def train_key(cfg: Config) -> str:
    d = {k: getattr(cfg, k) for k in _TRAIN_FIELDS}
    return results.config_hash(d, 10)


def units(series: models.CheckpointSeries, cfg: Config) -> list[dict]:
    return [{"series": series.name, "checkpoint": c.label, "weights": models.identity(c), "tokens": c.tokens,
             "task": t, "lr": _check_lr(lr), "seed": cfg.seed * cfg.seeds + i, "train_key": train_key(cfg)}
            for t in cfg.tasks for c in series for lr in cfg.lrs for i in range(cfg.seeds)]


_SPLIT_CACHE: dict = {}


def _splits(task: str, cfg: Config):
    key = (task, cfg.n_train, cfg.n_val, cfg.n_test)
    if key not in _SPLIT_CACHE:
        _SPLIT_CACHE[key] = tasks_mod.splits(task, cfg.n_train, cfg.n_val, cfg.n_test)
    return _SPLIT_CACHE[key]


def _data_names(cfg: Config) -> list[str]:
    names = sorted({tasks_mod.get(t).dataset for t in cfg.tasks})
    if cfg.ood_source == "gutenberg":
        names.append("gutenberg_top100_authors")
    elif cfg.ood_source == "wikitext":
        names.append("wikitext2_tokenized_valid_test")
    return names


def _eval_len(cfg: Config, model) -> int:
    mp = getattr(model.config, "max_position_embeddings", None)
    return min(cfg.max_len, mp) if mp else cfg.max_len


def _device():
    import torch
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def _set_threads(cfg: Config):
    if cfg.threads:
        import torch
        torch.set_num_threads(cfg.threads)


def base_record(series, ckpt, task: str, cfg: Config) -> dict:
    """OOD perplexity and ID metrics of the base checkpoint (cached in the ``_base`` store)."""
    store = results.Store(f"{cfg.experiment}_base", cfg.profile)
    unit = {"series": series.name, "checkpoint": ckpt.label, "weights": models.identity(ckpt), "task": task,
            "train_key": train_key(cfg)}
    rec = store.get(unit)
    if rec is not None:
        return rec["metrics"]
    model = models.load_model(ckpt, device=_device())
    tok = models.load_tokenizer(ckpt, series)
    sp = _splits(task, cfg)
    L = _eval_len(cfg, model)
    blocks = ood_blocks(tok, cfg)
    o = ood_perplexity(model, blocks, cfg.eval_batch_size)
    m = {"ood_ppl": o["ppl"], "ood_loss": o["loss"], "ood_tokens_sha": o["tokens_sha"]}
    for split in ("validation", "test"):
        for k, v in id_metrics(model, tok, task, sp[split], L, cfg.eval_batch_size).items():
            m[f"{'val' if split == 'validation' else 'test'}_{k}"] = v
    if _is_main():
        store.write(unit, m, config=cfg, data_names=_data_names(cfg))
    return m


def run_unit(unit: dict, series: models.CheckpointSeries, cfg: Config) -> dict:
    """Fine-tune one (checkpoint, task, lr, seed) and return its metrics (see the module doc)."""
    import torch
    from transformers import set_seed
    lr = _check_lr(unit["lr"])
    task = tasks_mod.get(unit["task"]).name
    ckpt = {c.label: c for c in series}[unit["checkpoint"]]
    _set_threads(cfg)
    base = base_record(series, ckpt, task, cfg)
    set_seed(int(unit["seed"]))
    model = models.load_model(ckpt, device=_device())
    tok = models.load_tokenizer(ckpt, series)
    sp = _splits(task, cfg)
    L = _eval_len(cfg, model)
    cfg_l = _dc.replace(cfg, max_len=L)
    out_dir = None
    if cfg.keep_weights:
        out_dir = (results.runs_dir() / cfg.profile / cfg.experiment / "weights" /
                   results.unit_id(unit))
    log = train(model, tok, task, sp["train"], cfg_l, lr, int(unit["seed"]), out_dir=out_dir)
    trainer = log.pop("_trainer")
    eval_model = trainer.model_wrapped if _is_distributed() else model
    eval_model.eval()
    m = {**log}
    o = {"ppl": math.nan, "loss": math.nan, "tokens_sha": None}
    if not m["diverged"]:  # a diverged model is not evaluated: its metrics are not scores
        for split in ("validation", "test"):
            for k, v in id_metrics(eval_model, tok, task, sp[split], L, cfg.eval_batch_size).items():
                m[f"{'val' if split == 'validation' else 'test'}_{k}"] = v
        o = ood_perplexity(eval_model, ood_blocks(tok, cfg), cfg.eval_batch_size)
        bad = sorted(k for k in ("val_id_ppl", "test_id_ppl") if k in m and not math.isfinite(m[k]))
        if not math.isfinite(o["ppl"]):
            bad.append("ood_ppl_after")
        if bad:
            m.update(diverged=True, diverged_step=m["steps"],
                     diverged_reason=f"non-finite evaluation ({', '.join(bad)}) after step {m['steps']}")
    if m["diverged"]:  # every score of the fine-tuned model becomes NaN; the base stays
        for k in base:
            if k.startswith(("val_", "test_")):
                m[k] = math.nan
        o = {"ppl": math.nan, "loss": math.nan, "tokens_sha": None}
    m.update(ood_ppl_before=base["ood_ppl"], ood_ppl_after=o["ppl"], ood_delta=o["ppl"] - base["ood_ppl"],
             ood_loss_before=base["ood_loss"], ood_loss_after=o["loss"],
             ood_tokens_sha_before=base["ood_tokens_sha"], ood_tokens_sha_after=o["tokens_sha"],
             base_val_id_ppl=base["val_id_ppl"], base_test_id_ppl=base["test_id_ppl"],
             base_test_accuracy=base["test_accuracy"], weights_dir=str(out_dir) if out_dir and not m["diverged"] else None)
    del model, trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return m


def _run_and_store(job) -> dict:
    """One unit in a worker (or in-process): train, evaluate, write its record atomically."""
    u, series, cfg, names = job
    t0 = time.time()
    m = run_unit(u, series, cfg)
    m["unit_wall_s"] = time.time() - t0
    if _is_main():
        results.Store(cfg.experiment, cfg.profile).write(u, m, config=cfg, data_names=names)
    return m


def sweep(series: models.CheckpointSeries, cfg: Config, progress: bool = False, max_units: int | None = None):
    """Run every unit not yet in the store (resume), return :func:`frame` of this config's units.

    ``max_units`` stops after that many *new* units (for budgets and tests). ``cfg.workers`` > 1
    runs independent units in that many processes of one thread each (``coft_utils.foundation.parallel``);
    each unit writes its own record, so a killed run resumes. Under a distributed launch every
    rank trains each unit together and only rank 0 writes records.
    """
    from ..foundation import parallel
    store = results.Store(cfg.experiment, cfg.profile)
    us = units(series, cfg)
    todo = [u for u in us if not store.done(u)]
    if max_units is not None:
        todo = todo[:max_units]
    names = _data_names(cfg)
    workers = 1 if _is_distributed() else min(cfg.workers, max(1, len(todo)))
    jobs = [(u, series, cfg, names) for u in todo]
    out = parallel.map_units(_run_and_store, jobs, workers=workers, threads=cfg.threads or None,
                             label=lambda j: f"{j[0]['checkpoint']} {j[0]['task']} lr={j[0]['lr']:g} seed={j[0]['seed']}")
    if progress:
        for i, (u, m) in enumerate(zip(todo, out)):
            print(f"[{i + 1}/{len(todo)}] {u['checkpoint']} {u['task']} lr={u['lr']:g} seed={u['seed']}: "
                  f"val id_ppl {m['val_id_ppl']:.3f}, OOD {m['ood_ppl_before']:.2f} -> {m['ood_ppl_after']:.2f} "
                  f"({m['unit_wall_s']:.1f} s)", flush=True)
    return frame(series, cfg)


def frame(series: models.CheckpointSeries, cfg: Config):
    """One row per finished unit of this config: unit fields + metrics (missing units left out)."""
    import pandas as pd
    store = results.Store(cfg.experiment, cfg.profile)
    rows = []
    for u in units(series, cfg):
        r = store.get(u)
        if r is not None:
            rows.append({**r["unit"], **r["metrics"]})
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["task", "lr", "tokens", "seed"]).reset_index(drop=True)
    return df


_MEAN_COLS = ("test_id_ppl", "test_accuracy", "val_id_ppl", "val_accuracy", "ood_ppl_after", "ood_delta",
              "ood_loss_after", "train_loss_first", "train_loss_last")
_FIRST_COLS = ("tokens", "ood_ppl_before", "ood_loss_before", "base_test_id_ppl", "base_val_id_ppl",
               "base_test_accuracy")


def mean_frame(df):
    """One row per (task, lr, checkpoint): the mean over seeds of every metric, the half-width of
    its 95 % CI (``<metric>_ci``) and ``n_seeds``. A non-finite seed makes the mean non-finite
    (shown, never dropped)."""
    import pandas as pd
    from scipy import stats
    rows = []
    for (task, lr, ck), d in df.groupby(["task", "lr", "checkpoint"], sort=False):
        r = {"task": task, "lr": lr, "checkpoint": ck, "n_seeds": len(d), "n_diverged": _n_diverged(d)}
        for c in _FIRST_COLS:
            if c in d:
                r[c] = d[c].iloc[0]
        q = float(stats.t.ppf(0.975, len(d) - 1)) if len(d) > 1 else float("nan")
        for c in _MEAN_COLS:
            if c in d:
                x = d[c].astype(float).to_numpy()
                r[c] = float(x.mean())
                r[c + "_ci"] = q * float(x.std(ddof=1)) / math.sqrt(len(x)) if len(x) > 1 else float("nan")
        rows.append(r)
    out = pd.DataFrame(rows)
    if "ood_loss_after" in out:
        out["ood_dloss"] = out.ood_loss_after - out.ood_loss_before
    return out.sort_values(["task", "lr", "tokens"]).reset_index(drop=True) if len(out) else out


def _n_diverged(d) -> int:
    return int(d["diverged"].fillna(False).astype(bool).sum()) if "diverged" in d else 0


def diverged_note(df, task: str, lr: float | None = None) -> str:
    """Which runs of ``task`` (at ``lr``, or at any LR) diverged, where and why; '' if none."""
    if "diverged" not in df:
        return ""
    t = df[(df.task == task) & ((df.lr == lr) if lr is not None else True)]
    d = t[t.diverged.fillna(False).astype(bool)].sort_values(["lr", "tokens", "seed"])
    if not len(d):
        return ""

    def some(xs, n=4):
        xs = list(dict.fromkeys(xs))
        return ", ".join(map(str, xs[:n])) + (f" and {len(xs) - n} more" if len(xs) > n else "")
    lrs = "" if lr is not None else f" at lr {some(f'{x:g}' for x in d.lr)}"
    return (f"{len(d)} of {len(t)} runs diverged{lrs} (checkpoints {some(d.checkpoint)}; "
            f"{some(d.diverged_reason, 2)})")


def replicates(df, task: str, lr: float, value: str):
    """(tokens, checkpoint labels, values ``(seeds × checkpoints)``) of one (task, lr); ``value``
    may be ``ood_dloss`` (OOD loss after − before: forgetting in log-perplexity)."""
    d = df[(df.task == task) & (df.lr == lr)].copy()
    if value == "ood_dloss":
        d["ood_dloss"] = d.ood_loss_after - d.ood_loss_before
    ck = d.drop_duplicates("checkpoint").sort_values("tokens")
    piv = d.pivot_table(index="seed", columns="checkpoint", values=value, aggfunc="first", dropna=False)
    return ck.tokens.to_numpy(float), ck.checkpoint.tolist(), piv[ck.checkpoint.tolist()].to_numpy(float)


# --------------------------------------------------------------------------- analysis
def _spearman(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or np.std(y) == 0:
        return float("nan")
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def inflection_table(df):
    """Per (task, lr), descriptive, on the seed means: is Δ OOD monotone in tokens, where is the
    minimum of OOD-after. (The claims are decided by the tests of :func:`fixed_lr_summary`.)"""
    import pandas as pd
    df = mean_frame(df)
    rows = []
    for (task, lr), d in df.groupby(["task", "lr"]):
        d = d.sort_values("tokens")
        delta, after = d.ood_delta.to_numpy(), d.ood_ppl_after.to_numpy()
        dloss = (d.ood_loss_after - d.ood_loss_before).to_numpy() if "ood_loss_after" in d else delta * np.nan
        i = int(np.nanargmin(after)) if np.isfinite(after).any() else 0
        rows.append({"task": task, "lr": lr, "n_checkpoints": len(d), "n_seeds": int(d.n_seeds.min()),
                     "delta_first": delta[0], "delta_last": delta[-1],
                     "delta_monotone": bool(np.all(np.diff(delta) >= 0)),
                     "delta_increasing_steps": f"{int(np.sum(np.diff(delta) > 0))}/{len(delta) - 1}",
                     "delta_spearman": _spearman(d.tokens, delta),
                     "dloss_first": dloss[0], "dloss_last": dloss[-1],
                     "dloss_monotone": bool(np.all(np.diff(dloss) >= 0)),
                     "dloss_spearman": _spearman(d.tokens, dloss),
                     "argmin_after": d.checkpoint.iloc[i], "argmin_tokens": d.tokens.iloc[i],
                     "interior_min": bool(0 < i < len(d) - 1),
                     "after_first": after[0], "after_min": after[i], "after_last": after[-1],
                     "rise_after_min_pct": 100.0 * (after[-1] / after[i] - 1.0)})
    return pd.DataFrame(rows)


def best_lr(df, metric: str = "id_ppl"):
    """Per (task, checkpoint): the LR with the best *seed-mean* validation ``metric``, its test
    metrics and OOD (seed means, with CIs), how close the call was, and how often each LR would
    win if chosen by each seed alone (``wins``)."""
    import pandas as pd
    col = f"val_{metric}"
    better = (lambda x: x.idxmax()) if metric == "accuracy" else (lambda x: x.idxmin())
    mf = mean_frame(df)
    rows = []
    for (task, ck), d in mf.groupby(["task", "checkpoint"]):
        d = d[np.isfinite(d[col].astype(float))]
        if not len(d):
            continue
        r = d.loc[better(d[col])].copy()
        vals = np.sort(d[col].astype(float).to_numpy())
        if metric == "accuracy":
            vals = vals[::-1]
        r["select_margin_pct"] = (100.0 * abs(vals[1] - vals[0]) / abs(vals[0])) if len(vals) > 1 and vals[0] else float("nan")
        raw = df[(df.task == task) & (df.checkpoint == ck)]
        wins: dict = {}
        for _, g in raw.groupby("seed"):
            g = g[np.isfinite(g[col].astype(float))]
            if len(g):
                lr = float(g.loc[better(g[col]), "lr"])
                wins[lr] = wins.get(lr, 0) + 1
        r["wins"] = ", ".join(f"{lr:g}: {n}" for lr, n in sorted(wins.items()))
        r["wins_chosen"] = f"{wins.get(float(r['lr']), 0)}/{sum(wins.values())}"
        rows.append(r)
    if not rows:  # every LR diverged at every checkpoint
        return pd.DataFrame(columns=[*mf.columns, "select_margin_pct", "wins", "wins_chosen"])
    out = pd.DataFrame(rows).sort_values(["task", "tokens"]).reset_index(drop=True)
    return out


def tuned_replicates(df, best, task: str, value: str = "ood_ppl_after"):
    """(tokens, labels, values ``(seeds × checkpoints)``) at the LR chosen per checkpoint."""
    b = best[best.task == task].sort_values("tokens")
    cols = []
    for ck, lr in zip(b.checkpoint, b.lr):
        d = df[(df.task == task) & (df.checkpoint == ck) & (df.lr == lr)].sort_values("seed")
        cols.append(d[value].astype(float).to_numpy())
    n = min(len(c) for c in cols) if cols else 0
    return b.tokens.to_numpy(float), b.checkpoint.tolist(), np.stack([c[:n] for c in cols], axis=1) if cols else np.zeros((0, 0))


def lr_regime(best, grid) -> dict:
    """Per task: how the optimal LR moves with tokens ('constant' / 'slowly decreasing' /
    'quickly decreasing' / 'increasing' / 'non-monotone').

    Our operationalisation of the paper's regimes: steps down the (log-spaced) grid from the first
    to the last checkpoint, against the doublings of pre-training tokens over the same range:
    none -> constant; at most one grid step per two doublings -> slowly; more -> quickly.
    A path that goes both up and down is 'non-monotone'; one that only rises is 'increasing'.
    """
    grid = sorted(grid)
    out = {}
    for task, d in best.groupby("task"):
        d = d.sort_values("tokens")
        pos = [grid.index(lr) for lr in d.lr]
        doublings = math.log2(d.tokens.iloc[-1] / d.tokens.iloc[0]) if d.tokens.iloc[0] > 0 and len(d) > 1 else 0
        down = pos[0] - pos[-1]
        mono = all(b <= a for a, b in zip(pos, pos[1:]))
        rising = all(b >= a for a, b in zip(pos, pos[1:]))
        if len(set(pos)) == 1:
            regime = "constant"
        elif not (mono or rising):
            regime = "non-monotone"
        elif rising:
            regime = "increasing"
        else:
            regime = "slowly decreasing" if down / max(doublings, 1.0) <= 0.5 else "quickly decreasing"
        out[task] = {"regime": regime, "monotone": mono or rising, "lr_first": d.lr.iloc[0], "lr_last": d.lr.iloc[-1],
                     "grid_steps_down": down, "doublings": doublings,
                     "at_grid_edge": bool(min(pos) == 0 or max(pos) == len(grid) - 1),
                     "path": ", ".join(f"{c}: {lr:g}" for c, lr in zip(d.checkpoint, d.lr))}
    return out


def pareto_front(x, y) -> np.ndarray:
    """Indices of the points not dominated when both x and y are to be minimized."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = []
    for i in range(len(x)):
        dom = np.any((x <= x[i]) & (y <= y[i]) & ((x < x[i]) | (y < y[i])))
        if not dom and np.isfinite(x[i]) and np.isfinite(y[i]):
            keep.append(i)
    return np.array(sorted(keep, key=lambda i: x[i]), dtype=int)


def _early_late(d0, early_frac: float):
    cks = d0.drop_duplicates("checkpoint").sort_values("tokens").checkpoint.tolist()
    n = max(1, int(round(early_frac * len(cks))))
    return cks[:n], cks[-n:]


def front_comparison(df, task: str, early_frac: float = 0.34) -> dict:
    """How the Pareto fronts (test ID ppl, OOD ppl after; both minimized) of early and late
    checkpoints compare: the share of each front's points dominated by a point of the other
    (seed means)."""
    d0 = mean_frame(df)
    d0 = d0[d0.task == task]
    early, late = _early_late(d0, early_frac)

    def front(labels):
        d = d0[d0.checkpoint.isin(labels)]
        f = pareto_front(d.test_id_ppl, d.ood_ppl_after)
        return np.c_[d.test_id_ppl.to_numpy()[f], d.ood_ppl_after.to_numpy()[f]]

    fe, fl = front(early), front(late)

    def share(a, b):  # share of a's points dominated by some point of b
        if not len(a) or not len(b):
            return float("nan")
        dom = [np.any((b[:, 0] <= p[0]) & (b[:, 1] <= p[1]) & ((b[:, 0] < p[0]) | (b[:, 1] < p[1]))) for p in a]
        return float(np.mean(dom))

    e_by_l, l_by_e = share(fe, fl), share(fl, fe)
    if e_by_l == 1.0 and l_by_e == 0.0:
        rel = "the late checkpoints' front dominates the early one (better ID and OOD trade-offs at every point)"
    elif l_by_e == 1.0 and e_by_l == 0.0:
        rel = "the early checkpoints' front dominates the late one (late checkpoints trade worse, as the paper argues)"
    else:
        rel = (f"the fronts cross ({100 * e_by_l:.0f} % of the early front is dominated by late points, "
               f"{100 * l_by_e:.0f} % of the late front by early points)")
    return {"early": early, "late": late, "early_dominated": e_by_l, "late_dominated": l_by_e, "text": rel}


# --------------------------------------------------------------------------- figures
def _band(ax, d, col: str, color):
    """The 95 % CI band over seeds of column ``col`` (nothing with one seed)."""
    ci = d.get(col + "_ci")
    if ci is not None and np.isfinite(ci.to_numpy(float)).any():
        y = d[col].to_numpy(float)
        c = ci.to_numpy(float)
        ax.fill_between(d.tokens, y - c, y + c, color=color, alpha=0.18, lw=0)


def _mark_diverged(ax, d, color) -> None:
    """× at the top of the axes at each checkpoint where some seed of this line diverged (those
    points have no score, so the line has a gap there)."""
    if "n_diverged" not in d:
        return
    dv = d[d.n_diverged > 0]
    if len(dv):
        first = not getattr(ax, "_coft_diverged", False)
        ax.plot(dv.tokens, [0.95] * len(dv), "x", color=color, ms=10, mew=2.5, clip_on=False,
                transform=ax.get_xaxis_transform(), label="diverged (not scored)" if first else None)
        ax._coft_diverged = True


def _lr_colors(lrs):
    import matplotlib.pyplot as plt
    lrs = sorted(lrs)
    cmap = plt.get_cmap("viridis")
    return {lr: cmap(i / max(1, len(lrs) - 1) * 0.9) for i, lr in enumerate(lrs)}


def _logx(ax, df):
    """Log-x axis of pre-training tokens, one tick per checkpoint, labelled with its label."""
    ax.set_xlabel("pre-training tokens")
    ck = df.drop_duplicates("tokens").sort_values("tokens")
    labels = ck.checkpoint.tolist() if "checkpoint" in ck else [_fmt_tokens(t) for t in ck.tokens]
    plots.token_axis(ax, ck.tokens, labels)


def _fmt_tokens(t: float) -> str:
    for div, s in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if t >= div:
            v = t / div
            return f"{v:.3g}{s}"
    return f"{t:g}"


def plot_id(df, task: str, metric: str = "test_id_ppl", ax=None):
    """ID metric after fine-tuning against tokens, one line per LR (mean over seeds, band: 95 %
    CI) and the base model (dashed)."""
    import matplotlib.pyplot as plt
    ax = ax or plt.gca()
    d0 = mean_frame(df)
    d0 = d0[d0.task == task]
    col = _lr_colors(d0.lr.unique())
    for lr, d in d0.groupby("lr"):
        d = d.sort_values("tokens")
        ax.plot(d.tokens, d[metric], "o-", color=col[lr], label=f"lr={lr:g}")
        _band(ax, d, metric, col[lr])
        _mark_diverged(ax, d, col[lr])
    if metric in ("test_id_ppl", "test_accuracy"):
        base = d0.drop_duplicates("checkpoint").sort_values("tokens")
        bcol = "base_" + metric
        if bcol in base:
            ax.plot(base.tokens, base[bcol], "k--", lw=1, label="before fine-tuning")
    _logx(ax, d0)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{task}: ID after fine-tuning")
    ax.legend(fontsize=8)
    return ax


def plot_ood(df, task: str, what: str = "delta", ax=None, inflections: bool = True):
    """OOD change (``delta``: ppl after − before; ``dloss``: loss after − before) or OOD perplexity
    after fine-tuning (``after``) vs tokens, one line per LR.

    Stars mark each LR's minimum of OOD-after (the inflection point where interior)."""
    import matplotlib.pyplot as plt
    ax = ax or plt.gca()
    if what not in ("delta", "dloss", "after"):
        raise ValueError(f"what must be 'delta', 'dloss' or 'after', got {what!r}")
    raw = df[df.task == task].assign(ood_dloss=lambda d: d.ood_loss_after - d.ood_loss_before)
    d0 = mean_frame(raw)
    d0 = d0[d0.task == task]
    col = _lr_colors(d0.lr.unique())
    y = {"delta": "ood_delta", "dloss": "ood_dloss", "after": "ood_ppl_after"}[what]
    if what == "dloss":  # CI of the per-seed log-ppl change (the base is the same for every seed)
        d0["ood_dloss_ci"] = d0["ood_loss_after_ci"]
    for lr, d in d0.groupby("lr"):
        d = d.sort_values("tokens")
        ax.plot(d.tokens, d[y], "o-", color=col[lr], label=f"lr={lr:g}")
        _band(ax, d, y, col[lr])
        _mark_diverged(ax, d, col[lr])
        if inflections and what == "after" and np.isfinite(d.ood_ppl_after.to_numpy()).any():
            i = int(np.nanargmin(d.ood_ppl_after.to_numpy()))
            ax.plot(d.tokens.iloc[i], d[y].iloc[i], "*", ms=15, color=col[lr], mec="k")
    if what == "after":
        base = d0.drop_duplicates("checkpoint").sort_values("tokens")
        ax.plot(base.tokens, base.ood_ppl_before, "k--", lw=1, label="before fine-tuning")
        plots.log_y(ax)
    _logx(ax, d0)
    ax.set_ylabel({"delta": "OOD ppl after − before", "dloss": "OOD loss after − before (nats)",
                   "after": "OOD perplexity after fine-tuning"}[what])
    ax.set_title(f"{task}: pre-training-domain perplexity")
    ax.legend(fontsize=8)
    return ax


def plot_best(best, task: str, axes=None):
    """Three panels: best test ID (chosen on validation), OOD at that LR, the optimal LR; vs tokens."""
    import matplotlib.pyplot as plt
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(15, 4))
    d = best[best.task == task].sort_values("tokens")
    if not len(d):  # every learning rate diverged somewhere
        for ax in axes:
            ax.text(0.5, 0.5, "no learning rate without a diverged run:\nnothing to tune", ha="center",
                    va="center", transform=ax.transAxes)
            ax.set_axis_off()
        return axes
    axes[0].plot(d.tokens, d.test_id_ppl, "o-", label="tuned LR (test; band: 95 % CI over seeds)")
    _band(axes[0], d, "test_id_ppl", "C0")
    axes[0].plot(d.tokens, d.base_test_id_ppl, "k--", lw=1, label="before fine-tuning")
    axes[0].set_ylabel("test ID perplexity (lower is better)")
    axes[0].set_title(f"{task}: best ID after fine-tuning")
    axes[1].plot(d.tokens, d.ood_ppl_after, "o-", color="C3", label="after, at the tuned LR")
    _band(axes[1], d, "ood_ppl_after", "C3")
    axes[1].plot(d.tokens, d.ood_ppl_before, "k--", lw=1, label="before fine-tuning")
    i = int(np.nanargmin(d.ood_ppl_after.to_numpy())) if np.isfinite(d.ood_ppl_after.to_numpy()).any() else 0
    axes[1].plot(d.tokens.iloc[i], d.ood_ppl_after.iloc[i], "*", ms=15, color="C3", mec="k")
    axes[1].set_ylabel("OOD perplexity")
    axes[1].set_title("OOD at the tuned LR")
    axes[2].plot(d.tokens, d.lr, "o-", color="C2")
    plots.log_y(axes[2])
    axes[2].set_ylabel("optimal learning rate")
    axes[2].set_title("optimal LR (chosen on validation)")
    for ax in axes:
        _logx(ax, d)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    return axes


def plot_pareto(df, task: str, early_frac: float = 0.34, ax=None):
    """Test ID perplexity vs OOD perplexity after fine-tuning, every LR; early vs late checkpoints."""
    import matplotlib.pyplot as plt
    ax = ax or plt.gca()
    d0 = mean_frame(df)
    d0 = d0[d0.task == task]
    early, late = _early_late(d0, early_frac)
    groups = {"early": early, "late": late}
    for (name, labels), c in zip(groups.items(), ("C0", "C3")):
        d = d0[d0.checkpoint.isin(labels)]
        ax.scatter(d.test_id_ppl, d.ood_ppl_after, color=c, alpha=0.5, s=18,
                   label=f"{name} ({', '.join(labels)})")
        f = pareto_front(d.test_id_ppl, d.ood_ppl_after)
        if len(f):
            ax.plot(d.test_id_ppl.to_numpy()[f], d.ood_ppl_after.to_numpy()[f], "-", color=c, lw=2)
    from matplotlib.ticker import NullFormatter
    ax.set_xlabel("test ID perplexity (lower is better)")
    ax.set_ylabel("OOD perplexity after fine-tuning")
    plots.log_x(ax)
    plots.log_y(ax)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(f"{task}: ID–OOD trade-off (lines: Pareto fronts)")
    ax.legend(fontsize=8)
    return ax


# --------------------------------------------------------------------------- verdicts
def _lrs_text(lrs) -> str:
    return ", ".join(f"{x:g}" for x in lrs) if len(lrs) else "none"


def fixed_lr_verdict(df, alpha: float = verdicts.ALPHA) -> dict:
    """Per task, from the per-seed records: forgetting (OOD loss after − before) rising with
    tokens and a U-shape of the OOD perplexity after fine-tuning, per LR at α / (number of LRs);
    and whether the minimum comes earlier for larger LRs."""
    out = {}
    for task, t in df.groupby("task"):
        lrs = sorted(t.lr.unique())
        a = verdicts.alpha_for(len(lrs), alpha)
        grow, ush, curves = {}, {}, {}
        for lr in lrs:
            tok, labels, D = replicates(df, task, lr, "ood_dloss")
            _, _, P = replicates(df, task, lr, "ood_ppl_after")
            note = diverged_note(df, task, lr)
            grow[lr] = verdicts.diverged(verdicts.rises(tok, D, alpha=a, unit="nats per doubling of tokens"), note)
            ush[lr] = verdicts.diverged(verdicts.u_shape(tok, P, alpha=a), note)
            curves[lr] = P
        out[task] = {"labels": labels, "grow": grow, "u": ush,
                     "diverged": diverged_note(df, task),
                     "rows": {"forgetting_grows": verdicts.combine(grow, over="learning rates"),
                              "ushape_fixed_lr": verdicts.combine(ush, over="learning rates"),
                              "earlier_larger_lr": _shift_without_diverged(df, task, tok, curves)}}
    return out


def _shift_without_diverged(df, task, tok, curves) -> verdicts.Verdict:
    """Kendall's τ of the minimum's position against LR, over the LRs where no seed diverged."""
    dropped = [lr for lr in curves if diverged_note(df, task, lr)]
    kept = {lr: P for lr, P in curves.items() if lr not in dropped}
    if not dropped:
        return verdicts.minimum_shift(tok, curves, "earlier", what="learning rate")
    if len(kept) < 2:
        return verdicts.diverged(verdicts.minimum_shift(tok, curves, "earlier", what="learning rate"),
                                 diverged_note(df, task))
    v = verdicts.minimum_shift(tok, kept, "earlier", what="learning rate")
    v.reason = (v.reason + "; " if v.reason else "") + f"LR(s) {_lrs_text(sorted(dropped))} left out: diverged"
    return v


def _minimum_text(u, labels) -> str:
    k = u.detail.get("argmin")
    return labels[k] if k is not None else "—"


def fixed_lr_summary(df, cfg, series) -> dict:
    """The fixed-LR chapter's verdict from its own records: per-task text, the claim rows
    (forgetting_grows, ushape_fixed_lr, earlier_larger_lr) as Verdicts, and what was measured."""
    v = fixed_lr_verdict(df)
    texts, rows = [], {}
    n_seeds = int(df.groupby(["task", "lr", "checkpoint"]).size().min()) if len(df) else 0
    for task, x in v.items():
        g, u, e = x["rows"]["forgetting_grows"], x["rows"]["ushape_fixed_lr"], x["rows"]["earlier_larger_lr"]
        per_lr = "; ".join(f"lr={lr:g}: forgetting {x['grow'][lr].label} ({x['grow'][lr].stat_text()}), "
                           f"minimum at {_minimum_text(x['u'][lr], x['labels'])}, U-shape {x['u'][lr].label}"
                           for lr in sorted(x["grow"]))
        if x["diverged"]:
            texts.append(f"**Diverged on {task}:** {x['diverged']}. Those runs are not scored: they are gaps "
                         "marked × in the figures, and every test that needs them is inconclusive.")
        texts.append(f"On {task} ({n_seeds} seeds per point): forgetting rising with tokens is **{g.label}** "
                     f"({g.reason}); a U-shape of the OOD perplexity after fine-tuning is **{u.label}** ({u.reason}); "
                     f"the minimum coming earlier for larger learning rates is **{e.label}** ({e.stat_text()}). "
                     f"Per learning rate: {per_lr}.")
        where = f"{task} on {series.name}, {n_seeds} seeds, LRs {_lrs_text(sorted(x['grow']))}"
        rows.setdefault("forgetting_grows", (g, f"{where}: OOD loss after − before rising with tokens, {g.reason}"))
        rows.setdefault("ushape_fixed_lr", (u, f"{where}: interior minimum of OOD perplexity after fine-tuning, {u.reason}"))
        rows.setdefault("earlier_larger_lr", (e, f"{where}: minima at " + ", ".join(
            f"{lr:g}: {_minimum_text(x['u'][lr], x['labels'])}" for lr in sorted(x["u"]))))
    first = next(iter(v.values())) if v else None
    headline = (f"Forgetting rising with tokens: {first['rows']['forgetting_grows'].label}; U-shape after "
                f"fine-tuning: {first['rows']['ushape_fixed_lr'].label}; earlier for larger LRs: "
                f"{first['rows']['earlier_larger_lr'].label}." if first else "no units")
    return {"per_task": v, "text": " ".join(texts), "overall": headline, "claims": rows,
            "label": first["rows"]["ushape_fixed_lr"].label if first else "inconclusive",
            "numbers": {t: {k: r.to_dict() for k, r in x["rows"].items()} for t, x in v.items()}}


def sweep_verdict(df, best, grid, early_frac: float = 0.34, alpha: float = verdicts.ALPHA) -> dict:
    """Per task: the LR regime, and the two claim rows: is the OOD perplexity after fine-tuning
    at the tuned LR still U-shaped (``lr_tuning_remains``), and does its minimum come later than
    at a fixed LR, the one tuned at the first checkpoint (``lr_tuning_later``)?"""
    reg = lr_regime(best, grid)
    out = {}
    for task in sorted(df.task.unique()):
        all_cks = df[df.task == task].drop_duplicates("checkpoint").sort_values("tokens").checkpoint.tolist()
        d = best[best.task == task].sort_values("tokens")
        note = diverged_note(df, task)
        lost = [c for c in all_cks if c not in set(d.checkpoint)]
        if task not in reg or lost:
            why = (f"no learning rate without a diverged seed at {', '.join(lost)}"
                   + (f" ({note})" if note else ""))
            v = verdicts.diverged(verdicts.Verdict(claim="u_shape", label="inconclusive"), why)
            out[task] = {"text": f"On {task}, the tuned-LR tests are **inconclusive**: {why}.", "regime": "—",
                         "remains": v, "later": _dc.replace(v, claim="minimum_shift"), "fixed_lr": math.nan,
                         "labels": all_cks, "fronts": {"text": "not compared (diverged runs)"}, "path": "—",
                         "grid_steps_down": 0, "doublings": 0.0, "at_grid_edge": False}
            continue
        r = reg[task]
        tok, labels, P = tuned_replicates(df, best, task)
        remains = verdicts.u_shape(tok, P, alpha=alpha)
        lr0 = float(d.lr.iloc[0])
        _, _, P0 = replicates(df, task, lr0, "ood_ppl_after")
        later = verdicts.diverged(verdicts.minimum_shift(tok, {0: P0, 1: P}, direction="later",
                                                         what="tuning (fixed → tuned)"), diverged_note(df, task, lr0))
        txt = ((f"Diverged runs (not scored, × in the figures; an LR with a diverged seed is no candidate for "
                f"the tuned LR): {note}. ") if note else "") + (f"On {task}, the learning rate chosen on the seed-mean validation metric moves {r['path']} — "
               f"'{r['regime']}' by our rule ({r['grid_steps_down']} grid steps down over "
               f"{r['doublings']:.0f} doublings of tokens"
               + ("; the optimum touches the edge of the grid at some checkpoint, so the grid may be too narrow"
                  if r["at_grid_edge"] else "") + "). Seeds choosing the chosen LR: "
               + ", ".join(f"{c}: {w}" for c, w in zip(d.checkpoint, d.wins_chosen)) + ". "
               f"At the tuned learning rate the U-shape of the OOD perplexity after fine-tuning is **{remains.label}** "
               f"({remains.stat_text()}; minimum at {_minimum_text(remains, labels)}). Against the fixed LR {lr0:g} "
               f"(the one tuned at the first checkpoint, minimum at "
               f"{labels[int(np.argmin(P0.mean(0)))] if np.isfinite(P0).all() else '—'}), tuning moving the minimum "
               f"later is **{later.label}** ({later.stat_text()}).")
        k = remains.detail.get("argmin")
        lrs_path = d.lr.to_list()
        if remains.label == "observed" and k is not None and 0 < k < len(lrs_path) - 1 and \
                len({lrs_path[k - 1], lrs_path[k], lrs_path[k + 1]}) > 1:
            txt += (f" Read this with care: the minimum sits at {labels[k]}, where the chosen learning rate changes "
                    f"({lrs_path[k - 1]:g} → {lrs_path[k]:g} → {lrs_path[k + 1]:g}), so part of the U comes from "
                    "the switch of learning rate between checkpoints, not from more pre-training at one rate.")
        j = int(np.nanargmin(d.select_margin_pct.to_numpy())) if np.isfinite(d.select_margin_pct.to_numpy()).any() else 0
        txt += (f" The closest call of the selection: at {d.checkpoint.iloc[j]} the runner-up learning rate is "
                f"{d.select_margin_pct.iloc[j]:.1f} % worse on validation.")
        fc = front_comparison(df, task, early_frac)
        txt += f" ID–OOD trade-off over all learning rates: {fc['text']}."
        out[task] = {"text": txt, "regime": r["regime"], "remains": remains, "later": later, "fixed_lr": lr0,
                     "labels": labels, "fronts": fc, **r}
    return out


def sweep_summary(df, best, cfg, series) -> dict:
    """The sweep chapter's verdict from its own records: per-task text and the claim rows
    ``lr_tuning_later`` and ``lr_tuning_remains`` (Verdicts) with what was measured."""
    v = sweep_verdict(df, best, cfg.lrs, cfg.early_frac)
    rows = {}
    for task, x in v.items():
        where = f"{task} on {series.name}, grid {_lrs_text(cfg.lrs)}, {x['remains'].n_replicates} seeds"
        rows.setdefault("lr_tuning_later", (x["later"], f"{where}: minimum of OOD-after at the tuned LR vs the fixed "
                                            f"LR {x['fixed_lr']:g}; optimal LR {x['regime']}"))
        rows.setdefault("lr_tuning_remains", (x["remains"], f"{where}: interior minimum of OOD-after at the tuned LR "
                                              f"(at {_minimum_text(x['remains'], x['labels'])}); LR path {x['path']}"))
    first = next(iter(v.values())) if v else None
    headline = (f"At the tuned learning rate the inflection point remains: {first['remains'].label}; tuning moves "
                f"it later: {first['later'].label}." if first else "no units")
    overall = headline + " Trade-off: " + "; ".join(f"{t}: {x['fronts']['text']}" for t, x in v.items()) + "."
    return {"per_task": v, "text": " ".join(x["text"] for x in v.values()), "overall": overall, "claims": rows,
            "headline": headline, "label": first["remains"].label if first else "inconclusive",
            "numbers": {t: {"remains": x["remains"].to_dict(), "later": x["later"].to_dict(), "regime": x["regime"],
                            "path": x["path"]} for t, x in v.items()}}


# --------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    """``python -m coft_utils.chapters.finetune --chapter 04_lr_sweep --profile paper [-o '{"lrs": [...]}']``.

    Runs the chapter's sweep into the results store (resumable); use it under
    ``accelerate launch --config_file coft_utils/configs/accelerate_{ddp,fsdp}.yaml -m coft_utils.chapters.finetune``
    at gpu/paper scale, then execute the notebook (which finds every record done).
    """
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--chapter", default="03_fixed_lr_finetuning", choices=CHAPTERS)
    ap.add_argument("--profile", default="cpu", choices=tuple(profiles.PROFILES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--overrides", default="{}", help="JSON dict of parameter overrides")
    ap.add_argument("--max-units", type=int, default=None, help="stop after this many new units")
    a = ap.parse_args(argv)
    cfg = resolve(a.chapter, a.profile, json.loads(a.overrides), seed=a.seed)
    _set_threads(cfg)
    series = load_series(cfg)
    df = sweep(series, cfg, progress=_is_main(), max_units=a.max_units)
    if _is_main():
        print(f"{len(df)} of {len(units(series, cfg))} units done "
              f"({results.Store(cfg.experiment, cfg.profile).dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
