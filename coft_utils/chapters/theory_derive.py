"""Symbolic derivations of the linear-network theory (chapter ``05_linear_theory``), with sympy.

Every result of the chapter's theory is computed here, not typed in, and checked (by
substitution, ``checkodesol``, ``rsolve``, exact Gaussian moments); each function returns a dict
of sympy objects and a ``checks`` dict (name -> bool). The numbers of the experiment
(:mod:`coft_utils.chapters.theory_closed`) are lambdified from these results::

    from coft_utils.chapters import theory_derive
    d = theory_derive.derive_mode_dynamics()   # per-mode flow, ODE, dsolve solution, learning time
    d["solution"], d["checks"]                 # sympy expressions, substitution checks
    theory_derive.derive_perturbation()        # exact expected loss after a Gaussian perturbation
    theory_derive.derive_inflection()          # when learning one more mode hurts
    theory_derive.derive_finetune()            # one GD step on L_B: rates a_i + a_j
    theory_derive.derive_regularized()         # the penalised recursion, rsolve, horizon h(lambda)

Conventions are those of :mod:`coft_utils.chapters.theory`.
"""
from __future__ import annotations

import functools

__all__ = ["derive_mode_dynamics", "derive_perturbation", "derive_inflection", "derive_finetune",
           "derive_regularized"]


# --------------------------------------------------------------------------------------------
# sympy derivations (all results below are computed, not typed in)
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def derive_mode_dynamics() -> dict:
    """Per-mode gradient flow, its dsolve solution (checked by substitution), learning time.

    Returns sympy objects: ``matrix_grads`` (2-mode check that diagonal weights stay
    diagonal), ``flow`` (db/dt, dc/dt), ``balance`` (d(b^2-c^2)/dt), ``ode`` (da/dt),
    ``solution`` (a(t)), ``t_half`` (time to reach s/2), ``t_reach`` (time to reach s - delta),
    ``checks`` (dict name -> bool).
    """
    import sympy as sp
    t, s, a0, delta = sp.symbols("t s a_0 delta", positive=True)
    b, c = sp.symbols("b c", positive=True)
    # 2-mode matrix check: diagonal W1, W2, A keep diagonal gradients
    b1, b2, c1, c2, s1, s2 = sp.symbols("b_1 b_2 c_1 c_2 s_1 s_2", positive=True)
    W1, W2, A = sp.diag(b1, b2), sp.diag(c1, c2), sp.diag(s1, s2)
    Rm = W2 * W1 - A
    g1, g2 = W2.T * Rm, Rm * W1.T
    diag_ok = all(sp.simplify(g[i, j]) == 0 for g in (g1, g2) for i in range(2) for j in range(2)
                  if i != j)
    # per-mode loss and flow
    ell = sp.Rational(1, 2) * (c * b - s) ** 2
    db, dc = -sp.diff(ell, b), -sp.diff(ell, c)
    balance = sp.simplify(2 * b * db - 2 * c * dc)               # d(b^2 - c^2)/dt
    da = sp.expand(b * dc + c * db)                               # d(bc)/dt
    a = sp.Function("a")
    rhs_balanced = sp.factor(da.subs(c, b))                       # with b = c, a = b^2
    asym = sp.Symbol("a", positive=True)
    ode_rhs = sp.factor(rhs_balanced.subs(b, sp.sqrt(asym)))      # 2 a (s - a)
    ode = sp.Eq(a(t).diff(t), ode_rhs.subs(asym, a(t)))
    sol = sp.dsolve(ode, a(t), ics={a(0): a0})
    sol_expr = sp.simplify(sol.rhs)
    checkode = sp.checkodesol(ode, sp.Eq(a(t), sol_expr))
    resid = sp.simplify(sp.diff(sol_expr, t) - ode_rhs.subs(asym, sol_expr))
    init_ok = sp.simplify(sol_expr.subs(t, 0) - a0) == 0
    limit_ok = sp.limit(sol_expr, t, sp.oo) == s
    # the same solution in an overflow-free form (used for numbers), checked equal
    stable = s / (1 + (s / a0 - 1) * sp.exp(-2 * s * t))
    stable_ok = sp.simplify(stable - sol_expr) == 0
    t_half = sp.solve(sp.Eq(sol_expr, s / 2), t)
    t_reach = sp.solve(sp.Eq(sol_expr, s - delta), t)
    return dict(
        symbols=dict(t=t, s=s, a0=a0, delta=delta, a=asym),
        matrix_grads=(g1, g2), per_mode_loss=ell, flow=(sp.Eq(sp.Symbol(r"\dot b"), db),
                                                        sp.Eq(sp.Symbol(r"\dot c"), dc)),
        balance=balance, ode=ode, ode_rhs=ode_rhs, solution=sp.Eq(a(t), sol_expr),
        solution_expr=sol_expr, stable_expr=stable, t_half=sp.simplify(t_half[0]), t_reach=sp.simplify(t_reach[0]),
        checks=dict(diagonal_gradients=bool(diag_ok), balance_conserved=balance == 0,
                    checkodesol=bool(checkode[0]), substitution=resid == 0, initial_value=init_ok,
                    converges_to_s=bool(limit_ok), stable_form_equal=bool(stable_ok)),
    )


