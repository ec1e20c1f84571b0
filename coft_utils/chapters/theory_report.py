"""Report of the linear-theory chapter (``05_linear_theory``): claim verdicts, tables, figures.

Reads the :class:`~coft_utils.chapters.theory.Results` of :func:`coft_utils.chapters.theory.run_all`::

    from coft_utils.chapters import theory, theory_report
    res = theory.run_all(cfg)
    V = theory_report.claim_verdicts(res)     # {claim id: (Verdict, measured text)} for the claims page
    fig = theory_report.fig_ushape(res)       # also fig_incremental, fig_sensitivity, fig_regularization
    table, glue = theory_report.perturb_summary(res)  # the notebook's tables and the values it glues
    table, glue = theory_report.verdict_summary(V)

Verdicts (:func:`claim_verdicts`). Pre-training, fine-tuning and regularised fine-tuning are
exact gradient descent on population losses: deterministic, without noise, so their verdicts are
exact (``method`` = :data:`EXACT`, the interval has zero width). The one random part is the
Monte Carlo over Gaussian perturbations: its ``n_draws`` draws, averaged in
:data:`N_GROUPS` groups of equal size (batch means, independent replicates), are the replicates
of :func:`coft_utils.foundation.verdicts.u_shape` / ``rises`` / ``minimum_shift``. The same draws are used
at every checkpoint, which makes the per-checkpoint Welch standard errors of those tests
conservative (the pairing is not used).
"""
from __future__ import annotations

import numpy as np

from ..foundation import plots
from ..foundation import verdicts as _V
from .theory import Problem, Results
from .theory_closed import learning_time, nearest_checkpoint

__all__ = [
    "draw_groups", "exact_verdict", "claim_verdicts", "EXACT", "N_GROUPS", "fig_incremental",
    "fig_sensitivity", "fig_ushape", "fig_regularization", "problem_summary", "perturb_summary",
    "ft_summary", "reg_summary", "verdict_summary",
]


# --------------------------------------------------------------------------------------------
# verdicts for the claims page
# --------------------------------------------------------------------------------------------
EXACT = _V.EXACT
N_GROUPS = 8  # Monte Carlo draws are averaged in this many equal groups: the replicates


def draw_groups(draws, n_groups: int = N_GROUPS) -> np.ndarray:
    """Batch means of per-draw values (n_draws, K) -> (G, K), G = min(n_groups, n_draws) groups of
    n_draws // G draws each (the last n_draws mod G draws are left out). Independent replicates
    of the Monte Carlo mean; fewer groups keep the simulated critical values of the U test cheap."""
    draws = np.asarray(draws, float)
    n = draws.shape[0]
    G = max(1, min(int(n_groups), n))
    m = n // G
    return draws[:G * m].reshape(G, m, -1).mean(axis=1)


# exact (no-noise) verdicts, the U-shape of a deterministic curve and the all-parts rule live in
# coft_utils.foundation.verdicts with the calibrated tests; the names here are kept for this chapter's code
_kendall = _V.kendall
exact_verdict = _V.exact
_exact_u = _V.u_shape_exact
_all_of = _V.all_of


