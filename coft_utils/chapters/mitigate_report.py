"""Chapter 06, the analysis: matrices over seeds, the verdicts, figures and texts of each remedy.

Every measure is in nats, relative to the checkpoint's own base model: *sensitivity* = loss of
the perturbed model − loss of the unperturbed one on the same blocks (chapter 02's records),
*forgetting* = pre-training-domain loss after fine-tuning − before (chapter 03's records)::

    from coft_utils.chapters import mitigate, mitigate_report as mr
    run = mitigate.run_all(cfg)
    s = mr.schedule_summary(run, cfg)      # {"claims": {id: (Verdict, measured)}, "table", "text", ...}
    r = mr.l2_summary(run, cfg)            # the penalty's strengths
    p = mr.lr_rule_summary(run, cfg)       # ID-optimal LR vs the LR that holds forgetting
    mr.fig_schedules(run, cfg); mr.fig_l2(run, cfg); mr.fig_pareto(run, cfg, p)   # mitigate_plots

Verdicts (``coft_utils.foundation.verdicts``; each calibrated in ``tests/test_verdicts.py``):
differences between two curves at equal tokens are :func:`~coft_utils.foundation.verdicts.differs`
-- paired by seed where the seeds are common random numbers (chapter 02 draws the noise of a
checkpoint from its label, γ and seed, so wsd and constant get the same draw; a fine-tuning seed
fixes the data order for every schedule and strength) -- with the per-checkpoint standard error
only for the perturbation (independent across checkpoints) and one mean per seed otherwise;
moves of the minimum are :func:`~coft_utils.foundation.verdicts.minimum_shift`; several γ or
strengths in one row are Bonferroni-combined. The cosine suite trains at its own peak LR (chapter
00's scan), so it is drawn and tabled but not in a claim row: wsd, wsd_short and constant share
the trunk and its LR and differ only in the anneal.
"""
from __future__ import annotations

import math

import numpy as np

from ..foundation import plots, verdict_design, verdicts
from .mitigate import anneal_fraction

__all__ = ["matrix", "sensitivity", "forgetting", "schedule_summary", "l2_summary", "lr_rule", "lr_rule_summary",
           "claim_records",
           "fig_schedules", "fig_l2", "fig_pareto", "THEIRS"]

THEIRS = {
    "schedule": "arXiv 2603.16127: warmup-stable-only (no decay) checkpoints beat decayed ones after SFT at 1B and 8B; "
                "arXiv 2605.02105: sharpness-aware pre-training, large LRs and short annealing cut forgetting by up "
                "to 80 % at 20-150M parameters (as summarized in this chapter's issue; numbers not re-checked here)",
    "l2": "Springer et al. (2025), Theorem 4.7 (linear model): regularizing fine-tuning toward the pre-trained "
          "weights delays the inflection point at a cost in fine-tuning loss; not tested on language models there",
    "lr": "arXiv 2604.13627: at equal SFT loss a smaller fine-tuning LR forgets less (as summarized in the issue)",
}


# --------------------------------------------------------------------------- matrices
def matrix(df, value: str, rep: str):
    """(tokens sorted, Y[replicate, checkpoint]) of column ``value`` (NaN where a unit is missing)."""
    p = df.pivot_table(index=rep, columns="tokens", values=value, aggfunc="first", dropna=False)
    p = p.reindex(columns=sorted(p.columns))
    return np.asarray(p.columns, float), p.to_numpy(float)


