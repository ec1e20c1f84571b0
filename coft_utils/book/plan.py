"""A costed plan before a spend: every unit of work of a chapter at a profile, with its price.

Command line::

    python -m coft_utils plan 03_fixed_lr_finetuning --profile paper
    python -m coft_utils plan all --profile gpu --markdown /tmp/plan.md --json /tmp/plan.json
    python -m coft_utils plan 02_gaussian_sensitivity --profile paper -p suite_model olmo-90m

Python::

    from coft_utils.book import plan
    p = plan.chapter_plan("02_gaussian_sensitivity", "paper")     # ChapterPlan: .units, .totals()
    print(plan.text_table(p))

A *unit* is what one array job of ``python -m coft_utils submit`` runs for it (or a part of it,
named in its ``job`` column): a pre-training job of chapter 00 (a cosine budget; the warmup-
stable trunk), a checkpoint's base evaluation / SFT run per (LR, seed) / tuned evaluation in
chapter 01, a checkpoint's perturbation sweep in chapter 02, a (checkpoint, task, LR, seed)
fine-tuning run and each (checkpoint, task) base evaluation in chapters 03-04, the one CPU
simulation of chapter 05. Each row gives the tokens processed, the FLOPs, the memory per GPU,
the GPUs the unit needs and the estimated A100- and H100-hours (GPU-hours: the same whatever
the number of GPUs), from :mod:`coft_utils.foundation.costs` (its docstring states the model and
its sources). Example (``plan 02_gaussian_sensitivity --profile paper -p series olmo-1b --max-units 3``)::

    02_gaussian_sensitivity @ paper: 11 units
    unit                       job      tokens    FLOPs  mem/GPU GB  GPUs  A100-h  H100-h
    -------------------------  -------  ------  -------  ----------  ----  ------  ------
    sweep 42B                  ck 42B    9.44M  2.3e+16        24.7     1  0.0508   0.016
    sweep 168B                 ck 168B   9.44M  2.3e+16        24.7     1  0.0508   0.016
    sweep 494B                 ck 494B   9.44M  2.3e+16        24.7     1  0.0508   0.016
    ... 8 more units
    -------------------------  -------  ------  -------  ----------  ----  ------  ------
    total (11 units, 11 jobs)             104M  2.5e+17        24.7     1   0.559   0.176
    note: series 'olmo-1b': 11 checkpoints x 36 evaluations of 256 x 1024 tokens

``(!)`` marks memory that does not fit 80 GB even on 8 GPUs; ``*`` a unit shared by chapters
03 and 04 (one store: computed once). The book's page (``book/_generated/plan.md``, included in
``book/reproducing.md``) is written by :func:`write_page` at every ``python -m coft_utils build``.

Nothing is downloaded or trained: configs come from ``profiles.resolve``, the checkpoint series
from its definition (``series.SERIES``, a series file, or, for the project's suite, chapter 00's
plan at that profile via :mod:`coft_utils.chapters.pretrain_plan`), model shapes from
``costs.HUB_MODELS`` / ``models.OLMO_PRESETS``, data sizes from the data registry's counts or the
hub table below. Token counts of padded examples are upper bounds (every example counted at
the full sequence length); evaluations of benchmark choices count ``EVAL_TOKENS_PER_REQUEST``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..foundation import costs, profiles

__all__ = ["Unit", "ChapterPlan", "chapter_plan", "plan_all", "text_table", "markdown", "to_json",
           "planned_series", "write_page", "main", "HUB_DATA_SIZES", "BENCH_CHOICES"]

# Examples in hub splits that the local registry has no count for (a data set card's numbers).
HUB_DATA_SIZES = {
    "hh_rlhf": 160_800,  # Anthropic/hh-rlhf, train split (dataset card / viewer: 160,800 train, 8,552 test)
    "tulu": 326_154,  # allenai/tulu-v2-sft-mixture, train split (dataset card)
    "alpaca_seed_tasks": 175,
    "gsm8k": 7_473,  # openai/gsm8k main, train (dataset card)
}
# answer choices per benchmark item (each choice is one log-likelihood request in lm-eval)
BENCH_CHOICES = {"arc_easy": 4, "arc_challenge": 4, "piqa": 2, "hellaswag": 4, "winogrande": 2, "boolq": 2,
                 "copa": 2, "openbookqa": 4, "sciq": 4}
BENCH_ITEMS_HUB = {"sciq": 1000}  # allenai/sciq test split (dataset card: 1,000 test)
EVAL_TOKENS_PER_REQUEST = 128  # assumed context + continuation tokens of one benchmark request
DEFAULT_GPUS = ("A100", "H100")


class PlanError(ValueError):
    """A chapter or setting that cannot be planned (the message says what is missing)."""


@dataclass
class Unit:
    """One unit of work with its price (``gpus`` 0: a CPU unit)."""

    name: str
    job: str  # the submit work item it belongs to
    tokens: float
    flops: float
    mem_gb: float
    gpus: int
    fits: bool = True
    kind: str = "train"  # train | eval | cpu
    shared: bool = False  # also a unit of another chapter (computed once)

    @property
    def hours(self) -> dict[str, float]:
        return {g: costs.gpu_hours(self.flops, g) if self.gpus else 0.0 for g in DEFAULT_GPUS}

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), **{f"{g}_hours": h for g, h in self.hours.items()}}


@dataclass
class ChapterPlan:
    chapter: str
    profile: str
    units: list[Unit]
    notes: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def totals(self) -> dict:
        t = {"units": len(self.units), "jobs": len({u.job for u in self.units}),
             "tokens": sum(u.tokens for u in self.units), "flops": sum(u.flops for u in self.units),
             "mem_gb": max((u.mem_gb for u in self.units), default=0.0),
             "gpus": max((u.gpus for u in self.units), default=0),
             "fits": all(u.fits for u in self.units)}
        for g in DEFAULT_GPUS:
            t[f"{g}_hours"] = sum(u.hours[g] for u in self.units)
        return t

    def to_dict(self) -> dict:
        return {"chapter": self.chapter, "profile": self.profile, "notes": self.notes, "totals": self.totals(),
                "units": [u.to_dict() for u in self.units], "config": self.config}


# --------------------------------------------------------------------------- series without loading
def _pretrain_cfg(profile: str, schedule: str = "cosine", model: str = "", seed: int = 0):
    over = {"schedule": schedule}
    if model:
        over["model"] = model
    return profiles.resolve("00_pretraining_suite", profile, over, seed=seed)


def planned_series(cfg):
    """(series, shape of a checkpoint) for a :class:`~coft_utils.foundation.profiles.SeriesConfig`
    without training or downloading: the suite from chapter 00's plan (placeholder paths), a
    built-in hub series or a series file; restricted to ``cfg.checkpoints``."""
    from ..chapters import pretrain_plan
    from ..foundation import series as series_mod
    if cfg.series == "suite":
        pre = _pretrain_cfg(cfg.profile, cfg.schedule, getattr(cfg, "suite_model", ""))
        tps = pre.tokens_per_step()
        cks = tuple(series_mod.Checkpoint(lab, float(s * tps), path=f"<suite {pre.model} @ {cfg.profile}: {lab}>")
                    for lab, s in zip(pretrain_plan.budget_labels(pre), pretrain_plan.budget_steps(pre)))
        s = series_mod.CheckpointSeries(f"suite ({pre.model}, {pre.schedule}, {cfg.profile})", cks)
        # the suite's context: its seq_len; untied under muP (paper)
        shape = costs.olmo_shape(pre.model, pre.vocab_size, pre.seq_len, tied=not getattr(pre, "mup_base_width", 0))
        shape_of = lambda ck: shape  # noqa: E731
    else:
        s = series_mod.load(cfg.series)
        shape_of = costs.shape_of
    if cfg.checkpoints:
        s = s.select(cfg.checkpoints)
    return s, shape_of


def _unit_train(name, job, shape, tokens, seq, global_batch, precision, gc, fsdp, accum=1, extra_eval=0.0,
                micro_cap=0):
    """A training unit: GPUs by memory (data parallel, FSDP-sharded states when ``fsdp``); the
    micro-batch per GPU is at most ``micro_cap`` when the chapter sets one (the rest is accumulation)."""
    def mem(g):
        micro = max(1, math.ceil(global_batch / (g * max(1, accum))))
        if micro_cap:
            micro = min(micro, int(micro_cap))
        return costs.memory(shape, True, precision, seq, micro, shards=g if fsdp else 1, grad_checkpointing=gc)
    g, m, fits = costs.fit_gpus(mem)
    flops = costs.train_flops(shape, tokens, seq, recompute=gc) + costs.eval_flops(shape, extra_eval, seq)
    return Unit(name, job, tokens + extra_eval, flops, round(m.total_gb, 2), g, fits, "train")


def _unit_eval(name, job, shape, tokens, seq, batch, precision):
    m = costs.memory(shape, False, precision, seq, batch)
    return Unit(name, job, tokens, costs.eval_flops(shape, tokens, seq), round(m.total_gb, 2), 1,
                m.total_gb <= costs.GPU_MEMORY_GB, "eval")


def _checkpointing(cfg) -> bool:
    """Gradient (activation) checkpointing, under either field name the chapters use."""
    return bool(getattr(cfg, "gradient_checkpointing", False) or getattr(cfg, "grad_checkpointing", False))


def _precision(cfg, *names, default="fp32") -> str:
    for n in names:
        v = getattr(cfg, n, None)
        if v:
            return str(v)
    return default


def _fsdp(cfg, shape) -> bool:
    """FSDP when the chapter says so (a ``fsdp`` field), else for models of 1B parameters and more
    (the repository's FSDP accelerate configs are for OLMo-1B / OLMo-2-7B)."""
    v = getattr(cfg, "fsdp", None)
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v:
        return v not in ("no", "none", "off")
    return shape.n_params >= 1e9


# --------------------------------------------------------------------------- chapter planners
def _job_unit(c, j, name: str, job: str) -> Unit:
    """The training unit of one pre-training job ``j`` of chapter 00's config ``c`` (its steps, and
    the validation of every checkpoint it saves)."""
    shape = costs.olmo_shape(c.model, c.vocab_size, tied=not getattr(c, "mup_base_width", 0))
    prec = "bf16" if c.mixed_precision in ("bf16", "fp16") else "fp32"
    val = len(j.saves) * c.val_blocks * c.seq_len
    return _unit_train(name, job, shape, (j.end - j.start) * c.tokens_per_step(), c.seq_len, c.batch_size, prec,
                       _checkpointing(c), False, getattr(c, "grad_accum", 1), val,
                       micro_cap=getattr(c, "micro_batch_size", 0))


def _plan_00(cfg) -> ChapterPlan:
    from ..chapters import pretrain, pretrain_plan
    units, seen, notes = [], set(), []
    for sched in pretrain.SCHEDULES:  # the chapter page trains every schedule (pretrain.all_suites)
        c = dataclasses.replace(cfg, schedule=sched)
        for j in pretrain_plan.plan(c):
            key = (c.peak_lr(), j.name)
            if key in seen:  # wsd and constant share the trunk at one peak LR
                continue
            seen.add(key)
            job = j.name if j.kind == "cosine" else f"trunk+wsd @ lr {c.peak_lr():g}"
            units.append(_job_unit(c, j, f"{j.name} ({sched})", job))
    # the replicated schedule's further pre-training runs (seeds seed+1 ..): its whole plan again each
    rep = dataclasses.replace(cfg, schedule=getattr(cfg, "replicated", pretrain.REPLICATED),
                              n_budgets=getattr(cfg, "replicate_budgets", 0) or cfg.n_budgets)
    for i in range(1, getattr(cfg, "pretrain_seeds", 1)):
        for j in pretrain_plan.plan(rep):
            units.append(_job_unit(rep, j, f"{j.name} ({rep.schedule}, seed {cfg.seed + i})",
                                   f"{rep.schedule} seed {cfg.seed + i}"))
    if cfg.lr_scan_lrs:
        notes.append(f"the LR scan ({len(cfg.lr_scan_lrs)} LRs x {cfg.lr_scan_budgets} budgets) runs in the "
                     "notebook and is not priced here")
    n_par = costs.olmo_shape(cfg.model, cfg.vocab_size, tied=not getattr(cfg, "mup_base_width", 0)).n_params
    notes.append(f"model {cfg.model} ({n_par / 1e6:.1f}M "
                 f"parameters), corpus {cfg.corpus}, {cfg.n_budgets} budgets from {cfg.min_budget:.3g} tokens"
                 + (f" (cosine: the first {cfg.cosine_budgets})" if getattr(cfg, "cosine_budgets", 0) else ""))
    return ChapterPlan("00_pretraining_suite", cfg.profile, units, notes)


def _n_sft_examples(cfg) -> int:
    from ..foundation import data
    offline = profiles.get_profile(cfg.profile).offline
    n = 0
    for s in cfg.sft_data:
        size = None
        if offline:
            try:
                size = sum(data.spec(s).counts.values()) or None
            except Exception:  # noqa: BLE001 -- not a registered set: the hub table below
                size = None
        size = size or HUB_DATA_SIZES.get(s)
        if size is None:
            raise PlanError(f"no size known for SFT source {s!r}; add it to plan.HUB_DATA_SIZES")
        n += max(0, min(cfg.train_per_source, size - cfg.heldout_per_source))
    return n


def _bench_requests(cfg) -> int:
    from ..foundation import data
    total = 0
    for b in cfg.benchmarks:
        try:
            items = sum(data.spec(b).counts.values())
        except Exception:  # noqa: BLE001
            items = BENCH_ITEMS_HUB.get(b, 1000)
        if cfg.bench_limit:
            items = min(items, cfg.bench_limit)
        total += items * BENCH_CHOICES.get(b, 4)
    return total


def _plan_01(cfg) -> ChapterPlan:
    from ..chapters import instruct
    series, shape_of = planned_series(cfg)
    series = instruct.select_checkpoints(series, cfg)
    seeds = instruct.seed_list(cfg)
    n_train = _n_sft_examples(cfg)
    heldout = len(cfg.sft_data) * cfg.heldout_per_source
    prec = "bf16" if cfg.precision == "bf16" else "fp32"
    units = []
    for ck in series:
        shape = shape_of(ck)
        seq = min(cfg.max_seq_len or shape.ctx, 2048)  # instruct_sft._context
        ev_len = min(cfg.eval_max_length or seq, seq)
        bench_tok = _bench_requests(cfg) * min(EVAL_TOKENS_PER_REQUEST, ev_len)
        id_tok = heldout * seq
        job = f"ck {ck.label}"
        units.append(_unit_eval(f"base eval {ck.label}", job, shape, bench_tok + id_tok, ev_len,
                                cfg.eval_batch_size, prec))
        # the global batch: the config's global_batch (reached by accumulation), else the
        # per-device batch x accumulation (the launch's processes not counted)
        gb = int(getattr(cfg, "global_batch", 0) or cfg.batch_size * int(getattr(cfg, "grad_accum", 1) or 1))
        gc = _checkpointing(cfg)
        fsdp = _fsdp(cfg, shape)

        def mem(g, shape=shape, seq=seq, fsdp=fsdp, gc=gc):
            return costs.memory(shape, True, prec, seq, cfg.batch_size, shards=g if fsdp else 1,
                                grad_checkpointing=gc)
        g, m, fits = costs.fit_gpus(mem)
        steps = cfg.sft_steps or math.ceil(n_train / gb)
        tokens = steps * gb * seq
        fl = costs.train_flops(shape, tokens, seq, recompute=gc) + costs.eval_flops(shape, id_tok, seq)
        for lr in cfg.lrs:
            for s in seeds:
                units.append(Unit(f"sft {ck.label} lr={lr:g} seed={s}", job, tokens + id_tok, fl,
                                  round(m.total_gb, 2), g, fits, "train"))
        for s in seeds:
            units.append(_unit_eval(f"tuned eval {ck.label} seed={s}", job, shape, bench_tok, ev_len,
                                    cfg.eval_batch_size, prec))
    notes = [f"series {cfg.series!r}: {len(series)} checkpoints; SFT on {n_train} dialogues"
             + (f", {cfg.sft_steps} steps" if cfg.sft_steps else ", one epoch")
             + "; tokens counted at the full sequence length (upper bound)"]
    return ChapterPlan("01_instruction_tuning", cfg.profile, units, notes)


def _plan_02(cfg) -> ChapterPlan:
    series, shape_of = planned_series(cfg)
    n = len(cfg.sources) * (1 + sum(1 for g in cfg.gammas if g) * cfg.n_seeds)
    other = cfg.other_scale()
    if other is not None:
        n += len(other.sources) * (1 + sum(1 for g in other.gammas if g) * other.n_seeds)
    prec = "bf16" if cfg.dtype == "bfloat16" else "fp32"
    runs = getattr(cfg, "pretrain_runs", 1)  # each pre-training run: the same checkpoints again
    units = [_unit_eval(f"sweep {ck.label}" + (f" run {r}" if runs > 1 else ""), f"ck {ck.label}", shape_of(ck),
                        n * cfg.n_blocks * cfg.seq_len, cfg.seq_len, cfg.batch_size, prec)
             for r in range(runs) for ck in series]
    return ChapterPlan("02_gaussian_sensitivity", cfg.profile, units,
                       [f"series {cfg.series!r}: {len(series)} checkpoints x {n} evaluations of "
                        f"{cfg.n_blocks} x {cfg.seq_len} tokens" + (f", for each of {runs} pre-training runs"
                                                                    if runs > 1 else "")])


def _plan_finetune(cfg, chapter: str) -> ChapterPlan:
    series, shape_of = planned_series(cfg)
    n_runs = getattr(cfg, "pretrain_runs", 1)  # each pre-training run has its own block of seeds
    prec = "bf16" if cfg.mixed_precision in ("bf16", "fp16") else "fp32"
    gc = _checkpointing(cfg)
    accum = int(getattr(cfg, "grad_accum", 1) or 1)
    from ..chapters import finetune_train
    from ..foundation import tasks as tasks_mod
    source = "hub" if getattr(cfg, "data_source", "local") == "hub" or cfg.profile == "paper" else "local"
    gb = int(getattr(cfg, "global_batch", 0) or cfg.batch_size)
    other = [c for c in ("03_fixed_lr_finetuning", "04_lr_sweep") if c != chapter][0]
    try:
        other_lrs = set(profiles.resolve(other, cfg.profile).lrs)
    except profiles.ProfileError:
        other_lrs = set()
    units = []
    for r, ck in ((r, ck) for r in range(n_runs) for ck in series):
        shape = shape_of(ck)
        seeds = [(cfg.seed * n_runs + r) * cfg.seeds + i for i in range(cfg.seeds)]
        run = f" run {r}" if n_runs > 1 else ""
        for t in cfg.tasks:
            # the steps the run takes: `steps`, capped at max_epochs passes over the task's train
            # examples (registered counts; nothing is loaded), as finetune_train.effective_steps
            n_ex = min(cfg.n_train, tasks_mod.split_size(t, "train", source) or cfg.n_train)
            steps = finetune_train.effective_steps(cfg.steps, n_ex, gb, getattr(cfg, "max_epochs", 0.0))
            ev = (cfg.n_val + cfg.n_test) * cfg.max_len + cfg.ood_blocks * cfg.ood_seq_len
            units.append(_unit_eval(f"base {ck.label} {t}{run}", f"ck {ck.label} lr {cfg.lrs[0]:g}", shape, ev,
                                    cfg.max_len, cfg.eval_batch_size, prec))
            for lr in cfg.lrs:
                for s in seeds:
                    u = _unit_train(f"{ck.label} {t} lr={lr:g} seed={s}{run}", f"ck {ck.label} lr {lr:g}", shape,
                                    steps * gb * cfg.max_len, cfg.max_len, gb, prec, gc, _fsdp(cfg, shape),
                                    accum, ev, micro_cap=getattr(cfg, "per_device_batch_size", 0))
                    u.shared = lr in other_lrs
                    units.append(u)
    n_shared = sum(u.shared for u in units)
    notes = [f"series {cfg.series!r}: {len(series)} checkpoints x {len(cfg.tasks)} tasks x {len(cfg.lrs)} LRs x "
             f"{cfg.seeds} seeds" + (f" x {n_runs} pre-training runs" if n_runs > 1 else "")
             + f"; {cfg.steps} steps of {gb} x {cfg.max_len} tokens (upper bound)"
             + (f", capped at {cfg.max_epochs:g} epochs of each task's train split" if getattr(cfg, "max_epochs", 0)
                else "")]
    if n_shared:
        notes.append(f"{n_shared} units are also units of {other} (same store, computed once)")
    return ChapterPlan(chapter, cfg.profile, units, notes)


def _plan_05(cfg) -> ChapterPlan:
    from ..chapters import theory
    times = theory.checkpoint_times(cfg)
    steps = float(times[-1]) / cfg.lr
    d3 = 2.0 * cfg.d_in * cfg.d_hidden * cfg.d_out  # FLOPs of one d x d x d product
    gd = 6 * d3  # forward + backward of W2 W1 against A
    flops = steps * gd + cfg.n_checkpoints * (cfg.n_draws * len(cfg.gammas) * 2 * d3
                                              + (len(cfg.ft_lrs) + len(cfg.reg_lambdas)) * cfg.ft_steps * gd)
    return ChapterPlan("05_linear_theory", cfg.profile,
                       [Unit("simulation (numpy, CPU)", "all", 0.0, flops, 0.0, 0, True, "cpu")],
                       ["one CPU unit (numpy): no GPU; FLOPs of the gradient-descent simulation"])


def _plan_06(cfg) -> ChapterPlan:
    """Chapter 06 composes the units of chapters 02-04 (the same units, the same stores): its
    perturbation and fine-tuning configs per schedule and strength, chapter 04's grid, and the
    wsd_short decay branches (chapter 00 trains cosine, wsd and constant)."""
    from ..chapters import mitigate, pretrain_plan
    units, notes = [], []

    def add(p, tag, shared=False):  # shared: computed by chapters 02-04 too (the cosine units, the grid)
        for u in p.units:
            u.name, u.shared = f"{tag}: {u.name}", shared
            units.append(u)
    own = profiles.resolve("03_fixed_lr_finetuning", cfg.profile).schedule  # chapters 02-04's suite
    for s in cfg.schedules:
        add(_plan_02(mitigate.perturb_config(cfg, s)), f"sensitivity {s}", s == own)
        add(_plan_finetune(mitigate.finetune_config(cfg, s), "03_fixed_lr_finetuning"), f"forgetting {s}",
            s == own)
    for lam in cfg.l2_strengths:
        if lam:
            add(_plan_finetune(mitigate.finetune_config(cfg, cfg.l2_schedule, l2=lam), "03_fixed_lr_finetuning"),
                f"L2 λ={lam:g}")
    add(_plan_finetune(mitigate.grid_config(cfg), "04_lr_sweep"), "LR grid", cfg.l2_schedule == own)
    if "wsd_short" in cfg.schedules:
        c = _pretrain_cfg(cfg.profile, "wsd_short", cfg.suite_model)
        short = [j for j in pretrain_plan.plan(c) if j.name.startswith("wsd_short")]
        units += [_job_unit(c, j, f"pre-training: {j.name}", j.name) for j in short]
        notes.append(f"wsd_short: its {len(short)} decay branches off the wsd trunk (decay_frac_short "
                     f"{c.decay_frac_short:g}); the trunk and the other suites are chapter 00's")
    notes.append(f"schedules {list(cfg.schedules)}, lr {cfg.lr:g}, strengths {list(cfg.l2_strengths)}; "
                 f"{sum(u.shared for u in units)} units are also units of chapters 02-04 (same stores, computed once)")
    return ChapterPlan("06_mitigations", cfg.profile, units, notes)


def chapter_plan(chapter: str, profile: str, overrides: dict | None = None, seed: int | None = None) -> ChapterPlan:
    """The plan of ``chapter`` at ``profile`` (bad chapter / profile / parameter: ProfileError)."""
    profiles.get_profile(profile)
    if chapter not in _PLANNED:
        raise profiles.ProfileError(f"unknown chapter {chapter!r}; allowed: {', '.join(_PLANNED)}, all")
    import warnings
    with warnings.catch_warnings():  # a plan downloads nothing: the hub being off does not matter here
        warnings.simplefilter("ignore", profiles.OfflineWarning)
        cfg = profiles.resolve(chapter, profile, overrides, seed=seed)
    if chapter == "00_pretraining_suite":
        p = _plan_00(cfg)
    elif chapter == "01_instruction_tuning":
        p = _plan_01(cfg)
    elif chapter == "02_gaussian_sensitivity":
        p = _plan_02(cfg)
    elif chapter in ("03_fixed_lr_finetuning", "04_lr_sweep"):
        p = _plan_finetune(cfg, chapter)
    elif chapter == "05_linear_theory":
        p = _plan_05(cfg)
    elif chapter == "06_mitigations":
        p = _plan_06(cfg)
    else:
        raise PlanError(f"chapter {chapter!r} has no planner in coft_utils.book.plan")
    p.config = cfg.to_dict()
    return p


def plan_all(profile: str, overrides: dict | None = None) -> list[ChapterPlan]:
    """Every chapter's plan (``overrides`` apply where a chapter has the parameter); at a profile
    that runs some chapters only (``Profile.chapters``: cpu-deep), those."""
    out = []
    only = profiles.get_profile(profile).chapters
    for ch in profiles.CHAPTERS:
        if ch not in _PLANNED or (only is not None and ch not in only):
            continue
        names = {f.name for f in dataclasses.fields(profiles.resolve(ch, profile))}
        out.append(chapter_plan(ch, profile, {k: v for k, v in (overrides or {}).items() if k in names}))
    return out


_PLANNED = ("00_pretraining_suite", "01_instruction_tuning", "02_gaussian_sensitivity", "03_fixed_lr_finetuning",
            "04_lr_sweep", "05_linear_theory", "06_mitigations")


# --------------------------------------------------------------------------- output
def _fmt_tokens(x: float) -> str:
    if x <= 0:
        return "-"
    for div, suf in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if x >= div:
            return f"{x / div:.3g}{suf}"
    return f"{x:.0f}"


def _fmt_h(x: float) -> str:
    return "-" if x == 0 else f"{x:.3g}"


_COLS = ("unit", "job", "tokens", "FLOPs", "mem/GPU GB", "GPUs", "A100-h", "H100-h")


def _rows(p: ChapterPlan, max_units: int | None = None) -> list[tuple]:
    rows = []
    us = p.units if max_units is None or len(p.units) <= max_units else p.units[:max_units]
    for u in us:
        rows.append((u.name + (" *" if u.shared else ""), u.job, _fmt_tokens(u.tokens), f"{u.flops:.2g}",
                     f"{u.mem_gb:.1f}" + ("" if u.fits else " (!)"), str(u.gpus) if u.gpus else "CPU",
                     _fmt_h(u.hours["A100"]), _fmt_h(u.hours["H100"])))
    if len(us) < len(p.units):
        rows.append((f"... {len(p.units) - len(us)} more units", "", "", "", "", "", "", ""))
    t = p.totals()
    rows.append((f"total ({t['units']} units, {t['jobs']} jobs)", "", _fmt_tokens(t["tokens"]), f"{t['flops']:.2g}",
                 f"{t['mem_gb']:.1f}" + ("" if t["fits"] else " (!)"), str(t["gpus"]) if t["gpus"] else "CPU",
                 _fmt_h(t["A100_hours"]), _fmt_h(t["H100_hours"])))
    return rows


def text_table(p: ChapterPlan, max_units: int | None = None) -> str:
    rows = [_COLS] + _rows(p, max_units)
    w = [max(len(r[i]) for r in rows) for i in range(len(_COLS))]
    lines = [f"{p.chapter} @ {p.profile}: {len(p.units)} units"]
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w[j]) if j < 2 else c.rjust(w[j]) for j, c in enumerate(r)))
        if i == 0 or i == len(rows) - 2:
            lines.append("  ".join("-" * x for x in w))
    lines += [f"note: {n}" for n in p.notes]
    if any(u.shared for u in p.units):
        lines.append("* also a unit of the other fine-tuning chapter (computed once)")
    if not p.totals()["fits"]:
        lines.append(f"(!) does not fit {costs.GPU_MEMORY_GB:g} GB per GPU even on 8 GPUs under this parallelism")
    return "\n".join(lines)


