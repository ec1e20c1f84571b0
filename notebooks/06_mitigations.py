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
# # What mitigates catastrophic overtraining: schedule, regularization, smaller learning rates
#
# **Questions tested.** The paper diagnoses catastrophic overtraining and, in its theory, points at
# a remedy (regularizing fine-tuning toward the pre-trained weights delays the inflection point, at
# a cost in fine-tuning loss: chapter 05) without testing any remedy on language models. Later work
# argues that the learning-rate decay at the end of pre-training raises sensitivity (warmup-stable
# checkpoints without decay beat decayed ones after SFT; short annealing cuts forgetting) and that a
# smaller fine-tuning learning rate forgets less. This chapter puts three remedies side by side on
# the *same* checkpoints, with the instruments of chapters 02 and 03:
#
# 1. **Schedule and anneal length.** At equal tokens, is an annealed checkpoint more sensitive, and
#    does it forget more, than an un-annealed one; is a long anneal worse than a short one; does the
#    anneal move the inflection point?
# 2. **Regularized fine-tuning.** Does an L2 penalty toward the pre-trained weights reduce forgetting
#    and move the inflection point later, and at what in-distribution (ID) cost?
# 3. **A learning rate lowered with tokens.** Does choosing, per checkpoint, the largest LR that holds
#    forgetting at the first checkpoint's level beat the ID-optimal LR on forgetting, and at what ID
#    cost (the ID/OOD Pareto trade-off per checkpoint)?

# %% tags=["parameters"]
profile = "cpu"
seed = 0
overrides = {}

# %% tags=["remove-input"]
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from coft_utils.book import claims, nb
from coft_utils.chapters import mitigate, mitigate_report as mr
from coft_utils.foundation import depth, series
cfg = nb.setup("06_mitigations", profile, seed, overrides)
run = mitigate.run_all(cfg)  # every unit of chapters 02/03/04 this needs (resumes: records are reused)
S, L, P = mr.schedule_summary(run, cfg), mr.l2_summary(run, cfg), mr.lr_rule_summary(run, cfg)
d = depth.of_series(series.for_config(mitigate.finetune_config(cfg, cfg.l2_schedule)))  # the checkpoints used
nb.glue("depth_text", depth.text(d))

# %% [markdown]
# ## The answer

# %% tags=["remove-input"]
for part in (S, L, P):
    for cid, (v, _) in part["claims"].items():
        display(HTML(claims.badge(v.label) + f" <b>{claims.CLAIMS[cid].text}</b>"))
display(Markdown(S["text"] + "\n\n" + L["text"] + "\n\n" + P["text"]))

# %% [markdown]
# **What others report (theirs).** Schedule: {glue:text}`theirs_schedule`. Regularization:
# {glue:text}`theirs_l2`. Learning rate: {glue:text}`theirs_lr`. We copy no numbers from these works.
#
# **Method as run here.** All logic lives in `coft_utils.chapters.mitigate` (which composes the configs
# of chapters 02, 03 and 04 and runs their experiments through the chapter registry: every unit here
# is one of their units, in their results stores, so the units on chapters 02-04's suite at chapter
# 03's learning rate and strength 0 are chapter 03's own records) and `coft_utils.chapters.mitigate_report` (matrices,
# verdicts, figures). Measures, in nats relative to each checkpoint's base model: *sensitivity* = the
# loss of the Gaussian-perturbed model minus the unperturbed one on chapter 02's held-out blocks;
# *forgetting* = the pre-training-domain loss after fine-tuning minus before (chapter 03's blocks).
# Every schedule is evaluated on the same tokens. The schedules: `constant` (no anneal), `wsd`
# (the constant trunk, then a linear decay to zero over the last `decay_frac` of each budget),
# `wsd_short` (the same trunk, a decay over the last `decay_frac_short`; its branch starts from the
# trunk state the long one starts from, so the two differ only in the anneal) and `cosine` (every
# budget its own run, annealed from the end of warmup, at the peak LR chapter 00's scan chose for
# it: a different LR, so cosine is in no claim row; at `cpu` it is left out, `-y '{schedules: [constant,
# wsd_short, wsd, cosine]}'` draws it). Regularized fine-tuning is chapter
# 03's `Trainer` with the loss `task loss + λ/2 · ‖θ − θ0‖²` (a `Trainer` subclass in
# `coft_utils.chapters.finetune_train`; λ = 0 is the plain run). The LR rule uses chapter 04's grid:
# for each seed, both LRs are chosen on the *other* seeds' means (cross-fitting, so a seed's score is
# not the one it was chosen by).

