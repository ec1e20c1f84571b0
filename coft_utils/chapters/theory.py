"""Linear-network theory of catastrophic overtraining (chapter ``05_linear_theory``): the experiment.

A two-layer linear network f(x) = W2 W1 x trained by gradient descent on whitened inputs
toward a target A = U diag(s) V^T learns A's singular directions one at a time; every newly
learned (smaller) direction buys less pre-training loss but makes the weights larger, hence
more sensitive to noise and to fine-tuning. This module holds the configuration, the problem
and the full-matrix simulation (pre-training by GD, Gaussian perturbations, fine-tuning with and
without the penalty); :func:`run_all` runs it and puts the theory curves next to it. The chapter's
other modules: :mod:`~coft_utils.chapters.theory_derive` (the sympy derivations),
:mod:`~coft_utils.chapters.theory_closed` (the closed forms and theory curves) and
:mod:`~coft_utils.chapters.theory_report` (claim verdicts and figures)::

    from coft_utils.foundation import profiles
    from coft_utils.chapters import theory, theory_derive, theory_report
    cfg = profiles.resolve("05_linear_theory", "smoke")
    res = theory.run_all(cfg)            # simulation (full matrices) + theory curves
    res.perturb_sim_min, res.perturb_pred_ckpt      # simulated vs predicted inflection
    fig = theory_report.fig_ushape(res)  # the U-shapes, predicted inflection marked
    V = theory_report.claim_verdicts(res)  # {claim id: (Verdict, measured text)} for the claims page
    d = theory_derive.derive_mode_dynamics()  # sympy: ODE, dsolve solution, learning time
    d["solution"], d["checks"]           # sympy expressions, substitution checks

Conventions (used everywhere in the chapter):

* loss   L_A(W) = 1/2 ||W2 W1 - A||_F^2  (population loss for E[x x^T] = I, y = A x)
* GD     W <- W - lr * grad L;  "time" t = steps * lr  (gradient flow as lr -> 0)
* mode   a_i = u_i^T W2 W1 v_i, the network's strength on A's i-th singular pair
* noise  W1 + gamma E1, W2 + gamma E2 with iid N(0, 1) entries (not scaled by width)
* B      misaligned target: B = cos(theta) A + sin(theta) ||A||_F N, N a unit-norm Gaussian
         matrix orthogonal to A (so cos-similarity(A, B) = cos(theta), ||B|| = ||A||)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..foundation import profiles
from ..foundation.profiles import param
from .theory_closed import (ft_harmful_modes, lazy_finetune_losses, learning_time, nearest_checkpoint,
                            perturb_inflection_rule, perturb_inflection_time, perturbed_loss_modes,
                            strength)

__all__ = [
    "Config", "PRESETS", "spectrum", "make_problem", "Problem", "checkpoint_times", "pretrain",
    "mode_strengths", "perturbed_loss_draws", "perturbed_loss_mc", "finetune", "run_all", "Results",
]


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config(profiles.ChapterConfig):
    d_in: int = param(32, "input dimension", min=1, max=1024)
    d_hidden: int = param(32, "hidden width", min=1, max=1024)
    d_out: int = param(32, "output dimension", min=1, max=1024)
    spectrum: str = param("power", "shape of A's singular values", choices=("power", "geometric"))
    s_max: float = param(4.0, "largest singular value s_1 of A", min=0.0, min_exclusive=True)
    decay: float = param(1.0, "power: s_i = s_max i^-decay; geometric: s_i = s_max decay^(i-1)",
                         min=0.0, min_exclusive=True)
    init_strength: float = param(1e-4, "initial strength a_0 of every mode (balanced, aligned)",
                                 min=0.0, min_exclusive=True)
    lr: float = param(4e-4, "pre-training GD step (time t = steps * lr)", min=0.0,
                      min_exclusive=True)
    horizon: float = param(1.5, "pre-train until horizon x learning time of the smallest mode",
                           min=1.0)
    n_checkpoints: int = param(30, "log-spaced pre-training checkpoints", min=5, max=1000)
    gammas: tuple[float, ...] = param((0.09, 0.125, 0.18), "Gaussian perturbation scales gamma (at most 1000: "
                                      "beyond, the expected loss ~ gamma^4 d^3 overflows float64)",
                                      min=0.0, max=1000.0)
    n_draws: int = param(64, "Monte Carlo perturbation draws per checkpoint (their arrays: at most "
                         "MAX_ARRAY_GIB in all)", min=1, max=10 ** 9)
    theta: float = param(1.0, "misalignment angle of B to A (radians)", min=0.0, max=math.pi / 2)
    ft_steps: int = param(100, "fine-tuning GD steps (fixed)", min=1, max=1_000_000)
    ft_lrs: tuple[float, ...] = param((0.005, 0.01, 0.02), "fine-tuning learning rates",
                                      min=0.0, min_exclusive=True)
    reg_lr: float = param(0.01, "fine-tuning learning rate of the regularization study",
                          min=0.0, min_exclusive=True)
    reg_lambdas: tuple[float, ...] = param((0.0, 1.0, 3.0, 10.0),
                                           "strengths lambda of the penalty lambda/2 ||W - W_pre||^2",
                                           min=0.0)
    theory_grid: int = param(3000, "points of the fine time grid of the theory curves (its arrays: at "
                             "most MAX_ARRAY_GIB in all)", min=100, max=10 ** 9)

    def check(self):
        r = min(self.d_in, self.d_hidden, self.d_out)
        # memory: the Monte Carlo step holds E1 (n_draws, h, d_in), E2 (n_draws, d_out, h), the two
        # perturbed factors of the same shapes and M, M**2 (n_draws, d_out, d_in) in float64; the
        # linearised fine-tuning theory about six (theory_grid, d_out, d_in) float64 arrays.
        h, gib = self.d_hidden, 2 ** 30
        per_draw = 8 * (2 * h * self.d_in + 2 * self.d_out * h + 2 * self.d_out * self.d_in)
        per_point = 8 * 6 * self.d_out * self.d_in
        for name, per in (("n_draws", per_draw), ("theory_grid", per_point)):
            n = getattr(self, name)
            if n * per > MAX_ARRAY_GIB * gib:
                raise profiles.ProfileError(
                    f"parameter {name!r} = {n} needs about {n * per / gib:.3g} GiB at d_in={self.d_in}, "
                    f"d_hidden={h}, d_out={self.d_out} ({per:,} bytes each); the limit is MAX_ARRAY_GIB = "
                    f"{MAX_ARRAY_GIB} GiB; allowed here: {name} <= {MAX_ARRAY_GIB * gib // per}")
        if self.spectrum == "geometric" and not self.decay < 1.0:
            raise profiles.ProfileError(
                f"parameter 'decay' = {self.decay!r} must be < 1 for a geometric spectrum "
                "(s_i = s_max decay^(i-1) must decrease)")
        s = spectrum(self)
        if len(s) > 1 and not np.all(np.diff(s) < 0):
            raise profiles.ProfileError("the singular values must be strictly decreasing")
        if not self.init_strength < s[-1]:
            raise profiles.ProfileError(
                f"parameter 'init_strength' = {self.init_strength!r} must be below the smallest "
                f"singular value {s[-1]:.3g} (else that mode is never 'learned'); r = {r}")
        if self.lr * self.s_max > 0.05:
            raise profiles.ProfileError(
                f"parameter 'lr' = {self.lr!r} is too large for s_max = {self.s_max}: need "
                "lr * s_max <= 0.05 so that GD tracks gradient flow")
        for lr in tuple(self.ft_lrs) + (self.reg_lr,):
            lam = max(self.reg_lambdas) if lr == self.reg_lr else 0.0
            if lr * (2 * self.s_max + lam) >= 1.0:
                raise profiles.ProfileError(
                    f"fine-tuning lr = {lr!r} is unstable: need lr * (2 s_max + lambda) < 1")
        if not self.gammas:
            raise profiles.ProfileError("parameter 'gammas' needs at least one value")


MAX_ARRAY_GIB = 8  # memory cap of the perturbation draws and the theory grid (Config.check)

PRESETS = {
    "smoke": Config(profile="smoke", d_in=8, d_hidden=8, d_out=8, lr=2e-3, n_checkpoints=14,
                    gammas=(0.2, 0.3), n_draws=24, ft_steps=60, ft_lrs=(0.01, 0.02), reg_lr=0.02,
                    reg_lambdas=(0.0, 3.0), theory_grid=600),
    "cpu": Config(profile="cpu"),
    "gpu": Config(profile="gpu", d_in=64, d_hidden=64, d_out=64, lr=2.5e-4, n_checkpoints=40,
                  gammas=(0.0625, 0.0884, 0.125), n_draws=128,
                  reg_lambdas=(0.0, 0.5, 1.0, 3.0, 10.0), theory_grid=6000),
    "paper": Config(profile="paper", d_in=64, d_hidden=64, d_out=64, lr=1.25e-4,
                    n_checkpoints=60, gammas=(0.0625, 0.0884, 0.125), n_draws=256,
                    reg_lambdas=(0.0, 0.3, 1.0, 3.0, 10.0), theory_grid=10000),
}


# --------------------------------------------------------------------------------------------
# the problem: A, B, aligned balanced initialisation
# --------------------------------------------------------------------------------------------
def spectrum(cfg: Config) -> np.ndarray:
    """Singular values s_1 > s_2 > ... of A (r = min(d_in, d_hidden, d_out) of them)."""
    r = min(cfg.d_in, cfg.d_hidden, cfg.d_out)
    i = np.arange(1, r + 1, dtype=float)
    if cfg.spectrum == "power":
        return cfg.s_max * i ** (-cfg.decay)
    return cfg.s_max * cfg.decay ** (i - 1)


def _orth(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


@dataclass
class Problem:
    s: np.ndarray          # singular values of A (r)
    U: np.ndarray          # d_out x d_out orthogonal, first r columns = A's left vectors
    V: np.ndarray          # d_in x d_in orthogonal
    R: np.ndarray          # d_hidden x d_hidden orthogonal: hidden basis of the init
    A: np.ndarray
    B: np.ndarray
    a0: float
    dims: tuple            # (d_in, d_hidden, d_out)

    @property
    def r(self):
        return len(self.s)

    def init(self, a=None):
        """Balanced weights aligned with A with mode strengths ``a`` (default a_0 for all)."""
        a = np.full(self.r, self.a0) if a is None else np.asarray(a, float)
        d_in, h, d_out = self.dims
        r = self.r
        sq = np.sqrt(a)
        W1 = self.R[:, :r] @ (sq[:, None] * self.V[:, :r].T)          # h x d_in
        W2 = (self.U[:, :r] * sq[None, :]) @ self.R[:, :r].T          # d_out x h
        return W1, W2

    @property
    def B_modes(self):
        """B in A's singular bases: U^T B V (d_out x d_in)."""
        return self.U.T @ self.B @ self.V


