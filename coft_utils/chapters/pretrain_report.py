"""The report of the pre-training chapter: tables, figures and the claim verdict of ``base_improves``.

Reads what the experiment (:mod:`coft_utils.chapters.pretrain`) trained and the LR scan
(:mod:`coft_utils.chapters.pretrain_scan`) measured; trains nothing::

    from coft_utils.chapters import pretrain, pretrain_report, pretrain_scan
    suites = pretrain.all_suites("cpu")                   # {schedule: series}
    table = pretrain_report.records_frame(suites)         # one row per checkpoint of every schedule
    pretrain_report.suite_records(suites["cosine"])       # peak lr, tokens, tokens/param, val ppl, wall time
    verdict = pretrain_report.monotone_verdict(table)     # {"verdict", "per_schedule", "text", ...}
    pretrain_report.plot_ppl(table); pretrain_report.cost_summary(suites)["text"]
    scan = pretrain_scan.lr_scan("cpu")
    summary = pretrain_report.lr_scan_summary(scan, pretrain.resolve("cpu"))
    pretrain_report.plot_lr_scan(scan, summary["chosen"])
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..foundation import models, plots
from .pretrain import SCHEDULES, Config, load_records
from .pretrain_plan import cost_ratio
from .pretrain_scan import choose_lr

__all__ = ["suite_records", "records_frame", "records_table", "plot_ppl", "diverged_note", "monotone_verdict",
           "run_matrix", "between_runs", "between_runs_table", "plot_between_runs", "spread_text",
           "cost_summary", "lr_scan_summary", "lr_scan_text", "lr_scan_table", "plot_lr_scan", "profiles_frame"]


# --------------------------------------------------------------------------- tables
def profiles_frame():
    """What each profile's preset runs (one column per profile): model, width, corpus, budgets,
    batch, LR, muP, precision -- read from ``pretrain.PRESETS``, so the page cannot drift from the code."""
    import pandas as pd
    from .pretrain import PRESETS
    from .pretrain_plan import budget_labels, n_params
    rows = {}
    for name, c in PRESETS.items():
        layers, d, heads, mlp = models.OLMO_PRESETS[c.model]
        labels = budget_labels(dataclasses.replace(c, schedule="constant"))  # every budget (cosine may stop earlier)
        rows[name] = {"model": c.model, "layers x d_model x heads x MLP": f"{layers} x {d} x {heads} x {mlp}",
                      "parameters (embeddings incl.)": f"{n_params(c):,}", "corpus": c.corpus,
                      "tokenizer": f"BPE {c.vocab_size:,} on {c.corpus}",
                      "budgets": f"{labels[0]} .. {labels[-1]} ({c.n_budgets})"
                      + (f"; cosine to {labels[c.cosine_budgets - 1]}" if c.cosine_budgets else ""),
                      "seq len x global batch": f"{c.seq_len} x {c.batch_size}",
                      "micro-batch": c.micro_batch_size or "whole share",
                      "peak LR (cosine)": f"{c.peak_lr('cosine'):g}", "warmup steps": c.warmup_steps,
                      "muP base width": c.mup_base_width or "off", "precision": c.mixed_precision}
    return pd.DataFrame(rows)


def suite_records(series: models.CheckpointSeries):
    """One row per checkpoint: schedule, peak LR, label, tokens, tokens/param, val ppl, wall time."""
    import pandas as pd
    cols = ["schedule", "lr", "label", "tokens", "params", "tokens_per_param", "val_ppl", "val_loss", "wall_s",
            "step", "diverged", "diverged_step", "diverged_reason"]
    df = pd.DataFrame(load_records(series))
    return df[[c for c in cols if c in df.columns]]


def records_frame(suites: dict[str, models.CheckpointSeries]):
    import pandas as pd
    return pd.concat([suite_records(s) for s in suites.values()], ignore_index=True)


def records_table(table):
    """The suite table as the book shows it (formatted numbers, no index)."""
    return table.style.format({"lr": "{:g}", "tokens": "{:,.0f}", "tokens_per_param": "{:,.1f}", "val_ppl": "{:.2f}",
                               "val_loss": "{:.3f}", "wall_s": "{:.1f}"}).hide(axis="index")


def lr_scan_text(summary: dict | None, cfg: Config) -> str:
    """The book's sentence on the LR scan: :func:`lr_scan_summary`'s, or (no scan) the preset's LRs."""
    if summary is not None:
        return summary["text"]
    from .pretrain import SCANNED_LRS
    text = ("The LR scan is skipped in this run (lr_scan_lrs is empty); the suite uses the preset's "
            "peak LRs: " + ", ".join(f"{s} {cfg.peak_lr(s):g}" for s in SCHEDULES) + ".")
    tried = SCANNED_LRS.get(cfg.profile)
    if tried:
        text += (f" They were chosen by this scan at profile {cfg.profile} (lr_scan_lrs "
                 f"{', '.join(f'{x:g}' for x in tried)} on the smallest {cfg.lr_scan_budgets} budgets); rerun it "
                 f"with -y '{{lr_scan_lrs: [{', '.join(f'{x:g}' for x in tried)}]}}'.")
    return text


