"""Chapter 01, the report: the claim verdicts, figures and tables of instruction tuning (paper Figs. 1-2).

::

    from coft_utils.chapters import instruct, instruct_report as report
    out = instruct.run(cfg)                      # the experiment (resumable; records in the results store)
    cv = report.claim_verdict(out, cfg)          # the claim row: a coft_utils.foundation.verdicts.Verdict on acc_norm
    cv["verdict"].label, cv["verdict"].stat_text(), cv["measured"], cv["acc"], cv["id"]
    report.verdict(out["tuned"], out["base"], out["chance"], "avg_acc")   # one metric's bend-down test
    report.id_verdict(out["tuned"], out["base"])  # the held-out response perplexity's
    report.fig_average(out, cfg), report.fig_benchmarks(out, cfg), report.fig_id(out, cfg)
    report.table_summary(out, cfg)               # mean ± CI per (stage, checkpoint)
    report.verdict_glue(out, cv, cfg)            # the notebook's verdict texts
    pv = report.panel_verdicts(out, cfg)         # the general-ability panel: one bends_down per metric
    pc = report.panel_claim(out, cfg, pv)        # the claim row cpu_general_ability (Bonferroni over metrics)
    report.fig_panel(out, cfg, pv), report.table_panel(out, cfg), report.panel_glue(out, pv, pc, cfg)

The fine-tuning seeds are the replicates of the verdict (:func:`claim_verdict`): the per-seed
average ``acc_norm`` (the one metric declared for the claim beforehand, :data:`CLAIM_METRIC`)
against the base model's, through :func:`coft_utils.foundation.verdicts.bends_down`. With one seed
there is no replicate spread, and the verdict is *inconclusive* by construction. :data:`PAPER`
holds what the paper reports (theirs), as summary statements.

The general-ability panel (:mod:`.instruct_panel`) has its own claim row, :data:`PANEL_CLAIM`, a
small-model stand-in for the paper's benchmarks: :func:`panel_verdicts` runs the same
``bends_down`` on every panel metric (with, reported beside it, whether the base improves and
whether the damage of tuning grows with tokens), and :func:`panel_claim` takes the one declared
beforehand, the minimal-pair accuracy (:data:`~coft_utils.chapters.instruct_panel.CLAIM_METRIC`).
"""
from __future__ import annotations

import dataclasses
import math

from ..foundation import lmeval_tasks, plots
from ..foundation import verdicts as V
from .instruct import Config
from .instruct_eval import summarize  # noqa: F401  (built by the experiment's collect: out["summary"])

__all__ = ["CLAIM_METRIC", "PAPER", "benchmarks_text", "summarize", "verdict", "id_verdict", "diverged_note", "lr_text",
           "claim_verdict", "fig_average", "fig_benchmarks", "fig_id", "table_summary", "table_paper",
           "table_checkpoints", "table_examples", "table_lr_choice", "table_seeds", "table_alpacaeval",
           "verdict_glue", "PANEL_CLAIM", "panel_verdicts", "panel_claim", "fig_panel", "table_panel",
           "table_panel_seeds", "panel_glue"]

# The one metric the claim row is decided on, declared before any run: lm-eval's acc_norm
# (log-likelihood per character of the answer), the accuracy OLMo's own evaluations report for
# ARC, HellaSwag, PIQA and OpenBookQA. avg_acc is tested and reported too, but never counts.
CLAIM_METRIC = "avg_acc_norm"

