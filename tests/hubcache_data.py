"""Tiny copies of every registered hub data set, in the repositories' real layouts, for tests.

``add_paper_datasets(cache, n=8)`` writes, for every :data:`coft_utils.foundation.hubdata.REGISTRY`
entry, its files (each split's pattern made concrete; C4's 8 validation shards and its first
``shards`` = 2 train shards) with ``n`` small records of the real fields, into a hub-layout cache
(``tests/hubcache.py``)::

    from tests.hubcache_data import add_paper_datasets
    cache = tmp_path / "hub"
    snaps = add_paper_datasets(cache, n=8)          # {hub_id: snapshot folder}
    monkeypatch.setenv("HF_HUB_CACHE", str(cache)); monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hubdata.load("gsm8k", "train")                  # 8 records, the local gsm8k schema

Sets sharing a repository (wikitext and wikitext_raw; arc_easy and arc_challenge) are written
in one snapshot, so ``refs/main`` names a commit that holds all of them. Records are
deterministic (the same call twice gives the same cache). A set registered later with
``hubdata.register`` and no generator here gets plain ``{"text": ...}`` records.
"""
from __future__ import annotations

import gzip
import io
import json
from collections import defaultdict
from pathlib import Path

from tests import hubcache

__all__ = ["add_paper_datasets", "records"]

WORDS = ("the model was trained on many tokens and then fine tuned on a small task with a tuned "
         "learning rate while the loss on held out text went up").split()


def _sent(i: int, k: int = 8, off: int = 0) -> str:
    return " ".join(WORDS[(i * 7 + j * 3 + off) % len(WORDS)] for j in range(k))


def _mc(i):
    return {"text": [_sent(i, 3, o) for o in range(4)], "label": ["A", "B", "C", "D"]}


def records(name: str, split: str, n: int = 8, shard: int = 0) -> list[dict]:
    """``n`` raw records of hub set ``name`` as its repository stores them."""
    base = shard * 1000
    out = []
    for j in range(n):
        i = base + j
        s = _sent(i)
        if name == "c4":
            r = {"text": f"{s.capitalize()}.\n{_sent(i, 12, 5)}.", "timestamp": "2019-04-25T12:57:54Z",
                 "url": f"https://example.org/{split}/{i}"}
        elif name in ("wikitext", "wikitext_raw"):
            r = {"text": ("" if j % 4 == 0 else f" = {s} = \n" if j % 4 == 1 else f" {s} , {_sent(i, 10, 2)} . \n")}
        elif name == "sst2":
            r = {"idx": j, "sentence": s + " ", "label": (-1 if split == "test" else j % 2)}
        elif name == "gsm8k":
            r = {"question": f"Tom has {j + 2} apples and buys {j + 3} more. How many apples does he have?",
                 "answer": f"He has {j + 2} + {j + 3} = <<{j + 2}+{j + 3}={2 * j + 5}>>{2 * j + 5} apples.\n#### {2 * j + 5}"}
        elif name == "humaneval":
            r = {"task_id": f"HumanEval/{j}", "prompt": f'def f{j}(x):\n    """Return x plus {j}."""\n',
                 "canonical_solution": f"    return x + {j}\n",
                 "test": f"def check(candidate):\n    assert candidate(1) == {1 + j}\n", "entry_point": f"f{j}"}
        elif name == "hh_rlhf":
            r = {"chosen": f"\n\nHuman: {s}?\n\nAssistant: {_sent(i, 6, 1)}.",
                 "rejected": f"\n\nHuman: {s}?\n\nAssistant: {_sent(i, 6, 4)}!"}
        elif name == "tulu":
            r = {"dataset": ("flan_v2", "oasst1", "sharegpt")[j % 3], "id": f"{split}_{i}",
                 "messages": [{"role": "user", "content": s + "?"},
                              {"role": "assistant", "content": _sent(i, 10, 3) + "."}]}
        elif name in ("arc_easy", "arc_challenge"):
            r = {"id": f"Mercury_{i}", "question": s + "?", "choices": _mc(i), "answerKey": "ABCD"[j % 4]}
        elif name == "openbookqa":
            r = {"id": f"{i}-{j}", "question_stem": s, "choices": _mc(i), "answerKey": "ABCD"[j % 4]}
        elif name == "boolq":
            r = {"question": s, "passage": _sent(i, 20, 1), "idx": j, "label": j % 2}
        elif name == "winogrande":
            r = {"sentence": f"{s} _ {_sent(i, 4, 2)}", "option1": "Alice", "option2": "Bob",
                 "answer": "" if split == "test" else str(1 + j % 2)}
        elif name == "sciq":
            r = {"question": s + "?", "distractor3": "iron", "distractor1": "water", "distractor2": "sand",
                 "correct_answer": "oxygen", "support": _sent(i, 15, 2)}
        elif name == "piqa":
            r = {"goal": s, "sol1": _sent(i, 5, 1), "sol2": _sent(i, 5, 2), "label": j % 2}
        elif name == "hellaswag":
            r = {"ind": i, "activity_label": "Cooking", "ctx_a": s, "ctx_b": "then", "ctx": s + " then",
                 "endings": [_sent(i, 4, o) for o in range(4)], "source_id": f"activitynet~v_{i}",
                 "split": split, "split_type": "indomain", "label": str(j % 4)}
        else:
            r = {"text": s}
        out.append(r)
    return out


