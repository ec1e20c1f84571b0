"""Tests of coft_utils.chapters.perturb (the sweep) and perturb_report (summaries, verdicts, tables):
exact restore, seeded noise, γ = 0, diverged points, validation.

A tiny series (olmo-pico, 512-token BPE, three checkpoints after a few AdamW steps) is made
once per session in a temporary folder; COFT_RUNS_DIR / COFT_CACHE_DIR point to tmp dirs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

torch = pytest.importorskip("torch")

from coft_utils.foundation import evaluate, models, profiles, results  # noqa: E402
from coft_utils.chapters import perturb, perturb_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CH = "02_gaussian_sensitivity"


@pytest.fixture(scope="session")
def tiny_series(tmp_path_factory):
    """Three checkpoints of a tiny OLMo on Gutenberg validation text, saved as a series .json."""
    root = tmp_path_factory.mktemp("perturb_series")
    old = {k: os.environ.get(k) for k in ("COFT_CACHE_DIR",)}
    os.environ["COFT_CACHE_DIR"] = str(root / "cache")
    from coft_utils.foundation import data
    tok = models.train_tokenizer(data.gutenberg_bodies("validation", max_chars=200_000), 512)
    train = evaluate.heldout_blocks(tok, "wikitext", 96, 64)
    model = models.build_model(models.olmo_config("olmo-pico", vocab_size=len(tok), max_len=128), seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    cks, step = [], 0
    for stop in (4, 12, 30):
        model.train()
        while step < stop:
            i = (step * 16) % len(train)
            x = train[i:i + 16]
            model(input_ids=x, labels=x).loss.backward()
            opt.step()
            opt.zero_grad()
            step += 1
        path = models.save_model(model.eval(), root / f"step{step}", tokenizer=tok)
        cks.append({"label": f"step{step}", "tokens": float(step * 16 * 64), "path": str(path)})
    spec = {"name": "tiny", "checkpoints": cks, "meta": {"init_std": 0.02}}
    p = root / "tiny.json"
    p.write_text(json.dumps(spec))
    yield p
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def env(tmp_path, tiny_series, monkeypatch):
    monkeypatch.setenv("COFT_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("COFT_CACHE_DIR", str(tiny_series.parent / "cache"))
    return tiny_series


def _model(series_path, i=-1):
    s = models.get_series(str(series_path))
    ck = s.checkpoints[i]
    return s, ck, models.load_model(ck), models.load_tokenizer(ck)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_restore_is_bit_exact_and_noise_applied(env):
    _, ck, model, _ = _model(env)
    before = _state(model)
    p = perturb.Perturber(model, scale="init", targets="all")
    for gamma in (0.3, 1e-3, 5.0):
        p.apply(gamma, key=(ck.label, gamma, 0))
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        assert changed, "perturbation changed nothing"
        p.restore()
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), f"{k} not restored bit-for-bit"
    # the context manager restores even when the body raises
    with pytest.raises(RuntimeError):
        with p.perturbed(0.5, key="x"):
            raise RuntimeError("boom")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # one backup per checkpoint: the size of the perturbed tensors, not more
    assert p.backup_bytes == sum(t.numel() * t.element_size() for _, t in p.tensors)


def test_same_seed_same_noise_and_scale(env):
    _, ck, model, _ = _model(env)
    p = perturb.Perturber(model, scale="init")
    orig = {n: t.detach().clone() for n, t in p.tensors}

    def noise(key):
        p.apply(0.1, key)
        out = {n: (t.detach() - orig[n]).clone() for n, t in p.tensors}
        p.restore()
        return out

    a, b, c = noise((ck.label, 0.1, 0)), noise((ck.label, 0.1, 0)), noise((ck.label, 0.1, 1))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not any(torch.equal(a[n], c[n]) for n in a if a[n].numel() > 1)
    big = max(a, key=lambda n: a[n].numel())
    assert abs(float(a[big].std()) / (0.1 * 0.02) - 1) < 0.1  # θ' - θ ~ γ·s·N(0, 1)
    # a fresh model + Perturber reproduces the same point alone
    _, _, model2, _ = _model(env)
    p2 = perturb.Perturber(model2, scale="init")
    p2.apply(0.1, (ck.label, 0.1, 0))
    assert all(torch.equal(t.detach() - orig[n], a[n]) for n, t in p2.tensors)
    # empirical scale: each tensor's own std; targets: no embeddings, no norms
    pe = perturb.Perturber(model, scale="empirical", targets="no_embed_norm")
    assert not any("embed" in n or "norm" in n for n, _ in pe.tensors)
    n0, t0 = pe.tensors[0]
    assert pe.scales[n0] == pytest.approx(float(orig[n0].std()), rel=1e-5)
    tied = model.get_input_embeddings().weight
    assert sum(t is tied for _, t in p.tensors) == 1  # tied embeddings perturbed once


def test_gamma_zero_leaves_perplexity_unchanged(env):
    s, ck, model, tok = _model(env)
    blocks = evaluate.heldout_blocks(tok, "gutenberg", 8, 64)
    base = evaluate.perplexity(model, blocks, 8)
    p = perturb.Perturber(model)
    with p.perturbed(0.0, (ck.label, 0.0, 0)):
        assert evaluate.perplexity(model, blocks, 8)["ppl"] == base["ppl"]
    with p.perturbed(0.5, (ck.label, 0.5, 0)):
        assert evaluate.perplexity(model, blocks, 8)["ppl"] != base["ppl"]
    assert evaluate.perplexity(model, blocks, 8)["ppl"] == base["ppl"]


@pytest.mark.parametrize("bad", [-0.1, "0.1", None, float("nan"), float("inf"), True, [0.1]])
def test_bad_gamma_is_value_error(env, bad):
    _, _, model, _ = _model(env)
    before = _state(model)
    with pytest.raises(ValueError, match="gamma"):
        perturb.perturb_(model, bad, key="k")
    p = perturb.Perturber(model)
    with pytest.raises(ValueError, match="gamma"):
        p.apply(bad, "k")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("over", [{"gammas": [-0.01]}, {"gammas": ["abc"]}, {"gammas": [0.1, float("nan")]},
                                  {"scale": "fan_in"}, {"targets": "some"}, {"n_seeds": 0},
                                  {"sources": ["c4"]}, {"gammas": []}, {"nope": 1}])
def test_bad_config_is_profile_error(over):
    with pytest.raises(profiles.ProfileError):
        profiles.resolve(CH, "smoke", over)


def test_presets_resolve():
    for prof in profiles.PROFILES:
        cfg = profiles.resolve(CH, prof)
        assert isinstance(cfg, perturb.Config) and cfg.gammas
    assert profiles.resolve(CH, "paper").series == "suite"  # the paper's design: the controlled suite (chapter 00)
    assert profiles.resolve(CH, "paper", {"series": "olmo-1b"}).series == "olmo-1b"  # the labelled hub option
    assert profiles.resolve(CH, "paper", {"suite_model": "olmo-90m"}).suite_model == "olmo-90m"
    assert profiles.resolve(CH, "cpu", {"gammas": [0.01, "0.02"]}).gammas == (0.01, 0.02)
    # any series by parameters alone: a hub series resolves (offline: no download needed here)
    s = perturb.load_series(profiles.resolve(CH, "paper", {"series": "pythia-70m", "checkpoints": ["2B", "134B"]}))
    assert [c.hub_id for c in s] == ["EleutherAI/pythia-70m"] * 2 and s.checkpoints[0].revision == "step1000"
    assert profiles.resolve(CH, "paper").other_scale().scale == "empirical"


def test_targets_on_a_pythia_architecture():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    m = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=32))
    names = [n for n, _ in perturb.select_tensors(m, "no_embed_norm")]
    assert names and not any("embed" in n or "layernorm" in n or "final_layer_norm" in n for n in names)
    assert any("attention" in n and n.endswith("bias") for n in names)  # linear biases stay in
    everything = [n for n, _ in perturb.select_tensors(m, "all")]
    assert len(everything) == len(list(m.parameters()))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    p = perturb.Perturber(m, scale="init", targets="no_embed_norm")
    assert p.scales[names[0]] == m.config.initializer_range
    with p.perturbed(1.0, "k"):
        assert not torch.equal(m.gpt_neox.layers[0].mlp.dense_h_to_4h.weight,
                               before["gpt_neox.layers.0.mlp.dense_h_to_4h.weight"])
        assert torch.equal(m.gpt_neox.embed_in.weight, before["gpt_neox.embed_in.weight"])
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


def test_sweep_records_diverged_resumes_and_summarizes(env):
    cfg = profiles.resolve(CH, "smoke", {"series": str(env), "scale": "init", "gammas": [0.05, 1e30], "n_seeds": 2,
                                         "n_blocks": 4, "seq_len": 32})
    store = results.Store(CH, "smoke")
    df = perturb.sweep(str(env), cfg, store=store, progress=False)
    # 3 checkpoints x 2 sources x (1 base + 2 gammas x 2 seeds)
    assert len(df) == 3 * 2 * 5 == len(store.records())
    huge = df[df.gamma == 1e30]
    assert huge.diverged.all() and len(huge) == 12  # recorded, and the sweep went on
    assert not df[df.gamma == 0.05].diverged.any()
    # resume: nothing is recomputed
    mtimes = {p: p.stat().st_mtime_ns for p in store.dir.glob("*.json")}
    df2 = perturb.sweep(str(env), cfg, store=store, progress=False)
    assert len(df2) == len(df)
    assert mtimes == {p: p.stat().st_mtime_ns for p in store.dir.glob("*.json")}
    # a point recomputed alone gives the same number
    s = models.get_series(str(env))
    ck = s.checkpoints[1]
    model, tok = models.load_model(ck), models.load_tokenizer(ck)
    blocks = evaluate.heldout_blocks(tok, "wikitext", 4, 32)
    with perturb.Perturber(model, init_std=0.02).perturbed(0.05, (ck.label, 0.05, 1)):
        alone = evaluate.perplexity(model, blocks, cfg.batch_size)["ppl"]
    rec = df[(df.checkpoint == ck.label) & (df.gamma == 0.05) & (df.noise_seed == 1) & (df.source == "wikitext")]
    assert rec.ppl.iloc[0] == pytest.approx(alone, rel=1e-6)
    summ = perturb_report.summarize(df)
    assert set(summ.columns) >= {"delta_mean", "delta_std", "ppl_mean", "ppl_std", "base_ppl", "n_diverged"}
    assert (summ[summ.gamma == 1e30].n_diverged == 2).all()
    v = perturb_report.verdict(df, "gutenberg")
    assert set(v) == {0.05, 1e30}
    assert v[1e30]["u"].label == "inconclusive" and v[1e30]["rises"].label == "inconclusive"  # diverged: named
    assert "diverged" in v[1e30]["u"].reason and "inf/NaN" in v[1e30]["u"].reason and v[1e30]["n_diverged"] > 0


def test_verdict_detects_u_shape_and_monotone():
    import pandas as pd
    rng = np.random.default_rng(0)
    rows = []
    curve = [(1e6, 100, 110), (2e6, 50, 65), (4e6, 30, 60), (8e6, 28, 62), (1.6e7, 25, 75), (3.2e7, 24, 90)]
    for i, (t, base, pert) in enumerate(curve):
        rows.append(dict(source="s", checkpoint=f"c{i}", tokens=t, gamma=0.0, noise_seed=0, ppl=base,
                         diverged=False))
        for seed in range(4):
            rows.append(dict(source="s", checkpoint=f"c{i}", tokens=t, gamma=0.1, noise_seed=seed,
                             ppl=pert * (1 + 0.01 * rng.standard_normal()), diverged=False))
    v = perturb_report.verdict(pd.DataFrame(rows), "s")[0.1]
    assert v["u"].label == "observed" and v["labels"][v["u"].detail["argmin"]] == "c2"
    assert v["rises"].label == "observed" and v["rises"].n_replicates == 4
    # the rise after the minimum within the seed spread is not a U
    rows2 = [dict(r) for r in rows]
    for r in rows2:
        if r["gamma"] == 0.1 and r["checkpoint"] in ("c3", "c4", "c5"):
            r["ppl"] = 60.5 + (8 if r["noise_seed"] % 2 else -8)
    v2 = perturb_report.verdict(pd.DataFrame(rows2), "s")[0.1]
    assert v2["u"].label == "within noise"



def test_report_tables_from_records():
    """The report's tables (sections c-e of the notebook) from synthetic records."""
    import pandas as pd
    rows = []
    for i, (t, base, pert) in enumerate([(1e6, 100, 110), (2e6, 50, 65), (4e6, 30, 60)]):
        rows.append(dict(source="s", checkpoint=f"c{i}", tokens=t, gamma=0.0, noise_seed=0, ppl=base,
                         diverged=False, init_std_used=0.02))
        for seed in range(2):
            rows.append(dict(source="s", checkpoint=f"c{i}", tokens=t, gamma=0.1, noise_seed=seed,
                             ppl=pert + seed, diverged=False, init_std_used=0.02))
    df = pd.DataFrame(rows)
    summ = perturb_report.summarize(df)
    num = perturb_report.numbers_table(summ)
    assert num.index.names == ["source", "gamma", "checkpoint"] and num.tokens.iloc[0] == "1e+06"
    comp = perturb_report.theirs_table(summ, ("s",), "tiny", "init")
    assert comp.who.tolist() == ["theirs: " + perturb_report.THEIRS["pythia70m_report"]["who"], "ours: tiny, scale=init"]
    assert comp["growth (last/first)"].iloc[1] == pytest.approx(30.5 / 10.5)
    cfg = profiles.resolve(CH, "smoke", {"scale": "init"})
    assert perturb_report.init_scale_used(df, cfg) == 0.02
    assert perturb_report.init_scale_used(df, profiles.resolve(CH, "smoke")) is None  # empirical, no df2


