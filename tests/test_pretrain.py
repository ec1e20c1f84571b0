"""The controlled pre-training suite (coft_utils.pretrain) at smoke scale or smaller.

Determinism, SIGKILL-and-resume equality, a 2-process (gloo, DDP through accelerate) run that
matches one process with the same global batch, cache reuse, config validation, preset targets.
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

from coft_utils import models, pretrain, profiles  # noqa: E402

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
    df = pretrain.suite_records(s1)
    assert list(df["tokens"]) == [2048, 4096] and (df["tokens_per_param"] > 0).all()


def test_schedules_share_the_trunk_and_decay(tmp_path):
    const = _suite(tmp_path, "constant", n_budgets=3)
    wsd = _suite(tmp_path, "wsd", n_budgets=3)
    assert [c.label for c in wsd] == [c.label for c in const] == ["2k", "4k", "8k"]
    # wsd's branches decay off the constant run: same tokens, different weights
    for a, b in zip(const, wsd):
        assert a.tokens == b.tokens and not _equal(_weights(a), _weights(b))
    cfg = pretrain.resolve("smoke", "wsd", overrides={**TINY, "n_budgets": 3})
    assert pretrain.lr_multiplier(15, cfg, "wsd_decay", 16, 13) > 0
    assert pretrain.lr_multiplier(16, cfg, "wsd_decay", 16, 13) == 0
    assert 1 < pretrain.cost_ratio(pretrain.resolve("cpu")) < 2


def test_cache_reuse_trains_nothing(tmp_path, monkeypatch):
    s1 = _suite(tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}

    def boom(*a, **k):
        raise AssertionError("a finished suite was trained again")
    monkeypatch.setattr(pretrain, "train_job", boom)
    s2 = _suite(tmp_path)
    assert s2.to_dict() == s1.to_dict()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps
    # another config is another cache key: it would train
    with pytest.raises(AssertionError, match="trained again"):
        _suite(tmp_path, lr=1e-3)


def test_sigkill_resume_equals_uninterrupted(tmp_path):
    over = {**TINY, "n_budgets": 1, "min_budget": 40 * 512, "save_every": 5}
    ref = _suite(tmp_path / "ref", **over)
    runs = tmp_path / "killed"
    cmd = [sys.executable, "-m", "coft_utils.pretrain_launch", "--profile", "smoke", "--no-progress",
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
    killed_at = torch.load(state, weights_only=False)["step"]
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
           "-m", "coft_utils.pretrain_launch", "--profile", "smoke", "--no-progress", "--overrides", json.dumps(over)]
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


@pytest.mark.parametrize("over, word", [
    ({"schedule": "linear"}, "schedule"), ({"lr": -1.0}, "lr"), ({"lr": 0.0}, "lr"),
    ({"warmup_steps": 4}, "warmup_steps"), ({"min_budget": 10.0}, "min_budget"),
    ({"corpus": "c4"}, "corpus"), ({"model": "olmo-7b"}, "model"), ({"vocab_size": 100}, "vocab_size"),
    ({"decay_frac": 0.0}, "decay_frac"), ({"n_budgets": 0}, "n_budgets"), ({"nope": 1}, "nope"),
])
def test_bad_config_values(over, word):
    with pytest.raises(profiles.ProfileError, match=word):
        profiles.resolve("00_pretraining_suite", "smoke", over)


def test_wsd_decay_inside_warmup_is_rejected():
    with pytest.raises(profiles.ProfileError, match="decay_frac"):
        pretrain.resolve("smoke", "wsd", overrides={"decay_frac": 0.9})


def test_presets_meet_the_issue_targets():
    for prof in ("smoke", "cpu", "gpu", "paper"):
        cfg = pretrain.resolve(prof)
        steps = pretrain.budget_steps(cfg)
        assert cfg.n_budgets >= 6 and all(b == 2 * a for a, b in zip(steps, steps[1:]))
    cpu, gpu, paper = (pretrain.resolve(p) for p in ("cpu", "gpu", "paper"))
    top = lambda c: pretrain.budget_steps(c)[-1] * c.tokens_per_step()
    assert top(cpu) >= 8e6 and top(cpu) / pretrain.n_params(cpu) >= 100
    assert top(gpu) / pretrain.n_params(gpu) >= 1000 and gpu.mixed_precision == "bf16"
    assert paper.model == "olmo-30m" and paper.corpus == "c4" and paper.schedule == "cosine"
    assert 3.9e9 < paper.min_budget <= top(paper) / 32 * 1.01 and top(paper) >= 128e9
    m = models.build_model(models.olmo_config(cpu.model, cpu.vocab_size, cpu.seq_len), 0)
    assert models.count_params(m) == pretrain.n_params(cpu)


def test_paper_profile_errors_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    cfg = pretrain.resolve("paper")
    from coft_utils import data
    with pytest.raises(data.DataError, match="offline"):
        next(pretrain._corpus_texts(cfg))
