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
# checkpoint tuned the same way (about 3 points on AlpacaEval and 2 on ARC, the paper's Fig. 2).
# The base model keeps improving with pre-training tokens; the instruction-tuned one does not
# (the paper's Fig. 1: the average of five common benchmarks before and after tuning).
#
# This chapter runs the paper's protocol as a capability: take every checkpoint of a
# pre-training series, evaluate it, instruction-tune it with TRL's `SFTTrainer` at several
# learning rates and several fine-tuning seeds (the rate chosen per checkpoint on held-out
# instruction data), evaluate every seed's tuned model the same way, and plot both curves
# against pre-training tokens; the seeds are the replicates of the verdict. At the
# `paper` profile the series is the OLMo-1B-hf revisions from 0.04T to 3.1T tokens; at
# `smoke`/`cpu`/`gpu` it is this book's own pre-training suite (chapter 00), which is many
# orders of magnitude smaller.

# %% tags=["parameters"]
profile = "cpu"
seed = 0
overrides = {}

# %% tags=["remove-input"]
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import HTML, Markdown, display

from coft_utils.book import claims, nb
from coft_utils.chapters import instruct
from coft_utils.chapters import instruct_report as report
cfg = nb.setup("01_instruction_tuning", profile, seed, overrides)
series = instruct.get_series(cfg)
out = instruct.run(cfg, series=series, progress=False)
cv = report.claim_verdict(out, cfg)
pv = report.panel_verdicts(out, cfg)
pc = report.panel_claim(out, cfg, pv)

# %% [markdown]
# ## The answer

# %% tags=["remove-input"]
v = cv["verdict"]
display(HTML(claims.badge(v.label) + f" <b>{v.stat_text()}</b>"))
display(Markdown(cv["sentence"] + " Details and the other metrics: [the verdict](#verdict)."))
if cfg.panel:
    display(HTML(claims.badge(pc["verdict"].label) + f" <b>{pc['verdict'].stat_text()}</b>"))
    display(Markdown(pc["sentence"] + " See [the general-ability panel](#panel)."))

# %% [markdown]
# ## Parameters of this run

# %% tags=["hide-output"]
nb.show_params(cfg)
print(f"series {series.name!r}: {len(series)} checkpoints ({', '.join(c.label for c in series)}); "
      f"seeds {out['seeds']}; {out['wall_s']:.1f} s")

# %% [markdown]
# ## What the paper reports (theirs)
#
# The statements below are the paper's (Springer et al., 2025: its abstract, Section 1, Fig. 1
# and Fig. 2), as summary statements about OLMo-1B; they are not measured here.

# %%
display(report.table_paper())
nb.glue("paper_alpaca", f"{report.PAPER['alpacaeval_3T_vs_2p3T']:+.0f}")
nb.glue("paper_arc", f"{report.PAPER['arc_3T_vs_2p3T']:+.0f}")

