"""The shape tests of the verdicts (U-shape, bend at the end) and the exact verdicts of
deterministic computations.

Part of :mod:`coft_utils.foundation.verdicts`, which re-exports every public name here and
whose docstring describes each test; use them through it::

    from coft_utils.foundation import verdicts
    v = verdicts.u_shape(tokens, Y, log=True)         # interior minimum, beyond noise on both sides
    v = verdicts.bends_down(tokens, tuned, base, higher_is_better=True)
    v = verdicts.u_shape_exact(times, y)              # a deterministic curve (chapter 05)
    v = verdicts.all_of({"a": va, "b": vb}, main="a", claim="...")

Here: :func:`u_shape` (with its simulated null, :func:`_u_null`; ``minimum_shift`` is in
:mod:`coft_utils.foundation.verdict_shift`),
:func:`bends_down`, :func:`exact`, :func:`u_shape_exact`, :func:`all_of`, :func:`kendall` and
``EXACT``. The :class:`~coft_utils.foundation.verdicts.Verdict`, the labels, the input checks,
the trend tests and ``combine`` stay in ``verdicts``; ``ALPHA``/``N_BOOT``/``N_NULL`` are in
:mod:`coft_utils.foundation.verdict_params`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Mapping

import numpy as np

from .verdict_params import ALPHA, N_BOOT, N_NULL

__all__ = ["u_shape", "bends_down", "all_of", "exact", "u_shape_exact", "kendall", "EXACT"]


# --------------------------------------------------------------------------- U-shape
def _welch_var(Y):
    R = Y.shape[-2]
    return Y.var(axis=-2, ddof=1) / R


# shock sizes (s.d. of a checkpoint-level deviation shared by every seed, in units of one seed's
# s.d.) and fall sizes (in units of the s.e. of a mean) of the least favourable null curves: the
# critical value is the largest quantile over them (the nuisance is not known, so the worst case)
SHOCKS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
FALLS = (2.0, 4.0, 8.0)
N_GRID = N_NULL // 4  # draws per null curve of the one-run grid (many curves: the max is taken over them)


def _contrast_se(Y, ref, shock2, eps: float):
    """s.e. of mean(Y_j) - mean(Y_ref) for every j: the spread over replicates of the per-replicate
    difference (a seed that shifts or tilts its curve is one replicate), plus 2 x the checkpoint-level
    variance ``shock2`` (one run) -- vectorized over leading axes; ``ref`` (...,) indexes K."""
    R = Y.shape[-2]
    Yr = np.take_along_axis(Y, np.broadcast_to(ref[..., None, None], Y.shape[:-1] + (1,)), -1)
    vd = (Y - Yr).var(axis=-2, ddof=1) / R
    return np.sqrt(vd + 2.0 * shock2[..., None] + eps)


def _shock2(Y, resid, v=None):
    """Checkpoint-level variance of one run's mean curve (its lack of fit about a parabola, beyond
    the seeds' variance of the mean ``v``, by default from ``Y``), or 0 (``resid`` None: no term)."""
    if resid is None:
        return np.zeros(Y.shape[:-2])
    return _D.scatter(Y.mean(axis=-2), resid, _welch_var(Y) if v is None else v)[0]


def _u_stat(Y, resid=None, eps: float = 1e-12):
    """Vectorized over leading axes: Y (..., R, K) -> (T, fall_t, rise_t, k_min, j_fall, j_rise, m, se)."""
    m = Y.mean(axis=-2)
    K = m.shape[-1]
    k = np.argmin(m, axis=-1)
    mk = np.take_along_axis(m, k[..., None], -1)
    se = _contrast_se(Y, k, _shock2(Y, resid), eps)
    tt = (m - mk) / se
    idx = np.arange(K)
    before = idx < k[..., None]
    after = idx > k[..., None]
    tf = np.where(before, tt, -np.inf)
    tr = np.where(after, tt, -np.inf)
    jf, jr = tf.argmax(-1), tr.argmax(-1)
    fall_t, rise_t = tf.max(-1), tr.max(-1)
    interior = (k > 0) & (k < K - 1)
    T = np.where(interior, np.minimum(fall_t, rise_t), 0.0)
    return T, fall_t, rise_t, k, jf, jr, m, se


def _resid(x, one_run: bool):
    """The parabola's residual maker in the positions ``x`` (one run), or None (no scatter term)."""
    return _D.fit_resid(tuple(np.asarray(x, float).tolist()), 2) if one_run else None