def _expect_gaussian(expr, evars):
    """E[expr] for iid standard normal ``evars`` (expr a polynomial in them)."""
    import sympy as sp
    moments = {0: 1, 1: 0, 2: 1, 3: 0, 4: 3}
    poly = sp.Poly(sp.expand(expr), *evars)
    out = 0
    for monom, coeff in poly.terms():
        m = 1
        for k in monom:
            m *= moments[k] if k in moments else (0 if k % 2 else sp.factorial2(k - 1))
            if m == 0:
                break
        out += coeff * m
    return sp.expand(out)


@functools.lru_cache(maxsize=None)
def derive_perturbation(shapes=((2, 2, 2), (1, 2, 3), (3, 2, 1))) -> dict:
    """Expected perturbed loss, computed exactly with sympy for small shapes (d_in, h, d_out).

    For each shape the expectation of 1/2||(W2 + g E2)(W1 + g E1) - A||^2 is taken symbolically
    (Gaussian moments) and compared with the general form
    1/2||W2W1 - A||^2 + g^2/2 (d_out ||W1||^2 + d_in ||W2||^2) + g^4/2 d_in h d_out.
    """
    import sympy as sp
    g = sp.Symbol("gamma", positive=True)
    Din, H, Dout, n1, n2, L0 = sp.symbols(r"d_{in} h d_{out} \|W_1\|_F^2 \|W_2\|_F^2 L_A",
                                          positive=True)
    general = L0 + g ** 2 / 2 * (Dout * n1 + Din * n2) + g ** 4 / 2 * Din * H * Dout
    results = []
    for (di, h, do) in shapes:
        W1 = sp.Matrix(h, di, lambda i, j: sp.Symbol(f"w1_{i}{j}"))
        W2 = sp.Matrix(do, h, lambda i, j: sp.Symbol(f"w2_{i}{j}"))
        A = sp.Matrix(do, di, lambda i, j: sp.Symbol(f"A_{i}{j}"))
        E1 = sp.Matrix(h, di, lambda i, j: sp.Symbol(f"e1_{i}{j}"))
        E2 = sp.Matrix(do, h, lambda i, j: sp.Symbol(f"e2_{i}{j}"))
        M = (W2 + g * E2) * (W1 + g * E1) - A
        loss = sp.Rational(1, 2) * sum(x ** 2 for x in M)
        expected = _expect_gaussian(loss, list(E1) + list(E2))
        fro = lambda X: sum(x ** 2 for x in X)  # noqa: E731
        gen = general.subs({L0: sp.Rational(1, 2) * fro(W2 * W1 - A), n1: fro(W1), n2: fro(W2),
                            Din: di, H: h, Dout: do})
        results.append(dict(shape=(di, h, do), expected=expected,
                            matches=sp.expand(expected - gen) == 0))
    # balanced aligned weights: ||W1||^2 = ||W2||^2 = sum a_i
    a = sp.Symbol("a_i", positive=True)
    s, delta = sp.symbols("s_i delta", positive=True)
    bal = sp.Eq(delta, sp.factor(g ** 2 / 2 * (Dout + Din)))
    return dict(gamma=g, general=sp.Eq(sp.Symbol(r"\mathbb{E}\,L_A^{\gamma}"), general),
                general_expr=general, shapes=results,
                checks={f"shape {r['shape']}": bool(r["matches"]) for r in results},
                delta=bal, symbols=dict(a=a, s=s, delta=delta, d_in=Din, d_out=Dout, h=H))


