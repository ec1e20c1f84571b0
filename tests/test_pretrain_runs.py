"""Several pre-training runs in chapters 02-04 (``pretrain_runs``): each run's units get their own
seeds, the replicate rows carry their run, the verdicts take the run as the unit of replication,
and a cross-fitted choice never uses the scored seed's own run."""
import numpy as np
import pandas as pd
import pytest

from coft_utils.chapters import finetune, finetune_analysis, finetune_report, perturb_report
from coft_utils.foundation import models, profiles, verdict_design

TOKENS = [2 ** 18 * 2 ** k for k in range(6)]
LABELS = [f"c{k}" for k in range(6)]


def _ft_frame(n_runs=3, n_seeds=2, lrs=(1e-3, 1e-2), shift=None, rng=None, curv=2.0):
    """A chapter-03 frame: OOD-after U-shaped in tokens, a per-run offset (the run-to-run spread)."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for r in range(n_runs):
        off = rng.normal(0, 0.3) if shift is None else shift[r]
        for i in range(n_seeds):
            seed = r * n_seeds + i
            for lr in lrs:
                for k, (t, lab) in enumerate(zip(TOKENS, LABELS)):
                    after = 50 + curv * (k - 3) ** 2 + off + rng.normal(0, 0.05)
                    rows.append({"series": f"run{r}", "checkpoint": lab, "tokens": float(t), "task": "gsm8k",
                                 "lr": lr, "seed": seed, "ood_ppl_after": after, "ood_loss_after": np.log(after),
                                 "ood_loss_before": np.log(45.0), "val_id_ppl": 3.0 + lr * 10 + k * 0.01,
                                 "diverged": False})
    return pd.DataFrame(rows)


def test_run_labels_follow_the_rows_and_one_run_is_none():
    df = _ft_frame()
    assert finetune_analysis.replicate_runs(df, "gsm8k", 1e-3) == ["run0", "run0", "run1", "run1", "run2", "run2"]
    assert finetune_analysis.replicate_runs(df[df.series == "run1"], "gsm8k", 1e-3) is None


def test_verdicts_take_the_pretraining_run_as_the_unit():
    df = _ft_frame()
    v = finetune_report.fixed_lr_verdict(df)["gsm8k"]
    u = v["u"][1e-3]
    assert u.n_replicates == 3 and "3 pre-training runs" in u.design
    assert u.label == "observed"  # a large U over 3 runs with a small run-to-run offset
    one = finetune_report.fixed_lr_verdict(df[df.series == "run0"])["gsm8k"]["u"][1e-3]
    assert one.n_replicates == 2 and "one pre-training run" in one.design


def test_a_run_offset_is_not_signal():
    """Runs that sit higher or lower everywhere make neither a U nor a trend of a flat curve: the
    test is across runs, and their offsets cancel in every within-run contrast."""
    df = _ft_frame(shift=[0.0, 5.0, -5.0], rng=np.random.default_rng(1), curv=0.0)
    v = finetune_report.fixed_lr_verdict(df)["gsm8k"]
    for lr in (1e-3, 1e-2):
        assert v["grow"][lr].label == v["u"][lr].label == "within noise"
        assert v["grow"][lr].n_replicates == 3


def test_crossfit_choice_leaves_out_the_scored_seeds_run():
    # option 1 is best only in run "a"'s seeds: a seed of "a" may not see it through its own run
    val = np.zeros((2, 4, 1))
    val[0] = 1.0
    val[1, :2] = 0.0   # run a: option 1 better
    val[1, 2:] = 5.0   # run b: option 1 much worse
    idx, ok = verdict_design.crossfit_choice(val, groups=["a", "a", "b", "b"])
    assert ok.all() and idx[:2, 0].tolist() == [0, 0] and idx[2:, 0].tolist() == [1, 1]
    idx0, _ = verdict_design.crossfit_choice(val)  # leave-one-seed-out: seed 0 sees seed 1 of its own run
    assert idx0[0, 0] == 0 and idx0[2, 0] == 0
    with pytest.raises(ValueError, match="groups"):
        verdict_design.crossfit_choice(val, groups=["a"])


def test_perturbation_damage_is_against_each_runs_own_base():
    rows = []
    for r, base in enumerate((100.0, 200.0)):
        for k, lab in enumerate(LABELS[:4]):
            rows.append({"series": f"run{r}", "source": "gutenberg", "checkpoint": lab, "tokens": float(TOKENS[k]),
                         "gamma": 0.0, "noise_seed": 0, "ppl": base, "diverged": False})
            for i in range(2):
                rows.append({"series": f"run{r}", "source": "gutenberg", "checkpoint": lab,
                             "tokens": float(TOKENS[k]), "gamma": 0.4, "noise_seed": r * 2 + i,
                             "ppl": base + 1.0 + k, "diverged": False})
    df = pd.DataFrame(rows)
    tok, labels, D, P = perturb_report.replicates(df, "gutenberg", 0.4)
    assert np.allclose(D, np.arange(4) + 1.0) and P.shape == (4, 4)
    assert perturb_report.replicate_runs(df, "gutenberg", 0.4) == ["run0", "run0", "run1", "run1"]
    s = perturb_report.summarize(df)
    assert np.allclose(s.sort_values("tokens")["delta_mean"], np.arange(4) + 1.0)


def test_each_run_has_its_own_seed_block_and_run_0_keeps_the_old_seeds(tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"not read: only fingerprinted")
    s = models.CheckpointSeries("toy", (models.Checkpoint("a", 1.0, path=str(folder)),))
    one = finetune.resolve("03_fixed_lr_finetuning", "smoke")
    three = finetune.resolve("03_fixed_lr_finetuning", "smoke", {"pretrain_runs": 3})
    seeds = lambda c, r: sorted({u["seed"] for u in finetune.units(s, c, r)})  # noqa: E731
    assert seeds(one, 0) == seeds(three, 0) == list(range(one.seeds))
    assert seeds(three, 1) == list(range(one.seeds, 2 * one.seeds))
    with pytest.raises(profiles.ProfileError, match="'pretrain_runs' = 2 applies to series 'suite' only"):
        finetune.resolve("03_fixed_lr_finetuning", "paper", {"pretrain_runs": 2, "series": "olmo-1b"})
