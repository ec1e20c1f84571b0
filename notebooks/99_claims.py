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
# when it ran (`coft_utils.claims.record`), with its configuration, package versions, git
# commit and data checksums. Rows that no chapter has tested yet say "not run".
#
# Verdicts: *observed* (the run shows the claimed behaviour), *partly observed*, *not
# observed* (the run does not show it at that scale; this does not refute the paper, whose
# models are orders of magnitude larger), *contradicted* (the run shows the opposite), and
# *inconclusive* (differences within noise).

# %% tags=["parameters"]
profile = "cpu"
seed = 0
overrides = {}

# %%
from coft_utils import claims, nb

cfg = nb.setup("99_claims", profile, seed, overrides)
recs = claims.collect()
profiles_run = sorted({r["profile"] for r in recs})
nb.glue("claims_n", len(claims.CLAIMS))
nb.glue("claims_tested", len({r["claim"] for r in recs}))
_ = nb.glue("claims_profiles", ", ".join(profiles_run) if profiles_run else "none")

# %% [markdown]
# Of the {glue:text}`claims_n` claims, {glue:text}`claims_tested` have a recorded verdict;
# profiles run: {glue:text}`claims_profiles`.

# %%
import pandas as pd

pd.set_option("display.max_colwidth", None)
claims.table().style.hide(axis="index")

# %% [markdown]
# Each record's provenance (when, from which commit, on which device) is in
# `runs/<profile>/claims/*.json`; committed reference results from larger machines, if any, in
# `results/<profile>/claims/`.

# %%
pd.DataFrame([{k: r[k] for k in ("claim", "profile", "source", "verdict", "chapter", "commit", "time")}
              for r in recs]) if recs else "no claim has been recorded yet"
