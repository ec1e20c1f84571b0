"""Chapter 06, the figures: every schedule on one axis per measure, the penalty's strengths, the
ID/OOD Pareto trade-off of the learning-rate rules (with the penalty's points beside them)::

    from coft_utils.chapters import mitigate_report as mr       # re-exports these three
    mr.fig_schedules(run, cfg); mr.fig_l2(run, cfg); mr.fig_pareto(run, cfg, mr.lr_rule_summary(run, cfg))

Seed means with 95 % bands over seeds; stars mark each curve's minimum. The matrices and
summaries come from :mod:`coft_utils.chapters.mitigate_report`.
"""
from __future__ import annotations

import numpy as np

from ..foundation import plots

__all__ = ["fig_schedules", "fig_l2", "fig_pareto", "COLORS", "NAMES"]

COLORS = {"constant": "#1f77b4", "wsd_short": "#2ca02c", "wsd": "#ff7f0e", "cosine": "#d62728"}
NAMES = {"constant": "constant (no anneal)", "wsd_short": "WSD, short anneal", "wsd": "WSD, long anneal",
         "cosine": "cosine (own peak LR)"}


def _line(ax, t, Y, color, label, marker="o"):
    import warnings
    m = _nm(Y, axis=0)
    ax.plot(t, m, marker + "-", color=color, label=label)
    if Y.shape[0] > 1:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            half = 1.96 * np.nanstd(Y, axis=0, ddof=1) / np.sqrt(np.sum(np.isfinite(Y), axis=0))
        plots.band(ax, t, m, half, color=color)


def _tokens_x(ax, tokens) -> None:
    plots.token_axis(ax, tokens, [_fmt_tokens(x) for x in tokens])
    ax.set_xlabel("pre-training tokens")


