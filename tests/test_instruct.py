"""Tests of chapter 01 (coft_utils.instruct, coft_utils.lmeval_tasks).

* lm-eval's ``acc``/``acc_norm`` on 20 ARC-Easy items equal the argmax of the summed and of the
  character-length-normalized log-likelihoods computed by hand with the same model;
* winogrande's partial scoring; the SFT labels are -100 everywhere but the assistant responses;
* the presets (paper: pinned OLMo-1B revisions, hub tasks), validation, HH parsing;
* the chapter notebook executes at smoke (fresh runs/cache folders), its records are complete
  (best LR = lowest validation perplexity, other LRs' weights pruned) and a rerun is free.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

torch = pytest.importorskip("torch")

from coft_utils import data, instruct, lmeval_tasks, models, profiles, results  # noqa: E402

CH = "01_instruction_tuning"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A randomly initialized olmo-pico with a 512-token BPE (context 512, so no truncation)."""
    root = tmp_path_factory.mktemp("tiny_lm")
    old = os.environ.get("COFT_CACHE_DIR")
    os.environ["COFT_CACHE_DIR"] = str(root / "cache")
    tok = models.train_tokenizer(data.gutenberg_bodies("validation", max_chars=300_000), 512)
    model = models.build_model(models.olmo_config("olmo-pico", len(tok), max_len=512,
                                                  pad_token_id=tok.pad_token_id), seed=0).eval()
    yield model, tok
    if old is None:
        os.environ.pop("COFT_CACHE_DIR", None)
    else:
        os.environ["COFT_CACHE_DIR"] = old


def _hand_loglik(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context): tokens of context+continuation beyond those of context."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx):]
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    n = len(whole)
    return float(sum(logp[i - 1, whole[i]] for i in range(n - len(cont), n)))


def test_lmeval_acc_and_acc_norm_match_hand_computation(tiny_lm):
    model, tok = tiny_lm
    r = lmeval_tasks.evaluate(model, tok, ["arc_easy"], limit=20, batch_size=8, log_samples=True)
    samples = sorted(r["samples"]["arc_easy"], key=lambda s: s["doc_id"])
    docs = lmeval_tasks.normalized_docs("arc_easy")[:20]
    assert len(samples) == 20 and r["scores"]["arc_easy"]["n"] == 20
    acc, acc_norm, n_norm_differs = [], [], 0
    for s, d in zip(samples, docs):
        assert s["doc"]["text"] == d["text"] and s["doc"]["choices"] == d["choices"]
        lls = [_hand_loglik(model, tok, d["text"], " " + c) for c in d["choices"]]
        theirs = [x[0] for x in s["filtered_resps"]]
        assert theirs == pytest.approx(lls, abs=2e-3)  # the same log-likelihoods (float32 vs float64)
        pred = max(range(len(lls)), key=lambda i: lls[i])
        pred_norm = max(range(len(lls)), key=lambda i: lls[i] / len(d["choices"][i]))
        n_norm_differs += pred != pred_norm
        acc.append(float(pred == d["gold"]))
        acc_norm.append(float(pred_norm == d["gold"]))
        assert s["acc"] == acc[-1] and s["acc_norm"] == acc_norm[-1]
    assert r["scores"]["arc_easy"]["acc"] == pytest.approx(sum(acc) / 20)
    assert r["scores"]["arc_easy"]["acc_norm"] == pytest.approx(sum(acc_norm) / 20)
    assert n_norm_differs > 0  # the two metrics are really different computations here


def test_winogrande_partial_scoring(tiny_lm):
    model, tok = tiny_lm
    r = lmeval_tasks.evaluate(model, tok, ["winogrande"], limit=6, batch_size=8, log_samples=True)
    docs = lmeval_tasks.normalized_docs("winogrande")[:6]
    correct = []
    for s, d in zip(sorted(r["samples"]["winogrande"], key=lambda s: s["doc_id"]), docs):
        # each option is a context; the scored continuation is the same rest of the sentence
        assert [a[0] for a in s["arguments"]] == d["options"]
        assert {a[1] for a in s["arguments"]} == {" " + d["continuation"]}
        lls = [_hand_loglik(model, tok, o, " " + d["continuation"]) for o in d["options"]]
        correct.append(float(max(range(2), key=lambda i: lls[i]) == d["gold"]))
    sc = r["scores"]["winogrande"]
    assert sc["acc"] == pytest.approx(sum(correct) / 6) and sc["acc_norm"] == sc["acc"]


