"""Tests of chapter 05 (coft_utils.chapters.theory and its theory_derive, theory_closed and theory_report
modules): derivations, simulation, inflection points, verdicts, notebook."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

from coft_utils.foundation import profiles
from coft_utils.chapters import theory, theory_closed, theory_derive, theory_report
ROOT = Path(__file__).resolve().parents[1]
CH = "05_linear_theory"


# ------------------------------------------------------------------------- derivations
def test_dsolve_solution_satisfies_its_ode():
    d = theory_derive.derive_mode_dynamics()
    assert all(d["checks"].values()), d["checks"]
    # independent check: plug the solution into the ODE at random numeric points
    sy = d["symbols"]
    a = d["solution_expr"]
    resid = sp.diff(a, sy["t"]) - d["ode_rhs"].subs(sy["a"], a)
    rng = np.random.default_rng(0)
    for _ in range(5):
        vals = {sy["s"]: rng.uniform(0.1, 5), sy["a0"]: rng.uniform(1e-4, 0.05),
                sy["t"]: rng.uniform(0, 3)}
        assert abs(float(resid.subs(vals))) < 1e-9
        # and it is the logistic solution, a(0) = a0
        assert abs(float(a.subs({**vals, sy["t"]: 0})) - float(vals[sy["a0"]])) < 1e-12
    # the ODE really is logistic 2 a (s - a)
    assert sp.expand(d["ode_rhs"] - 2 * sy["a"] * (sy["s"] - sy["a"])) == 0


def test_learning_time_is_half_strength():
    s, a0 = np.array([3.0, 0.7]), 1e-3
    t = theory_closed.learning_time(s, a0)
    assert np.allclose(np.diag(theory_closed.strength(s, a0, t)), s / 2, rtol=1e-10)  # (t, s) grid
    assert t[1] > t[0]  # smaller singular values are learned later


def _mc_perturbed(W1, W2, A, g, n, rng):
    E1 = rng.standard_normal((n,) + W1.shape)
    E2 = rng.standard_normal((n,) + W2.shape)
    M = (W2 + g * E2) @ (W1 + g * E1) - A
    return 0.5 * np.mean(np.sum(M ** 2, axis=(1, 2)))


@pytest.mark.parametrize("shape_seed", [0, 1, 2])
def test_symbolic_perturbation_loss_matches_monte_carlo(shape_seed):
    pert = theory_derive.derive_perturbation()
    assert all(pert["checks"].values()), pert["checks"]
    rng = np.random.default_rng(shape_seed)
    entry = pert["shapes"][shape_seed]
    d_in, h, d_out = entry["shape"]
    W1, W2 = rng.normal(size=(h, d_in)), rng.normal(size=(d_out, h))
    A = rng.normal(size=(d_out, d_in))
    g = 0.4
    subs = {pert["gamma"]: g}
    subs.update({sp.Symbol(f"w1_{i}{j}"): W1[i, j] for i in range(h) for j in range(d_in)})
    subs.update({sp.Symbol(f"w2_{i}{j}"): W2[i, j] for i in range(d_out) for j in range(h)})
    subs.update({sp.Symbol(f"A_{i}{j}"): A[i, j] for i in range(d_out) for j in range(d_in)})
    sym = float(entry["expected"].subs(subs))
    mc = _mc_perturbed(W1, W2, A, g, 200_000, rng)
    assert abs(sym - mc) / sym < 0.02, (sym, mc)
    # the general numeric form agrees with the symbolic one
    assert np.isclose(theory_closed.expected_perturbed_loss(W1, W2, A, g), sym, rtol=1e-10)


def test_general_perturbation_form_on_larger_random_matrices():
    rng = np.random.default_rng(5)
    W1, W2, A = rng.normal(size=(5, 4)), rng.normal(size=(6, 5)), rng.normal(size=(6, 4))
    g = 0.3
    exp = theory_closed.expected_perturbed_loss(W1, W2, A, g)
    mc = _mc_perturbed(W1, W2, A, g, 100_000, rng)
    assert abs(exp - mc) / exp < 0.02
    # and the mode formula agrees with the matrix formula for balanced aligned weights
    cfg = profiles.resolve(CH, "smoke")
    prob = theory.make_problem(cfg)
    a = prob.s * rng.uniform(0, 1, prob.r)
    W1, W2 = prob.init(a)
    assert np.isclose(theory_closed.expected_perturbed_loss(W1, W2, prob.A, g),
                      theory_closed.perturbed_loss_modes(prob.s, a, g, prob.dims), rtol=1e-10)


def test_inflection_and_regularization_derivations():
    inf = theory_derive.derive_inflection()
    assert all(inf["checks"].values())
    s, delta = inf["symbols"]["s"], inf["symbols"]["delta"]
    net = inf["net"]
    assert float(net.subs({s: 0.5, delta: 0.3})) > 0    # s < 2 delta: learning hurts
    assert float(net.subs({s: 0.7, delta: 0.3})) < 0    # s > 2 delta: learning helps
    reg = theory_derive.derive_regularized()
    assert all(reg["checks"].values()), reg["checks"]
    sy = reg["symbols"]
    h = sp.lambdify((sy["eta"], sy["lam"], sy["K"]), reg["horizon"])
    hs = [h(0.01, lam, 100) for lam in (0.1, 1.0, 3.0, 10.0)]
    assert all(np.diff(hs) < 0) and hs[0] < 100 * 0.01


def test_finetune_first_order_rates_on_full_matrices():
    ft = theory_derive.derive_finetune()
    assert all(ft["checks"].values()), ft["checks"]
    cfg = profiles.resolve(CH, "smoke")
    prob = theory.make_problem(cfg)
    a = prob.s * np.linspace(1, 0.1, prob.r)
    W1, W2 = prob.init(a)
    eta = 1e-6
    f1, f2 = theory.finetune(prob, W1, W2, eta, 1)
    dP = prob.U.T @ (f2 @ f1 - W2 @ W1) @ prob.V / eta
    P = prob.U.T @ (W2 @ W1) @ prob.V
    pred = -theory_closed._rates(prob, a) * (P - prob.B_modes)
    assert np.allclose(dP, pred, atol=1e-4 * np.abs(pred).max())


# ------------------------------------------------------------------------- simulation
def test_closed_form_tracks_full_matrix_simulation():
    cfg = profiles.resolve(CH, "smoke", {"lr": 1e-4, "horizon": 1.0})
    prob = theory.make_problem(cfg)
    pre = theory.pretrain(prob, cfg.lr, theory.checkpoint_times(cfg, prob.s))
    assert pre["max_rel_err"] < 1e-2, pre["max_rel_err"]
    # it is a discretisation error: a 20x larger step is clearly worse
    cfg2 = profiles.resolve(CH, "smoke", {"lr": 2e-3, "horizon": 1.0})
    pre2 = theory.pretrain(prob, cfg2.lr, theory.checkpoint_times(cfg2, prob.s))
    assert pre2["max_rel_err"] > 5 * pre["max_rel_err"]


@pytest.mark.parametrize("over", [
    dict(spectrum="power", decay=1.0, gammas=(0.2, 0.3)),
    dict(spectrum="geometric", decay=0.6, gammas=(0.17, 0.25)),
    dict(spectrum="power", decay=1.5, gammas=(0.17, 0.25)),
    dict(spectrum="geometric", decay=0.5, s_max=6.0, gammas=(0.15, 0.3), seed=3, lr=1e-3),
])
def test_predicted_inflection_within_one_checkpoint(over):
    cfg = profiles.resolve(CH, "smoke", {"n_checkpoints": 20, "n_draws": 64, **over})
    res = theory.run_all(cfg, finetuning=False)
    n = len(res.times)
    for g in cfg.gammas:
        k_sim, k_pred = res.perturb_sim_min[g], res.perturb_pred_ckpt[g]
        assert abs(k_sim - k_pred) <= 1, (g, k_sim, k_pred)
        # a genuine U: interior minimum, and the loss rises again after it
        mc = res.perturb_mc[g]
        assert 0 < k_sim < n - 1
        assert mc[-1] - mc[k_sim] > 0.02 * mc[k_sim]
        if cfg.spectrum == "geometric":  # well separated modes: the closed-form rule works too
            j, t_rule = res.perturb_rule[g]
            assert abs(theory_closed.nearest_checkpoint(res.times, t_rule) - k_sim) <= 1


def test_smoke_finetuning_u_shape_and_regularization():
    cfg = profiles.resolve(CH, "smoke")
    res = theory.run_all(cfg)
    n = len(res.times)
    assert any(0 < res.ft_sim_min[lr] < n - 1 for lr in cfg.ft_lrs)
    lams = sorted(cfg.reg_lambdas)
    assert res.reg_sim_min[lams[-1]] > res.reg_sim_min[lams[0]]          # delayed
    assert res.reg_sim[lams[-1]][1][-1] > res.reg_sim[lams[0]][1][-1]    # worse on B


# ------------------------------------------------------------------------- verdicts
def test_claim_verdicts_at_smoke():
    from coft_utils.book import claims
    from coft_utils.foundation import verdicts
    cfg = profiles.resolve(CH, "smoke")
    res = theory.run_all(cfg)
    V = theory_report.claim_verdicts(res)
    assert set(V) == {c for c, cl in claims.CLAIMS.items() if cl.chapter == CH}
    for cid, (v, measured) in V.items():
        assert isinstance(v, verdicts.Verdict) and v.label in verdicts.LABELS and measured
        assert "partly" not in v.label and "not observed" not in v.label
    inc, ush, reg = (V[k][0] for k in ("linear_incremental", "linear_ushape", "linear_regularization"))
    assert inc.label == "observed" and inc.method == theory_report.EXACT and inc.statistic == pytest.approx(1.0)
    assert reg.label == "observed" and reg.method == theory_report.EXACT and reg.ci == (reg.statistic, reg.statistic)
    # the U row: Monte Carlo replicates for the perturbation, exact for fine-tuning, "k of n" counts
    assert ush.label == "observed"
    assert ush.n_replicates == 1  # the exact fine-tuning members carry one "replicate"
    members = ush.detail["parts"]["U-shape"]["detail"]["members"]
    pert = [m for k, m in members.items() if k.startswith("perturbation")]
    assert len(pert) == len(cfg.gammas) and all(m["n_replicates"] == theory_report.N_GROUPS for m in pert)
    assert all("re-selected" in m["method"] for m in pert)
    assert f"of {len(cfg.gammas)} γ" in V["linear_ushape"][1]
    assert f"for {ush.detail['n_u_finetune']} of {len(cfg.ft_lrs)} learning rates" in V["linear_ushape"][1]


def test_draw_groups_are_batch_means():
    x = np.arange(30.0).reshape(10, 3)
    g = theory_report.draw_groups(x, 4)  # 4 groups of 2 draws, the last 2 draws left out
    assert g.shape == (4, 3) and np.allclose(g[0], x[:2].mean(0)) and np.allclose(g[-1], x[6:8].mean(0))
    assert theory_report.draw_groups(x, 50).shape == (10, 3)


@pytest.mark.parametrize("y, label", [
    ([3.0, 2.0, 1.0, 1.5, 2.0], "observed"),
    ([3.0, 2.0, 1.5, 1.2, 1.0], "within noise"),   # minimum at the end: no interior minimum
    ([1.0, 2.0, 3.0, 2.0, 1.5], "contradicted"),   # an inverted U
    ([1.0, 1.0, 1.0, 1.0, 1.0 + 1e-14], "within noise"),  # float round-off is not a rise
    ([1.0, np.nan, 1.0, 2.0, 3.0], "inconclusive"),
])
def test_exact_u_labels(y, label):
    v = theory_report._exact_u(np.arange(1, 6.0), np.array(y))
    assert v.label == label and (v.method == theory_report.EXACT or label == "inconclusive")


def _fake_reg(mins, LB, K=10):
    cfg = profiles.resolve(CH, "smoke", {"reg_lambdas": [0.0, 1.0, 3.0][:len(mins)]})
    from types import SimpleNamespace
    lams = sorted(cfg.reg_lambdas)
    return SimpleNamespace(cfg=cfg, times=np.geomspace(1, 100, K),
                           reg_sim_min=dict(zip(lams, mins)),
                           reg_sim={l: (np.ones(K), np.full(K, b)) for l, b in zip(lams, LB)})


@pytest.mark.parametrize("mins, LB, label", [
    ([3, 5, 7], [1.0, 2.0, 3.0], "observed"),
    ([3, 3, 3], [1.0, 2.0, 3.0], "within noise"),
    ([7, 5, 3], [1.0, 2.0, 3.0], "contradicted"),
    ([3, 5, 7], [3.0, 2.0, 1.0], "contradicted"),
    ([3, 7, 5], [1.0, 2.0, 3.0], "inconclusive"),
    ([9, 9, 9], [1.0, 2.0, 3.0], "inconclusive"),   # no inflection in the run at all
])
def test_regularization_verdict_labels(mins, LB, label):
    v, measured = theory_report._verdict_regularization(_fake_reg(mins, LB))
    assert v.label == label and str(mins) in measured


# ------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("bad", [
    {"gammas": [-0.1]}, {"theta": 2.0}, {"spectrum": "geometric", "decay": 1.5},
    {"init_strength": 10.0}, {"lr": 0.5}, {"ft_lrs": [0.5]}, {"n_checkpoints": 2},
    {"spectrum": "cubic"}, {"no_such_param": 1},
])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(profiles.ProfileError):
        profiles.resolve(CH, "smoke", bad)


def test_all_profiles_resolve():
    for p in profiles.PROFILES:
        cfg = profiles.resolve(CH, p)
        assert isinstance(cfg, theory.Config) and cfg.profile == p


# ------------------------------------------------------------------------- notebook
@pytest.mark.slow
def test_notebook_runs_at_smoke(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    papermill = pytest.importorskip("papermill")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    nb = jupytext.read(ROOT / "notebooks" / f"{CH}.py")
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    out = papermill.execute_notebook(nb, str(tmp_path / "05.ipynb"), parameters={"profile": "smoke"},
                                     kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    errors = [o for c in out.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def test_paper_path_runs_offline_without_any_data(tmp_path, monkeypatch):
    """Chapter 05 at paper needs neither the hub nor a data file (numpy only): the paper preset
    at the smoke sizes runs offline with an empty data folder and gives finite curves."""
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("COFT_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    small = {k: v for k, v in profiles.resolve("05_linear_theory", "smoke").to_dict().items()
             if k not in ("profile", "seed")}
    cfg = profiles.resolve("05_linear_theory", "paper", small)
    res = theory.run_all(cfg)
    assert cfg.profile == "paper" and len(res.times) == cfg.n_checkpoints and np.isfinite(res.times).all()
