# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fine-tuning at a fixed learning rate: forgetting grows with pre-training
#
# **Claim tested.** Fine-tune every checkpoint of a pre-training series on the same task, for the
# same number of steps, at the same learning rate. Then (i) the loss of pre-training-domain
# ("OOD") perplexity caused by fine-tuning grows with the number of pre-training tokens, so
# (ii) the OOD perplexity *after* fine-tuning first falls with tokens (the base model improves)
# and then rises past an *inflection point*; (iii) larger learning rates reach that point with
# fewer pre-training tokens.

# %% tags=["parameters"]
profile = "cpu"
seed = 0
overrides = {}

# %% tags=["remove-input"]
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from coft_utils.book import claims, nb
from coft_utils.chapters import finetune, finetune_report
from coft_utils.foundation import plots
cfg = nb.setup("03_fixed_lr_finetuning", profile, seed, overrides)
run = finetune.run_all(cfg)  # every unit (resumes: records already in the store are reused)
series, df, wall = run["series"], run["df"], run["wall_s"]
v = finetune_report.fixed_lr_summary(df, cfg, series)

# %% [markdown]
# ## The answer

# %% tags=["remove-input"]
display(HTML(claims.badge(v["label"]) + f" <b>{v['overall']}</b>"))
fig, ax = plt.subplots(figsize=(7.0, 4.2))
finetune_report.plot_ood(df, cfg.tasks[0], "after", ax=ax)
plots.badge(ax, v["label"])
plt.show()
display(Markdown(v["text"]))

# %% [markdown]
# **What the paper reports (theirs).** Springer et al. (2025), Section 3 (controlled experiments),
# Figs. 4–5 (figure numbers not re-confirmed from the sources reachable here): their own
# OLMo-15M/30M/90M models (not the OLMo-1B hub checkpoints of Section 2),
# pre-trained on C4 for 4B to 128B tokens (each run annealed to zero), fine-tuned at fixed
# learning rates on classification and generative tasks; the C4 perplexity after fine-tuning
# shows an inflection point after which more pre-training makes it worse, and the inflection
# comes earlier for larger fine-tuning learning rates. We copy no numbers from the paper.
#
# **Method as run here.** All logic lives in `coft_utils.chapters.finetune` (the experiment; the ID metrics in
# `finetune_eval`, the training in `finetune_train`), `coft_utils.chapters.finetune_report` (analysis, figures,
# verdicts) and `coft_utils.foundation.tasks`. Each
# task is cast as language modelling: a prompt template, then the target (the verbalized label
# for classification, the worked answer for GSM8K, the function body for HumanEval); the loss is on
# the target tokens only. Every (checkpoint, task, learning rate, seed) is one unit: load the
# base checkpoint, measure its OOD perplexity on fixed Gutenberg-validation blocks (the suite's
# pre-training domain; C4 validation at `paper`), fine-tune it with the Hugging Face `Trainer`
# (AdamW, linear warmup, then the configured schedule, the same steps for every checkpoint),
# measure ID metrics on validation and test data and the OOD perplexity again on exactly the same
# tokens. ID metrics: for classification, accuracy and the paper's *class perplexity*
# (length-normalized verbalizer scores, normalized over the classes, exp of the mean negative
# log-probability of the true class); for generative tasks, the perplexity of the answer tokens.
# Units are records of the results store (experiment `finetune`), shared with the learning-rate
# sweep of the next chapter, whose grid contains these learning rates.
#
# At the `cpu` profile the series is chapter 00's `wsd` suite: every checkpoint annealed to zero
# (like the paper's), branched off one constant-LR trunk, so it is cheap to take to 32M tokens,
# 512 tokens per parameter (the cosine suite, a run per budget, stops at 8M); `cpu-deep` takes it
# to 64M with three pre-training runs. The four fixed learning rates span two orders of magnitude, the range of
# the next chapter's grid (where the ID-optimal rate is chosen), and the task is GSM8K: in our
# development runs (not part of this book's records) the ~65k-parameter suite did not learn the
# classification tasks (SST-2, TREC) above the majority class in a few hundred steps, while the
# answer perplexity of GSM8K falls by an order of magnitude — GSM8K is the task on which
# fine-tuning demonstrably works at this scale. Every other task runs by parameter (`tasks`).

# ## Parameters of this run

# %% tags=["hide-output"]
nb.show_params(cfg)
print(finetune.run_info(run, cfg))

# %% tags=["remove-input"]
display(Markdown(finetune_report.steps_text(df, cfg)))  # steps actually run, epochs, how the batch was reached

# %% [markdown]
# ## How deep this series goes
#
# A "within noise" measured short of the regime the paper describes refutes nothing, so here is
# the depth of this series in tokens per parameter, with and without the embeddings (a small
# model's embeddings are a large share of it), beside the paper's models. {glue:text}`depth_text`

# %% tags=["remove-input"]
d = nb.show_depth(series)

# %% [markdown]
# ## (a) ID performance after fine-tuning against pre-training tokens
# Test-set ID perplexity (class perplexity for classification, answer perplexity for generative
# tasks; lower is better), one line per learning rate; dashed: the base checkpoint before
# fine-tuning.

# %%
for task in cfg.tasks:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    finetune_report.plot_id(df, task, "test_id_ppl", ax=ax)
    plots.log_y(ax)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## (b) OOD forgetting against pre-training tokens
