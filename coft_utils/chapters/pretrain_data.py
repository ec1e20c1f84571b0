"""Data of the pre-training suite: the corpus, the project's BPE, the token cache, validation blocks.

The Gutenberg book bodies (``paper``: C4 'en' from the hub, ``allenai/c4``), tokenized ONCE by
the project's BPE (trained on the same corpus) into a shared memory-mapped token file in the
cache; the held-out Gutenberg books (C4's validation split at ``paper``) give the validation
blocks. The experiment (:mod:`coft_utils.chapters.pretrain`) prepares them before any job
trains; at paper that is best a step of its own, before the launch::

    python -m coft_utils.chapters.pretrain_data prepare --profile paper          # tokenizer + tokens
    python -m coft_utils.chapters.pretrain_data prepare --profile paper --overrides '{"model": "olmo-90m"}'

    from coft_utils.chapters import pretrain, pretrain_data
    cfg = pretrain.resolve("smoke")
    tok = pretrain_data.get_tokenizer(cfg)              # cached under data.cache_dir()/pretrain/
    path = pretrain_data.prepare(cfg, tok)              # tokens-<key>.bin (+ .json index), made once
    blocks = pretrain_data.token_blocks(cfg, tok)       # [n_blocks, seq_len] uint16/uint32 np.memmap
    pretrain_data.token_index(cfg, tok)                 # {"tokens", "dtype", "tokenizer", "source", ...}
    val = pretrain_data._val_blocks(cfg, tok)           # [val_blocks, seq_len] int64 tensor

Tokenize once, for every process: the token file ``tokens-<key>.bin`` (flat ``np.uint16`` ids,
``np.uint32`` past 65,535 ids; documents joined by eos) is written by ONE process -- rank 0
(``$RANK``, as ``torchrun`` / ``accelerate launch`` set it) under an exclusive file lock, into a
temporary file renamed into place -- and then its JSON index ``tokens-<key>.json`` (token count,
dtype, the tokenizer's fingerprint, the data provenance: hub id, commit, the shards read) is
written atomically: the index is the ready mark. Every other rank waits for the index (at most
``cfg.prepare_timeout`` s, then a clear error) and maps the same file with ``np.memmap``; it never
reads the corpus. The BPE is made the same way (rank 0 trains, the others wait for its
``tokenizer.json``). The cache folder (``COFT_CACHE_DIR``) must be one that all processes see.

Only what the largest budget needs is read: C4's train shards (``en/c4-train.NNNNN-of-01024.json.gz``,
fetched one by one through ``huggingface_hub``, at most ``cfg.c4_train_files``) are tokenized in
order until ``budget_steps[-1] x batch_size x seq_len`` tokens are covered, so later shards are
never downloaded; validation reads the first validation shard(s) until ``val_blocks`` are filled.
The training loop reads the blocks through :class:`coft_utils.chapters.pretrain_train.BlockStream`.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..foundation import data, models, results
from .pretrain_plan import budget_steps

if TYPE_CHECKING:
    from .pretrain import Config

__all__ = ["get_tokenizer", "prepare", "token_blocks", "token_index", "rank", "main"]

C4 = "c4"  # the hubdata registry name of allenai/c4 (config 'en')


def rank() -> int:
    """This process's global rank as the launchers set it (``RANK``; 0 without a launcher)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


# --------------------------------------------------------------------------- the corpus
class _C4Reader:
    """C4 'en' texts, shard by shard, recording which shards were read (for the provenance)."""

    def __init__(self, split: str, max_files: int):
        from ..foundation import hubdata
        self.hubdata, self.split, self.max_files = hubdata, split, max_files
        self.hs = hubdata.get(C4)
        self.tmpl, n = self.hs.shards[split]
        self.max_files = min(n, max_files)
        self.read: list[str] = []

    def _path(self, i: int) -> Path:
        from huggingface_hub import hf_hub_download
        name = self.tmpl % i
        try:
            return Path(hf_hub_download(self.hs.hub_id, name, repo_type="dataset", revision=self.hs.revision,
                                        cache_dir=str(self.hubdata.cache_dir()),
                                        local_files_only=self.hubdata.offline()))
        except Exception as e:  # LocalEntryNotFoundError offline, network errors online
            how = (f"this process is offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE=1) and the file is not in the "
                   f"hub cache {self.hubdata.cache_dir()}: fetch it once online (huggingface-cli download "
                   f"{self.hs.hub_id} {name} --repo-type dataset), point HF_HUB_CACHE at a cache that holds it, "
                   f"or use corpus='gutenberg'") if self.hubdata.offline() else "check network access to the hub"
            raise data.DataError(f"corpus 'c4': cannot get {self.hs.hub_id} file {name!r} "
                                 f"({type(e).__name__}); {how}") from e

    def __iter__(self):
        for i in range(self.max_files):
            path = self._path(i)
            self.read.append(self.tmpl % i)
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield json.loads(line)["text"]

    def provenance(self) -> dict:
        try:
            commit = self.hubdata.commit(C4)
        except Exception:  # noqa: BLE001 -- a cache without refs/: the files still name the data
            commit = None
        return {"hub_id": self.hs.hub_id, "config": self.hs.config, "revision": self.hs.revision,
                "commit": commit, "split": self.split, "files": list(self.read)}