def fig_schedules(run, cfg, gamma: float | None = None):
    """One axis per measure, every schedule on it: sensitivity at ``gamma`` (default: the middle
    γ), forgetting at ``lr``, and the OOD perplexity after fine-tuning (stars: minima)."""
    import matplotlib.pyplot as plt
    g = gamma if gamma is not None else sorted(cfg.gammas)[len(cfg.gammas) // 2]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    ft = run["forgetting"]
    for s in cfg.schedules:
        t, Y = sensitivity(run, s, g)
        _line(axes[0], t, Y, COLORS[s], NAMES[s])
        t, F = forgetting(ft[ft.schedule == s])
        _line(axes[1], t, F, COLORS[s], NAMES[s])
        t, P = forgetting(ft[ft.schedule == s], "after")
        _line(axes[2], t, P, COLORS[s], NAMES[s])
        if np.isfinite(P).any():
            k = _nargmin(_nm(P, 0))
            axes[2].plot(t[k], _nm(P, 0)[k], "*", ms=15, color=COLORS[s], mec="k")
    axes[0].set_ylabel(f"sensitivity: loss perturbed − base (nats), γ={g:g}")
    axes[1].set_ylabel(f"forgetting: OOD loss after − before (nats), lr={cfg.lr:g}")
    axes[2].set_ylabel("OOD perplexity after fine-tuning")
    plots.log_y(axes[2])
    for ax in axes:
        _tokens_x(ax, t)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_l2(run, cfg):
    """Per strength λ: forgetting, OOD perplexity after (stars: minima), test ID perplexity."""
    import matplotlib.pyplot as plt
    df = run["l2"]
    lams = sorted(df.l2_start.unique())
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    for i, lam in enumerate(lams):
        c = cmap(i / max(1, len(lams) - 1) * 0.85)
        d = df[df.l2_start == lam]
        for ax, what in zip(axes, ("forgetting", "after", "id")):
            t, Y = forgetting(d, what)
            _line(ax, t, Y, c, f"λ={lam:g}")
            if what == "after" and np.isfinite(Y).any():
                k = _nargmin(_nm(Y, 0))
                ax.plot(t[k], _nm(Y, 0)[k], "*", ms=15, color=c, mec="k")
    axes[0].set_ylabel("forgetting: OOD loss after − before (nats)")
    axes[1].set_ylabel("OOD perplexity after fine-tuning")
    axes[2].set_ylabel("test ID perplexity after fine-tuning")
    for ax in axes:
        _tokens_x(ax, t)
    plots.log_y(axes[1])
    plots.log_y(axes[2])
    axes[0].legend(fontsize=8, title=f"L2 to start, lr={cfg.lr:g}")
    fig.tight_layout()
    return fig


def fig_pareto(run, cfg, summary: dict):
    """Left: the ID/OOD trade-off per checkpoint (seed means over chapter 04's LR grid, one line per
    checkpoint); circle: the ID-optimal LR, square: the forgetting-holding LR, each at the mean over
    seeds of its cross-fitted score. Right: the LR each rule picks per checkpoint."""
    import matplotlib.pyplot as plt
    r = summary["rule"]
    d = run["lr_grid"].assign(forgetting=lambda x: x.ood_loss_after - x.ood_loss_before)
    m = d.groupby(["tokens", "lr"])[["test_id_ppl", "forgetting"]].mean().reset_index()
    toks = r["tokens"]
    cmap = plt.get_cmap("plasma")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 4.6))
    for i, tk in enumerate(toks):
        c = cmap(i / max(1, len(toks) - 1) * 0.85)
        g = m[m.tokens == tk].sort_values("lr")
        ax.plot(g.test_id_ppl, g.forgetting, "-", color=c, lw=1, alpha=0.8, label=_fmt_tokens(tk))
        ax.scatter(g.test_id_ppl, g.forgetting, s=14 + 60 * np.log10(g.lr / g.lr.min() + 1), color=c, alpha=0.6)
        for rule, mk in (("opt", "o"), ("hold", "s")):
            ax.plot(_nm(r["score"][rule]["test_id_ppl"][:, i]), _nm(r["score"][rule]["forgetting"][:, i]),
                    mk, ms=11, mfc="none", mec=c, mew=2)
    if len(run.get("l2", [])) and cfg.l2_schedule == run["lr_grid"].schedule.iloc[0]:
        # the penalty's points on the same axes (at the chapter's fixed LR): remedy against remedy
        l2 = run["l2"].assign(forgetting=lambda x: x.ood_loss_after - x.ood_loss_before)
        l2 = l2[l2.l2_start > 0].groupby(["tokens", "l2_start"])[["test_id_ppl", "forgetting"]].mean().reset_index()
        for i, tk in enumerate(toks):
            c = cmap(i / max(1, len(toks) - 1) * 0.85)
            g = l2[np.isclose(l2.tokens, tk)]
            ax.plot(g.test_id_ppl, g.forgetting, "^", ms=9, mfc="none", mec=c, mew=1.5)
        ax.plot([], [], "^", mfc="none", mec="k", label=f"L2 to start (λ > 0, lr={cfg.lr:g})")
    ax.plot([], [], "o", mfc="none", mec="k", label="ID-optimal LR")
    ax.plot([], [], "s", mfc="none", mec="k", label="forgetting-holding LR")
    if plots.log_x(ax):
        import matplotlib.ticker as mt
        ax.xaxis.set_minor_formatter(mt.NullFormatter())
    ax.set_xlabel("test ID perplexity (lower is better)")
    ax.set_ylabel("forgetting: OOD loss after − before (nats)")
    ax.set_title("ID/OOD trade-off per checkpoint (dot size: LR)")
    ax.legend(fontsize=7, ncol=2, title="checkpoint")
    for rule, mk, lab in (("opt", "o-", "ID-optimal"), ("hold", "s--", "forgetting-holding")):
        lr = r["choice"][rule]
        ax2.plot(toks, np.exp(np.log(lr).mean(axis=0)), mk, label=f"{lab} LR (geometric mean over seeds' folds)")
    _tokens_x(ax2, toks)
    ax2.set_yscale("log")
    ax2.set_ylabel("fine-tuning LR chosen")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return fig


# at the end, so that either module can be imported first (mitigate_report re-exports the
# figures at its own end): only the functions above use these, at call time
from .mitigate_report import _fmt_tokens, _nargmin, _nm, forgetting, sensitivity  # noqa: E402