def lr_scan_table(scan):
    """Validation perplexity of the scan: one row per (schedule, lr), one column per budget."""
    return scan.pivot_table(index=["schedule", "lr"], columns="label", values="val_ppl", sort=False) \
        .style.format("{:.2f}")


# --------------------------------------------------------------------------- verdict and figures
def plot_ppl(table, ax=None):
    """Validation perplexity against pre-training tokens (log x), one line per schedule."""
    import matplotlib.pyplot as plt
    if ax is None:
        fig, ax = plt.subplots()
    for (sched, g), mk in zip(table.groupby("schedule", sort=False), "osD^v"):
        g = g.sort_values("tokens")
        line = ax.plot(g["tokens"], g["val_ppl"], marker=mk, label=sched)[0]
        if "diverged" in g and g["diverged"].fillna(False).astype(bool).any():
            dv = g[g["diverged"].fillna(False).astype(bool)]
            ax.plot(dv["tokens"], [0.95] * len(dv), "x", color=line.get_color(), ms=10, mew=2.5, clip_on=False,
                    transform=ax.get_xaxis_transform(), label=f"{sched}: diverged (not scored)")
    ax.set_xscale("log", base=2)
    plots.log_y(ax)
    ax.set_xlabel("pre-training tokens")
    ax.set_ylabel("validation perplexity (held-out Gutenberg)")
    ax.set_title("Base models get better with more tokens")
    ax.legend(title="schedule")
    return ax.figure


def diverged_note(table) -> str:
    """Which checkpoints of a suite table diverged and why ('' if none): they have no score."""
    if "diverged" not in table:
        return ""
    d = table[table["diverged"].fillna(False).astype(bool)]
    if not len(d):
        return ""
    why = list(dict.fromkeys(d["diverged_reason"].fillna("")))
    return (f"{len(d)} of {len(table)} checkpoints diverged ({', '.join(map(str, d['label']))}; "
            f"{'; '.join(why[:2])}{' …' if len(why) > 2 else ''})")


def run_matrix(runs: dict, value: str = "val_ppl"):
    """(tokens, labels, ``value`` as (pre-training runs × checkpoints), seeds) of ``{seed: series}``,
    on the checkpoints every run has (the extra runs may stop earlier: ``replicate_budgets``)."""
    seeds = sorted(runs)
    frames = {s: suite_records(runs[s]).sort_values("tokens") for s in seeds}
    common = set.intersection(*(set(f["label"]) for f in frames.values()))
    f0 = frames[seeds[0]]
    f0 = f0[f0["label"].isin(common)]
    Y = np.stack([frames[s].set_index("label")[value].reindex(f0["label"]).to_numpy(float) for s in seeds])
    return f0["tokens"].to_numpy(float), f0["label"].tolist(), Y, seeds


def between_runs(runs: dict):
    """The spread between pre-training runs (seeds) per checkpoint of the replicated schedule:
    validation perplexity mean, s.d., 95 % t interval of the mean, relative s.d. and each run."""
    import pandas as pd
    from scipy import stats
    tokens, labels, Y, seeds = run_matrix(runs)
    n = Y.shape[0]
    sd = Y.std(axis=0, ddof=1) if n > 1 else np.full(Y.shape[1], np.nan)
    q = float(stats.t.ppf(0.975, n - 1)) if n > 1 else np.nan
    mean = Y.mean(axis=0)
    params = suite_records(runs[seeds[0]]).set_index("label")["params"].reindex(labels).to_numpy(float)
    df = pd.DataFrame({"label": labels, "tokens": tokens, "tokens_per_param": tokens / params, "runs": n,
                       "val_ppl_mean": mean, "val_ppl_sd": sd, "ci_lo": mean - q * sd / np.sqrt(n),
                       "ci_hi": mean + q * sd / np.sqrt(n), "rel_sd_pct": 100 * sd / mean})
    for i, s in enumerate(seeds):
        df[f"seed {s}"] = Y[i]
    return df


