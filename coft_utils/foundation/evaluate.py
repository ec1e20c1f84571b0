"""Held-out tokens and perplexity: the same tokens for every checkpoint of a series.

::

    from coft_utils.foundation import evaluate, models
    tok = models.load_tokenizer(ckpt)
    blocks = evaluate.heldout_blocks(tok, "gutenberg", n_blocks=64, seq_len=128)  # LongTensor [64, 128]
    r = evaluate.perplexity(model, blocks, batch_size=16)
    r["ppl"], r["loss"], r["n_tokens"], r["diverged"]

    ids = evaluate.heldout_ids(tok, "c4", 4096)                       # the first 4096 tokens of C4
    c4 = evaluate.heldout_blocks(tok, "c4", 16, 64, oversample=4)     # chapter 02's C4 blocks
    c4 = evaluate.heldout_blocks(tok, "c4", 64, 64, oversample=1, whole_documents=False)  # chapter 03's
    total, count = evaluate.masked_nll(model, input_ids, mask=target_mask)  # one batch, summed

Sources (:data:`HELDOUT`): ``gutenberg`` (the Gutenberg validation book bodies: the
pre-training domain here), ``wikitext`` (WikiText-2 test: out of domain) and ``c4`` (the C4
validation split, ``allenai/c4`` ``en``, streamed from the hub: the paper's pre-training domain;
read from the data folder instead if the data registry ever holds a local ``c4`` validation split).
Each source is a list of documents, tokenized one by one (no special tokens) and joined by eos.

Origin. ``origin="local"`` (the default: smoke, cpu, gpu) reads a source from ``../shared/data``;
``origin="hub"`` (``paper``: ``hubdata.source_for(profile)``) reads it from its hub repository's
own files through :mod:`coft_utils.foundation.hubdata` (``wikitext``: Salesforce/wikitext's
WikiText-2 test file, the same text as the local copy; ``c4``: allenai/c4's ``en`` validation
shards, file by file). ``c4`` is always read from the hub; ``gutenberg`` has no hub copy and is
refused at ``origin="hub"``. A hub-read stream is cached under its own name (``...-hub-...``), so
a local and a hub copy never share a cache file::

    ids = evaluate.heldout_ids(tok, "wikitext", origin="hub")
    blocks = evaluate.heldout_blocks(tok, "wikitext", 64, 128, origin="hub")

:func:`heldout_ids` gives the token stream: the whole source (``n_tokens=None``; not for ``c4``),
or its first ``n_tokens`` tokens exactly (fewer only if the source is shorter), or, with
``whole_documents=True``, every document until ``n_tokens`` is reached (so the stream ends at a
document's end and is usually a little longer). Streams are cached in ``<cache>/heldout/`` under
a name holding the source, the tokenizer's fingerprint, the token count, the mode and
:data:`CACHE_VERSION`, so two different requests never share a file; a file is written to a
temporary file of the same folder, fsynced and renamed into place (readers see no file or a
complete one), and a reader checks its metadata, dtype, length and sha256, recomputing a corrupt
or foreign file. Concurrent processes (DDP ranks) serialise the first computation on a lock file.

:func:`heldout_blocks` cuts the stream into blocks of ``seq_len`` tokens and takes ``n_blocks``
of them evenly spaced, deterministically. Perplexity is token-weighted: exp of the mean negative
log-likelihood over every predicted token (:func:`masked_nll` is the one next-token NLL). A
non-finite loss is reported as ``ppl = inf`` with ``diverged = True``, never an exception.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import data

SOURCES = ("gutenberg", "wikitext")  # local sources, read whole by default
STREAMED = ("c4",)  # hub sources: a token count is always given
ALL_SOURCES = SOURCES + STREAMED
CACHE_VERSION = 2  # bump when what a cache file holds changes
# The most tokens any tokenizer can make of each source: its UTF-8 bytes plus 2 per document (a
# byte-level BPE makes at most one token per byte; + eos and a leading-space piece). Known before
# any tokenizer exists, so an n_blocks x seq_len that cannot fit is refused at config time.
MAX_TOKENS = {"gutenberg": 5_384_660 + 2 * 13, "wikitext": 1_256_449 + 2}


# --------------------------------------------------------------------------- the sources
ORIGINS = ("local", "hub")


def _check_origin(origin: str) -> str:
    if origin not in ORIGINS:
        raise ValueError(f"unknown origin {origin!r}; allowed: {', '.join(ORIGINS)}")
    return origin


def _gutenberg_documents(origin: str = "local") -> Iterator[str]:
    if origin == "hub":
        raise data.DataError("held-out source 'gutenberg' has no hub copy (it is this project's own corpus); "
                             "allowed with origin='hub': wikitext, c4")
    return data.gutenberg_bodies("validation")


def _hubdata():
    try:
        from . import hubdata
    except ImportError:
        return None
    return hubdata


def _wikitext_documents(origin: str = "local") -> Iterator[str]:
    if origin == "hub":
        ds = _hubdata().load("wikitext", "test", source="hub")
    else:
        ds = data.load("wikitext2_tokenized_valid_test", "test")
    yield "".join(ds["text"])


def _c4_documents(origin: str = "hub") -> Iterator[str]:
    s = data.spec("c4")
    hd = _hubdata()
    if s.local and "validation" in s.splits:  # a local copy registered in the data folder
        ds = data.load("c4", "validation")
    elif hd is not None:  # the repository's own validation shards, file by file (hubdata)
        yield from hd.iter_texts("c4", "validation")
        return
    else:
        import datasets
        try:
            ds = datasets.load_dataset(s.hub, s.hub_config, split="validation", streaming=True)
        except Exception as e:  # offline, or the hub unreachable
            raise data.DataError(f"held-out source 'c4' is streamed from the hub ({s.hub}, "
                                 f"{s.hub_config}) and could not be opened: {e}") from e
    for rec in ds:
        yield rec["text"]


@dataclass(frozen=True)
class HeldoutSource:
    """A held-out source: its documents, in a fixed order, and where they come from."""

    name: str
    data_set: str  # its name in data.REGISTRY
    split: str
    documents: Callable[..., Iterator[str]]  # documents() -> the texts; documents("hub") from the hub
    streamed: bool = False  # True: read only as far as a request needs (n_tokens required)


HELDOUT: dict[str, HeldoutSource] = {
    "gutenberg": HeldoutSource("gutenberg", "gutenberg_top100_authors", "validation", _gutenberg_documents),
    "wikitext": HeldoutSource("wikitext", "wikitext2_tokenized_valid_test", "test", _wikitext_documents),
    "c4": HeldoutSource("c4", "c4", "validation", _c4_documents, streamed=True),
}


def data_names(sources, origin: str = "local") -> list[str]:
    """The local data sets (``data.REGISTRY`` names) behind held-out ``sources``, for result
    provenance (their checksums go into every record); hub-only sources (c4) have none, and
    nothing local is read at ``origin="hub"``."""
    from . import data
    if _check_origin(origin) == "hub":
        return []
    out = []
    for s in sources:
        name = _source(s).data_set
        if data.spec(name).local and name not in out:
            out.append(name)
    return out


def _source(source: str) -> HeldoutSource:
    if source not in HELDOUT:
        raise data.DataError(f"unknown held-out source {source!r}; allowed: {', '.join(HELDOUT)}")
    return HELDOUT[source]


def documents(source: str, origin: str = "local") -> Iterator[str]:
    """The documents of a held-out source, in their fixed order (``c4``: streamed from the hub)."""
    src = _source(source)
    # a source's documents() takes the origin; a zero-argument one (a user's source) is local only
    return src.documents() if _check_origin(origin) == "local" else src.documents(origin)


def max_blocks(source: str, seq_len: int) -> int | None:
    """An upper bound on :func:`heldout_blocks`'s ``n_blocks`` at ``seq_len`` (None: unknown or unbounded)."""
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