def test_normalized_benchmarks_have_valid_gold():
    for b in lmeval_tasks.BENCHMARKS:
        docs = lmeval_tasks.normalized_docs(b)[:50]
        for d in docs:
            opts = d.get("choices", d.get("options"))
            assert 0 <= d["gold"] < len(opts) and all(isinstance(o, str) and o for o in opts)
    assert lmeval_tasks.normalized_docs("piqa")[0]["text"].startswith("Question: ")


def test_sft_labels_are_the_assistant_responses_only(tiny_lm, tmp_path):
    model, tok = tiny_lm
    tok = instruct.prepare_tokenizer(tok)
    cfg = profiles.resolve(CH, "smoke")
    dialogues = instruct.train_mix(instruct.sft_sources(cfg), 0)[:12]
    ds = instruct.prepare_sft_dataset(model, tok, dialogues, cfg, tmp_path / "prep")
    mine = instruct.tokenize_dialogues(tok, dialogues, instruct._context(model, cfg))
    assert len(ds) == len(mine) > 0
    user_id, asst_id = tok.convert_tokens_to_ids("<|user|>"), tok.convert_tokens_to_ids("<|assistant|>")
    for row, m in zip(ds, mine):
        assert row["input_ids"] == m["input_ids"]
        want = [t if k else -100 for t, k in zip(m["input_ids"], m["assistant_masks"])]
        assert row["labels"] == want
        assert user_id not in [t for t in row["labels"] if t != -100]  # prompts never in the loss
        assert asst_id not in [t for t in row["labels"] if t != -100]
        assert any(t != -100 for t in row["labels"])


