"""The design of a verdict: what a replicate is, and what counts as noise.

The claims are about pre-training length, so the unit of replication is the **pre-training
run**. Fine-tuning and noise seeds nest inside a run; a deviation of one checkpoint that every
seed of a run shares (the checkpoint's own luck in data order, an anneal branch of its own) is
noise for a claim about tokens, not signal. Every test in :mod:`coft_utils.foundation.verdicts`
takes ``runs`` (the pre-training run of each replicate row) and picks one of two designs::

    from coft_utils.foundation import verdict_design as D
    d = D.design(Y, runs=[0, 0, 1, 1, 2, 2])   # 3 runs x 2 seeds -> hierarchical
    d.Y          # the rows the test uses: one mean curve per pre-training run (3 x K)
    d.one_run    # False
    d.text       # "3 pre-training runs (2 seeds each): a statistic per run, the test across runs"
    D.design(Y)  # runs=None: one pre-training run (every series with one run: hub, user, cpu)
    D.design(Y, runs="deterministic")  # chapter 05: gradient flow has no run-to-run variance

* **hierarchical** (two or more runs): the seeds of a run are averaged, and the test is taken
  across the runs (their per-checkpoint shocks are inside the between-run spread).
* **one run**: the seeds are the replicates of every contrast (a contrast is taken within each
  seed, so a seed that shifts or tilts its whole curve is one replicate, not K), and the
  checkpoint-to-checkpoint scatter of the mean curve around a smooth fit in log tokens (a line
  for trends, a parabola for shapes), beyond what the seeds explain, is added as noise:
  :func:`shock_var`. The verdict says "one pre-training run: checkpoint-to-checkpoint scatter
  used as noise".

:func:`mde` turns a standard error into the smallest effect the test would detect with 80 %
power (two-sided, at the test's level), so "within noise" says what it could have seen.
:func:`crossfit_choice` picks a learning rate per seed on the *other* seeds, so that no seed is
chosen and tested on its own run.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Design", "design", "fit_resid", "scatter", "shock_var", "crossfit_choice", "mde", "ONE_RUN",
           "DETERMINISTIC", "POWER"]

ONE_RUN = "one pre-training run: checkpoint-to-checkpoint scatter used as noise"
DETERMINISTIC = "deterministic"  # runs= for a trajectory without run-to-run variance (chapter 05's gradient flow)
POWER = 0.80


@dataclass
class Design:
    Y: np.ndarray        # rows the test uses (seeds of one run, or one mean curve per run)
    one_run: bool
    n_runs: int
    n_seeds: int         # seeds per run (the smallest)
    text: str


def design(Y, runs=None) -> Design:
    """``Y`` (replicates x checkpoints), ``runs`` (one label per row, or None = one run)."""
    Y = np.asarray(Y, dtype=float)
    Y = Y[None, :] if Y.ndim == 1 else Y
    R = Y.shape[0]
    if runs is None:
        return Design(Y, True, 1, R, f"{ONE_RUN} ({R} seed{'s' if R != 1 else ''} of the unit)")
    if isinstance(runs, str):
        if runs != DETERMINISTIC:
            raise ValueError(f"runs: {runs!r}; allowed: one label per replicate row, None, or {DETERMINISTIC!r}")
        return Design(Y, False, 1, R, f"a deterministic pre-training trajectory (no run-to-run variance): the "
                                      f"{R} replicates are independent noise draws")
    runs = np.asarray(runs).ravel()
    if len(runs) != R:
        raise ValueError(f"runs: {len(runs)} labels for {R} replicate rows; one pre-training run label per row")
    labels = list(dict.fromkeys(runs.tolist()))
    if len(labels) == 1:
        return Design(Y, True, 1, R, f"{ONE_RUN} ({R} seed{'s' if R != 1 else ''} of the unit)")
    rows = [Y[runs == r].mean(axis=0) for r in labels]
    n = min(int((runs == r).sum()) for r in labels)
    return Design(np.stack(rows), False, len(labels), n,
                  f"{len(labels)} pre-training runs ({n}+ seed{'s' if n != 1 else ''} each): a statistic per run, "
                  "the test across runs")


@functools.lru_cache(maxsize=256)
def fit_resid(x: tuple, degree: int):
    """(residual maker ``M`` (K x K), residual df) of a least-squares polynomial of ``degree`` in
    the positions ``x`` (a tuple: cached, since every verdict on one series uses the same)."""
    x = np.asarray(x, float)
    K = len(x)
    deg = min(degree, K - 1)
    X = np.vander((x - x.mean()) / (x.std() or 1.0), deg + 1)
    return np.eye(K) - X @ np.linalg.pinv(X), K - deg - 1


def scatter(m, resid, v=None):
    """The checkpoint-level variance of the mean curve(s) ``m`` (..., K): its lack of fit about the
    fit whose residual maker is ``resid`` (:func:`fit_resid`), less the mean within-seed variance
    of the mean ``v`` (..., K) when given (without ``v``: the whole lack of fit, which also holds
    the seeds' share -- conservative, used where a seed term with few df is added beside it),
    floored at 0; float round-off of a deterministic curve counts as 0 (exact verdicts stay exact).
    Returns (variance, df)."""
    M, df = resid
    m = np.asarray(m, float)
    if df <= 0:
        return np.zeros(m.shape[:-1]), 0
    out = ((m @ M.T) ** 2).sum(-1) / df - (np.asarray(v, float).mean(-1) if v is not None else 0.0)
    tiny = (1e-10 * np.maximum(1.0, np.abs(m).max(-1))) ** 2
    return np.where(out > tiny, out, 0.0), df


def shock_var(m, x, degree: int, v=None):
    """:func:`scatter` of ``m`` about a polynomial of ``degree`` in the positions ``x``."""
    return scatter(m, fit_resid(tuple(np.asarray(x, float).tolist()), degree), v)


def crossfit_choice(val, lower_is_better: bool = True, skipna: bool = False, groups=None):
    """Never choose and test on the same runs: ``val`` [option, replicate, checkpoint] (a
    validation metric per learning rate, seed, checkpoint) -> for every (replicate, checkpoint)
    the option chosen on the mean over the *other* replicates, and whether any option had a
    finite mean there (``skipna``: a missing value of another replicate is left out of its mean;
    else it removes that option). ``groups`` (one label per replicate, e.g. its pre-training run):
    the replicates of the scored one's group are left out too (its run chooses nothing for it).
    Returns (index [replicate, checkpoint], ok [replicate, checkpoint])."""
    import warnings
    val = np.asarray(val, float) * (1.0 if lower_is_better else -1.0)
    R = val.shape[1]
    idx = np.zeros(val.shape[1:], int)
    ok = np.zeros(val.shape[1:], bool)
    g = None if groups is None else list(groups)
    if g is not None and len(g) != R:
        raise ValueError(f"groups: {len(g)} labels for {R} replicates")
    for i in range(R):
        rest = [j for j in range(R) if j != i and (g is None or g[j] != g[i])] or [i]
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = (np.nanmean if skipna else np.mean)(val[:, rest], axis=1)  # [option, checkpoint]
        fin = np.isfinite(mean)
        idx[i] = np.where(fin, mean, np.inf).argmin(axis=0)
        ok[i] = fin.any(axis=0)
    return idx, ok


def mde(se: float, df: float, alpha: float, critical: float | None = None, power: float = POWER) -> float:
    """Smallest true effect (in the statistic's units before any % scaling) that the test detects
    with ``power``: (critical value + the power quantile) x s.e.; ``critical`` defaults to the
    two-sided t quantile at ``alpha``."""
    from scipy import stats
    if not (math.isfinite(se) and se > 0):
        return float("nan")
    if critical is None:
        critical = float(stats.t.ppf(1 - alpha / 2, df)) if df and math.isfinite(df) else float(stats.norm.ppf(1 - alpha / 2))
    q = float(stats.t.ppf(power, df)) if df and math.isfinite(df) else float(stats.norm.ppf(power))
    return (critical + q) * se