# --------------------------------------------------------------------------- the cache
def _mode(n_tokens: int | None, whole_documents: bool) -> str:
    return "all" if n_tokens is None else ("docs" if whole_documents else "trim")


def _tag(source: str, origin: str) -> str:
    """The source's name in cache files: ``<source>-hub`` for a local source read from the hub."""
    return f"{source}-hub" if _check_origin(origin) == "hub" and not _source(source).streamed else source


def cache_path(tokenizer, source: str, n_tokens: int | None = None, whole_documents: bool = False,
               origin: str = "local") -> Path:
    """Where :func:`heldout_ids` caches this request: ``heldout/<source>-<fingerprint>-<what>-v<N>.npz``,
    ``<what>`` = ``all`` (the whole source), ``n<count>-trim`` or ``n<count>-docs`` (whole documents);
    ``<source>`` is ``wikitext-hub`` etc. when a local source is read from the hub."""
    what = "all" if n_tokens is None else f"n{n_tokens}-{_mode(n_tokens, whole_documents)}"
    name = f"{_tag(source, origin)}-{tokenizer_fingerprint(tokenizer)}-{what}-v{CACHE_VERSION}.npz"
    return data.cache_dir() / "heldout" / name


def _sha(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids).tobytes()).hexdigest()


def _read(path: Path, expect: dict) -> np.ndarray | None:
    """The cached ids if the file is complete and is this request's; None if absent or not valid."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            ids = z["ids"]
        n, length = expect["n_tokens"], meta["length"]
        ok = (all(meta.get(k) == v for k, v in expect.items()) and ids.dtype == np.int64
              and ids.ndim == 1 and len(ids) == length and _sha(ids) == meta["sha256"]
              and (n is None or (length == n if expect["mode"] == "trim" else length >= n)
                   or (meta["exhausted"] and length <= n)))
    except Exception as e:  # a truncated, corrupt or foreign file
        ok, why = False, f"{type(e).__name__}: {e}"
    else:
        why = "its metadata, dtype, length or checksum do not match the request"
    if not ok:
        warnings.warn(f"held-out cache file {path} is not valid ({why}); recomputing it", stacklevel=3)
        return None
    return ids


def _atomic_save(path: Path, ids: np.ndarray, meta: dict) -> None:
    """Write ``ids`` and ``meta`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, ids=ids, meta=np.array(json.dumps(meta, sort_keys=True)))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (best effort)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``<path>.lock`` (where ``fcntl`` exists), so one process computes."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic write alone keeps readers safe
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: each process computes, writes stay atomic
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tokenize(tokenizer, source: str, n_tokens: int | None, whole_documents: bool,
              origin: str = "local") -> tuple[np.ndarray, bool]:
    """(ids, exhausted): documents tokenized one by one and joined by eos, until ``n_tokens``."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    exhausted = True
    for text in documents(source, origin):
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
        if n_tokens is not None and len(ids) >= n_tokens:
            exhausted = False
            break
    if n_tokens is not None and not whole_documents:
        ids = ids[:n_tokens]
    return np.asarray(ids, dtype=np.int64), exhausted


def heldout_ids(tokenizer, source: str, n_tokens: int | None = None, *, whole_documents: bool = False,
                origin: str = "local") -> np.ndarray:
    """Token ids (1-D int64) of a held-out source, cached per request (see the module docstring).

    ``n_tokens=None``: the whole source (``gutenberg``, ``wikitext``; a streamed source refuses).
    Otherwise the first ``n_tokens`` tokens exactly, fewer only when the source is shorter; with
    ``whole_documents=True`` the stream runs on to the end of the document that reaches
    ``n_tokens`` (at least ``n_tokens`` tokens, unless the source is shorter). ``origin``: where a
    source is read from (``"local"`` or ``"hub"``; see the module docstring).
    """
    src = _source(source)
    _check_origin(origin)
    if n_tokens is None:
        if src.streamed:
            raise ValueError(f"held-out source {source!r} is streamed: give n_tokens (an integer >= 1)")
    elif not (isinstance(n_tokens, (int, np.integer)) and not isinstance(n_tokens, bool) and n_tokens >= 1):
        raise ValueError(f"n_tokens must be an integer >= 1 or None, got {n_tokens!r}")
    else:
        n_tokens = int(n_tokens)
    whole_documents = bool(whole_documents)
    path = cache_path(tokenizer, source, n_tokens, whole_documents, origin)
    expect = {"version": CACHE_VERSION, "source": _tag(source, origin), "tokenizer": tokenizer_fingerprint(tokenizer),
              "n_tokens": n_tokens, "mode": _mode(n_tokens, whole_documents)}
    ids = _read(path, expect)
    if ids is not None:
        return ids
    with _locked(path):
        ids = _read(path, expect)  # another process may have written it while we waited
        if ids is None:
            ids, exhausted = _tokenize(tokenizer, source, n_tokens, whole_documents, origin)
            _atomic_save(path, ids, {**expect, "length": len(ids), "sha256": _sha(ids), "exhausted": exhausted})
    return ids


def source_ids(tokenizer, source: str) -> np.ndarray:
    """All token ids of a local held-out source (documents joined by eos): ``heldout_ids(tok, source)``."""
    return heldout_ids(tokenizer, source)


def heldout_blocks(tokenizer, source: str = "gutenberg", n_blocks: int = 64, seq_len: int = 128, *,
                   oversample: int | None = None, whole_documents: bool = True, origin: str = "local"):
    """``n_blocks`` evenly spaced blocks of ``seq_len`` tokens (LongTensor ``[n_blocks, seq_len]``).

    ``oversample=None``: cut from the whole source (``gutenberg``, ``wikitext``). ``oversample=k``:
    from ``heldout_ids(tok, source, k * n_blocks * seq_len, whole_documents=whole_documents)``;
    ``c4`` needs it. Chapter 02's C4 blocks are ``oversample=4`` (whole documents); chapter 03's
    are ``oversample=1, whole_documents=False``: exactly ``n_blocks * seq_len`` tokens, so the
    blocks are consecutive (``ids.reshape(n_blocks, seq_len)``). ``origin``: see :func:`heldout_ids`.
    """
    import torch
    if not (isinstance(n_blocks, int) and n_blocks >= 1):
        raise ValueError(f"n_blocks must be an integer >= 1, got {n_blocks!r}")
    if not (isinstance(seq_len, int) and seq_len >= 2):
        raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")
    if oversample is None:
        ids = heldout_ids(tokenizer, source, origin=origin)
    elif isinstance(oversample, int) and not isinstance(oversample, bool) and oversample >= 1:
        ids = heldout_ids(tokenizer, source, oversample * n_blocks * seq_len, whole_documents=whole_documents,
                          origin=origin)
    else:
        raise ValueError(f"oversample must be an integer >= 1 or None, got {oversample!r}")
    total = len(ids) // seq_len
    if total < n_blocks:
        raise ValueError(f"held-out source {source!r} has only {total} blocks of {seq_len} tokens; "
                         f"asked for n_blocks={n_blocks}")
    starts = np.linspace(0, total - 1, n_blocks).round().astype(np.int64) * seq_len
    return torch.from_numpy(np.stack([ids[s:s + seq_len] for s in starts]))


# --------------------------------------------------------------------------- NLL and perplexity
def masked_nll(model, input_ids, mask=None, *, labels=None, attention_mask=None, reduction: str = "sum"):
    """Next-token NLL of one batch: the token at position ``t`` scored from the logits at ``t - 1``.

    Which tokens are scored: ``mask`` (``[B, L]``, true/1 at target tokens), or ``labels``
    (``[B, L]``, Hugging Face style: the target ids, ``-100`` where not scored), or neither: every
    token after the first. ``attention_mask`` is passed to the model (right padding). Logits are
    cast to float32; ``F.cross_entropy(..., ignore_index=-100)``. Returns, by ``reduction``:

    * ``"sum"``: ``(total, count)``: the summed NLL (float, summed in float32 over the batch) and
      the number of scored tokens (int);
    * ``"sequence"``: ``(nll, count)``: CPU tensors ``[B]``: per-sequence sums (float32) and counts;
    * ``"token"``: ``(nll, scored)``: CPU tensors ``[B, L-1]``: per-token NLL (float32, 0 where not
      scored) and the boolean mask of scored targets.

    Runs under ``torch.inference_mode``; the inputs are moved to the model's device.
    """
    import torch
    import torch.nn.functional as F
    if reduction not in ("sum", "sequence", "token"):
        raise ValueError(f"reduction must be 'sum', 'sequence' or 'token', got {reduction!r}")
    if mask is not None and labels is not None:
        raise ValueError("give mask or labels, not both")
    device = next(model.parameters()).device
    x = input_ids.to(device)
    if mask is not None:
        labels = x.masked_fill(~mask.to(device).bool(), -100)
    tgt = (labels.to(device) if labels is not None else x)[:, 1:]
    kw = {} if attention_mask is None else {"attention_mask": attention_mask.to(device)}
    with torch.inference_mode():
        logits = model(input_ids=x, **kw).logits[:, :-1].float()
        flat = logits.reshape(-1, logits.size(-1))
        if reduction == "sum":
            nll = F.cross_entropy(flat, tgt.reshape(-1), ignore_index=-100, reduction="sum")
            return float(nll), int((tgt != -100).sum())
        nll = F.cross_entropy(flat, tgt.reshape(-1), ignore_index=-100, reduction="none").view(tgt.shape)
        scored = tgt != -100
        if reduction == "sequence":
            return nll.sum(-1).cpu(), scored.sum(-1).cpu()
        return nll.cpu(), scored.cpu()


def nll_sum(model, blocks, batch_size: int = 16) -> tuple[float, int]:
    """Summed next-token NLL (float64 over batches) and the number of predicted tokens."""
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        t, c = masked_nll(model, blocks[i:i + batch_size])
        total += t
        count += c
    return total, count


def perplexity(model, blocks, batch_size: int = 16) -> dict:
    total, count = nll_sum(model, blocks, batch_size)
    loss = total / count
    diverged = not math.isfinite(loss)
    ppl = math.inf if diverged or loss > 700 else math.exp(loss)
    return {"loss": loss if not diverged else math.inf, "ppl": ppl, "n_tokens": count,
            "diverged": diverged}
