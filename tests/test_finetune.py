"""Tests of coft_utils.foundation.tasks and the chapters 03/04 modules (coft_utils.chapters.finetune, the
experiment; finetune_eval, finetune_train; finetune_report with finetune_analysis and finetune_plots), at smoke scale."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A temporary runs/cache folder with the smoke suite trained once for the whole module."""
    root = tmp_path_factory.mktemp("ft")
    old = {k: os.environ.get(k) for k in ("COFT_RUNS_DIR", "COFT_CACHE_DIR")}
    os.environ["COFT_RUNS_DIR"] = str(root / "runs")
    os.environ["COFT_CACHE_DIR"] = str(root / "cache")
    import torch
    torch.set_num_threads(1)
    from coft_utils.chapters import pretrain
    series = pretrain.get_suite("smoke", progress=False)
    series_json = series.save(root / "smoke_series.json")
    yield {"root": root, "series": series, "series_json": str(series_json)}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _tiny(env):
    from coft_utils.foundation import models
    ck = env["series"].checkpoints[-1]
    return models.load_model(ck), models.load_tokenizer(ck)


# --------------------------------------------------------------------------- tasks
def test_unknown_task_is_clear_error():
    from coft_utils.chapters import finetune
    from coft_utils.foundation import profiles, tasks
    with pytest.raises(tasks.TaskError, match=r"unknown task 'nope'.*allowed:.*sst2"):
        tasks.get("nope")
    with pytest.raises(profiles.ProfileError, match=r"unknown task\(s\) 'nope'.*allowed:.*gsm8k"):
        finetune.resolve("03_fixed_lr_finetuning", "smoke", {"tasks": ["nope"]})


@pytest.mark.parametrize("lr", [0, 0.0, -1e-3])
def test_non_positive_lr_is_clear_error(lr):
    from coft_utils.chapters import finetune, finetune_train
    from coft_utils.foundation import profiles
    with pytest.raises(profiles.ProfileError, match=r"'lrs.*out of range.*> 0"):
        finetune.resolve("04_lr_sweep", "smoke", {"lrs": [1e-3, lr]})
    with pytest.raises(ValueError, match="learning rate must be a finite number > 0"):
        finetune_train._check_lr(lr)


def test_splits_deterministic_and_disjoint():
    from coft_utils.foundation import tasks
    a = tasks.splits("mr", 50, 20, 20)
    b = tasks.splits("mr", 50, 20, 20)
    assert a == b
    texts = {k: {e["prompt"] for e in v} for k, v in a.items()}
    assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["validation"])
    e = a["train"][0]
    assert e["choices"] == [" negative", " positive"] and e["target"] == e["choices"][e["label"]]
    g = tasks.splits("gsm8k", 3, 2, 2)["train"][0]
    assert g["choices"] == [] and g["label"] == -1 and g["prompt"].endswith("Answer:")
    assert len(tasks.splits("humaneval", None, None, None)["test"]) == 16  # 10 % of 164, cut


def test_presets_share_units_between_chapters():
    from coft_utils.chapters import finetune
    for p in ("smoke", "cpu", "gpu", "paper"):
        a = finetune.PRESETS["03_fixed_lr_finetuning"][p]
        b = finetune.PRESETS["04_lr_sweep"][p]
        assert set(a.lrs) <= set(b.lrs), p
        assert finetune.train_key(a) == finetune.train_key(b) and a.experiment == b.experiment
        finetune.resolve("03_fixed_lr_finetuning", p)
        finetune.resolve("04_lr_sweep", p)


# --------------------------------------------------------------------------- metrics
def test_class_perplexity_matches_hand_computation(env):
    import torch
    from coft_utils.chapters import finetune_eval
    from coft_utils.foundation import tasks
    model, tok = _tiny(env)
    ex = tasks.splits("trec", 7, 1, 1)["train"]  # 6 classes, multi-token verbalizers
    ex += tasks.splits("sst2", 4, 1, 1)["train"]
    got = finetune_eval.class_metrics(model, tok, ex, max_len=64, batch_size=3)
    nll, correct = [], 0
    bos = tok.eos_token_id
    for e in ex:
        scores = []
        for c in e["choices"]:
            p = tok(e["prompt"], add_special_tokens=False)["input_ids"]
            t = tok(c, add_special_tokens=False)["input_ids"]
            p = p[-(64 - 1 - len(t)):]
            ids = torch.tensor([[bos] + p + t])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
            n0 = 1 + len(p)
            scores.append(sum(float(logp[n0 + j - 1, t[j]]) for j in range(len(t))) / len(t))
        scores = np.array(scores)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        nll.append(-math.log(probs[e["label"]]))
        correct += int(np.argmax(scores) == e["label"])
    assert got["class_ppl"] == pytest.approx(math.exp(np.mean(nll)), rel=1e-5)
    assert got["accuracy"] == pytest.approx(correct / len(ex))
    assert got["n"] == len(ex)


