"""The shape tests of the verdicts (U-shape, shift of the minimum, bend at the end) and the
exact verdicts of deterministic computations.

Part of :mod:`coft_utils.foundation.verdicts`, which re-exports every public name here and
whose docstring describes each test; use them through it::

    from coft_utils.foundation import verdicts
    v = verdicts.u_shape(tokens, Y, log=True)         # interior minimum, beyond noise on both sides
    v = verdicts.minimum_shift(tokens, {lr: Y_lr for lr in lrs}, direction="earlier")
    v = verdicts.bends_down(tokens, tuned, base, higher_is_better=True)
    v = verdicts.u_shape_exact(times, y)              # a deterministic curve (chapter 05)
    v = verdicts.all_of({"a": va, "b": vb}, main="a", claim="...")

Here: :func:`u_shape` (with its simulated null, :func:`_u_null`), :func:`minimum_shift`,
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

__all__ = ["u_shape", "minimum_shift", "bends_down", "all_of", "exact", "u_shape_exact", "kendall", "EXACT"]


# --------------------------------------------------------------------------- U-shape
def _welch_var(Y):
    R = Y.shape[-2]
    return Y.var(axis=-2, ddof=1) / R


def _u_stat(Y, eps: float = 1e-12):
    """Vectorized over leading axes: Y (..., R, K) -> (T, side, k_min, j_fall, j_rise, d, se)."""
    m = Y.mean(axis=-2)
    v = _welch_var(Y)
    K = m.shape[-1]
    k = np.argmin(m, axis=-1)
    mk = np.take_along_axis(m, k[..., None], -1)
    vk = np.take_along_axis(v, k[..., None], -1)
    se = np.sqrt(v + vk + eps)
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


@functools.lru_cache(maxsize=256)
def _u_null(R: int, K: int, seed: int = 12345) -> np.ndarray:
    """Null draws of the U statistic under the least favourable no-U curves: flat, and a sharp
    fall into a flat tail of 2..K-1 checkpoints (the mirror image is the same in law)."""
    rng = np.random.default_rng(seed)
    out = []
    for tail in range(2, K + 1):
        mu = np.where(np.arange(K) < K - tail, 1e6, 0.0)
        Y = rng.standard_normal((N_NULL, R, K)) + mu
        out.append(np.sort(_u_stat(Y)[0]))
    return np.stack(out)


def _crit(null: np.ndarray, alpha: float) -> float:
    return float(max(np.quantile(row, 1 - alpha) for row in null))


def _p_from_null(null: np.ndarray, t: float) -> float:
    return float(max((np.sum(row >= t) + 1) / (len(row) + 1) for row in null))


def u_shape(tokens, Y, log: bool = True, alpha: float = ALPHA, lower_is_better: bool = True) -> Verdict:
    """Is the mean curve U-shaped (an interior minimum with a fall before and a rise after it,
    both beyond noise)? ``lower_is_better=False`` tests an interior maximum instead.
    *contradicted* = an interior *maximum* (an inverted U) beyond noise."""
    claim = "U-shaped (interior minimum)"
    x, Yp, bad = _prep(claim, tokens, Y, log, min_k=3, min_r=2)
    if bad is not None:
        return bad
    if not lower_is_better:
        Yp = -Yp
    R, K = Yp.shape
    null = _u_null(R, K)
    c = _crit(null, alpha)
    T, ft, rt, k, jf, jr, m, se = (np.asarray(a) for a in _u_stat(Yp))
    T, k = float(T), int(k)
    Tn = float(_u_stat(-Yp)[0])  # inverted U
    t_sorted = np.sort(np.asarray(tokens, float))
    interior = 0 < k < K - 1
    if interior:
        binding = "fall" if float(ft) <= float(rt) else "rise"
        j = int(jf) if binding == "fall" else int(jr)
        d, s = float(m[j] - m[k]), float(se[j])
    else:
        binding, j, d, s = "none", -1, 0.0, float("nan")
    if T > c:
        label = "observed"
    elif Tn > c:
        label = "contradicted"
    else:
        label = "within noise"
    scale = (lambda z: 100.0 * math.expm1(z)) if log else (lambda z: z)
    if interior:
        stat, ci = scale(d), (scale(d - c * s), scale(d + c * s))
    else:
        stat, ci = 0.0, (float("nan"), float("nan"))
    where = "first" if k == 0 else "last" if k == K - 1 else "interior"
    reason = "" if interior else f"the minimum is at the {where} checkpoint: no interior minimum"
    return Verdict(claim=claim, label=label, statistic=stat, ci=ci, n_replicates=R, n_checkpoints=K,
                   method=(f"min(fall, rise) around the minimum of the replicate mean, Welch s.e.; critical value "
                           f"{c:.2f} simulated with the minimum re-selected in each of {N_NULL} null draws "
                           "(least favourable no-U curves)"),
                   unit="% (smaller of fall and rise)" if log else "(smaller of fall and rise)",
                   p_value=_p_from_null(null, T) if interior else 1.0, alpha=alpha, reason=reason,
                   detail={"argmin": k, "argmin_tokens": float(t_sorted[k]), "interior": interior,
                           "t_fall": float(ft), "t_rise": float(rt), "critical": c, "binding": binding,
                           "t_inverted": Tn, "mean": m.tolist()})


# --------------------------------------------------------------------------- minimum moves with X
def _tau_rows(A) -> np.ndarray:
    """Kendall's τ-b between the column order (untied) and each row of ``A`` (ties in a row
    count as neither concordant nor discordant); a row without any order gives 0."""
    A = np.asarray(A)
    n = A.shape[1]
    s = np.zeros(A.shape[0])
    ties = np.zeros(A.shape[0])
    for i in range(n):
        for j in range(i + 1, n):
            d = np.sign(A[:, j] - A[:, i])
            s += d
            ties += d == 0
    n0 = n * (n - 1) / 2
    den = np.sqrt(n0 * (n0 - ties))
    return np.where(den > 0, s / np.where(den > 0, den, 1.0), 0.0)


def minimum_shift(tokens, curves: Mapping[float, object], direction: str = "earlier", log: bool = True,
                  alpha: float = ALPHA, seed: int = 0, n_boot: int = N_BOOT, what: str = "X") -> Verdict:
    """Does the minimum of each curve come ``earlier`` (or ``later``) in tokens as the key grows?

    ``curves``: {x: Y_x (replicates × checkpoints)}, x ordered (γ, learning rate, ...). Curves
    with non-finite values are left out and named; fewer than two usable x -> inconclusive."""
    if direction not in ("earlier", "later"):
        raise ValueError(f"direction must be 'earlier' or 'later', got {direction!r}")
    claim = f"minimum {direction} for larger {what}"
    keys = sorted(curves)
    if len(set(keys)) != len(keys):
        raise ValueError(f"{claim}: repeated keys")
    use, dropped, Ys, R = [], {}, [], None
    for x in keys:
        _, Yp, bad = _prep(claim, tokens, curves[x], log, min_k=3, min_r=2)
        if bad is not None:
            dropped[x] = bad.reason
            continue
        use.append(x)
        Ys.append(Yp)
    base = dict(claim=claim, n_checkpoints=len(np.ravel(tokens)), alpha=alpha)
    if len(use) < 2:
        return Verdict(label="inconclusive", n_replicates=min((y.shape[0] for y in Ys), default=0),
                       reason=f"{len(use)} usable curve(s) of {len(keys)}; at least 2 needed"
                       + (f" (left out: {dropped})" if dropped else ""), detail={"dropped": dropped}, **base)
    R = min(y.shape[0] for y in Ys)
    sign = -1 if direction == "earlier" else 1
    arg = np.array([int(np.argmin(y.mean(axis=0))) for y in Ys])

    t_obs = sign * float(_tau_rows(arg[None, :])[0])
    rng = np.random.default_rng(seed)
    A = np.empty((n_boot, len(Ys)), dtype=int)
    for i, y in enumerate(Ys):
        r, K = y.shape
        idx = rng.integers(0, r, size=(n_boot, r, K))
        A[:, i] = np.take_along_axis(np.broadcast_to(y, (n_boot, r, K)), idx, 1).mean(axis=1).argmin(-1)
    draws = sign * _tau_rows(A)
    frac_pos, frac_neg = float(np.mean(draws > 0)), float(np.mean(draws < 0))
    # two-sided, like every other test here: observed <=> the (1 - α) percentile interval of τ
    # lies above 0 (draws with τ = 0, i.e. tied minima, do not agree)
    label = ("observed" if t_obs > 0 and frac_pos >= 1 - alpha / 2 else
             "contradicted" if t_obs < 0 and frac_neg >= 1 - alpha / 2 else "within noise")
    lo, hi = (float(np.quantile(draws, alpha / 2)), float(np.quantile(draws, 1 - alpha / 2)))
    t_sorted = np.sort(np.asarray(tokens, float))
    return Verdict(label=label, statistic=t_obs, ci=(lo, hi), n_replicates=R,
                   method=(f"Kendall τ between {what} and the position of each curve's minimum (sign: +1 = "
                           f"{direction}); {n_boot} bootstrap draws resampling replicates within checkpoints, "
                           f"minima re-selected in each; observed when ≥ {1 - alpha / 2:.1%} of draws agree (two-sided)"),
                   unit="τ", p_value=1.0 - frac_pos, reason=(f"left out: {dropped}" if dropped else ""),
                   detail={"keys": use, "argmin": arg.tolist(), "argmin_tokens": [float(t_sorted[a]) for a in arg],
                           "frac_agree": frac_pos, "frac_opposite": frac_neg, "dropped": dropped}, **base)


# --------------------------------------------------------------------------- bend at the end
def _bend_stat(Y, se_given=None, eps: float = 1e-12):
    """Y (..., R, K), higher is better: (best of the later half before the last - last) / s.e.
    (a spike early in the curve is not a bend at the end), vectorized."""
    m = Y.mean(axis=-2)
    v = _welch_var(Y) if se_given is None else np.broadcast_to(np.asarray(se_given, float) ** 2, m.shape)
    K = m.shape[-1]
    lo = min(K // 2, K - 2)  # the comparison points: the later half before the last checkpoint
    prev = m[..., lo:-1]
    j = prev.argmax(-1)
    mj = np.take_along_axis(prev, j[..., None], -1)[..., 0]
    vj = np.take_along_axis(v[..., lo:-1], j[..., None], -1)[..., 0]
    j = j + lo
    s = np.sqrt(vj + v[..., -1] + eps)
    return (mj - m[..., -1]) / s, j, mj - m[..., -1], s


@functools.lru_cache(maxsize=256)
def _bend_null(R: int, K: int, seed: int = 54321) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if R >= 2:
        return np.sort(_bend_stat(rng.standard_normal((N_NULL, R, K)))[0])[None, :]
    return np.sort(_bend_stat(rng.standard_normal((N_NULL, 1, K)), se_given=np.ones(K))[0])[None, :]


def bends_down(tokens, tuned, base=None, higher_is_better: bool = True, log: bool = False,
               alpha: float = ALPHA, tuned_se=None, base_se=None) -> Verdict:
    """Does the tuned curve end below its best earlier checkpoint (beyond noise) while the base
    curve does not? ``tuned``/``base``: replicates × checkpoints; a single replicate needs its
    per-checkpoint standard error (``*_se``, e.g. the binomial s.e. over evaluation items)."""
    claim = "tuned curve bends down while the base does not"
    x, T, bad = _prep(claim, tokens, tuned, log, min_k=3)
    if bad is not None:
        return bad
    R, K = T.shape
    if R < 2 and tuned_se is None:
        return Verdict(claim=claim, label="inconclusive", n_replicates=R, n_checkpoints=K,
                       reason="one tuned replicate and no standard error")
    sgn = 1.0 if higher_is_better else -1.0
    order = np.argsort(np.asarray(tokens, float))
    tse = None if tuned_se is None or R >= 2 else np.asarray(tuned_se, float)[order]
    null = _bend_null(R if tse is None else 1, K)
    c = _crit(null, alpha)
    t, j, d, s = (np.asarray(a) for a in _bend_stat(sgn * T, tse))
    t, j, d, s = float(t), int(j), float(d), float(s)
    # the opposite: the last checkpoint beyond the best earlier one
    t_up = -t
    base_t, base_info = float("nan"), {}
    if base is not None:
        _, B, badb = _prep(claim, tokens, base, log, min_k=3)
        if badb is not None:
            return dataclasses.replace(badb, reason="base curve: " + badb.reason)
        bse = None if base_se is None or B.shape[0] >= 2 else np.asarray(base_se, float)[order]
        if B.shape[0] < 2 and bse is None:
            return Verdict(claim=claim, label="inconclusive", n_replicates=R, n_checkpoints=K,
                           reason="one base replicate and no standard error")
        cb = _crit(_bend_null(B.shape[0] if bse is None else 1, K), alpha)
        base_t = float(_bend_stat(sgn * B, bse)[0])
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
    return Verdict(claim=claim, label=label, statistic=scale(d), ci=(scale(d - c * s), scale(d + c * s)),
                   n_replicates=R, n_checkpoints=K,
                   method=(f"best of the later half of the checkpoints minus the last one, tuned replicate mean, "
                           f"{'Welch s.e. over replicates' if tse is None else 'given s.e.'}; critical value {c:.2f} "
                           f"simulated with the best earlier checkpoint re-selected in each of {N_NULL} null draws; "
                           "the same test on the base curve must not fire"),
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
from .verdicts import Verdict, _prep  # noqa: E402
