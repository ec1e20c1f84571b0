"""Chapter 01, the report of the general-ability panel (:mod:`.instruct_panel`): its verdicts,
its claim row, its figure and tables. Re-exported by :mod:`.instruct_report`::

    from coft_utils.chapters import instruct_report as report
    pv = report.panel_verdicts(out, cfg)         # {metric: bends_down, base improves, damage grows, text}
    pc = report.panel_claim(out, cfg, pv)        # the claim row cpu_general_ability (minimal-pair accuracy)
    report.fig_panel(out, cfg, pv, id_label=...), report.table_panel(out, cfg), report.table_panel_seeds(out, cfg)
    report.panel_glue(out, pv, pc, cfg)          # the notebook's texts

The claim row is a small-model stand-in for the paper's benchmarks, decided on the one metric
declared beforehand (:data:`~coft_utils.chapters.instruct_panel.CLAIM_METRIC`, the minimal-pair
accuracy) with :func:`coft_utils.foundation.verdicts.bends_down` (tuning seeds as replicates, the
base with its binomial s.e.); every other panel metric is tested the same way and reported.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

from ..foundation import plots
from ..foundation import verdicts as V
from .instruct import Config
from .instruct_report import BENDS_DOWN_WHAT, _curves, _token_axis, _tuned_band, diverged_note

__all__ = ["PANEL_CLAIM", "panel_verdicts", "panel_claim", "fig_panel", "table_panel", "table_panel_seeds",
           "panel_glue"]

# the claim row of the panel (declared before any run): a small-model stand-in for the paper's benchmarks
PANEL_CLAIM = "cpu_general_ability"


def panel_verdicts(out: dict, cfg: Config) -> dict:
    """Per panel metric (:data:`coft_utils.chapters.instruct_panel.PANEL_METRICS`): does the tuned
    curve (per seed, at the chosen LR) bend down at the last checkpoint beyond seed noise while the
    base does not (:func:`coft_utils.foundation.verdicts.bends_down`, log scale for perplexities,
    the base with its s.e.)? Beside it, reported: does the base improve with tokens
    (:func:`~coft_utils.foundation.verdicts.improves`, one replicate: s.e. from the residuals), and
    does the damage of tuning (per seed: log(tuned / base) for perplexities, base - tuned for
    accuracies) grow with tokens (:func:`~coft_utils.foundation.verdicts.rises`, seeds as replicates)?

    Returns {metric: {"verdict", "base_improves", "damage_grows", "label", "claim", "text", curves...}}."""
    import numpy as np
    from .instruct_panel import CLAIM_METRIC, PANEL_METRICS, metrics
    out_v = {}
    tuned, base = out["tuned"], out["base"]
    m_claim = [CLAIM_METRIC] if CLAIM_METRIC in metrics(cfg) else []
    for m in metrics(cfg):
        se_col, scale, hib, _, name = PANEL_METRICS[m]
        log = scale == "log"
        d = {"metric": m, "name": name, "claim": m in m_claim}
        if not len(tuned) or not len(base) or m not in base or m not in tuned:
            v = V.Verdict(claim="tuned curve bends down while the base does not", label="inconclusive",
                          reason="no tuned or no base panel records")
            d.update(verdict=v, base_improves=v, damage_grows=v, label=v.label, text=f"{v.label}: {v.reason}.")
            out_v[m] = d
            continue
        tokens, cks, T, B, bse = _curves(tuned, base, m, se_col)
        v = V.bends_down(tokens, T, B, higher_is_better=hib, log=log, base_se=bse)
        unit = ("% worse at the last checkpoint than the best of the later half" if log
                else "drop at the last checkpoint")
        v = V.diverged(dataclasses.replace(v, unit=unit), diverged_note(tuned))
        bi = V.improves(tokens, B, lower_is_better=not hib, log=log)
        # reported beside it, never in the claim: the damage of tuning (per seed, against the base)
        # growing with tokens, the paper's mechanism (progressive sensitivity), as chapter 03 tests it
        with np.errstate(all="ignore"):
            D = (np.log(T) - np.log(B)) if log else (B - T) if hib else (T - B)
        dmg = V.rises(tokens, D, unit=("log(tuned / base perplexity) per doubling of tokens" if log
                                       else "accuracy lost in tuning, per doubling of tokens"))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (missing records): NaN
            mean_t = (np.exp(np.nanmean(np.log(T), axis=0)) if log else np.nanmean(T, axis=0)) if T.shape[0] else \
                np.full(len(cks), np.nan)
        j = v.detail.get("best_earlier") if v.detail else None
        f = (lambda x: f"{x:.3g}") if log else (lambda x: f"{x:.3f}")
        txt = (f"{v.label}: {v.stat_text()}" + (f" ({v.reason})" if v.reason and math.isfinite(v.statistic) else "")
               + ". "
               f"Base {f(B[0][0])} at {cks[0]} to {f(B[0][-1])} at {cks[-1]} (improves with tokens: {bi.label}, "
               f"{bi.stat_text()}); tuned ({'geometric ' if log else ''}mean of {T.shape[0]} seeds) {f(mean_t[0])} to "
               f"{f(mean_t[-1])}" + (f", best of the later half {f(mean_t[j])} at {cks[j]}" if j is not None else "")
               + f". The damage of tuning (tuned {'/' if log else 'vs'} base, per seed) grows with tokens: {dmg.label}, "
               f"{dmg.stat_text()}.")
        d.update(verdict=v, base_improves=bi, damage_grows=dmg, label=v.label, tokens=tokens.tolist(), checkpoints=cks,
                 tuned_mean=mean_t.tolist(), base=B[0].tolist(), base_se=bse.tolist(), alpha=v.alpha, text=txt,
                 reference=out.get("panel_reference", {}).get(m))
        out_v[m] = d
    return out_v


def panel_claim(out: dict, cfg: Config, pv: dict | None = None) -> dict:
    """The claim row :data:`PANEL_CLAIM`: the :func:`panel_verdicts` verdict of the one metric
    declared beforehand (:data:`~coft_utils.chapters.instruct_panel.CLAIM_METRIC`, the minimal-pair
    accuracy; the other metrics are reported beside it and do not count). Returns ``verdict``,
    ``measured``, ``numbers``, ``sentence``."""
    from .instruct_panel import CLAIM_METRIC, PANEL_METRICS
    pv = pv if pv is not None else panel_verdicts(out, cfg)
    members = {PANEL_METRICS[m][4]: d["verdict"] for m, d in pv.items() if d["claim"]}
    v = pv[CLAIM_METRIC]["verdict"] if CLAIM_METRIC in pv else V.Verdict(
        claim="tuned curve bends down while the base does not", label="inconclusive", reason="no panel in this run")
    series = out["series"]
    cks = next((d.get("checkpoints") for d in pv.values() if d.get("checkpoints")), []) or []
    measured = (f"{series.name}: {len(cks)} checkpoints" + (f" ({cks[0]} to {cks[-1]})" if cks else "")
                + f"; {len(out['seeds'])} fine-tuning seeds at the LR chosen per checkpoint on ID data; small-model "
                  f"stand-in for the paper's benchmarks; metric (declared): {', '.join(members) or 'none'} over "
                  f"{cfg.pairs_n} held-out pairs (minimal_pairs v{_pairs_version()}), tuned per seed vs base with its "
                  f"binomial s.e.")
    what = BENDS_DOWN_WHAT[v.label]
    others = [f"{PANEL_METRICS[m][4]}: {d['label']}" for m, d in pv.items() if not d["claim"]]
    sentence = (f"At the {cfg.profile} profile, on the minimal-pair accuracy of the general-ability panel (a "
                f"small-model stand-in for the paper's benchmarks): {what}"
                + (f" ({v.reason})" if v.reason and v.label != "contradicted" else "") + "."
                + (f" The other panel metrics (reported, not counted): {'; '.join(others)}." if others else ""))
    grows = [PANEL_METRICS[m][4] for m, d in pv.items() if d["damage_grows"].label == "observed"]
    if grows:  # the paper's mechanism, reported beside the claim (rises, seeds as replicates)
        sentence += (f" The damage that tuning does grows with pre-training tokens (progressive sensitivity; "
                     f"reported, not counted) on: {', '.join(grows)}.")
    numbers = {m: {"label": d["label"], "verdict": d["verdict"].to_dict(),
                   "base_improves": d["base_improves"].to_dict(), "damage_grows": d["damage_grows"].to_dict(),
                   "tuned_mean": d.get("tuned_mean"),
                   "base": d.get("base"), "reference": d.get("reference")} for m, d in pv.items()}
    numbers["best_lr"] = dict(zip(out["lr_choice"].checkpoint, out["lr_choice"].best_lr)) if len(out["lr_choice"]) else {}
    return {"verdict": v, "measured": measured, "numbers": numbers, "sentence": sentence, "members": members}


def _pairs_version() -> int:
    from ..foundation import minimal_pairs
    return minimal_pairs.VERSION


def fig_panel(out: dict, cfg: Config, pv: dict | None = None, id_label: str | None = None):
    """The paper's Fig. 1/2 on the panel: every panel metric and the ID response perplexity against
    pre-training tokens, base (± 1 s.e.) and tuned (seed mean, min-max band over seeds), the
    reference level dotted, each with its verdict's badge."""
    import matplotlib.pyplot as plt
    from .instruct_panel import PANEL_METRICS, metrics
    pv = pv if pv is not None else panel_verdicts(out, cfg)
    s = out["summary"]
    base, tuned = s[s.stage == "base"].sort_values("tokens"), s[s.stage == "tuned"].sort_values("tokens")
    mets = [m for m in metrics(cfg) if m in s] + ["test_ppl"]
    ncol = 3
    nrow = max(1, math.ceil(len(mets) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(13, 3.6 * nrow), squeeze=False)
    n = len(out["seeds"])
    ref = out.get("panel_reference", {})
    for ax, m in zip(axes.flat, mets):
        name = PANEL_METRICS[m][4] if m in PANEL_METRICS else "ID: held-out response perplexity"
        ax.errorbar(base.tokens, base[m], yerr=base[f"{m}_ci"] / 1.96, marker="o", capsize=3, color="tab:gray",
                    label="base (± 1 s.e.)")
        _tuned_band(ax, tuned, m, "tab:blue", f"tuned (mean of {n} seeds; band min-max)")
        if m in ref:
            ax.axhline(ref[m], ls=":", color="k", label="chance / uniform reference")
        if m in PANEL_METRICS and PANEL_METRICS[m][1] == "log" or m == "test_ppl":
            plots.log_y(ax)
        _token_axis(ax, base)
        ax.set_title(name, fontsize=9.5)
        lab = pv[m]["label"] if m in pv else id_label
        if lab:  # in the corner the curves leave free: rising curves upper left, falling ones lower left
            plots.badge(ax, lab, loc="upper left" if m in PANEL_METRICS and PANEL_METRICS[m][2] else "lower left")
    for ax in axes.flat[len(mets):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("pre-training tokens")
    fig.tight_layout()
    return fig


def _fmt(v, ci, m):
    from .instruct_panel import PANEL_METRICS
    log = m in PANEL_METRICS and PANEL_METRICS[m][1] == "log"
    if not (v == v):
        return "nan"
    if log:
        return f"{v:.4g}" + (f" ± {ci:.2g}" if ci == ci else "")
    return f"{v:.3f}" + (f" ± {ci:.3f}" if ci == ci else "")


def table_panel(out: dict, cfg: Config):
    """The panel's numbers, ``value ± 95 % half-width``, one row per checkpoint, base and tuned side
    by side (tuned: mean over seeds ± t-interval; base: ± 1.96 s.e.), the chosen LR and the reference."""
    import pandas as pd
    from .instruct_panel import PANEL_METRICS, metrics
    s = out["summary"]
    mets = [m for m in metrics(cfg) if m in s]
    if not len(s) or not mets:
        return pd.DataFrame()
    ref = out.get("panel_reference", {})
    rows = []
    for ck, g in s.groupby("checkpoint", sort=False):
        b, t = g[g.stage == "base"], g[g.stage == "tuned"]
        row = {"checkpoint": ck, "tokens": f"{g.tokens.iloc[0]:.3g}",
               "LR": f"{t.best_lr.iloc[0]:g}" if len(t) else ""}
        for m in mets:
            nm = PANEL_METRICS[m][4]
            row[f"{nm} base"] = _fmt(b[m].iloc[0], b[f"{m}_ci"].iloc[0], m) if len(b) else ""
            row[f"{nm} tuned"] = _fmt(t[m].iloc[0], t[f"{m}_ci"].iloc[0], m) if len(t) else ""
        rows.append((g.tokens.iloc[0], row))
    rows = [r for _, r in sorted(rows, key=lambda x: x[0])]
    rows.append({"checkpoint": "reference", "tokens": "", "LR": "",
                 **{f"{PANEL_METRICS[m][4]} {st}": (_fmt(ref[m], float("nan"), m) if m in ref else "")
                    for m in mets for st in ("base", "tuned")}})
    return pd.DataFrame(rows).set_index("checkpoint")


def table_panel_seeds(out: dict, cfg: Config):
    """The tuned models' panel metrics per seed at the chosen LR."""
    from .instruct_panel import metrics
    t = out["tuned"]
    mets = [m for m in metrics(cfg) if m in t]
    if not len(t) or not mets:
        import pandas as pd
        return pd.DataFrame()
    return t[["checkpoint", "seed", "lr"] + mets].set_index(["checkpoint", "seed"]).round(4)


def panel_glue(out: dict, pv: dict, pc: dict, cfg: Config) -> dict:
    """The panel section's texts, by glue name."""
    from .instruct_panel import PANEL_METRICS
    g = {"panel_sentence": pc["sentence"], "panel_label": pc["verdict"].label,
         "panel_stat": pc["verdict"].stat_text()}
    items = []
    for m, d in pv.items():
        items.append(f"{PANEL_METRICS[m][4]}{'' if d['claim'] else ' (reported, not in the claim)'}: {d['text']}")
    g["panel_verdicts"] = " · ".join(items) if items else "no panel in this run"
    return g
