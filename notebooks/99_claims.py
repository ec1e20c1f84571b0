# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The paper's claims, checked
#
# One row per claim of *Overtrained Language Models Are Harder to Fine-Tune*
# {cite:p}`springer2025overtrained`, with where the paper shows it, the chapter of this book
# that tests it, and -- for every profile that has been run -- what that chapter measured and
# its verdict. Nothing in the table is typed in: each cell is a record that the chapter wrote
# when it ran (`coft_utils.book.claims.record`), with its configuration, package versions, git
# commit and data checksums. Rows that no chapter has tested yet say "not run".
#
# Every verdict is a calibrated test on replicates (seeds), computed by `coft_utils.foundation.verdicts`
# ("How verdicts are decided" gives the tests, their measured false-positive rates and power):
# *observed* (significant in the claimed direction), *contradicted* (significant in the
# opposite direction), *within noise* (the effect does not show at this scale beyond the noise
# of these seeds: a result, and it does not refute the paper, whose models are orders of
# magnitude larger), *inconclusive* (non-finite values from a diverged run, too few
# checkpoints or seeds). Each cell gives the statistic with its 95 % confidence interval and
# the number of replicates, the **series** it was measured on, the **design** (several
# pre-training runs, or one run whose checkpoint-to-checkpoint scatter is used as noise: the
# unit of replication for a claim about pre-training length is the pre-training run), and what
# it **could see**: the smallest effect it would have detected with 80 % power. A row that names
# one model (OLMo-1B) takes no cell from another series: a run on the project's suite shows
# "not measured on olmo-1b" there, and its stand-in row says what it found. The chapter link
# leads to the chapter's verdict.
#
# A column is one run of the book at a profile's preset: `cpu` is the run at seed 0, and a run
# with another global seed (`python -m coft_utils book --profile cpu -p seed 1`) gets its own
# column, `cpu (seed 1)`, so the two can be read side by side. A run with overridden parameters
# (say, one learning rate of 1e9) is listed under the table and never replaces a column.

# %% tags=["parameters"]
profile = "cpu"
seed = 0
overrides = {}

# %% tags=["remove-input"]
from IPython.display import HTML, display

from coft_utils.book import claims, nb
cfg = nb.setup("99_claims", profile, seed, overrides)
recs = claims.collect()
profiles_run = sorted({r["profile"] for r in recs})
nb.glue("claims_n", len(claims.CLAIMS))
nb.glue("claims_tested", len({r["claim"] for r in recs}))
_ = nb.glue("claims_profiles", ", ".join(profiles_run) if profiles_run else "none")

# %% [markdown]
# Of the {glue:text}`claims_n` claims, {glue:text}`claims_tested` have a recorded verdict;
# profiles run: {glue:text}`claims_profiles`.

# %% tags=["remove-input"]
display(HTML(claims.html_table()))

# %% [markdown]
# ## How deep the measured series go
#
# Each cell above gives the depth of the series it was measured on: its deepest checkpoint's
# tokens per parameter, with and without embeddings. The paper's models, for comparison (a
# "within noise" measured well short of these refutes nothing):

# %% tags=["remove-input"]
from coft_utils.foundation import depth

display(depth.frame())

# %% [markdown]
# Every record, runs with overridden parameters included (last column), with its provenance
# (when, from which commit, on which device) in
# `runs/<profile>/claims/*.json`; committed reference results from larger machines, if any, in
# `results/<profile>/claims/`.

# %% tags=["hide-input"]
import pandas as pd

pd.DataFrame([{**{k: r.get(k) for k in ("claim", "tag", "source", "verdict", "n_replicates", "series", "design",
                                       "mde", "chapter", "commit", "time")},
               "tokens/param": claims.depth_text(r.get("depth")),
               "overridden parameters": r["overrides"] or ""}
              for r in recs]) if recs else "no claim has been recorded yet"
