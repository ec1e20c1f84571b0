"""Chapter 01's general-ability panel (issue 16): the minimal-pair task, LAMBADA through lm-eval's
own task, the panel's perplexities, its units and its verdicts.

* the minimal-pair construction is deterministic, never yields an identical pair, swaps exactly
  two adjacent alphabetic words (never the first or the last), drops sentences that the training
  text also has or that repeat, and its real items come from the held-out books;
* lm-eval's accuracy on the minimal-pair task equals a direct computation on a tiny model (the
  same per-item log-likelihoods), and LAMBADA is lm-eval's own task definition whose perplexity
  equals exp(-mean log p(last word | passage)) computed by hand;
* the panel's records are their own units: a change of the panel changes only their key.
"""
from __future__ import annotations

import math
import os

import pytest

torch = pytest.importorskip("torch")

from coft_utils.chapters import instruct, instruct_panel, instruct_report  # noqa: E402
from coft_utils.foundation import data, evaluate, lmeval_tasks, minimal_pairs as mp, models, profiles  # noqa: E402

CH = "01_instruction_tuning"

HELD = ("The old man walked slowly along the road to the village. He had never seen such a quiet "
        "morning in all his life.\n\nShe opened the door and looked out at the garden for a long while. "
        "The old man walked slowly along the road to the village.\n\nIt was a leaked sentence that the "
        "training books also hold in full. Short one here. Then they went home together and slept until "
        "the sun was high in the sky.")
TRAIN = "Some other text.\nIt was a leaked sentence that the\ntraining books also hold in full. More text here."


def _check_item(d, originals):
    a, b = d["choices"]
    orig, swapped = d["choices"][d["gold"]], d["choices"][1 - d["gold"]]
    assert a != b and d["text"] == ""
    assert orig in originals
    wo, ws = orig.split(" "), swapped.split(" ")
    k = d["swap"]
    assert len(wo) == len(ws) and 1 <= k and k + 1 <= len(wo) - 2
    assert ws[k] == wo[k + 1] and ws[k + 1] == wo[k] and wo[k].lower() != wo[k + 1].lower()
    assert [x for i, x in enumerate(ws) if i not in (k, k + 1)] == [x for i, x in enumerate(wo) if i not in (k, k + 1)]
    assert wo[k].isalpha() and wo[k + 1].isalpha()


def test_minimal_pairs_construction():
    sents = list(mp.sentences(HELD))
    assert "Short one here." not in sents  # too short
    items = mp.build([HELD], [TRAIN], n=10, seed=0)
    assert items == mp.build([HELD], [TRAIN], n=10, seed=0)  # deterministic
    origs = {d["choices"][d["gold"]] for d in items}
    # the leaked sentence (in the training text, across a line break) and the repeated one are out
    assert not any("leaked" in s for s in origs)
    assert not any(s.startswith("The old man walked") for s in origs)
    assert len(items) == 3 and len(origs) == 3
    for d in items:
        _check_item(d, set(sents))
    # the same sentence gets the same swap whatever else is in the corpus; the seed only reorders
    other = mp.build([HELD], [], n=10, seed=1)
    by = {d["choices"][d["gold"]]: d["swap"] for d in other}
    assert all(by[d["choices"][d["gold"]]] == d["swap"] for d in items)
    assert len(other) == 4 and any("leaked" in d["choices"][d["gold"]] for d in other)
    # a sentence without two different adjacent alphabetic words inside it has no item
    assert mp.swap("Yes yes yes yes yes yes yes yes.") is None
    assert mp.TASK.endswith(f"_v{mp.VERSION}")


