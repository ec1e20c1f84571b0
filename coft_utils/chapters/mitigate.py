"""Chapter 06, the experiment: what mitigates catastrophic overtraining, on the same checkpoints.

Three remedies, each measured with the instruments of the earlier chapters, so that every unit
of work here *is* a unit of chapter 02 (Gaussian sensitivity) or of chapters 03/04 (fine-tuning
with the Hugging Face ``Trainer``) and lives in their results stores, shared with them::

    from coft_utils.chapters import mitigate
    cfg = mitigate.resolve("smoke")            # or profiles.resolve("06_mitigations", "cpu")
    run = mitigate.run_all(cfg)                # resumes: records already in the stores are reused
    run["sensitivity"], run["forgetting"], run["l2"], run["lr_grid"]   # one row per unit each
    mitigate.perturb_config(cfg, "wsd")        # the chapter-02 config behind a schedule's sensitivity
    mitigate.finetune_config(cfg, "cosine", l2=1e-3)                   # a chapter-03 config

1. **Schedule and anneal length.** The suites of chapter 00 (``cosine``, ``wsd``, ``constant``) and
   ``wsd_short`` (the wsd trunk with a short anneal, ``decay_frac_short``; its branches start from
   the same trunk states, so wsd and wsd_short differ only in the anneal) at the same budgets:
   chapter 02's sensitivity (perturbation sizes ``gammas``, chapter 02's noise scale, seeds and
   held-out blocks at this profile, on its first, pre-training-domain source) and chapter 03's
   forgetting (fine-tuning at the fixed learning rate ``lr`` on ``task``, chapter 03's steps,
   seeds and evaluation tokens at this profile). Every schedule is evaluated on the same token
   blocks (a test checks the hashes).
2. **Regularized fine-tuning.** Chapter 03's fine-tuning of the ``l2_schedule`` suite with the
   penalty λ/2·‖θ − θ0‖² toward the pre-trained weights (``finetune_train``'s L2-to-start
   Trainer), for every λ of ``l2_strengths`` (λ = 0 is chapter 03's own unit, the same record).
   The two-layer linear model of chapter 05 is run beside it (``theory``) for its counterpart.
3. **Learning rate scaled down with tokens.** Chapter 04's grid of fine-tuning learning rates on
   the ``l2_schedule`` suite (its records), from which the report picks, per checkpoint, the
   ID-optimal LR and the largest LR that holds forgetting at the first checkpoint's level.

This module only composes those chapters' configs and runs their experiments through the chapter
registry (no chapter imports another); the analysis is in
:mod:`coft_utils.chapters.mitigate_report`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from ..foundation import profiles, registry
from ..foundation.profiles import param

__all__ = ["Config", "PRESETS", "VARIANTS", "resolve", "perturb_config", "finetune_config", "grid_config",
           "theory_config", "run_all", "anneal_fraction", "eval_tokens"]

CHAPTER = "06_mitigations"
VARIANTS = ("constant", "wsd_short", "wsd", "cosine")  # by the share of each budget spent annealing
_PERTURB, _FIXED, _GRID, _THEORY, _SUITE = ("02_gaussian_sensitivity", "03_fixed_lr_finetuning", "04_lr_sweep",
                                            "05_linear_theory", "00_pretraining_suite")


@dataclass(frozen=True)
class Config(profiles.ChapterConfig):
    schedules: tuple[str, ...] = param(VARIANTS, "pre-training schedules compared (chapter 00's suites and "
                                       "wsd_short, the short anneal off the wsd trunk)", choices=VARIANTS, item=str)
    checkpoints: tuple[str, ...] = param((), "checkpoint labels to use (empty: all of the suite)", item=str)
    suite_model: str = param("", "the suite's model preset ('' = chapter 00's at this profile; paper: olmo-15m, "
                             "olmo-30m, olmo-90m)")
    gammas: tuple[float, ...] = param((0.2, 0.4, 0.8), "perturbation sizes γ (chapter 02's noise scale at this "
                                      "profile)", min=0.0, min_exclusive=True)
    task: str = param("gsm8k", "fine-tuning task (chapter 03's registry)")
    lr: float = param(3e-2, "the fixed fine-tuning learning rate of the schedule comparison and of the regularized "
                      "runs", min=0.0, min_exclusive=True)
    l2_strengths: tuple[float, ...] = param((0.0, 1e-2, 1e-1), "strengths λ of the L2 penalty toward the "
                                            "pre-trained weights (must contain 0, the unregularized reference)",
                                            min=0.0)
    l2_schedule: str = param("cosine", "the suite of the regularized runs and of the learning-rate rule",
                             choices=VARIANTS)
    theory: bool = param(True, "run chapter 05's linear model beside the regularized runs")

    def check(self):
        if len(self.schedules) < 2:
            raise profiles.ProfileError(f"parameter 'schedules' = {list(self.schedules)} names fewer than two "
                                        f"schedules; allowed: two or more of {', '.join(VARIANTS)}")
        if 0.0 not in self.l2_strengths or len(self.l2_strengths) < 2:
            raise profiles.ProfileError(
                f"parameter 'l2_strengths' = {list(self.l2_strengths)} must contain 0 (the unregularized reference) "
                "and at least one strength > 0")
        from ..foundation import tasks as tasks_mod
        if self.task not in tasks_mod.REGISTRY:
            raise profiles.ProfileError(f"parameter 'task' = {self.task!r} is unknown; allowed: "
                                        f"{', '.join(tasks_mod.names())}")


# smoke: seconds; cpu: the shared-trunk suites (constant, wsd_short, wsd: the anneal is the only
# difference) at 0.5M..8M tokens, the remedies on chapters 02-04's wsd suite (cosine, at its own
# peak LR, is in no claim row; it runs by parameter `schedules`); chapter 02's empirical noise
# scale at three γ where chapter 02 finds progressive sensitivity (and a U from γ ≈ 0.4), chapter
# 03's GSM8K fine-tuning at its third fixed LR (3e-2: the one whose OOD-after curve has an interior
# minimum there), two strengths of the penalty a decade apart. gpu/paper: the same design on those
# profiles' suites and settings (paper: chapter 00's OLMo-30M suites on C4, chapter 02's init
# scale, chapter 03's LRs); the γ, LR and λ grids are ours (the paper tests no remedy).
PRESETS: dict[str, Config] = {
    "smoke": Config(profile="smoke", gammas=(0.8,), lr=1e-2, l2_strengths=(0.0, 1.0)),
    "cpu": Config(profile="cpu", schedules=("constant", "wsd_short", "wsd"), checkpoints=("0.5M", "1M", "2M", "4M", "8M"),
                  l2_schedule="wsd"),
    "gpu": Config(profile="gpu", gammas=(0.2, 0.4, 0.8), lr=1e-3, l2_strengths=(0.0, 1e-3, 1e-2)),
    "paper": Config(profile="paper", gammas=(1.0, 2.0, 4.0), lr=4e-4, l2_strengths=(0.0, 1e-4, 1e-3)),
}


def resolve(profile: str = "cpu", overrides: dict | None = None, seed: int | None = None) -> Config:
    return profiles.resolve(CHAPTER, profile, overrides, seed=seed)


def _suite_fields(cfg: Config, schedule: str) -> dict:
    # one pre-training run per schedule: the comparisons here are within a run (a profile whose
    # chapters 02-04 measure several runs, cpu-deep, does not multiply this chapter's units)
    over = {"series": "suite", "schedule": schedule, "checkpoints": list(cfg.checkpoints), "pretrain_runs": 1}
    if cfg.suite_model:
        over["suite_model"] = cfg.suite_model
    return over


def perturb_config(cfg: Config, schedule: str):
    """Chapter 02's config at this profile on ``schedule``'s suite: ``gammas``, no comparison
    sweep, its first (pre-training-domain) source; everything else chapter 02's, so the cosine
    units are chapter 02's own records."""
    base = profiles.resolve(_PERTURB, cfg.profile)
    return profiles.resolve(_PERTURB, cfg.profile, {**_suite_fields(cfg, schedule), "gammas": list(cfg.gammas),
                                                    "compare_gammas": [], "sources": [base.sources[0]]},
                            seed=cfg.seed)


