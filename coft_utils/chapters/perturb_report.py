"""Chapter 02, the report: summaries, verdicts, tables, figures and texts of the Gaussian-perturbation sweep.

Everything here is computed from the records that :func:`coft_utils.chapters.perturb.sweep`
writes (one per checkpoint, γ, noise seed and source); nothing is trained or evaluated::

    from coft_utils.chapters import perturb, perturb_report
    cfg = profiles.resolve("02_gaussian_sensitivity", "cpu")
    df = perturb.sweep(perturb.load_series(cfg), cfg)              # the experiment
    s = perturb_report.summarize(df)                               # mean/std over noise seeds, Δppl
    perturb_report.scale_verdicts(df, "gutenberg")                 # calibrated tests (coft_utils.foundation.verdicts)
    perturb_report.plot_delta(s, "gutenberg")                      # Δppl against tokens, one line per γ
    V = perturb_report.chapter_verdict(df, s, "gutenberg", "wikitext", cfg)   # texts and claim rows

``THEIRS`` holds what others report (labelled as theirs in the book, never mixed with our numbers).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..foundation import plots, verdicts

__all__ = ["summarize", "replicates", "replicate_runs", "verdict", "scale_verdicts", "verdict_table", "numbers_table",
           "theirs_table", "plot_delta", "plot_absolute", "plot_other_scale", "SCALE_TEXT", "fmt_gammas",
           "describe", "base_text", "weights_text", "init_scale_used", "chapter_verdict", "THEIRS"]

# What others report (labelled as theirs in the book; never mixed with our measurements).
THEIRS = {
    "pythia70m_report": {
        "who": "Pythia-70M reproduction report (noise scaled by each tensor's empirical std)",
        "gamma": 0.04, "source": "WikiText-2",
        "points": [{"tokens": 2e9, "label": "~2B", "delta_ppl": 2.46},
                   {"tokens": 134e9, "label": "~134B", "delta_ppl": 193.86}],
    },
    # Source: the paper's Section 3 (figure number as we read it, not re-confirmed here) and the
    # first author's summary thread (bsky, 2025-03-26: "we train our own 30M parameter models and
    # test how Gaussian noise affects model parameters at different pre-training stages").
    "paper": ("Springer et al. (2025), Sec. 3 (Fig. 3), their controlled OLMo-30M models pre-trained on C4 "
              "for 4B-128B tokens, with Gaussian noise scaled by the initialization covariance: for every fixed γ the "
              "increase in C4 perplexity caused by the noise grows monotonically with pre-training "
              "tokens (progressive sensitivity), and the perturbed model's perplexity first falls "
              "then rises, a U-shape whose minimum (inflection point) comes earlier for larger γ."),
}


# --------------------------------------------------------------------------- summaries and verdicts
def summarize(df):
    """Per (source, γ, checkpoint): perturbed ppl mean/std over seeds, base ppl, Δppl mean/std,
    the half-widths of their 95 % CIs (``*_ci``), number of diverged seeds (left out of these
    descriptive means only; the verdicts see them). γ = 0 rows are the unperturbed base."""
    import numpy as np
    import pandas as pd
    df = df.copy()
    df["ppl"] = df["ppl"].astype(float)
    key = _base_key(df)  # each pre-training run's own base model
    base = (df[df.gamma == 0.0].groupby(key)["ppl"].first().rename("base_ppl"))
    d = df[df.gamma > 0.0].join(base, on=key)
    d["delta"] = d["ppl"] - d["base_ppl"]
    fin = d.assign(ppl=d.ppl.where(np.isfinite(d.ppl)), delta=d.delta.where(np.isfinite(d.delta)))
    g = fin.groupby(["source", "gamma", "checkpoint", "tokens"], sort=False)
    out = pd.DataFrame({
        "base_ppl": g["base_ppl"].first(),
        "ppl_mean": g["ppl"].mean(), "ppl_std": g["ppl"].std(ddof=1).fillna(0.0),
        "delta_mean": g["delta"].mean(), "delta_std": g["delta"].std(ddof=1).fillna(0.0),
        "n_seeds": g["noise_seed"].count(),
        "n_diverged": d.groupby(["source", "gamma", "checkpoint", "tokens"], sort=False)["diverged"].sum()
                        .astype(int),
    }).reset_index()
    from scipy import stats
    n = out["n_seeds"].clip(lower=1)
    q = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)), 0.0)
    out["ppl_ci"] = q * out["ppl_std"] / np.sqrt(n)      # half-width of the 95 % CI of the mean
    out["delta_ci"] = q * out["delta_std"] / np.sqrt(n)
    return out.sort_values(["source", "gamma", "tokens"]).reset_index(drop=True)


def _base_key(df) -> list[str]:
    """The columns that name one base model's evaluation: (series,) source, checkpoint."""
    return (["series"] if "series" in df and df["series"].nunique() > 1 else []) + ["source", "checkpoint"]


