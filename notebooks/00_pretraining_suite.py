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
# # The controlled pre-training suite
#
# **What the paper does (theirs).** To separate "more pre-training tokens" from "a different
# learning rate at the end of pre-training", Springer et al. (2025) pre-train their own
# OLMo-15M, OLMo-30M and OLMo-90M models on C4 for 4B to 128B tokens (each budget double the
# last), and every run is its own cosine schedule annealed to zero. Intermediate checkpoints of
# one long run would mix the two effects, because their learning rate has not decayed yet.
# They train with the OLMo codebase under muP (the maximal update parametrization, Yang et al.
# 2022), so that one learning rate tuned at a small width serves all three sizes.
#
# **What we run here (ours).** The same protocol as a reusable capability,
# `coft_utils.chapters.pretrain.get_suite(profile, schedule)`, which every later chapter loads like a hub
# checkpoint series:
#
# * models: the OLMo architecture of `transformers` (`OlmoForCausalLM`), built from config at a
#   named size preset (tiny on CPU, the paper's OLMo-30M at the `paper` profile);
# * tokenizer: the project's byte-level BPE trained on the pre-training corpus (small vocabulary
#   at the CPU profiles);
# * data: the Gutenberg book bodies (C4 at the `paper` profile), tokenized once, cached as packed
#   blocks and read in a seeded order; its validation books are the held-out pre-training domain;
# * budgets: a geometric series (each double the last), three schedules:
#   `cosine` (every budget its own warmup + cosine-to-zero run: the paper's protocol),
#   `wsd` (one warmup-stable run with a linear decay-to-zero branch taken off at every budget),
#   `constant` (the same warmup-stable run without any decay; it *is* the trunk of `wsd`).
#
# Everything is cached under a key of the full configuration; a killed run resumes where it
# stopped, a finished suite is never trained again.

# %% tags=["parameters"]
profile = "cpu"
seed = 0
overrides = {}

# %% tags=["remove-input"]
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from coft_utils.book import claims, nb
from coft_utils.chapters import pretrain, pretrain_report, pretrain_scan
from coft_utils.foundation import depth, plots, weights
cfg = nb.setup("00_pretraining_suite", profile, seed, overrides)
scan, scan_summary = None, None
if cfg.lr_scan_lrs:
    scan = pretrain_scan.lr_scan(profile, lrs=cfg.lr_scan_lrs, budgets=min(cfg.lr_scan_budgets, cfg.n_budgets),
                                 seed=seed, overrides=overrides)
    scan_summary = pretrain_report.lr_scan_summary(scan, cfg)
suites, runs = pretrain.all_suites_and_runs(profile, seed=seed, overrides=overrides)
table = pretrain_report.records_frame(suites)
verdict = pretrain_report.monotone_verdict(table, runs, cfg.replicated)

# %% [markdown]
# ## The answer

# %% tags=["remove-input"]
display(HTML(claims.badge(verdict["verdict"].label) + " <b>Base models improve with more pre-training tokens "
             f"(every schedule): {verdict['verdict'].label}.</b>"))
fig = pretrain_report.plot_ppl(table)
plots.badge(fig.axes[0], verdict["verdict"].label)
plt.show()
display(Markdown(verdict["text"]))

# %% [markdown]
# ## Parameters of this run

# %% tags=["hide-output"]
nb.show_params(cfg)

# %% [markdown]
# ## What the paper ran, and what each profile runs here
#
# The paper's §3 suite, value by value, with where each comes from. Its Appendix D (Table 3)
# lists the architecture and hyperparameters, but no stored public copy of that table could be
# read while this companion was written, so the values marked *chosen* are ours, not the paper's:
#
# | | the paper (§3, App. D) | `paper` profile here | source of our value |
# |---|---|---|---|
# | codebase | OLMo codebase (App. D.1) | `transformers`' `OlmoForCausalLM` (OLMo-1: no biases, SwiGLU, RoPE, non-parametric LayerNorm) + this chapter's loop | App. D.1, quoted by the paper's reproducibility page |
# | models | OLMo-15M, -30M, -90M | `olmo-30m` (default), `olmo-15m` / `olmo-90m` via `model` (`suite_model` in chapters 02-04) | sizes from §3; shapes 8x384, 10x512, 12x768 (layers x d_model), head_dim 64: *chosen* |
# | corpus | C4 | C4 'en' (`allenai/c4`), tokenized once into a shared memory-mapped cache | §3 |
# | budgets | 4B, 8B, 16B, 32B, 64B, 128B tokens | the same, each its own run | §3 |
# | schedule | cosine to zero | linear warmup, cosine to zero | §3 |
# | parametrization | muP | muP for Adam (`models.mup_init`, `mup_param_groups`), base width 384, untied output layer | Yang et al. 2022 Tables 3/8; base width *chosen*; untied as in OLMo's `scripts/mup_ladder.py` |
# | optimizer | AdamW | AdamW (0.9, 0.95), eps 1e-8, clip 1.0, weight decay 0.1, bf16 | OLMo's `mup_ladder.py`; weight decay OLMo-1's |
# | peak LR, warmup | Table 3 | 1e-3 at the base width, 1,000 steps | *chosen* (not tuned at this scale here) |
# | sequence x batch | Table 3 | 1,024 x 256 sequences (262,144 tokens/step) for any number of GPUs (gradient accumulation) | *chosen* |
# | tokenizer | Table 3 | byte-level BPE, 50,304 ids, trained on C4 | *chosen* (OLMo's small configs use the GPT-NeoX-based OLMo tokenizer, also 50,304 ids padded) |
#
# Every profile runs the same code; only the preset differs (read from `pretrain.PRESETS`):

# %% tags=["remove-input"]
display(pretrain_report.profiles_frame())