# %% [markdown]
# In their words: 3T vs 2.3T tokens after instruction tuning, about {glue:text}`paper_alpaca`
# points on AlpacaEval and about {glue:text}`paper_arc` points on ARC (the paper's Fig. 2).
# **What we do not have:**
# the paper's per-checkpoint and per-benchmark values behind its Figs. 1-2 (we have only the
# summary statements above), its exact learning-rate grid and its SFT batch size; so the
# figures below show our curves only, with the paper's statements beside them as text, and
# the `paper` preset's grid is this companion's choice (see the parameter table).
#
# ## Method (as run)
#
# * **Series.** `series = "suite"`: the cached pre-training suite of this profile
#   (`pretrain.get_suite(profile)`, cosine schedule annealed to zero per budget); at `paper`
#   `olmo-1b` (`allenai/OLMo-1B-hf`, revisions pinned in `coft_utils.foundation.series`), with
#   `olmo-2-7b-stage1` and `amber` as alternatives (full fine-tuning under FSDP, one config each
#   in `coft_utils/configs/`, with its memory arithmetic).
# * **Instruction data.** Anthropic-HH "chosen" dialogues split into user/assistant turns (here
#   the local harmless-base pairs; the hub's full train split at `paper`), the 175 Alpaca seed
#   tasks (instruction + input → output) and GSM8K train (question → answer); TULU
#   (`allenai/tulu-v2-sft-mixture`) is an alternative at `paper`. At `paper` every set comes from
#   its hub id (`Anthropic/hh-rlhf`, `openai/gsm8k`, `allenai/tulu-v2-sft-mixture`) through
#   `coft_utils.foundation.hubdata`; nothing reads `../shared/data`. Per source a fixed
#   permutation (seed independent of the run) holds out `heldout_per_source` dialogues: half to
#   choose the learning rate, half to report.
# * **SFT.** TRL `SFTTrainer`, chat template with `<|user|>`/`<|assistant|>` and a
#   `{% generation %}` block, `assistant_only_loss=True` (the loss is on response tokens only),
#   sequences cut at the model's context; AdamW, warmup then the `lr_schedule` decay, for
#   `sft_steps` steps (0: one epoch; the epochs seen are recorded) of `global_batch` sequences
#   (reached by gradient accumulation whatever the number of processes: per-device `batch_size`
#   × accumulation × processes = `global_batch`), at every learning rate of `lrs`, for each of `seeds` fine-tuning seeds
#   (`seed·seeds`, `seed·seeds + 1`, ...; a seed sets the subsample and order of the training
#   mix and the trainer's seed).
# * **ID metric.** Response perplexity: exp of the mean next-token loss over the held-out
#   dialogues' assistant tokens. The learning rate of each checkpoint minimizes its mean over
#   the seeds on the validation half; the table of the experiment section shows how many seeds
#   on their own would have chosen each rate.
# * **Benchmarks.** Zero-shot, through `lm_eval.simple_evaluate`. The paper's five (ARC-Easy,
#   ARC-Challenge, PIQA, HellaSwag, SciQ) at `paper`, with lm-eval's own task definitions; at
#   `smoke`/`cpu`/`gpu` the eight with a local file (SciQ has none), with task configs generated
#   on the local files (`coft_utils.foundation.lmeval_tasks`): ARC-Easy, ARC-Challenge, PIQA,
#   HellaSwag and, as this companion's extras, Winogrande, BoolQ, COPA and OpenBookQA. `acc` and
#   `acc_norm` (the log-likelihood divided by the choice's length in characters), the first
#   `bench_limit` items of each (0 = all). Every checkpoint is evaluated before tuning, and every
#   seed's model at the chosen learning rate after. Contexts are cut from the left at
#   `eval_max_length` tokens (raised where a long answer would not fit); for the suite's tiny
#   models this exceeds their pre-training context, which their rotary positions extrapolate.
# * **General-ability panel** (`panel`; `coft_utils.chapters.instruct_panel`, at `smoke`/`cpu`/`gpu`,
#   not at `paper`). At this scale the benchmarks sit at chance, so the abilities pre-training
#   gives these models are measured where they show: accuracy on a versioned **minimal-pair**
#   task built from held-out pre-training-domain sentences (`coft_utils.foundation.minimal_pairs`:
#   each held-out Gutenberg sentence against the same words with two adjacent words swapped,
#   sentences that also occur in the training books removed; `pairs_n` pairs through lm-eval as a
#   local multiple-choice task; chance 0.5), **LAMBADA** through lm-eval's own `lambada_openai`
#   task on the local file (final-word perplexity and accuracy; a fixed seeded subset of
#   `lambada_limit` passages; reference: a uniform guess over the vocabulary), and the perplexity
#   on `panel_blocks` held-out blocks of `panel_seq_len` tokens of the **pre-training domain** (the
#   Gutenberg blocks of chapter 02) and of **WikiText-2** (reference: the vocabulary size, a
#   uniform guess). Every base model and every seed's tuned model at the chosen learning rate is
#   evaluated, one load per model; the panel's records are their own units, so a change of the
#   panel re-evaluates only the panel.
# * **Verdict.** Declared before any run: the claim row is decided on the average `acc_norm`
#   (`instruct_report.CLAIM_METRIC`), with `coft_utils.foundation.verdicts.bends_down`: the seed-mean tuned curve's
#   last checkpoint against its best checkpoint of the later half of the series, with the
#   seeds as replicates and a critical value that accounts for picking that checkpoint; the
#   same test on the base curve (with its lm-eval standard error) must not fire. The average
#   `acc` and the ID perplexity are tested the same way and reported, but do not count.

