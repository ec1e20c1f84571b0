"""The plan of the pre-training suite: token budgets, learning-rate schedules, jobs.

Budgets are a geometric series of ``n_budgets`` (each double the last, in whole optimizer
steps); a schedule's plan is the list of :class:`Job` s that train its checkpoints (every cosine
budget its own run; one warmup-constant trunk for ``constant``, ``wsd`` and ``wsd_short``, with a
decay branch off the trunk per ``wsd`` (``decay_frac``) and ``wsd_short`` (``decay_frac_short``)
budget). Pure arithmetic on a config
(:class:`coft_utils.chapters.pretrain.Config`): nothing here trains or reads a file::

    from coft_utils.chapters import pretrain, pretrain_plan
    cfg = pretrain.resolve("smoke", "wsd")
    pretrain_plan.budget_steps(cfg), pretrain_plan.budget_labels(cfg)   # [4, 8, ...], ['2k', '4k', ...]
    pretrain_plan.plan(cfg)                      # [Job('trunk', ...), Job('wsd-decay-2k', ...), ...]
    pretrain_plan.lr_multiplier(5, cfg, "wsd_decay", 16, 13)            # LR factor of one update
    pretrain_plan.cost_ratio(cfg)                # planned steps of cosine / those of wsd
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..foundation import models
from ..foundation.plots import fmt_tokens  # the suite's checkpoint labels (0.25M, 8M, ...)

if TYPE_CHECKING:
    from .pretrain import Config

__all__ = ["fmt_tokens", "n_budgets", "budget_steps", "decay_steps", "lr_multiplier", "n_params", "Job", "budget_labels",
           "plan", "planned_steps", "cost_ratio"]


def n_budgets(cfg: Config) -> int:
    """Budgets of ``cfg.schedule``: ``n_budgets``, or ``cosine_budgets`` / ``short_budgets`` (when
    set) for cosine / wsd_short."""
    cap = getattr(cfg, {"cosine": "cosine_budgets", "wsd_short": "short_budgets"}.get(cfg.schedule, ""), 0)
    return min(cfg.n_budgets, cap) if cap else cfg.n_budgets


def budget_steps(cfg: Config) -> list[int]:
    """Optimizer steps of every budget of ``cfg.schedule``: exact doublings of the first (rounded) budget."""
    s0 = int(round(cfg.min_budget / cfg.tokens_per_step()))
    return [s0 * 2 ** i for i in range(n_budgets(cfg))]


def decay_steps(cfg: Config, steps: int, frac: float | None = None) -> int:
    """Decay steps of a wsd branch of ``steps`` (``frac``: default ``cfg.decay_frac``)."""
    return max(1, int(round((cfg.decay_frac if frac is None else frac) * steps)))


def lr_multiplier(step: int, cfg: Config, kind: str, total: int, decay_start: int | None = None) -> float:
    """LR factor for the update at ``step`` (0-based): warmup, then cosine/constant/linear decay to 0.

    ``kind``: "cosine" (to zero at ``total``), "constant", or "wsd_decay" (constant until
    ``decay_start``, then linear to zero at ``total``).
    """
    w = cfg.warmup_steps
    if step < w:
        return (step + 1) / (w + 1)
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        prog = (step - w) / max(1, total - w)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, prog)))
    if kind == "wsd_decay":
        if step < decay_start:
            return 1.0
        return max(0.0, (total - step) / (total - decay_start + 1))  # linear; 0 right after the last step
    raise ValueError(kind)


def n_params(cfg: Config) -> int:
    """All parameters of the model (embeddings included, tied counted once), without building it."""
    layers, d, heads, mlp = models.OLMO_PRESETS[cfg.model]
    # OLMo: q,k,v,o (d x d, no bias) + gate/up/down (d x mlp); LayerNorms have no parameters;
    # the output layer is tied to the embedding, except under muP (its own vocab x d matrix).
    emb = cfg.vocab_size * d * (2 if getattr(cfg, "mup_base_width", 0) else 1)
    return emb + layers * (4 * d * d + 3 * d * mlp)


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Job:
    """One contiguous training segment: steps ``[start, end)`` from scratch or from a parent state."""

    name: str
    series: str  # the schedule whose checkpoints this job exports
    start: int
    end: int
    kind: str  # lr_multiplier kind
    total: int  # horizon of the schedule
    decay_start: int | None = None
    parent: str | None = None  # file name of the state to start from (None: fresh init)
    saves: tuple = ()  # ((step, label), ...): export a checkpoint after this many steps
    keep: tuple = ()  # steps whose full state is kept for child jobs (wsd branch points)
    lineage: str | None = None  # kept states are "<lineage>@<step>.pt"; a fresh job resumes from the latest


def budget_labels(cfg: Config) -> list[str]:
    return [fmt_tokens(s * cfg.tokens_per_step()) for s in budget_steps(cfg)]


def plan(cfg: Config, budgets: int | None = None) -> list[Job]:
    """The jobs of ``cfg.schedule`` (``budgets``: only the smallest this many budgets).

    ``constant`` and the stable part of ``wsd`` are the same warmup-constant run (the "trunk"):
    it is trained once per config, exports the ``constant`` checkpoints at every budget and keeps
    its full state at every wsd branch point, from which each ``wsd`` decay branch starts.
    A truncated plan (the LR scan) has the same cosine runs and decay branches; its trunk is the
    same run stopped at its last budget (job ``trunk-<label>``), which keeps its final state so
    that the full trunk later continues from it instead of starting again.
    """
    if cfg.schedule == "cosine":
        steps, labels = budget_steps(cfg), budget_labels(cfg)
        n = len(steps) if budgets is None else max(1, min(int(budgets), len(steps)))
        return [Job(f"cosine-{lab}", "cosine", 0, s, "cosine", s, saves=((s, lab),))
                for s, lab in zip(steps[:n], labels[:n])]
    # the trunk is the same for every shared-trunk schedule (wsd_short's short_budgets caps only
    # its own branches, never the trunk that wsd and constant share)
    full = dataclasses.replace(cfg, schedule="constant")
    steps, labels = budget_steps(full), budget_labels(full)
    n = len(steps) if budgets is None else max(1, min(int(budgets), len(steps)))
    steps, labels, truncated = steps[:n], labels[:n], n < len(budget_steps(full))
    starts = [s - decay_steps(cfg, s) for s in steps]
    top = budget_steps(full)[-1]  # the constant schedule's horizon is the full trunk's (no decay)
    trunk = Job(f"trunk-{labels[-1]}" if truncated else "trunk", "constant", 0, steps[-1], "constant", top,
                saves=tuple(zip(steps, labels)),
                keep=tuple(sorted(set(starts) | ({steps[-1]} if truncated else set()))), lineage="trunk")
    if cfg.schedule == "constant":
        return [trunk]
    if cfg.schedule == "wsd_short":
        # the short anneal of each budget: from the trunk state the long anneal starts from (the
        # same step or earlier), constant LR up to its own decay start, then linear to zero
        branches = []
        for s, lab in list(zip(steps, labels))[:n_budgets(cfg)]:  # short_budgets: the smallest ones only
            d = s - decay_steps(cfg, s, cfg.decay_frac_short)
            q = max([k for k in trunk.keep if k <= d], default=None)
            branches.append(Job(f"wsd_short{cfg.decay_frac_short:g}-decay-{lab}", "wsd_short", q or 0, s,
                                "wsd_decay", s, decay_start=d, parent=f"trunk@{q}" if q else None,
                                saves=((s, lab),)))
        return [trunk] + branches
    branches = [Job(f"wsd-decay-{lab}", "wsd", p, s, "wsd_decay", s, decay_start=p, parent=f"trunk@{p}",
                    saves=((s, lab),)) for s, p, lab in zip(steps, starts, labels)]
    return [trunk] + branches


def planned_steps(cfg: Config, schedule: str | None = None) -> int:
    """Training steps a schedule costs on its own (wsd: the trunk up to its last branch point)."""
    jobs = plan(dataclasses.replace(cfg, schedule=schedule or cfg.schedule))
    if (schedule or cfg.schedule) in ("wsd", "wsd_short"):
        branches = [j for j in jobs if j.name != "trunk"]
        return max(j.start for j in branches) + sum(j.end - j.start for j in branches)
    return sum(j.end - j.start for j in jobs)


def cost_ratio(cfg: Config, other: str = "wsd") -> float:
    """Planned training steps of ``cosine`` divided by those of ``other`` for the same budgets
    (all ``n_budgets``, whatever ``cosine_budgets`` caps)."""
    c = dataclasses.replace(cfg, cosine_budgets=0) if hasattr(cfg, "cosine_budgets") else cfg
    return planned_steps(c, "cosine") / planned_steps(c, other)