@functools.lru_cache(maxsize=None)
def derive_inflection() -> dict:
    """Per-mode perturbed loss phi(a) = (s-a)^2/2 + delta a; when learning a mode hurts.

    Returns ``phi``, ``a_dip`` (argmin over a), ``net`` (phi(s) - phi(0)), ``hurts`` (net > 0
    solved for s), ``dip_depth`` (phi(s - delta) - phi(0)), ``rise_after_dip``,
    ``consecutive`` (M_{j+1} - M_j of consecutive dips, separated modes) and its solution,
    ``t_star`` (time of the dip of mode s), ``stationarity`` (dL/dt of the whole spectrum).
    """
    import sympy as sp
    a, s, s2, delta = sp.symbols("a s s' delta", positive=True)
    phi = (s - a) ** 2 / 2 + delta * a
    a_dip = sp.solve(sp.diff(phi, a), a)[0]
    net = sp.factor(phi.subs(a, s) - phi.subs(a, 0))
    hurts = sp.solve(net > 0, s)
    dip_depth = sp.factor(phi.subs(a, a_dip) - phi.subs(a, 0))
    rise = sp.factor(phi.subs(a, s) - phi.subs(a, a_dip))
    # local minima of the summed curve for separated modes: M_j = sum_{k<j} net_k + dip_j
    consecutive = sp.factor(net + dip_depth.subs(s, s2) - dip_depth)
    cons_sol = sp.solve(sp.expand(consecutive) < 0, s2)
    dm = derive_mode_dynamics()
    t_star = dm["t_reach"]
    i = sp.Symbol("i", integer=True, positive=True)
    ai, si = sp.Function("a_i")(sp.Symbol("t")), sp.Symbol("s_i")
    stationarity = sp.Eq(sp.Sum(sp.diff(ai, sp.Symbol("t")) * (ai - si + delta), (i, 1, sp.Symbol("r"))), 0)
    return dict(phi=phi, a_dip=a_dip, net=net, hurts=hurts, dip_depth=dip_depth, rise=rise,
                consecutive=consecutive, consecutive_solution=cons_sol, t_star=t_star,
                stationarity=stationarity, symbols=dict(a=a, s=s, s2=s2, delta=delta),
                checks=dict(dip_at_s_minus_delta=sp.simplify(a_dip - (s - delta)) == 0,
                            net_positive_iff_s_lt_2delta=sp.simplify(net - s * (2 * delta - s) / 2) == 0))