# What the paper reports (theirs; Springer et al. 2025, arXiv 2503.19206), as summary statements:
# we have no per-benchmark or per-checkpoint numbers. Sources: §1 (quoted on the ACM REP 2026
# reproducibility page of the paper: "the OLMo-1B model, pre-trained on 3T tokens and post-trained
# on Anthropic-HH, performs 3% worse on AlpacaEval and 2% worse on ARC compared to an
# intermediate checkpoint trained on just 2.3T tokens (Figure 2)"), the abstract ("over 2% worse
# performance on multiple standard LLM benchmarks than its 2.3T token counterpart") and the
# Fig. 1 caption (the average of "five common LLM benchmarks", ARC-Easy, ARC-Challenge, PIQA,
# HellaSwag named, for OLMo-1B checkpoints before and after instruction tuning). Which other
# models and tuning sets Fig. 2 shows is not in those sources, and no turning-point token count
# is given there, so neither is stated here.
PAPER = {
    "model": "OLMo-1B (intermediate checkpoints 0.04T..3T tokens)",
    "alpacaeval_3T_vs_2p3T": -3.0,   # percentage points (approx.), after Anthropic-HH instruction tuning (Fig. 2)
    "arc_3T_vs_2p3T": -2.0,          # percentage points (approx.), after instruction tuning (Fig. 2)
    "figures": {"fig1": "average of five common LLM benchmarks, OLMo-1B checkpoints, before and after "
                        "instruction tuning",
                "fig2": "the 3T- vs 2.3T-token comparison after instruction tuning (AlpacaEval, ARC)"},
    "statements": (
        "After instruction tuning on Anthropic-HH, the 3T-token OLMo-1B is about 3% worse on AlpacaEval "
        "and about 2% worse on ARC than the 2.3T-token checkpoint tuned the same way (Section 1, Fig. 2).",
        "The instruction-tuned 3T-token OLMo-1B is over 2% worse on multiple standard LLM benchmarks than its "
        "2.3T-token counterpart (abstract).",
        "Fig. 1: the average of five common LLM benchmarks (ARC-Easy, ARC-Challenge, PIQA, HellaSwag and a fifth; "
        "the paper's list includes SciQ) for OLMo-1B intermediate checkpoints before and after instruction "
        "tuning: the base curve keeps rising while the tuned one falls at the end.",
    ),
}


# --------------------------------------------------------------------------- verdicts
def _curves(tuned, base, value: str, se: str | None = None):
    """(tokens, checkpoints, tuned (seeds x K), base (1 x K), base s.e. (K)) on the checkpoints
    that both stages have, in token order; missing (checkpoint, seed) records are NaN."""
    import numpy as np
    b = base.sort_values("tokens")
    cks = [c for c in b["checkpoint"] if c in set(tuned["checkpoint"])]
    b = b.set_index("checkpoint").loc[cks]
    T = tuned.pivot_table(index="seed", columns="checkpoint", values=value, aggfunc="first", dropna=False)
    T = T.reindex(columns=cks).to_numpy(float) if len(T) else np.full((0, len(cks)), np.nan)
    bse = (b[se].to_numpy(float) if se is not None and se in b else np.full(len(cks), np.nan))
    return b["tokens"].to_numpy(float), cks, T, b[value].to_numpy(float)[None, :], bse


def _metric_name(metric: str) -> str:
    return {"avg_acc": "average acc", "avg_acc_norm": "average acc_norm"}.get(metric, metric)


def diverged_note(frame) -> str:
    """Which fine-tuning runs of a frame (``sft`` or ``tuned``) diverged, where and why; '' if none."""
    if not len(frame) or "diverged" not in frame:
        return ""
    d = frame[frame["diverged"].fillna(False).astype(bool)]
    if not len(d):
        return ""
    cks = list(dict.fromkeys(d["checkpoint"]))
    why = list(dict.fromkeys(d["diverged_reason"].fillna("")))
    return (f"{len(d)} of {len(frame)} fine-tuning runs diverged (checkpoints {', '.join(map(str, cks[:6]))}"
            f"{' …' if len(cks) > 6 else ''}; {'; '.join(why[:2])}): they have no scores")


