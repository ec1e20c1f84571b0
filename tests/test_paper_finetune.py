"""The paper code path of chapters 02, 03 and 04, run offline at tiny sizes (issue 15, deliverable 9).

A local Hugging Face cache laid out like the hub (``tests/hubcache.py``) holds every paper data set
in its repository's real layout (``tests/hubcache_data.add_paper_datasets``: allenai/c4 shards,
Salesforce/wikitext, stanfordnlp/sst2, openai/openai_humaneval, ...) and tiny OLMo weights under
the REAL repository id ``allenai/OLMo-1B-hf`` at revision names read from
``coft_utils.foundation.series.SERIES["olmo-1b"]``. With ``HF_HUB_OFFLINE=1``,
``HF_HUB_CACHE=<tmp>`` and ``COFT_DATA_DIR`` pointing at an EMPTY folder (so any read of
``../shared/data`` fails), the ``paper`` presets run with only sizes overridden:

* (a) the paper's design: ``series="suite"`` (chapter 00's controlled suite; its trainer is
  replaced by three tiny saved models, and the test checks that ``suite_model`` reaches it);
* (b) the labelled OLMo-1B option: ``series="olmo-1b"``, loaded through ``from_pretrained(hub id,
  revision)`` from the hub cache.

Fine-tuning runs with gradient accumulation (global batch 4 = 2 per device x 2), gradient
checkpointing on, epochs capped (``max_epochs``), bf16 asked for: on a machine without CUDA bf16
is not applied and the record says ``precision_used = "fp32"`` (on a GPU it reads ``"bf16"``).
Everything but the download executes.
"""
import json

import pytest

from tests import hubcache
from tests.hubcache_data import add_paper_datasets

FT_SIZES = dict(tasks=["sst2", "humaneval"], lrs=[1e-3], steps=6, batch_size=4, per_device_batch_size=2,
                max_len=48, n_train=8, n_val=2, n_test=2, ood_blocks=4, ood_seq_len=32, eval_batch_size=4,
                seeds=1, threads=1, workers=1, max_epochs=1.0)
PT_SIZES = dict(gammas=[0.5], compare_gammas=[], n_seeds=1, n_blocks=4, seq_len=32, batch_size=2, threads=1)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The hub cache (data + tiny OLMo-1B-hf revisions), a tiny 'suite' of saved folders, and the
    environment of a cluster node after the download: offline, no ../shared/data."""
    import torch
    from coft_utils.foundation import models, series
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("paper_ft")
    cache = root / "hub"
    add_paper_datasets(cache, n=100)
    tok = None
    folders = []
    for i in range(3):
        f = hubcache.tiny_olmo(root / f"w{i}", seed=i, vocab_size=512, tokenizer=tok, max_len=64)
        tok = tok or models.load_tokenizer(str(f))
        folders.append(f)
    olmo = series.SERIES["olmo-1b"].checkpoints
    picked = [olmo[0], olmo[1], olmo[-1]]  # revision names as the series pins them (read, not copied)
    for ck, f in zip(picked, folders):
        hubcache.add_model(cache, ck.hub_id, ck.revision, f)
    suite = series.CheckpointSeries("tiny-suite", tuple(
        series.Checkpoint(lbl, tok_n, path=str(f)) for lbl, tok_n, f in zip(("4B", "8B", "16B"), (4e9, 8e9, 16e9),
                                                                            folders)))
    empty = root / "no_shared_data"
    empty.mkdir()
    with hubcache.offline(cache, COFT_DATA_DIR=empty, COFT_RUNS_DIR=root / "runs", COFT_CACHE_DIR=root / "cache"):
        yield {"root": root, "suite": suite, "picked": picked}


@pytest.fixture
def fake_suite(hub, monkeypatch):
    """Chapter 00's get_suite replaced by the tiny saved suite; records what it was asked for."""
    from coft_utils.chapters import pretrain
    asked = []

    def get_suite(profile="cpu", schedule="cosine", seed=0, overrides=None, progress=True):
        asked.append({"profile": profile, "schedule": schedule, "overrides": overrides})
        return hub["suite"]

    monkeypatch.setattr(pretrain, "get_suite", get_suite)
    return asked


def test_paper_presets_use_the_controlled_suite_and_the_hub():
    from coft_utils.chapters import finetune, perturb
    from coft_utils.foundation import hubdata
    assert hubdata.source_for("paper") == "hub"
    assert perturb.PRESETS["paper"].series == "suite" and perturb.PRESETS["paper"].scale == "init"
    for ch in finetune.CHAPTERS:
        c = finetune.PRESETS[ch]["paper"]
        assert c.series == "suite" and c.gradient_checkpointing and c.mixed_precision == "bf16"
        assert c.max_epochs > 0 and c.batch_size % c.per_device_batch_size == 0
    for p in ("smoke", "cpu", "gpu"):  # unchanged at the other profiles: no new key material
        c = finetune.PRESETS["03_fixed_lr_finetuning"][p]
        assert (c.gradient_checkpointing, c.max_epochs, c.per_device_batch_size) == (False, 0.0, 0)