def _verdict_incremental(res: Results):
    prob = res.prob
    rec_t, rec_a = np.asarray(res.pre["rec_t"]), np.asarray(res.pre["rec_a"])
    half = np.array([rec_t[np.argmax(rec_a[:, i] >= prob.s[i] / 2)] if (rec_a[:, i] >= prob.s[i] / 2).any()
                     else np.inf for i in range(prob.r)])
    learned = np.nonzero(np.isfinite(half))[0]
    t = half[learned]
    d = np.diff(t)
    n_inv, n_tie = int(np.sum(d < 0)), int(np.sum(d == 0))
    tau = _kendall(learned, t)
    claim = "modes learned one at a time, largest first"
    if len(learned) < 2:
        label, reason = "inconclusive", f"{len(learned)} of {prob.r} modes reach half strength within the run"
    elif n_inv:
        label, reason = "contradicted", f"{n_inv} consecutive learned mode(s) cross half strength before a larger one"
    elif n_tie:
        label, reason = "within noise", (f"{n_tie} pair(s) of consecutive modes cross half strength between the "
                                         "same recorded steps (the record's resolution)")
    else:
        label, reason = "observed", ""
    v = exact_verdict(claim, label, tau, "τ (mode index vs time of half strength)", reason,
                      {"half_times": half.tolist(), "n_learned": len(learned), "inversions": n_inv, "ties": n_tie,
                       "max_rel_err": res.pre["max_rel_err"]}, len(rec_t))
    measured = (f"{len(learned)} of {prob.r} modes reach half strength, in order of decreasing s: "
                f"{'yes' if label == 'observed' else 'no'} (Kendall τ = {tau:+.3f}); GD vs closed form "
                f"max rel. error {res.pre['max_rel_err']:.2%}")
    return v, measured


def _verdict_ushape(res: Results, n_groups: int = N_GROUPS):
    cfg, times = res.cfg, res.times
    gammas = sorted(cfg.gammas)
    lrs = list(cfg.ft_lrs) if res.ft_sim else []
    groups = {g: draw_groups(res.perturb_draws[g], n_groups) for g in gammas}
    # progressive sensitivity: the damage of the perturbation rises with t, for every gamma
    a_s = _V.alpha_for(len(gammas))
    det = "deterministic"  # gradient flow: no run-to-run variance, the replicates are noise draws
    sens = _V.combine({f"γ={g:g}": _V.rises(times, groups[g] - res.loss_ckpt[None], alpha=a_s,
                                           unit="per doubling of t (Δ L_A)", runs=det)
                       for g in gammas}, over="γ", require="all")
    # U-shape: the perturbed loss (Monte Carlo replicates) and the fine-tuned loss (exact)
    a_u = _V.alpha_for(len(gammas) + len(lrs))
    members = {f"perturbation γ={g:g}": _V.u_shape(times, groups[g], log=True, alpha=a_u, runs=det) for g in gammas}
    members.update({f"fine-tuning lr={lr:g}": _exact_u(times, res.ft_sim[lr][0]) for lr in lrs})
    ushape = _V.combine(members, over="curves (γ and fine-tuning LRs)")
    v = _all_of({"progressive sensitivity": sens, "U-shape": ushape}, "U-shape",
                "progressive sensitivity and a U-shaped perturbed / fine-tuned pre-training loss")
    n_pu = sum(members[f"perturbation γ={g:g}"].observed for g in gammas)
    n_fu = sum(members[f"fine-tuning lr={lr:g}"].observed for lr in lrs)
    n_s = sum(m["label"] == "observed" for m in sens.detail["members"].values())
    shift = _V.minimum_shift(times, groups, direction="earlier", what="γ", runs=det) if len(gammas) > 1 else None
    v.detail.update(n_u_perturb=n_pu, n_u_finetune=n_fu, n_sensitivity=n_s,
                    earlier=shift.to_dict() if shift is not None else None)
    measured = (f"damage of the perturbation rising with t beyond noise for {n_s} of {len(gammas)} γ; "
                f"interior minimum of the perturbed loss beyond noise for {n_pu} of {len(gammas)} γ "
                f"({res.perturb_draws[gammas[0]].shape[0]} Monte Carlo draws in {groups[gammas[0]].shape[0]} groups), "
                f"of the fine-tuned loss for {n_fu} of {len(lrs)} learning rates (exact)"
                + (f"; minimum earlier for larger γ: {shift.label} (τ = {shift.statistic:+.2f})" if shift else ""))
    return v, measured