def make_problem(cfg: Config) -> Problem:
    rng = np.random.default_rng(cfg.seed)
    s = spectrum(cfg)
    r = len(s)
    U, V, R = _orth(rng, cfg.d_out), _orth(rng, cfg.d_in), _orth(rng, cfg.d_hidden)
    A = (U[:, :r] * s) @ V[:, :r].T
    N = rng.standard_normal(A.shape)
    N -= np.sum(N * A) / np.sum(A * A) * A
    N /= np.linalg.norm(N)
    B = math.cos(cfg.theta) * A + math.sin(cfg.theta) * np.linalg.norm(A) * N
    return Problem(s=s, U=U, V=V, R=R, A=A, B=B, a0=cfg.init_strength,
                   dims=(cfg.d_in, cfg.d_hidden, cfg.d_out))


# --------------------------------------------------------------------------------------------
# simulation (full matrices)
# --------------------------------------------------------------------------------------------
def checkpoint_times(cfg: Config, s=None) -> np.ndarray:
    """Log-spaced checkpoint times from a quarter of the first mode's learning time to
    ``horizon`` x the last mode's learning time, rounded to whole GD steps."""
    s = spectrum(cfg) if s is None else s
    t_lo = 0.25 * float(learning_time(s[0], cfg.init_strength))
    t_hi = cfg.horizon * float(learning_time(s[-1], cfg.init_strength))
    steps = np.unique(np.round(np.geomspace(t_lo, t_hi, cfg.n_checkpoints) / cfg.lr).astype(int))
    return steps * cfg.lr


