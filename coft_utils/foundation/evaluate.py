"""Perplexity on a fixed set of held-out tokens: the same tokens for every checkpoint of a series.

::

    from coft_utils.foundation import evaluate, models
    tok = models.load_tokenizer(ckpt)
    blocks = evaluate.heldout_blocks(tok, "gutenberg", n_blocks=64, seq_len=128)  # LongTensor [64, 128]
    r = evaluate.perplexity(model, blocks, batch_size=16)
    r["ppl"], r["loss"], r["n_tokens"], r["diverged"]

Sources: ``gutenberg`` (the Gutenberg validation book bodies: pre-training domain here) and
``wikitext`` (WikiText-2 test: out of domain). Blocks are cut from the whole tokenized source
and ``n_blocks`` of them are taken evenly spaced, deterministically; the token ids are cached
on disk per tokenizer (keyed by a hash of its vocabulary and merges). Perplexity is
token-weighted: exp of the mean negative log-likelihood over every predicted token. A
non-finite loss is reported as ``ppl = inf`` with ``diverged = True``, never an exception.
"""
from __future__ import annotations

import hashlib
import math
import os

import numpy as np

from . import data

SOURCES = ("gutenberg", "wikitext")
# The most tokens any tokenizer can make of each source: its UTF-8 bytes plus 2 per document (a
# byte-level BPE makes at most one token per byte; + eos and a leading-space piece). Known before
# any tokenizer exists, so an n_blocks x seq_len that cannot fit is refused at config time.
MAX_TOKENS = {"gutenberg": 5_384_660 + 2 * 13, "wikitext": 1_256_449 + 2}


def max_blocks(source: str, seq_len: int) -> int | None:
    """An upper bound on :func:`heldout_blocks`'s ``n_blocks`` at ``seq_len`` (None: unknown source)."""
    return MAX_TOKENS[source] // seq_len if source in MAX_TOKENS else None


def check_blocks(source: str, n_blocks: int, seq_len: int, names: tuple[str, str] = ("n_blocks", "seq_len")):
    """Raise :class:`coft_utils.foundation.profiles.ProfileError` when ``n_blocks`` blocks of ``seq_len``
    tokens cannot fit in the held-out ``source`` (whatever the tokenizer)."""
    from .profiles import ProfileError
    cap = max_blocks(source, seq_len)
    if cap is not None and n_blocks > cap:
        raise ProfileError(
            f"parameter {names[0]!r} = {n_blocks} blocks of {names[1]} = {seq_len} tokens is more than the "
            f"held-out source {source!r} can give ({MAX_TOKENS[source]:,} tokens at most); allowed at "
            f"{names[1]} = {seq_len}: {names[0]} <= {cap}")


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _source_texts(source: str) -> list[str]:
    if source == "gutenberg":
        return list(data.gutenberg_bodies("validation"))
    if source == "wikitext":
        ds = data.load("wikitext2_tokenized_valid_test", "test")
        return ["".join(ds["text"])]
    raise data.DataError(f"unknown held-out source {source!r}; allowed: {', '.join(SOURCES)}")


def source_ids(tokenizer, source: str) -> np.ndarray:
    """All token ids of a held-out source (documents joined by eos), cached per tokenizer."""
    cache = data.cache_dir() / "heldout" / f"{source}-{tokenizer_fingerprint(tokenizer)}.npy"
    if cache.is_file():
        return np.load(cache)
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in _source_texts(source):
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    arr = np.asarray(ids, dtype=np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}.npy")
    np.save(tmp, arr)
    os.replace(tmp, cache)
    return arr


def heldout_blocks(tokenizer, source: str = "gutenberg", n_blocks: int = 64, seq_len: int = 128):
    """``n_blocks`` evenly spaced blocks of ``seq_len`` tokens from the held-out source."""
    import torch
    if not (isinstance(n_blocks, int) and n_blocks >= 1):
        raise ValueError(f"n_blocks must be an integer >= 1, got {n_blocks!r}")
    if not (isinstance(seq_len, int) and seq_len >= 2):
        raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")
    ids = source_ids(tokenizer, source)
    total = len(ids) // seq_len
    if total < n_blocks:
        raise ValueError(f"held-out source {source!r} has only {total} blocks of {seq_len} tokens; "
                         f"asked for n_blocks={n_blocks}")
    starts = np.linspace(0, total - 1, n_blocks).round().astype(np.int64) * seq_len
    return torch.from_numpy(np.stack([ids[s:s + seq_len] for s in starts]))


def nll_sum(model, blocks, batch_size: int = 16) -> tuple[float, int]:
    """Summed next-token NLL (float64) and the number of predicted tokens."""
    import torch
    import torch.nn.functional as F
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(blocks), batch_size):
            x = blocks[i:i + batch_size].to(device)
            logits = model(input_ids=x).logits[:, :-1].float()
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1),
                                  reduction="sum")
            total += float(nll)
            count += x[:, 1:].numel()
    return total, count


def perplexity(model, blocks, batch_size: int = 16) -> dict:
    total, count = nll_sum(model, blocks, batch_size)
    loss = total / count
    diverged = not math.isfinite(loss)
    ppl = math.inf if diverged or loss > 700 else math.exp(loss)
    return {"loss": loss if not diverged else math.inf, "ppl": ppl, "n_tokens": count,
            "diverged": diverged}
