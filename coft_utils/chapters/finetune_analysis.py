"""Chapters 03 and 04, the analysis of the records: seed means, replicate matrices, the tuned LR.

Everything here works on :func:`coft_utils.chapters.finetune.frame` (one row per unit) and holds
no training::

    from coft_utils.chapters import finetune, finetune_analysis as fa
    df = finetune.sweep(series, cfg)                 # one row per unit: id_* / ood_* metrics
    fa.mean_frame(df)                                # per (task, lr, checkpoint): seed means, 95 % CIs
    tok, labels, P = fa.replicates(df, "gsm8k", 1e-2, "ood_ppl_after")   # seeds × checkpoints
    fa.inflection_table(df)                          # per (task, lr): argmin of OOD after, monotone Δ?
    best = fa.best_lr(df)                            # per (task, checkpoint): LR chosen on validation
    fa.lr_regime(best, cfg.lrs)                      # constant / slowly / quickly decreasing
    fa.front_comparison(df, "gsm8k", cfg.early_frac) # ID–OOD Pareto fronts, early vs late checkpoints

The chapters' verdicts built on these are in :mod:`coft_utils.chapters.finetune_report`.
"""
from __future__ import annotations

import math

import numpy as np

from ..foundation import verdict_design

__all__ = ["mean_frame", "diverged_note", "replicates", "run_labels", "replicate_runs", "inflection_table", "best_lr",
           "tuned_replicates",
           "crossfit_replicates",
           "lr_regime", "pareto_front", "front_comparison"]


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


def run_labels(df, seeds) -> list | None:
    """The pre-training run (its series) of each replicate seed, in the order of ``seeds``; None
    when the frame holds one run (its checkpoint scatter is then the noise: ``verdicts``' one-run
    design). Seeds are unique across runs (each run has its own block: ``finetune.units``)."""
    if "series" not in df or df["series"].nunique() <= 1:
        return None
    of = df.drop_duplicates("seed").set_index("seed")["series"]
    return [of[s] for s in seeds]


def replicate_runs(df, task: str, lr: float | None = None) -> list | None:
    """:func:`run_labels` for the rows of :func:`replicates` (``lr`` None: of :func:`crossfit_replicates`)."""
    d = df[(df.task == task) & ((df.lr == lr) if lr is not None else True)]
    return run_labels(d, sorted(d.seed.unique()))


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
    minimum of OOD-after. (The claims are decided by the tests of
    :func:`coft_utils.chapters.finetune_report.fixed_lr_summary`.)"""
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


def crossfit_replicates(df, task: str, metric: str = "id_ppl", value: str = "ood_ppl_after"):
    """(tokens, labels, values ``(seeds × checkpoints)``, chosen LRs ``(seeds × checkpoints)``) at an
    LR chosen *without* the seed it is scored on: for seed s at each checkpoint, the LR with the best
    mean validation ``metric`` over the other seeds (never choose and test on the same runs). A seed
    whose own run at that LR diverged gives NaN there (the verdict is then inconclusive)."""
    col = f"val_{metric}"
    d = df[df.task == task]
    lrs = np.array(sorted(d.lr.unique()), float)
    seeds = sorted(d.seed.unique())
    ck = d.drop_duplicates("checkpoint").sort_values("tokens")
    labels = ck.checkpoint.tolist()

    def cube(c):
        return np.stack([d[d.lr == lr].pivot_table(index="seed", columns="checkpoint", values=c, aggfunc="first",
                                                    dropna=False).reindex(index=seeds, columns=labels).to_numpy(float)
                         for lr in lrs])  # [lr, seed, ckpt]
    out = cube(value)
    # a NaN of another seed (a diverged run) removes that LR from the candidates; with several
    # pre-training runs, the whole run of the scored seed is left out of the choice
    idx, ok = verdict_design.crossfit_choice(cube(col), lower_is_better=metric != "accuracy",
                                             groups=run_labels(d, seeds))
    rows, ks = np.indices(idx.shape)
    Y = np.where(ok, out[idx, rows, ks], np.nan)
    chosen = np.where(ok, lrs[idx], np.nan)
    return ck.tokens.to_numpy(float), labels, Y, chosen


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
