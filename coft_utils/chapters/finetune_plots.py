"""Chapters 03 and 04, the figures: ID and OOD against pre-training tokens, the tuned LR, Pareto fronts.

Every figure draws seed means (:func:`coft_utils.chapters.finetune_analysis.mean_frame`) with a
95 % CI band over seeds and marks diverged runs with ×::

    from coft_utils.chapters import finetune_plots as fp
    fp.plot_id(df, "gsm8k", "test_id_ppl")          # ID after fine-tuning, one line per LR
    fp.plot_ood(df, "gsm8k", "after")               # OOD after (stars: minima); "delta", "dloss"
    fp.plot_best(best, "gsm8k")                     # three panels at the LR tuned per checkpoint
    fp.plot_pareto(df, "gsm8k", cfg.early_frac)     # test ID vs OOD after, early vs late checkpoints
"""
from __future__ import annotations

import numpy as np

from ..foundation import plots
from .finetune_analysis import _early_late, mean_frame, pareto_front

__all__ = ["plot_id", "plot_ood", "plot_best", "plot_pareto"]


def _band(ax, d, col: str, color):
    """The 95 % CI band over seeds of column ``col`` (nothing with one seed)."""
    if col + "_ci" in d:
        plots.band(ax, d.tokens, d[col], d[col + "_ci"], color=color)


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
    labels = ck.checkpoint.tolist() if "checkpoint" in ck else [plots.fmt_tokens(t) for t in ck.tokens]
    plots.token_axis(ax, ck.tokens, labels)


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