def test_minimal_pairs_on_the_heldout_books():
    items = mp.pairs(n=200, seed=0)
    assert items == mp.pairs(n=200, seed=0) and len(items) == 200
    books = [set(mp.sentences(b)) for b in data.gutenberg_bodies("validation")]
    for d in items:
        _check_item(d, books[d["book"]])
    assert 0.3 < sum(d["gold"] for d in items) / len(items) < 0.7  # the original's position is drawn
    # no item is a sentence of the training books (here: the first 40 of them; build() checks all)
    origs = {d["choices"][d["gold"]] for d in items}
    for text in data.gutenberg_bodies("train", max_books=25):
        assert not origs & set(mp._pieces(text))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A randomly initialized olmo-pico with a 512-token BPE trained on held-out text."""
    root = tmp_path_factory.mktemp("panel_lm")
    old = os.environ.get("COFT_CACHE_DIR")
    os.environ["COFT_CACHE_DIR"] = str(root / "cache")
    try:
        tok = models.train_tokenizer(data.gutenberg_bodies("validation", max_chars=100_000), 512)
    finally:
        if old is None:
            os.environ.pop("COFT_CACHE_DIR", None)
        else:
            os.environ["COFT_CACHE_DIR"] = old
    torch.set_num_threads(1)  # two threads on two busy cores run many times slower
    model = models.build_model(models.olmo_config("olmo-pico", len(tok), max_len=512,
                                                  pad_token_id=tok.pad_token_id), seed=0).eval()
    return model, tok


def _logp(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)


def test_lmeval_minimal_pair_accuracy_equals_a_direct_computation(tiny):
    model, tok = tiny
    n = 40
    r = lmeval_tasks.evaluate_panel(model, tok, ["minimal_pairs"], pairs_n=n, batch_size=8, log_samples=True)
    samples = sorted(r["samples"]["minimal_pairs"], key=lambda s: s["doc_id"])
    items = mp.pairs(n)
    assert len(samples) == n and r["scores"]["minimal_pairs"]["n"] == n
    prefix = lmeval_tasks._lm(model, tok, 8, None, None).prefix_token_id
    correct = []
    for s, d in zip(samples, items):
        assert s["doc"]["choices"] == d["choices"] and s["doc"]["gold"] == d["gold"]
        mine = []
        for c in d["choices"]:  # empty context: conditioned on the prefix token, " " + sentence scored
            cont = tok(" " + c, add_special_tokens=False)["input_ids"]
            ids = [prefix] + cont
            lp = _logp(model, ids)
            mine.append(float(sum(lp[i - 1, ids[i]] for i in range(1, len(ids)))))
        theirs = [x[0] for x in s["filtered_resps"]]
        assert theirs == pytest.approx(mine, abs=2e-3)
        correct.append(float(max(range(2), key=lambda i: mine[i]) == d["gold"]))
        assert s["acc"] == correct[-1]
    assert r["scores"]["minimal_pairs"]["acc"] == pytest.approx(sum(correct) / n)
    assert r["scores"]["minimal_pairs"]["acc_stderr"] == pytest.approx(
        math.sqrt(sum(correct) / n * (1 - sum(correct) / n) / n))


def test_lambada_is_lm_evals_own_task_on_the_local_file(tiny):
    import yaml
    import lm_eval.tasks
    from pathlib import Path
    model, tok = tiny
    own = yaml.safe_load((Path(lm_eval.tasks.__file__).parent / "lambada" / "lambada_openai.yaml").read_text())
    path = lmeval_tasks.lambada_file(6, seed=0)
    task, _ = lmeval_tasks.lambada_task(path)
    assert task.config.doc_to_text == own["doc_to_text"] and task.config.doc_to_target == own["doc_to_target"]
    assert task.OUTPUT_TYPE == "loglikelihood" and [m["metric"] for m in task.config.metric_list] == ["perplexity", "acc"]
    # a fixed seeded subset of the local file, whose texts are context + " " + continuation
    import json
    rows = [json.loads(line) for line in open(path)]
    src = {r["context"] + " " + r["continuation"] for r in data.load("lambada_openai", "test")}
    assert len(rows) == 6 and all(r["text"] in src for r in rows)
    assert rows != [json.loads(line) for line in open(lmeval_tasks.lambada_file(6, seed=1))]
    r = lmeval_tasks.evaluate_panel(model, tok, ["lambada_openai"], lambada_n=6, batch_size=8, log_samples=True)
    lls = []
    for s in sorted(r["samples"]["lambada_openai"], key=lambda s: s["doc_id"]):
        text = s["doc"]["text"]
        ctx, last = text.rsplit(" ", 1)
        c = tok(ctx, add_special_tokens=False)["input_ids"]
        whole = tok(ctx + " " + last, add_special_tokens=False)["input_ids"]
        lp = _logp(model, whole)
        mine = float(sum(lp[i - 1, whole[i]] for i in range(len(c), len(whole))))
        assert s["filtered_resps"][0][0] == pytest.approx(mine, abs=2e-3)
        lls.append(mine)
    sc = r["scores"]["lambada_openai"]
    assert sc["ppl"] == pytest.approx(math.exp(-sum(lls) / len(lls)), rel=1e-3)
    assert sc["loss"] == pytest.approx(-sum(lls) / len(lls), abs=1e-3) and sc["loss_se"] > 0


def test_block_perplexity_and_reference(tiny):
    model, tok = tiny
    blocks = evaluate.heldout_blocks(tok, "gutenberg", 8, 32)
    b = instruct_panel.block_perplexity(model, blocks, batch_size=3)
    ref = evaluate.perplexity(model, blocks, batch_size=4)
    assert b["ppl"] == pytest.approx(ref["ppl"], rel=1e-5) and b["n_tokens"] == ref["n_tokens"]
    assert 0 < b["loss_se"] < 1
    cfg = profiles.resolve(CH, "smoke")
    r = instruct_panel.reference(tok, cfg, vocab_size=512)
    assert r["pairs/acc"] == 0.5 and r["gutenberg/ppl"] == r["wikitext/ppl"] == 512.0 and r["lambada/acc"] == 0
    assert r["lambada/ppl"] == pytest.approx(512.0 ** r["lambada/target_tokens"])


def test_panel_units_have_their_own_key_and_paper_has_no_panel():
    cfg = profiles.resolve(CH, "smoke")
    other = profiles.resolve(CH, "smoke", {"pairs_n": 21})
    assert instruct._panel_key(cfg) != instruct._panel_key(other)
    assert instruct._tuned_key(cfg) == instruct._tuned_key(other)  # base and tuned records stay valid
    assert instruct._key(cfg, instruct._EVAL_FIELDS) == instruct._key(other, instruct._EVAL_FIELDS)
    assert instruct._key(cfg, instruct._SFT_FIELDS) == instruct._key(other, instruct._SFT_FIELDS)
    b = instruct._panel_units(cfg, "s", "c", "w")
    t = instruct._panel_units(cfg, "s", "c", "w", 1e-3, 0)
    assert b["of"] == "base" and t["of"] == "tuned" and b["key"] != t["key"] and t["lr"] == 1e-3
    assert profiles.resolve(CH, "paper").panel == ()
    with pytest.raises(profiles.ProfileError, match="panel"):
        profiles.resolve(CH, "paper", {"panel": ["gutenberg"]})
    assert set(profiles.resolve(CH, "cpu").panel) == set(instruct_panel.PANEL)


def test_panel_verdicts_on_synthetic_frames():
    """A tuned minimal-pair curve that drops at the last checkpoint (3 seeds) while the base keeps
    rising is observed; the same tuned curve still rising is not."""
    import numpy as np
    import pandas as pd
    cfg = profiles.resolve(CH, "smoke")
    K, toks = 6, [2.0 ** (18 + i) for i in range(6)]
    g = np.random.default_rng(0)

    def frames(last):
        curve = [*(0.85 - 0.03 * (np.arange(5) - 4.0) ** 2), last]  # smooth in log tokens
        base = pd.DataFrame([{"checkpoint": f"c{i}", "tokens": toks[i], "pairs/acc": 0.68 + 0.045 * i,
                              "pairs/acc_stderr": 0.018} for i in range(K)])
        tuned = pd.DataFrame([{"checkpoint": f"c{i}", "tokens": toks[i], "seed": s, "lr": 1e-3,
                               "pairs/acc": curve[i] + 0.005 * g.standard_normal()} for s in range(3) for i in range(K)])
        return {"tuned": tuned, "base": base, "seeds": [0, 1, 2], "series": type("S", (), {"name": "x"})(),
                "lr_choice": pd.DataFrame(), "panel_reference": {"pairs/acc": 0.5}}
    cfg = profiles.resolve(CH, "smoke", {"panel": ["minimal_pairs"]})
    down = instruct_report.panel_verdicts(frames(0.82), cfg)["pairs/acc"]
    up = instruct_report.panel_verdicts(frames(0.88), cfg)["pairs/acc"]
    assert down["label"] == "observed" and down["claim"] and down["base_improves"].label == "observed"
    assert up["label"] != "observed"
    pc = instruct_report.panel_claim(frames(0.82), cfg)
    assert pc["verdict"].label == "observed" and "minimal-pair" in pc["measured"]