# %% [markdown]
# ## A peak learning rate per schedule
#
# One peak learning rate for all three schedules is not a fair comparison: a cosine run spends
# most of its steps far below its peak, a constant run none. So each schedule gets its own peak
# LR (`lr_cosine`, `lr_wsd`, `lr_constant`), chosen by a scan: every schedule is trained at every
# LR of `lr_scan_lrs` on the smallest `lr_scan_budgets` budgets, and the rule
# (`pretrain_scan.choose_lr`) takes, per schedule, the LR with the lowest mean validation
# log-perplexity over those budgets (ties: the smaller LR). The profile's preset holds the values
# this scan chose at that profile. The scan's runs are the suite's own jobs (same cache folders),
# so the suite below reuses those at the chosen LRs.

# %%
if scan is not None:
    fig_scan = pretrain_report.plot_lr_scan(scan, scan_summary["chosen"])
scan_text = pretrain_report.lr_scan_text(scan_summary, cfg)
nb.glue("pt_lr_scan", scan_text)
print(scan_text)

# %%
if scan is not None:
    display(pretrain_report.lr_scan_table(scan))

# %% [markdown]
# {glue:text}`pt_lr_scan`
#
# Each panel is one schedule, each line one budget; the dashed line and the open circles mark
# the chosen peak LR.

# %% [markdown]
# ## Train (or load) the suite for every schedule
#
# The first run trains; every later run loads the cached checkpoints. Independent runs (the
# cosine budgets, the warmup-stable trunk, the decay branches once their branch point exists)
# train at the same time on `workers` processes of one thread each; the results do not depend
# on `workers`.

# %%
pretrain_report.records_table(table)

# %% tags=["remove-input"]
depths = {s: depth.of_series(suites[s], f"{s} (this run)") for s in suites}
display(depth.frame(*depths.values()))
d = max((x for x in depths.values() if x is not None), key=lambda x: x.tokens, default=None)

# %% [markdown]
# Each row is one checkpoint: its schedule's peak LR, its pre-training tokens, tokens per parameter (all parameters,
# embeddings included), validation perplexity on the held-out Gutenberg books, and the training
# wall time it took to produce it (for `wsd` and `constant` the time of the shared run up to
# that point). The second table sets each schedule's deepest checkpoint beside the paper's models,
# in tokens per parameter with and without the embeddings: the shared-trunk schedules are cheap
# to take deeper (one run, saved at every budget), the cosine schedule (a run per budget) is not,
# so its series may stop earlier (`cosine_budgets`).

# %% [markdown]
# ## Between pre-training runs
#
# The claims of this book are about pre-training length, so the unit of replication is the
# pre-training run: two runs of one recipe that differ only in their seed (initialization and
# data order) end at different checkpoints, and a verdict that treats one run as the population
# reads that difference as signal. One schedule (`replicated`: at `cpu` the cheapest, the
# `constant` trunk; at `cpu-deep` the `wsd` series the later chapters measure) is trained
# `pretrain_seeds` times (seeds `seed` … `seed + pretrain_seeds − 1`; the extra runs may stop
# earlier, `replicate_budgets`, and are compared on the checkpoints every run has); below, the
# validation perplexity of each run per checkpoint, the mean over runs and its 95 % interval. Its
# verdict above is taken across these runs (a slope per run); the other schedules have one run, so
# their checkpoint-to-checkpoint scatter is their noise.

# %% tags=["remove-input"]
if len(runs) > 1:
    pretrain_report.plot_between_runs(runs)
    plt.show()
    display(pretrain_report.between_runs_table(pretrain_report.between_runs(runs)))
spread_text = pretrain_report.spread_text(runs, cfg.replicated)
nb.glue("pt_spread", spread_text)
print(spread_text)

# %%
cost = pretrain_report.cost_summary(suites)
nb.glue("pt_verdict", verdict["text"])
nb.glue("pt_cost", cost["text"])
nb.glue("pt_top_tpp", f"{table['tokens_per_param'].max():,.0f}")
claims.record("base_improves", cfg.profile, verdict["verdict"], verdict["text"].replace("**", ""),
              numbers=verdict["per_schedule"], chapter="00_pretraining_suite", config=cfg,
              records=[weights.identity(c) for s in [*suites.values(), *runs.values()] for c in s],  # the weights
              depth=d)
print(verdict["text"])
print(cost["text"])

# %% [markdown]
# <a id="verdict"></a>
#
# **Verdict.** {glue:text}`pt_verdict`
#
# **Between runs.** {glue:text}`pt_spread`
#
# **Cost of the schedules.** {glue:text}`pt_cost`
#
# The largest budget trains {glue:text}`pt_top_tpp` tokens per parameter. Later chapters take
# these series (`pretrain.get_suite(profile, schedule)`) as their "overtrained" model families:
# the `cosine` one reproduces the paper's protocol, the `constant` one shows what changes when
# the learning rate is never annealed.

# %% [markdown]
# ```{admonition} Rerun this
# :class: tip
# `python -m coft_utils run 00_pretraining_suite --profile cpu` (the default: three schedules, the
# shared trunk to 32M tokens, in about 18 minutes on 2 cores; `--profile cpu-deep`: to 64M with
# three runs of the wsd series, about an hour), `--profile smoke` (seconds), `--profile gpu` (one H100/A100,
# bf16), or `--profile paper` (the paper's OLMo-30M on C4 for 4B-128B tokens, muP; online, many
# GPUs: first `python -m coft_utils.chapters.pretrain_data prepare --profile paper` (tokenizes C4
# once, into the shared cache), then
# `accelerate launch --config_file coft_utils/configs/accelerate_ddp.yaml -m coft_utils.chapters.pretrain_launch --profile paper`;
# the global batch is the same on 1, 2, 4 or 8 GPUs).
# ```
