"""Closed forms of the linear-network theory (chapter ``05_linear_theory``): the theory curves.

The mode strength a(t) and the learning times (lambdified from the sympy results of
:mod:`coft_utils.chapters.theory_derive`), the exact expected loss after a Gaussian perturbation,
the predicted inflection points, and the linearised ("lazy") prediction of fine-tuning::

    from coft_utils.chapters import theory, theory_closed
    prob = theory.make_problem(cfg)
    a = theory_closed.strength(prob.s, prob.a0, t_grid)          # (T, r) closed-form strengths
    theory_closed.learning_time(prob.s, prob.a0)                 # a_i = s_i / 2
    theory_closed.perturbed_loss_modes(prob.s, a, 0.2, prob.dims)  # expected perturbed loss
    theory_closed.perturb_inflection_time(prob.s, prob.a0, 0.2, prob.dims, t_grid)
    theory_closed.lazy_finetune_losses(prob, a, lr, steps, lam)  # (L_A, L_B), linearised

``prob`` is a :class:`coft_utils.chapters.theory.Problem`; conventions are those of
:mod:`coft_utils.chapters.theory`, which runs all of it in :func:`~coft_utils.chapters.theory.run_all`.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from .theory_derive import derive_mode_dynamics

if TYPE_CHECKING:  # the experiment module imports this one: no import at run time
    from .theory import Problem

__all__ = ["strength", "learning_time", "expected_perturbed_loss", "perturbed_loss_modes",
           "perturb_inflection_time", "perturb_inflection_rule", "lazy_finetune_losses",
           "ft_harmful_modes", "nearest_checkpoint"]


@functools.lru_cache(maxsize=None)
def _strength_fn():
    import sympy as sp
    d = derive_mode_dynamics()
    sy = d["symbols"]
    return sp.lambdify((sy["s"], sy["a0"], sy["t"]), d["stable_expr"], "numpy")


@functools.lru_cache(maxsize=None)
def _t_reach_fn():
    import sympy as sp
    d = derive_mode_dynamics()
    sy = d["symbols"]
    return sp.lambdify((sy["s"], sy["a0"], sy["delta"]), d["t_reach"], "numpy")


def strength(s, a0, t):
    """Closed-form mode strength a(t) (lambdified from the dsolve solution); broadcasts."""
    s, t = np.asarray(s, float), np.asarray(t, float)
    return _strength_fn()(s[None, :] if s.ndim == 1 and t.ndim == 1 else s, a0,
                          t[:, None] if s.ndim == 1 and t.ndim == 1 else t)


def learning_time(s, a0):
    """Time at which a mode reaches half its singular value (from sympy's solve)."""
    import sympy as sp
    d = derive_mode_dynamics()
    sy = d["symbols"]
    f = sp.lambdify((sy["s"], sy["a0"]), d["t_half"], "numpy")
    return f(np.asarray(s, float), a0)


def expected_perturbed_loss(W1, W2, A, gamma) -> float:
    """E 1/2||(W2 + g E2)(W1 + g E1) - A||^2 (the general form derived in derive_perturbation)."""
    h, d_in = W1.shape
    d_out = W2.shape[0]
    return float(0.5 * np.sum((W2 @ W1 - A) ** 2)
                 + gamma ** 2 / 2 * (d_out * np.sum(W1 ** 2) + d_in * np.sum(W2 ** 2))
                 + gamma ** 4 / 2 * d_in * h * d_out)


def perturbed_loss_modes(s, a, gamma, dims) -> np.ndarray:
    """The same expectation for balanced aligned weights with strengths ``a`` (..., r)."""
    d_in, h, d_out = dims
    delta = gamma ** 2 * (d_in + d_out) / 2
    a = np.asarray(a, float)
    return (0.5 * np.sum((s - a) ** 2, axis=-1) + delta * np.sum(a, axis=-1)
            + gamma ** 4 / 2 * d_in * h * d_out)


def perturb_inflection_time(s, a0, gamma, dims, t_grid) -> float:
    """Exact theory: the time minimising the expected perturbed loss of the closed-form a(t)
    (the root of sum_i a_i'(t)(a_i - s_i + delta) = 0), found on ``t_grid`` and refined."""
    from scipy.optimize import minimize_scalar
    t_grid = np.asarray(t_grid, float)
    curve = perturbed_loss_modes(s, strength(s, a0, t_grid), gamma, dims)
    k = int(np.argmin(curve))
    if k == 0 or k == len(t_grid) - 1:
        return float(t_grid[k])
    lo, hi = np.log(t_grid[k - 1]), np.log(t_grid[k + 1])
    f = lambda lt: float(perturbed_loss_modes(s, strength(s, a0, np.exp(lt)), gamma, dims))  # noqa
    return float(np.exp(minimize_scalar(f, bounds=(lo, hi), method="bounded").x))


def perturb_inflection_rule(s, a0, gamma, dims) -> tuple[int | None, float]:
    """Separated-modes rule: the inflection is the dip of the last mode with s_j > 2 delta =
    (d_in + d_out) gamma^2, at t* = ln((s/a0 - 1)(s - delta)/delta)/(2s).
    Returns (j* (1-based, None if no mode is worth learning), t*)."""
    d_in, _, d_out = dims
    delta = gamma ** 2 * (d_in + d_out) / 2
    s = np.asarray(s, float)
    if s[0] <= delta:
        return None, 0.0
    above = np.nonzero(s > 2 * delta)[0]
    j = int(above[-1]) if len(above) else 0
    return j + 1, float(_t_reach_fn()(s[j], a0, delta))


def _rates(prob: Problem, a):
    """k_ij = a_i (output side) + a_j (input side), zero-padded, for a (..., r)."""
    d_in, _, d_out = prob.dims
    a = np.asarray(a, float)
    ao = np.zeros(a.shape[:-1] + (d_out,))
    ai = np.zeros(a.shape[:-1] + (d_in,))
    ao[..., :prob.r] = a
    ai[..., :prob.r] = a
    return ao[..., :, None] + ai[..., None, :]


def _gain(k, lr, steps, lam):
    """Fraction of the way an entry with rate k moves toward its target: k/(k+lam)(1-(1-lr(k+lam))^K)."""
    return k / (k + lam) * (1 - (1 - lr * (k + lam)) ** steps) if lam > 0 else \
        1 - (1 - lr * k) ** steps


def lazy_finetune_losses(prob: Problem, a, lr, steps, lam=0.0):
    """Linearised (first order in the weight change) prediction of (L_A, L_B) after fine-tuning
    from balanced aligned weights with strengths ``a`` (..., r): in A's singular bases entry
    (i, j) of the function moves toward B by the fraction _gain(a_i + a_j)."""
    a = np.asarray(a, float)
    d_in, _, d_out = prob.dims
    Pm = np.zeros(a.shape[:-1] + (d_out, d_in))
    Sm = np.zeros((d_out, d_in))
    idx = np.arange(prob.r)
    Pm[..., idx, idx] = a
    Sm[idx, idx] = prob.s
    Bm = prob.B_modes
    x = (Bm - Pm) * _gain(_rates(prob, a), lr, steps, lam)
    Q = Pm + x
    return (0.5 * np.sum((Q - Sm) ** 2, axis=(-2, -1)), 0.5 * np.sum((Q - Bm) ** 2, axis=(-2, -1)))


def ft_harmful_modes(prob: Problem, lr, steps, lam=0.0) -> np.ndarray:
    """Separated-modes rule for fine-tuning: learning mode i (while the modes after it are still
    unlearned) raises the fine-tuned pre-training loss when
    rho_i^2 g(s_i)^2 + (B_ii - s_i)^2 g(2 s_i)^2 > s_i^2, with rho_i^2 the misalignment mass of
    B between mode i and the unlearned directions, g = _gain. Returns a boolean per mode."""
    Bm = prob.B_modes
    s = prob.s
    out = np.zeros(prob.r, bool)
    for i in range(prob.r):
        rho2 = np.sum(Bm[i, i + 1:] ** 2) + np.sum(Bm[i + 1:, i] ** 2)
        harm = rho2 * _gain(s[i], lr, steps, lam) ** 2 + (Bm[i, i] - s[i]) ** 2 * _gain(2 * s[i], lr, steps, lam) ** 2
        out[i] = harm > s[i] ** 2
    return out


def nearest_checkpoint(times, t) -> int:
    """Index of the checkpoint closest to time t in log-time."""
    times = np.asarray(times, float)
    return int(np.argmin(np.abs(np.log(times) - np.log(max(t, 1e-300)))))
