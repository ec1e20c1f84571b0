"""Every shape claim of the book, decided as a calibrated statistical test.

A verdict is computed from *replicates*, never from means: an array ``Y`` of shape
``(replicates, checkpoints)`` (noise seeds, fine-tuning seeds) against the checkpoints'
pre-training tokens, and ``runs``: the pre-training run of each row. The unit of replication of
a claim about pre-training length is the pre-training run (:mod:`~coft_utils.foundation.verdict_design`):
with several runs a statistic is taken per run and the test across runs; with one run (``runs``
None: every hub or user series) each contrast is taken within each seed and the mean curve's
scatter about a smooth fit in log tokens, beyond the seeds, counts as noise. Each test returns
a :class:`Verdict` with its label, statistic, confidence interval, number of replicates, method,
design and smallest detectable effect (``mde``, 80 % power)::

    from coft_utils.foundation import verdicts
    v = verdicts.rises(tokens, Y)                     # does Y grow with tokens?
    v = verdicts.rises(tokens, Y, runs=[0, 0, 1, 1, 2, 2])   # 3 pre-training runs x 2 seeds
    v = verdicts.improves(tokens, ppl, lower_is_better=True, log=True)
    v = verdicts.u_shape(tokens, Y, log=True)         # interior minimum, beyond noise on both sides
    v = verdicts.minimum_shift(tokens, {lr: Y_lr for lr in lrs}, direction="earlier")
    v = verdicts.bends_down(tokens, tuned, base, higher_is_better=True)
    v = verdicts.differs(A, B, log=True)                # curve A above curve B, same checkpoints
    v = verdicts.differs(A, B, paired=True, late_half=True)  # same seeds; later checkpoints only
    v.label, v.statistic, v.ci, v.n_replicates, v.method, v.design, v.mde, v.text()
    verdicts.combine([v1, v2, ...], over="γ")        # one claim row over several γ / LRs

Labels (:data:`LABELS`): *observed* (significant in the claimed direction), *contradicted*
(significant in the opposite direction), *within noise*, *inconclusive* (non-finite values,
too few checkpoints or replicates). NaN and inf are reported, never dropped or counted as a rise.

The tests (α = 0.05 unless given; every one checked for false-positive rate and power by a
seeded Monte-Carlo test in ``tests/test_verdicts.py``, the numbers on the book's "How verdicts
are decided" page):

* :func:`rises` / :func:`improves` -- the OLS slope of the replicate-mean curve on log2(tokens)
  (per doubling of tokens). Its variance: the spread of the per-replicate slopes / R (a seed that
  tilts its curve is one replicate), plus, with one run, the mean curve's scatter about the line
  (Welch-Satterthwaite df); with one replicate the fit's residuals (df = K - 2). Two-sided t
  interval (``scipy.stats.t``).
* :func:`differs` -- two curves at the same checkpoints (A above B): the mean over checkpoints
  of the difference of the replicate means (with ``log``, as % of A over B; ``late_half``: only
  the later half of the checkpoints). By default each replicate is first averaged over the
  checkpoints (a seed may shift its whole curve) and the test is Welch's t on those means
  (``paired``, replicate r of A and B sharing a seed: a t test of the per-replicate differences,
  df = R - 1); ``independent=True`` (replicates independent across checkpoints, as chapter 02's
  noise) uses the per-checkpoint spreads with Welch-Satterthwaite df. With one run per curve the
  scatter of the per-checkpoint differences about a line in log tokens is added (an anneal
  branch per checkpoint is a shock of its own). Two-sided t interval; no spread -> exact.
* :func:`u_shape` -- the minimum of the mean curve must lie inside the range, and both the fall
  to it (from the highest earlier checkpoint) and the rise after it (to the highest later one)
  must exceed the standard error of that per-seed contrast (plus, with one run, the scatter about
  a parabola in log tokens) by a critical value that accounts for choosing the minimum (and the
  comparison points) from the same data: the largest (1 - α) quantile of the same statistic over
  the least favourable no-U curves (flat, a fall into a flat tail; with one run also checkpoint
  shocks, several fall sizes and per-seed slopes), simulated with the re-selection in every draw. The reported interval is the binding
  side's difference ± critical value × its standard error, so *observed* ⇔ the interval
  excludes 0.
* :func:`minimum_shift` -- Kendall's τ between the ordered parameter (γ, learning rate) and
  the position of each curve's minimum; *observed* when ≥ 1 - α/2 of bootstrap draws (whole
  seeds resampled; with one run each curve's scatter redrawn; minima re-selected in every draw)
  give τ of the claimed sign **and** some curve's interior minimum is beyond noise (u_shape at
  α / curves: a minimum at the edge is not located). Ties give τ = 0 and never count as
  "earlier". A curve with non-finite values makes the row inconclusive (never dropped).
* :func:`bends_down` -- the last checkpoint of the tuned curve against its best checkpoint of
  the later half of the series (so an early spike is no bend), per-seed contrasts (or the given
  s.e.; a non-finite one: inconclusive) plus the one-run scatter term, with a critical value for
  choosing that checkpoint (simulated as above), and the same test on the base curve, which must
  *not* bend down.
* :func:`exact`, :func:`u_shape_exact` -- results of deterministic computations (chapter 05's
  gradient flow): a zero-width interval, labels by exact comparison beyond float round-off.
* :func:`all_of` -- a claim made of parts that must all hold (intersection-union).
* :func:`combine` -- one row over several γ or learning rates: every member test is run at
  α / m (Bonferroni), so the row's false-positive rate stays ≤ α.

The two-curve test :func:`differs` lives in :mod:`coft_utils.foundation.verdict_pairs`, the shift
test :func:`minimum_shift` in :mod:`coft_utils.foundation.verdict_shift`, the designs (runs, one
run's scatter, the smallest detectable effect) in :mod:`coft_utils.foundation.verdict_design`. The
shape tests (:func:`u_shape`, :func:`bends_down`) and the exact
verdicts (:func:`exact`, :func:`u_shape_exact`, :func:`all_of`, :func:`kendall`, ``EXACT``) live
in :mod:`coft_utils.foundation.verdict_shapes` and are re-exported here: ``verdicts.u_shape``
etc. work as before. Import them through this module. ``ALPHA``, ``N_BOOT`` and ``N_NULL`` are
defined in :mod:`coft_utils.foundation.verdict_params` (re-exported here).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from . import verdict_design as _D
from .verdict_params import ALPHA, N_BOOT, N_NULL

__all__ = ["LABELS", "Verdict", "rises", "improves", "differs", "u_shape", "minimum_shift", "bends_down",
           "combine", "diverged", "all_of", "exact", "u_shape_exact", "kendall", "EXACT", "ALPHA", "N_BOOT", "N_NULL"]

LABELS = ("observed", "contradicted", "within noise", "inconclusive")
COLORS = {"observed": "#1a7f37", "contradicted": "#cf222e", "within noise": "#6e7781",
          "inconclusive": "#9a6700"}


@dataclass
class Verdict:
    """The outcome of one test; ``statistic`` and ``ci`` are in the units named by ``unit``."""

    claim: str
    label: str
    statistic: float = float("nan")
    ci: tuple = (float("nan"), float("nan"))
    n_replicates: int = 0
    n_checkpoints: int = 0
    method: str = ""
    unit: str = ""
    p_value: float = float("nan")
    alpha: float = ALPHA
    reason: str = ""
    detail: dict = field(default_factory=dict)
    design: str = ""               # what a replicate is (verdict_design): runs, or one run's seeds
    mde: float = float("nan")      # smallest effect detectable with 80 % power, in ``unit``

    def __post_init__(self):
        if self.label not in LABELS:
            raise ValueError(f"unknown label {self.label!r}; allowed: {', '.join(LABELS)}")

    @property
    def observed(self) -> bool:
        return self.label == "observed"

    def stat_text(self) -> str:
        """``+3.1 % per doubling [1.2, 5.0] (95 % CI, 5 replicates)``."""
        if not math.isfinite(self.statistic):
            return self.reason or "no statistic"
        if "exact" in self.method and self.ci[0] == self.ci[1] == self.statistic:
            return f"{_num(self.statistic)} {self.unit} (exact: no noise)"
        if not all(math.isfinite(x) for x in self.ci):
            return f"{_num(self.statistic)} {self.unit} ({self.reason or 'no interval'})"
        lvl = f"{100 * (1 - self.alpha):.3g} % CI"
        if self.ci[0] == self.ci[1]:  # not exact, yet no width: say why instead of a [x, x] interval
            return (f"{_num(self.statistic)} {self.unit} (every resampled draw gave this value: the interval "
                    f"has no width at this resolution; {self.n_replicates} replicate"
                    f"{'s' if self.n_replicates != 1 else ''})").replace("  ", " ")
        return (f"{_num(self.statistic)} {self.unit} [{_num(self.ci[0])}, {_num(self.ci[1])}] "
                f"({lvl}, {self.n_replicates} replicate{'s' if self.n_replicates != 1 else ''})").replace("  ", " ")

    def mde_text(self) -> str:
        """``would have detected ≥ 0.05 nats per doubling`` (80 % power), a rank test's note, or ``""``."""
        if not math.isfinite(self.mde):
            return str(self.detail.get("mde_note", "")) if isinstance(self.detail, dict) else ""
        return f"would have detected ≥ {abs(self.mde):.3g} {self.unit} (80 % power)".replace("  ", " ")

    def text(self) -> str:
        s = f"{self.label}: {self.stat_text()}"
        if self.reason and math.isfinite(self.statistic):
            s += f"; {self.reason}"
        if self.label == "within noise" and self.mde_text():
            s += f"; {self.mde_text()}"
        return s

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ci"] = [float(x) for x in self.ci]
        d["detail"] = _plain(self.detail)
        return _plain(d)


