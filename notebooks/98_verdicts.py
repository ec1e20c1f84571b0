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
# Every verdict of this book is a statistical statement computed from replicates (noise seeds,
# fine-tuning seeds), never a comparison of two numbers. One module, `coft_utils.foundation.verdicts`,
# decides every shape claim; each test returns its label, its statistic with a confidence
# interval, the number of replicates and the method, and the claims page shows all four.
#
# **Labels.** *observed*: significant in the claimed direction. *contradicted*: significant in
# the opposite direction. *within noise*: neither; this is a result ("the effect does not show
# at this scale, beyond the noise of this many seeds"), not a failure. *inconclusive*: the test
# could not be run honestly: non-finite values (a diverged run is named, never dropped or
# counted as a rise), too few checkpoints (fewer than 3), or too few replicates (a U-shape
# needs at least 2 seeds).
#
# **The tests** (α = 0.05).
#
# * *Rises / improves with tokens*: the OLS slope of the replicate-mean curve on log2(tokens),
#   per doubling of tokens. Its standard error comes from the per-checkpoint spread over
#   replicates (robust to a spread that changes along the series; Welch–Satterthwaite degrees of
#   freedom); with one replicate (chapter 00: one model per budget) from the fit's residuals.
#   Two-sided t interval; *observed* when the interval lies above 0.
# * *U-shaped (interior minimum)*: the minimum of the mean curve must lie inside the token
#   range, and both the fall to it (from the highest earlier checkpoint) and the rise after it
#   (to the highest later one) must exceed their Welch standard errors by a critical value.
#   Choosing the minimum and the comparison points from the same data makes noise look like a
#   U, so the critical value is the 95 % quantile of the same statistic, minimum re-selected in
#   every draw, under the least favourable curves without a U: flat, and a steep fall into a
#   flat tail. The interval shown is the binding side's difference ± that critical value times
#   its standard error, so *observed* ⇔ it excludes 0.
# * *Minimum earlier (later) for larger γ or learning rate*: Kendall's τ between the parameter
#   and the position of each curve's minimum; *observed* when at least 97.5 % of bootstrap
#   draws (seeds resampled within each checkpoint, every minimum re-selected) agree in sign, so
#   that the 95 % percentile interval of τ lies above 0. Tied minima give τ = 0 and never count
#   as "earlier".
# * *Curve A above curve B at the same checkpoints* (chapter 06: one schedule or strength
#   against another at equal tokens): the mean over checkpoints of the difference of the
#   replicate means, with a two-sided t interval. A fine-tuning seed fixes the data order at every
#   checkpoint, so a seed may shift its whole curve: each seed is first averaged over the
#   checkpoints and the test is Welch's t on those means (paired, where A and B share the seeds:
#   a t test of the per-seed differences, df = R − 1). Chapter 02's noise is drawn per checkpoint
#   label, so there the per-checkpoint spreads are used (paired by the shared noise draw).
# * *Tuned curve bends down while the base does not*: the tuned curve's last checkpoint against
#   its best checkpoint of the later half of the series, with a simulated critical value for
#   that choice; the same test on the base curve must not fire.
# * *One row over several γ or learning rates*: every member is tested at α / m (Bonferroni),
#   so the row's false-positive rate stays at most α; the row says for how many members the
#   effect is observed.
#
# **Calibration.** The table and figure below are computed now, by the seeded Monte-Carlo
# routine that `make test` runs (`tests/test_verdicts.py`, which requires a false-positive
# rate ≤ 5 % — at most 8 % over 400 draws, binomial slack — and power ≥ 80 %), at the shapes the
# `cpu` book uses (replicates × checkpoints × members). Null data: constant values ×
# (1 + N(0, 1 %)) or the least favourable no-effect curve; effects: of the size the `cpu` book
# measures, as the last column says.

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
display(cal.style.format({"false_positive_rate": "{:.1%}", "contradicted_on_null": "{:.1%}", "power": "{:.1%}"})
        .hide(axis="index"))
nb.glue("cal_draws", str(cfg.draws))
nb.glue("cal_max_fpr", f"{cal.false_positive_rate.max():.1%}")
nb.glue("cal_min_power", f"{cal.power.min():.1%}")

# %% [markdown]
# Over {glue:text}`cal_draws` draws per case, the largest false-positive rate is
# {glue:text}`cal_max_fpr` and the smallest power {glue:text}`cal_min_power`.
#
# **What is not covered.** The replicates are seeds; the evaluation items (held-out blocks,
# benchmark questions) are the same at every checkpoint, so their sampling noise is shared and
# not part of these intervals, except in chapter 01, whose base curve carries the benchmarks'
# binomial standard errors. A paired bootstrap over items would add it; the records keep only
# aggregate metrics today.
