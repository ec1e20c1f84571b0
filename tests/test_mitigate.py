"""Chapter 06 (coft_utils.chapters.mitigate, mitigate_report) at smoke scale: configuration errors,
units shared with chapters 02-04, identical evaluation tokens across schedules, the report's
verdicts on the records (and on diverged runs)."""
import math

import numpy as np
import pytest
from conftest import runs_in

from coft_utils.chapters import mitigate, mitigate_report as mr
from coft_utils.foundation import profiles, registry, results


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with runs_in(tmp_path_factory.mktemp("mit")) as root:
        yield root


@pytest.mark.parametrize("over, word", [
    ({"l2_strengths": [0.1, 1.0]}, "must contain 0"), ({"l2_strengths": [0.0]}, "at least one strength"),
    ({"schedules": ["wsd"]}, "fewer than two"), ({"schedules": ["wsd", "wsd"]}, "repeated"),
    ({"schedules": ["wsd", "linear"]}, "schedules"), ({"lr": 0.0}, "lr"), ({"task": "nope"}, "nope"),
    ({"gammas": []}, "gammas"), ({"l2_strengths": [0.0, -1.0]}, "l2_strengths"),
])
def test_bad_parameters_are_clear_errors_before_any_work(over, word):
    with pytest.raises(profiles.ProfileError, match=word):
        mitigate.resolve("smoke", over)


def test_units_are_those_of_chapters_02_and_03():
    cfg = mitigate.resolve("smoke")
    c3 = mitigate.finetune_config(cfg, "cosine")
    ch03 = profiles.resolve("03_fixed_lr_finetuning", "smoke")
    F = registry.experiment("03_fixed_lr_finetuning")
    assert c3.lrs == (cfg.lr,) and cfg.lr in ch03.lrs
    assert F.train_key(c3) == F.train_key(ch03), "strength 0 is chapter 03's own unit"
    assert F.train_key(mitigate.finetune_config(cfg, "cosine", l2=1.0)) != F.train_key(ch03)
    c2 = mitigate.perturb_config(cfg, "wsd_short")
    assert c2.schedule == "wsd_short" and c2.gammas == cfg.gammas and c2.compare_gammas == ()
    assert c2.sources == profiles.resolve("02_gaussian_sensitivity", "smoke").sources[:1]
    assert [mitigate.anneal_fraction("cpu", s) for s in mitigate.VARIANTS] == [0.0, 0.05, 0.2, 1.0]