def _num(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    x = x + 0.0  # no "-0"
    a = abs(x)
    return f"{x:+.3g}" if a >= 1e-3 or a == 0 else f"{x:+.2e}"


def _plain(v):
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf: kept readable
    return v


# --------------------------------------------------------------------------- input checks
def _prep(claim: str, tokens, Y, log: bool, min_k: int = 3, min_r: int = 1):
    """Sort by tokens; return (x=log2 tokens, Y as float (R, K)) or an inconclusive Verdict."""
    t = np.asarray(tokens, dtype=float).ravel()
    Y = np.asarray(Y, dtype=float)
    if Y.ndim == 1:
        Y = Y[None, :]
    if Y.ndim != 2 or Y.shape[1] != len(t):
        raise ValueError(f"{claim}: values must be (replicates, checkpoints) with {len(t)} checkpoints; "
                         f"got shape {Y.shape}")
    R, K = Y.shape
    base = dict(claim=claim, n_replicates=R, n_checkpoints=K)
    bad = ~np.isfinite(Y)
    if bad.any() or not np.isfinite(t).all() or (t <= 0).any():
        where = sorted({int(k) for k in np.where(bad.any(axis=0))[0]})
        kinds = sorted({"nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") for v in Y[bad]})
        return None, None, Verdict(label="inconclusive", reason=(
            f"{int(bad.sum())} non-finite value(s) ({', '.join(kinds)}: a diverged run or a missing record?) at checkpoint "
            f"position(s) {where}" if bad.any() else "non-finite or non-positive token counts"),
            detail={"non_finite": int(bad.sum()), "positions": where}, **base)
    if log:
        if (Y <= 0).any():
            return None, None, Verdict(label="inconclusive", reason="log scale needs positive values", **base)
        Y = np.log(Y)
    order = np.argsort(t, kind="stable")
    t, Y = t[order], Y[:, order]
    if K < min_k:
        return None, None, Verdict(label="inconclusive", reason=f"{K} checkpoint(s); at least {min_k} needed", **base)
    if R < min_r:
        return None, None, Verdict(label="inconclusive", reason=f"{R} replicate(s); at least {min_r} needed", **base)
    if len(np.unique(t)) != K:
        return None, None, Verdict(label="inconclusive", reason="repeated token counts", **base)
    return np.log2(t), Y, None


