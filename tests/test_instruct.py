"""Tests of chapter 01 (coft_utils.chapters.instruct and its instruct_data, instruct_sft, instruct_eval and
instruct_report modules; coft_utils.foundation.lmeval_tasks).

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

from coft_utils.foundation import data, lmeval_tasks, models, profiles, results  # noqa: E402
from coft_utils.chapters import instruct, instruct_data, instruct_eval, instruct_report, instruct_sft  # noqa: E402

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
    for b in lmeval_tasks.LOCAL_BENCHMARKS:
        docs = lmeval_tasks.normalized_docs(b)[:50]
        for d in docs:
            opts = d.get("choices", d.get("options"))
            assert 0 <= d["gold"] < len(opts) and all(isinstance(o, str) and o for o in opts)
    assert lmeval_tasks.normalized_docs("piqa")[0]["text"].startswith("Question: ")
    with pytest.raises(data.DataError, match="sciq.*hub only"):  # no local file: lm-eval's hub task only
        lmeval_tasks.normalized_docs("sciq")
    with pytest.raises(ValueError, match="no local data file"):
        lmeval_tasks.evaluate(None, None, ["sciq"], local=True)
    # the paper's five (Fig. 1's four named + SciQ) and this companion's extras partition the known list
    assert set(lmeval_tasks.PAPER_BENCHMARKS) | set(lmeval_tasks.EXTRA_BENCHMARKS) == set(lmeval_tasks.BENCHMARKS)
    assert "sciq" in lmeval_tasks.PAPER_BENCHMARKS and lmeval_tasks.label("openbookqa") == "openbookqa (extra)"


def test_sft_labels_are_the_assistant_responses_only(tiny_lm, tmp_path):
    model, tok = tiny_lm
    tok = instruct_data.prepare_tokenizer(tok)
    cfg = profiles.resolve(CH, "smoke")
    dialogues = instruct_data.train_mix(instruct_data.sft_sources(cfg), 0)[:12]
    ds = instruct_sft.prepare_sft_dataset(model, tok, dialogues, cfg, tmp_path / "prep")
    mine = instruct_data.tokenize_dialogues(tok, dialogues, instruct_sft._context(model, cfg))
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
    tok = instruct_data.prepare_tokenizer(tok)
    dia = [[{"role": "user", "content": "Add two and two."}, {"role": "assistant", "content": "Four."}],
           [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hello there, friend!"}]]
    toks = instruct_data.tokenize_dialogues(tok, dia, 512)
    r = instruct_eval.response_perplexity(model, toks, batch_size=2, pad_id=tok.pad_token_id)
    nll, n, per = 0.0, 0, []
    for t in toks:
        ids = torch.tensor([t["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        y, x = 0.0, 0
        for i in range(1, len(t["input_ids"])):
            if t["assistant_masks"][i]:
                y -= float(logp[i - 1, t["input_ids"][i]])
                x += 1
        per.append((y, x))
        nll, n = nll + y, n + x
    assert r["n_tokens"] == n and r["ppl"] == pytest.approx(math.exp(nll / n), rel=1e-4)
    # the ratio estimator's s.e. of the mean NLL over the dialogues
    R = nll / n
    se = math.sqrt(sum((y - R * x) ** 2 for y, x in per) / (len(per) * (len(per) - 1))) / (n / len(per))
    assert r["loss_se"] == pytest.approx(se, rel=1e-3)


def test_hh_parsing():
    m = instruct_data.hh_to_messages("\n\nHuman: hi there\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: like so")
    assert m == [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello"},
                 {"role": "user", "content": "how?"}, {"role": "assistant", "content": "like so"}]
    assert instruct_data.hh_to_messages("\n\nHuman: only a question") is None
    assert instruct_data.hh_to_messages("\n\nHuman: q\n\nAssistant: ") is None


def test_presets_and_validation():
    for p in profiles.PROFILES:
        cfg = profiles.resolve(CH, p)
        want = lmeval_tasks.PAPER_BENCHMARKS if p == "paper" else lmeval_tasks.LOCAL_BENCHMARKS
        assert cfg.profile == p and cfg.lrs and cfg.benchmarks == want
        assert cfg.global_batch % cfg.batch_size == 0
        assert cfg.seeds == (2 if p == "smoke" else 3)  # replicates everywhere, paper included
        assert instruct.seed_list(cfg) == list(range(cfg.seeds))  # seed 0: 0, 1, ...
    # another global seed: new, disjoint fine-tuning seeds
    assert instruct.seed_list(profiles.resolve(CH, "smoke", {"seeds": 4}, seed=7)) == [28, 29, 30, 31]
    for bad in (0, 21):
        with pytest.raises(profiles.ProfileError, match="seeds"):
            profiles.resolve(CH, "smoke", {"seeds": bad})
    paper = profiles.resolve(CH, "paper")
    assert paper.series == "olmo-1b" and paper.bench_local is False and paper.bench_limit == 0
    assert paper.sft_data == ("hh_rlhf",) and len(paper.lrs) >= 3
    assert paper.global_batch == 128 and paper.grad_checkpointing and paper.precision == "bf16"
    assert paper.panel == () and profiles.resolve(CH, "cpu").pairs_n >= 500  # the panel reads local data
    with pytest.raises(profiles.ProfileError, match="sciq.*no local"):
        profiles.resolve(CH, "smoke", {"benchmarks": ["sciq"]})
    with pytest.raises(profiles.ProfileError, match="global_batch"):
        profiles.resolve(CH, "smoke", {"global_batch": 12})  # not a multiple of batch_size 8
    from coft_utils.chapters import instruct_launch
    for name in ("olmo-1b", "olmo-2-7b-stage1", "amber"):
        import yaml
        y = yaml.safe_load(instruct_launch.fsdp_config(name).read_text())
        assert y["fsdp_config"]["fsdp_sharding_strategy"] == "FULL_SHARD" and y["mixed_precision"] == "bf16"
        assert y["fsdp_config"]["fsdp_activation_checkpointing"] is True
        cls = y["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]
        import importlib
        mod = {"OlmoDecoderLayer": "olmo", "Olmo2DecoderLayer": "olmo2", "LlamaDecoderLayer": "llama"}[cls]
        # the class exists in the installed transformers under that name
        assert hasattr(importlib.import_module(f"transformers.models.{mod}.modeling_{mod}"), cls)
    assert "Olmo2" in yaml.safe_load(instruct_launch.fsdp_config("olmo-2-7b-stage1").read_text())[
        "fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]
    with pytest.raises(profiles.ProfileError, match="no FSDP config"):
        instruct_launch.fsdp_config("pythia-1b")
    s = instruct.get_series(paper)
    toks = [c.tokens for c in s]
    assert s.checkpoints[0].hub_id == "allenai/OLMo-1B-hf" and all(c.revision for c in s)
    assert toks[0] < 0.05e12 and toks[-1] > 3.0e12
    for near in (1.5e12, 2.5e12, 3.0e12):
        assert min(abs(t - near) for t in toks) < 0.1e12
    # the paper's comparison point, 2.3T: the nearest existing revision (series.py's branch list)
    assert min(abs(t - 2.3e12) for t in toks) < 0.2e12
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
    assert Path(profiles.__file__).parents[1].joinpath("configs", "accelerate_fsdp_instruct.yaml").is_file()


def _frames(tuned_curves, base_curve, se=0.01, base_se=0.01, ppl=None):
    """Synthetic out["tuned"] / out["base"]: tuned_curves (seeds x K), base_curve (K)."""
    import pandas as pd
    K = len(base_curve)
    ppl = ppl if ppl is not None else [[20.0 - i for i in range(K)]] * len(tuned_curves)
    tuned = pd.DataFrame([{"checkpoint": f"c{i}", "tokens": 2.0 ** (10 + i), "seed": s, "lr": 1e-3,
                           "avg_acc": y, "avg_acc_stderr": se, "avg_acc_norm": y, "avg_acc_norm_stderr": se,
                           "test_ppl": ppl[s][i]}
                          for s, c in enumerate(tuned_curves) for i, y in enumerate(c)])
    base = pd.DataFrame([{"checkpoint": f"c{i}", "tokens": 2.0 ** (10 + i), "avg_acc": y, "avg_acc_stderr": base_se,
                          "avg_acc_norm": y, "avg_acc_norm_stderr": base_se, "test_ppl": 30.0 - 2 * i,
                          "test_loss_se": 0.01} for i, y in enumerate(base_curve)])
    return tuned, base


def test_choose_lr_on_the_seed_mean_and_votes():
    val = {(1e-3, 0): 10.0, (1e-3, 1): 10.0, (1e-3, 2): 30.0,   # mean 16.7, best for seeds 0 and 1
           (3e-3, 0): 11.0, (3e-3, 1): 11.0, (3e-3, 2): 12.0}   # mean 11.3, best for seed 2 only
    c = instruct.choose_lr(val, (1e-3, 3e-3), [0, 1, 2])
    assert c["best_lr"] == 3e-3 and c["votes"] == {1e-3: 2, 3e-3: 1}
    assert c["mean_val_ppl"][3e-3] == pytest.approx(34 / 3)
    val[(3e-3, 2)] = float("nan")  # a diverged seed makes that LR's mean inf
    assert instruct.choose_lr(val, (1e-3, 3e-3), [0, 1, 2])["best_lr"] == 1e-3


def test_verdict_goes_through_bends_down():
    import numpy as np
    from coft_utils.foundation import verdicts
    g = np.random.default_rng(0)
    # a bend that is smooth in log tokens (one pre-training run: a drop at the last checkpoint alone
    # would be read as that checkpoint's own luck)
    bend = 0.42 - 0.012 * (np.arange(6) - 3.2) ** 2
    tuned, base = _frames(bend + 0.005 * g.standard_normal((3, 6)), np.linspace(0.3, 0.45, 6))
    v = instruct_report.verdict(tuned, base, {"avg": 0.25}, "avg_acc_norm")
    assert isinstance(v["verdict"], verdicts.Verdict) and v["label"] == "observed" and v["n_seeds"] == 3
    assert v["best_checkpoint"] == "c3" and not v["near_chance"] and "observed" in v["text"]
    assert v["verdict"].method.startswith("best of the later half")
    # the base bending down too: no claim
    tb, bb = _frames(bend + 0.005 * g.standard_normal((3, 6)), bend, base_se=0.001)
    assert instruct_report.verdict(tb, bb, {"avg": 0.25})["label"] == "within noise"
    # flat and near chance, with wide item noise
    tf, bf = _frames(0.45 + 0.01 * g.standard_normal((3, 6)), np.full(6, 0.45), se=0.2, base_se=0.2)
    f = instruct_report.verdict(tf, bf, {"avg": 0.45})
    assert f["label"] != "observed" and f["near_chance"] and "chance" in f["text"]
    assert f["label"] in verdicts.LABELS


def test_one_seed_is_inconclusive_and_missing_seeds_are_named():
    tuned, base = _frames([[0.3, 0.4, 0.5, 0.3]], [0.3, 0.35, 0.4, 0.45])
    v = instruct_report.verdict(tuned, base, {"avg": 0.25})
    assert v["label"] == "inconclusive" and "replicate" in v["verdict"].reason
    tuned, base = _frames([[0.3, 0.4, 0.5, 0.3]] * 2, [0.3, 0.35, 0.4, 0.45])
    v = instruct_report.verdict(tuned.iloc[:-1], base, {"avg": 0.25})
    assert v["label"] == "inconclusive" and "missing" in v["verdict"].reason


def test_id_verdict_on_perplexity():
    import numpy as np
    g = np.random.default_rng(1)
    better = [list(20.0 * 0.8 ** np.arange(5) * (1 + 0.01 * g.standard_normal(5))) for _ in range(3)]
    tuned, base = _frames([[0.3] * 5] * 3, [0.3] * 5, ppl=better)
    v = instruct_report.id_verdict(tuned, base)
    assert v["label"] == "contradicted"  # the tuned ppl is best at the last checkpoint
    worse = [list(10 * np.exp(0.15 * (np.arange(5) - 2.8) ** 2) * (1 + 0.01 * g.standard_normal(5)))
             for _ in range(3)]  # smooth in log tokens: one pre-training run reads a lone spike as scatter
    tuned, base = _frames([[0.3] * 5] * 3, [0.3] * 5, ppl=worse)
    v = instruct_report.id_verdict(tuned, base)
    assert v["label"] == "observed" and "perplexity" in v["verdict"].unit and v["verdict"].statistic > 20


def test_claim_verdict_declares_acc_norm(tmp_path):
    import numpy as np
    import pandas as pd
    from coft_utils.book import claims
    from coft_utils.foundation import verdicts
    g = np.random.default_rng(2)
    # acc bends down, acc_norm does not: the claim row follows acc_norm only ("either" never counts)
    tuned, base = _frames(0.4 + 0.005 * g.standard_normal((3, 5)), np.linspace(0.3, 0.4, 5))
    tuned["avg_acc"] = tuned["avg_acc"] - tuned.checkpoint.map(dict(zip([f"c{i}" for i in range(5)],
                                                                    [0, 0, 0.011, 0.044, 0.099])))
    cfg = profiles.resolve(CH, "smoke")
    from types import SimpleNamespace
    series = SimpleNamespace(name="toy")
    out = {"tuned": tuned, "base": base, "chance": {"avg": 0.25}, "series": series, "seeds": [0, 1, 2],
           "lr_choice": pd.DataFrame([{"checkpoint": f"c{i}", "best_lr": 1e-3, "seeds choosing lr=0.001": 3}
                                      for i in range(5)])}
    cv = instruct_report.claim_verdict(out, cfg)
    assert instruct_report.CLAIM_METRIC == "avg_acc_norm" and cv["metric"] == "avg_acc_norm"
    assert cv["acc"]["label"] == "observed" and cv["verdict"].label != "observed"
    assert cv["verdict"] is cv["acc_norm"]["verdict"]
    assert "3 fine-tuning seeds" in cv["measured"] and "acc_norm" in cv["measured"] and "5 checkpoints" in cv["measured"]
    assert cv["sentence"] and cv["lr_text"].startswith("Learning rate per checkpoint")
    import json
    json.dumps(results._jsonable(cv["numbers"]))  # storable
    assert set(verdicts.LABELS) == set(claims.VERDICTS)


def test_notebook_runs_at_smoke_and_rerun_is_free(tmp_runs):
    import nbformat
    from coft_utils.book import claims, run
    from coft_utils.foundation import verdicts
    out = run.run_notebook(CH, "smoke", out_dir=tmp_runs / "nb", force=True, progress=False)
    nb = nbformat.read(out, as_version=4)
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outs) >= 3
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outs)
    assert instruct_eval.ALPACAEVAL_SKIPPED in text  # printed and on the page
    # the page opens with its answer (a verdict badge) before the method; the anchor heads the verdict
    md = [c.source for c in nb.cells if c.cell_type == "markdown"]
    i_answer = next(i for i, m in enumerate(md) if "## The answer" in m)
    assert i_answer < next(i for i, m in enumerate(md) if "## Method" in m)
    assert any('<a id="verdict"></a>' in m and "## Verdict" in m for m in md)
    html = "".join(str(o.get("data", {}).get("text/html", "")) for o in outs)
    assert any(lab in html for lab in verdicts.LABELS) and "border-radius" in html
    tags = [c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code" and "show_params" in c.source]
    assert tags and ("hide-output" in tags[0] or "hide-input" in tags[0])
    cfg = profiles.resolve(CH, "smoke")
    seeds = instruct.seed_list(cfg)
    store = results.Store(CH, "smoke")
    recs = store.records()
    stages = [r["unit"]["stage"] for r in recs]
    n_ck = cfg.n_checkpoints
    assert stages.count("base") == n_ck and stages.count("tuned") == n_ck * len(seeds)
    assert stages.count("sft") == n_ck * len(cfg.lrs) * len(seeds)
    # the general-ability panel: its own unit per base model and per tuned seed, every metric finite
    panel = [r for r in recs if r["unit"]["stage"] == "panel"]
    assert len(panel) == n_ck * (1 + len(seeds)) and {r["unit"]["of"] for r in panel} == {"base", "tuned"}
    for r in panel:
        m = r["metrics"]
        assert 0 <= m["pairs/acc"] <= 1 and m["pairs/n"] == cfg.pairs_n and m["lambada/n"] == cfg.lambada_limit
        assert all(math.isfinite(m[k]) and m[k] > 1 for k in ("lambada/ppl", "gutenberg/ppl", "wikitext/ppl"))
    for ck in {r["unit"]["checkpoint"] for r in recs}:
        sfts = {(r["unit"]["lr"], r["unit"]["seed"]): r["metrics"] for r in recs
                if r["unit"]["stage"] == "sft" and r["unit"]["checkpoint"] == ck}
        tuned = [r for r in recs if r["unit"]["stage"] == "tuned" and r["unit"]["checkpoint"] == ck]
        mean = {lr: sum(sfts[(lr, s)]["val_ppl"] for s in seeds) / len(seeds) for lr in cfg.lrs}
        best = min(mean, key=mean.get)  # the lowest seed-mean validation perplexity
        assert sorted(t["unit"]["seed"] for t in tuned) == seeds
        for t in tuned:
            assert t["unit"]["lr"] == best == t["metrics"]["best_lr"]
            assert 0 <= t["metrics"]["avg_acc"] <= 1 and t["metrics"]["test_ppl"] > 1
        for (lr, s), m in sfts.items():  # only the chosen LR's weights are kept, for every seed
            assert Path(m["model_dir"]).is_dir() == (lr == best)
            assert m["steps"] == cfg.sft_steps and m["n_train"] > 0 and math.isfinite(m["val_loss_se"])
        # different seeds are different fine-tuning runs
        assert len({round(sfts[(best, s)]["train_loss"], 8) for s in seeds}) == len(seeds)
    rec = [r for r in claims.collect() if r["claim"] == "olmo_instruction" and r["profile"] == "smoke"]
    assert rec and rec[0]["verdict"] in verdicts.LABELS and rec[0]["n_replicates"] == len(seeds)
    assert "acc_norm" in rec[0]["measured"] and f"{len(seeds)} fine-tuning seeds" in rec[0]["measured"]
    rec = [r for r in claims.collect() if r["claim"] == "cpu_general_ability" and r["profile"] == "smoke"]
    assert rec and rec[0]["verdict"] in verdicts.LABELS and "minimal-pair" in rec[0]["measured"]
    # a rerun computes nothing: same records, unchanged files
    mtimes = {p: p.stat().st_mtime_ns for p in store.dir.glob("*.json")}
    again = instruct.run(cfg, progress=False)
    assert {p: p.stat().st_mtime_ns for p in store.dir.glob("*.json")} == mtimes
    assert len(again["summary"]) == 2 * n_ck and len(again["tuned"]) == n_ck * len(seeds)
    assert again["tuned"]["pairs/acc"].notna().all() and again["base"]["gutenberg/ppl"].notna().all()
    # a change of the panel re-evaluates the panel only (new panel units; base, SFT, tuned reused)
    small = profiles.resolve(CH, "smoke", {"pairs_n": 10})
    before = {p.name for p in store.dir.glob("*.json")}
    instruct.run(small, progress=False)
    new = [results._unjson(__import__("json").loads(p.read_text()))["unit"]
           for p in store.dir.glob("*.json") if p.name not in before]
    assert len(new) == n_ck * (1 + len(seeds)) and {u["stage"] for u in new} == {"panel"}
    assert list(again["lr_choice"].columns[-len(cfg.lrs):]) == [f"seeds choosing lr={lr:g}" for lr in cfg.lrs]


def test_experiment_side_never_imports_the_report():
    """The report imports the experiment, never the reverse (the command line, instruct_launch, runs both;
    ``python -m coft_utils.chapters.instruct`` reaches it only from the ``__main__`` block)."""
    import ast
    for mod in (instruct, instruct_data, instruct_eval, instruct_sft):
        tree = ast.parse(Path(mod.__file__).read_text())
        body = [n for n in tree.body if not (isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))]
        names = {(n.module or "") + "." + a.name for b in body for n in ast.walk(b)
                 if isinstance(n, ast.ImportFrom) for a in n.names}
        assert not [x for x in names if "instruct_report" in x or "instruct_launch" in x], mod.__name__
    assert instruct_report.summarize is instruct_eval.summarize  # out["summary"] is built by collect