# ## Parameters of this run

# %% tags=["hide-output"]
nb.show_params(cfg)
print({k: round(v, 1) for k, v in run["wall_s"].items()}, "s;", "peak LRs:", run["peak_lr"])

# %% [markdown]
# ## How deep these checkpoints go
#
# The schedules are compared at the budgets they share (the `cosine` suite, a run per budget, may
# stop earlier than the shared-trunk ones). {glue:text}`depth_text`

# %% tags=["remove-input"]
display(depth.frame(d))

# %% [markdown]
# ## (1) Schedule and anneal length
# One axis per measure, every schedule on it (95 % bands over seeds). Left: Gaussian sensitivity at
# the middle γ; middle: forgetting at the fixed learning rate; right: the pre-training-domain
# perplexity after fine-tuning (stars: each schedule's minimum; an interior one is an inflection).

# %%
fig = mr.fig_schedules(run, cfg)
plt.show()
display(S["table"].round(4))
display(S["pairs"].round(4))

# %% [markdown]
# ## (2) Regularized fine-tuning toward the pre-trained weights
# Per strength λ: forgetting, the perplexity after fine-tuning (stars: minima), and the test ID
# perplexity (the cost). Below it, chapter 05's linear model under the same penalty.

# %%
fig = mr.fig_l2(run, cfg)
plt.show()
display(L["table"].round(4))
if run["theory"] is not None:
    from coft_utils.foundation import registry
    fig = registry.report("05_linear_theory").fig_regularization(run["theory"])
    plt.show()

# %% [markdown]
# ## (3) A learning rate lowered with tokens: the ID/OOD trade-off
# Left: per checkpoint, chapter 04's learning-rate grid as a curve in (test ID perplexity,
# forgetting), with the ID-optimal LR (circle) and the forgetting-holding LR (square). Right: the
# learning rate each rule picks against tokens.

# %%
fig = mr.fig_pareto(run, cfg, P)
plt.show()
display(P["table"].round(4))

# %% [markdown]
# <a id="verdict"></a>
#
# ## Verdict, from our own numbers
#
# Each statement is a calibrated test on the per-seed records (`coft_utils.foundation.verdicts`; see
# "How verdicts are decided"): two curves at equal tokens are compared by `differs`, paired by seed
# where the seeds are common random numbers (the same noise draw per checkpoint label, the same
# fine-tuning data order); the perturbation's seeds are independent across checkpoints, the
# fine-tuning seeds are not, so there each seed is first averaged over the checkpoints. Moves of the
# minimum are `minimum_shift` (Kendall's τ over bootstrap draws); several γ or strengths in one row
# are Bonferroni-combined. "Within noise" is a result: the remedy did not measurably help here.
#
# {glue:text}`verdict_mitigations`

# %%
text = S["text"] + "\n\n" + L["text"] + "\n\n" + P["text"]
nb.glue("verdict_mitigations", text)
nb.glue("mitigations_wall_s", f"{run['wall_s']['total']:.0f}")
for key, val in mr.THEIRS.items():
    nb.glue(f"theirs_{key}", val)
records = mr.claim_records(run)
for part in (S, L, P):
    for cid, (verdict, measured) in part["claims"].items():
        claims.record(cid, cfg.profile, verdict, measured, chapter="06_mitigations", config=cfg,
                      records=records[cid], depth=d)

# %% [markdown]
# ```{admonition} Rerun this
# :class: tip
# From the repository root (records resume; `smoke` takes seconds, `cpu` a few minutes once chapters
# 00-04 have run):
#
#     python -m coft_utils run 06_mitigations --profile smoke
#     python -m coft_utils run 06_mitigations --profile cpu
#     python -m coft_utils run 06_mitigations --profile cpu -y '{l2_strengths: [0, 0.001, 0.01, 0.1], lr: 0.1}'
#     python -m coft_utils run 06_mitigations --profile cpu -y '{schedules: [constant, wsd], gammas: [0.4]}'
#     python -m coft_utils run 06_mitigations --profile paper                   # chapter 00's OLMo-30M suites on C4
#
# At `gpu`/`paper`, run the units of chapters 02-04 first on all GPUs (see those chapters); the
# suites of every schedule come from chapter 00 (`python -m coft_utils.chapters.pretrain_launch
# --profile paper --schedule all`; `wsd_short` trains only its branches off the wsd trunk:
# `--schedule wsd_short`). `l2_strengths` must contain 0 (the unregularized reference); `lr` is
# the fixed fine-tuning LR of parts 1 and 2; `l2_schedule` the suite of parts 2 and 3.
# ```