def _verdict_regularization(res: Results):
    cfg = res.cfg
    lams = sorted(cfg.reg_lambdas)
    K = len(res.times)
    mins = [int(res.reg_sim_min[l]) for l in lams]
    LB = [float(res.reg_sim[l][1][-1]) for l in lams]
    tau = _kendall(lams, mins)
    dm, dl = np.diff(mins), np.diff(LB)
    claim = "the penalty moves the minimum later, at a cost in fine-tuning loss"
    finite = all(np.all(np.isfinite(res.reg_sim[l][0])) for l in lams) and np.all(np.isfinite(LB))
    if len(lams) < 2 or not finite:
        label, reason = "inconclusive", ("fewer than two λ" if len(lams) < 2 else "non-finite losses")
    elif all(k == K - 1 for k in mins):
        label, reason = "inconclusive", "the minimum is at the last checkpoint for every λ: no inflection in the run"
    elif tau < 0 or LB[-1] < LB[0]:
        label, reason = "contradicted", ("the minimum comes earlier with the penalty" if tau < 0
                                         else "the fine-tuning loss is lower with the penalty")
    elif np.all(dm >= 0) and mins[-1] > mins[0] and np.all(dl > 0):
        label, reason = "observed", ""
    elif len(set(mins)) == 1:
        label, reason = "within noise", f"the minimum stays at checkpoint {mins[0]} for every λ (the checkpoint grid)"
    else:
        label, reason = "inconclusive", "not monotone in λ"
    v = exact_verdict(claim, label, tau, "τ (λ vs checkpoint of the minimum)", reason,
                      {"lambdas": lams, "argmin": mins, "argmin_times": [float(res.times[k]) for k in mins],
                       "L_B_last": LB}, K)
    measured = (f"minimum of the fine-tuned pre-training loss at checkpoints {mins} for λ = {lams} "
                f"(τ = {tau:+.2f}); fine-tuning loss L_B at the last checkpoint {[round(x, 3) for x in LB]}")
    return v, measured


def claim_verdicts(res: Results, n_groups: int = N_GROUPS) -> dict:
    """The chapter's verdicts for the claims page: ``{claim id: (Verdict, measured text)}`` for
    ``linear_incremental`` (exact), ``linear_ushape`` (progressive sensitivity for every γ and a
    U-shape for at least one curve: Monte Carlo replicates for the perturbation, exact for
    fine-tuning; Bonferroni over the curves) and ``linear_regularization`` (exact). Needs
    ``run_all(cfg)`` with fine-tuning."""
    out = {"linear_incremental": _verdict_incremental(res),
           "linear_ushape": _verdict_ushape(res, n_groups)}
    if res.reg_sim:
        out["linear_regularization"] = _verdict_regularization(res)
    return out


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------
def _colors(n):
    import matplotlib.pyplot as plt
    return plt.cm.viridis(np.linspace(0.05, 0.85, max(n, 1)))