def verdict(tuned, base, chance: dict, metric: str = "avg_acc") -> dict:
    """Does the instruction-tuned curve bend down at the end, beyond seed noise, while the base
    curve does not? :func:`coft_utils.foundation.verdicts.bends_down` on ``tuned`` = the per-seed ``metric``
    at the chosen LR (seeds x checkpoints) against ``base`` (1 x checkpoints) with the base's
    lm-eval standard error (``metric + "_stderr"``). ``tuned`` is ``out["tuned"]`` (one row per
    checkpoint and seed), ``base`` is ``out["base"]``.

    Returns the :class:`~coft_utils.foundation.verdicts.Verdict` (``"verdict"``), the seed-mean and base
    curves, whether every score lies within four standard errors of chance (uniform guessing on
    the same items: ``near_chance``) and a ``text``."""
    import numpy as np
    out = {"metric": metric}
    if not len(tuned) or not len(base):
        v = V.Verdict(claim="tuned curve bends down while the base does not", label="inconclusive",
                      reason="no tuned or no base records")
        out.update(verdict=v, label=v.label, near_chance=False, text=f"{v.label}: {v.reason}.")
        return out
    tokens, cks, T, B, bse = _curves(tuned, base, metric, metric + "_stderr")
    R, K = T.shape
    v = V.bends_down(tokens, T, B, higher_is_better=True, base_se=bse)  # a missing record (NaN) -> inconclusive
    v = V.diverged(dataclasses.replace(v, unit=f"drop in {_metric_name(metric)} at the last checkpoint"),
                   diverged_note(tuned))
    mean_t = np.nanmean(T, axis=0) if R else np.full(K, np.nan)
    ch = chance.get("avg", float("nan"))
    allv = np.concatenate([mean_t, B[0]])
    avg_se = float(np.nanmean(np.concatenate([tuned[metric + "_stderr"].to_numpy(float), bse])))
    max_dev = float(np.nanmax(np.abs(allv - ch))) if math.isfinite(ch) else float("nan")
    near = bool(math.isfinite(ch) and max_dev < 4 * avg_se and np.isfinite(mean_t).all())
    j = v.detail.get("best_earlier") if v.detail else None
    out.update(verdict=v, label=v.label, tokens=tokens.tolist(), checkpoints=cks, n_seeds=R,
               tuned_mean=mean_t.tolist(), base=B[0].tolist(), base_se=bse.tolist(),
               best_checkpoint=cks[j] if j is not None else None, last_checkpoint=cks[-1] if cks else None,
               base_bends=bool(v.detail.get("base_bends", False)) if v.detail else False,
               chance=ch, max_dev_from_chance=max_dev, avg_stderr=avg_se, near_chance=near)
    name = _metric_name(metric)
    parts = [f"{v.label}: {v.stat_text()}."]
    if j is not None:
        parts.append(f"The seed-mean instruction-tuned {name} is {mean_t[-1]:.3f} at the last checkpoint "
                     f"({cks[-1]}) against {mean_t[j]:.3f} at {cks[j]}, the best of the later half of the "
                     f"series ({R} seeds); the same test on the base curve "
                     + ("fires (the base bends down too)." if out["base_bends"] else "does not fire."))
    if v.reason:
        parts.append(v.reason[0].upper() + v.reason[1:] + ".")
    if near:
        parts.append(f"Every score ({np.nanmin(allv):.3f} to {np.nanmax(allv):.3f}, base and tuned seed means) is "
                     f"within four standard errors ({4 * avg_se:.3f}) of chance ({ch:.3f}): these models are too "
                     "small for these benchmarks, so the benchmark curves cannot show the effect either way at "
                     "this scale.")
    out["text"] = " ".join(parts)
    return out


def id_verdict(tuned, base) -> dict:
    """The in-distribution metric: does the tuned models' held-out (test) response perplexity get
    *worse* at the last checkpoint, beyond seed noise, while the base's does not?
    :func:`coft_utils.foundation.verdicts.bends_down` with ``higher_is_better=False, log=True`` (per-seed
    tuned perplexity against the base's, whose standard error is the ratio estimator's over the
    held-out dialogues, ``test_loss_se``; 0 for records made before it was stored)."""
    import numpy as np
    if not len(tuned) or not len(base):
        v = V.Verdict(claim="tuned curve bends down while the base does not", label="inconclusive",
                      reason="no tuned or no base records")
        return {"verdict": v, "label": v.label, "text": f"{v.label}: {v.reason}."}
    tokens, cks, T, B, bse = _curves(tuned, base, "test_ppl", "test_loss_se")
    exact_base = not np.isfinite(bse).all()
    bse = np.where(np.isfinite(bse), bse, 0.0)
    v = V.bends_down(tokens, T, B, higher_is_better=False, log=True, base_se=bse)
    v = V.diverged(dataclasses.replace(v, unit="% higher perplexity at the last checkpoint than at the best of the "
                                              "later half"), diverged_note(tuned))
    mean_t = np.exp(np.nanmean(np.log(T), axis=0)) if T.shape[0] else np.full(len(cks), np.nan)
    txt = (f"{v.label}: {v.stat_text()}" + (f" ({v.reason})" if v.reason else "") + ". "
           f"The tuned models' held-out response perplexity (geometric mean over seeds) goes from "
           f"{mean_t[0]:.1f} at the first checkpoint to {mean_t[-1]:.1f} at the last"
           f" (base: {B[0][0]:.1f} to {B[0][-1]:.1f})."
           + (" The base curve's s.e. was not recorded (older records): taken as 0." if exact_base else ""))
    return {"verdict": v, "label": v.label, "tokens": tokens.tolist(), "checkpoints": cks,
            "tuned_mean": mean_t.tolist(), "base": B[0].tolist(), "text": txt}


