"""Chapters 03 and 04, the experiment: fine-tuning every checkpoint of a series, unit by unit.

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
    finetune.frame(series, cfg)                       # the same rows, read from the store only

    # at gpu / paper scale, the same sweep on several GPUs (the Trainer runs under accelerate):
    #   accelerate launch --config_file coft_utils/configs/accelerate_ddp.yaml \\
    #       -m coft_utils.chapters.finetune --chapter 03_fixed_lr_finetuning --profile gpu
    #   accelerate launch --config_file coft_utils/configs/accelerate_ddp.yaml \\
    #       -m coft_utils.chapters.finetune --chapter 04_lr_sweep --profile paper      # the controlled suite
    #   accelerate launch --config_file coft_utils/configs/accelerate_fsdp_finetune.yaml \\
    #       -m coft_utils.chapters.finetune --chapter 04_lr_sweep --profile paper \\
    #       -o '{"series": "olmo-2-7b-stage1", "per_device_batch_size": 1}'             # 7B: FSDP
    # (DDP without GPUs, e.g. to check the path: torchrun --nproc_per_node 2 -m coft_utils.chapters.finetune
    #  --profile smoke; the Trainer wraps the model in DistributedDataParallel over gloo, and with the
    #  same global batch the training loss equals the single-process one.)

The rest of the chapters is split by job: the ID metrics (``encode``, ``class_metrics``,
``answer_perplexity``, ``id_metrics``) are in :mod:`coft_utils.chapters.finetune_eval`, the
training with the ``Trainer`` in :mod:`coft_utils.chapters.finetune_train`, and the analysis,
figures and verdicts (``best_lr``, ``lr_regime``, ``plot_*``, ``fixed_lr_summary``,
``sweep_summary``) in :mod:`coft_utils.chapters.finetune_report`; this module holds no analysis.

OOD: token-weighted perplexity on ``ood_blocks`` fixed blocks of the pre-training domain
(Gutenberg validation books; C4 validation at ``paper``), before and after; ``ood_delta`` =
after − before. The sha256 of the token ids is stored with both so "same tokens" is checkable.

At ``paper`` (the paper's Section 3 design): the series is chapter 00's controlled suite
(``series="suite"``, OLMo-30M on C4 for 4B..128B tokens, cosine to zero; ``suite_model``
olmo-15m / olmo-90m), the tasks and C4 come from the hub (:mod:`coft_utils.foundation.hubdata`;
nothing reads ``../shared/data``; each record's ``data_hub`` names the hub ids, revisions, commits
and files), the global batch of 64 is reached by gradient accumulation on any launch
(``per_device_batch_size``; :func:`coft_utils.chapters.finetune_train.batch_plan`), bf16 and
gradient checkpointing are on, and ``max_epochs`` caps the steps by the data size. The OLMo-1B
hub checkpoints are a separate option (``series="olmo-1b"``).

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
import time
from dataclasses import dataclass

import numpy as np

from ..foundation import models, profiles, registry, results, tasks as tasks_mod, weights
from ..foundation.profiles import param
from .finetune_eval import id_metrics
from .finetune_train import _check_lr, _is_distributed, _is_main, batch_plan, train

__all__ = ["Config", "PRESETS", "CHAPTERS", "resolve", "load_series", "ood_blocks", "blocks_sha", "ood_perplexity",
           "train_key", "base_record", "run_unit", "units", "sweep", "frame", "main"]

CHAPTERS = tuple(n for n, c in registry.CHAPTERS.items() if c.experiment == "coft_utils.chapters.finetune")  # 03, 04
OOD_SOURCES = ("gutenberg", "wikitext", "c4")
SCHEDULES = ("linear", "cosine", "constant_with_warmup", "constant")


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
    mixed_precision: str = param("no", "Trainer precision (bf16 on GPU; fp32 on a machine without CUDA, recorded "
                                 "as precision_used)", choices=("no", "bf16", "fp16"))
    per_device_batch_size: int = param(0, "examples per process per micro-batch (0: batch_size / world); the "
                                       "global batch_size is reached by gradient accumulation", min=0, max=16384)
    gradient_checkpointing: bool = param(False, "recompute activations in the backward pass (saves memory)")
    max_epochs: float = param(0.0, "cap on passes over the training examples: steps = min(steps, "
                              "max_epochs x n_train / batch_size) (0: no cap)", min=0.0, max=1e6)
    l2_start: float = param(0.0, "strength λ of an L2 penalty toward the pre-trained weights: task loss + λ/2 · "
                            "||θ − θ0||² (0: plain fine-tuning)", min=0.0, max=1e12)
    keep_weights: bool = param(False, "save every fine-tuned model under runs/ (off: nothing written)")
    experiment: str = param("finetune", "results-store experiment (shared by chapters 03 and 04)")
    threads: int = param(0, "torch CPU threads (0: leave as is)", min=0, max=256)
    seeds: int = param(1, "fine-tuning seeds per (checkpoint, task, lr): seed, seed+1, ...", min=1, max=20)
    workers: int = param(1, "worker processes for independent units (1 thread each; 1: in-process)",
                         min=1, max=64)

    def check(self):
        if self.per_device_batch_size and self.batch_size % self.per_device_batch_size:
            raise profiles.ProfileError(
                f"parameter 'batch_size' = {self.batch_size} is not a multiple of 'per_device_batch_size' = "
                f"{self.per_device_batch_size}; allowed: a per_device_batch_size that divides batch_size (the "
                "rest is gradient accumulation over processes and micro-batches)")
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
        if _data_source(self.profile) == "hub" and self.ood_source == "gutenberg":
            raise profiles.ProfileError(
                f"parameter 'ood_source' = 'gutenberg' has no hub copy, and profile {self.profile!r} reads its data "
                "from the hub; allowed here: c4, wikitext")
        if _data_source(self.profile) == "hub":
            nohub = [t for t in self.tasks if not tasks_mod.get(t).hub]
            if nohub:
                raise profiles.ProfileError(
                    f"parameter 'tasks': {', '.join(map(repr, nohub))} has no hub data set, and profile "
                    f"{self.profile!r} reads its data from the hub; allowed here: {', '.join(tasks_mod.hub_names())}")
        for name, split in (("n_train", "train"), ("n_val", "validation"), ("n_test", "test")):
            src = _data_source(self.profile)
            sizes = {t: tasks_mod.split_size(t, split, src) if src == "local" or tasks_mod.get(t).hub else None
                     for t in self.tasks}
            known = [n for n in sizes.values() if n is not None]
            if known and len(known) == len(sizes) and getattr(self, name) > max(known):
                raise profiles.ProfileError(
                    f"parameter {name!r} = {getattr(self, name)} is more than the {split} split of every task has "
                    f"({', '.join(f'{t}: {n}' for t, n in sizes.items())}); allowed: <= {max(known)}")
        from ..foundation import evaluate
        evaluate.check_blocks(self.ood_source, self.ood_blocks, self.ood_seq_len, ("ood_blocks", "ood_seq_len"))
        taken = results.reserved_stores()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.experiment) or ".." in self.experiment \
                or self.experiment in taken:
            raise profiles.ProfileError(
                f"parameter 'experiment' = {self.experiment!r} is not allowed; allowed: a folder name of letters, "
                "digits, '_', '-', '.' that starts with a letter or digit, without '..', and not another "
                f"store ({', '.join(sorted(t for t in taken if not t.endswith('_base')))})")


_FIXED = (1e-3, 1e-2, 3e-2, 1e-1)  # cpu: from well below to above the ID-optimal LR of chapter 04
# smoke: a few steps on the 6-checkpoint smoke suite; cpu: the 65,536-parameter olmo-pico wsd
# suite (annealed checkpoints off one trunk) at 0.5M..32M tokens: up to 512 tokens/param, the
# depth where fine-tuning stops gaining (the cosine suite stops at 8M; 0.25M left out to keep the
# book within 45 min); gpu: the olmo-micro suite, local data.
# paper: the paper's Section 3 design: chapter 00's controlled suite (series="suite": OLMo-30M on
# C4, 4B..128B tokens, cosine to zero; suite_model="olmo-15m" / "olmo-90m" for the other two
# sizes), every task and C4 from the hub (coft_utils.foundation.hubdata), bf16 + gradient
# checkpointing, a global batch of 64 reached by accumulation on any number of GPUs, and at most
# max_epochs passes over a task's training split. The OLMo-1B hub series is a separate, labelled
# option: -y '{series: olmo-1b}' (its tokenizer and 1B weights; per_device_batch_size 8 fits one
# 80 GB GPU with checkpointing; coft_utils/configs/accelerate_fsdp_finetune.yaml for OLMo-2-7B).
# The LR grids and max_epochs are ours: the paper's own values were not in the sources we could read.
_BASE = {
    "smoke": Config(profile="smoke", tasks=("gsm8k", "sst2"), lrs=(1e-3, 1e-2), steps=6, batch_size=8, max_len=64, n_train=64,
                    n_val=16, n_test=16, ood_blocks=8, ood_seq_len=64, eval_batch_size=16, threads=1,
                    seeds=2),
    "cpu": Config(profile="cpu", schedule="wsd", checkpoints=("0.5M", "1M", "2M", "4M", "8M", "16M", "32M"), lrs=_FIXED, steps=120, batch_size=16, max_len=96, n_train=1920,
                  n_val=200, n_test=400, ood_blocks=64, ood_seq_len=128, eval_batch_size=64, threads=1,
                  seeds=3, workers=2),
    "gpu": Config(profile="gpu", tasks=("sst2", "gsm8k"), lrs=(1e-4, 3e-4, 1e-3), steps=1000,
                  batch_size=64, max_len=256, n_train=20000, n_val=500, n_test=1000, ood_blocks=512,
                  ood_seq_len=256, eval_batch_size=128, mixed_precision="bf16", seeds=3),
    "paper": Config(profile="paper", series="suite", tasks=("sst2", "gsm8k", "humaneval"),
                    lrs=(4e-5, 1e-4, 4e-4), steps=2000, batch_size=64, max_len=1024, n_train=50000,
                    n_val=500, n_test=1000, ood_source="c4", ood_blocks=1024, ood_seq_len=1024,
                    eval_batch_size=32, mixed_precision="bf16", seeds=3, per_device_batch_size=16,
                    gradient_checkpointing=True, max_epochs=10.0),
}
_GRID = {  # chapter 04: a grid per checkpoint that contains chapter 03's LRs (shared units)
    "smoke": (1e-3, 1e-2, 3e-2),
    "cpu": (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1),
    "gpu": (3e-5, 1e-4, 3e-4, 1e-3, 3e-3),
    "paper": (1e-5, 4e-5, 1e-4, 4e-4, 1e-3),
}
import dataclasses as _dc  # noqa: E402

# cpu-deep (the reference run): the cpu design on the wsd series to 64M tokens (1M..64M: 7
# checkpoints), over chapter 00's 3 pre-training runs, 2 fine-tuning seeds each
_BASE["cpu-deep"] = _dc.replace(_BASE["cpu"], profile="cpu-deep", pretrain_runs=3, seeds=2,
                                checkpoints=("1M", "2M", "4M", "8M", "16M", "32M", "64M"))
_GRID["cpu-deep"] = _GRID["cpu"]
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


# --------------------------------------------------------------------------- OOD tokens
def ood_blocks(tok, cfg: Config):
    """The fixed held-out blocks (LongTensor [ood_blocks, ood_seq_len]) of the pre-training domain."""
    from ..foundation import evaluate
    origin = _data_source(cfg.profile)
    if cfg.ood_source == "c4":  # the first ood_blocks x ood_seq_len tokens of the stream, in order
        return evaluate.heldout_blocks(tok, "c4", cfg.ood_blocks, cfg.ood_seq_len, oversample=1, whole_documents=False,
                                       origin=origin)
    return evaluate.heldout_blocks(tok, cfg.ood_source, cfg.ood_blocks, cfg.ood_seq_len, origin=origin)


def blocks_sha(blocks) -> str:
    return hashlib.sha256(np.ascontiguousarray(blocks.cpu().numpy()).tobytes()).hexdigest()[:16]


def ood_perplexity(model, blocks, batch_size: int = 32) -> dict:
    from ..foundation import evaluate
    r = evaluate.perplexity(model, blocks, batch_size)
    return {"ppl": r["ppl"], "loss": r["loss"], "n_tokens": r["n_tokens"], "tokens_sha": blocks_sha(blocks)}


# --------------------------------------------------------------------------- units
_TRAIN_FIELDS = ("steps", "batch_size", "max_len", "warmup_ratio", "lr_schedule", "weight_decay", "beta2",
                 "grad_clip", "n_train", "n_val", "n_test", "ood_source", "ood_blocks", "ood_seq_len",
                 "mixed_precision")


# settings added later: in the key only when not at their default, so the records (and keys) of
# smoke/cpu runs made before them stay valid. per_device_batch_size is not among them: the
# global batch is what training sees (the micro-batch changes only memory and float summation order).
_TRAIN_FIELDS_LATER = {"gradient_checkpointing": False, "max_epochs": 0.0, "data_source": "local", "l2_start": 0.0}


def _data_source(profile: str) -> str:
    """'hub' where the profile reads data sets from the hub (paper), else 'local'."""
    try:
        from ..foundation import hubdata
    except ImportError:  # the hub data module is not there: every set is local
        return "local"
    return hubdata.source_for(profile)


def train_key(cfg: Config) -> str:
    d = {k: getattr(cfg, k) for k in _TRAIN_FIELDS}
    later = {"gradient_checkpointing": cfg.gradient_checkpointing, "max_epochs": cfg.max_epochs,
             "data_source": _data_source(cfg.profile), "l2_start": float(cfg.l2_start)}
    d.update({k: v for k, v in later.items() if v != _TRAIN_FIELDS_LATER[k]})
    return results.config_hash(d, 10)


def units(series: models.CheckpointSeries, cfg: Config, run: int = 0) -> list[dict]:
    """The units of one pre-training run (``run``: its index among ``cfg.pretrain_runs``): every
    (checkpoint, task, lr, seed); each run's fine-tuning seeds are its own block of ``cfg.seeds``
    (run 0 of a one-run config: ``seed * seeds + i``, as before runs existed)."""
    base = (cfg.seed * cfg.pretrain_runs + run) * cfg.seeds
    tk = weights.tokenizer_key(series)  # {} unless the series names its own tokenizer
    return [{"series": series.name, "checkpoint": c.label, "weights": models.identity(c), **tk, "tokens": c.tokens,
             "task": t, "lr": _check_lr(lr), "seed": base + i, "train_key": train_key(cfg)}
            for t in cfg.tasks for c in series for lr in cfg.lrs for i in range(cfg.seeds)]


_SPLIT_CACHE: dict = {}


def _splits(task: str, cfg: Config):
    src = _data_source(cfg.profile)
    key = (task, cfg.n_train, cfg.n_val, cfg.n_test, src)
    if key not in _SPLIT_CACHE:
        _SPLIT_CACHE[key] = tasks_mod.splits(task, cfg.n_train, cfg.n_val, cfg.n_test, source=src)
    return _SPLIT_CACHE[key]


def _data_names(cfg: Config) -> list[str]:
    """The local data sets behind a config (their checksums go into every record); none at a
    hub profile (the hub sets' provenance is in each record's ``data_hub`` metric instead)."""
    from ..foundation import evaluate
    if _data_source(cfg.profile) == "hub":
        return []
    return sorted({tasks_mod.get(t).dataset for t in cfg.tasks}) + evaluate.data_names([cfg.ood_source])


_PROV_CACHE: dict = {}


def _hub_provenance(task: str, cfg: Config) -> str | None:
    """At a hub profile: JSON of {hub set: hubdata.provenance(...)} for the task's set and the
    OOD source (hub id, revision, the 40-hex commit, the files read); None at a local profile."""
    if _data_source(cfg.profile) != "hub":
        return None
    key = (task, cfg.ood_source)
    if key not in _PROV_CACHE:
        from ..foundation import hubdata
        t = tasks_mod.get(task)
        ood = {"c4": ("c4", "validation"), "wikitext": ("wikitext", "test")}[cfg.ood_source]
        prov = {t.hub: hubdata.provenance(t.hub), ood[0]: hubdata.provenance(*ood)}
        _PROV_CACHE[key] = json.dumps(prov, sort_keys=True)
    return _PROV_CACHE[key]


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
    unit = {"series": series.name, "checkpoint": ckpt.label, "weights": models.identity(ckpt),
            **weights.tokenizer_key(series), "task": task, "train_key": train_key(cfg)}
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
    prov = _hub_provenance(task, cfg)
    if prov is not None:
        m["data_hub"] = prov
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
    prov = _hub_provenance(task, cfg)
    if prov is not None:
        m["data_hub"] = prov
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


def sweep(series: models.CheckpointSeries, cfg: Config, progress: bool = False, max_units: int | None = None,
          run: int = 0):
    """Run every unit not yet in the store (resume), return :func:`frame` of this config's units.

    ``max_units`` stops after that many *new* units (for budgets and tests). ``cfg.workers`` > 1
    runs independent units in that many processes of one thread each (``coft_utils.foundation.parallel``);
    each unit writes its own record, so a killed run resumes. Under a distributed launch every
    rank trains each unit together and only rank 0 writes records.
    """
    from ..foundation import parallel
    batch_plan(cfg.batch_size, cfg.per_device_batch_size)  # a batch this launch cannot reach: error before work
    store = results.Store(cfg.experiment, cfg.profile)
    us = units(series, cfg, run)
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
    return frame(series, cfg, run)


def run_all(cfg: Config) -> dict:
    """The chapter's whole experiment at ``cfg``, resuming: ``series``, ``df`` (:func:`frame`),
    ``wall_s``, ``n_units`` and ``reused`` (records already in the store before this run).
    Raises if a unit has no record afterwards."""
    import pandas as pd
    from ..foundation import series as series_mod
    t0 = time.time()
    runs = series_mod.runs_for_config(cfg) if cfg.pretrain_runs > 1 else [load_series(cfg)]
    us = [u for r, s in enumerate(runs) for u in units(s, cfg, r)]
    store = results.Store(cfg.experiment, cfg.profile)
    reused = sum(store.done(u) for u in us)
    df = pd.concat([sweep(s, cfg, run=r) for r, s in enumerate(runs)], ignore_index=True)
    if len(df) != len(us):
        raise RuntimeError(f"{len(us) - len(df)} of {len(us)} units have no record after the sweep")
    if len(runs) > 1:
        df = df.sort_values(["task", "lr", "tokens", "seed"]).reset_index(drop=True)
    return {"series": runs[0], "runs": runs, "df": df, "wall_s": time.time() - t0, "n_units": len(us),
            "reused": reused}


def run_info(run: dict, cfg: Config) -> str:
    """One line on what :func:`run_all` ran: series, checkpoints, grid, seeds, units, time."""
    s = run["series"]
    n_runs = len(run.get("runs", [s]))
    return (f"series {s.name!r}" + (f" and {n_runs - 1} more pre-training run(s)" if n_runs > 1 else "")
            + f": {len(s)} checkpoints ({', '.join(c.label for c in s)}); grid {list(cfg.lrs)}; "
            f"{cfg.seeds} seeds; {run['n_units']} units ({run['reused']} reused from the store, "
            f"{run['n_units'] - run['reused']} trained now); {run['wall_s']:.1f} s")


def frame(series: models.CheckpointSeries, cfg: Config, run: int = 0):
    """One row per finished unit of this config: unit fields + metrics (missing units left out)."""
    import pandas as pd
    store = results.Store(cfg.experiment, cfg.profile)
    rows = []
    for u in units(series, cfg, run):
        r = store.get(u)
        if r is not None:
            rows.append({**r["unit"], **r["metrics"], "record_id": results.unit_id(r["unit"])})
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["task", "lr", "tokens", "seed"]).reset_index(drop=True)
    return df


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
    from ..foundation import series as series_mod
    runs = series_mod.runs_for_config(cfg) if cfg.pretrain_runs > 1 else [load_series(cfg)]
    for r, series in enumerate(runs):
        df = sweep(series, cfg, progress=_is_main(), max_units=a.max_units, run=r)
        if _is_main():
            print(f"{series.name}: {len(df)} of {len(units(series, cfg, r))} units done "
                  f"({results.Store(cfg.experiment, cfg.profile).dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
