"""Chapter 01's general-ability panel: metrics a small model can move, before and after tuning.

::

    from coft_utils.chapters import instruct_panel as panel
    m = panel.panel_eval(model, tok, cfg)    # {"pairs/acc": .., "lambada/ppl": .., "gutenberg/ppl": .., ...}
    panel.metrics(cfg)                       # the panel's metric columns of this config
    panel.reference(tok, cfg)                # chance / reference level of each metric
    panel.PANEL_METRICS["pairs/acc"]         # its s.e. column, scale, direction and label

At the suite's size (``smoke``/``cpu``: tens of thousands of parameters) the eight generalist
benchmarks sit at chance before and after tuning, so they cannot answer the chapter's question.
The abilities a model of this size acquires in pre-training show as language-modelling quality
on its own domain and on cloze-style text. The panel (``cfg.panel``; empty at ``paper``, where
the paper's benchmarks are the measure):

* ``minimal_pairs`` -- accuracy on the versioned minimal-pair task built from held-out
  pre-training-domain sentences (:mod:`coft_utils.foundation.minimal_pairs`: the original
  sentence against the same words with two adjacent words swapped; chance 0.5), ``pairs_n``
  pairs, through lm-eval (multiple choice, a local file);
* ``lambada_openai`` -- LAMBADA through lm-eval's own task definition on the local file
  (:func:`coft_utils.foundation.lmeval_tasks.evaluate_panel`): the perplexity of the final word
  (``lambada/ppl``; reference: a uniform guess over the vocabulary, ``V`` per target token) and
  its accuracy (``lambada/acc``: the final word is the greedy continuation; reference 0),
  ``lambada_limit`` passages, a fixed seeded subset;
* ``gutenberg`` -- token-weighted perplexity on ``panel_blocks`` held-out blocks of
  ``panel_seq_len`` tokens of the pre-training domain (:func:`coft_utils.foundation.evaluate.heldout_blocks`,
  the same blocks as chapter 02 at ``cpu``: 128 x 128); reference ``V`` (uniform);
* ``wikitext`` -- the same on WikiText-2 test (out of domain); reference ``V``.

Both lm-eval tasks run in one ``simple_evaluate`` call and both perplexities in one pass over the
blocks, on the model already loaded for the unit. Standard errors: binomial for accuracies;
for perplexities the s.e. of the mean NLL (of log perplexity) over blocks (equal lengths) or
over LAMBADA passages.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..foundation import evaluate, lmeval_tasks, minimal_pairs

if TYPE_CHECKING:
    from .instruct import Config

__all__ = ["PANEL", "PANEL_METRICS", "CLAIM_METRIC", "VERSION", "metrics", "panel_columns", "panel_eval",
           "block_perplexity", "reference", "series_reference"]

PANEL = ("minimal_pairs", "lambada_openai", "gutenberg", "wikitext")
VERSION = 1  # bump when what panel_eval computes changes (it is in the panel units' key)

# metric -> (its s.e. column, "log" (s.e. of log) or "lin", higher is better, panel member, label)
PANEL_METRICS = {
    "pairs/acc": ("pairs/acc_stderr", "lin", True, "minimal_pairs", "minimal-pair accuracy"),
    "lambada/ppl": ("lambada/loss_se", "log", False, "lambada_openai", "LAMBADA final-word perplexity"),
    "lambada/acc": ("lambada/acc_stderr", "lin", True, "lambada_openai", "LAMBADA accuracy"),
    "gutenberg/ppl": ("gutenberg/loss_se", "log", False, "gutenberg", "pre-training-domain held-out perplexity"),
    "wikitext/ppl": ("wikitext/loss_se", "log", False, "wikitext", "WikiText-2 perplexity"),
}
# the one metric of the claim row, declared before any run: the minimal-pair accuracy, the panel's
# benchmark-like accuracy (an lm-eval multiple-choice task with a chance level, 0.5, that the base
# models are far above). The others are tested the same way and reported, but do not count
# (LAMBADA accuracy is 0 for every model at this scale: it cannot move).
CLAIM_METRIC = "pairs/acc"


def metrics(cfg: Config) -> list[str]:
    """The panel's metric columns for ``cfg.panel`` (in :data:`PANEL_METRICS` order)."""
    return [m for m, v in PANEL_METRICS.items() if v[3] in cfg.panel]


def panel_columns(cfg: Config) -> list[str]:
    """Every metric column of the panel and its s.e. column (NaN in a frame row not evaluated yet)."""
    return [c for m in metrics(cfg) for c in (m, PANEL_METRICS[m][0])]