def lr_text(out: dict, cfg: Config) -> str:
    """How the learning rate was chosen per checkpoint, the seeds' agreement, and the grid's edge."""
    lc = out.get("lr_choice")
    if lc is None or not len(lc):
        return "No fine-tuning records."
    n = len(out["seeds"])
    agree = [int(r[f"seeds choosing lr={r.best_lr:g}"]) for _, r in lc.iterrows()]
    s = ("Learning rate per checkpoint (lowest seed-mean validation perplexity): "
         + ", ".join(f"{ck}: {lr:g}" for ck, lr in zip(lc.checkpoint, lc.best_lr)) + ". "
         + f"The seeds on their own agree with that choice for {sum(a == n for a in agree)} of {len(lc)} "
           f"checkpoints ({n} seeds each).")
    n_edge = int((lc.best_lr == max(cfg.lrs)).sum())
    if n_edge and len(cfg.lrs) > 1:
        s += (f" The chosen rate is the largest of the grid for {n_edge} of {len(lc)} checkpoints, so a "
              "larger one might do better still.")
    else:
        s += " The chosen rate lies inside the grid or at its lower end for every checkpoint."
    return s


# what a `verdicts.bends_down` label says of the tuned curve (this row and the panel's row)
BENDS_DOWN_WHAT = {
    "observed": "the instruction-tuned models get worse at the last checkpoint, beyond seed noise, while the base "
                "model does not",
    "contradicted": "the instruction-tuned models are best at the last checkpoint, beyond seed noise",
    "within noise": "no bend down at the last checkpoint can be told apart from seed noise",
    "inconclusive": "the data cannot decide"}