def _nm(x, axis=None):
    """nanmean without the warning of an all-NaN slice (a diverged checkpoint: NaN, shown as such)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _nargmin(x) -> int:
    return int(np.nanargmin(x))


def _diverged_note(df) -> str:
    if "diverged" not in df or not df["diverged"].fillna(False).astype(bool).any():
        return ""
    d = df[df["diverged"].fillna(False).astype(bool)]
    where = ", ".join(sorted({f"{r.checkpoint} seed {r[_rep(df)]}" for _, r in d.iterrows()}))
    return f"{len(d)} unit(s) diverged ({where}); not scored"


def _rep(df) -> str:
    return "noise_seed" if "noise_seed" in df else "seed"


def sensitivity(run, schedule: str, gamma: float, what: str = "delta"):
    """(tokens, Y) of one schedule at γ: ``delta`` = perturbed − unperturbed loss (nats) per noise
    seed; ``ppl`` = the perturbed perplexity."""
    df = run["sensitivity"]
    d = df[df.schedule == schedule]
    if "diverged" in d:  # a diverged evaluation is recorded, never scored
        d = d.assign(loss=d["loss"].where(~d["diverged"].fillna(False).astype(bool)),
                     ppl=d["ppl"].where(~d["diverged"].fillna(False).astype(bool)))
    base = d[d.gamma == 0.0].set_index("checkpoint")["loss"]
    g = d[np.isclose(d.gamma, gamma)].copy()
    g["delta"] = g["loss"] - g["checkpoint"].map(base)
    return matrix(g, {"delta": "delta", "ppl": "ppl"}[what], "noise_seed")


def forgetting(df, what: str = "forgetting"):
    """(tokens, Y[seed, checkpoint]) of fine-tuning records: ``forgetting`` (OOD loss after −
    before, nats), ``after`` (OOD perplexity after), ``id`` (test ID perplexity), ``dist``."""
    d = df.assign(forgetting=df.ood_loss_after - df.ood_loss_before)
    col = {"forgetting": "forgetting", "after": "ood_ppl_after", "id": "test_id_ppl", "dist": "dist_to_start"}[what]
    if col not in d:
        d[col] = math.nan
    return matrix(d, col, "seed")


def _vtext(v) -> str:
    ci = "" if v.ci is None or not all(map(math.isfinite, v.ci)) else f" [{v.ci[0]:+.3g}, {v.ci[1]:+.3g}]"
    stat = "" if not math.isfinite(v.statistic) else f"{v.statistic:+.3g}{ci} {v.unit}"
    return f"**{v.label}** ({stat}; {v.n_replicates} seeds{'; ' + v.reason if v.reason else ''})"


# --------------------------------------------------------------------------- 1. schedules
def _missing(claim: str, need, have) -> verdicts.Verdict | None:
    miss = [s for s in need if s not in have]
    if miss:
        return verdicts.Verdict(claim=claim, label="inconclusive", reason=f"schedule(s) {miss} not run")
    return None


def schedule_summary(run, cfg) -> dict:
    """The schedule comparison: per-schedule table, pairwise differences, the claim rows
    ``anneal_sensitivity`` (wsd vs constant, every γ), ``anneal_forgetting`` (wsd vs constant),
    ``short_anneal`` (wsd vs wsd_short, every γ and forgetting) and ``anneal_inflection``
    (minimum of the perturbed and the fine-tuned OOD curves vs the anneal fraction)."""
    import pandas as pd
    have, G, A = list(cfg.schedules), list(cfg.gammas), verdicts.ALPHA
    ft = run["forgetting"]
    fr = {s: ft[ft.schedule == s] for s in have}

    def pair(a, b, m, claim):
        out = {}
        for g in G:
            (t, Ya), (_, Yb) = sensitivity(run, a, g), sensitivity(run, b, g)
            out[f"γ={g:g}"] = verdicts.differs(Ya, Yb, claim=claim, paired=True, independent=True, alpha=A / m,
                                               tokens=t, unit="nats, mean over checkpoints")
        (t, Fa), (_, Fb) = forgetting(fr[a]), forgetting(fr[b])
        v = verdicts.differs(Fa, Fb, claim=claim, paired=True, alpha=A / m, tokens=t,
                             unit="nats, mean over checkpoints")
        out["forgetting"] = verdicts.diverged(v, _diverged_note(pd.concat([fr[a], fr[b]])))
        return out

    claims, pairs = {}, {}
    for a, b in (("wsd", "constant"), ("wsd_short", "constant"), ("wsd", "wsd_short"), ("cosine", "constant")):
        if a in have and b in have:
            pairs[(a, b)] = pair(a, b, len(G), f"{a} above {b}")
    # claim rows (the sensitivity members at α/len(G); forgetting at α on its own row)
    c = "annealed (wsd) checkpoints are more sensitive to Gaussian noise than un-annealed (constant) ones"
    miss = _missing(c, ("wsd", "constant"), have)
    if miss is None:
        m = {k: v for k, v in pairs[("wsd", "constant")].items() if k != "forgetting"}
        row = verdicts.combine(m, over="γ")
        claims["anneal_sensitivity"] = (row, _measured(m, "Δ loss (perturbed − base), wsd − constant"))
        (t, Fa), (_, Fb) = forgetting(fr["wsd"]), forgetting(fr["constant"])
        v = verdicts.diverged(verdicts.differs(Fa, Fb, claim="annealed (wsd) checkpoints forget more than constant ones",
                                               paired=True, tokens=t, unit="nats, mean over checkpoints"),
                              _diverged_note(pd.concat([fr["wsd"], fr["constant"]])))
        claims["anneal_forgetting"] = (v, f"OOD forgetting at lr={cfg.lr:g}, wsd − constant: {_vtext(v)}")
    else:
        claims["anneal_sensitivity"] = (miss, miss.reason)
        claims["anneal_forgetting"] = (miss, miss.reason)
    miss = _missing("long anneal above short", ("wsd", "wsd_short"), have)
    if miss is None:
        m = pair("wsd", "wsd_short", len(G) + 1, "a long anneal (wsd) is more sensitive / forgets more than a short one")
        claims["short_anneal"] = (verdicts.combine(m, over="measures"),
                                  _measured(m, "wsd (long anneal) − wsd_short (short anneal)"))
    else:
        claims["short_anneal"] = (miss, miss.reason)
    order = [s for s in ("constant", "wsd_short", "wsd") if s in have]
    fracs = {s: anneal_fraction(cfg.profile, s) for s in have}
    if len(order) >= 2:
        m_n = len(G) + 1
        mem = {}
        for g in G:
            mem[f"perturbed, γ={g:g}"] = verdicts.minimum_shift(
                *_curves({fracs[s]: sensitivity(run, s, g, "ppl") for s in order}), direction="earlier",
                alpha=A / m_n, what="anneal fraction")
        mem["fine-tuned OOD"] = verdicts.minimum_shift(
            *_curves({fracs[s]: forgetting(fr[s], "after") for s in order}), direction="earlier", alpha=A / m_n,
            what="anneal fraction")
        row = verdicts.combine(mem, over="curves")
        mins = {k: v.detail.get("argmin_tokens") for k, v in mem.items()}
        claims["anneal_inflection"] = (row, f"minimum (tokens) per anneal fraction {[fracs[s] for s in order]}: "
                                            + "; ".join(f"{k}: {_fmt_list(x)}" for k, x in mins.items()))
    else:
        claims["anneal_inflection"] = (verdicts.Verdict(claim="minimum earlier for longer anneals",
                                                        label="inconclusive", reason="fewer than two of constant, "
                                                        "wsd_short, wsd run"), "fewer than two schedules")
    rows = []
    for s in have:
        t, F = forgetting(fr[s])
        row = {"schedule": s, "anneal fraction": fracs[s], "peak lr": run["peak_lr"].get(s)}
        for g in G:
            _, Y = sensitivity(run, s, g)
            row.update({f"Δloss γ={g:g} first": _nm(Y[:, 0]), f"Δloss γ={g:g} last": _nm(Y[:, -1])})
        after = forgetting(fr[s], "after")[1]
        row.update({"forgetting first": _nm(F[:, 0]), "forgetting last": _nm(F[:, -1]),
                    "OOD-after min at": _fmt_tokens(t[_nargmin(_nm(after, 0))]) if np.isfinite(after).any() else "—"})
        rows.append(row)
    # reported, not a claim row (looked at after seeing the per-checkpoint differences change sign):
    # does the anneal's extra sensitivity grow with tokens? (paired differences, independent across checkpoints)
    grows = {}
    if "wsd" in have and "constant" in have:
        for g in G:
            (t, Ya), (_, Yb) = sensitivity(run, "wsd", g), sensitivity(run, "constant", g)
            grows[g] = verdicts.rises(t, Ya - Yb, alpha=A / len(G))
    diffs = pd.DataFrame([{"A": a, "B": b, "measure": k, "label": v.label, "A − B (nats)": v.statistic,
                           "CI low": v.ci[0] if v.ci else math.nan, "CI high": v.ci[1] if v.ci else math.nan,
                           "seeds": v.n_replicates} for (a, b), m in pairs.items() for k, v in m.items()])
    return {"claims": claims, "table": pd.DataFrame(rows), "pairs": diffs, "grows": grows,
            "text": _schedule_text(claims, cfg, grows, pairs.get(("cosine", "constant")))}


def _curves(d: dict):
    """({key: (tokens, Y)}) -> (tokens, {key: Y}) for minimum_shift (the same tokens for all)."""
    t = next(iter(d.values()))[0]
    return t, {k: Y for k, (_, Y) in d.items()}


def _fmt_tokens(x) -> str:
    return plots.fmt_tokens(float(x))


def _fmt_list(xs) -> str:
    return "—" if not xs else "[" + ", ".join(_fmt_tokens(x) for x in xs) + "]"


def _measured(members: dict, what: str) -> str:
    return f"{what}: " + "; ".join(f"{k} {v.label} ({v.statistic:+.3g} {v.unit.split(',')[0]})"
                                   for k, v in members.items())


def _labels(members: dict) -> str:
    """'key: label, ...' of a dict of verdicts."""
    return ", ".join(f"{k}: {v.label}" for k, v in members.items())


def _schedule_text(claims, cfg, grows: dict, cosine: dict | None) -> str:
    s, f, sh, inf = (claims[k][0] for k in ("anneal_sensitivity", "anneal_forgetting", "short_anneal",
                                              "anneal_inflection"))
    out = (f"**Is an annealed checkpoint more sensitive than an un-annealed one at equal tokens?** Gaussian "
           f"sensitivity, wsd vs constant (same trunk, same peak LR; only the anneal differs), mean over the "
           f"checkpoints: {_vtext(s)} (per γ: {_member_labels(s)})")
    if grows:
        out += ("; the difference *rising with tokens* (reported, not a claim row: examined after the per-checkpoint "
                "differences were seen to change sign): " + ", ".join(f"γ={g:g} {v.label} ({v.statistic:+.3g} nats "
                                                                       "per doubling)" for g, v in grows.items()))
    out += (f". Fine-tuning forgetting at lr={cfg.lr:g}: {_vtext(f)}. **Long vs short anneal** (wsd vs wsd_short): "
            f"{_vtext(sh)}. **Does the anneal move the inflection point?** (the minimum of the perturbed and the "
            f"fine-tuned OOD curves earlier for longer anneals): {_vtext(inf)}.")
    if cosine:
        out += (" Cosine against constant (not a claim row: cosine trains at its own, higher peak LR, so the anneal "
                f"and the LR are confounded): {_labels(cosine)}.")
    return out


def _member_labels(v) -> str:
    """'γ=0.2: observed, ...' from a combined row (its detail's member labels), or its own label."""
    lab = v.detail.get("labels")
    return ", ".join(f"{k}: {x}" for k, x in lab.items()) if lab else v.label


# --------------------------------------------------------------------------- 2. regularization
def l2_summary(run, cfg) -> dict:
    """Forgetting, OOD after, ID and distance per strength; claim rows ``l2_forgetting`` (every λ >
    0 against λ = 0, paired by seed) and ``l2_inflection`` (the minimum later for larger λ); the ID
    cost per λ; chapter 05's exact verdict beside it (when ``run["theory"]``)."""
    import pandas as pd
    df, A = run["l2"], verdicts.ALPHA
    lams = sorted(float(x) for x in df.l2_start.unique())
    by = {lam: df[df.l2_start == lam] for lam in lams}
    pos = [lam for lam in lams if lam > 0]
    t, F0 = forgetting(by[0.0])
    mem, cost, rows = {}, {}, []
    for lam in pos:
        _, F = forgetting(by[lam])
        note = _diverged_note(pd.concat([by[0.0], by[lam]]))
        mem[f"λ={lam:g}"] = verdicts.diverged(verdicts.differs(
            F0, F, claim="the L2 penalty lowers forgetting", paired=True, alpha=A / len(pos), tokens=t,
            unit="nats less forgetting, mean over checkpoints"), note)
        _, I0 = forgetting(by[0.0], "id")
        _, I = forgetting(by[lam], "id")
        cost[lam] = verdicts.diverged(verdicts.differs(I, I0, claim="the penalty costs ID perplexity", log=True,
                                                       paired=True, tokens=t), note)
    for lam in lams:
        _, F = forgetting(by[lam])
        _, Aft = forgetting(by[lam], "after")
        _, I = forgetting(by[lam], "id")
        _, D = forgetting(by[lam], "dist")
        k = _nargmin(_nm(Aft, 0)) if np.isfinite(Aft).any() else None
        rows.append({"λ": lam, "forgetting first": _nm(F[:, 0]), "forgetting last": _nm(F[:, -1]),
                     "OOD-after min at": _fmt_tokens(t[k]) if k is not None else "—",
                     "test ID ppl first": _nm(I[:, 0]), "test ID ppl last": _nm(I[:, -1]),
                     "‖θ−θ0‖ last": _nm(D[:, -1]) if np.isfinite(D).any() else math.nan,
                     "ID cost": cost[lam].label if lam in cost else "—",
                     "ID cost (%)": cost[lam].statistic if lam in cost else math.nan})
    row = verdicts.combine(mem, over="strengths")
    shift = verdicts.minimum_shift(t, {lam: forgetting(by[lam], "after")[1] for lam in lams}, direction="later",
                                   what="λ")
    claims = {"l2_forgetting": (row, _measured(mem, "forgetting at λ = 0 minus at λ")),
              "l2_inflection": (shift, f"minimum of the OOD perplexity after fine-tuning at "
                                       f"{_fmt_list(shift.detail.get('argmin_tokens'))} for λ = {lams}")}
    theory = None
    if run.get("theory") is not None:
        from ..foundation import registry
        theory = registry.report("05_linear_theory").claim_verdicts(run["theory"]).get("linear_regularization")
    return {"claims": claims, "table": pd.DataFrame(rows), "cost": cost, "theory": theory,
            "text": _l2_text(claims, cost, theory, cfg, float(t[-1]) if len(t) else None)}


def _l2_text(claims, cost, theory, cfg, t_last=None) -> str:
    f, s = claims["l2_forgetting"][0], claims["l2_inflection"][0]
    c = "; ".join(f"λ={lam:g}: {v.label} ({v.statistic:+.3g} %)" for lam, v in cost.items())
    th = f" Chapter 05's linear model at the same question: **{theory[0].label}** ({theory[1]})." if theory else ""
    mins = s.detail.get("argmin_tokens") or []
    where = ""
    if mins:
        keys = s.detail.get("keys", [])
        where = (" Minima of the OOD perplexity after fine-tuning: "
                 + ", ".join(f"λ={k:g} at {_fmt_tokens(x)}" for k, x in zip(keys, mins)))
        if t_last is not None and any(x == t_last for x in mins):
            where += " (at the last checkpoint: no inflection inside the token range)"
        if "frac_agree" in s.detail:
            where += (f"; {100 * s.detail['frac_agree']:.0f} % of bootstrap draws over seeds give τ of the claimed "
                      "sign (the position of each minimum is itself uncertain where the seed spread is large)")
        where += "."
    return (f"**Does the penalty toward the pre-trained weights reduce forgetting?** {_vtext(f)}. **Does it move "
            f"the inflection point later?** {_vtext(s)}.{where} **At what ID cost** (test ID perplexity, λ vs 0, mean "
            f"over checkpoints): {c}.{th}")


def claim_records(run) -> dict:
    """{claim id: the frame of records its verdict is computed from} (for ``claims.record``)."""
    return {"anneal_sensitivity": run["sensitivity"], "short_anneal": run["sensitivity"],
            "anneal_inflection": run["sensitivity"], "anneal_forgetting": run["forgetting"],
            "l2_forgetting": run["l2"], "l2_inflection": run["l2"], "lr_rule": run["lr_grid"]}


# --------------------------------------------------------------------------- 3. LR scaled down
def lr_rule(df):
    """Cross-fitted LR choice per checkpoint, from chapter 04's grid on one suite: for each seed,
    the LRs are chosen on the *other* seeds' means and scored on it. ``opt``: the lowest validation
    ID perplexity; ``hold``: the largest LR whose forgetting is at most the forgetting of the
    first checkpoint at its ID-optimal LR (the smallest LR when none is). Returns tokens, the
    LRs chosen per (seed, checkpoint) and the scores {rule: {measure: Y[seed, checkpoint]}}."""
    d = df.assign(forgetting=df.ood_loss_after - df.ood_loss_before)
    lrs = np.array(sorted(d.lr.unique()))
    seeds = sorted(d.seed.unique())
    tokens = np.array(sorted(d.tokens.unique()), float)
    cube = {m: np.stack([matrix(d[d.lr == lr], m, "seed")[1] for lr in lrs])
            for m in ("forgetting", "val_id_ppl", "test_id_ppl", "ood_ppl_after")}  # [lr, seed, ckpt]
    R, K = len(seeds), len(tokens)
    choice = {"opt": np.zeros((R, K), int), "hold": np.zeros((R, K), int)}
    score = {r: {m: np.full((R, K), np.nan) for m in cube} for r in choice}
    opts, _ = verdict_design.crossfit_choice(cube["val_id_ppl"], skipna=True)  # [seed, ckpt], on the other seeds
    for i in range(R):
        rest = [j for j in range(R) if j != i] or [i]
        with np.errstate(all="ignore"):
            fg = _nm(cube["forgetting"][:, rest], axis=1)
        opt = opts[i]
        target = fg[opt[0], 0]
        ok = np.isfinite(fg) & (fg <= target + 1e-12)
        hold = np.array([max(np.flatnonzero(ok[:, k]), default=0) for k in range(K)])
        for name, ch in (("opt", opt), ("hold", hold)):
            choice[name][i] = ch
            for m in cube:
                score[name][m][i] = cube[m][ch, i, np.arange(K)]
    return {"tokens": tokens, "lrs": lrs, "choice": {k: lrs[v] for k, v in choice.items()}, "score": score}


def lr_rule_summary(run, cfg) -> dict:
    """The claim row ``lr_rule`` (the forgetting-holding LR forgets less than the ID-optimal one at
    the later checkpoints, paired by seed), its ID cost, and whether forgetting still grows under
    each rule."""
    import pandas as pd
    r = lr_rule(run["lr_grid"])
    t, S = r["tokens"], r["score"]
    note = _diverged_note(run["lr_grid"])
    v = verdicts.diverged(verdicts.differs(S["opt"]["forgetting"], S["hold"]["forgetting"],
                                           claim="lowering the LR with tokens forgets less than the ID-optimal LR",
                                           paired=True, late_half=True, tokens=t,
                                           unit="nats less forgetting, later half of the checkpoints"), note)
    cost = verdicts.differs(S["hold"]["test_id_ppl"], S["opt"]["test_id_ppl"], claim="the lower LR costs ID perplexity",
                            log=True, paired=True, late_half=True, tokens=t)
    grow = {k: verdicts.rises(t, S[k]["forgetting"]) for k in S}
    rows = [{"checkpoint": _fmt_tokens(tk), "ID-optimal LR (per seed)": ", ".join(f"{x:g}" for x in r["choice"]["opt"][:, k]),
             "forgetting-holding LR (per seed)": ", ".join(f"{x:g}" for x in r["choice"]["hold"][:, k]),
             "forgetting at ID-opt": _nm(S["opt"]["forgetting"][:, k]),
             "forgetting held": _nm(S["hold"]["forgetting"][:, k]),
             "test ID ppl at ID-opt": _nm(S["opt"]["test_id_ppl"][:, k]),
             "test ID ppl held": _nm(S["hold"]["test_id_ppl"][:, k])} for k, tk in enumerate(t)]
    measured = (f"forgetting, ID-optimal − held LR (later half): {_vtext(v)}; ID cost {cost.label} "
                f"({cost.statistic:+.3g} %)")
    text = (f"**Does lowering the fine-tuning LR with tokens reduce forgetting, and at what ID cost?** The "
            f"forgetting-holding LR against the ID-optimal LR at the later checkpoints: {_vtext(v)}; its cost in "
            f"test ID perplexity: {_vtext(cost)}. Forgetting still rising with tokens: at the ID-optimal LR "
            f"{_vtext(grow['opt'])}, at the held LR {_vtext(grow['hold'])}.")
    l2 = run.get("l2")
    if l2 is not None and len(l2) and len(t):
        last = l2[np.isclose(l2.tokens, t[-1]) & (l2.l2_start > 0)]
        pts = [f"λ={lam:g}: forgetting {_nm(g.ood_loss_after - g.ood_loss_before):.3g} nats at test ID ppl "
               f"{_nm(g.test_id_ppl):.3g}" for lam, g in last.groupby("l2_start")]
        if pts:
            text += (f" At the last checkpoint ({_fmt_tokens(t[-1])}; descriptive, seed means) the held LR reaches "
                     f"forgetting {_nm(S['hold']['forgetting'][:, -1]):.3g} nats at test ID ppl "
                     f"{_nm(S['hold']['test_id_ppl'][:, -1]):.3g}, the ID-optimal LR "
                     f"{_nm(S['opt']['forgetting'][:, -1]):.3g} at {_nm(S['opt']['test_id_ppl'][:, -1]):.3g}, and the "
                     f"L2 penalty at lr={cfg.lr:g} " + "; ".join(pts) + " (the triangles of the Pareto figure).")
    return {"claims": {"lr_rule": (v, measured)}, "cost": cost, "grow": grow, "rule": r,
            "table": pd.DataFrame(rows), "text": text}


# the figures (coft_utils.chapters.mitigate_plots), through this module as the notebook calls them
from .mitigate_plots import fig_l2, fig_pareto, fig_schedules  # noqa: E402,F401
