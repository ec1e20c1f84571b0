"""Chapter 00's PAPER code path, offline, at tiny sizes: C4 from a hub-layout cache, tokenized once.

A local Hugging Face cache (``tests/hubcache.py``) holds ``allenai/c4`` in its real layout
(``en/c4-train.NNNNN-of-01024.json.gz``, ``en/c4-validation.00000-of-00008.json.gz``); with
``HF_HUB_OFFLINE=1`` the paper preset (OLMo on C4, cosine to zero, muP, bf16 where there is a GPU,
a global batch reached by gradient accumulation) runs with only its sizes overridden: the
tokenizer and the token cache are made once (rank 0 writes; "rank 1" waits, never tokenizes,
and maps identical tokens), only the shards the largest budget needs are read, the suite trains
and is saved, and the same under a real 2-process torchrun launch. Also: the muP coordinate check, launch-independent batches, and the paper preset's
recorded values.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

from coft_utils.chapters import pretrain, pretrain_data, pretrain_plan, pretrain_train  # noqa: E402
from coft_utils.foundation import data, models, profiles  # noqa: E402
from tests import hubcache  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_TRAIN_SHARDS = 4
# the paper preset, shrunk: olmo-pico (d_model 32) in muP at base width 16 (m = 2), 2 budgets of
# 4 and 8 steps of 8 x 32 tokens, micro-batches of 4 (2 accumulation steps), 2 validation blocks
TINY_PAPER = {"model": "olmo-pico", "vocab_size": 300, "seq_len": 32, "batch_size": 8, "micro_batch_size": 4,
              "mup_base_width": 16, "min_budget": 1024.0, "n_budgets": 2, "warmup_steps": 1,
              "tokenizer_chars": 10_000, "val_blocks": 2, "save_every": 4, "c4_train_files": N_TRAIN_SHARDS,
              "prepare_timeout": 60.0}


def _shard(docs: list[str]) -> bytes:
    lines = "".join(json.dumps({"text": t, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.org/{i}"}) + "\n"
                    for i, t in enumerate(docs))
    return gzip.compress(lines.encode(), mtime=0)


@pytest.fixture()
def c4_cache(tmp_path, monkeypatch):
    """allenai/c4 'en' shards of real English (Gutenberg text cut into 500-character documents)."""
    text = "".join(data.gutenberg_bodies("validation", max_chars=20_000))
    docs = [text[i:i + 500] for i in range(0, 15_000, 500)]  # 30 documents
    files = {f"en/c4-train.{i:05d}-of-01024.json.gz": _shard(docs[6 * i:6 * i + 6]) for i in range(N_TRAIN_SHARDS)}
    files["en/c4-validation.00000-of-00008.json.gz"] = _shard(docs[24:30])
    cache = tmp_path / "hub"
    hubcache.add_dataset(cache, "allenai/c4", files)
    for k, v in {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                 "COFT_CACHE_DIR": str(tmp_path / "cache"), "COFT_RUNS_DIR": str(tmp_path / "runs")}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("RANK", raising=False)
    return cache


def test_paper_path_offline_tokenize_once_train_save(c4_cache, monkeypatch):
    cfg = pretrain.resolve("paper", overrides=TINY_PAPER)
    assert (cfg.corpus, cfg.schedule, cfg.mixed_precision, cfg.profile) == ("c4", "cosine", "bf16", "paper")
    calls = []
    real = pretrain_data._tokenize
    monkeypatch.setattr(pretrain_data, "_tokenize", lambda *a: (calls.append(threading.current_thread().name),
                                                                real(*a))[1])
    tok = pretrain_data.get_tokenizer(cfg, writer=True)
    # "rank 1" starts first: it waits for rank 0's index and never tokenizes
    got = {}
    r1 = threading.Thread(target=lambda: got.update(blocks=np.array(pretrain_data.token_blocks(cfg, tok, writer=False))),
                          name="rank1")
    r1.start()
    time.sleep(0.3)
    path, index = pretrain_data._paths(cfg, tok)
    assert r1.is_alive() and not index.exists() and not calls, "rank 1 must wait, not tokenize"
    blocks0 = pretrain_data.token_blocks(cfg, tok, writer=True)  # rank 0 (this thread) tokenizes
    r1.join(30)
    assert not r1.is_alive() and calls == ["MainThread"], calls
    assert isinstance(blocks0.base, np.memmap) or isinstance(blocks0, np.memmap)
    assert np.array_equal(got["blocks"], np.asarray(blocks0)), "rank 1 reads the very tokens rank 0 wrote"
    info = pretrain_data.token_index(cfg, tok)
    need = pretrain_plan.budget_steps(cfg)[-1] * cfg.tokens_per_step()
    assert info["tokens"] >= need and info["need"] == need and info["dtype"] == "uint16"
    src = info["source"]
    assert src["hub_id"] == "allenai/c4" and len(src["commit"]) == 40
    k = len(src["files"])
    assert 1 <= k < N_TRAIN_SHARDS, "only the shards the largest budget needs are read"
    assert src["files"] == [f"en/c4-train.{i:05d}-of-01024.json.gz" for i in range(k)]
    assert path.stat().st_size == info["tokens"] * 2
    # a rank whose rank 0 never comes: a clear error after prepare_timeout
    monkeypatch.setenv("RANK", "1")
    other = pretrain.resolve("paper", overrides={**TINY_PAPER, "prepare_timeout": 1.0, "n_budgets": 3})
    with pytest.raises(data.DataError, match=r"rank 1 waited 1 s \(prepare_timeout\)"):
        pretrain_data.prepare(other, tok)
    monkeypatch.delenv("RANK")

    # train the suite (prepared inputs are reused: no second tokenization) and save it
    series = pretrain.run_suite(cfg, progress=False)
    assert calls == ["MainThread"]
    assert [c.label for c in series] == pretrain_plan.budget_labels(cfg) and len(series) == 2
    assert series.meta["mup_base_width"] == 16 and series.meta["config"]["corpus"] == "c4"
    recs = pretrain.load_records(series)
    assert all(np.isfinite(r["val_loss"]) and not r["diverged"] for r in recs)
    assert recs[0]["params"] == pretrain_plan.n_params(cfg) == models.count_params(models.load_model(series.checkpoints[0]))
    m = models.load_model(series.checkpoints[-1])
    assert m.config.tie_word_embeddings is False, "muP: untied output layer"
    # the saved model is a plain OLMo whose output layer carries muP's 1/m readout scale (std sigma/m at init)
    assert float(m.lm_head.weight.detach().std()) < 0.7 * float(m.model.embed_tokens.weight.detach().std())
    again = pretrain.get_suite("paper", overrides=TINY_PAPER, progress=False)
    assert again.meta["key"] == series.meta["key"] and [c.path for c in again] == [c.path for c in series]

    # the same paper path under a real 2-process launch (torchrun, gloo), from an empty token cache:
    # rank 0 makes the tokenizer and the token file, rank 1 waits and maps it; each process takes
    # 4 of the 8 rows of a step (no accumulation) where the single process took 8 in 2 micro-batches
    tmp_path_two = Path(os.environ["COFT_CACHE_DIR"]).parent / "two"
    env = {**os.environ, "COFT_CACHE_DIR": str(tmp_path_two / "cache"), "COFT_RUNS_DIR": str(tmp_path_two / "runs"),
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "coft_utils.chapters.pretrain_launch", "--profile", "paper", "--no-progress",
           "--overrides", json.dumps(TINY_PAPER)]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1, "one process group: only rank 0 reports"
    idx2 = json.loads((tmp_path_two / "cache" / "pretrain" / index.name).read_text())
    assert idx2["writer"]["rank"] == 0 and idx2["tokens"] == info["tokens"] and idx2["source"]["files"] == src["files"]
    assert (tmp_path_two / "cache" / "pretrain" / path.name).read_bytes() == path.read_bytes()
    w2 = load_file(str(Path(lines[0]["checkpoints"][-1]) / "model.safetensors"))
    w1 = load_file(str(Path(series.checkpoints[-1].path) / "model.safetensors"))
    assert w1.keys() == w2.keys() and max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-5


def test_prepare_command_line(c4_cache, capsys):
    over = json.dumps({**TINY_PAPER, "n_budgets": 1})
    assert pretrain_data.main(["prepare", "--profile", "paper", "--overrides", over]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["corpus"] == "c4" and out["tokens"] >= out["need"] > 0 and out["writer"]["rank"] == 0


def _coord(width: int, mup: bool, steps: int = 5, lr: float = 1e-2) -> float:
    """std of the change of the output logits after ``steps`` Adam steps, at ``width``."""
    from transformers import OlmoConfig
    cfg = OlmoConfig(vocab_size=256, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=2,
                     num_attention_heads=width // 16, num_key_value_heads=width // 16, max_position_embeddings=32,
                     tie_word_embeddings=False, pad_token_id=1, bos_token_id=0, eos_token_id=0)
    model = models.build_model(cfg, seed=0, mup_base_width=32 if mup else 0)
    groups = models.mup_param_groups(model, 32, lr, 0.0) if mup else [{"params": list(model.parameters())}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    x = torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(input_ids=x).logits
    for _ in range(steps):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        return float((model(input_ids=x).logits - before).std())


def test_mup_coordinate_check():
    """muP (Yang et al. 2022, Tensor Programs V): the logits' update stays ~width-independent; in the
    standard parametrization it grows ~linearly with width under Adam."""
    torch.set_num_threads(1)
    widths = [32, 64, 128]
    slope = {mup: np.polyfit(np.log(widths), np.log([_coord(w, mup) for w in widths]), 1)[0] for mup in (False, True)}
    assert slope[False] > 0.7, slope
    assert abs(slope[True]) < 0.4, slope
    assert slope[False] - slope[True] > 0.7, slope


def test_mup_groups_and_init():
    cfg = models.olmo_config("olmo-pico", 300, tie=False)
    m = models.build_model(cfg, seed=0, mup_base_width=8)  # m = 32 / 8 = 4
    groups = models.mup_param_groups(m, 8, 1e-3, 0.1)
    by = {g["mup"]: g for g in groups}
    assert by["input"]["lr"] == 1e-3 and by["hidden+output"]["lr"] == pytest.approx(2.5e-4)
    assert by["hidden+output"]["weight_decay"] == pytest.approx(0.4), "lr x wd unchanged, like MuAdam"
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    assert float(m.model.embed_tokens.weight.std()) == pytest.approx(0.02, rel=0.1)
    assert float(m.model.layers[0].mlp.up_proj.weight.std()) == pytest.approx(0.01, rel=0.1)  # 0.02 / sqrt(4)
    assert float(m.lm_head.weight.std()) == pytest.approx(0.005, rel=0.1)  # 0.02 / 4
    with pytest.raises(models.SeriesError, match="tie=False"):
        models.build_model(models.olmo_config("olmo-pico", 300), mup_base_width=8)
    with pytest.raises(models.SeriesError, match="positive integer"):
        models.mup_param_groups(m, 0, 1e-3, 0.1)


def test_global_batch_is_launch_independent(tmp_path, monkeypatch):
    """The same global batch through 1 or 2 micro-batches gives the same weights (to float rounding);
    a batch that does not split over processes x micro-batch is an error before any work."""
    monkeypatch.setenv("COFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RANK", raising=False)
    torch.set_num_threads(1)
    out = {}
    for micro in (0, 4):
        monkeypatch.setenv("COFT_RUNS_DIR", str(tmp_path / f"runs{micro}"))
        s = pretrain.get_suite("smoke", overrides={"n_budgets": 1, "val_blocks": 0, "micro_batch_size": micro},
                               progress=False)
        out[micro] = models.load_model(s.checkpoints[-1]).state_dict()
    assert out[0].keys() == out[4].keys()
    assert all(torch.allclose(out[0][k], out[4][k], atol=1e-5) for k in out[0])
    cfg = pretrain.resolve("smoke", overrides={"micro_batch_size": 2})  # batch 8
    assert pretrain_train.accumulation(cfg, 1) == (8, 2, 4) and pretrain_train.accumulation(cfg, 2) == (4, 2, 2)
    with pytest.raises(profiles.ProfileError, match="processes x micro_batch_size"):
        pretrain_train.accumulation(pretrain.resolve("smoke", overrides={"micro_batch_size": 8}), 2)
    with pytest.raises(profiles.ProfileError, match="divisible by the number of processes"):
        pretrain_train.accumulation(cfg, 3)
    with pytest.raises(profiles.ProfileError, match="micro_batch_size"):
        pretrain.resolve("smoke", overrides={"micro_batch_size": 3})


def test_paper_preset_values():
    p = pretrain.resolve("paper")
    assert (p.model, p.corpus, p.schedule, p.mixed_precision) == ("olmo-30m", "c4", "cosine", "bf16")
    assert p.mup_base_width == models.OLMO_PRESETS["olmo-15m"][1] and p.micro_batch_size and \
        p.batch_size % p.micro_batch_size == 0
    labels = pretrain_plan.budget_labels(p)
    assert len(labels) == 6 and labels[0].startswith("4") and labels[-1].startswith("128"), labels
    for name, target in (("olmo-15m", 15e6), ("olmo-30m", 30e6), ("olmo-90m", 90e6)):
        layers, d, heads, mlp = models.OLMO_PRESETS[name]
        assert d // heads == 64 and 0.9 * target < layers * (4 * d * d + 3 * d * mlp) < 1.1 * target, name
    for name in ("olmo-15m", "olmo-90m"):  # the other two sizes through suite_model / model
        assert pretrain.resolve("paper", overrides={"model": name}).model == name
    # the paper batch splits over 1, 2, 4 or 8 GPUs (accelerate_ddp.yaml: 8) without changing
    assert [pretrain_train.accumulation(p, w) for w in (1, 8)] == [(256, 32, 8), (32, 32, 1)]


def test_smoke_and_cpu_suites_keep_their_keys(tmp_path, monkeypatch):
    """The paper-path fields (muP, micro-batches, C4 shards, prepare timeout) are off at smoke and
    cpu and left out of the key there: those suites keep the keys (and cached folders) they had
    before (measured on the code before this change). Bump these only on purpose (CODE_VERSION).
    The cpu keys changed once on purpose: issue 25 took the cpu suite to 32M tokens (n_budgets 8,
    cosine_budgets 6), measured on the code of that change."""
    monkeypatch.setenv("COFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RANK", raising=False)
    want = {("smoke", "cosine"): "e0c2eb43c4271162", ("cpu", "cosine"): "22b0b557c23de34a",
            ("cpu", "wsd"): "87f1da39928bd634"}
    for (prof, sched), key in want.items():
        cfg = pretrain.resolve(prof, sched)
        assert (cfg.mup_base_width, cfg.micro_batch_size) == (0, 0)
        assert pretrain.suite_key(cfg, pretrain_data.get_tokenizer(cfg)) == key, (prof, sched)