def claim_verdict(out: dict, cfg: Config) -> dict:
    """The chapter's claim row (``olmo_instruction``): :func:`verdict` on :data:`CLAIM_METRIC`
    (declared beforehand; ``avg_acc`` is tested and reported too but does not count), with the
    ``avg_acc`` and the ID-perplexity verdicts beside it.

    Returns ``verdict`` (the Verdict to record), ``metric``, ``measured`` (what series,
    checkpoints, seeds and metric), ``numbers`` (JSON-able), ``acc``/``acc_norm``/``id`` (the
    three :func:`verdict`-style dicts), ``sentence`` (the one-line answer) and ``lr_text``."""
    series = out["series"]
    acc = verdict(out["tuned"], out["base"], out["chance"], "avg_acc")
    norm = verdict(out["tuned"], out["base"], out["chance"], "avg_acc_norm")
    idv = id_verdict(out["tuned"], out["base"])
    main = {"avg_acc": acc, "avg_acc_norm": norm}[CLAIM_METRIC]
    v = main["verdict"]
    cks = main.get("checkpoints") or []
    toks = main.get("tokens") or []
    n_items = f"first {cfg.bench_limit} items" if cfg.bench_limit else "all items"
    measured = (f"{series.name}: {len(cks)} checkpoints"
                + (f" ({cks[0]} to {cks[-1]}, {toks[0]:.3g} to {toks[-1]:.3g} tokens)" if cks else "")
                + f"; {len(out['seeds'])} fine-tuning seeds ({', '.join(map(str, out['seeds']))}) at the LR chosen "
                  f"per checkpoint on the seed-mean validation response perplexity; metric (declared): "
                  f"{_metric_name(CLAIM_METRIC)} over {len(cfg.benchmarks)} benchmarks ({n_items}), tuned per seed "
                  f"vs base with its lm-eval s.e.")
    what = BENDS_DOWN_WHAT[v.label]
    sentence = (f"At the {cfg.profile} profile ({series.name}, {len(cks)} checkpoints, {len(out['seeds'])} seeds), "
                f"on {_metric_name(CLAIM_METRIC)}: {what}"
                + (f" ({v.reason})" if v.reason and v.label == "inconclusive" else "")
                + (" — and every score is near chance, so the benchmarks cannot show the effect at this scale"
                   if main.get("near_chance") else "") + ".")

    def nums(d):
        return {k: (x.to_dict() if isinstance(x, V.Verdict) else x) for k, x in d.items() if k != "text"}
    numbers = {"metric": CLAIM_METRIC, "seeds": out["seeds"], "acc": nums(acc), "acc_norm": nums(norm),
               "id_ppl": nums(idv), "chance": out["chance"].get("avg"),
               "best_lr": dict(zip(out["lr_choice"].checkpoint, out["lr_choice"].best_lr))
               if len(out["lr_choice"]) else {}}
    return {"verdict": v, "metric": CLAIM_METRIC, "measured": measured, "numbers": numbers, "acc": acc,
            "acc_norm": norm, "id": idv, "sentence": sentence, "lr_text": lr_text(out, cfg)}


# --------------------------------------------------------------------------- figures and tables
def _token_axis(ax, base):
    """Log-scaled pre-training tokens, ticks at the checkpoints, labelled with their names."""
    plots.token_axis(ax, base.tokens, base.checkpoint, rotation=45, fontsize=7)


def _tuned_band(ax, t, metric, color, label, marker="o", ls="-"):
    """Seed mean (line) and min-max over seeds (band)."""
    ax.plot(t.tokens, t[metric], marker=marker, ls=ls, color=color, label=label)
    plots.band(ax, t.tokens, t[metric], lo=t[f"{metric}_min"], hi=t[f"{metric}_max"], color=color, alpha=0.2)