def spread_text(runs: dict, replicated: str = "constant") -> str:
    """The page's sentence on the spread between pre-training runs (or why there is none)."""
    if len(runs) < 2:
        return "One pre-training run per schedule in this run (pretrain_seeds = 1): no spread between runs."
    d = between_runs(runs)
    where = f"{len(runs)} pre-training runs of the {replicated} schedule ({d.label.iloc[0]} .. {d.label.iloc[-1]})"
    if d.rel_sd_pct.notna().all():
        return (f"Over {where}, the relative s.d. of the validation perplexity per checkpoint is "
                f"{d.rel_sd_pct.min():.2f}–{d.rel_sd_pct.max():.2f} % (median {d.rel_sd_pct.median():.2f} %).")
    return f"Over {where}, some checkpoints diverged (non-finite validation perplexity): their spread is not scored."


def between_runs_table(df):
    fmt = {c: "{:.2f}" for c in df.columns if c.startswith(("val_ppl", "ci_", "seed "))}
    return df.style.format({**fmt, "tokens": "{:,.0f}", "tokens_per_param": "{:,.1f}",
                            "rel_sd_pct": "{:.2f} %"}).hide(axis="index")


def plot_between_runs(runs: dict, ax=None):
    """Validation perplexity of every pre-training run of the replicated schedule, with the mean
    and its 95 % interval over runs."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots()
    df = between_runs(runs)
    ok = lambda v: np.where(np.isfinite(v) & (v > 0), v, np.nan)  # noqa: E731 -- a diverged run: a gap
    for c in [c for c in df.columns if c.startswith("seed ")]:
        ax.plot(df.tokens, ok(df[c].to_numpy(float)), marker="o", lw=1, alpha=0.6, label=f"pre-training {c}")
    ax.plot(df.tokens, ok(df.val_ppl_mean.to_numpy(float)), color="k", lw=2, label="mean over runs")
    if len(runs) > 1:
        ax.fill_between(df.tokens, ok(df.ci_lo.to_numpy(float)), ok(df.ci_hi.to_numpy(float)), color="k",
                        alpha=0.15, label="95 % CI of the mean")
    if not np.isfinite(ok(df[[c for c in df.columns if c.startswith("seed ")]].to_numpy(float))).any():
        ax.text(0.5, 0.5, "every run diverged: nothing to show", ha="center", transform=ax.transAxes)
        return ax.figure
    ax.set_xscale("log", base=2)
    plots.log_y(ax)
    ax.set_xlabel("pre-training tokens")
    ax.set_ylabel("validation perplexity")
    ax.set_title(f"{len(runs)} pre-training runs of one schedule")
    ax.legend(fontsize="small")
    return ax.figure


def monotone_verdict(table, runs: dict | None = None, replicated: str | None = None) -> dict:
    """Does validation perplexity improve with tokens, per schedule? A calibrated test
    (``coft_utils.foundation.verdicts.improves`` on log perplexity: the slope per doubling of tokens with
    its 95 % CI). With one pre-training run per budget the s.e. comes from the fit's residuals
    (the checkpoint scatter is the noise); the schedule with several pre-training runs (``runs``:
    ``{seed: series}``; ``replicated``: its name, default ``pretrain.REPLICATED``) is tested across
    its runs (a slope per run). The claim row requires every
    schedule (an intersection-union test, each at α). Whether every doubling helps (strict
    monotonicity) is reported beside it."""
    from ..foundation import verdicts
    from .pretrain import REPLICATED
    replicated = replicated or REPLICATED
    per, tests = {}, {}
    for sched, g in table.groupby("schedule", sort=False):
        g = g.sort_values("tokens")
        p = list(g["val_ppl"])
        if sched == replicated and runs and len(runs) > 1:
            tok, _, Y, seeds = run_matrix(runs)
            test = verdicts.improves(tok, Y, log=True, runs=seeds)
        else:
            test = verdicts.improves(g.tokens.to_numpy(float), np.asarray(p, float)[None, :], log=True)
        tests[sched] = verdicts.diverged(test, diverged_note(g))
        per[sched] = {"monotone": all(b < a for a, b in zip(p, p[1:])), "first": p[0], "last": p[-1],
                      "verdict": tests[sched].label, "statistic": tests[sched].stat_text(),
                      "diverged": bool(diverged_note(g))}
    row = verdicts.combine(tests, over="schedules", require="all")
    parts = [f"{s}: {v['first']:.1f} -> {v['last']:.1f}, {v['verdict']} "
             f"({v['statistic']}; {tests[s].design}" + ("" if v["diverged"] else
                                      f"; {'every doubling helps' if v['monotone'] else 'NOT every doubling helps'}") + ")"
             for s, v in per.items()]
    return {"per_schedule": per, "all_monotone": all(v["monotone"] for v in per.values()), "verdict": row,
            "text": f"Validation perplexity improving with tokens is **{row.label}** for every schedule: "
                    + "; ".join(parts) + "."}


def cost_summary(suites: dict[str, models.CheckpointSeries]) -> dict:
    """Measured training wall time per schedule and the wsd/cosine cost ratio."""
    wall = {s: float(x.meta.get("total_train_wall_s", float("nan"))) for s, x in suites.items()}
    out = {"wall_s": wall}
    same = "cosine" in wall and "wsd" in wall and [c.label for c in suites["cosine"]] == [c.label for c in suites["wsd"]]
    if "cosine" in wall and "wsd" in wall and not same:  # cosine stops earlier (cosine_budgets)
        cfg = Config(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in suites["wsd"].meta["config"].items()})
        out.update(planned=1 / cost_ratio(cfg))
        lab = {s: f"{suites[s].checkpoints[0].label} .. {suites[s].checkpoints[-1].label}" for s in ("cosine", "wsd")}
        out["text"] = (f"training the cosine suite ({lab['cosine']}, a run per budget) took {wall['cosine']:.0f} s, the "
                       f"wsd suite ({lab['wsd']}: its trunk up to the last branch point plus every decay branch) "
                       f"{wall['wsd']:.0f} s; at equal budgets wsd plans {out['planned']:.2f} of cosine's steps, which "
                       f"is why cosine stops earlier here; constant took {wall.get('constant', float('nan')):.0f} s.")
    elif "cosine" in wall and "wsd" in wall:
        r = wall["wsd"] / wall["cosine"]
        cfg = Config(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in suites["wsd"].meta["config"].items()})
        out.update(ratio=r, planned=1 / cost_ratio(cfg))
        out["text"] = (f"training the cosine suite took {wall['cosine']:.0f} s, the wsd suite {wall['wsd']:.0f} s "
                       f"(trunk up to its last branch point plus every decay branch): wsd costs {r:.2f} of "
                       f"cosine (planned steps: {out['planned']:.2f}); constant took {wall.get('constant', float('nan')):.0f} s.")
    else:
        out["text"] = "; ".join(f"{s}: {w:.0f} s" for s, w in wall.items())
    return out


# --------------------------------------------------------------------------- peak-LR scan
def lr_scan_summary(scan, cfg: Config) -> dict:
    """The chosen LRs, the preset's LRs, and a sentence stating both (for the book)."""
    chosen = choose_lr(scan)
    preset = {s: cfg.peak_lr(s) for s in chosen}
    labels = list(dict.fromkeys(scan.sort_values("tokens")["label"]))
    parts = [f"{s} {lr:g}" for s, lr in chosen.items()]
    same = all(abs(preset[s] - lr) <= 1e-12 * lr for s, lr in chosen.items())
    text = (f"Lowest mean validation log-perplexity over the {', '.join(labels)} budgets: peak LR "
            + ", ".join(parts) + ". " +
            ("The suite below is trained with these values (the profile's preset)." if same else
             "The suite below is trained with the profile's preset, "
             + ", ".join(f"{s} {preset[s]:g}" for s in chosen) + ", which differs from this scan."))
    return {"chosen": chosen, "preset": preset, "matches_preset": same, "budgets": labels, "text": text}


