"""Chapters 03 and 04, the ID metrics: scoring a (fine-tuned) model on a task's examples.

Every example is ``bos + prompt + target``: prompt and target are tokenized separately, so the
target's tokens are the same in training (:func:`coft_utils.chapters.finetune_train.train`) and
scoring; only the target tokens are scored::

    from coft_utils.chapters import finetune_eval
    ids, n = finetune_eval.encode(tok, "Review: fine. Sentiment:", " positive", max_len=64)
    finetune_eval.class_metrics(model, tok, examples)       # accuracy, class perplexity (length-normalized)
    finetune_eval.answer_perplexity(model, tok, examples)   # generative ID metric
    finetune_eval.id_metrics(model, tok, "sst2", examples, max_len=64)   # id_ppl, accuracy, id_nll

Metrics (the paper's definitions):

* classification: every class is scored by the *mean* log-probability of its verbalizer tokens
  given the prompt (length-normalized); the scores are normalized over the classes (softmax);
  ``accuracy`` = argmax is the true class; ``class_ppl`` = exp(mean over examples of
  −log p(true class)).
* generative: ``answer_ppl`` = exp of the token-weighted mean NLL of the answer tokens (+ eos).
* ``id_ppl`` is ``class_ppl`` or ``answer_ppl`` (lower is better), the metric the LR is chosen by.
"""
from __future__ import annotations

import math

import numpy as np

from ..foundation import evaluate, tasks as tasks_mod

__all__ = ["encode", "target_logprobs", "class_metrics", "answer_perplexity", "id_metrics"]


def _bos(tok) -> list[int]:
    b = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    return [b] if b is not None else []


def encode(tok, prompt: str, target: str, max_len: int, eos: bool = False) -> tuple[list[int], int]:
    """Token ids of ``bos + prompt + target (+ eos)`` and the number of target tokens at the end.

    Prompt and target are tokenized separately (the target's tokens are the same in training and
    scoring). Too long: the target is cut at ``max_len - 2`` tokens and the prompt from the left.
    """
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    t = tok(target, add_special_tokens=False)["input_ids"]
    if eos and tok.eos_token_id is not None:
        t = t + [tok.eos_token_id]
    if not t:
        raise ValueError(f"empty target {target!r}")
    bos = _bos(tok)
    t = t[:max_len - len(bos) - 1]
    room = max_len - len(bos) - len(t)
    p = p[-room:] if room > 0 else []
    return bos + p + t, len(t)


def target_logprobs(model, seqs: list[tuple[list[int], int]], batch_size: int = 32,
                    pad_id: int = 0) -> list[tuple[float, int]]:
    """(sum of log p of the last ``n`` tokens of each sequence, n), batched with right padding."""
    import torch
    out: list[tuple[float, int]] = [None] * len(seqs)  # type: ignore[list-item]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            L = max(len(seqs[i][0]) for i in idx)
            x = torch.full((len(idx), L), pad_id, dtype=torch.long)
            m = torch.zeros((len(idx), L), dtype=torch.long)
            for r, i in enumerate(idx):
                ids = seqs[i][0]
                x[r, :len(ids)] = torch.tensor(ids)
                m[r, :len(ids)] = 1
            nll, _ = evaluate.masked_nll(model, x, attention_mask=m, reduction="token")
            tok_lp = (-nll).double()
            for r, i in enumerate(idx):
                ids, n = seqs[i]
                out[i] = (float(tok_lp[r, len(ids) - 1 - n:len(ids) - 1].sum()), n)
    return out


def class_metrics(model, tok, examples: list[dict], max_len: int = 128, batch_size: int = 32) -> dict:
    """Accuracy and class perplexity (length-normalized verbalizer scores, softmax over classes)."""
    seqs, owner = [], []
    for e in examples:
        for c in e["choices"]:
            seqs.append(encode(tok, e["prompt"], c, max_len))
            owner.append(len(owner))
    lp = target_logprobs(model, seqs, batch_size, _pad(tok))
    k, nll, correct = 0, [], 0
    for e in examples:
        n = len(e["choices"])
        scores = np.array([s / cnt for s, cnt in lp[k:k + n]])
        k += n
        logz = np.logaddexp.reduce(scores)
        nll.append(-(scores[e["label"]] - logz))
        correct += int(np.argmax(scores) == e["label"])
    mean_nll = float(np.mean(nll))
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged model: inf / NaN, recorded as diverged
        ppl = float(np.exp(mean_nll))
    return {"accuracy": correct / len(examples), "class_nll": mean_nll, "class_ppl": ppl, "n": len(examples)}


def answer_perplexity(model, tok, examples: list[dict], max_len: int = 128, batch_size: int = 32) -> dict:
    """Token-weighted perplexity of the answer tokens (+ eos) given the prompt."""
    seqs = [encode(tok, e["prompt"], e["target"], max_len, eos=True) for e in examples]
    lp = target_logprobs(model, seqs, batch_size, _pad(tok))
    tot, cnt = -sum(s for s, _ in lp), sum(n for _, n in lp)
    loss = tot / cnt
    return {"answer_nll": loss, "answer_ppl": math.exp(min(loss, 700.0)), "n_tokens": cnt, "n": len(examples)}


def _pad(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


def id_metrics(model, tok, task, examples: list[dict], max_len: int, batch_size: int = 32) -> dict:
    """The task's ID metrics with a common ``id_ppl`` (lower is better) and ``accuracy`` (cls only)."""
    task = tasks_mod.get(task)
    if task.kind == "classification":
        m = class_metrics(model, tok, examples, max_len, batch_size)
        return {"id_ppl": m["class_ppl"], "accuracy": m["accuracy"], "id_nll": m["class_nll"]}
    m = answer_perplexity(model, tok, examples, max_len, batch_size)
    return {"id_ppl": m["answer_ppl"], "accuracy": float("nan"), "id_nll": m["answer_nll"]}