def _md_table(rows) -> str:
    out = ["| " + " | ".join(_COLS) + " |", "|" + "---|" * len(_COLS)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(out)


def markdown(plans: list[ChapterPlan], title: str | None = None, max_units: int = 60, level: int = 1,
             errors: dict[str, str] | None = None) -> str:
    """A Markdown page: one summary row per (chapter, profile), then each chapter's unit table
    (headings at ``level`` + 1; ``title`` at ``level``, none when None: a page to include)."""
    h = "#" * (level + 1)
    out = [f"{'#' * level} {title}" if title else "", "",
           f"Estimates of `python -m coft_utils plan` ({costs.MFU:.0%} MFU of the dense bf16 peak: "
           f"A100 {costs.GPUS['A100'] / 1e12:g}, H100 {costs.GPUS['H100'] / 1e12:g} TFLOP/s; memory for "
           f"{costs.GPU_MEMORY_GB:g} GB GPUs; the model and its sources: `coft_utils.foundation.costs`). "
           "GPU-hours are summed over the GPUs of a unit; a unit's tokens count padded examples at full "
           "length (an upper bound).", "",
           "| chapter | profile | units | jobs | tokens | FLOPs | max mem/GPU GB | GPUs | A100-h | H100-h |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for p in plans:
        t = p.totals()
        out.append(f"| {p.chapter} | {p.profile} | {t['units']} | {t['jobs']} | {_fmt_tokens(t['tokens'])} | "
                   f"{t['flops']:.2g} | {t['mem_gb']:.1f}{'' if t['fits'] else ' (!)'} | "
                   f"{t['gpus'] or 'CPU'} | {_fmt_h(t['A100_hours'])} | {_fmt_h(t['H100_hours'])} |")
    for k, e in (errors or {}).items():
        out.append(f"| {k} | | | | | | | | | |")
        out.append("")
        out.append(f"Not planned: {k}: {e}")
    for p in plans:
        out += ["", f"{h} {p.chapter} at `{p.profile}`", ""]
        out += [f"- {n}" for n in p.notes]
        out += ["", "<details><summary>every unit</summary>", "", _md_table(_rows(p, max_units)), "", "</details>"]
    return "\n".join(out).lstrip() + "\n"


def to_json(plans: list[ChapterPlan]) -> dict:
    return {"model": {"mfu": costs.MFU, "peak_flops": costs.GPUS, "gpu_memory_gb": costs.GPU_MEMORY_GB},
            "plans": [p.to_dict() for p in plans]}


def write_page(root: str | os.PathLike, profiles_=("gpu", "paper")) -> Path:
    """``<root>/book/_generated/plan.md`` (atomically): every chapter's plan at ``gpu`` and
    ``paper``, without a title (``book/reproducing.md`` includes it). A chapter that cannot be
    planned is named on the page with its error instead of failing the book build."""
    plans, errors = [], {}
    for prof in profiles_:
        for ch in _PLANNED:
            try:
                plans.append(chapter_plan(ch, prof))
            except Exception as e:  # noqa: BLE001 -- shown on the page
                errors[f"{ch} @ {prof}"] = f"{type(e).__name__}: {e}"
    out = Path(root) / "book" / "_generated" / "plan.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".plan.md.tmp{os.getpid()}")
    tmp.write_text(markdown(plans, None, level=2, errors=errors))
    os.replace(tmp, out)
    return out


def main(chapter: str, profile: str, params: dict, json_path: str | None = None, md_path: str | None = None,
         max_units: int | None = None) -> int:
    """``python -m coft_utils plan CHAPTER|all --profile P``: print the tables; write --json / --markdown."""
    if profile not in profiles.PROFILES:
        raise profiles.ProfileError(f"unknown profile {profile!r}; allowed: {', '.join(profiles.PROFILES)}")
    plans = plan_all(profile, params) if chapter == "all" else [chapter_plan(chapter, profile, params)]
    for p in plans:
        print(text_table(p, max_units), end="\n\n")
    if len(plans) > 1:
        print(f"all chapters @ {profile}: " + "; ".join(
            f"{k} {sum(p.totals()[f'{k}_hours'] for p in plans):.3g} GPU-h" for k in DEFAULT_GPUS))
    if json_path:
        Path(json_path).write_text(json.dumps(to_json(plans), indent=1, default=str))
    if md_path:
        Path(md_path).write_text(markdown(plans, f"Plan at {profile}", level=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    ap = argparse.ArgumentParser()
    ap.add_argument("chapter")
    ap.add_argument("--profile", default="paper")
    a = ap.parse_args()
    sys.exit(main(a.chapter, a.profile, {}))