def plot_lr_scan(scan, chosen: dict | None = None):
    """Validation perplexity against peak LR (log x), one panel per schedule, one line per
    budget; the chosen LR of each schedule marked with a dashed line and open circles."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator, ScalarFormatter
    chosen = choose_lr(scan) if chosen is None else chosen
    scheds = list(dict.fromkeys(scan["schedule"]))
    fig, axes = plt.subplots(1, len(scheds), figsize=(3.6 * len(scheds), 3.6), sharey=True, squeeze=False)
    labels = list(dict.fromkeys(scan.sort_values("tokens")["label"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, sched in zip(axes[0], scheds):
        g = scan[scan["schedule"] == sched]
        for i, lab in enumerate(labels):
            h = g[g["label"] == lab].sort_values("lr")
            ax.plot(h["lr"], h["val_ppl"], marker="osD^v<>"[i % 7], color=colors[i % len(colors)],
                    label=f"{lab} tokens")
            c = h[np.isclose(h["lr"], chosen[sched])]
            ax.plot(c["lr"], c["val_ppl"], "o", ms=13, mfc="none", mec="k", mew=1.2)
        ax.axvline(chosen[sched], color="k", ls="--", lw=0.8)
        ax.set_xscale("log")
        plots.log_y(ax)
        lrs = sorted(set(g["lr"]))
        ax.set_xticks(lrs, labels=[f"{x:g}" for x in lrs], rotation=30)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.set_title(f"{sched}: chosen {chosen[sched]:g}")
        ax.set_xlabel("peak learning rate")
    axes[0][0].set_ylabel("validation perplexity")
    axes[0][-1].legend(title="budget", fontsize="small", loc="best")
    fig.tight_layout()
    return fig