def replicate_runs(df, source: str, gamma: float) -> list | None:
    """The pre-training run (series) of each row of :func:`replicates` (noise seeds are unique
    across runs), or None for a frame of one run."""
    g = df[(df.source == source) & (df.gamma == float(gamma))]
    if "series" not in g or g["series"].nunique() <= 1:
        return None
    of = g.drop_duplicates("noise_seed").set_index("noise_seed")["series"]
    return [of[s] for s in sorted(g.noise_seed.unique())]


def replicates(df, source: str, gamma: float):
    """(tokens, checkpoints, Δppl, perturbed ppl): the per-seed values of one (source, γ), each
    ``(noise seeds × checkpoints)`` in token order; Δ against each row's own pre-training run's
    base model. A diverged seed stays in as inf/NaN."""
    d = df[(df.source == source)]
    multi = "series" in d and d["series"].nunique() > 1
    base = d[d.gamma == 0.0].groupby(["series", "checkpoint"] if multi else "checkpoint")["ppl"].first()
    g = d[d.gamma == float(gamma)]
    ck = g.drop_duplicates("checkpoint").sort_values("tokens")
    piv = g.pivot_table(index="noise_seed", columns="checkpoint", values="ppl", aggfunc="first", dropna=False)
    piv = piv[ck.checkpoint.tolist()]
    P = piv.to_numpy(float)
    if multi:
        runs = replicate_runs(df, source, gamma)
        B = np.stack([base.loc[r].reindex(ck.checkpoint).to_numpy(float) for r in runs])
    else:
        B = base[ck.checkpoint].to_numpy(float)[None, :]
    return ck.tokens.to_numpy(float), ck.checkpoint.tolist(), P - B, P


def verdict(df, source: str, alpha: float = verdicts.ALPHA) -> dict:
    """Per γ, from the per-seed records (not the means): does the damage (Δppl) rise with
    tokens, is the perturbed perplexity U-shaped? Each test at α / (number of γ)."""
    import numpy as np
    gammas = sorted(g for g in df[df.source == source].gamma.unique() if g > 0)
    a = verdicts.alpha_for(len(gammas), alpha)
    out, runs = {}, {}
    for g in gammas:
        tok, labels, D, P = replicates(df, source, g)
        rr = runs[float(g)] = replicate_runs(df, source, g)  # None: one pre-training run
        bad = ~np.isfinite(P)
        note = (f"{int(bad.sum())} of {P.size} perturbed evaluations at γ={g:g} diverged (inf/NaN perplexity; "
                f"checkpoints {', '.join(l for l, b in zip(labels, bad.any(axis=0)) if b)})" if bad.any() else "")
        out[float(g)] = {"rises": verdicts.diverged(verdicts.rises(tok, D, alpha=a, unit="ppl per doubling of tokens",
                                                                   runs=rr), note),
                         "u": verdicts.diverged(verdicts.u_shape(tok, P, alpha=a, runs=rr), note), "labels": labels,
                         "tokens": tok, "ppl": P, "n_diverged": int(bad.sum()), "runs": rr}
    return out


