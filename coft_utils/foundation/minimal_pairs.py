"""A minimal-pair grammaticality task built from held-out pre-training-domain text (versioned).

::

    from coft_utils.foundation import minimal_pairs as mp
    pairs = mp.pairs(n=500, seed=0)      # [{"text": "", "choices": [a, b], "gold": i, "swap": k, "book": j}, ...]
    mp.build(heldout_texts, train_texts, n=500, seed=0)   # the same construction on any texts
    mp.TASK, mp.VERSION                  # "coft_minimal_pairs_v1", 1

What an item is. A sentence of the *held-out* Gutenberg books (``data.gutenberg_bodies("validation")``:
the books the pre-training suite never trains on, the same books whose blocks give the held-out
perplexity of chapters 02-04), and the same words with two adjacent words swapped. The model
should give the original sentence the higher log-likelihood; uniform guessing scores 0.5. The
two choices have the same words and characters, so ``acc_norm`` (per character) equals ``acc``.

The construction (deterministic; change anything here and bump :data:`VERSION`):

1. **Sentences.** Each book body is cut into paragraphs at blank lines, line breaks inside a
   paragraph become spaces, runs of whitespace one space; a paragraph is cut into sentences
   after ``.``, ``!`` or ``?`` followed by a space and a capital letter. A sentence is kept when it
   has :data:`MIN_WORDS` to :data:`MAX_WORDS` words, starts with a capital letter, ends with
   ``.``, ``!`` or ``?`` and holds only letters, spaces and ``, ; : ' . ! ? -`` (no digits,
   quotes, brackets or underscores: no markup, dialogue fragments or numbers).
2. **Leakage.** A sentence that also occurs (the same normalized sentence) anywhere in the
   training books (``data.gutenberg_bodies("train")``, the pre-training corpus) is dropped, as is
   any sentence seen twice; so no item is a sentence the models were trained on.
3. **The swap.** Candidate positions ``k`` are the word pairs ``(k, k + 1)`` with ``1 <= k`` (the
   capitalized first word stays) and ``k + 1 <= n - 2`` (the last word, with its final
   punctuation, stays), both purely alphabetic (punctuation never moves) and different
   (case-insensitively), so no pair is identical. ``k`` is drawn from those by a
   ``random.Random`` seeded with the sentence's sha256 and :data:`VERSION` (the same sentence gets
   the same swap in any run); sentences without a candidate are dropped.
4. **Selection.** The first ``n`` sentences of a ``random.Random(seed)`` shuffle of the
   surviving sentences (in book order before the shuffle); the position of the original among the
   two choices (``gold``) is drawn from the same generator.

As an lm-eval task (:func:`coft_utils.foundation.lmeval_tasks.write_tasks`): ``multiple_choice``,
an empty context (lm-eval then conditions on the tokenizer's eos/bos, its ``prefix_token_id``), the
two sentences as choices, each scored as ``" " + sentence``; metrics ``acc`` (and ``acc_norm``).
The task name carries the version (:data:`TASK`), and so does its file.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import re
from pathlib import Path
from typing import Iterable

__all__ = ["VERSION", "TASK", "MIN_WORDS", "MAX_WORDS", "sentences", "swap", "build", "pairs", "write", "CHANCE"]

VERSION = 1
TASK = f"coft_minimal_pairs_v{VERSION}"
MIN_WORDS, MAX_WORDS = 8, 25
CHANCE = 0.5
_SPLIT = re.compile(r"(?<=[.!?]) (?=[A-Z])")
_OK = re.compile(r"[A-Za-z ,;:'.!?-]+")
_WORD = re.compile(r"[A-Za-z]+")


_PARA = re.compile(r"\n\s*\n")
_PIECES = re.compile(r" ?\x00 ?|(?<=[.!?]) (?=[A-Z])")


def _pieces(text: str) -> list[str]:
    """Every sentence-like piece of a text (step 1 without the filter), at C speed: paragraphs
    marked by a NUL, whitespace runs made one space, cut at the paragraph marks and after
    ``.``/``!``/``?`` + space + capital (the same pieces as cutting paragraph by paragraph)."""
    return _PIECES.split(" ".join(_PARA.sub(" \x00 ", text.replace("\x00", " ")).split()))


def _kept(s: str) -> bool:
    w = s.split(" ")
    return (MIN_WORDS <= len(w) <= MAX_WORDS and s[0].isupper() and s[-1] in ".!?" and _OK.fullmatch(s) is not None
            and "--" not in s)


def sentences(text: str) -> Iterable[str]:
    """The kept sentences of one text, in order (step 1 of the module doc)."""
    return [s for s in _pieces(text) if s and _kept(s)]


def swap(sentence: str) -> tuple[str, int] | None:
    """(the sentence with words ``k`` and ``k + 1`` swapped, ``k``), or None without a candidate."""
    w = sentence.split(" ")
    cand = [k for k in range(1, len(w) - 2)
            if _WORD.fullmatch(w[k]) and _WORD.fullmatch(w[k + 1]) and w[k].lower() != w[k + 1].lower()]
    if not cand:
        return None
    h = hashlib.sha256(f"v{VERSION}:{sentence}".encode()).hexdigest()
    k = random.Random(h).choice(cand)
    w[k], w[k + 1] = w[k + 1], w[k]
    return " ".join(w), k


def build(heldout_texts: Iterable[str], train_texts: Iterable[str], n: int | None, seed: int = 0) -> list[dict]:
    """The items (see the module doc) from any held-out and training texts; ``n=None``: all of them
    (the first ``n`` items of that list are the items for ``n``: the order and the gold positions
    are drawn in sequence)."""
    seen, order, book = {}, [], {}
    for j, text in enumerate(heldout_texts):
        for s in sentences(text):
            seen[s] = seen.get(s, 0) + 1
            if seen[s] == 1:
                order.append(s)
                book[s] = j
    keep = {s for s, c in seen.items() if c == 1}
    for text in train_texts:  # leakage: drop every sentence that the training text also has
        if not keep:
            break
        keep.difference_update(_pieces(text))  # every piece, kept by the filter or not
    cands = []
    for s in order:
        if s in keep:
            sw = swap(s)
            if sw is not None:
                cands.append((s, *sw))
    rng = random.Random(seed)
    rng.shuffle(cands)
    out = []
    for s, t, k in cands[:n] if n is not None else cands:
        gold = rng.randrange(2)
        out.append({"text": "", "choices": [s, t] if gold == 0 else [t, s], "gold": gold, "swap": k,
                    "book": book[s]})
    return out


def _cache_root() -> Path:
    from . import data
    return data.cache_dir() / f"minimal_pairs_v{VERSION}"


def write(n: int, seed: int = 0, root: str | os.PathLike | None = None) -> Path:
    """The first ``n`` items of :func:`pairs` as a JSONL file (cached by version, n and seed); its
    path. Every item of the seed is built once (one pass over the training books, ~15 s) and cached
    as ``all-seed<seed>.jsonl``; the file for ``n`` is its first ``n`` lines."""
    root = Path(root) if root else _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"pairs-n{n}-seed{seed}.jsonl"
    if not path.is_file():
        full = root / f"all-seed{seed}.jsonl"
        if not full.is_file():
            from . import data
            _atomic_lines(full, [json.dumps(d) for d in build(data.gutenberg_bodies("validation"),
                                                               data.gutenberg_bodies("train"), None, seed)])
        lines = open(full).read().splitlines()
        if len(lines) < n:
            raise ValueError(f"the minimal-pair task v{VERSION} has {len(lines)} items; asked for n={n}")
        _atomic_lines(path, lines[:n])
    return path


def _atomic_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


@functools.lru_cache(maxsize=8)
def _read(path: str, _mtime: int) -> tuple:
    return tuple(json.loads(line) for line in open(path))


def pairs(n: int = 500, seed: int = 0) -> list[dict]:
    """The task's items on the held-out Gutenberg books, leakage-checked against the training books."""
    p = write(n, seed)
    return [dict(d) for d in _read(str(p), p.stat().st_mtime_ns)]