def _label(lo: float, hi: float) -> str:
    return "observed" if lo > 0 else "contradicted" if hi < 0 else "within noise"


# --------------------------------------------------------------------------- trends
def _t_interval(s: float, se: float, df: float, alpha: float, size: float):
    """(statistic, lo, hi, p, exact) of a two-sided t interval; with no spread at all (deterministic
    values) the interval is the point itself and float round-off (relative to ``size``) is zero."""
    from scipy import stats
    if se == 0.0:
        if abs(s) <= 1e-12 * max(1.0, size):
            s = 0.0
        return s, s, s, (0.0 if s != 0 else 1.0), True
    q = float(stats.t.ppf(1 - alpha / 2, df))
    return s, s - q * se, s + q * se, float(2 * stats.t.sf(abs(s) / se, df)), False


def _satterthwaite(terms) -> tuple[float, float]:
    """(sum of variances, Welch-Satterthwaite df) of independent (variance, df) terms."""
    var = float(sum(v for v, _ in terms))
    den = float(sum(v ** 2 / df for v, df in terms if df > 0 and v > 0))
    return var, (var ** 2 / den if den > 0 else float(max((df for _, df in terms), default=1.0)))


def _trend(claim: str, tokens, Y, sign: int, log: bool, alpha: float, unit: str, runs=None) -> Verdict:
    x, Y, bad = _prep(claim, tokens, Y, log)
    if bad is not None:
        return bad
    d = _D.design(Y, runs)
    Y = d.Y
    R, K = Y.shape
    xc = x - x.mean()
    sxx = float((xc ** 2).sum())
    w = xc / sxx
    m = Y.mean(axis=0)
    b = float(w @ m)
    if R >= 2:
        # one slope per replicate (a seed, or a pre-training run): a seed that tilts its whole
        # curve is one replicate, and heteroscedastic checkpoints are handled by the same spread
        terms = [(float((Y @ w).var(ddof=1)) / R, float(R - 1))]
        method = "OLS slope of the replicate mean on log2(tokens); s.e. from the spread of the per-replicate slopes"
        if d.one_run:
            sc, dfc = _D.shock_var(m, x, 1)
            terms.append((float(sc) / sxx, float(dfc)))
            method += (" plus the mean curve's scatter about the line beyond the seeds (checkpoint-level noise)"
                       if dfc > 0 else "")
        var_b, df = _satterthwaite(terms)
        method += ", Welch-Satterthwaite df"
    else:
        resid = m - (m.mean() + b * xc)
        var_b = float((resid ** 2).sum() / (K - 2) / sxx)
        df = float(K - 2)
        method = "OLS slope on log2(tokens); s.e. from the residuals (one replicate: the scatter is the noise), df = K - 2"
    se = math.sqrt(max(var_b, 0.0))
    s, lo, hi, p, exact = _t_interval(sign * b, se, df, alpha, float(np.abs(m).max()))
    method += " (no spread: exact)" if exact else ""
    scale = (lambda z: 100.0 * math.expm1(z)) if log else (lambda z: z)
    stat, ci = scale(s), (scale(lo), scale(hi))
    return Verdict(claim=claim, label=_label(lo, hi), statistic=stat, ci=ci, n_replicates=R,
                   n_checkpoints=K, method=method, unit=unit, p_value=p, alpha=alpha, design=d.text,
                   mde=(float("nan") if exact else scale(_D.mde(se, df, alpha))),
                   detail={"slope": b, "se": se, "df": df, "mean": m.tolist(), "log": log,
                           "monotone": _monotone(m, sign)})


