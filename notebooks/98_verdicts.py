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
# # How verdicts are decided
#
# Every verdict of this book is a statistical statement computed from replicates, never a
# comparison of two numbers. One module, `coft_utils.foundation.verdicts`, decides every shape
# claim; each test returns its label, its statistic with a confidence interval, the number of
# replicates, the method, the **design** (what a replicate is) and the **smallest effect it could
# have detected** (80 % power), and the claims page shows all of them.
#
# **Labels.** *observed*: significant in the claimed direction. *contradicted*: significant in
# the opposite direction. *within noise*: neither; this is a result ("the effect does not show
# at this scale, beyond the noise of this design"), and it says what it would have detected.
# *inconclusive*: the test could not be run honestly: non-finite values (a diverged run is named,
# never dropped or counted as a rise), a non-finite standard error, too few checkpoints, too few
# replicates.
#
# **The unit of replication is the pre-training run.** The claims are about pre-training
# length, so fine-tuning and noise seeds nest inside a pre-training run, and a deviation of one
# checkpoint that all seeds of a run share (that checkpoint's luck, its own anneal branch) is
# noise, not signal. Every test takes the run of each replicate (`runs=`) and uses one of two
# designs (`coft_utils.foundation.verdict_design`):
#
# * **several pre-training runs** (hierarchical): the seeds of each run are averaged and the
#   statistic is taken per run; the test is across runs.
# * **one pre-training run** (every hub or user series, and a suite with one seed): *"one
#   pre-training run: checkpoint-to-checkpoint scatter used as noise"*. Each contrast is taken
#   within each seed (a seed that shifts or tilts its whole curve is one replicate, not one per
#   checkpoint), and the scatter of the mean curve about a smooth fit in log tokens, beyond what
#   the seeds explain, is added to the variance: about a line for trends and two-curve
#   differences, about a parabola for shapes (U, bend, shift of the minimum). A U or a bend
#   sharper than a parabola is then partly read as scatter: one run cannot tell a one-checkpoint
#   dip from that checkpoint's luck, and the verdict says how large an effect it could have seen.
#
# **The tests** (α = 0.05).
#
# * *Rises / improves with tokens*: the OLS slope of the replicate-mean curve on log2(tokens),
#   per doubling. Its variance: the spread of the per-replicate slopes / R, plus (one run) the
#   lack-of-fit term; Welch–Satterthwaite df; with one replicate, the residuals (df = K − 2).
#   Two-sided t interval; *observed* when it lies above 0. A rise that is not monotone is said so
#   in the chapter's text.
# * *U-shaped (interior minimum)*: the minimum of the mean curve must lie inside the range, and
#   both the fall to it and the rise after it must exceed their standard errors by a critical
#   value that accounts for choosing the minimum from the same data: the 95 % quantile of the
#   same statistic, re-selected in every draw, under the least favourable no-U curves (flat; a
#   fall into a flat tail; with one run also checkpoint shocks of 0–4 seed s.d., falls of
#   several sizes and per-seed slopes), the largest over them.
# * *Minimum earlier (later) for larger γ or learning rate*: Kendall's τ between the parameter and
#   the position of each curve's minimum; *observed* when ≥ 97.5 % of bootstrap draws (whole
#   seeds resampled; with one run, each curve's checkpoint scatter redrawn) agree in sign **and**
#   at least one curve's interior minimum is beyond noise (U test at α / number of curves). A
#   minimum at the edge of the range is not located (noise can only move it inwards), so without
#   that rule "earlier" would fire when every true minimum sits at the last checkpoint. A curve
#   with a diverged run makes the row inconclusive; it is never dropped.
# * *Curve A above curve B at the same checkpoints*: the mean over checkpoints of the difference
#   of the replicate means. Each seed is first averaged over the checkpoints (paired: a t test of
#   the per-seed differences); chapter 02's noise, drawn per checkpoint, uses per-checkpoint
#   spreads. With one run per curve, the scatter of the per-checkpoint differences about a line
#   in log tokens is added (an anneal branch per checkpoint is a shock of its own).
# * *Tuned curve bends down while the base does not*: the tuned curve's last checkpoint against
#   its best checkpoint of the later half, s.e. of the per-seed contrast (or the given binomial
#   s.e.) plus the lack-of-fit term, simulated critical value; the base must not bend.
# * *Chosen, then tested*: where a learning rate is chosen per checkpoint (chapter 04's tuned LR,
#   chapter 06's LR rule), each seed is scored at the LR chosen on the *other* seeds (cross-fitted).
# * *One row over several γ or learning rates*: every member at α / m (Bonferroni); the row's
#   smallest detectable effect is the smallest member's.
#
# **The smallest detectable effect** of a t-based test is (t quantile at α/2 + t quantile at
# 80 %) × its standard error; of a simulated test, (its critical value + the 80 % normal
# quantile) × the standard error of its contrast. It is in the statistic's units.
#
# **Calibration.** The table and figure below are computed now, by the seeded Monte-Carlo
# routine that `make test` runs (`tests/test_verdicts.py`), at the shapes the `cpu` book uses.
# For every claim row, the false-positive rate is measured under six classes of null data
# (independent noise; a checkpoint shock shared by every seed, of 0.5 and 2 seed s.d.; per-seed
# random slopes; t tails with 3 d.o.f.; an outlier seed) and the worst is shown with its
# one-sided 95 % Clopper–Pearson upper bound; the test requires ≤ 9 % over 200 draws per class.
# Power is measured on an effect of the size named in the last column, with independent noise;
# where one pre-training run cannot reach 80 % at the size the `cpu` book measures, the power is
# stated, not required.
# %% tags=["parameters"]
profile = "cpu"
seed = 0
overrides = {}

# %% tags=["remove-input"]
import pandas as pd
import matplotlib.pyplot as plt
from IPython.display import display

from coft_utils.chapters import calibration
from coft_utils.book import nb
cfg = nb.setup("98_verdicts", profile, seed, overrides)
cal = calibration.table(n=cfg.draws, seed=cfg.seed)
calibration.plot(cal)
plt.tight_layout()
plt.show()
pd.set_option("display.max_colwidth", None)
display(cal.drop(columns=["fpr_by_null"]).style.format(
    {"false_positive_rate": "{:.1%}", "fpr_upper_95": "{:.1%}", "contradicted_on_null": "{:.1%}", "power": "{:.1%}"})
        .hide(axis="index"))
nb.glue("cal_draws", str(cfg.draws))
nb.glue("cal_max_fpr", f"{cal.false_positive_rate.max():.1%}")
nb.glue("cal_min_power", f"{cal.power.min():.1%}")

# %% [markdown]
# Over {glue:text}`cal_draws` draws per case and class of null, the largest false-positive rate
# is {glue:text}`cal_max_fpr` and the smallest power {glue:text}`cal_min_power`.
#
# **What each claim row could have seen.** From the claim records of this machine's runs: the
# design each row used and the smallest effect it would have detected with 80 % power, beside the
# statistic it measured (the paper's effect sizes are on the claims page and in each chapter).

# %% tags=["remove-input"]
from coft_utils.book import claims
display(calibration.mde_table(claims.collect(), {c.id: c.paper for c in claims.CLAIMS.values()})
        .style.hide(axis="index"))

# %% [markdown]
#
# **What is not covered.** The replicates are seeds; the evaluation items (held-out blocks,
# benchmark questions) are the same at every checkpoint, so their sampling noise is shared and
# not part of these intervals, except in chapter 01, whose base curve carries the benchmarks'
# binomial standard errors. A paired bootstrap over items would add it; the records keep only
# aggregate metrics today.
