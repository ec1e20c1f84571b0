"""The controlled pre-training suite (coft_utils.chapters.pretrain and its pretrain_* modules) at smoke scale or smaller.

Determinism, SIGKILL-and-resume equality, a 2-process (gloo, DDP through accelerate) run that
matches one process with the same global batch, 2 worker processes that train the same suite as
one, the LR scan (its rule, and the suite continuing the scan's runs bit for bit), cache reuse,
config validation, preset targets.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

from coft_utils.foundation import models, profiles  # noqa: E402
from coft_utils.chapters import (pretrain, pretrain_data, pretrain_plan, pretrain_report,  # noqa: E402
                                 pretrain_scan, pretrain_train)

REPO = Path(__file__).resolve().parents[1]
# 2 budgets of 4 and 8 steps (8 blocks of 64 tokens), no held-out evaluation: seconds.
TINY = {"n_budgets": 2, "val_blocks": 0}


@pytest.fixture(scope="module", autouse=True)
def _env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    old = {k: os.environ.get(k) for k in ("COFT_CACHE_DIR", "COFT_RUNS_DIR", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    os.environ.update(COFT_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _suite(runs: Path, schedule="cosine", seed=0, **over):
    os.environ["COFT_RUNS_DIR"] = str(runs)
    return pretrain.get_suite("smoke", schedule, seed=seed, overrides={**TINY, **over}, progress=False)


def _weights(ckpt) -> dict:
    return load_file(str(Path(ckpt.path) / "model.safetensors"))


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _env_sub(runs: Path) -> dict:
    return {**os.environ, "COFT_RUNS_DIR": str(runs), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_series_contract_and_determinism(tmp_path):
    s1 = _suite(tmp_path / "a")
    assert [c.label for c in s1] == ["2k", "4k"] and [c.tokens for c in s1] == [2048.0, 4096.0]
    assert s1.meta["init_std"] == 0.02 and s1.meta["config"]["schedule"] == "cosine"
    m = models.load_model(s1.checkpoints[-1])
    tok = models.load_tokenizer(s1.checkpoints[-1])
    assert type(m).__name__ == "OlmoForCausalLM" and len(tok) == 512
    s2 = _suite(tmp_path / "b")
    s3 = _suite(tmp_path / "c", seed=1)
    for a, b, c in zip(s1, s2, s3):
        assert _equal(_weights(a), _weights(b)), "same seed must give the same weights"
        assert not _equal(_weights(a), _weights(c)), "another seed must give other weights"
    df = pretrain_report.suite_records(s1)
    assert list(df["tokens"]) == [2048, 4096] and (df["tokens_per_param"] > 0).all()


def test_schedules_share_the_trunk_and_decay(tmp_path):
    const = _suite(tmp_path, "constant", n_budgets=3)
    wsd = _suite(tmp_path, "wsd", n_budgets=3)
    assert [c.label for c in wsd] == [c.label for c in const] == ["2k", "4k", "8k"]
    # wsd's branches decay off the constant run: same tokens, different weights
    for a, b in zip(const, wsd):
        assert a.tokens == b.tokens and not _equal(_weights(a), _weights(b))
    cfg = pretrain.resolve("smoke", "wsd", overrides={**TINY, "n_budgets": 3})
    assert pretrain_plan.lr_multiplier(15, cfg, "wsd_decay", 16, 13) > 0
    assert pretrain_plan.lr_multiplier(16, cfg, "wsd_decay", 16, 13) == 0
    assert 1 < pretrain_plan.cost_ratio(pretrain.resolve("cpu")) < 2


def test_short_anneal_shares_the_wsd_trunk(tmp_path, monkeypatch):
    """wsd_short: the same trunk (not trained again), its own shorter anneal per budget; where the
    two decay lengths coincide (1 step at the smallest smoke budget: a decay is at least one step)
    the checkpoint is bit for bit
    the wsd one (the branch replays the trunk from the shared state), elsewhere it differs."""
    over = {"n_budgets": 3}
    wsd = _suite(tmp_path, "wsd", **over)
    trunk = tmp_path / "suite" / wsd.meta["key"] / "state" / "trunk.done.json"
    stamp = trunk.stat().st_mtime_ns
    seen = []
    real = pretrain_train.train_job
    monkeypatch.setattr(pretrain_train, "train_job", lambda cfg, job, *a, **k: seen.append(job.name) or real(cfg, job, *a, **k))
    short = _suite(tmp_path, "wsd_short", **over)
    assert short.meta["key"] == wsd.meta["key"] and trunk.stat().st_mtime_ns == stamp
    assert seen and all(n.startswith("wsd_short") for n in seen), seen
    cfg = pretrain.resolve("smoke", "wsd_short", overrides={**TINY, **over})
    jobs = {j.name: j for j in pretrain_plan.plan(cfg)}
    long = {j.saves[0][1]: j for j in pretrain_plan.plan(pretrain.resolve("smoke", "wsd", overrides={**TINY, **over}))
            if j.name != "trunk"}
    for j in jobs.values():
        if j.name == "trunk":
            continue
        lab = j.saves[0][1]
        assert j.parent == long[lab].parent and j.start == long[lab].start and j.decay_start >= long[lab].decay_start
    assert [c.tokens for c in short] == [c.tokens for c in wsd]
    same = [j.decay_start == long[j.saves[0][1]].decay_start for j in jobs.values() if j.name != "trunk"]
    assert same == [True, False, False]
    for s, a, b in zip(same, short, wsd):
        assert _equal(_weights(a), _weights(b)) == s, a.label
    assert short.meta["peak_lr"] == wsd.meta["peak_lr"] and short.meta["schedule"] == "wsd_short"
    with pytest.raises(profiles.ProfileError, match="decay_frac_short"):
        pretrain.resolve("smoke", "wsd_short", overrides={"decay_frac_short": 0.3})
    assert pretrain.resolve("cpu").decay_frac_short == pretrain.resolve("smoke").decay_frac_short == 0.05


def test_cache_reuse_trains_nothing(tmp_path, monkeypatch):
    s1 = _suite(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}

    def boom(*a, **k):
        raise AssertionError("a finished suite was trained again")
    monkeypatch.setattr(pretrain_train, "train_job", boom)
    s2 = _suite(tmp_path)
    assert s2.to_dict() == s1.to_dict()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps
    # another config is another cache key: it would train
    with pytest.raises(AssertionError, match="trained again"):
        _suite(tmp_path, lr=1e-3)


def test_state_files_load_safely(tmp_path):
    """State files hold tensors and plain values only (weights_only=True, no allow-list); a crafted
    pickle in a state folder is refused, never executed."""
    import random
    import numpy as np
    st = {"model": {}, "optimizer": {}, "step": 3, "rng": pretrain_train._rng_state()}
    pretrain_train._save_state(tmp_path / "ok.pt", st)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(tmp_path / "ok.pt")) == []
    ref = (np.random.rand(4).tolist(), random.random(), torch.rand(3))
    pretrain_train._set_rng_state(pretrain_train._load_state(tmp_path / "ok.pt")["rng"])
    again = (np.random.rand(4).tolist(), random.random(), torch.rand(3))
    assert ref[:2] == again[:2] and torch.equal(ref[2], again[2])
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(RuntimeError, match="refusing to load"):
        pretrain_train._load_state(tmp_path / "evil.pt")
    assert not marker.exists()


def test_sigkill_resume_equals_uninterrupted(tmp_path):
    over = {**TINY, "n_budgets": 1, "min_budget": 40 * 512, "save_every": 5}
    ref = _suite(tmp_path / "ref", **over)
    runs = tmp_path / "killed"
    cmd = [sys.executable, "-m", "coft_utils.chapters.pretrain_launch", "--profile", "smoke", "--no-progress",
           "--overrides", json.dumps(over)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env_sub(runs), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    state = None
    while time.time() < deadline and proc.poll() is None:
        found = list(runs.glob("suite/*/state/cosine-*.pt"))
        if found:
            state = found[0]
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert state is not None and proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    assert not list(runs.glob("suite/*/cosine/series.json")), "the killed run must not have finished"
    killed_at = torch.load(state, weights_only=True)["step"]
    assert 0 < killed_at < 40
    out = subprocess.run(cmd, cwd=REPO, env=_env_sub(runs), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert _equal(load_file(str(Path(res["checkpoints"][-1]) / "model.safetensors")), _weights(ref.checkpoints[-1]))


def test_two_processes_match_one(tmp_path):
    over = {**TINY, "n_budgets": 1, "min_budget": 6 * 512}
    one = _suite(tmp_path / "one", **over)
    runs = tmp_path / "two"
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "coft_utils.chapters.pretrain_launch", "--profile", "smoke", "--no-progress", "--overrides", json.dumps(over)]
    out = subprocess.run(cmd, cwd=REPO, env=_env_sub(runs), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])
    two = load_file(str(Path(res["checkpoints"][-1]) / "model.safetensors"))
    ref = _weights(one.checkpoints[-1])
    assert two.keys() == ref.keys()
    worst = max(float((two[k] - ref[k]).abs().max()) for k in ref)
    assert worst < 1e-5, worst
    moved = max(float((ref[k] - v).abs().max()) for k, v in
                models.build_model(models.load_model(one.checkpoints[-1]).config, seed=0).state_dict().items()
                if k in ref)
    assert moved > 1e-3, "training must have changed the weights"


def _same_suites(a: dict, b: dict) -> None:
    for sched in a:
        ra, rb = pretrain.load_records(a[sched]), pretrain.load_records(b[sched])
        assert [r["label"] for r in ra] == [r["label"] for r in rb]
        for x, y in zip(ra, rb):
            assert abs(x["val_ppl"] - y["val_ppl"]) <= 1e-6 * x["val_ppl"], (sched, x["label"])
        for x, y in zip(a[sched], b[sched]):
            assert _equal(_weights(x), _weights(y)), (sched, x.label)


def test_two_workers_train_the_same_suite_as_one(tmp_path):
    over = {**TINY, "n_budgets": 3, "val_blocks": 4}
    one = {s: _suite(tmp_path / "one", s, **over) for s in pretrain.SCHEDULES}  # smoke: workers=1
    assert pretrain.resolve("smoke").workers == 1
    os.environ["COFT_RUNS_DIR"] = str(tmp_path / "two")
    two = pretrain.all_suites("smoke", overrides={**over, "workers": 2}, progress=False)
    _same_suites(one, two)
    # `workers` changes no result, so it is not part of the cache key
    assert all(one[s].meta["key"] == two[s].meta["key"] for s in one)
    assert one["wsd"].meta["key"] == one["constant"].meta["key"], "wsd and constant share the trunk"


def test_branches_join_the_trunks_round_and_wait_for_their_state():
    """With 2+ workers a wsd branch needs not wait for the next round: it joins the trunk's, after
    every job that can start at once, ordered by its branch point, naming the job it waits for."""
    cfg = pretrain._train_cfg(pretrain.resolve("smoke", "wsd", overrides={**TINY, "n_budgets": 3}))
    units = [pretrain_train.Unit(cfg, "/r", j) for j in pretrain_plan.plan(cfg)]
    ready = [u for u in units if u.job.parent is None]
    later = pretrain._made_this_round(ready, units)
    assert [u.job.name for u in ready] == ["trunk"] and {u.after for u in later} == {"trunk"}
    steps = [int(u.job.parent.split("@")[1]) for u in later]
    assert len(later) == 3 and steps == sorted(steps)


def test_lr_scan_and_the_suite_share_their_runs(tmp_path):
    os.environ["COFT_RUNS_DIR"] = str(tmp_path / "scan")
    over = {**TINY, "n_budgets": 3, "val_blocks": 4}
    scan = pretrain_scan.lr_scan("smoke", lrs=[3e-3, 1e-2], budgets=2, overrides=over, progress=False)
    assert list(scan.columns) == ["schedule", "lr", "label", "tokens", "val_ppl", "val_loss"]
    assert len(scan) == 3 * 2 * 2 and set(scan["label"]) == {"2k", "4k"}
    assert (scan["val_ppl"] > 1).all()
    chosen = pretrain_scan.choose_lr(scan)
    for sched, g in scan.groupby("schedule"):  # the rule: lowest mean validation log-ppl
        assert chosen[sched] == g.groupby("lr")["val_loss"].mean().idxmin()
    # the suite at a scanned LR (per schedule) reuses the scan's runs and continues its trunk
    lrs = {"lr_cosine": 1e-2, "lr_wsd": 1e-2, "lr_constant": 1e-2}
    suites = pretrain.all_suites("smoke", overrides={**over, **lrs}, progress=False)
    steps = pretrain_plan.budget_steps(pretrain.resolve("smoke", overrides=over))
    assert suites["wsd"].meta["jobs"]["trunk"]["resumed_at"] == steps[1]
    assert suites["cosine"].meta["peak_lr"] == 1e-2
    rec = {(r["schedule"], r["label"]): r["val_ppl"] for s in suites.values() for r in pretrain.load_records(s)}
    for r in scan[scan["lr"] == 1e-2].itertuples():
        assert rec[(r.schedule, r.label)] == r.val_ppl
    # ... and ends exactly where a suite trained from scratch at that LR ends
    fresh = {s: _suite(tmp_path / "fresh", s, **over, lr=1e-2) for s in pretrain.SCHEDULES}
    _same_suites(fresh, suites)
    assert all(fresh[s].meta["key"] == suites[s].meta["key"] for s in fresh), "lr_<schedule> = lr: same key"


def test_choose_lr_rule():
    import pandas as pd
    rows = [("cosine", 1e-3, 5.0), ("cosine", 1e-3, 4.0), ("cosine", 2e-3, 4.4), ("cosine", 2e-3, 4.4),
            ("wsd", 1e-3, 4.0), ("wsd", 2e-3, 4.0), ("wsd", 4e-3, float("inf")), ("wsd", 4e-3, 1.0)]
    df = pd.DataFrame(rows, columns=["schedule", "lr", "val_loss"])
    assert pretrain_scan.choose_lr(df) == {"cosine": 2e-3, "wsd": 1e-3}  # mean; tie -> smaller; inf never wins


def test_per_schedule_peak_lr_and_folders():
    cfg = pretrain.resolve("smoke", "wsd", overrides={"lr_wsd": 1e-2})
    assert cfg.peak_lr() == 1e-2 and cfg.peak_lr("cosine") == cfg.lr == 3e-3
    tok = pretrain_data.get_tokenizer(cfg)
    same = pretrain.resolve("smoke", "wsd", overrides={"lr": 1e-2})
    assert pretrain.suite_key(cfg, tok) == pretrain.suite_key(same, tok)
    const = pretrain.resolve("smoke", "constant", overrides={"lr_wsd": 1e-2})
    assert pretrain.suite_key(const, tok) != pretrain.suite_key(cfg, tok), "other LR, own trunk"
    scan_only = pretrain.resolve("smoke", overrides={"lr_scan_lrs": [1e-3], "workers": 3, "threads": 2})
    assert pretrain.suite_key(scan_only, tok) == pretrain.suite_key(pretrain.resolve("smoke"), tok)


@pytest.mark.parametrize("over, word", [
    ({"workers": 0}, "workers"), ({"workers": 1.5}, "workers"), ({"lr_cosine": -1.0}, "lr_cosine"),
    ({"lr_scan_lrs": [0.0]}, "lr_scan_lrs"), ({"lr_scan_lrs": [1e-3, 1e-3]}, "lr_scan_lrs"),
    ({"lr_scan_budgets": 31}, "lr_scan_budgets"), ({"lr_scan_budgets": 0}, "lr_scan_budgets"),
    ({"schedule": "linear"}, "schedule"), ({"lr": -1.0}, "lr"), ({"lr": 0.0}, "lr"),
    ({"warmup_steps": 4}, "warmup_steps"), ({"min_budget": 10.0}, "min_budget"),
    ({"corpus": "c4"}, "corpus"), ({"model": "olmo-7b"}, "model"), ({"vocab_size": 100}, "vocab_size"),
    ({"decay_frac": 0.0}, "decay_frac"), ({"n_budgets": 0}, "n_budgets"), ({"nope": 1}, "nope"),
])
def test_bad_config_values(over, word):
    with pytest.raises(profiles.ProfileError, match=word):
        profiles.resolve("00_pretraining_suite", "smoke", over)


def test_cosine_may_stop_earlier_than_the_trunk(tmp_path):
    """cosine_budgets caps the cosine series (a run per budget) while the shared-trunk schedules go
    on; every schedule reads one token file; a cap above n_budgets is a named error."""
    over = {**TINY, "n_budgets": 3, "cosine_budgets": 2}
    cos, wsd = (pretrain.resolve("smoke", s, overrides=over) for s in ("cosine", "wsd"))
    assert len(pretrain_plan.budget_labels(cos)) == 2 and len(pretrain_plan.budget_labels(wsd)) == 3
    assert [j.name for j in pretrain_plan.plan(cos)] == [f"cosine-{x}" for x in pretrain_plan.budget_labels(cos)]
    assert pretrain_data._tokens_needed(cos) == pretrain_data._tokens_needed(wsd)
    assert profiles.series_info("suite", "smoke", "cosine").labels == tuple(
        pretrain_plan.budget_labels(pretrain.resolve("smoke", "cosine")))
    s = _suite(tmp_path, "cosine", n_budgets=3, cosine_budgets=2)
    assert [c.label for c in s] == pretrain_plan.budget_labels(cos)
    # short_budgets caps wsd_short's branches only: the trunk is the one wsd and constant share
    short = pretrain.resolve("smoke", "wsd_short", overrides={**over, "short_budgets": 2})
    jobs = pretrain_plan.plan(short)
    assert jobs[0] == pretrain_plan.plan(wsd)[0] and len(jobs) == 1 + 2
    assert pretrain_plan.budget_labels(short) == pretrain_plan.budget_labels(wsd)[:2]
    with pytest.raises(profiles.ProfileError, match="cosine_budgets"):
        pretrain.resolve("smoke", overrides={"n_budgets": 2, "cosine_budgets": 3})
    with pytest.raises(profiles.ProfileError, match="replicate_budgets"):
        pretrain.resolve("smoke", overrides={"n_budgets": 2, "replicate_budgets": 3})


def test_between_runs_uses_the_checkpoints_every_run_has(tmp_path):
    """Extra pre-training runs that stop earlier (replicate_budgets) are compared on the common
    checkpoints only: no NaN column, the deeper run's extra checkpoint left out."""
    runs = {0: _suite(tmp_path, "constant", n_budgets=3, val_blocks=4),
            1: _suite(tmp_path, "constant", seed=1, n_budgets=2, val_blocks=4)}
    tokens, labels, Y, seeds = pretrain_report.run_matrix(runs)
    assert labels == [c.label for c in runs[1]] and Y.shape == (2, 2) and seeds == [0, 1]
    df = pretrain_report.between_runs(runs)
    assert df[["tokens_per_param", "val_ppl_mean", "val_ppl_sd"]].notna().all().all() and list(df["label"]) == labels