def _monotone(m, sign: int = 1) -> bool:
    """Is the mean curve monotone in the claimed direction (``sign`` +1: never falls)?"""
    return bool(np.all(sign * np.diff(np.asarray(m, float)) >= 0))


def rises(tokens, Y, log: bool = False, alpha: float = ALPHA, unit: str | None = None, runs=None) -> Verdict:
    """Does ``Y`` (replicates × checkpoints) grow with pre-training tokens? ``runs``: the
    pre-training run of each row (see :mod:`~coft_utils.foundation.verdict_design`)."""
    return _trend("rises with tokens", tokens, Y, +1, log, alpha,
                  unit or ("% per doubling of tokens" if log else "per doubling of tokens"), runs)


def improves(tokens, Y, lower_is_better: bool = True, log: bool = False, alpha: float = ALPHA,
             unit: str | None = None, runs=None) -> Verdict:
    """Does ``Y`` get better with tokens (falls if ``lower_is_better``)? The statistic is the
    improvement per doubling (positive = better)."""
    return _trend("improves with tokens", tokens, Y, -1 if lower_is_better else +1, log, alpha,
                  unit or ("% better per doubling of tokens" if log else "better per doubling of tokens"), runs)


# --------------------------------------------------------------------------- one row over several X
def combine(members: Mapping[object, Verdict] | Sequence[Verdict], over: str = "X",
            require: str = "any") -> Verdict:
    """One claim row from member verdicts that were each computed at ``alpha / m``.

    ``require="any"``: observed when at least one member is observed and none contradicted
    (members at α / m: a union of Bonferroni-corrected tests); ``"all"``: observed only when
    every member is (members at α: an intersection-union test), so one inconclusive member (a
    diverged run, too few points) makes the row inconclusive. Members that are inconclusive are
    named; all inconclusive -> inconclusive; observed and contradicted members together ->
    inconclusive ("mixed")."""
    items = list(members.items()) if isinstance(members, Mapping) else list(enumerate(members))
    if not items:
        return Verdict(claim="", label="inconclusive", reason=f"no {over} to test")
    vs = [v for _, v in items]
    claim = vs[0].claim
    lab = {k: v.label for k, v in items}
    usable = [(k, v) for k, v in items if v.label != "inconclusive"]
    n_obs = sum(v.label == "observed" for _, v in usable)
    n_con = sum(v.label == "contradicted" for _, v in usable)
    if not usable or (require == "all" and len(usable) < len(items)):
        label = "inconclusive"
    elif n_obs and n_con:
        label = "inconclusive"
    elif require == "all":
        label = ("observed" if n_obs == len(usable) else "contradicted" if n_con == len(usable)
                 else "within noise")
    else:
        label = "observed" if n_obs else "contradicted" if n_con else "within noise"
    # the member with the strongest evidence for the row's label carries the statistic
    pool = [kv for kv in usable if kv[1].label == label] or usable
    pick_key, pick = (min(pool, key=lambda kv: kv[1].p_value if math.isfinite(kv[1].p_value) else 2.0)
                      if pool else items[0])
    counts = f"observed for {n_obs} of {len(items)} {over}" + (f", contradicted for {n_con}" if n_con else "")
    n_inc = len(items) - len(usable)
    if n_inc:
        counts += f", inconclusive for {n_inc} ({'; '.join(f'{k}: {v.reason}' for k, v in items if v.label == 'inconclusive')})"
    if n_obs and n_con:
        counts += ": mixed"
    # the smallest detectable effect of the member whose statistic the row shows (members differ in
    # scale: γ, learning rates), so the row's statistic and what it could have seen share one unit
    row_mde = pick.mde
    designs = list(dict.fromkeys(v.design for _, v in usable if v.design))
    return Verdict(claim=claim, label=label, statistic=pick.statistic, ci=pick.ci, mde=row_mde,
                   design="; ".join(designs),
                   n_replicates=min(v.n_replicates for v in vs), n_checkpoints=max(v.n_checkpoints for v in vs),
                   method=(f"{pick.method}; each of {len(items)} {over} tested at α/{len(items)} (Bonferroni)"
                           if require == "any" else
                           f"{pick.method}; all {len(items)} {over} must be observed (intersection-union test, "
                           "each at α)"),
                   unit=pick.unit, p_value=pick.p_value, alpha=pick.alpha, reason=counts,
                   detail={"members": {str(k): v.to_dict() for k, v in items}, "labels": {str(k): l for k, l in lab.items()},
                           "n_observed": n_obs, "n_contradicted": n_con, "picked": str(pick_key),
                           **({"mde_note": pick.detail["mde_note"]} if "mde_note" in pick.detail else {})})


def diverged(v: Verdict, note: str) -> Verdict:
    """``v`` made inconclusive because some of its runs diverged (``note`` says which and where);
    with an empty ``note``, ``v`` itself. A diverged run is a result, never a score."""
    if not note:
        return v
    return Verdict(claim=v.claim, label="inconclusive", n_replicates=v.n_replicates,
                   n_checkpoints=v.n_checkpoints, method=v.method, unit=v.unit, alpha=v.alpha, design=v.design,
                   reason=f"diverged: {note}", detail={**v.detail, "diverged": note})


def alpha_for(m: int, alpha: float = ALPHA) -> float:
    """Bonferroni level of each of ``m`` member tests of one row."""
    return alpha / max(1, int(m))


# the shape tests and exact verdicts (see the module docstring): at the end, since they use the
# Verdict and the input checks above (either module can be imported first)
from .verdict_shapes import (EXACT, all_of, bends_down, exact, kendall,  # noqa: E402,F401
                             u_shape, u_shape_exact)
from .verdict_shift import minimum_shift  # noqa: E402,F401
from .verdict_pairs import differs  # noqa: E402,F401
