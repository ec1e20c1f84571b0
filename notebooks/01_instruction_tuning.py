# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Instruction tuning across pre-training checkpoints
#
# **The claim.** More pre-training makes a base model better, but it can make the model
# *after instruction tuning* worse: the paper's headline is that OLMo-1B pre-trained on 3T
# tokens and instruction-tuned on Anthropic-HH ends up worse than its own 2.3T-token
# checkpoint tuned the same way. Base-model scores rise monotonically with pre-training
# tokens; post-trained scores stop improving past roughly 2.5T tokens and then fall.
#
# This chapter runs the paper's protocol as a capability: take every checkpoint of a
# pre-training series, evaluate it, instruction-tune it with TRL's `SFTTrainer` at several
# learning rates (the best one chosen per checkpoint on held-out instruction data), evaluate
# the tuned model the same way, and plot both curves against pre-training tokens. At the
# `paper` profile the series is the OLMo-1B-hf revisions from 0.04T to 3.1T tokens; at
# `smoke`/`cpu`/`gpu` it is this book's own pre-training suite (chapter 00), which is many
# orders of magnitude smaller.

# %% tags=["parameters"]
profile = "cpu"
seed = 0
overrides = {}

# %%
import time

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import pandas as pd
from IPython.display import display

from coft_utils import instruct, nb

cfg = nb.setup("01_instruction_tuning", profile, seed, overrides)
nb.show_params(cfg)

# %% [markdown]
# ## What the paper reports (theirs)
#
# The numbers below are the paper's (Springer et al., 2025, Fig. 1 and its text), as summary
# statements about OLMo-1B; they are not measured here.

# %%
theirs = pd.DataFrame({"statement (theirs, OLMo-1B)": instruct.PAPER["statements"]})
display(theirs)
nb.glue("paper_alpaca", f"{instruct.PAPER['alpacaeval_3T_vs_2p3T']:+.0f}")
nb.glue("paper_arc", f"{instruct.PAPER['arc_3T_vs_2p3T']:+.0f}")

# %% [markdown]
# In their words: 3T vs 2.3T tokens after instruction tuning, about {glue:text}`paper_alpaca`
# points on AlpacaEval and about {glue:text}`paper_arc` points on ARC. **What we do not have:**
# the paper's per-checkpoint and per-benchmark values behind its Figs. 1-2 (we have only the
# summary statements above), its exact learning-rate grid and its SFT batch size; so the
# figures below show our curves only, with the paper's statements beside them as text, and
# the `paper` preset's grid is this companion's choice (see the parameter table).
#
# ## Method (as run)
#
# * **Series.** `series = "suite"`: the cached pre-training suite of this profile
#   (`pretrain.get_suite(profile)`, cosine schedule annealed to zero per budget); at `paper`
#   `olmo-1b` (`allenai/OLMo-1B-hf`, revisions pinned in `coft_utils.models`), with
#   `olmo-2-7b-stage1` and `amber` as alternatives.
# * **Instruction data.** Anthropic-HH "chosen" dialogues split into user/assistant turns (here
#   the local harmless-base pairs; the hub's full train split at `paper`), the 175 Alpaca seed
#   tasks (instruction + input → output) and GSM8K train (question → answer); TULU
#   (`allenai/tulu-v2-sft-mixture`) is an alternative at `paper`. Per source a fixed
#   permutation (seed independent of the run) holds out `heldout_per_source` dialogues: half to
#   choose the learning rate, half to report.
# * **SFT.** TRL `SFTTrainer`, chat template with `<|user|>`/`<|assistant|>` and a
#   `{% generation %}` block, `assistant_only_loss=True` (the loss is on response tokens only),
#   sequences cut at the model's context; AdamW, warmup then the `lr_schedule` decay, for
#   `sft_steps` steps at every learning rate of `lrs`.
# * **ID metric.** Response perplexity: exp of the mean next-token loss over the held-out
#   dialogues' assistant tokens. The best learning rate minimizes it on the validation half.
# * **Benchmarks.** Zero-shot ARC-Easy, ARC-Challenge, PIQA, HellaSwag, Winogrande, BoolQ,
#   COPA and OpenBookQA through `lm_eval.simple_evaluate` with task configs generated on the
#   local files (`coft_utils.lmeval_tasks`; lm-eval's standard tasks at `paper`), `acc` and
#   `acc_norm` (the log-likelihood divided by the choice's length in characters), the first
#   `bench_limit` items of each (0 = all). Every checkpoint is evaluated before tuning and with
#   its best learning rate after. Contexts are cut from the left at `eval_max_length` tokens
#   (raised where a long answer would not fit); for the suite's tiny models this exceeds their
#   pre-training context, which their rotary positions extrapolate.

# %%
series = instruct.get_series(cfg)
ck_table = pd.DataFrame([{"checkpoint": c.label, "tokens": c.tokens, "source": c.source} for c in series])
display(ck_table.set_index("checkpoint"))
sources = instruct.sft_sources(cfg)
display(pd.DataFrame({s: {p: len(v[p]) for p in ("train", "val", "test")} for s, v in sources.items()}).T
        .rename_axis("source"))
