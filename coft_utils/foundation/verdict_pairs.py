"""The two-curve test of the verdicts: is curve A above curve B at the same checkpoints?

Part of :mod:`coft_utils.foundation.verdicts`, which re-exports :func:`differs` and whose
docstring describes the test; use it through it::

    from coft_utils.foundation import verdicts
    v = verdicts.differs(A, B, paired=True)                 # same seeds; each seed averaged first
    v = verdicts.differs(A, B, paired=True, independent=True)   # replicates independent per checkpoint
"""
from __future__ import annotations

import math

import numpy as np

from .verdict_params import ALPHA

__all__ = ["differs"]


def _as_curves(name: str, Y) -> np.ndarray:
    Y = np.asarray(Y, dtype=float)
    Y = Y[None, :] if Y.ndim == 1 else Y
    if Y.ndim != 2:
        raise ValueError(f"differs: {name} must be (replicates, checkpoints); got shape {Y.shape}")
    return Y


def _differs_problem(A, B, idx, log: bool):
    """Why ``differs`` cannot decide on these (already selected) checkpoints, or ``""``."""
    K, RA, RB = A.shape[1], A.shape[0], B.shape[0]
    bad = {n: ~np.isfinite(Y) for n, Y in (("A", A), ("B", B))}
    pos = {n: [int(idx[k]) for k in np.where(b.any(axis=0))[0]] for n, b in bad.items()}
    n_bad = int(sum(b.sum() for b in bad.values()))
    info = {"non_finite": n_bad, "positions": sorted(set(pos["A"]) | set(pos["B"])), "where": pos}
    if K < 1:
        return f"{K} checkpoint(s); at least 1 needed", info
    if n_bad:
        vals = np.concatenate([A[bad["A"]], B[bad["B"]]])
        kinds = sorted({"nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") for v in vals})
        return (f"{n_bad} non-finite value(s) ({', '.join(kinds)}: a diverged run or a missing record?) at "
                "checkpoint position(s) " + "; ".join(f"{n}: {p}" for n, p in pos.items() if p)), info
    if log and ((A <= 0).any() or (B <= 0).any()):
        return "log scale needs positive values", info
    if min(RA, RB) < 2:
        return f"{RA} and {RB} replicate(s) in A and B; at least 2 in each needed", info
    return "", info


