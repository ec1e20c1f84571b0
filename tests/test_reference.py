"""The cpu-deep reference profile (issue 25): its presets reach the depth and replicates the issue
asks for, a chapter without its own preset falls back to cpu's, `book` runs only its chapters and
exports the records to results/<profile>/, and the claims page shows them as the reference run."""
import dataclasses
import gzip
import json

import pytest

from coft_utils.book import claims, plan, reference
from coft_utils.book import run as runner
from coft_utils.chapters import pretrain, pretrain_plan
from coft_utils.foundation import profiles, results, verdicts

DEEP = "cpu-deep"


def test_the_deep_presets_meet_the_issue_targets():
    prof = profiles.get_profile(DEEP)
    assert prof.offline and prof.reference and prof.base == "cpu"
    assert {"00_pretraining_suite", "02_gaussian_sensitivity", "03_fixed_lr_finetuning", "04_lr_sweep",
            "06_mitigations"} <= set(prof.chapters)
    pre = pretrain.resolve(DEEP, "wsd")
    top = pretrain_plan.budget_steps(pre)[-1] * pre.tokens_per_step()
    assert top / pretrain_plan.n_params(pre) >= 1000 and pre.pretrain_seeds >= 3 and not pre.replicate_budgets
    for ch in ("02_gaussian_sensitivity", "03_fixed_lr_finetuning", "04_lr_sweep"):
        c = profiles.resolve(ch, DEEP)
        assert c.schedule == pre.replicated == "wsd" and c.pretrain_runs >= 3 and c.pretrain_runs <= pre.pretrain_seeds
        labels = profiles.series_info("suite", DEEP, c.schedule).labels
        assert set(c.checkpoints or labels) <= set(labels) and labels[-1] == pretrain_plan.budget_labels(pre)[-1]


def test_a_chapter_without_a_deep_preset_uses_cpus():
    cpu, deep = (profiles.resolve("05_linear_theory", p) for p in ("cpu", DEEP))
    assert deep.profile == DEEP and dataclasses.replace(deep, profile="cpu") == cpu
    with pytest.raises(profiles.ProfileError, match="unknown profile"):
        profiles.preset("05_linear_theory", "laptop")


def test_plan_all_at_a_reference_profile_prices_its_chapters_and_runs():
    plans = {p.chapter: p for p in plan.plan_all(DEEP)}
    assert set(plans) == set(profiles.get_profile(DEEP).chapters) & set(plan._PLANNED)
    ft = profiles.resolve("03_fixed_lr_finetuning", DEEP)
    n_ck = len(ft.checkpoints)
    trained = [u for u in plans["03_fixed_lr_finetuning"].units if not u.name.startswith("base")]
    assert len(trained) == ft.pretrain_runs * n_ck * len(ft.lrs) * ft.seeds


def test_book_at_a_reference_profile_runs_its_chapters_and_exports(monkeypatch, tmp_path):
    monkeypatch.setenv("COFT_RUNS_DIR", str(tmp_path / "runs"))
    ran, built, exported = [], [], []
    monkeypatch.setattr(runner, "run_notebook", lambda c, prof, params, out, force, timeout: ran.append((c, out)))
    monkeypatch.setattr(runner, "build", lambda *a, **k: built.append(1))
    monkeypatch.setattr(reference, "export", lambda prof, walls, command="": exported.append((prof, walls)) or tmp_path)
    assert runner.main(["book", "--profile", DEEP]) == 0
    assert [c for c, _ in ran] == [c for c in runner.chapters() if c in profiles.get_profile(DEEP).chapters]
    assert all(out == str(tmp_path / "runs" / DEEP / "_generated") for _, out in ran)
    assert not built and exported[0][0] == DEEP and set(exported[0][1]) == {c for c, _ in ran}


def test_export_writes_the_records_with_provenance_and_the_claims_page_shows_them(monkeypatch, tmp_path):
    monkeypatch.setenv("COFT_RUNS_DIR", str(tmp_path / "runs"))
    with pytest.raises(FileNotFoundError, match="make book PROFILE=cpu-deep"):
        reference.export(DEEP, dest=tmp_path / "out")
    v = verdicts.Verdict(claim="x", label="within noise", statistic=0.1, ci=(-0.2, 0.4), n_replicates=3)
    claims.record("ushape_fixed_lr", DEEP, v, "synthetic", chapter="03_fixed_lr_finetuning")
    results.Store("finetune", DEEP).write({"checkpoint": "1M", "seed": 0}, {"ood_ppl_after": 50.0},
                                          data_names=[])
    dest = reference.export(DEEP, {"03_fixed_lr_finetuning": 12.5}, dest=tmp_path / "results" / DEEP)
    assert len(list((dest / "claims").glob("*.json"))) == 1
    with gzip.open(dest / "records" / "finetune.csv.gz", "rt") as fh:
        lines = fh.read().splitlines()
    assert len(lines) == 2 and "ood_ppl_after" in lines[0] and "50.0" in lines[1]
    prov = json.loads((dest / "PROVENANCE.json").read_text())
    assert prov["wall_s"] == {"03_fixed_lr_finetuning": 12.5} and prov["records"] == {"finetune": 1}
    assert {"git", "packages", "device"} <= set(prov)
    monkeypatch.setenv("COFT_RUNS_DIR", str(tmp_path / "elsewhere"))  # only the committed copy is left
    monkeypatch.setattr(claims, "REFERENCE_DIR", tmp_path / "results")
    rec = [r for r in claims.collect() if r["claim"] == "ushape_fixed_lr"]
    assert rec and rec[0]["tag"] == f"{DEEP} (reference run)"
    assert "reference run" in claims.html_table()