def _encode(path: str, builder: str, recs: list[dict]) -> bytes:
    if builder == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(recs), buf)
        return buf.getvalue()
    if builder == "json":
        raw = "".join(json.dumps(r) + "\n" for r in recs).encode()
        return gzip.compress(raw, mtime=0) if path.endswith(".gz") else raw
    if builder == "text":
        return "".join(r["text"] + "\n" for r in recs).encode()
    if builder == "csv":
        import csv
        s = io.StringIO()
        w = csv.DictWriter(s, fieldnames=list(recs[0]))
        w.writeheader()
        w.writerows(recs)
        return s.getvalue().encode()
    raise ValueError(f"builder {builder!r}")


def _concrete(pattern: str, k: int = 0) -> str:
    """A file name matching ``pattern`` (each ``*`` filled in, like the hub's hashed shard names)."""
    parts = pattern.split("*")
    if len(parts) == 1:
        return pattern
    fills = [f"{k:05d}", "99ee8754042a69f6"] + ["x"] * len(parts)
    return "".join(p + (fills[i] if i < len(parts) - 1 else "") for i, p in enumerate(parts))


WHOLE = 8  # a sharded split of at most this many shards is written whole (C4 validation: 8)


def add_paper_datasets(cache, n: int = 8, shards: int = 2) -> dict[str, Path]:
    """Write every registered hub set with ``n`` records per file into the hub-layout cache
    ``cache``; a sharded split is written whole when it has at most 8 shards (C4 validation),
    else its first ``shards`` shards (C4 train: 2 of 1024). Returns {hub_id: snapshot folder}."""
    from coft_utils.foundation import hubdata
    if n < 1 or shards < 1:
        raise ValueError(f"n = {n!r} and shards = {shards!r} must be >= 1")
    per_repo: dict[tuple[str, str], dict[str, bytes]] = defaultdict(dict)
    for hs in hubdata.REGISTRY.values():
        files = per_repo[(hs.hub_id, hs.revision)]
        for split, patterns in hs.splits.items():
            for pat in patterns:
                path = _concrete(pat)
                files[path] = _encode(path, hs.builder, records(hs.name, split, n))
        for split, (tmpl, count) in hs.shards.items():
            for k in range(count if count <= WHOLE else min(shards, count)):
                path = tmpl % k
                files[path] = _encode(path, hs.builder, records(hs.name, split, n, shard=k))
    return {hub_id: hubcache.add_dataset(cache, hub_id, files, revision=rev)
            for (hub_id, rev), files in per_repo.items()}