def differs(A, B, claim: str = "A above B", log: bool = False, paired: bool = False,
            alpha: float = ALPHA, unit: str | None = None, tokens=None, late_half: bool = False,
            independent: bool = False, runs=None, runs_b=None) -> Verdict:
    """Is curve ``A`` above curve ``B`` at the same checkpoints (both replicates × checkpoints)?

    The statistic is the mean over checkpoints of mean_r(A_k) - mean_r(B_k) (with ``log``, of the
    natural logs, reported as 100 * expm1: % of A over B). With ``independent=True``, unpaired:
    Welch s.e. sqrt(sum_k s²_Ak/R_A + s²_Bk/R_B) / K; ``paired`` (replicate r of A and of B share
    a seed): s.e. of the per-replicate differences sqrt(sum_k var_r(D_k)/R) / K;
    Welch-Satterthwaite df either way, two-sided t interval. ``late_half``: only checkpoints k >= K // 2 (in ``tokens``
    order when given; ``tokens`` is otherwise bookkeeping). Only the checkpoints used are checked.

    ``independent=False`` (the default, always valid): a replicate may carry its deviation across
    checkpoints (a fine-tuning seed fixes the data order at every checkpoint), so each replicate is
    first averaged over the checkpoints and the test is a Welch t test between those means
    (paired: a t test of the per-replicate mean differences, df = R - 1). ``independent=True`` only
    where the design makes replicates independent across checkpoints (chapter 02's noise, drawn
    from the checkpoint's label): the per-checkpoint Welch s.e. above, more degrees of freedom."""
    A, B = _as_curves("A", A), _as_curves("B", B)
    dA, dB = _D.design(A, runs), _D.design(B, runs if runs_b is None else runs_b)
    A, B = dA.Y, dB.Y
    one_run = dA.one_run and dB.one_run
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"differs: A and B need the same checkpoints; got shapes {A.shape} and {B.shape}")
    if paired and A.shape[0] != B.shape[0]:
        raise ValueError(f"differs: paired needs equal replicates in A and B; got shapes {A.shape} and {B.shape}")
    K = A.shape[1]
    order, t = np.arange(K), None
    if tokens is not None:
        t = np.asarray(tokens, dtype=float).ravel()
        if len(t) != K:
            raise ValueError(f"differs: {len(t)} token counts for {K} checkpoints")
        order = np.argsort(t, kind="stable")
    idx = order[K // 2:] if late_half else order
    A, B = A[:, idx], B[:, idx]
    (RA, K), RB = A.shape, B.shape[0]
    base = dict(claim=claim, n_replicates=min(RA, RB), n_checkpoints=K, alpha=alpha)
    why, info = _differs_problem(A, B, idx, log)
    if why:
        return Verdict(label="inconclusive", reason=why, detail=info, **base)
    if log:
        A, B = np.log(A), np.log(B)
    mA, mB = A.mean(axis=0), B.mean(axis=0)
    diff = mA - mB
    s = float(diff.mean())
    if not independent:  # replicates as clusters: one mean over the checkpoints per replicate
        A, B = A.mean(axis=1, keepdims=True), B.mean(axis=1, keepdims=True)
    if paired:
        terms, dfs = (A - B).var(axis=0, ddof=1) / RA, np.full(A.shape[1], RA - 1.0)
        method = "paired: mean over checkpoints of the per-replicate difference A - B"
    else:
        terms = np.concatenate([A.var(axis=0, ddof=1) / RA, B.var(axis=0, ddof=1) / RB])
        dfs = np.concatenate([np.full(A.shape[1], RA - 1.0), np.full(A.shape[1], RB - 1.0)])
        method = "unpaired Welch: mean over checkpoints of mean(A) - mean(B)"
    method += (" (natural logs)" if log else "") + (", later half of the checkpoints" if late_half else "")
    var = float(terms.sum())
    se = math.sqrt(var) / A.shape[1]
    den = float((terms ** 2 / dfs).sum())
    df = var ** 2 / den if den > 0 else float(min(RA, RB) - 1)
    if one_run and K >= 3:
        # one pre-training run per curve: the per-checkpoint differences' scatter about a line in
        # log tokens, beyond the seeds, is checkpoint-level noise (an anneal branch, a checkpoint's luck)
        xk = np.log2(t[idx]) if t is not None else np.arange(K, dtype=float)
        sc, dfc = _D.shock_var(diff, xk, 1)
        if dfc > 0 and sc > 0:
            v2 = float(sc) / K
            se = math.sqrt(se ** 2 + v2)
            df = (se ** 2) ** 2 / ((se ** 2 - v2) ** 2 / df + v2 ** 2 / dfc)
            method_extra = "; plus the scatter of the per-checkpoint differences about a line in log tokens"
        else:
            method_extra = ""
    else:
        method_extra = ""
    method += ("; s.e. from the per-checkpoint spread over replicates (independent across checkpoints), "
               "Welch-Satterthwaite df" if independent else
               "; each replicate averaged over the checkpoints first (a seed may shift its whole curve), "
               + ("t test of the per-replicate differences, df = R - 1" if paired else "Welch t test of those means"))
    method += method_extra
    s, lo, hi, p, exact = _t_interval(s, se, df, alpha, float(np.abs(np.concatenate([mA, mB])).max()))
    method += " (no spread: exact)" if exact else ""
    scale = (lambda z: 100.0 * math.expm1(z)) if log else (lambda z: z)
    over = "mean over the later checkpoints" if late_half else "mean over checkpoints"
    return Verdict(label=_label(lo, hi), statistic=scale(s), ci=(scale(lo), scale(hi)), method=method,
                   design=dA.text if one_run else f"A: {dA.text}; B: {dB.text}",
                   mde=float("nan") if exact else scale(_D.mde(se, df, alpha)),
                   unit=unit or (f"% (A vs B), {over}" if log else f"(A - B), {over}"), p_value=p,
                   detail={"differences": diff.tolist(), "se": se, "df": df, "mean_A": mA.tolist(),
                           "mean_B": mB.tolist(), "paired": paired, "log": log, "checkpoints": idx.tolist(),
                           "tokens": None if t is None else t[idx].tolist(), "independent": independent},
                   **base)


# at the end, so that either module can be imported first (verdicts re-exports differs at its end)
from . import verdict_design as _D  # noqa: E402
from .verdicts import Verdict, _label, _t_interval  # noqa: E402