def test_finetuning_lowers_id_loss(env):
    from coft_utils.chapters import finetune, finetune_eval, finetune_train
    from coft_utils.foundation import tasks
    model, tok = _tiny(env)
    cfg = finetune.resolve("03_fixed_lr_finetuning", "smoke", {"steps": 25, "batch_size": 8})
    ex = tasks.splits("gsm8k", 32, 8, 8)["train"]
    before = finetune_eval.answer_perplexity(model, tok, ex, max_len=64)["answer_nll"]
    log = finetune_train.train(model, tok, "gsm8k", ex, cfg, lr=1e-2, seed=0)
    after = finetune_eval.answer_perplexity(model, tok, ex, max_len=64)["answer_nll"]
    assert log["steps"] == 25
    assert after < before - 0.3, (before, after)
    assert not any(p.name.startswith("checkpoint") for p in Path(env["root"]).rglob("checkpoint-*"))


def test_ood_same_tokens_before_and_after(env):
    from coft_utils.foundation import evaluate, models, results
    from coft_utils.chapters import finetune
    cfg = finetune.resolve("03_fixed_lr_finetuning", "smoke",
                           {"series": env["series_json"], "tasks": ["sst2"], "lrs": [1e-2],
                            "checkpoints": ["64k"], "steps": 4, "experiment": "ft_ood", "seeds": 1})
    series = finetune.load_series(cfg)
    df = finetune.sweep(series, cfg)
    assert len(df) == 1
    r = df.iloc[0]
    ck = series.checkpoints[0]
    tok = models.load_tokenizer(ck)
    blocks = finetune.ood_blocks(tok, cfg)
    assert blocks.shape == (cfg.ood_blocks, cfg.ood_seq_len)
    assert r.ood_tokens_sha_before == r.ood_tokens_sha_after == finetune.blocks_sha(blocks)
    base = evaluate.perplexity(models.load_model(ck), blocks)
    assert r.ood_ppl_before == pytest.approx(base["ppl"], rel=1e-9)
    assert r.ood_ppl_after != r.ood_ppl_before
    assert r.ood_delta == pytest.approx(r.ood_ppl_after - r.ood_ppl_before)
    assert r.weights_dir is None  # keep_weights off: nothing saved
    assert not (results.runs_dir() / "smoke" / "ft_ood" / "weights").exists()