def scale_verdicts(df, source: str, alpha: float = verdicts.ALPHA) -> dict:
    """One scale's claim rows: damage rises (over γ), U-shape (over γ), minimum earlier for larger γ."""
    v = verdict(df, source, alpha)
    rises = verdicts.combine({g: x["rises"] for g, x in v.items()}, over="γ")
    u = verdicts.combine({g: x["u"] for g, x in v.items()}, over="γ")
    curves = {g: x["ppl"] for g, x in v.items()}
    tok = next(iter(v.values()))["tokens"] if v else []
    rr = {g: x["runs"] for g, x in v.items()}
    one = all(r is None for r in rr.values())
    earlier = verdicts.minimum_shift(tok, curves, direction="earlier", what="γ", runs=None if one else rr) if v else None
    return {"per_gamma": v, "rises": rises, "u": u, "earlier": earlier}


def verdict_table(df, sources: Iterable[str]):
    """One row per (source, γ): each test's label, statistic, CI and where the minimum is."""
    import pandas as pd
    rows = []
    for src in sources:
        for g, x in verdict(df, src).items():
            r, u = x["rises"], x["u"]
            k = u.detail.get("argmin")
            rows.append({"source": src, "gamma": g, "damage rises": r.label, "Δppl per doubling": r.statistic,
                         "CI": f"[{r.ci[0]:.3g}, {r.ci[1]:.3g}]", "U-shape": u.label,
                         "U statistic (%)": u.statistic, "U CI (%)": f"[{u.ci[0]:.3g}, {u.ci[1]:.3g}]",
                         "minimum at": x["labels"][k] if k is not None else "", "seeds": r.n_replicates,
                         "diverged": x["n_diverged"]})
    return pd.DataFrame(rows)


def numbers_table(summary):
    """The summary as displayed in section (c): tokens to 3 significant digits, values to 3
    decimals, indexed by (source, γ, checkpoint)."""
    table = summary.copy()
    table["tokens"] = table["tokens"].map(lambda t: f"{t:.3g}")
    return table.round(3).set_index(["source", "gamma", "checkpoint"])


def theirs_table(summary, sources: Iterable[str], series_name: str, scale: str):
    """Their Pythia-70M numbers (first row, from ``THEIRS``) beside ours, one row per (source, γ):
    Δppl at the first and last checkpoint and the growth last/first (blank where the first Δ
    is not positive)."""
    import pandas as pd
    th = THEIRS["pythia70m_report"]
    rows = [{"who": "theirs: " + th["who"], "source": th["source"], "gamma": th["gamma"],
             "first checkpoint": th["points"][0]["label"], "Δppl first": th["points"][0]["delta_ppl"],
             "last checkpoint": th["points"][-1]["label"], "Δppl last": th["points"][-1]["delta_ppl"]}]
    for src in sources:
        for g, d in summary[summary.source == src].groupby("gamma"):
            d = d.sort_values("tokens")
            rows.append({"who": f"ours: {series_name}, scale={scale}", "source": src, "gamma": g,
                         "first checkpoint": d.checkpoint.iloc[0], "Δppl first": d.delta_mean.iloc[0],
                         "last checkpoint": d.checkpoint.iloc[-1], "Δppl last": d.delta_mean.iloc[-1]})
    comp = pd.DataFrame(rows)
    comp["growth (last/first)"] = (comp["Δppl last"] / comp["Δppl first"]).where(comp["Δppl first"] > 0)
    return comp


def _token_axis(ax, s):
    """Log token axis with one labelled tick per checkpoint (no crowded minor labels)."""
    ck = s.drop_duplicates("checkpoint").sort_values("tokens")
    plots.token_axis(ax, ck.tokens, ck.checkpoint)