def test_paper_refuses_local_only_tasks_and_sources(hub):
    from coft_utils.chapters import finetune, perturb
    from coft_utils.foundation import profiles
    with pytest.raises(profiles.ProfileError, match=r"'mr' has no hub data set.*allowed here: sst2, gsm8k, humaneval"):
        finetune.resolve("03_fixed_lr_finetuning", "paper", {"tasks": ["mr"]})
    with pytest.raises(profiles.ProfileError, match=r"'gutenberg', which has no hub copy"):
        perturb.Config(profile="paper", sources=("gutenberg",)).check()
    with pytest.raises(profiles.ProfileError, match=r"'batch_size' = 6 is not a multiple of 'per_device_batch_size' = 4"):
        finetune.resolve("03_fixed_lr_finetuning", "paper", {"batch_size": 6, "per_device_batch_size": 4})


def test_batch_plan_reaches_the_global_batch_on_any_launch():
    from coft_utils.chapters.finetune_train import batch_plan, effective_steps
    for world in (1, 2, 4, 8):
        p = batch_plan(64, 8 if world <= 8 else 0, world=world)
        assert p["per_device"] * p["grad_accum"] * p["world"] == 64
    assert batch_plan(64, 0, world=8) == {"per_device": 8, "grad_accum": 1, "world": 8, "global": 64}
    assert batch_plan(64, 16, world=1)["grad_accum"] == 4
    with pytest.raises(ValueError, match=r"batch_size = 64 cannot be reached .* 3 process"):
        batch_plan(64, 0, world=3)
    with pytest.raises(ValueError, match=r"multiple of per_device_batch_size x world = 48"):
        batch_plan(64, 16, world=3)
    # HumanEval: 131 training problems, 2,000 steps x 64 would be ~977 epochs; max_epochs=10 caps it
    assert effective_steps(2000, 131, 64, 10.0) == 20 and effective_steps(2000, 131, 64, 0.0) == 2000
    assert effective_steps(2000, 50000, 64, 10.0) == 2000 and effective_steps(5, 3, 64, 1.0) == 1


def test_sweep_refuses_a_launch_that_cannot_reach_the_batch(hub, fake_suite, monkeypatch):
    from coft_utils.chapters import finetune
    cfg = finetune.resolve("03_fixed_lr_finetuning", "paper", {**FT_SIZES, "batch_size": 6, "per_device_batch_size": 3})
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match=r"batch_size = 6 cannot be reached"):
        finetune.sweep(hub["suite"], cfg)
    assert not fake_suite  # refused before any work: the suite was not even asked for


def _check_ft_records(df, cfg, n_ckpts):
    assert len(df) == n_ckpts * len(cfg.tasks) and not df["diverged"].any()
    hum = df[df.task == "humaneval"].iloc[0]
    # 8 training examples, global batch 4, max_epochs 1 -> 2 optimizer steps (not 6), one epoch
    assert hum["steps"] == 2 and hum["steps_planned"] == 2 and hum["epochs"] == pytest.approx(1.0)
    assert hum["grad_accum"] == 2 and hum["per_device_batch_size"] == 2 and hum["world_size"] == 1
    assert hum["gradient_checkpointing"] is True or hum["gradient_checkpointing"] == 1
    import torch
    assert hum["precision_used"] == ("bf16" if torch.cuda.is_available() else "fp32")
    prov = json.loads(hum["data_hub"])
    assert prov["humaneval"]["hub_id"] == "openai/openai_humaneval" and len(prov["humaneval"]["commit"]) == 40
    assert prov["c4"]["hub_id"] == "allenai/c4"
    assert (df.ood_tokens_sha_before == df.ood_tokens_sha_after).all()
    from coft_utils.chapters import finetune_report
    text = finetune_report.steps_text(df, cfg)  # what the page says
    assert "**humaneval**: 2 optimizer steps of 4 examples = 1.0 passes over its 8 training examples" in text
    assert "capped by `max_epochs` = 1" in text and "2 per device x 2 accumulation x 1 process" in text
    for c in ("val_id_ppl", "test_id_ppl", "ood_ppl_before", "ood_ppl_after"):
        assert df[c].map(lambda v: v == v and v < float("inf")).all(), c