def mode_strengths(prob: Problem, W1, W2) -> np.ndarray:
    """a_i = u_i^T W2 W1 v_i for i = 1..r."""
    P = W2 @ W1
    return np.einsum("ir,ij,jr->r", prob.U[:, :prob.r], P, prob.V[:, :prob.r])


def pretrain(prob: Problem, lr: float, ckpt_times, n_record: int = 200) -> dict:
    """Full-matrix GD on 1/2||W2W1 - A||^2 from the aligned balanced init.

    Returns checkpoints (times, W1s, W2s), a dense record of mode strengths and losses, and the
    max relative error of the closed form along the record.
    """
    ckpt_steps = np.round(np.asarray(ckpt_times) / lr).astype(int)
    n_steps = int(ckpt_steps.max())
    rec_steps = np.unique(np.round(np.geomspace(max(1, ckpt_steps.min() // 4), n_steps,
                                                n_record)).astype(int))
    want = {int(k): ("c", i) for i, k in enumerate(ckpt_steps)}
    rec_set = set(int(k) for k in rec_steps)
    W1, W2 = prob.init()
    A = prob.A
    W1s, W2s, rec_t, rec_a, rec_loss = [None] * len(ckpt_steps), [None] * len(ckpt_steps), [], [], []
    for k in range(1, n_steps + 1):
        R = W2 @ W1 - A
        g1 = W2.T @ R
        W2 = W2 - lr * (R @ W1.T)
        W1 = W1 - lr * g1
        if k in want:
            W1s[want[k][1]], W2s[want[k][1]] = W1.copy(), W2.copy()
        if k in rec_set:
            rec_t.append(k * lr)
            rec_a.append(mode_strengths(prob, W1, W2))
            rec_loss.append(0.5 * np.sum((W2 @ W1 - A) ** 2))
    rec_t, rec_a = np.array(rec_t), np.array(rec_a)
    theo = strength(prob.s, prob.a0, rec_t)
    rel = np.max(np.abs(rec_a - theo) / theo)
    return dict(times=ckpt_steps * lr, W1s=W1s, W2s=W2s, rec_t=rec_t, rec_a=rec_a,
                rec_loss=np.array(rec_loss), max_rel_err=float(rel))


def perturbed_loss_draws(prob: Problem, W1, W2, gamma, E1, E2) -> np.ndarray:
    """The perturbed pre-training loss of every draw E1 (n,h,d_in), E2 (n,d_out,h): shape (n,)."""
    M = (W2[None] + gamma * E2) @ (W1[None] + gamma * E1) - prob.A[None]
    return 0.5 * np.sum(M ** 2, axis=(1, 2))


def perturbed_loss_mc(prob: Problem, W1, W2, gamma, E1, E2) -> float:
    """Monte Carlo mean of the perturbed pre-training loss over the draws E1 (n,h,d_in), E2."""
    return float(np.mean(perturbed_loss_draws(prob, W1, W2, gamma, E1, E2)))


def _theory_grid(cfg: Config, times):
    return np.geomspace(times[0], times[-1], cfg.theory_grid)


def finetune(prob: Problem, W1, W2, lr, steps, lam=0.0):
    """GD on 1/2||W2W1 - B||^2 + lam/2 (||W1 - W1_pre||^2 + ||W2 - W2_pre||^2), full matrices.

    ``W1``/``W2`` may carry a leading batch axis (several checkpoints at once)."""
    B = prob.B
    P1, P2 = W1, W2
    for _ in range(steps):
        R = W2 @ W1 - B
        g1 = np.swapaxes(W2, -1, -2) @ R + lam * (W1 - P1)
        g2 = R @ np.swapaxes(W1, -1, -2) + lam * (W2 - P2)
        W1, W2 = W1 - lr * g1, W2 - lr * g2
    return W1, W2


def _losses(prob, W1, W2):
    P = W2 @ W1
    return (0.5 * np.sum((P - prob.A) ** 2, axis=(-2, -1)),
            0.5 * np.sum((P - prob.B) ** 2, axis=(-2, -1)))


# --------------------------------------------------------------------------------------------
# the whole chapter
# --------------------------------------------------------------------------------------------
@dataclass
class Results:
    cfg: Config
    prob: Problem
    times: np.ndarray                       # checkpoint times
    pre: dict                               # pretrain() output
    t_grid: np.ndarray                      # fine time grid of the theory curves
    a_grid: np.ndarray                      # closed-form strengths on t_grid (T, r)
    learn_times: np.ndarray                 # per-mode learning times (a = s/2)
    loss_ckpt: np.ndarray                   # pre-training loss at checkpoints
    perturb_mc: dict = field(default_factory=dict)     # gamma -> MC perturbed loss (ckpts)
    perturb_draws: dict = field(default_factory=dict)  # gamma -> per-draw loss (n_draws, ckpts)
    perturb_theory: dict = field(default_factory=dict)  # gamma -> expected loss on t_grid
    perturb_sim_min: dict = field(default_factory=dict)   # gamma -> argmin checkpoint (MC)
    perturb_pred_t: dict = field(default_factory=dict)    # gamma -> exact theory t*
    perturb_pred_ckpt: dict = field(default_factory=dict)
    perturb_rule: dict = field(default_factory=dict)      # gamma -> (j*, t*)
    ft_sim: dict = field(default_factory=dict)      # lr -> (L_A, L_B) at ckpts
    ft_theory: dict = field(default_factory=dict)   # lr -> (L_A, L_B) on t_grid (linearised)
    ft_sim_min: dict = field(default_factory=dict)
    ft_pred_t: dict = field(default_factory=dict)
    ft_pred_ckpt: dict = field(default_factory=dict)
    reg_sim: dict = field(default_factory=dict)     # lam -> (L_A, L_B) at ckpts
    reg_theory: dict = field(default_factory=dict)
    reg_sim_min: dict = field(default_factory=dict)
    reg_pred_t: dict = field(default_factory=dict)
    reg_pred_ckpt: dict = field(default_factory=dict)
    reg_harmful: dict = field(default_factory=dict)  # lam -> harmful-mode flags (rule)

    @property
    def delta(self):
        d_in, _, d_out = self.prob.dims
        return {g: g ** 2 * (d_in + d_out) / 2 for g in self.cfg.gammas}


def run_all(cfg: Config, *, finetuning: bool = True) -> Results:
    """Pre-train (full matrices), then perturb, fine-tune and regularised-fine-tune every
    checkpoint; compute every theory curve and the predicted / simulated inflection points."""
    prob = make_problem(cfg)
    times = checkpoint_times(cfg, prob.s)
    pre = pretrain(prob, cfg.lr, times)
    times = pre["times"]
    t_grid = _theory_grid(cfg, times)
    a_grid = strength(prob.s, prob.a0, t_grid)
    W1s, W2s = np.stack(pre["W1s"]), np.stack(pre["W2s"])
    res = Results(cfg=cfg, prob=prob, times=times, pre=pre, t_grid=t_grid, a_grid=a_grid,
                  learn_times=np.asarray(learning_time(prob.s, prob.a0)),
                  loss_ckpt=_losses(prob, W1s, W2s)[0])
    # (a) Gaussian perturbation: common draws for every checkpoint and gamma
    rng = np.random.default_rng(cfg.seed + 1)
    d_in, h, d_out = prob.dims
    E1 = rng.standard_normal((cfg.n_draws, h, d_in))
    E2 = rng.standard_normal((cfg.n_draws, d_out, h))
    for g in cfg.gammas:
        draws = np.stack([perturbed_loss_draws(prob, W1, W2, g, E1, E2) for W1, W2 in zip(W1s, W2s)], axis=1)
        mc = draws.mean(axis=0)
        res.perturb_draws[g] = draws
        res.perturb_mc[g] = mc
        res.perturb_theory[g] = perturbed_loss_modes(prob.s, a_grid, g, prob.dims)
        res.perturb_sim_min[g] = int(np.argmin(mc))
        t_star = perturb_inflection_time(prob.s, prob.a0, g, prob.dims, t_grid)
        res.perturb_pred_t[g] = t_star
        res.perturb_pred_ckpt[g] = nearest_checkpoint(times, t_star)
        res.perturb_rule[g] = perturb_inflection_rule(prob.s, prob.a0, g, prob.dims)
    if not finetuning:
        return res
    # (b) fine-tuning at fixed learning rates, (c) regularised fine-tuning
    for lr in cfg.ft_lrs:
        f1, f2 = finetune(prob, W1s, W2s, lr, cfg.ft_steps)
        res.ft_sim[lr] = _losses(prob, f1, f2)
        res.ft_theory[lr] = lazy_finetune_losses(prob, a_grid, lr, cfg.ft_steps)
        res.ft_sim_min[lr] = int(np.argmin(res.ft_sim[lr][0]))
        res.ft_pred_t[lr] = float(t_grid[np.argmin(res.ft_theory[lr][0])])
        res.ft_pred_ckpt[lr] = nearest_checkpoint(times, res.ft_pred_t[lr])
    for lam in cfg.reg_lambdas:
        f1, f2 = finetune(prob, W1s, W2s, cfg.reg_lr, cfg.ft_steps, lam)
        res.reg_sim[lam] = _losses(prob, f1, f2)
        res.reg_theory[lam] = lazy_finetune_losses(prob, a_grid, cfg.reg_lr, cfg.ft_steps, lam)
        res.reg_sim_min[lam] = int(np.argmin(res.reg_sim[lam][0]))
        res.reg_pred_t[lam] = float(t_grid[np.argmin(res.reg_theory[lam][0])])
        res.reg_pred_ckpt[lam] = nearest_checkpoint(times, res.reg_pred_t[lam])
        res.reg_harmful[lam] = ft_harmful_modes(prob, cfg.reg_lr, cfg.ft_steps, lam)
    return res
