"""Data of the pre-training suite: the corpus, the project's BPE, packed token blocks, validation blocks.

The Gutenberg book bodies (``paper``: C4 streamed from the hub), tokenized once by the project's
BPE (trained on the same corpus) and cached on disk as packed ``seq_len`` blocks; the held-out
Gutenberg books (C4's validation split at ``paper``) give the validation blocks. The experiment
(:mod:`coft_utils.chapters.pretrain`) makes them once per suite folder, before any job trains::

    from coft_utils.chapters import pretrain, pretrain_data
    cfg = pretrain.resolve("smoke")
    tok = pretrain_data.get_tokenizer(cfg)              # cached under data.cache_dir()/pretrain/
    blocks = pretrain_data.token_blocks(cfg, tok)       # [n_blocks, seq_len] uint16 memmap
    val = pretrain_data._val_blocks(cfg, tok)           # [val_blocks, seq_len] int64 tensor

The training loop reads the blocks through :class:`coft_utils.chapters.pretrain_train.BlockStream`.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ..foundation import data, models, results
from .pretrain_plan import budget_steps

if TYPE_CHECKING:
    from .pretrain import Config

__all__ = ["get_tokenizer", "token_blocks"]


def _corpus_texts(cfg: Config, split: str = "train", max_chars: int | None = None):
    if cfg.corpus == "gutenberg":
        yield from data.gutenberg_bodies(split, max_chars=max_chars)
        return
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise data.DataError("corpus 'c4' streams allenai/c4 (en) from the hub, but this process is "
                             "offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE=1); run the paper profile "
                             "online, or use corpus='gutenberg'")
    import datasets
    ds = datasets.load_dataset("allenai/c4", "en", split=split, streaming=True)
    chars = 0
    for rec in ds:
        yield rec["text"]
        chars += len(rec["text"])
        if max_chars is not None and chars >= max_chars:
            return


def get_tokenizer(cfg: Config):
    """The project's byte-level BPE trained on a prefix of the pre-training corpus (cached)."""
    from transformers import AutoTokenizer
    key = results.config_hash({"corpus": cfg.corpus, "vocab": cfg.vocab_size, "chars": cfg.tokenizer_chars, "v": 1})
    out = data.cache_dir() / "pretrain" / f"tokenizer-{key}"
    if not (out / "tokenizer.json").is_file():
        models.train_tokenizer(_corpus_texts(cfg, "train", cfg.tokenizer_chars), cfg.vocab_size, out)
    return AutoTokenizer.from_pretrained(str(out))


def _tokens_needed(cfg: Config) -> int:
    return budget_steps(cfg)[-1] * cfg.tokens_per_step()


def token_blocks(cfg: Config, tokenizer) -> np.ndarray:
    """Packed training blocks ``[n_blocks, seq_len]`` (uint16/uint32 memmap), tokenized once.

    Documents are joined with eos and cut into ``seq_len`` blocks. Tokenizes the corpus until
    the largest budget is covered (or the corpus ends: later epochs repeat it, reshuffled).
    """
    from ..foundation import evaluate
    need = _tokens_needed(cfg)
    key = results.config_hash({"corpus": cfg.corpus, "tok": evaluate.tokenizer_fingerprint(tokenizer), "need": need,
                 "v": 1})
    path = data.cache_dir() / "pretrain" / f"tokens-{key}.bin"
    dtype = np.uint16 if len(tokenizer) <= 65535 else np.uint32
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        eos = tokenizer.eos_token_id
        n = 0
        batch: list[str] = []

        def flush(fh):
            nonlocal n
            enc = tokenizer(batch, add_special_tokens=False)["input_ids"]
            for ids in enc:
                arr = np.asarray(ids + [eos], dtype=dtype)
                fh.write(arr.tobytes())
                n += len(arr)
            batch.clear()

        with open(tmp, "wb") as fh:
            for text in _corpus_texts(cfg, "train"):
                # split long books into paragraphs-chunks so batches stay small and parallel
                for i in range(0, len(text), 200_000):
                    batch.append(text[i:i + 200_000])
                if sum(map(len, batch)) >= 2_000_000:
                    flush(fh)
                    if n >= need:
                        break
            if batch:
                flush(fh)
        os.replace(tmp, path)
    flat = np.memmap(path, dtype=dtype, mode="r")
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
    arr = np.asarray(ids[:cfg.val_blocks * cfg.seq_len], dtype=np.int64)
    return torch.from_numpy(arr.reshape(cfg.val_blocks, cfg.seq_len))