def plot_delta(summary, source: str, ax=None, theirs: bool = False):
    """Δ perplexity (perturbed − base) against pre-training tokens, one line per γ, log axes."""
    import matplotlib.pyplot as plt
    import numpy as np
    if ax is None:
        _, ax = plt.subplots()
    s = summary[summary.source == source]
    positive = True
    for gamma, d in s.groupby("gamma"):
        d = d.sort_values("tokens")
        ax.errorbar(d.tokens, d.delta_mean, yerr=d.delta_ci, marker="o", ms=4, capsize=2,
                    label=f"γ = {gamma:g}")
        positive &= bool((d.delta_mean > 0).all())
    if theirs:
        th = THEIRS["pythia70m_report"]
        ax.plot([p["tokens"] for p in th["points"]], [p["delta_ppl"] for p in th["points"]], "k--x",
                label=f"theirs: Pythia-70M report, γ={th['gamma']} ({th['source']})")
    _token_axis(ax, s)
    if positive:
        plots.log_y(ax)
    else:
        ax.set_yscale("symlog", linthresh=max(1e-3, float(np.nanmin(np.abs(s.delta_mean[s.delta_mean != 0]))
                                                        if (s.delta_mean != 0).any() else 1.0)))
    ax.set_xlabel("pre-training tokens")
    ax.set_ylabel("Δ perplexity (perturbed − base)")
    ax.set_title(f"Sensitivity to Gaussian noise ({source})")
    ax.legend(fontsize=8)
    return ax


def plot_absolute(summary, source: str, ax=None):
    """Perturbed perplexity against tokens, with the unperturbed base and each γ's minimum."""
    import matplotlib.pyplot as plt
    import numpy as np
    if ax is None:
        _, ax = plt.subplots()
    s = summary[summary.source == source]
    base = s.drop_duplicates("checkpoint").sort_values("tokens")
    ax.plot(base.tokens, base.base_ppl, "k-o", ms=4, label="base (γ = 0)")
    for gamma, d in s.groupby("gamma"):
        d = d.sort_values("tokens")
        line = ax.errorbar(d.tokens, d.ppl_mean, yerr=d.ppl_ci, marker="o", ms=4, capsize=2,
                           label=f"γ = {gamma:g}")
        pm = d.ppl_mean.to_numpy(float)
        if np.isfinite(pm).any():
            k = int(np.nanargmin(np.where(np.isfinite(pm), pm, np.nan)))
            ax.plot([d.tokens.iloc[k]], [pm[k]], marker="*", ms=14, color=line[0].get_color(),
                    mec="k", ls="none")
    ax.plot([], [], "k*", ms=10, ls="none", label="minimum (inflection point)")
    _token_axis(ax, s)
    plots.log_y(ax)
    ax.set_xlabel("pre-training tokens")
    ax.set_ylabel("perplexity")
    ax.set_title(f"Perturbed perplexity ({source})")
    ax.legend(fontsize=8)
    return ax


