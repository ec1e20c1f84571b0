"""The peak-LR scan of the pre-training suite: a peak LR per schedule, chosen by a rule.

One peak LR for all three schedules is not a fair comparison, so each schedule trains at its own
(``lr_cosine``, ``lr_wsd``, ``lr_constant``; 0 = ``lr``). :func:`lr_scan` trains every schedule
at every LR of a grid on the smallest budgets and :func:`choose_lr` picks, per schedule, the LR
with the lowest mean validation log-perplexity over them; the ``cpu`` preset holds the values it
chose there. The scan's runs are the suite's own jobs in the same folders
(:func:`coft_utils.chapters.pretrain.train_suites` with ``budgets``): the suite at a scanned LR
reuses its small runs and continues its trunk::

    from coft_utils.chapters import pretrain_scan
    scan = pretrain_scan.lr_scan("cpu", schedules=("cosine", "wsd"), lrs=[3e-3, 6e-3], budgets=3)
    pretrain_scan.choose_lr(scan)                         # {"cosine": ..., "wsd": ...}

The sentence and the figure of the book are :func:`coft_utils.chapters.pretrain_report.lr_scan_summary`
and :func:`~coft_utils.chapters.pretrain_report.plot_lr_scan`.
"""
from __future__ import annotations

import numpy as np

from ..foundation import profiles
from .pretrain import SCHEDULES, load_records_dir, resolve, train_suites
from .pretrain_plan import budget_labels

__all__ = ["lr_scan", "choose_lr"]


def lr_scan(profile: str = "cpu", schedules=SCHEDULES, lrs=None, budgets: int | None = None, seed: int = 0,
            overrides: dict | None = None, progress: bool = True):
    """Validation perplexity of every schedule at every peak LR on the smallest ``budgets`` budgets.

    ``lrs`` / ``budgets`` default to the profile's ``lr_scan_lrs`` / ``lr_scan_budgets``. Each
    (schedule, lr) is the suite at that peak LR, truncated to its smallest budgets: the same jobs,
    cache folders and resumable state as the suite itself (so the suite at a scanned LR reuses
    them: its small cosine runs and decay branches, and its trunk continues from the scan's).
    All jobs run together on ``cfg.workers`` processes. Returns a DataFrame with one row per
    (schedule, lr, budget): ``schedule, lr, label, tokens, val_ppl, val_loss``.
    """
    import pandas as pd
    over = {k: v for k, v in (overrides or {}).items() if k != "schedule"}
    base = resolve(profile, "cosine", seed, over)
    lrs = tuple(base.lr_scan_lrs if lrs is None else lrs)
    budgets = min(base.lr_scan_budgets, base.n_budgets) if budgets is None else budgets
    bad = [x for x in lrs if isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0]
    if not lrs or bad:
        raise profiles.ProfileError(f"lr_scan needs peak learning rates > 0, got {lrs!r}")
    if not (isinstance(budgets, int) and 1 <= budgets <= base.n_budgets):
        raise profiles.ProfileError(f"lr_scan: budgets = {budgets!r}; allowed: an integer in 1..{base.n_budgets}")
    if not base.val_blocks:
        raise profiles.ProfileError("lr_scan compares validation perplexity: parameter 'val_blocks' must be > 0")
    bad = [s for s in schedules if s not in SCHEDULES]
    if bad:
        raise profiles.ProfileError(f"unknown schedule(s) {bad!r}; allowed: {', '.join(SCHEDULES)}")
    flat = {"lr_cosine": 0.0, "lr_wsd": 0.0, "lr_constant": 0.0}
    cfgs = [resolve(profile, s, seed, {**over, **flat, "lr": float(x)}) for s in schedules for x in lrs]
    roots = train_suites(cfgs, budgets=budgets, progress=progress)
    rows = []
    for cfg in cfgs:
        root = roots[(cfg.schedule, cfg.peak_lr())]
        keep = budget_labels(cfg)[:budgets]
        for r in load_records_dir(root / cfg.schedule / "ckpt"):
            if r["label"] in keep:
                rows.append({"schedule": cfg.schedule, "lr": cfg.peak_lr(), "label": r["label"],
                             "tokens": r["tokens"], "val_ppl": r["val_ppl"], "val_loss": r["val_loss"]})
    return pd.DataFrame(rows, columns=["schedule", "lr", "label", "tokens", "val_ppl", "val_loss"])


def choose_lr(scan) -> dict[str, float]:
    """The rule: per schedule, the peak LR with the lowest mean validation log-perplexity
    (``val_loss``) over the scanned budgets; a diverged point counts as +inf; ties go to the
    smaller LR."""
    out = {}
    for sched, g in scan.groupby("schedule", sort=False):
        m = g.assign(v=g["val_loss"].astype(float).where(np.isfinite(g["val_loss"].astype(float)), np.inf)) \
             .groupby("lr")["v"].mean()
        best = m.min()
        out[sched] = float(min(lr for lr, v in m.items() if v == best))
    return out