nb.glue("n_ckpt", len(series))
nb.glue("series_name", series.name)
nb.glue("tok_lo", f"{series.checkpoints[0].tokens:,.0f}")
nb.glue("tok_hi", f"{series.checkpoints[-1].tokens:,.0f}")

# %% [markdown]
# The series {glue:text}`series_name` has {glue:text}`n_ckpt` checkpoints, from
# {glue:text}`tok_lo` to {glue:text}`tok_hi` pre-training tokens (above: the dialogues per
# source; the training pool is subsampled to what `sft_steps` consumes).
#
# ## The experiment
#
# One record per unit (checkpoint × stage, and × learning rate for SFT) is written to the
# results store as it finishes, so a rerun only computes what is missing.

# %%
t0 = time.perf_counter()
out = instruct.run(cfg, series=series, progress=False)
summary, sft_df, chance = out["summary"], out["sft"], out["chance"]
nb.glue("exp_wall", f"{time.perf_counter() - t0:.0f}")
base = summary[summary.stage == "base"].sort_values("tokens")
tuned = summary[summary.stage == "tuned"].sort_values("tokens")
best_lr = tuned.set_index("checkpoint")["best_lr"]


def token_axis(ax):
    """Log-scaled pre-training tokens, ticks at the checkpoints, labelled with their names."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())
    ax.set_xticks(list(ck_table.tokens), list(ck_table.checkpoint), rotation=45, fontsize=7)
display(best_lr.rename("best learning rate").to_frame().T)

# %% [markdown]
# The experiment cell took {glue:text}`exp_wall` s (records already in the store are not
# recomputed).
#
# ## Fig. 1: average benchmark score against pre-training tokens

# %%
V = instruct.verdict(summary, chance, "avg_acc")
V_norm = instruct.verdict(summary, chance, "avg_acc_norm")
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
for ax, metric, title in ((axes[0], "avg_acc", "acc"), (axes[1], "avg_acc_norm", "acc_norm")):
    for df, lab, c in ((base, "base", "tab:gray"), (tuned, "instruction-tuned (best LR)", "tab:blue")):
        ax.errorbar(df.tokens, df[metric], yerr=df[metric + "_stderr"], marker="o", capsize=3, label=lab, color=c)
    ax.axhline(chance["avg"], ls=":", color="k", label="chance")
    token_axis(ax)
    ax.set_xlabel("pre-training tokens")
    ax.set_title(f"average {title} over {len(cfg.benchmarks)} benchmarks (ours)")
axes[0].set_ylabel("average accuracy (± 1 s.e.)")
axes[0].legend(loc="best", fontsize=8)
axes[1].text(0.02, 0.02, "Paper (theirs), OLMo-1B: tuned 3T ≈ 3 pts worse on AlpacaEval,\n"
             "≈ 2 pts worse on ARC than tuned 2.3T; base rises monotonically.",
             transform=axes[1].transAxes, fontsize=7.5, va="bottom",
             bbox=dict(boxstyle="round", fc="lightyellow", alpha=0.9))
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Fig. 2: every benchmark

# %%
fig, axes = plt.subplots(2, 4, figsize=(13, 6), sharex=True)
for ax, b in zip(axes.flat, cfg.benchmarks):
    for df, lab, c in ((base, "base", "tab:gray"), (tuned, "tuned", "tab:blue")):
        ax.plot(df.tokens, df[f"{b}/acc_norm"], marker="o", color=c, label=f"{lab} acc_norm")
        ax.plot(df.tokens, df[f"{b}/acc"], marker="x", ls="--", color=c, alpha=0.6, label=f"{lab} acc")
    ax.axhline(chance[b], ls=":", color="k")
    ax.set_title(b, fontsize=10)
    token_axis(ax)
for ax in axes.flat[len(cfg.benchmarks):]:
    ax.axis("off")
axes.flat[0].legend(fontsize=7)
fig.supxlabel("pre-training tokens")
fig.supylabel("accuracy (ours; dotted: chance)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Fig. 3: the in-distribution metric, response perplexity
#
# Left: held-out response perplexity (the test half) before and after tuning. Right: the
# validation perplexity of every learning rate of the grid, the one that picks the best LR.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ax = axes[0]
for df, lab, c in ((base, "base", "tab:gray"), (tuned, "instruction-tuned (best LR)", "tab:blue")):
    ax.plot(df.tokens, df.test_ppl, marker="o", color=c, label=lab)
token_axis(ax)
ax.set_yscale("log")
ax.set_xlabel("pre-training tokens")
ax.set_ylabel("held-out response perplexity")
ax.legend(fontsize=8)
ax = axes[1]
for lr, g in sft_df.groupby("lr"):
    g = g.sort_values("tokens")
    ax.plot(g.tokens, g.val_ppl, marker="o", label=f"lr {lr:g}")
token_axis(ax)
ax.set_yscale("log")
ax.set_xlabel("pre-training tokens")
ax.set_ylabel("validation response perplexity after SFT")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The numbers

# %%
cols = ["checkpoint", "tokens", "stage", "avg_acc", "avg_acc_stderr", "avg_acc_norm", "avg_acc_norm_stderr",
        "test_ppl", "best_lr"]
display(summary[cols].sort_values(["stage", "tokens"]).set_index(["stage", "checkpoint"]).round(4))
per_bench = summary.set_index(["stage", "checkpoint"])[[f"{b}/{m}" for b in cfg.benchmarks for m in ("acc", "acc_norm")]]
display(per_bench.round(3))
display(sft_df.pivot_table(index="checkpoint", columns="lr", values="val_ppl", sort=False).round(2)
        .rename_axis(columns="validation ppl at lr"))

# %% [markdown]
# ## AlpacaEval

# %%
if cfg.alpacaeval_judge:
    ae = out["tuned"][["checkpoint", "tokens"] + [c for c in out["tuned"].columns if c.startswith("alpacaeval")]]
    display(ae)
    nb.glue("alpaca_status", f"run with the judge {cfg.alpacaeval_judge!r}; win rates in the table above.")
else:
    nb.glue("alpaca_status", "skipped: no judge is configured (parameter alpacaeval_judge = None). "
            "It needs the alpaca_eval package, the hub and the judge's API key.")
print("AlpacaEval:", "run" if cfg.alpacaeval_judge else "skipped (alpacaeval_judge is None)")

# %% [markdown]
# AlpacaEval: {glue:text}`alpaca_status`
#
# ## Verdict

# %%
nb.glue("verdict_acc", V["text"])
nb.glue("verdict_norm", V_norm["text"])
nb.glue("chance_avg", f"{chance['avg']:.3f}")
nb.glue("best_lrs", ", ".join(f"{k}: {v:g}" for k, v in best_lr.items()))
n_edge = int((best_lr == max(cfg.lrs)).sum())
nb.glue("lr_edge", (f"The best learning rate is the largest of the grid for {n_edge} of {len(best_lr)} "
                    "checkpoints, so a larger one might do better still." if n_edge and len(cfg.lrs) > 1
                    else "The best learning rate lies inside the grid or at its lower end for every checkpoint."))
nb.glue("bench_n", str(int(out["base"][f"{cfg.benchmarks[0]}/n"].iloc[0])))
bends = V["bends_down"] or V_norm["bends_down"]
verdict_short_text = ("the instruction-tuned curve bends down at the last checkpoint in this run"
                      if bends else "the instruction-tuned curve does not bend down measurably in this run")
nb.glue("verdict_short", verdict_short_text)
print(V["text"])
print(V_norm["text"])

from coft_utils import claims
claims.record("olmo_instruction", cfg.profile,
              "observed" if bends else "inconclusive" if (V["near_chance"] or V_norm["near_chance"]) else "not observed",
              f"{series.name} ({len(series)} checkpoints): {verdict_short_text}",
              numbers={"acc": {k: v for k, v in V.items() if k != "text"},
                       "acc_norm": {k: v for k, v in V_norm.items() if k != "text"}},
              chapter="01_instruction_tuning", config=cfg)

# %% [markdown]
# **At the scale run here, {glue:text}`verdict_short`.**
#
# * Average `acc`: {glue:text}`verdict_acc`
# * Average `acc_norm`: {glue:text}`verdict_norm`
#
# Chance (uniform guessing on the same {glue:text}`bench_n` items per benchmark) averages
# {glue:text}`chance_avg`. Best learning rate per checkpoint: {glue:text}`best_lrs`.
# {glue:text}`lr_edge`
#
# How to read this: the paper's effect is a few points of accuracy for a 1B-parameter model
# trained on trillions of tokens. The suite's models at `smoke`/`cpu` have tens of thousands of
# parameters; their benchmark accuracies sit at chance, where a few points are below the
# binomial noise of a hundred items, so the benchmark curves here can neither show nor refute
# the effect. The in-distribution response perplexity (Fig. 3) is the quantity that moves at
# this scale. The claim is tested for real at `gpu` (larger suite, every item) and `paper`
# (OLMo-1B revisions, lm-eval's standard tasks).

# %% [markdown]
# ````{admonition} Rerun this
# :class: tip
# `python -m coft_utils run 01_instruction_tuning --profile smoke` (seconds), `--profile cpu`
# (the default, a few minutes on 2 cores once chapter 00's suite is cached), `--profile gpu`
# (one H100/A100), or `--profile paper` (OLMo-1B-hf revisions and Anthropic-HH from the hub).
# Parameters are overridden with `-y`, e.g. `-y '{lrs: [1e-3], bench_limit: 200}'`.
#
# At `paper` the SFT runs are multi-GPU under `accelerate` with FSDP; fill the results store
# first, then render the chapter from it:
#
# ```
# accelerate launch --config_file coft_utils/configs/accelerate_fsdp_instruct.yaml \
#     -m coft_utils.instruct --profile paper
# python -m coft_utils run 01_instruction_tuning --profile paper
# ```
#
# `-m coft_utils.instruct -p series amber` (or `olmo-2-7b-stage1`) tunes another series;
# `-p sft_data '[tulu]'` uses TULU instead of Anthropic-HH.
# ````