# %%
print(report.benchmarks_text(cfg))
display(report.table_checkpoints(series))
d = nb.show_depth(series)  # tokens per parameter beside the paper's models (glued as depth_text)
display(report.table_examples(out))
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
# One record per unit (checkpoint × stage, and × learning rate × seed for SFT, × seed for the
# tuned evaluation) is written to the results store as it finishes, so a rerun only computes
# what is missing. The experiment took {glue:text}`exp_wall` s here (records already in the
# store are not recomputed). The learning rate of each checkpoint, the seed-mean validation
# perplexity of every rate of the grid, and how many seeds on their own would choose each:

# %%
nb.glue("exp_wall", f"{out['wall_s']:.0f}")
display(report.table_lr_choice(out))

# %% [markdown]
# ## Figure A: average benchmark score against pre-training tokens (cf. the paper's Fig. 1)

# %%
fig = report.fig_average(out, cfg)
plt.show()

# %% [markdown]
# ## Figure B: every benchmark ("(extra)": not in the paper's list)

# %%
fig = report.fig_benchmarks(out, cfg)
plt.show()

# %% [markdown]
# ## Figure C: the in-distribution metric, response perplexity
#
# Left: held-out response perplexity (the test half) before and after tuning. Right: the
# validation perplexity of every learning rate of the grid (mean over seeds, band: min–max),
# the one that picks the learning rate; the chosen one is ringed.

# %%
fig = report.fig_id(out, cfg)
plt.show()

# %% [markdown]
# (panel)=
# ## The general-ability panel (a small-model stand-in for the paper's benchmarks)
#
# The paper's Figs. 1-2 on metrics these models can move: each panel metric against pre-training
# tokens, base (± 1 standard error: items or blocks) and instruction-tuned at the chosen learning
# rate (mean of the seeds, band: min–max over seeds), the chance or uniform-guess reference
# dotted, the verdict of each metric in its corner; the ID metric (held-out response
# perplexity) beside them. Perplexities on a log scale (lower is better).

# %%
if cfg.panel:
    fig = report.fig_panel(out, cfg, pv, id_label=cv["id"]["label"])
    plt.show()
    display(report.table_panel(out, cfg))
    display(report.table_panel_seeds(out, cfg))
else:
    print("No panel at this profile (panel = []): the paper's benchmarks are the measure here.")
for k, val in report.panel_glue(out, pv, pc, cfg).items():
    nb.glue(k, val)

# %% [markdown]
# Above: per checkpoint, base ± 1.96 s.e. and tuned mean ± the 95 % t-interval over seeds (the
# chosen learning rate in column `LR`), and the reference level in the last row; then every
# seed's values. **Verdict of the panel** (the claims page's row "small-model stand-in"; declared
# before any run: the minimal-pair accuracy, `instruct_panel.CLAIM_METRIC`, through
# `verdicts.bends_down` with the seeds as replicates and the base with its binomial s.e.; the other
# metrics are tested the same way and reported, with whether the base improves with tokens and
# whether the damage of tuning grows with tokens, but do not count):
# {glue:text}`panel_label` — {glue:text}`panel_sentence`
#
# Per metric: {glue:text}`panel_verdicts`
#
# ## The numbers
#
# Tuned: mean over the seeds ± the half-width of its 95 % t-interval; base: ± 1.96 lm-eval
# standard errors (the binomial noise of the items; test perplexity: from the standard error
# of its log over the held-out dialogues). Then every benchmark, and the per-seed records.

# %%
display(report.table_summary(out, cfg))
display(report.table_summary(out, cfg, per_benchmark=True))
display(report.table_seeds(out))

# %% [markdown]
# ## AlpacaEval

# %%
from coft_utils.chapters import instruct_eval
alpaca_status = instruct_eval.alpacaeval_status(cfg)
if cfg.alpacaeval_judge:
    display(report.table_alpacaeval(out))
    alpaca_status += "; win rates in the table above (the paper's headline metric)."
nb.glue("alpaca_status", alpaca_status)
print(alpaca_status)

# %% [markdown]
# {glue:text}`alpaca_status`