@functools.lru_cache(maxsize=None)
def derive_finetune() -> dict:
    """One GD step on L_B = 1/2||W2W1 - B||^2 from balanced diagonal weights (2 modes).

    Shows the function moves by -lr (a_i + a_j)(P - B)_ij to first order in lr, and expands
    the pre-training loss L_A after the step to second order in lr.
    """
    import sympy as sp
    eta = sp.Symbol("eta", positive=True)
    a1, a2 = sp.symbols("a_1 a_2", positive=True)
    av = [a1, a2]
    W1 = sp.diag(sp.sqrt(a1), sp.sqrt(a2))      # balanced, in A's singular bases
    W2 = sp.diag(sp.sqrt(a1), sp.sqrt(a2))
    Bm = sp.Matrix(2, 2, lambda i, j: sp.Symbol(f"beta_{i + 1}{j + 1}"))
    Am = sp.diag(sp.Symbol("s_1"), sp.Symbol("s_2"))
    P = W2 * W1
    Rb = P - Bm
    W1n, W2n = W1 - eta * W2.T * Rb, W2 - eta * Rb * W1.T
    Pn = sp.expand(W2n * W1n)
    first = sp.expand((Pn - P).applyfunc(lambda x: sp.diff(x, eta).subs(eta, 0)))
    rates = sp.Matrix(2, 2, lambda i, j: av[i] + av[j])
    predicted = sp.Matrix(2, 2, lambda i, j: -rates[i, j] * Rb[i, j])
    first_ok = sp.simplify(first - predicted) == sp.zeros(2, 2)
    # L_A after the step: <P - A, dP> + 1/2 ||dP||^2 with dP = eta D1 + eta^2 D2
    D2 = sp.expand((Pn - P - eta * first) / eta ** 2)
    inner = lambda X, Y: sp.expand(sum(x * y for x, y in zip(X, Y)))  # noqa: E731
    c1 = sp.factor(inner(P - Am, first))
    c2 = sp.expand(inner(P - Am, D2) + inner(first, first) / 2)
    LA_n = sp.Rational(1, 2) * sum(x ** 2 for x in (Pn - Am))
    LA_0 = sp.Rational(1, 2) * sum(x ** 2 for x in (P - Am))
    series_ok = sp.expand(LA_n - LA_0 - (eta * c1 + eta ** 2 * c2)).coeff(eta, 1) == 0 and \
        sp.expand(LA_n - LA_0 - (eta * c1 + eta ** 2 * c2)).coeff(eta, 2) == 0
    # at a fitted model (a_i = s_i: P = A) the first order vanishes and the second order is
    # 1/2 sum_ij (a_i + a_j)^2 (A - B)_ij^2: it grows with what has been learned
    fitted = {a1: sp.Symbol("s_1"), a2: sp.Symbol("s_2")}
    c1_fit = sp.simplify(c1.subs(fitted))
    c2_fit = sp.factor(c2.subs(fitted))
    c2_fit_pred = sum((rates[i, j] ** 2 * (Am - Bm)[i, j] ** 2) for i in range(2)
                      for j in range(2)).subs(fitted) / 2
    c2_ok = sp.expand(c2_fit - c2_fit_pred) == 0
    return dict(eta=eta, W1=W1, W2=W2, B=Bm, first_order=first, rates=rates,
                first_order_matches=bool(first_ok), dLA_eta1=c1, dLA_eta2=c2,
                dLA_eta1_fitted=c1_fit, dLA_eta2_fitted=c2_fit,
                dLA_eta2_fitted_form=c2_fit_pred,
                checks=dict(first_order_rates=bool(first_ok), series=bool(series_ok),
                            first_order_vanishes_when_fitted=c1_fit == 0,
                            second_order_when_fitted=bool(c2_ok)))


@functools.lru_cache(maxsize=None)
def derive_regularized() -> dict:
    """Linearised fine-tuning of one entry x of the function (rate k, target offset r) with the
    penalty lambda/2||W - W_pre||^2: the recursion, its solution, the small-k 'horizon' h(lambda).
    """
    import sympy as sp
    n = sp.Symbol("n", integer=True, nonnegative=True)
    K = sp.Symbol("K", integer=True, positive=True)
    k, r, eta, lam = sp.symbols("k r eta lambda", positive=True)
    x = sp.Function("x")
    rec = sp.Eq(x(n + 1), x(n) - eta * (k * (x(n) - r) + lam * x(n)))
    sol = sp.rsolve(rec, x(n), {x(0): 0})
    sol = sp.simplify(sol)
    closed = k * r / (k + lam) * (1 - (1 - eta * (k + lam)) ** n)
    ok = sp.simplify(sol - closed) == 0
    # check the recursion by substitution, too
    rec_ok = sp.simplify(closed.subs(n, n + 1) - (closed - eta * (k * (closed - r) + lam * closed))) == 0
    xK = closed.subs(n, K)
    hK = sp.simplify(sp.limit(xK / (k * r), k, 0))
    m = sp.Symbol("m", integer=True, nonnegative=True)
    hsum = eta * sp.Sum((1 - eta * lam) ** m, (m, 0, K - 1))
    hsum_ok = sp.simplify(hsum.doit() - hK) == 0
    h0 = sp.limit(hK, lam, 0)
    x_unreg = sp.simplify(sp.limit(xK, lam, 0))
    return dict(recursion=rec, solution=sp.Eq(x(K), xK), solution_n=sol, horizon=hK,
                horizon_sum=hsum, horizon_at_0=h0, unregularized=x_unreg,
                symbols=dict(k=k, r=r, eta=eta, lam=lam, K=K),
                checks=dict(rsolve_matches=bool(ok), substitution=bool(rec_ok),
                            horizon_is_sum=bool(hsum_ok), horizon_at_0_is_K_eta=sp.simplify(h0 - K * eta) == 0))