def test_chapter_runs_on_identical_tokens_and_resumes(env, monkeypatch):
    cfg = mitigate.resolve("smoke")
    run = mitigate.run_all(cfg)
    # identical evaluation tokens across schedules: the blocks each schedule's tokenizer makes ...
    tok = mitigate.eval_tokens(cfg)
    assert set(tok) == set(cfg.schedules)
    assert len({v["perturb"] for v in tok.values()}) == 1 and len({v["finetune"] for v in tok.values()}) == 1
    # ... and what every record says it was measured on (before and after fine-tuning)
    ft = run["forgetting"]
    assert set(ft.ood_tokens_sha_before) == set(ft.ood_tokens_sha_after) == {tok["cosine"]["finetune"]}
    assert set(run["l2"].ood_tokens_sha_after) == {tok["cosine"]["finetune"]}
    sens = run["sensitivity"]
    assert set(sens.schedule) == set(cfg.schedules)
    assert sens.groupby("schedule").n_tokens.nunique().eq(1).all() and sens.n_tokens.nunique() == 1
    # every schedule at the same budgets
    assert len({tuple(sorted(g.tokens.unique())) for _, g in sens.groupby("schedule")}) == 1
    # the penalty's units are records with their strength and distance; strength 0 is chapter 03's record
    l2 = run["l2"]
    assert sorted(l2.l2_start.unique()) == sorted(cfg.l2_strengths)
    d0, d1 = (l2[l2.l2_start == lam].dist_to_start.mean() for lam in sorted(cfg.l2_strengths))
    assert d1 < d0, "the penalty keeps the weights closer to the start"
    store = results.Store("finetune", "smoke")
    F = registry.experiment("03_fixed_lr_finetuning")
    ch03 = profiles.resolve("03_fixed_lr_finetuning", "smoke")
    mine = [u for u in F.units(F.load_series(ch03), ch03) if u["lr"] == cfg.lr and u["task"] == cfg.task]
    ids03 = {results.unit_id(u) for u in mine}
    assert ids03 <= set(l2[l2.l2_start == 0.0].record_id) | set(ft[ft.schedule == "cosine"].record_id)
    assert mine and all(store.done(u) for u in mine)
    # a second run trains and evaluates nothing
    monkeypatch.setattr(F, "run_unit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    P = registry.experiment("02_gaussian_sensitivity")
    monkeypatch.setattr(P, "_sweep_checkpoint", lambda *a, **k: (_ for _ in ()).throw(AssertionError("again")))
    again = mitigate.run_all(cfg)
    assert len(again["forgetting"]) == len(ft) and len(again["sensitivity"]) == len(sens)
    # the report: every claim row, each with a label and a measured text
    S, L, P_ = mr.schedule_summary(run, cfg), mr.l2_summary(run, cfg), mr.lr_rule_summary(run, cfg)
    rows = {**S["claims"], **L["claims"], **P_["claims"]}
    assert set(rows) == set(registry.get("06_mitigations").claims)
    assert all(v.label in ("observed", "contradicted", "within noise", "inconclusive") and m for v, m in rows.values())
    assert L["theory"] is not None and L["theory"][0].label == "observed"  # chapter 05's exact verdict beside it
    # the LR rule: cross-fitted, never above the ID-optimal LR at the first checkpoint
    r = P_["rule"]
    assert r["choice"]["hold"].shape == (ch03.seeds, len(r["tokens"]))
    assert np.all(r["choice"]["hold"][:, 0] >= r["choice"]["opt"][:, 0])


def test_lr_rule_is_cross_fitted():
    """The LR chosen for a seed depends only on the other seeds: changing one seed's records does
    not change its own choice."""
    import pandas as pd
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        for k, tok in enumerate(2.0 ** np.arange(4)):
            for lr in (1e-3, 1e-2, 1e-1):
                f = 0.1 * lr * 100 * (1 + 0.3 * k) + 0.01 * rng.standard_normal()
                rows.append({"seed": seed, "tokens": tok, "checkpoint": str(k), "lr": lr, "ood_loss_before": 3.0,
                             "ood_loss_after": 3.0 + f, "val_id_ppl": 10 / (1 + lr * 50) + 0.1 * rng.standard_normal(),
                             "test_id_ppl": 10 / (1 + lr * 50), "ood_ppl_after": math.exp(3.0 + f)})
    df = pd.DataFrame(rows)
    a = mr.lr_rule(df)
    changed = df.copy()
    changed.loc[changed.seed == 0, "val_id_ppl"] = 1000 * changed.loc[changed.seed == 0, "lr"]  # seed 0 now prefers small LRs
    b = mr.lr_rule(changed)
    assert np.array_equal(a["choice"]["opt"][0], b["choice"]["opt"][0]), "seed 0's own choice may not use seed 0"
    assert not np.array_equal(a["choice"]["opt"][1:], b["choice"]["opt"][1:])
    # forgetting grows with tokens here, so the holding rule lowers the LR at later checkpoints
    assert (a["choice"]["hold"][:, -1] <= a["choice"]["hold"][:, 0]).all()
    assert (a["choice"]["hold"][:, -1] < a["choice"]["opt"][:, -1]).all()


def test_diverged_runs_are_shown_and_never_scored(env):
    """Every fine-tuning run diverges (lr = 1e9): its rows are inconclusive and say so; the
    sensitivity members (no fine-tuning) are still decided."""
    cfg = mitigate.resolve("smoke", {"lr": 1e9, "theory": False})
    run = mitigate.run_all(cfg)
    assert run["forgetting"].diverged.all() and run["forgetting"].ood_ppl_after.isna().all()
    S, L = mr.schedule_summary(run, cfg), mr.l2_summary(run, cfg)
    for cid in ("anneal_forgetting",):
        assert S["claims"][cid][0].label == "inconclusive", (cid, S["claims"][cid][0])
    for cid in ("l2_forgetting", "l2_inflection"):
        assert L["claims"][cid][0].label == "inconclusive", cid
    assert "diverged" in S["claims"]["anneal_forgetting"][0].reason
    assert "diverged" in L["claims"]["l2_forgetting"][0].reason
    members = S["claims"]["short_anneal"][0].detail["labels"]
    assert members["forgetting"] == "inconclusive" and S["claims"]["anneal_sensitivity"][0].label != "inconclusive"
    import matplotlib
    matplotlib.use("Agg")
    mr.fig_schedules(run, cfg)
    mr.fig_l2(run, cfg)