# %% [markdown]
# <a id="verdict"></a>
#
# ## Verdict
#
# **At the scale run here: {glue:text}`verdict_sentence`**
#
# * Average `acc_norm` (the claim's metric, declared beforehand): {glue:text}`verdict_norm`
# * Average `acc` (reported, does not count): {glue:text}`verdict_acc`
# * The ID metric, held-out response perplexity (tuned per seed against base, log scale; a
#   tuned curve that gets *worse* at the last checkpoint while the base does not would be
#   "observed"): {glue:text}`verdict_id`
#
# Chance (uniform guessing on the same {glue:text}`bench_n` items per benchmark) averages
# {glue:text}`chance_avg`. {glue:text}`lr_text`
#
# * The general-ability panel ([above](#panel), the claims page's small-model stand-in row):
#   {glue:text}`panel_sentence`
#
# How to read this: the paper's effect is a few points of accuracy for a 1B-parameter model
# trained on trillions of tokens. The suite's models at `smoke`/`cpu` have tens of thousands of
# parameters; their benchmark accuracies sit near chance, where a few points are below the
# binomial noise of a hundred items, so the benchmark curves here can neither show nor refute
# the effect. What moves at this scale is the in-distribution response perplexity (Figure C)
# and the general-ability panel (minimal pairs, LAMBADA, held-out perplexities), which is why
# the panel's row stands beside the paper's statements as a stand-in, not as the paper's metric. The claim is tested for real at `gpu` (larger suite, every item) and `paper`
# (OLMo-1B revisions, lm-eval's standard tasks). Each test and its calibration: the book's
# "How verdicts are decided" page.

# %%
for k, val in report.verdict_glue(out, cv, cfg).items():
    nb.glue(k, val)
claims.record("olmo_instruction", cfg.profile, v, measured=cv["measured"], numbers=cv["numbers"],
              chapter="01_instruction_tuning", config=cfg, depth=d,
              records=pd.concat([out["base"], out["sft"], out["tuned"]]))
print(v.text())
print("method:", v.method)
if cfg.panel:
    pids = [i for i in pd.concat([out["base"], out["tuned"]]).get("panel_record_id", pd.Series(dtype=object))
            if isinstance(i, str)]
    claims.record(report.PANEL_CLAIM, cfg.profile, pc["verdict"], measured=pc["measured"], numbers=pc["numbers"],
                  chapter="01_instruction_tuning", config=cfg, depth=d,
                  records=sorted(set(pd.concat([out["base"], out["sft"], out["tuned"]])["record_id"]) | set(pids)))
    print(pc["verdict"].text())

# %% [markdown]
# ````{admonition} Rerun this
# :class: tip
# `python -m coft_utils run 01_instruction_tuning --profile smoke` (seconds), `--profile cpu`
# (the default, a few minutes on 2 cores once chapter 00's suite is cached), `--profile gpu`
# (one H100/A100), or `--profile paper` (OLMo-1B-hf revisions and Anthropic-HH from the hub).
# Parameters are overridden with `-y`, e.g. `-y '{lrs: [1e-3], bench_limit: 200}'`.
#
# At `paper` the SFT runs are multi-GPU under `accelerate` with FSDP (the global batch stays
# `global_batch` on any number of GPUs); fill the results store first, then render the chapter
# from it:
#
# ```
# accelerate launch --config_file coft_utils/configs/accelerate_fsdp_instruct.yaml \
#     -m coft_utils.chapters.instruct_launch --profile paper
# python -m coft_utils run 01_instruction_tuning --profile paper
# ```
#
# `-m coft_utils.chapters.instruct_launch -p series olmo-2-7b-stage1 -p batch_size 4` (or `amber`)
# tunes a 7B series, with `--config_file coft_utils/configs/accelerate_fsdp_olmo2_7b.yaml` (or
# `accelerate_fsdp_amber_7b.yaml`; `--fsdp-config` prints the right one); `-p sft_data '[tulu]'`
# uses TULU instead of Anthropic-HH; `-p alpacaeval_judge weighted_alpaca_eval_gpt4_turbo` runs
# AlpacaEval (`pip install coft-utils[paper]`, `OPENAI_API_KEY`; checked before any training).
# ````