@pytest.mark.slow
def test_notebook_runs_on_any_series_at_smoke(env, tmp_path):
    jupytext = pytest.importorskip("jupytext")
    papermill = pytest.importorskip("papermill")
    nb = jupytext.read(REPO / "notebooks" / f"{CH}.py")
    out = tmp_path / "02.ipynb"
    papermill.execute_notebook(nb, str(out), kernel_name="python3", progress_bar=False,
                               parameters={"profile": "smoke", "overrides": {"series": str(env)}})
    text = out.read_text()
    assert "Traceback" not in text
    assert "delta_mean" in text or "Δ" in text


def test_two_workers_give_the_same_records(env, tmp_path, monkeypatch):
    """Checkpoints evaluated in 2 worker processes: the same numbers as in-process."""
    from coft_utils.foundation import profiles
    out = {}
    for w in (1, 2):
        cfg = profiles.resolve(CH, "smoke", {"series": str(env), "workers": w, "gammas": [0.05],
                                             "compare_gammas": [], "sources": ["wikitext"]})
        store = results.Store(CH, "smoke", root=tmp_path / f"w{w}")
        df = perturb.sweep(str(env), cfg, store=store, progress=False)
        out[w] = df.sort_values(["checkpoint", "gamma", "noise_seed", "source"]).ppl.to_numpy()
        assert len(store.records()) == len(df) > 0
    assert np.array_equal(out[1], out[2])