def test_response_perplexity_by_hand(tiny_lm):
    model, tok = tiny_lm
    tok = instruct.prepare_tokenizer(tok)
    dia = [[{"role": "user", "content": "Add two and two."}, {"role": "assistant", "content": "Four."}],
           [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hello there, friend!"}]]
    toks = instruct.tokenize_dialogues(tok, dia, 512)
    r = instruct.response_perplexity(model, toks, batch_size=2, pad_id=tok.pad_token_id)
    nll, n = 0.0, 0
    for t in toks:
        ids = torch.tensor([t["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        for i in range(1, len(t["input_ids"])):
            if t["assistant_masks"][i]:
                nll -= float(logp[i - 1, t["input_ids"][i]])
                n += 1
    assert r["n_tokens"] == n and r["ppl"] == pytest.approx(math.exp(nll / n), rel=1e-4)


def test_hh_parsing():
    m = instruct.hh_to_messages("\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: like so")
    assert m == [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"},
                 {"role": "user", "content": "how?"}, {"role": "assistant", "content": "like so"}]
    assert instruct.hh_to_messages("\n\nHuman: only a question") is None
    assert instruct.hh_to_messages("\n\nHuman: q\n\nAssistant: ") is None


def test_presets_and_validation():
    for p in profiles.PROFILES:
        cfg = profiles.resolve(CH, p)
        assert cfg.profile == p and cfg.lrs and set(cfg.benchmarks) == set(lmeval_tasks.BENCHMARKS)
    paper = profiles.resolve(CH, "paper")
    assert paper.series == "olmo-1b" and paper.bench_local is False and paper.bench_limit == 0
    assert paper.sft_data == ("hh_rlhf",) and len(paper.lrs) >= 3
    s = instruct.get_series(paper)
    toks = [c.tokens for c in s]
    assert s.checkpoints[0].hub_id == "allenai/OLMo-1B-hf" and all(c.revision for c in s)
    assert toks[0] < 0.05e12 and toks[-1] > 3.0e12
    for near in (1.5e12, 2.3e12, 2.5e12, 3.0e12):
        assert min(abs(t - near) for t in toks) < 0.1e12
    for series in ("olmo-2-7b-stage1", "amber"):
        assert len(instruct.get_series(profiles.resolve(CH, "paper", {"series": series}))) >= 5
    with pytest.raises(profiles.ProfileError, match="series"):
        profiles.resolve(CH, "cpu", {"series": "olmo-1b"})
    with pytest.raises(profiles.ProfileError, match="tulu"):
        profiles.resolve(CH, "cpu", {"sft_data": ["tulu"]})
    with pytest.raises(profiles.ProfileError, match="benchmarks"):
        profiles.resolve(CH, "smoke", {"benchmarks": ["mmlu"]})
    with pytest.raises(profiles.ProfileError, match="lrs"):
        profiles.resolve(CH, "smoke", {"lrs": [1e-3, 1e-3]})
    assert Path(profiles.__file__).with_name("configs").joinpath("accelerate_fsdp_instruct.yaml").is_file()


def test_verdict_detects_a_bend_and_chance():
    import pandas as pd
    rows = []
    for i, (b, t) in enumerate([(0.40, 0.45), (0.50, 0.60), (0.60, 0.50)]):
        for stage, v in (("base", b), ("tuned", t)):
            rows.append({"checkpoint": f"c{i}", "tokens": 10.0 ** i, "stage": stage, "avg_acc": v,
                         "avg_acc_stderr": 0.01, "test_ppl": 10.0 - i})
    v = instruct.verdict(pd.DataFrame(rows), {"avg": 0.25})
    assert v["bends_down"] and v["best_checkpoint"] == "c1" and not v["near_chance"]
    rows2 = [dict(r, avg_acc_stderr=0.2) for r in rows]
    v2 = instruct.verdict(pd.DataFrame(rows2), {"avg": 0.45})
    assert not v2["bends_down"] and v2["near_chance"] and "chance" in v2["text"]


def test_notebook_runs_at_smoke_and_rerun_is_free(tmp_runs):
    import nbformat
    from coft_utils import run
    out = run.run_notebook(CH, "smoke", out_dir=tmp_runs / "nb", force=True, progress=False)
    nb = nbformat.read(out, as_version=4)
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outs) >= 3
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outs)
    assert "AlpacaEval: skipped" in text
    cfg = profiles.resolve(CH, "smoke")
    store = results.Store(CH, "smoke")
    recs = store.records()
    stages = [r["unit"]["stage"] for r in recs]
    n_ck = cfg.n_checkpoints
    assert stages.count("base") == n_ck and stages.count("tuned") == n_ck
    assert stages.count("sft") == n_ck * len(cfg.lrs)
    for t in (r for r in recs if r["unit"]["stage"] == "tuned"):
        sfts = {r["unit"]["lr"]: r["metrics"] for r in recs
                if r["unit"]["stage"] == "sft" and r["unit"]["checkpoint"] == t["unit"]["checkpoint"]}
        best = min(sfts, key=lambda lr: sfts[lr]["val_ppl"])
        assert t["unit"]["lr"] == best == t["metrics"]["best_lr"]
        for lr, m in sfts.items():  # only the best LR's weights are kept
            assert Path(m["model_dir"]).is_dir() == (lr == best)
        assert 0 <= t["metrics"]["avg_acc"] <= 1 and t["metrics"]["test_ppl"] > 1
        assert all(m["steps"] == cfg.sft_steps and m["n_train"] > 0 for m in sfts.values())
    # a rerun computes nothing: same records, unchanged files
    mtimes = {p: p.stat().st_mtime_ns for p in store.dir.glob("*.json")}
    again = instruct.run(cfg, progress=False)
    assert {p: p.stat().st_mtime_ns for p in store.dir.glob("*.json")} == mtimes
    assert len(again["summary"]) == 2 * n_ck
