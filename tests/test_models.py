import json

import pytest
import torch

from coft_utils.foundation import data, models, series, weights
@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tok"
    return models.train_tokenizer(data.gutenberg_bodies("validation", max_chars=400_000), 512, out)


def test_tiny_olmo_saves_and_loads_with_identical_logits(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = models.olmo_config("olmo-pico", vocab_size=len(tok), max_len=64)
    model = models.build_model(cfg, seed=3).eval()
    assert type(model).__name__ == "OlmoForCausalLM"
    out = models.save_model(model, tmp_path / "ckpt", tok)
    assert (out / "model.safetensors").is_file()
    ck = models.Checkpoint("t", 1000, path=str(out))
    back = models.load_model(ck)
    x = tok(["It was the best of times, it was the worst of times."], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(x).logits, back(x).logits)
    tok2 = models.load_tokenizer(ck)
    assert tok2("a tale of two cities").input_ids == tok("a tale of two cities").input_ids
    # same seed -> same weights; another seed -> different ones
    same = models.build_model(cfg, seed=3)
    other = models.build_model(cfg, seed=4)
    w = lambda m: m.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(w(same), w(model)) and not torch.equal(w(other), w(model))


def test_tokenizer_is_a_transformers_tokenizer_with_chat_template(tok):
    assert len(tok) == 512
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token_id == 1
    text = "The quick brown fox, said Mr. Pickwick."
    assert tok.decode(tok(text).input_ids) == text  # byte-level BPE round-trips
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"},
                                    {"role": "assistant", "content": "hello"}], tokenize=False)
    assert chat.startswith("<|user|>\nhi\n<|assistant|>\nhello<|endoftext|>")
    with pytest.raises(models.SeriesError, match="vocab_size"):
        models.train_tokenizer(["abc"], 100)


def test_presets_follow_the_paper_sizes():
    for name, target in (("olmo-15m", 15e6), ("olmo-30m", 30e6), ("olmo-90m", 90e6)):
        m = models.build_model(models.olmo_config(name, vocab_size=256))
        n = models.count_params(m, embeddings=False)
        assert 0.85 * target < n < 1.15 * target, (name, n)
    with pytest.raises(models.SeriesError, match="unknown OLMo preset 'olmo-1t'"):
        models.olmo_config("olmo-1t", 1024)


def test_builtin_series_revision_names():
    """The pinned names are the hub's own (tests/test_series_revisions.py checks each against
    the stored public lists); these are the ones issue 15 found wrong."""
    olmo = models.get_series("olmo-1b")
    revs = [c.revision for c in olmo]
    assert revs[0] == "step10000-tokens41B"            # not ...tokens42B (the non-hf repo's rule)
    assert revs[-1] == "step738020-tokens3094B"        # the final branch of allenai/OLMo-1B-hf
    assert not any(r.startswith(("step200000-", "step300000-")) for r in revs)  # 117850 -> 330000 gap
    assert all(c.hub_id == "allenai/OLMo-1B-hf" for c in olmo)
    assert 0.03e12 < olmo.checkpoints[0].tokens < 0.05e12 and olmo.checkpoints[-1].tokens > 3e12
    # the paper's points near 1.5T, 2.5T and 3T (Fig. 1) are there
    toks = [c.tokens for c in olmo]
    for t in (1.5e12, 2.5e12, 3.0e12):
        assert min(abs(x - t) for x in toks) < 0.06e12, t
    o2 = [c.revision for c in models.get_series("olmo-2-7b-stage1")]
    assert o2[-1] == "stage1-step928646-tokens3896B"
    assert "stage1-step100000-tokens420B" not in o2
    assert not {"stage1-step101000-tokens424B", "stage1-step300000-tokens1259B"} & set(o2)
    py = models.get_series("pythia-70m")
    assert py.checkpoints[0].revision == "step1000" and abs(py.checkpoints[0].tokens - 2.1e9) < 0.01e9
    assert py.checkpoints[-1].revision == "step143000"
    assert models.get_series("amber").checkpoints[-1].revision == "ckpt_358"


def test_user_series_roundtrip_and_errors(tmp_path):
    d = {"name": "mine", "checkpoints": [
        {"label": "a", "tokens": 1e9, "hub_id": "me/m", "revision": "step1"},
        {"label": "b", "tokens": 2e9, "path": str(tmp_path)}]}
    s = models.get_series(d)
    p = s.save(tmp_path / "mine.json")
    assert models.get_series(str(p)) == s
    assert json.loads(p.read_text())["checkpoints"][1]["path"] == str(tmp_path)
    assert s.select(["b"]).checkpoints[0].label == "b"
    with pytest.raises(models.SeriesError, match="ordered by tokens"):
        models.get_series({"name": "x", "checkpoints": [d["checkpoints"][1], d["checkpoints"][0]]})
    with pytest.raises(models.SeriesError, match="needs a local 'path' or a 'hub_id'"):
        models.Checkpoint("c", 1.0)
    with pytest.raises(models.SeriesError, match="unknown series 'nope'; allowed: a built-in name"):
        models.get_series("nope")
    with pytest.raises(models.SeriesError, match="does not exist"):
        models.load_model(models.Checkpoint("gone", 1, path=str(tmp_path / "gone")))


def test_hub_loading_is_offline(monkeypatch):
    """A hub checkpoint is requested by id and revision; offline it fails fast, not after retries."""
    import time
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(Exception):
        models.load_model(models.get_series("pythia-70m").checkpoints[0])
    assert time.time() - t < 20


def test_series_and_identity_names_stay_importable_from_models():
    """The series definitions live in ``series``, the weights' identity in ``weights``; ``models``
    re-exports the very same objects (every caller uses ``models.X``)."""
    for name in ("Checkpoint", "CheckpointSeries", "SeriesError", "SERIES", "get_series", "check_revisions"):
        assert getattr(models, name) is getattr(series, name), name
    for name in ("identity", "fingerprint", "hub_commit"):
        assert getattr(models, name) is getattr(weights, name), name
    assert all(hasattr(models, n) for n in models.__all__)
    assert series.load("olmo-1b") is models.SERIES["olmo-1b"]


@pytest.mark.parametrize("first", ["series", "weights", "models", "profiles"])
def test_foundation_modules_import_in_any_order(first):
    import subprocess
    import sys
    code = (f"import coft_utils.foundation.{first}; "
            "from coft_utils.foundation import models, series, weights, profiles; "
            "assert models.identity is weights.identity and models.Checkpoint is series.Checkpoint")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