def _null_draws(rng, R, K, mu, shock, n: int = N_NULL, slope: float = 0.0):
    """Unit noise per seed and checkpoint, a shared checkpoint shock (s.d. ``shock``) and per-seed
    random slopes over the checkpoints (s.d. ``slope`` per s.d. of the positions)."""
    z = np.arange(K) - (K - 1) / 2
    z = z / (z.std() or 1.0)
    return (rng.standard_normal((n, R, K)) + mu + shock * rng.standard_normal((n, 1, K))
            + slope * rng.standard_normal((n, R, 1)) * z)


@functools.lru_cache(maxsize=256)
def _u_null(R: int, K: int, x: tuple | None = None, seed: int = 12345) -> np.ndarray:
    """Null draws of the U statistic under the least favourable no-U curves: flat, and a fall
    into a flat tail of 2..K-1 checkpoints (the mirror image is the same in law). ``x`` given (one
    pre-training run): the statistic carries the lack-of-fit term, and the null curves also carry
    checkpoint-level shocks of every size in ``SHOCKS`` and falls of every size in ``FALLS``."""
    rng = np.random.default_rng(seed)
    resid = _resid(x, True) if x is not None else None
    out = []
    shocks = SHOCKS if x is not None else (0.0,)
    falls = FALLS if x is not None else (1e6,)
    n = N_GRID if x is not None else N_NULL
    for shock in shocks:
        for tail in range(2, K + 1):
            for fall in (falls if tail < K else (0.0,)):
                mu = np.where(np.arange(K) < K - tail, fall / math.sqrt(R), 0.0)
                out.append(np.sort(_u_stat(_null_draws(rng, R, K, mu, shock, n), resid)[0]))
        for slope in (1.0, 2.0):  # per-seed random slopes on the flat curve
            out.append(np.sort(_u_stat(_null_draws(rng, R, K, 0.0, shock, n, slope), resid)[0]))
    return np.stack(out)


def _crit(null: np.ndarray, alpha: float) -> float:
    """The largest (1 - α) quantile over the null curves (each row sorted; linear interpolation)."""
    n = null.shape[1]
    h = (n - 1) * (1 - alpha)
    lo = int(math.floor(h))
    hi = min(lo + 1, n - 1)
    return float(np.max(null[:, lo] + (h - lo) * (null[:, hi] - null[:, lo])))


def _p_from_null(null: np.ndarray, t: float) -> float:
    n = null.shape[1]
    ge = n - np.array([np.searchsorted(row, t, side="left") for row in null])
    return float(np.max((ge + 1) / (n + 1)))


def _xkey(x, one_run: bool):
    return tuple(np.round(np.asarray(x, float), 9).tolist()) if one_run else None