def test_wsd_decay_inside_warmup_is_rejected():
    with pytest.raises(profiles.ProfileError, match="decay_frac"):
        pretrain.resolve("smoke", "wsd", overrides={"decay_frac": 0.9})


def test_presets_meet_the_issue_targets():
    for prof in ("smoke", "cpu", "gpu", "paper"):
        cfg = pretrain.resolve(prof)
        steps = pretrain_plan.budget_steps(cfg)
        assert cfg.n_budgets >= 6 and all(b == 2 * a for a, b in zip(steps, steps[1:]))
    cpu, gpu, paper = (pretrain.resolve(p) for p in ("cpu", "gpu", "paper"))
    top = lambda c: pretrain_plan.budget_steps(c)[-1] * c.tokens_per_step()
    assert top(cpu) >= 8e6 and top(cpu) / pretrain_plan.n_params(cpu) >= 100
    # issue 25: the shared-trunk series the fine-tuning chapters use reach >= 500 tokens/param at cpu
    for sched in ("wsd", "constant"):
        deep = pretrain.resolve("cpu", sched)
        assert top(deep) / pretrain_plan.n_params(deep) >= 500
    assert top(gpu) / pretrain_plan.n_params(gpu) >= 1000 and gpu.mixed_precision == "bf16"
    assert paper.model == "olmo-30m" and paper.corpus == "c4" and paper.schedule == "cosine"
    assert 3.9e9 < paper.min_budget <= top(paper) / 32 * 1.01 and top(paper) >= 128e9
    assert cpu.workers == 2 and pretrain.resolve("smoke").workers == 1
    # the cpu book does not rerun the scan; the LRs it tried are kept beside the preset it chose
    assert pretrain.SCANNED_LRS["cpu"] and cpu.lr_scan_budgets <= 3 and not gpu.lr_scan_lrs
    assert {cpu.peak_lr(s) for s in pretrain.SCHEDULES} <= set(pretrain.SCANNED_LRS["cpu"])
    m = models.build_model(models.olmo_config(cpu.model, cpu.vocab_size, cpu.seq_len), 0)
    assert models.count_params(m) == pretrain_plan.n_params(cpu)


def test_paper_profile_errors_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    cfg = pretrain.resolve("paper")
    from coft_utils.foundation import data
    with pytest.raises(data.DataError, match="offline"):
        next(pretrain_data._corpus_texts(cfg))