def _corpus(cfg: Config, split: str = "train"):
    """An iterable of texts (``.provenance()`` after iterating says what was read)."""
    if cfg.corpus == "gutenberg":
        class _G:
            def __iter__(self):
                yield from data.gutenberg_bodies(split, max_chars=None)

            def provenance(self):
                return {"corpus": "gutenberg", "split": split}
        return _G()
    return _C4Reader(split, cfg.c4_train_files if split == "train" else 8)


def _corpus_texts(cfg: Config, split: str = "train", max_chars: int | None = None):
    if cfg.corpus == "gutenberg":
        yield from data.gutenberg_bodies(split, max_chars=max_chars)
        return
    chars = 0
    for text in _corpus(cfg, split):
        yield text
        chars += len(text)
        if max_chars is not None and chars >= max_chars:
            return


# --------------------------------------------------------------------------- made once, awaited by the others
def _once(ready: Path, make: Callable[[], None], what: str, timeout: float, writer: bool | None = None) -> None:
    """Make ``ready`` with ``make()`` in one process; every other process waits for it.

    The writer (rank 0, unless ``writer`` says otherwise) takes an exclusive lock beside
    ``ready`` (so two independent jobs do not both make it), checks again, and calls ``make``,
    which must create ``ready`` atomically as its last act. Readers poll for ``ready``.
    """
    if ready.exists():
        return
    writer = rank() == 0 if writer is None else writer
    ready.parent.mkdir(parents=True, exist_ok=True)
    if writer:
        import fcntl
        with open(ready.with_name(ready.name + ".lock"), "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            if not ready.exists():
                make()
        if not ready.exists():
            raise RuntimeError(f"{what}: making {ready} finished without creating it")
        return
    t0, wait = time.monotonic(), 0.05
    while not ready.exists():
        if time.monotonic() - t0 > timeout:
            raise data.DataError(
                f"{what}: rank {rank()} waited {timeout:g} s (prepare_timeout) for {ready}, which rank 0 "
                f"writes; is rank 0 running, and is the cache folder {data.cache_dir()} (COFT_CACHE_DIR) shared "
                f"by every process? Make it beforehand with: python -m coft_utils.chapters.pretrain_data "
                f"prepare --profile <profile>")
        time.sleep(wait)
        wait = min(2.0, wait * 1.5)


def get_tokenizer(cfg: Config, writer: bool | None = None):
    """The project's byte-level BPE trained on a prefix of the pre-training corpus (cached; trained
    by rank 0 only, the other ranks wait for it)."""
    from transformers import AutoTokenizer
    key = results.config_hash({"corpus": cfg.corpus, "vocab": cfg.vocab_size, "chars": cfg.tokenizer_chars, "v": 1})
    out = data.cache_dir() / "pretrain" / f"tokenizer-{key}"
    _once(out / "tokenizer.json",
          lambda: models.train_tokenizer(_corpus_texts(cfg, "train", cfg.tokenizer_chars), cfg.vocab_size, out),
          f"the {cfg.corpus} tokenizer", cfg.prepare_timeout, writer)
    return AutoTokenizer.from_pretrained(str(out))


def _tokens_needed(cfg: Config) -> int:
    """Tokens of the largest budget of any schedule (a capped cosine series shares the token file)."""
    return budget_steps(dataclasses.replace(cfg, schedule="constant"))[-1] * cfg.tokens_per_step()


def _paths(cfg: Config, tokenizer) -> tuple[Path, Path]:
    from ..foundation import evaluate
    k = {"corpus": cfg.corpus, "tok": evaluate.tokenizer_fingerprint(tokenizer), "need": _tokens_needed(cfg), "v": 1}
    if cfg.corpus == "c4":
        k["files"] = cfg.c4_train_files
    path = data.cache_dir() / "pretrain" / f"tokens-{results.config_hash(k)}.bin"
    return path, path.with_suffix(".json")


def _dtype(tokenizer):
    return np.uint16 if len(tokenizer) <= 65535 else np.uint32


def _tokenize(cfg: Config, tokenizer, path: Path, index: Path) -> None:
    """Write the token file and then its index (the ready mark), each atomically."""
    from ..foundation import evaluate
    need, dtype, eos = _tokens_needed(cfg), _dtype(tokenizer), tokenizer.eos_token_id
    t0, n, docs = time.perf_counter(), 0, 0
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    batch: list[str] = []
    src = None
    if not path.is_file():  # (a token file from before the index existed is indexed, not redone)
        src = _corpus(cfg, "train")

        def flush(fh):
            nonlocal n, docs
            enc = tokenizer(batch, add_special_tokens=False)["input_ids"]
            for ids in enc:
                arr = np.asarray(ids + [eos], dtype=dtype)
                fh.write(arr.tobytes())
                n += len(arr)
                docs += 1
            batch.clear()

        with open(tmp, "wb") as fh:
            for text in src:
                # split long books into chunks so batches stay small and parallel
                for i in range(0, len(text), 200_000):
                    batch.append(text[i:i + 200_000])
                # flush every 2M characters; c4: sooner near the end (>= 1 char/token: never past the
                # need by much), so reading stops in the shard that completes the budget. (Gutenberg
                # keeps the fixed 2M: its token files, and so the smoke/cpu suites, stay as they were.)
                every = 2_000_000 if cfg.corpus == "gutenberg" else min(2_000_000, max(1_000, 4 * (need - n)))
                if sum(map(len, batch)) >= every:
                    flush(fh)
                    if n >= need:
                        break
            if batch:
                flush(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    else:
        n = path.stat().st_size // np.dtype(dtype).itemsize
    info = {"tokens": int(n), "dtype": np.dtype(dtype).name, "need": int(need), "enough": bool(n >= need),
            "docs": docs if src is not None else None, "corpus": cfg.corpus,
            "tokenizer": evaluate.tokenizer_fingerprint(tokenizer), "vocab": len(tokenizer),
            "source": src.provenance() if src is not None else {"corpus": cfg.corpus, "note": "indexed from an existing token file"},
            "file": path.name, "bytes": path.stat().st_size, "wall_s": round(time.perf_counter() - t0, 3),
            "writer": {"rank": rank(), "host": socket.gethostname(), "pid": os.getpid()}}
    results.atomic_write_json(index, info)


def prepare(cfg: Config, tokenizer=None, writer: bool | None = None) -> Path:
    """The token file of ``cfg`` (made once, by rank 0 / the ``writer``; the others wait). Returns its path."""
    tokenizer = tokenizer if tokenizer is not None else get_tokenizer(cfg, writer)
    path, index = _paths(cfg, tokenizer)
    _once(index, lambda: _tokenize(cfg, tokenizer, path, index), f"the {cfg.corpus} token cache",
          cfg.prepare_timeout, writer)
    return path


def token_index(cfg: Config, tokenizer) -> dict:
    """The JSON index of ``cfg``'s token file (after :func:`prepare`)."""
    return json.loads(_paths(cfg, tokenizer)[1].read_text())


def token_blocks(cfg: Config, tokenizer, writer: bool | None = None) -> np.ndarray:
    """Packed training blocks ``[n_blocks, seq_len]`` (uint16/uint32 memmap) of the shared token file.

    Documents are joined with eos and cut into ``seq_len`` blocks. The corpus is tokenized (once,
    see :func:`prepare`) until the largest budget is covered, or until it ends: later epochs
    repeat it, reshuffled.
    """
    from ..foundation import evaluate
    path = prepare(cfg, tokenizer, writer)
    info = token_index(cfg, tokenizer)
    if info["tokenizer"] != evaluate.tokenizer_fingerprint(tokenizer):
        raise data.DataError(f"token cache {path} was made with another tokenizer ({info['tokenizer']}); "
                             f"delete {path} and its .json to tokenize again")
    flat = np.memmap(path, dtype=np.dtype(info["dtype"]), mode="r")
    nb = len(flat) // cfg.seq_len
    if nb < cfg.batch_size:
        raise data.DataError(f"corpus {cfg.corpus!r} gives only {nb} blocks of {cfg.seq_len} tokens; "
                             f"need at least batch_size={cfg.batch_size}")
    return flat[:nb * cfg.seq_len].reshape(nb, cfg.seq_len)


def _val_blocks(cfg: Config, tokenizer):
    import torch
    from ..foundation import evaluate
    if cfg.corpus == "gutenberg":
        return evaluate.heldout_blocks(tokenizer, "gutenberg", cfg.val_blocks, cfg.seq_len)
    ids: list[int] = []
    for text in _corpus_texts(cfg, "validation"):
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
        if len(ids) >= cfg.val_blocks * cfg.seq_len:
            break
    if len(ids) < cfg.val_blocks * cfg.seq_len:
        raise data.DataError(f"corpus 'c4' validation gives {len(ids)} tokens; val_blocks={cfg.val_blocks} "
                             f"x seq_len={cfg.seq_len} needs {cfg.val_blocks * cfg.seq_len}")
    arr = np.asarray(ids[:cfg.val_blocks * cfg.seq_len], dtype=np.int64)
    return torch.from_numpy(arr.reshape(cfg.val_blocks, cfg.seq_len))


# --------------------------------------------------------------------------- the prepare step
def main(argv=None) -> int:
    """``python -m coft_utils.chapters.pretrain_data prepare --profile paper [--schedule S] [--overrides JSON]``:
    trains the tokenizer and writes the token cache (what every rank then reads); prints its index."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m coft_utils.chapters.pretrain_data", description=main.__doc__)
    ap.add_argument("command", choices=("prepare",))
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--schedule", default="cosine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overrides", default="{}", help="JSON dict of config overrides")
    a = ap.parse_args(argv)
    from . import pretrain
    cfg = pretrain.resolve(a.profile, a.schedule, a.seed, json.loads(a.overrides))
    tok = get_tokenizer(cfg, writer=True)
    prepare(cfg, tok, writer=True)
    print(json.dumps({k: v for k, v in token_index(cfg, tok).items() if k != "source"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