def test_paper_path_suite(hub, fake_suite):
    """(a) chapters 02 and 03 at paper on the controlled suite (suite_model olmo-15m)."""
    from coft_utils.chapters import finetune, perturb
    cfg = finetune.resolve("03_fixed_lr_finetuning", "paper", {**FT_SIZES, "suite_model": "olmo-15m"})
    assert finetune.train_key(cfg) != finetune.train_key(
        finetune.resolve("03_fixed_lr_finetuning", "paper", {**FT_SIZES, "max_epochs": 0.0, "suite_model": "olmo-15m"}))
    s = finetune.load_series(cfg)
    assert fake_suite[-1] == {"profile": "paper", "schedule": "cosine", "overrides": {"model": "olmo-15m"}}
    s = s.select(["4B", "16B"])
    df = finetune.sweep(s, cfg)
    _check_ft_records(df, cfg, 2)
    from coft_utils.foundation import profiles
    pcfg = profiles.resolve(perturb.EXPERIMENT, "paper", {**PT_SIZES, "suite_model": "olmo-15m"})
    assert pcfg.sources == ("c4", "wikitext")
    pdf = perturb.sweep(perturb.load_series(pcfg).select(["4B", "16B"]), pcfg, progress=False)
    assert len(pdf) == 2 * 2 * 2 and not pdf["diverged"].any()  # 2 checkpoints x 2 sources x (γ=0, 0.5)
    base = pdf[pdf.gamma == 0.0].set_index(["source", "checkpoint"]).ppl
    pert = pdf[pdf.gamma == 0.5].set_index(["source", "checkpoint"]).ppl
    assert (pert != base).all()  # the noise was applied (these random-init tiny models sit near uniform)
    assert (pdf.init_std_used == 0.02).all()  # the paper's scale: the models' initializer_range


def test_paper_path_olmo1b_hub_option(hub):
    """(b) the labelled OLMo-1B option: the real repo id and revision names, from the hub cache."""
    from coft_utils.chapters import finetune, perturb
    from coft_utils.foundation import models, profiles
    labels = [c.label for c in hub["picked"][:2]]
    cfg = finetune.resolve("04_lr_sweep", "paper", {**FT_SIZES, "series": "olmo-1b", "checkpoints": labels,
                                                    "tasks": ["humaneval"]})
    s = finetune.load_series(cfg)
    assert [c.revision for c in s] == [c.revision for c in hub["picked"][:2]]
    assert all(c.hub_id == "allenai/OLMo-1B-hf" and not c.path for c in s)
    from coft_utils.foundation import preflight  # what the runner calls before a paper kernel starts
    rep = preflight.check_config(cfg)
    assert rep.ok and rep.mode == "offline" and [r.revision for r in rep.checkpoints] == [c.revision for c in s]
    ident = [models.identity(c) for c in s]
    assert len(set(ident)) == 2  # two different weights, identified from the hub cache
    df = finetune.sweep(s, cfg)
    _check_ft_records(df, cfg, 2)
    pcfg = profiles.resolve(perturb.EXPERIMENT, "paper", {**PT_SIZES, "series": "olmo-1b", "checkpoints": labels[:1],
                                                        "sources": ["wikitext"]})
    pdf = perturb.sweep(perturb.load_series(pcfg), pcfg, progress=False)
    assert len(pdf) == 2 and set(pdf.source) == {"wikitext"}
    from coft_utils.foundation import evaluate
    assert evaluate.data_names(["wikitext"], "hub") == []  # nothing local in the provenance


def test_accumulation_reaches_the_same_training_as_the_full_batch(hub):
    """Global batch 4 as 4 x 1 and as 2 per device x 2 accumulation (with checkpointing): the
    same optimizer steps, so the same losses and weights up to float summation order."""
    import dataclasses
    from coft_utils.chapters import finetune, finetune_train
    from coft_utils.foundation import models, tasks
    ck = hub["suite"].checkpoints[0]
    tok = models.load_tokenizer(ck)
    ex = tasks.splits("gsm8k", 8, 1, 1, source="hub")["train"]
    cfg = finetune.resolve("03_fixed_lr_finetuning", "paper", {**FT_SIZES, "steps": 3, "max_epochs": 0.0})
    out = []
    for per, ckpt in ((0, False), (2, True)):
        c = dataclasses.replace(cfg, per_device_batch_size=per, gradient_checkpointing=ckpt)
        m = models.load_model(ck)
        log = finetune_train.train(m, tok, "gsm8k", ex, c, lr=1e-3, seed=0)
        assert log["steps"] == 3 and log.get("grad_accum", 1) == (1 if per == 0 else 2)
        out.append((log, [p.detach().clone() for p in m.parameters()]))
    (a, wa), (b, wb) = out
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    assert a["train_loss_first"] == pytest.approx(b["train_loss_first"], rel=1e-4)
    assert max(float((x - y).abs().max()) for x, y in zip(wa, wb)) < 1e-4
    assert b["gradient_checkpointing"] is True