def plot_other_scale(summary2, source: str, scale: str):
    """Section (e): the comparison sweep's Δppl and perturbed perplexity side by side, titled
    with its noise scale; returns the figure."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.2))
    plot_delta(summary2, source, ax=axes[0])
    plot_absolute(summary2, source, ax=axes[1])
    for ax in axes:
        ax.set_title(ax.get_title() + f", scale={scale}")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- the chapter's verdict
SCALE_TEXT = {"init": "the initialization standard deviation (the paper's protocol)",
              "empirical": "each tensor's own empirical standard deviation (the Pythia-70M report's protocol)"}


def fmt_gammas(gs) -> str:
    return ", ".join(f"{g:g}" for g in gs) if gs else "none"


def describe(df, source: str, scale: str):
    """One paragraph on one noise scale at one source, from :func:`scale_verdicts`."""
    V = scale_verdicts(df, source)
    r, u, e = V["rises"], V["u"], V["earlier"]
    mins = "; ".join(f"γ={g:g}: {x['labels'][x['u'].detail['argmin']]}" if "argmin" in x["u"].detail
                     else f"γ={g:g}: —" for g, x in V["per_gamma"].items())
    div = sum(x["n_diverged"] for x in V["per_gamma"].values())
    text = (f"With noise scaled by {SCALE_TEXT[scale]}: the damage (Δ perplexity) rising with tokens is "
            f"**{r.label}** ({r.reason}; the smallest p-value, at γ={r.detail.get('picked', '?')}: {r.stat_text()}); "
            f"a U-shape of the perturbed perplexity is "
            f"**{u.label}** ({u.reason}; the smallest p-value, at γ={u.detail.get('picked', '?')}: {u.stat_text()}). Minimum of the mean perturbed perplexity at: "
            f"{mins}." + (f" Minimum earlier for larger γ: **{e.label}** ({e.stat_text()})." if e is not None else "")
            + (f" {div} perturbed evaluations diverged (inf/NaN): those γ are inconclusive, not dropped." if div else ""))
    return text, V


def base_text(summary, source: str) -> str:
    """How the unperturbed perplexity moves over the series at one source."""
    import numpy as np
    b = summary[summary.source == source].drop_duplicates("checkpoint").sort_values("tokens")
    k = int(np.argmin(b.base_ppl.to_numpy()))
    mono = bool((np.diff(b.base_ppl.to_numpy()) <= 0).all())
    return (f"the unperturbed {source} perplexity goes from {b.base_ppl.iloc[0]:.2f} ({b.checkpoint.iloc[0]}) "
            f"to {b.base_ppl.iloc[-1]:.2f} ({b.checkpoint.iloc[-1]}), "
            + ("decreasing at every checkpoint" if mono else
               f"lowest at {b.checkpoint.iloc[k]} ({b.base_ppl.iloc[k]:.2f}): the base model itself is not "
               "monotone there, so a minimum of the perturbed perplexity on this source is not only the noise's doing"))


def weights_text(ws, init_s: float | None) -> str:
    """How the weights' scale grows over the series (from
    :func:`coft_utils.chapters.perturb.weight_stats`)."""
    m = ws.median_tensor_std
    return (f"the median over tensors of each tensor's standard deviation goes from {m.iloc[0]:.4f} "
            f"({ws.checkpoint.iloc[0]}) to {m.iloc[-1]:.4f} ({ws.checkpoint.iloc[-1]}), "
            f"{m.iloc[-1] / m.iloc[0]:.1f}x"
            + (f", while the initialization scale stays {init_s:g}" if init_s is not None else ""))


def init_scale_used(df, cfg, df2=None) -> float | None:
    """The initialization std the init-scale sweep used (the main sweep's when ``cfg.scale`` is
    "init", else the comparison sweep's ``df2``); None when no init-scale sweep was run."""
    init_df = df if cfg.scale == "init" else df2
    return (float(init_df.init_std_used.dropna().iloc[0])
            if init_df is not None and init_df.init_std_used.notna().any() else None)


def chapter_verdict(df, summary, src_in: str, src_out: str, cfg, df2=None, cfg2=None) -> dict:
    """The chapter's verdict from its own records: per scale and source, the base models, and
    the claim rows (one pair per noise scale) for the claims page."""
    text_in, V_in = describe(df, src_in, cfg.scale)
    text_out = describe(df, src_out, cfg.scale)[0] if src_out != src_in else ""
    base = base_text(summary, src_in) + ("; " + base_text(summary, src_out) if src_out != src_in else "") + "."
    scales = {cfg.scale: (V_in, cfg)}
    text_cmp = ""
    if df2 is not None and cfg2 is not None:
        text_cmp, V2 = describe(df2, src_in, cfg2.scale)
        scales[cfg2.scale] = (V2, cfg2)
    rows = {}
    for sc, (V, c) in scales.items():
        where = f"{src_in}, {sc} scale, γ = {fmt_gammas(sorted(V['per_gamma']))}"
        rows[f"sensitivity_noise_{sc}"] = (V["rises"], f"{where}: Δ perplexity rising with tokens, {V['rises'].reason}")
        rows[f"ushape_noise_{sc}"] = (V["u"], f"{where}: interior minimum of the perturbed perplexity, {V['u'].reason}"
                                      + (f"; minimum earlier for larger γ: {V['earlier'].label}" if V["earlier"] else ""))
    main = V_in
    headline = (f"Noise scaled by {SCALE_TEXT[cfg.scale]}: damage rising with tokens is {main['rises'].label}, "
                f"a U-shape is {main['u'].label}.")
    return {"in": text_in, "out": text_out, "cmp": text_cmp, "base": base, "claims": rows, "headline": headline,
            "label": main["u"].label, "V": V_in, "numbers": {
                sc: {str(g): {"rises": x["rises"].to_dict(), "u": x["u"].to_dict()} for g, x in V["per_gamma"].items()}
                for sc, (V, _) in scales.items()}}