def u_shape(tokens, Y, log: bool = True, alpha: float = ALPHA, lower_is_better: bool = True,
            runs=None) -> Verdict:
    """Is the mean curve U-shaped (an interior minimum with a fall before and a rise after it,
    both beyond noise)? ``lower_is_better=False`` tests an interior maximum instead.
    *contradicted* = an interior *maximum* (an inverted U) beyond noise. ``runs``: the
    pre-training run of each row (hierarchical design when there are several)."""
    claim = "U-shaped (interior minimum)"
    x, Yp, bad = _prep(claim, tokens, Y, log, min_k=3, min_r=2)
    if bad is not None:
        return bad
    d = _D.design(Yp, runs)
    Yp = d.Y
    if not lower_is_better:
        Yp = -Yp
    R, K = Yp.shape  # >= 2 rows: _prep asks 2 seeds, and a hierarchical design has >= 2 runs
    one_run = d.one_run and K >= 4
    resid = _resid(x, one_run)
    null = _u_null(R, K, _xkey(x, one_run))
    c = _crit(null, alpha)
    T, ft, rt, k, jf, jr, m, se = (np.asarray(a) for a in _u_stat(Yp, resid))
    T, k = float(T), int(k)
    Tn = float(_u_stat(-Yp, resid)[0])  # inverted U
    t_sorted = np.sort(np.asarray(tokens, float))
    interior = 0 < k < K - 1
    if interior:
        binding = "fall" if float(ft) <= float(rt) else "rise"
        j = int(jf) if binding == "fall" else int(jr)
        dd, s = float(m[j] - m[k]), float(se[j])
    else:
        binding, j, dd, s = "none", -1, 0.0, float("nan")
    if T > c:
        label = "observed"
    elif Tn > c:
        label = "contradicted"
    else:
        label = "within noise"
    scale = (lambda z: 100.0 * math.expm1(z)) if log else (lambda z: z)
    if interior:
        stat, ci = scale(dd), (scale(dd - c * s), scale(dd + c * s))
    else:
        stat, ci = 0.0, (float("nan"), float("nan"))
    where = "first" if k == 0 else "last" if k == K - 1 else "interior"
    reason = "" if interior else f"the minimum is at the {where} checkpoint: no interior minimum"
    # the smallest fall/rise it would see: the s.e. of a contrast (the median over checkpoints)
    se_typ = float(np.median(np.delete(se, k))) if K > 1 else float("nan")
    return Verdict(claim=claim, label=label, statistic=stat, ci=ci, n_replicates=R, n_checkpoints=K,
                   method=(f"min(fall, rise) around the minimum of the replicate mean; s.e. of each contrast from the "
                           "per-replicate differences" + (" plus the mean curve's scatter about a parabola in "
                                                          "log tokens beyond the seeds" if one_run else "")
                           + f"; critical value {c:.2f} simulated with the minimum re-selected in each of {N_NULL} "
                           "null draws (least favourable no-U curves" + (", checkpoint shocks up to 4 seed s.d."
                                                                           if one_run else "") + ")"),
                   unit="% (smaller of fall and rise)" if log else "(smaller of fall and rise)",
                   p_value=_p_from_null(null, T) if interior else 1.0, alpha=alpha, reason=reason,
                   design=d.text + ("" if one_run or not d.one_run else " (too few checkpoints for the scatter term)"),
                   mde=scale(_D.mde(se_typ, float(R - 1), alpha, critical=c)),
                   detail={"argmin": k, "argmin_tokens": float(t_sorted[k]), "interior": interior,
                           "t_fall": float(ft), "t_rise": float(rt), "critical": c, "binding": binding,
                           "t_inverted": Tn, "mean": m.tolist()})