def _one_task(chapter: str, cfg: Config, over: dict):
    """``chapter``'s config with ``over`` (validated as usual), then restricted to ``task``: its
    data sizes stay the chapter's (a size above a task's split means the whole split, as in the
    chapter itself), so the units and their keys are the chapter's own."""
    import dataclasses
    c = profiles.resolve(chapter, cfg.profile, over, seed=cfg.seed)
    if cfg.task not in c.tasks:
        c = profiles.resolve(chapter, cfg.profile, {**over, "tasks": [*c.tasks, cfg.task]}, seed=cfg.seed)
    return dataclasses.replace(c, tasks=(cfg.task,))


def finetune_config(cfg: Config, schedule: str, lr: float | None = None, l2: float = 0.0):
    """Chapter 03's config at this profile on ``schedule``'s suite, one task and one LR, penalty λ."""
    over = {**_suite_fields(cfg, schedule), "lrs": [float(cfg.lr if lr is None else lr)]}
    if l2:
        over["l2_start"] = float(l2)
    return _one_task(_FIXED, cfg, over)


def grid_config(cfg: Config):
    """Chapter 04's config (its LR grid) at this profile on the ``l2_schedule`` suite, one task."""
    return _one_task(_GRID, cfg, _suite_fields(cfg, cfg.l2_schedule))