def fig_average(out: dict, cfg: Config):
    """Fig. 1: average acc and acc_norm against tokens: base (± 1 lm-eval s.e.) and the tuned seed
    mean with its min-max band over seeds; chance dotted."""
    import matplotlib.pyplot as plt
    s = out["summary"]
    base, tuned = s[s.stage == "base"].sort_values("tokens"), s[s.stage == "tuned"].sort_values("tokens")
    n = len(out["seeds"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, metric in zip(axes, ("avg_acc", "avg_acc_norm")):
        ax.errorbar(base.tokens, base[metric], yerr=base[metric + "_stderr"], marker="o", capsize=3,
                    label="base (± 1 s.e.)", color="tab:gray")
        _tuned_band(ax, tuned, metric, "tab:blue", f"instruction-tuned, chosen LR (mean of {n} seeds; band: min-max)")
        ax.axhline(out["chance"]["avg"], ls=":", color="k", label="chance")
        _token_axis(ax, base)
        ax.set_xlabel("pre-training tokens")
        ax.set_title(f"{_metric_name(metric)} over {len(cfg.benchmarks)} benchmarks (ours)"
                     + (" — the claim's metric" if metric == CLAIM_METRIC else ""), fontsize=10)
    axes[0].set_ylabel("average accuracy")
    axes[0].legend(loc="best", fontsize=7.5)
    axes[1].text(0.02, 0.02, "Paper (theirs), OLMo-1B: tuned 3T ≈ 3 pts worse on AlpacaEval,\n"
                 "≈ 2 pts worse on ARC than tuned 2.3T; base rises monotonically.",
                 transform=axes[1].transAxes, fontsize=7.5, va="bottom",
                 bbox=dict(boxstyle="round", fc="lightyellow", alpha=0.9))
    fig.tight_layout()
    return fig


def fig_benchmarks(out: dict, cfg: Config):
    """Fig. 2: every benchmark, base and tuned (seed mean, acc_norm with its min-max band)."""
    import matplotlib.pyplot as plt
    s = out["summary"]
    base, tuned = s[s.stage == "base"].sort_values("tokens"), s[s.stage == "tuned"].sort_values("tokens")
    ncol = 4
    nrow = max(1, math.ceil(len(cfg.benchmarks) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(13, 3 * nrow), sharex=True, squeeze=False)
    for ax, b in zip(axes.flat, cfg.benchmarks):
        ax.plot(base.tokens, base[f"{b}/acc_norm"], marker="o", color="tab:gray", label="base acc_norm")
        ax.plot(base.tokens, base[f"{b}/acc"], marker="x", ls="--", color="tab:gray", alpha=0.6, label="base acc")
        _tuned_band(ax, tuned, f"{b}/acc_norm", "tab:blue", "tuned acc_norm (seed mean, min-max)")
        ax.plot(tuned.tokens, tuned[f"{b}/acc"], marker="x", ls="--", color="tab:blue", alpha=0.6,
                label="tuned acc (seed mean)")
        ax.axhline(out["chance"][b], ls=":", color="k")
        ax.set_title(lmeval_tasks.label(b), fontsize=10)
        _token_axis(ax, base)
    for ax in axes.flat[len(cfg.benchmarks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6.5)
    fig.supxlabel("pre-training tokens")
    fig.supylabel("accuracy (ours; dotted: chance)")
    fig.tight_layout()
    return fig


def fig_id(out: dict, cfg: Config):
    """Fig. 3: held-out (test) response perplexity, base and tuned (seed mean, min-max band); and
    the validation perplexity of every LR of the grid (seed mean, min-max band), chosen LR ringed."""
    import matplotlib.pyplot as plt
    s, sft, lc = out["summary"], out["sft"], out["lr_choice"]
    base, tuned = s[s.stage == "base"].sort_values("tokens"), s[s.stage == "tuned"].sort_values("tokens")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    ax.plot(base.tokens, base.test_ppl, marker="o", color="tab:gray", label="base")
    _tuned_band(ax, tuned, "test_ppl", "tab:blue", f"instruction-tuned (mean of {len(out['seeds'])} seeds; min-max)")
    ax.set_ylabel("held-out (test) response perplexity")
    ax = axes[1]
    if len(sft):
        for lr, g in sft.groupby("lr"):
            a = g.groupby("tokens").val_ppl.agg(["mean", "min", "max"]).reset_index()
            line, = ax.plot(a.tokens, a["mean"], marker="o", label=f"lr {lr:g}")
            ax.fill_between(a.tokens, a["min"], a["max"], color=line.get_color(), alpha=0.15, lw=0)
        if len(lc):
            col = {lr: f"val ppl, lr={lr:g} (seed mean)" for lr in cfg.lrs}
            ax.plot(lc.tokens, [r[col[r.best_lr]] for _, r in lc.iterrows()], "o", ms=11, mfc="none", mec="k",
                    label="chosen LR")
    ax.set_ylabel("validation response perplexity after SFT")
    for ax in axes:
        _token_axis(ax, base)
        plots.log_y(ax)
        ax.set_xlabel("pre-training tokens")
        ax.legend(fontsize=7.5)
    fig.tight_layout()
    return fig


def table_summary(out: dict, cfg: Config, per_benchmark: bool = False):
    """The numbers as text, ``mean ± CI``: tuned over seeds (95 % t-interval), base ± 1.96 lm-eval
    s.e. (items; test ppl: from the s.e. of its log). One row per (stage, checkpoint)."""
    import pandas as pd
    s = out["summary"]
    mets = ([f"{b}/{m}" for b in cfg.benchmarks for m in ("acc", "acc_norm")] if per_benchmark
            else ["avg_acc", "avg_acc_norm", "test_ppl"])

    def fmt(v, ci, digits):
        return f"{v:.{digits}f}" + (f" ± {ci:.{digits}f}" if ci == ci else "")
    rows = []
    for _, r in s.sort_values(["stage", "tokens"]).iterrows():
        row = {"stage": r.stage, "checkpoint": r.checkpoint, "tokens": f"{r.tokens:.3g}", "seeds": int(r.n_seeds)}
        for m in mets:
            row[m] = fmt(r[m], r.get(f"{m}_ci", float("nan")), 1 if m == "test_ppl" else 3)
        if not per_benchmark:
            row["LR"] = f"{r.best_lr:g}" if r.best_lr == r.best_lr else ""
        rows.append(row)
    return pd.DataFrame(rows).set_index(["stage", "checkpoint"])



# --------------------------------------------------------------------------- the notebook's tables and texts
def table_paper():
    """What the paper reports (theirs, OLMo-1B): one row per summary statement."""
    import pandas as pd
    return pd.DataFrame({"statement (theirs, OLMo-1B)": PAPER["statements"]})


def benchmarks_text(cfg: Config) -> str:
    """The benchmarks of this run, the paper's and this companion's extras told apart."""
    ours = [b for b in cfg.benchmarks if b in lmeval_tasks.PAPER_BENCHMARKS]
    extra = [b for b in cfg.benchmarks if b not in lmeval_tasks.PAPER_BENCHMARKS]
    missing = [b for b in lmeval_tasks.PAPER_BENCHMARKS if b not in cfg.benchmarks]
    t = f"Benchmarks of this run: {', '.join(ours) or 'none'} of the paper's"
    if extra:
        t += f"; extras (not in the paper's list): {', '.join(extra)}"
    if missing:
        t += f"; the paper's {', '.join(missing)} not run here" + (
            " (hub only: run at profile paper)" if any(b in lmeval_tasks.HUB_ONLY for b in missing) else "")
    how = "local task configs on the local files" if cfg.bench_local else "lm-eval's own task definitions (hub data)"
    return t + f"; through {how}."


def table_checkpoints(series):
    """The checkpoints of the series: tokens and source, indexed by label."""
    import pandas as pd
    return pd.DataFrame([{"checkpoint": c.label, "tokens": c.tokens, "source": c.source}
                         for c in series]).set_index("checkpoint")


def table_examples(out: dict):
    """Dialogues per instruction source: training pool, validation and test halves."""
    import pandas as pd
    return pd.DataFrame(out["n_examples"]).T.rename_axis("source")


def table_lr_choice(out: dict):
    """Per checkpoint: the chosen LR, the seed-mean validation perplexity of every LR, the seeds' votes."""
    return out["lr_choice"].set_index("checkpoint").round(3)


def table_seeds(out: dict):
    """The tuned models' per-seed records at the chosen LR."""
    return (out["tuned"][["checkpoint", "seed", "lr", "avg_acc", "avg_acc_norm", "test_ppl", "val_ppl"]]
            .set_index(["checkpoint", "seed"]).round(4))


def table_alpacaeval(out: dict):
    """The tuned models' AlpacaEval win rates (when a judge was configured; empty frame otherwise)."""
    import pandas as pd
    t = out["tuned"]
    cols = [c for c in t.columns if c.startswith("alpacaeval")] if len(t) else []
    if not cols:
        return pd.DataFrame()
    return t[["checkpoint", "seed", "tokens"] + cols]


def verdict_glue(out: dict, cv: dict, cfg: Config) -> dict:
    """The verdict section's texts, by glue name: the one-line answer, the three verdicts, the chance
    level, the learning-rate choice and the items per benchmark."""
    return dict(verdict_sentence=cv["sentence"], verdict_norm=cv["acc_norm"]["text"], verdict_acc=cv["acc"]["text"],
                verdict_id=cv["id"]["text"], chance_avg=f"{out['chance']['avg']:.3f}", lr_text=cv["lr_text"],
                bench_n=str(int(out["base"][f"{cfg.benchmarks[0]}/n"].iloc[0])))




# the general-ability panel's verdicts, figures and tables (its own module, re-exported here; at
# the end, since it uses the helpers above)
from .instruct_panel_report import (PANEL_CLAIM, fig_panel, panel_claim, panel_glue,  # noqa: E402,F401
                                    panel_verdicts, table_panel, table_panel_seeds)