# --------------------------------------------------------------------------- bend at the end
def _bend_stat(Y, se_given=None, resid=None, eps: float = 1e-12):
    """Y (..., R, K), higher is better: (best of the later half before the last - last) / s.e.
    (a spike early in the curve is not a bend at the end), vectorized. The s.e. of the contrast
    comes from the per-replicate differences (or the given s.e.), plus the lack-of-fit term."""
    m = Y.mean(axis=-2)
    K = m.shape[-1]
    lo = min(K // 2, K - 2)  # the comparison points: the later half before the last checkpoint
    prev = m[..., lo:-1]
    j = prev.argmax(-1)
    mj = np.take_along_axis(prev, j[..., None], -1)[..., 0]
    j = j + lo
    if se_given is None:
        last = np.full(m.shape[:-1], K - 1)
        se_all = _contrast_se(Y, last, _shock2(Y, resid), eps)
        s = np.take_along_axis(se_all, j[..., None], -1)[..., 0]
    else:
        v = np.broadcast_to(np.asarray(se_given, float) ** 2, m.shape)
        sh = _shock2(Y, resid, v)
        vj = np.take_along_axis(v, j[..., None], -1)[..., 0]
        s = np.sqrt(vj + v[..., -1] + 2.0 * sh + eps)
    return (mj - m[..., -1]) / s, j, mj - m[..., -1], s


@functools.lru_cache(maxsize=256)
def _bend_null(R: int, K: int, x: tuple | None = None, seed: int = 54321) -> np.ndarray:
    """Null draws of the bend statistic on flat curves (with checkpoint shocks of every size in
    ``SHOCKS`` and the lack-of-fit term when ``x`` is given: one pre-training run), and per-seed
    random slopes of 0, 1 and 2 seed s.d. (a seed fixes its data order at every checkpoint)."""
    rng = np.random.default_rng(seed)
    resid = _resid(x, True) if x is not None else None
    out = []
    for shock in (SHOCKS if x is not None else (0.0,)):
        for slope in ((0.0, 1.0, 2.0) if R >= 2 else (0.0,)):
            Y = _null_draws(rng, max(R, 1), K, 0.0, shock, N_GRID if x is not None else N_NULL, slope)
            out.append(np.sort(_bend_stat(Y, None if R >= 2 else np.ones(K), resid)[0]))
    return np.stack(out)


def _bad_se(se, name):
    if se is not None and not np.all(np.isfinite(np.asarray(se, float))):
        return f"{name} standard error not finite (a missing column or record?)"
    return ""


def bends_down(tokens, tuned, base=None, higher_is_better: bool = True, log: bool = False,
               alpha: float = ALPHA, tuned_se=None, base_se=None, runs=None, base_runs=None) -> Verdict:
    """Does the tuned curve end below its best earlier checkpoint (beyond noise) while the base
    curve does not? ``tuned``/``base``: replicates × checkpoints; a single replicate needs its
    per-checkpoint standard error (``*_se``, e.g. the binomial s.e. over evaluation items); a
    non-finite standard error makes the verdict inconclusive."""
    claim = "tuned curve bends down while the base does not"
    x, T, bad = _prep(claim, tokens, tuned, log, min_k=3)
    if bad is not None:
        return bad
    d = _D.design(T, runs)
    T = d.Y
    R, K = T.shape
    if R < 2 and tuned_se is None:
        return Verdict(claim=claim, label="inconclusive", n_replicates=R, n_checkpoints=K, design=d.text,
                       reason="one tuned replicate and no standard error")
    sgn = 1.0 if higher_is_better else -1.0
    order = np.argsort(np.asarray(tokens, float))
    tse = None if tuned_se is None or R >= 2 else np.asarray(tuned_se, float)[order]
    if _bad_se(tse, "tuned"):
        return Verdict(claim=claim, label="inconclusive", n_replicates=R, n_checkpoints=K, design=d.text,
                       reason=_bad_se(tse, "tuned"))
    one_run = d.one_run and K >= 4
    resid = _resid(x, one_run)
    xk = _xkey(x, one_run)
    null = _bend_null(R if tse is None else 1, K, xk)
    c = _crit(null, alpha)
    t, j, dd, s = (np.asarray(a) for a in _bend_stat(sgn * T, tse, resid))
    t, j, dd, s = float(t), int(j), float(dd), float(s)
    # the opposite: the last checkpoint beyond the best earlier one
    t_up = -t
    base_t, base_info = float("nan"), {}
    if base is not None:
        _, B, badb = _prep(claim, tokens, base, log, min_k=3)
        if badb is not None:
            return dataclasses.replace(badb, reason="base curve: " + badb.reason)
        db = _D.design(B, base_runs)
        B = db.Y
        bse = None if base_se is None or B.shape[0] >= 2 else np.asarray(base_se, float)[order]
        if B.shape[0] < 2 and bse is None:
            return Verdict(claim=claim, label="inconclusive", n_replicates=R, n_checkpoints=K,
                           reason="one base replicate and no standard error")
        if _bad_se(bse, "base"):
            return Verdict(claim=claim, label="inconclusive", n_replicates=R, n_checkpoints=K, design=d.text,
                           reason=_bad_se(bse, "base"))
        b_one = db.one_run and K >= 4
        cb = _crit(_bend_null(B.shape[0] if bse is None else 1, K, _xkey(x, b_one)), alpha)
        base_t = float(_bend_stat(sgn * B, bse, _resid(x, b_one))[0])
        base_info = {"t_base": base_t, "critical_base": cb, "base_bends": base_t > cb}
    if t > c and not base_info.get("base_bends", False):
        label, reason = "observed", ""
    elif t > c:
        label, reason = "within noise", "the base curve bends down too"
    elif t_up > c:
        label, reason = "contradicted", "the tuned curve is best at the last checkpoint, beyond noise"
    else:
        label, reason = "within noise", ""
    scale = (lambda z: 100.0 * math.expm1(z)) if log else (lambda z: z)
    return Verdict(claim=claim, label=label, statistic=scale(dd), ci=(scale(dd - c * s), scale(dd + c * s)),
                   n_replicates=R, n_checkpoints=K, design=d.text,
                   mde=scale(_D.mde(s, float(max(R - 1, 1)), alpha, critical=c)),
                   method=(f"best of the later half of the checkpoints minus the last one, tuned replicate mean, "
                           f"{'s.e. of the per-replicate differences' if tse is None else 'given s.e.'}"
                           + (" plus the scatter about a parabola in log tokens beyond the seeds" if one_run else "")
                           + f"; critical value {c:.2f} simulated with the best earlier checkpoint re-selected in "
                           f"each of {N_NULL} null draws" + (" (checkpoint shocks up to 4 seed s.d.)" if one_run else "")
                           + "; the same test on the base curve must not fire"),
                   unit="% drop at the last checkpoint" if log else "drop at the last checkpoint",
                   p_value=_p_from_null(null, t), alpha=alpha, reason=reason,
                   detail={"t": t, "critical": c, "best_earlier": j, **base_info})


# --------------------------------------------------------------------------- exact (no noise)
EXACT = "exact (deterministic simulation, no noise)"


def kendall(x, y) -> float:
    """Kendall's tau-b of two sequences (0 when either has no order at all)."""
    from scipy import stats
    if len(x) < 2:
        return 0.0
    t = stats.kendalltau(x, y).statistic
    return float(t) if np.isfinite(t) else 0.0


def exact(claim: str, label: str, statistic: float, unit: str, reason: str = "",
                  detail: dict | None = None, n_checkpoints: int = 0) -> Verdict:
    """A verdict of a deterministic computation: the statistic is exact (zero-width interval)."""
    return Verdict(claim=claim, label=label, statistic=float(statistic),
                      ci=(float(statistic), float(statistic)), n_replicates=1,
                      n_checkpoints=n_checkpoints, method=EXACT, unit=unit,
                      p_value=0.0 if label in ("observed", "contradicted") else 1.0,
                      reason=reason, detail=detail or {})


def u_shape_exact(times, y, rtol: float = 1e-9) -> Verdict:
    """U-shape of a deterministic curve: observed = an interior minimum that the curve falls to
    and rises from (by more than ``rtol`` relative, i.e. beyond float round-off); contradicted =
    an interior maximum (inverted U); otherwise 'within noise' (the minimum is at an end).
    The statistic is the smaller of the fall and the rise, in % (as in :func:`u_shape`)."""
    claim = "U-shaped (interior minimum)"
    y = np.asarray(y, float)
    K = len(y)
    if K < 3 or not np.all(np.isfinite(y)) or np.any(y <= 0):
        return Verdict(claim=claim, label="inconclusive", n_replicates=1, n_checkpoints=K, method=EXACT,
                          reason="non-finite or non-positive values, or fewer than 3 checkpoints")
    k = int(np.argmin(y))
    fall, rise = (y[:k].max() / y[k] - 1) if k > 0 else 0.0, (y[k + 1:].max() / y[k] - 1) if k < K - 1 else 0.0
    kx = int(np.argmax(y))
    inverted = 0 < kx < K - 1 and min(1 - y[:kx].min() / y[kx], 1 - y[kx + 1:].min() / y[kx]) > rtol
    if 0 < k < K - 1 and min(fall, rise) > rtol:
        label, reason = "observed", ""
    elif inverted:
        label, reason = "contradicted", f"an interior maximum (checkpoint {kx}): an inverted U"
    else:
        where = "first" if k == 0 else "last" if k == K - 1 else "interior, but flat on one side"
        label, reason = "within noise", f"the minimum is at the {where} checkpoint: no interior minimum"
    return exact(claim, label, 100.0 * min(fall, rise), "% (smaller of fall and rise)", reason,
                         {"argmin": k, "fall_pct": 100.0 * fall, "rise_pct": 100.0 * rise}, K)


def all_of(parts: dict, main: str, claim: str) -> Verdict:
    """One claim that needs every part (an intersection-union test: each part at its own level):
    observed only when every part is; contradicted when any part is; inconclusive when any part
    is (and none contradicted); else within noise. Statistic and CI of the part ``main``."""
    labels = {k: v.label for k, v in parts.items()}
    vals = list(labels.values())
    label = ("contradicted" if "contradicted" in vals else "inconclusive" if "inconclusive" in vals
             else "observed" if all(x == "observed" for x in vals) else "within noise")
    m = parts[main]
    reason = "; ".join(f"{k}: {v.label}" + (f" ({v.reason})" if v.reason else "") for k, v in parts.items())
    method = " | ".join(f"{k}: {v.method}" for k, v in parts.items())
    return Verdict(claim=claim, label=label, statistic=m.statistic, ci=m.ci,
                      n_replicates=min(v.n_replicates for v in parts.values()),
                      n_checkpoints=max(v.n_checkpoints for v in parts.values()), method=method,
                      unit=m.unit, p_value=max((v.p_value for v in parts.values() if np.isfinite(v.p_value)),
                                               default=float("nan")),
                      alpha=m.alpha, reason=reason,
                      detail={"parts": {k: v.to_dict() for k, v in parts.items()}, "labels": labels})


# at the end, so that either of verdicts and verdict_shapes can be imported first (verdicts
# re-exports the names above at its own end): only the functions above use these, at call time
from . import verdict_design as _D  # noqa: E402
from .verdicts import Verdict, _prep  # noqa: E402