def theory_config(cfg: Config):
    return profiles.resolve(_THEORY, cfg.profile, seed=cfg.seed)


def anneal_fraction(profile: str, schedule: str, overrides: dict | None = None) -> float:
    """The share of each budget spent annealing: constant 0, wsd_short ``decay_frac_short``, wsd
    ``decay_frac``, cosine 1 (its LR falls from the end of warmup on)."""
    c = profiles.resolve(_SUITE, profile, overrides)
    return {"constant": 0.0, "wsd_short": c.decay_frac_short, "wsd": c.decay_frac, "cosine": 1.0}[schedule]


def eval_tokens(cfg: Config) -> dict:
    """{schedule: {"perturb": sha, "finetune": sha}}: the hash of the token blocks each schedule's
    sensitivity and forgetting are measured on (chapter 02's held-out blocks, chapter 03's OOD
    blocks), from that schedule's own series and tokenizer. Equal across schedules = the
    comparison is on identical evaluation tokens."""
    from ..foundation import models
    P, F = registry.experiment(_PERTURB), registry.experiment(_FIXED)
    out = {}
    for s in cfg.schedules:
        c2, c3 = perturb_config(cfg, s), finetune_config(cfg, s)
        series = P.load_series(c2)
        tok = models.load_tokenizer(series.checkpoints[0], series)
        b = P.heldout(tok, c2.sources[0], c2.n_blocks, c2.seq_len, P.data_origin(cfg.profile))
        out[s] = {"perturb": F.blocks_sha(b), "finetune": F.blocks_sha(F.ood_blocks(tok, c3))}
    return out


def _tagged(df, **cols):
    for k, v in cols.items():
        df[k] = v
    return df


def run_all(cfg: Config, progress: bool = False) -> dict:
    """Every unit of the chapter (resuming), as frames: ``sensitivity`` (chapter-02 records of every
    schedule), ``forgetting`` (chapter-03 records at ``lr``, every schedule), ``l2`` (every λ on
    the ``l2_schedule`` suite), ``lr_grid`` (chapter 04's grid there), ``theory`` (chapter 05's
    results or None), ``peak_lr`` / ``series`` per schedule, ``wall_s`` per part and in total."""
    import pandas as pd
    P, F, T = registry.experiment(_PERTURB), registry.experiment(_FIXED), registry.experiment(_THEORY)
    out = {"series": {}, "peak_lr": {}, "wall_s": {}}
    t_all = time.time()
    sens, forget = [], []
    t0 = time.time()
    for s in cfg.schedules:  # sensitivity: cheap, every schedule first (trains wsd_short's branches if needed)
        c2 = perturb_config(cfg, s)
        series = P.load_series(c2)
        out["series"][s], out["peak_lr"][s] = series, series.meta.get("peak_lr")
        sens.append(_tagged(P.sweep(series, c2, progress=progress), schedule=s))
    out["wall_s"]["sensitivity"] = time.time() - t0
    t0 = time.time()
    for s in cfg.schedules:
        forget.append(_tagged(F.run_all(finetune_config(cfg, s))["df"], schedule=s, l2_start=0.0))
    out["wall_s"]["forgetting"] = time.time() - t0
    t0 = time.time()
    l2 = []
    for lam in cfg.l2_strengths:
        l2.append(_tagged(F.run_all(finetune_config(cfg, cfg.l2_schedule, l2=lam))["df"], schedule=cfg.l2_schedule,
                          l2_start=float(lam)))
    out["wall_s"]["l2"] = time.time() - t0
    t0 = time.time()
    out["lr_grid"] = _tagged(F.run_all(grid_config(cfg))["df"], schedule=cfg.l2_schedule)
    out["wall_s"]["lr_grid"] = time.time() - t0
    t0 = time.time()
    out["theory"] = T.run_all(theory_config(cfg)) if cfg.theory else None
    out["wall_s"]["theory"] = time.time() - t0
    out["sensitivity"] = pd.concat(sens, ignore_index=True)
    out["forgetting"] = pd.concat(forget, ignore_index=True)
    out["l2"] = pd.concat(l2, ignore_index=True)
    out["wall_s"]["total"] = time.time() - t_all
    return out