def block_perplexity(model, blocks, batch_size: int = 32) -> dict:
    """Token-weighted perplexity over equal-length blocks, and ``loss_se``: the s.e. of the mean
    per-token NLL (of log perplexity) over the blocks."""
    nll, cnt = [], []
    for i in range(0, len(blocks), batch_size):
        s, c = evaluate.masked_nll(model, blocks[i:i + batch_size], reduction="sequence")
        nll.extend(float(x) for x in s)
        cnt.extend(int(x) for x in c)
    N, tot = len(nll), sum(cnt)
    loss = sum(nll) / tot
    per = [a / b for a, b in zip(nll, cnt)]
    se = math.sqrt(sum((p - loss) ** 2 for p in per) / (N - 1) / N) if N > 1 else float("nan")
    ok = math.isfinite(loss)
    return {"ppl": math.exp(loss) if ok and loss < 700 else math.inf, "loss": loss if ok else math.inf,
            "loss_se": se if ok else float("nan"), "n_tokens": tot}


_BLOCKS: dict = {}


def _blocks(tok, source: str, cfg: Config):
    k = (evaluate.tokenizer_fingerprint(tok), source, cfg.panel_blocks, cfg.panel_seq_len)
    if k not in _BLOCKS:
        _BLOCKS[k] = evaluate.heldout_blocks(tok, source, cfg.panel_blocks, cfg.panel_seq_len)
    return _BLOCKS[k]


def panel_eval(model, tok, cfg: Config) -> dict:
    """Every metric of ``cfg.panel`` for one loaded model (flat dict; see the module doc)."""
    out = {}
    was = model.training
    model.eval()
    lm_tasks = [t for t in ("minimal_pairs", "lambada_openai") if t in cfg.panel]
    if lm_tasks:
        r = lmeval_tasks.evaluate_panel(model, tok, lm_tasks, lambada_n=cfg.lambada_limit, pairs_n=cfg.pairs_n,
                                        batch_size=cfg.eval_batch_size, max_length=cfg.eval_max_length or None)
        sc = r["scores"]
        if "minimal_pairs" in sc:
            p = sc["minimal_pairs"]
            out.update({"pairs/acc": p["acc"], "pairs/acc_stderr": p["acc_stderr"], "pairs/n": p["n"]})
        if "lambada_openai" in sc:
            p = sc["lambada_openai"]
            out.update({"lambada/ppl": p["ppl"], "lambada/loss": p["loss"], "lambada/loss_se": p["loss_se"],
                        "lambada/acc": p["acc"], "lambada/acc_stderr": p["acc_stderr"], "lambada/n": p["n"]})
        out["panel_lm_eval"] = r["lm_eval"]
    for src in ("gutenberg", "wikitext"):
        if src in cfg.panel:
            b = block_perplexity(model, _blocks(tok, src, cfg), batch_size=cfg.eval_batch_size)
            out.update({f"{src}/ppl": b["ppl"], f"{src}/loss": b["loss"], f"{src}/loss_se": b["loss_se"],
                        f"{src}/n_tokens": b["n_tokens"]})
    model.train(was)
    out["panel/vocab_size"] = int(model.get_output_embeddings().weight.shape[0])
    return out


def reference(tok, cfg: Config, vocab_size: int | None = None) -> dict:
    """The chance / reference level of each panel metric: minimal pairs 0.5 (a uniform guess between
    the two sentences); LAMBADA accuracy 0; the perplexities of a uniform guess over the ``V``
    tokens of the vocabulary: ``V`` per token for the blocks, and for LAMBADA's final word (which
    is several tokens) exp(mean over passages of its tokens x ln V)."""
    V = int(vocab_size or len(tok))
    out = {"pairs/acc": minimal_pairs.CHANCE, "lambada/acc": 0.0, "gutenberg/ppl": float(V),
           "wikitext/ppl": float(V), "vocab_size": V}
    if "lambada_openai" in cfg.panel:
        import json
        rows = [json.loads(line) for line in open(lmeval_tasks.lambada_file(cfg.lambada_limit))]
        n_tok = [len(tok(" " + r["text"].split(" ")[-1], add_special_tokens=False)["input_ids"]) for r in rows]
        out["lambada/ppl"] = math.exp(sum(n_tok) / len(n_tok) * math.log(V))
        out["lambada/target_tokens"] = sum(n_tok) / len(n_tok)
    return {k: v for k, v in out.items() if k in metrics(cfg) or k in ("vocab_size", "lambada/target_tokens")}


def series_reference(cfg: Config, series, base) -> dict:
    """:func:`reference` for a series: its first tokenizer and the models' output vocabulary as
    the panel recorded it (``base["panel/vocab_size"]``); {} without a panel or records."""
    if not cfg.panel or not len(series) or not len(base) or "panel/vocab_size" not in base:
        return {}
    from ..foundation import models
    from .instruct_data import prepare_tokenizer
    v = base["panel/vocab_size"].dropna()
    return reference(prepare_tokenizer(models.load_tokenizer(series.checkpoints[0])), cfg,
                     int(v.iloc[0]) if len(v) else None)