# Left: the change of pre-training-domain perplexity caused by fine-tuning (after − before), one
# line per learning rate. Middle: the same change in log-perplexity (OOD loss after − before, in
# nats: forgetting relative to the base model). Right: the perplexity after fine-tuning (log
# scale); dashed: before fine-tuning; stars: each learning rate's minimum over the series (an
# inflection point when it lies strictly inside the token range).

# %%
for task in cfg.tasks:
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.4))
    finetune_report.plot_ood(df, task, "delta", ax=axes[0])
    axes[0].set_yscale("symlog", linthresh=1.0)
    finetune_report.plot_ood(df, task, "dloss", ax=axes[1])
    finetune_report.plot_ood(df, task, "after", ax=axes[2])
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## (c) The numbers
# Per unit (every seed), then per learning rate on the seed means (descriptive): Δ OOD at the
# first and last checkpoint, whether it is monotone in tokens, its rank correlation with tokens,
# and where the OOD perplexity after fine-tuning is lowest.

# %%
display(finetune_report.unit_table(df).round(3))  # a diverged run: no scores (NaN)
inf = finetune_report.inflection_table(df)
display(inf.round(3).set_index(["task", "lr"]))

# %% [markdown]
# <a id="verdict"></a>
#
# ## Verdict, from our own numbers
#
# Each statement is a calibrated test on the per-seed records (`coft_utils.foundation.verdicts`; see "How
# verdicts are decided"): forgetting is the OOD loss after − before (log-perplexity, relative to
# the base model), its rise the slope on log2(tokens) with a 95 % CI over seeds; the U-shape
# needs both the fall to the minimum and the rise after it beyond noise, the choice of the
# minimum accounted for; each learning rate is tested at α / (number of learning rates); the
# minimum moving earlier for larger learning rates is Kendall's τ between learning rate and the
# position of the minimum, over bootstrap draws of the seeds, and it needs at least one interior
# minimum beyond noise (a minimum at the edge of the range is not located). The series is one
# pre-training run, so the checkpoint-to-checkpoint scatter counts as noise beside the seeds; a
# "within noise" says the smallest effect it would have detected.
#
# {glue:text}`verdict_fixed`

# %%
nb.glue("verdict_fixed", v["text"])
nb.glue("fixed_wall_s", f"{wall:.0f}")
for cid, (verdict, measured) in v["claims"].items():
    claims.record(cid, cfg.profile, verdict, measured, numbers=v["numbers"], chapter="03_fixed_lr_finetuning",
                  depth=d, config=cfg, records=df)
print("Paper (theirs):", finetune_report.THEIRS["fixed_lr"])

# %% [markdown]
# ```{admonition} Rerun this
# :class: tip
# From the repository root (records resume; `smoke` takes seconds, `cpu` a few minutes):
#
#     python -m coft_utils run 03_fixed_lr_finetuning --profile smoke
#     python -m coft_utils run 03_fixed_lr_finetuning --profile cpu
#     python -m coft_utils run 03_fixed_lr_finetuning --profile cpu -y '{tasks: [gsm8k, sst2], lrs: [0.001, 0.01]}'
#     python -m coft_utils run 03_fixed_lr_finetuning --profile gpu
#     python -m coft_utils run 03_fixed_lr_finetuning --profile paper                       # the controlled OLMo-30M suite (chapter 00), data from the hub
#     python -m coft_utils run 03_fixed_lr_finetuning --profile paper -y '{suite_model: olmo-90m}'
#     python -m coft_utils run 03_fixed_lr_finetuning --profile paper -y '{series: olmo-1b, per_device_batch_size: 8}'   # separate option: OLMo-1B hub checkpoints
#
# At `gpu`/`paper`, run the units on all GPUs first (DDP or FSDP; the notebook then finds every
# record done):
#
#     accelerate launch --config_file coft_utils/configs/accelerate_ddp.yaml \
#         -m coft_utils.chapters.finetune --chapter 03_fixed_lr_finetuning --profile gpu
#     accelerate launch --config_file coft_utils/configs/accelerate_ddp.yaml \
#         -m coft_utils.chapters.finetune --chapter 03_fixed_lr_finetuning --profile paper
#     accelerate launch --config_file coft_utils/configs/accelerate_fsdp_finetune.yaml \
#         -m coft_utils.chapters.finetune --chapter 03_fixed_lr_finetuning --profile paper \
#         -o '{"series": "olmo-2-7b-stage1", "per_device_batch_size": 1}'     # 7B: FSDP, 8 x 80 GB
#
# At `paper` the global batch (`batch_size`, 64) is reached by gradient accumulation on any number
# of GPUs (`per_device_batch_size` x accumulation x processes; an impossible split is an error
# before any work), with bf16 and gradient checkpointing; `max_epochs` (10 at `paper`) caps the
# steps by the data size, so HumanEval's 131 training problems are not seen ~977 times (the
# steps actually run, and the epochs, are shown under the parameters and kept in every record).
# `paper` reads its tasks (SST-2, GSM8K, HumanEval: the public substitute for the gated
# StarCoder-Python) and C4 from the hub through `coft_utils.foundation.hubdata`.
# `series` takes `suite`, a built-in hub series (`olmo-1b`, `pythia-160m`, ...) or a path to a
# series `.json` of your own checkpoints; `tasks` any of `coft_utils.foundation.tasks.names()`;
# `keep_weights: true` keeps every fine-tuned model under `runs/<profile>/finetune/weights/`.
# ```