def fig_incremental(res: Results, max_modes: int = 12):
    """Mode strengths a_i(t)/s_i against time: simulation (dots) and closed form (lines)."""
    import matplotlib.pyplot as plt
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    r = res.prob.r
    show = np.unique(np.round(np.linspace(0, r - 1, min(r, max_modes))).astype(int))
    cols = _colors(len(show))
    for c, i in zip(cols, show):
        s = res.prob.s[i]
        ax.plot(res.t_grid, res.a_grid[:, i] / s, color=c, lw=1.5)
        ax.plot(res.pre["rec_t"], res.pre["rec_a"][:, i] / s, "o", ms=2.5, color=c,
                label=f"$s_{{{i + 1}}}={s:.2g}$")
        ax.axvline(res.learn_times[i], color=c, lw=0.6, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("pre-training time t = steps x lr")
    ax.set_ylabel("$a_i(t)/s_i$")
    ax.set_title("incremental learning: lines = dsolve solution, dots = GD")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    L_theory = 0.5 * np.sum((res.prob.s - res.a_grid) ** 2, axis=1)
    ax2.plot(res.t_grid, L_theory, color="k", lw=1.5, label="closed form")
    ax2.plot(res.pre["rec_t"], res.pre["rec_loss"], "o", ms=2.5, color="C1", label="GD")
    _time_axes(ax2, "pre-training loss $L_A$", "each new mode buys less loss")
    fig.tight_layout()
    return fig


def _time_axes(ax, ylabel: str, title: str) -> None:
    """Log-log axes of pre-training time against a loss, labelled, with a legend."""
    ax.set_xscale("log")
    plots.log_y(ax)
    ax.set_xlabel("pre-training time t")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()


def fig_sensitivity(res: Results):
    """Delta loss after a Gaussian perturbation against pre-training time, one line per gamma."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4))
    L_grid = 0.5 * np.sum((res.prob.s - res.a_grid) ** 2, axis=1)
    for c, g in zip(_colors(len(res.cfg.gammas)), res.cfg.gammas):
        ax.plot(res.t_grid, res.perturb_theory[g] - L_grid, color=c, lw=1.5)
        ax.plot(res.times, res.perturb_mc[g] - res.loss_ckpt, "o", ms=4, color=c,
                label=f"$\\gamma={g:g}$")
    _time_axes(ax, "$\\Delta L_A$ after perturbation", "progressive sensitivity (lines: theory, dots: Monte Carlo)")
    fig.tight_layout()
    return fig


def fig_ushape(res: Results):
    """Top row: perturbed pre-training loss, one panel per gamma; bottom row: pre-training loss
    after fine-tuning on B, one panel per learning rate. Dots = simulation at the checkpoints,
    lines = theory (exact expectation / linearised fine-tuning), dashed = predicted inflection,
    red star = simulated minimum."""
    import matplotlib.pyplot as plt
    gammas, lrs = res.cfg.gammas, (res.cfg.ft_lrs if res.ft_sim else ())
    ncol = max(len(gammas), len(lrs), 1)
    nrow = 2 if lrs else 1
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.7 * ncol, 3.3 * nrow), squeeze=False)
    lo = res.t_grid >= res.times[0]

    def panel(ax, t_th, y_th, y_sim, k_sim, t_pred, title, ylabel):
        ax.plot(t_th, y_th, color="C0", lw=1.5, label="theory")
        ax.plot(res.times, y_sim, "o", ms=3.5, color="C1", label="simulation")
        ax.plot(res.times[k_sim], y_sim[k_sim], "*", ms=15, mfc="none", mec="r",
                label="simulated min")
        ax.axvline(t_pred, color="k", ls="--", lw=1, label="predicted inflection")
        ax.set_xscale("log")
        fin = lambda y: np.asarray(y, float)[np.isfinite(y)]  # noqa: E731  (a non-finite loss is not drawn)
        tops = [*fin(y_sim[k_sim:]), *fin(y_th[t_th >= res.times[k_sim]])]
        bottoms = [*fin(y_sim), *fin(y_th)]
        if tops and bottoms:
            top, bottom = max(tops), min(bottoms)
            ax.set_ylim(bottom - 0.15 * (top - bottom), top + 0.6 * (top - bottom))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("pre-training time t")
        ax.set_ylabel(ylabel, fontsize=9)

    for j, g in enumerate(gammas):
        panel(axes[0, j], res.t_grid[lo], res.perturb_theory[g][lo], res.perturb_mc[g],
              res.perturb_sim_min[g], res.perturb_pred_t[g], f"perturbation, $\\gamma={g:g}$",
              "$\\mathbb{E}\\,L_A$ after perturbation")
    for j, lr in enumerate(lrs):
        panel(axes[1, j], res.t_grid[lo], res.ft_theory[lr][0][lo], res.ft_sim[lr][0],
              res.ft_sim_min[lr], res.ft_pred_t[lr],
              f"fine-tuning, lr={lr:g}, {res.cfg.ft_steps} steps", "$L_A$ after fine-tuning on B")
    for row in axes:
        for ax in row:
            if not ax.has_data():
                ax.axis("off")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def fig_regularization(res: Results):
    """Regularised fine-tuning: pre-training loss after fine-tuning per lambda (left), and the
    inflection time and the fine-tuning loss against lambda (right)."""
    import matplotlib.pyplot as plt
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    lams = res.cfg.reg_lambdas
    for c, lam in zip(_colors(len(lams)), lams):
        ax.plot(res.t_grid, res.reg_theory[lam][0], color=c, lw=1.2)
        ax.plot(res.times, res.reg_sim[lam][0], "o", ms=4, color=c, label=f"$\\lambda={lam:g}$")
        k = res.reg_sim_min[lam]
        ax.plot(res.times[k], res.reg_sim[lam][0][k], "*", ms=14, mfc="none", mec="r")
    ax.set_xscale("log")
    plots.log_y(ax)
    ax.set_xlabel("pre-training time t")
    ax.set_ylabel("pre-training loss after fine-tuning")
    ax.set_title(f"regularised fine-tuning (lr={res.cfg.reg_lr:g}); * = simulated min")
    ax.legend(fontsize=8)
    xs = np.arange(len(lams))
    ax2.plot(xs, [res.times[res.reg_sim_min[l]] for l in lams], "o-", color="C0",
             label="simulated inflection")
    ax2.plot(xs, [res.reg_pred_t[l] for l in lams], "s--", color="C0", mfc="none",
             label="linearised theory")
    plots.log_y(ax2)
    ax2.set_xticks(xs, [f"{l:g}" for l in lams])
    ax2.set_xlabel("$\\lambda$")
    ax2.set_ylabel("time of min. pre-training loss", color="C0")
    ax3 = ax2.twinx()
    ax3.plot(xs, [res.reg_sim[l][1][-1] for l in lams], "^-", color="C3",
             label="fine-tuning loss $L_B$ (last ckpt)")
    ax3.set_ylabel("fine-tuning loss $L_B$ at the last checkpoint", color="C3")
    ax3.grid(False)
    h1, l1 = ax2.get_legend_handles_labels()
    h2, l2 = ax3.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    ax2.set_title("the penalty delays the inflection, at a cost on B")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# the notebook's tables: (DataFrame, {glue name: value}) per section
# --------------------------------------------------------------------------------------------
def problem_summary(prob: Problem):
    """The target's modes (s_i and learning time, one column per mode) and the glued values
    ``cos_AB``, ``n_modes``, ``s_first``, ``s_last``."""
    import pandas as pd
    cos_AB = float(np.sum(prob.A * prob.B) / np.linalg.norm(prob.A) / np.linalg.norm(prob.B))
    glue = {"cos_AB": cos_AB, "n_modes": prob.r, "s_first": float(prob.s[0]), "s_last": float(prob.s[-1])}
    table = pd.DataFrame({"s_i": prob.s, "learning time t_i": learning_time(prob.s, prob.a0)},
                         index=pd.RangeIndex(1, prob.r + 1, name="mode")).T
    return table, glue


def perturb_summary(res: Results):
    """Per gamma: simulated vs predicted inflection checkpoint and the separated-modes rule;
    glued ``perturb_max_off`` (largest distance in checkpoints) and ``perturb_verdict``."""
    import pandas as pd
    rows = []
    for g in res.cfg.gammas:
        j_rule, t_rule = res.perturb_rule[g]
        rows.append({"gamma": g, "2 delta = (d_in+d_out) gamma^2": 2 * res.delta[g],
                     "simulated min (ckpt)": res.perturb_sim_min[g],
                     "predicted (ckpt)": res.perturb_pred_ckpt[g],
                     "predicted t*": res.perturb_pred_t[g],
                     "rule: last useful mode j*": j_rule,
                     "rule (ckpt)": nearest_checkpoint(res.times, t_rule) if j_rule else 0})
    table = pd.DataFrame(rows).set_index("gamma")
    off = (table["simulated min (ckpt)"] - table["predicted (ckpt)"]).abs()
    glue = {"perturb_max_off": int(off.max()),
            "perturb_verdict": "; ".join(
                f"γ = {g:g}: simulated minimum at checkpoint {res.perturb_sim_min[g]}, predicted "
                f"{res.perturb_pred_ckpt[g]}" for g in res.cfg.gammas)}
    return table, glue


def ft_summary(res: Results):
    """Per fine-tuning learning rate: simulated vs linearised minimum and the rise after it;
    glued ``ft_n_u`` (interior minima), ``ft_n_lrs`` and ``ft_verdict``."""
    import pandas as pd
    cfg, n_ck = res.cfg, len(res.times)
    rows = []
    for lr in cfg.ft_lrs:
        L = res.ft_sim[lr][0]
        rows.append({"ft lr": lr, "simulated min (ckpt)": res.ft_sim_min[lr],
                     "linearised prediction (ckpt)": res.ft_pred_ckpt[lr],
                     "L_A at min": L.min(), "L_A at last ckpt": L[-1],
                     "rise after min": L[-1] - L.min()})
    table = pd.DataFrame(rows).set_index("ft lr")
    ft_u = [lr for lr in cfg.ft_lrs if 0 < res.ft_sim_min[lr] < n_ck - 1]
    glue = {"ft_n_u": len(ft_u), "ft_n_lrs": len(cfg.ft_lrs),
            "ft_verdict": "; ".join(
                f"lr = {lr:g}: simulated minimum at checkpoint {res.ft_sim_min[lr]}, linearised theory "
                f"{res.ft_pred_ckpt[lr]}" for lr in cfg.ft_lrs)}
    return table, glue


def reg_summary(res: Results):
    """Per lambda: the minimum of the fine-tuned pre-training loss, the fine-tuning loss and the
    first harmful mode of the rule; glued ``reg_monotone``, ``reg_cost`` and ``reg_verdict``."""
    import pandas as pd
    lams = res.cfg.reg_lambdas
    rows = []
    for lam in lams:
        harmful = np.nonzero(res.reg_harmful[lam])[0]
        rows.append({"lambda": lam, "simulated min (ckpt)": res.reg_sim_min[lam],
                     "linearised prediction (ckpt)": res.reg_pred_ckpt[lam],
                     "L_A at min": res.reg_sim[lam][0][res.reg_sim_min[lam]],
                     "fine-tuning loss L_B (last ckpt)": res.reg_sim[lam][1][-1],
                     "first harmful mode (rule)": int(harmful[0]) + 1 if len(harmful) else None})
    table = pd.DataFrame(rows).set_index("lambda")
    mins = [res.reg_sim_min[l] for l in lams]
    LB = [res.reg_sim[l][1][-1] for l in lams]
    glue = {"reg_monotone": "does" if all(np.diff(mins) >= 0) else "does not",
            "reg_cost": "rises" if all(np.diff(LB) > 0) else "does not rise monotonically",
            "reg_verdict": "; ".join(
                f"λ = {l:g}: minimum at checkpoint {res.reg_sim_min[l]}, L_B = {res.reg_sim[l][1][-1]:.3g}"
                for l in lams)}
    return table, glue


def verdict_summary(V: dict):
    """The verdicts of :func:`claim_verdicts` as a table (one row per claim) and the glued
    ``n_groups``, ``perturb_u_count`` and ``perturb_earlier``."""
    import pandas as pd
    u = V["linear_ushape"][0].detail
    glue = {"n_groups": N_GROUPS, "perturb_u_count": u["n_u_perturb"],
            "perturb_earlier": ("moves earlier, beyond Monte Carlo noise"
                                if u["earlier"] and u["earlier"]["label"] == "observed"
                                else "does not move earlier beyond Monte Carlo noise")}
    table = pd.DataFrame({k: {"verdict": v.label, "statistic": v.stat_text(), "measured": m, "detail": v.reason}
                          for k, (v, m) in V.items()}).T
    return table, glue
