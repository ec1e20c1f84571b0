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
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Design", "design", "shock_var", "lack_of_fit", "mde", "ONE_RUN", "DETERMINISTIC", "POWER"]

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


def _poly_resid(x, degree: int):
    """The residual-maker of a polynomial fit in ``x`` (K x K) and its residual df."""
    x = np.asarray(x, float)
    K = len(x)
    deg = min(degree, K - 1)
    X = np.vander((x - x.mean()) / (x.std() or 1.0), deg + 1)
    H = X @ np.linalg.pinv(X)
    return np.eye(K) - H, K - deg - 1


def lack_of_fit(m, x, degree: int):
    """Residual variance of the mean curve(s) ``m`` (..., K) about a polynomial in ``x``; (s2, df)."""
    M, df = _poly_resid(x, degree)
    r = np.asarray(m, float) @ M.T
    if df <= 0:
        return np.zeros(np.shape(m)[:-1]), 0
    return (r ** 2).sum(-1) / df, df


def shock_var(m, v, x, degree: int, subtract: bool = True):
    """The checkpoint-level variance beyond the seeds: lack of fit of the mean curve ``m`` (..., K)
    about a polynomial of ``degree`` in ``x``, less the mean within-seed variance of the mean
    ``v`` (..., K), floored at 0 (``subtract=False``: the whole lack of fit, which also holds the
    seeds' share: conservative, used where the variance is summed with a seed term and the df
    of both are small). Returns (variance, df)."""
    s2, df = lack_of_fit(m, x, degree)
    out = np.asarray(s2 - (np.asarray(v, float).mean(-1) if subtract else 0.0), float)
    # float round-off of a deterministic curve is not scatter (keeps exact verdicts exact)
    tiny = (1e-10 * np.maximum(1.0, np.abs(np.asarray(m, float)).max(-1))) ** 2
    return np.where(out > tiny, out, 0.0), df


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