# --------------------------------------------------------------------------- resume
def _launch(runs: Path, overrides: dict, env_root: Path):
    e = dict(os.environ, COFT_RUNS_DIR=str(runs), COFT_CACHE_DIR=str(env_root / "cache"),
             HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [sys.executable, "-m", "coft_utils.chapters.finetune", "--chapter", "04_lr_sweep", "--profile", "smoke",
           "-o", json.dumps(overrides)]
    return subprocess.Popen(cmd, cwd=REPO, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _records(d: Path):
    out = {}
    for p in sorted(d.glob("*.json")):
        r = json.loads(p.read_text())
        m = {k: v for k, v in r["metrics"].items() if not k.endswith("wall_s")}
        out[p.name] = (r["unit"], m)
    return out


def test_killed_sweep_resumes_to_same_records(env):
    ov = {"series": env["series_json"], "tasks": ["gsm8k"], "lrs": [1e-3, 1e-2], "seeds": 1,
          "checkpoints": ["2k", "8k", "32k", "64k"], "steps": 8, "experiment": "ft_resume"}
    n_units = 8
    a, b = env["root"] / "runs_killed", env["root"] / "runs_full"
    rec_dir = a / "smoke" / "ft_resume"
    p = _launch(a, ov, env["root"])
    t0 = time.time()
    while time.time() - t0 < 90 and p.poll() is None:
        if len(list(rec_dir.glob("*.json"))) >= 2:
            break
        time.sleep(0.02)
    assert p.poll() is None, "the sweep ended before it could be killed: " + p.stderr.read().decode()[-2000:]
    p.send_signal(signal.SIGKILL)
    p.wait()
    n_killed = len(list(rec_dir.glob("*.json")))
    assert 2 <= n_killed < n_units
    for runs in (a, b):  # resume the killed one; run the other uninterrupted
        q = _launch(runs, ov, env["root"])
        _, err = q.communicate(timeout=180)
        assert q.returncode == 0, err.decode()[-2000:]
    ra, rb = _records(rec_dir), _records(b / "smoke" / "ft_resume")
    assert len(ra) == len(rb) == n_units
    assert ra.keys() == rb.keys()
    for k in ra:
        ua, ma = ra[k]
        ub, mb = rb[k]
        assert ua == ub
        assert ma.keys() == mb.keys()
        for m in ma:
            if isinstance(ma[m], float):
                assert ma[m] == pytest.approx(mb[m], rel=1e-4, abs=1e-6), (k, m)
            else:
                assert ma[m] == mb[m], (k, m)
    assert not list(rec_dir.glob(".*tmp*"))  # no half-written record left behind


# --------------------------------------------------------------------------- analysis
def test_analysis_on_synthetic_records():
    import pandas as pd
    from coft_utils.chapters import finetune_report as report
    rng = np.random.default_rng(0)
    rows = []
    toks = [1e6, 2e6, 4e6, 8e6]
    for lr, shift in ((1e-3, 0), (1e-2, 1)):
        for i, t in enumerate(toks):
            for seed in range(3):
                before = 100 - 30 * i
                delta = (1 + i) ** 2 * (1 + 4 * shift) * (1 + 0.01 * rng.standard_normal())
                rows.append(dict(task="x", checkpoint=f"c{i}", tokens=t, lr=lr, seed=seed, ood_ppl_before=before,
                                 ood_ppl_after=before + delta, ood_delta=delta, ood_loss_before=np.log(before),
                                 ood_loss_after=np.log(before + delta),
                                 val_id_ppl=5 - i * 0.1 + (0.5 if (lr == 1e-2) == (i < 2) else 0) + 0.01 * seed,
                                 test_id_ppl=5.0, base_test_id_ppl=9.0, val_accuracy=0.5))
    df = pd.DataFrame(rows)
    inf = report.inflection_table(df).set_index("lr")
    assert inf.delta_monotone.all() and (inf.n_seeds == 3).all()
    assert inf.loc[1e-2, "interior_min"] and inf.loc[1e-2, "argmin_after"] == "c2"
    assert not inf.loc[1e-3, "interior_min"] and inf.loc[1e-3, "argmin_after"] == "c3"
    best = report.best_lr(df)
    assert best.lr.tolist() == [1e-3, 1e-3, 1e-2, 1e-2]
    assert best.wins_chosen.tolist() == ["3/3"] * 4
    reg = report.lr_regime(best, [1e-3, 1e-2])
    assert reg["x"]["regime"] == "increasing"
    reg2 = report.lr_regime(best.assign(lr=[1e-2, 1e-2, 1e-2, 1e-2]), [1e-3, 1e-2])
    assert reg2["x"]["regime"] == "constant"
    assert list(report.pareto_front([1, 2, 3, 2], [3, 2, 1, 3])) == [0, 1, 2]
    v = report.fixed_lr_verdict(df)["x"]
    # forgetting at lr 1e-3 rises steeply and convexly over only 4 checkpoints of one pre-training run:
    # its curvature about the line is counted as checkpoint-level scatter, so the rise may stay within noise
    g3 = v["grow"][1e-3]
    assert g3.label in ("observed", "within noise") and g3.statistic > 0 and g3.n_replicates == 3
    assert "one pre-training run" in g3.design and g3.detail["monotone"]
    assert v["u"][1e-2].label == "observed" and v["u"][1e-3].label == "within noise"
    assert v["rows"]["earlier_larger_lr"].detail["argmin"] == [3, 2]
    # a diverged seed makes its learning rate inconclusive, never a rise or an interior minimum
    df.loc[(df.lr == 1e-2) & (df.checkpoint == "c3") & (df.seed == 0), ["ood_ppl_after", "ood_loss_after"]] = np.inf
    v = report.fixed_lr_verdict(df)["x"]
    assert v["u"][1e-2].label == "inconclusive" and v["grow"][1e-2].label == "inconclusive"

    # the notebooks' tables
    grid = report.val_grid(df, "x")
    assert list(grid.index.get_level_values("checkpoint")) == ["c0", "c1", "c2", "c3"]
    assert list(grid.columns) == [1e-3, 1e-2]
    assert grid.loc[("c0", 1e6), 1e-3] == pytest.approx(df[(df.lr == 1e-3) & (df.checkpoint == "c0")].val_id_ppl.mean())
    bt = report.best_table(best.assign(test_id_ppl_ci=0.0, ood_ppl_after_ci=0.0))
    assert bt.index.names == ["task", "checkpoint"] and "wins_chosen" in bt
    ut = report.unit_table(df.assign(train_loss_first=1.0, train_loss_last=0.5, test_accuracy=np.nan))
    assert len(ut) == len(df) and ut.index.names == ["task", "lr", "checkpoint", "seed"]


def test_experiment_does_not_import_the_report():
    """The experiment side (finetune, finetune_eval, finetune_train) never imports the report side."""
    import ast
    report_side = {"finetune_report", "finetune_analysis", "finetune_plots"}
    for name in ("finetune", "finetune_eval", "finetune_train"):
        tree = ast.parse((REPO / "coft_utils" / "chapters" / f"{name}.py").read_text())
        mods = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom):
                mods.add((n.module or "").split(".")[-1])
                mods.update(a.name for a in n.names)
            elif isinstance(n, ast.Import):
                mods.update(a.name.split(".")[-1] for a in n.names)
        assert not (mods & report_side), (name, mods & report_side)


def test_steps_text_says_steps_epochs_and_batch():
    """The page states the steps actually run and the passes over the data (issue 15: HumanEval's
    131 training problems at 2,000 x 64 would be ~977 epochs)."""
    import pandas as pd
    from coft_utils.chapters import finetune, finetune_report as report
    cfg = finetune.resolve("03_fixed_lr_finetuning", "smoke")  # gsm8k + sst2, 6 steps of 8, n_train 64
    t = report.steps_text(pd.DataFrame([{"task": "gsm8k", "steps": 6}, {"task": "sst2", "steps": 6}]), cfg)
    assert "**gsm8k**: 6 optimizer steps of 8 examples = 0.8 passes over its 64 training examples" in t
    assert "capped" not in t and "accumulation" not in t
    cap = finetune.resolve("03_fixed_lr_finetuning", "smoke", {"tasks": ["humaneval"], "max_epochs": 1.0,
                                                               "per_device_batch_size": 4})
    row = dict(task="humaneval", steps=8, steps_planned=8, n_train_used=64, grad_accum=2, per_device_batch_size=4,
               world_size=1, precision_used="fp32", gradient_checkpointing=False)
    t = report.steps_text(pd.DataFrame([row]), cap)
    assert "8 optimizer steps of 8 examples = 1.0 passes over its 64 training examples" in t
    assert "capped by `max_epochs` = 1; `steps` asks for 6" not in t  # 8 > 6 steps: not a cap
    row.update(steps=1, steps_planned=1, n_train_used=8)
    t = report.steps_text(pd.DataFrame([row]), cap)
    assert "capped by `max_epochs` = 1; `steps` asks for 6" in t and "4 per device x 2 accumulation x 1 process" in t


def test_tuned_lr_is_cross_fitted_never_chosen_on_the_seed_it_scores():
    """Seed 0 alone prefers lr 0.1 at every checkpoint, seeds 1 and 2 prefer lr 0.01: seed 0 is
    scored at 0.01 (chosen by the others) and seeds 1, 2 at 0.01; a diverged run gives NaN."""
    import pandas as pd
    from coft_utils.chapters import finetune_analysis as fa
    rows = []
    for k, tok in enumerate((1e6, 2e6, 4e6)):
        for lr in (0.01, 0.1):
            for s in range(3):
                good = (lr == 0.1) if s == 0 else (lr == 0.01)
                rows.append({"task": "t", "lr": lr, "checkpoint": f"c{k}", "tokens": tok, "seed": s,
                             "val_id_ppl": (11.0 if s == 0 else 10.0) if good else 12.0, "ood_ppl_after": 100 * lr + s + k})
    df = pd.DataFrame(rows)
    tok, labels, Y, chosen = fa.crossfit_replicates(df, "t")
    assert labels == ["c0", "c1", "c2"] and list(tok) == [1e6, 2e6, 4e6]
    assert (chosen == 0.01).all()
    assert Y[0].tolist() == [1.0 + 0 + k for k in range(3)] and Y[1].tolist() == [1.0 + 1 + k for k in range(3)]
    df.loc[(df.seed == 1) & (df.lr == 0.01) & (df.checkpoint == "c2"), "ood_ppl_after"] = np.nan
    assert np.isnan(fa.crossfit_replicates(df, "t")[2][1, 2])
