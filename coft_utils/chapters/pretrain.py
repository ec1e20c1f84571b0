"""Controlled pre-training suite: tiny-to-paper OLMo models, one checkpoint per token budget.

The paper (Springer et al., 2025, Sec. 4) separates "more tokens" from "a different final
learning rate" by pre-training its own OLMo-15M/30M/90M on C4 for 4B..128B tokens, every run
annealed to zero. This module runs the same experiment at every profile and returns the result
as a :class:`coft_utils.foundation.models.CheckpointSeries` of local folders, so every chapter loads it like
a hub series::

    from coft_utils.chapters import pretrain
    from coft_utils.foundation import models
    series = pretrain.get_suite("smoke")                  # < 60 s, trains once, then cached
    series = pretrain.get_suite("cpu", schedule="wsd")    # cosine (default) | wsd | constant
    model = models.load_model(series.checkpoints[-1]); tok = models.load_tokenizer(series.checkpoints[-1])
    series.meta["init_std"], series.meta["config"]
    pretrain.suite_records(series)                        # peak lr, tokens, tokens/param, val ppl, wall time
    suites = pretrain.all_suites("cpu")                   # {schedule: series}; their jobs share one pool

    # a peak LR per schedule (lr_cosine, lr_wsd, lr_constant; 0 = lr), chosen by a scan:
    scan = pretrain.lr_scan("cpu", schedules=("cosine", "wsd"), lrs=[3e-3, 6e-3], budgets=3)
    pretrain.choose_lr(scan)                              # {"cosine": ..., "wsd": ...}

    # independent jobs on `workers` processes of one thread each (coft_utils.foundation.parallel), or
    # the same training code on several processes / GPUs (DDP through accelerate):
    #   python -m coft_utils.chapters.pretrain_launch --profile cpu --schedule all --workers 2
    #   accelerate launch --num_processes 2 -m coft_utils.chapters.pretrain_launch --profile gpu --schedule all
    #   accelerate launch --cpu --num_processes 2 -m coft_utils.chapters.pretrain_launch --profile smoke   # gloo
    #   torchrun --nproc_per_node 2 -m coft_utils.chapters.pretrain_launch --profile smoke

Schedules (a geometric series of ``n_budgets`` token budgets, each double the last):

* ``cosine``   every budget is its own run: linear warmup, then cosine to zero (the paper's protocol);
* ``wsd``      one warmup-stable run; at each budget a decay-to-zero branch of ``decay_frac`` of
               that budget is taken off the stable trunk (cheaper: the trunk is shared);
* ``constant`` one warmup-constant run, saved at every budget (no annealing).

Each schedule trains at its own peak LR, ``cfg.peak_lr(schedule)`` (``lr_<schedule>``, else
``lr``); ``wsd`` and ``constant`` share the trunk when theirs are equal. :func:`lr_scan` trains
every schedule at every LR of a grid on the smallest budgets and :func:`choose_lr` picks, per
schedule, the LR with the lowest mean validation log-perplexity over them; the ``cpu`` preset
holds the values it chose there.

Parallel: the jobs of a plan (every cosine budget, the trunk, each decay branch once its branch
point exists) are independent units; :func:`train_suites` runs those of several schedules and
configs together on ``cfg.workers`` processes (:mod:`coft_utils.foundation.parallel`), longest first. Each
job writes its own state, checkpoints and records atomically, so a killed run resumes, and the
weights do not depend on ``workers`` (one torch thread per process either way).

Data: the Gutenberg book bodies (``paper``: C4 streamed from the hub), tokenized once by the
project's BPE (trained on the same corpus) and cached on disk as packed ``seq_len`` blocks; the
block order is a permutation drawn from the seed (a fresh one per epoch), so the batch of global
step ``k`` is a pure function of (seed, k) and every budget sees a prefix of the same stream.

Cache and resume: everything lives under ``results.runs_dir()/suite/<key>/`` where ``key`` hashes
the resolved config (the schedule's peak LR as ``lr``; not ``workers``, ``threads``, ``save_every``
or the scan's settings, which change no weights), the tokenizer fingerprint and
:data:`CODE_VERSION`. The LR scan's runs live in the same folders: the suite at a scanned LR
reuses its small runs and continues its trunk. Each run saves its
full state (weights, optimizer, scheduler, step = data position, RNG, elapsed time) atomically
every ``save_every`` steps; a killed run restarts from it and ends bit-identical to an
uninterrupted one. A finished suite (``series.json`` present) is loaded, never retrained.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..foundation import data, models, parallel, plots, profiles, results
from ..foundation.profiles import param

__all__ = ["Config", "PRESETS", "SCHEDULES", "CODE_VERSION", "get_suite", "cached_suite", "suite_records",
           "load_records", "suite_dir", "get_tokenizer", "token_blocks", "plan", "train_job",
           "lr_multiplier", "budget_steps", "n_params", "cost_ratio", "fmt_tokens",
           "train_suites", "run_unit", "Unit", "lr_scan", "choose_lr", "lr_scan_summary", "plot_lr_scan"]

CHAPTER = "00_pretraining_suite"
SCHEDULES = ("cosine", "wsd", "constant")
CODE_VERSION = 1  # bump when a change alters trained weights (invalidates every cached suite)


@dataclass(frozen=True)
class Config(profiles.ChapterConfig):
    model: str = param("olmo-pico", "OLMo size preset (models.OLMO_PRESETS)", choices=tuple(models.OLMO_PRESETS))
    vocab_size: int = param(1024, "BPE vocabulary trained on the pre-training corpus", min=263, max=65535)
    seq_len: int = param(128, "tokens per packed training block", min=8, max=32768)
    batch_size: int = param(32, "global batch (blocks per optimizer step)", min=1, max=16384)
    min_budget: float = param(250_000.0, "smallest token budget", min=1.0, max=1e13)
    n_budgets: int = param(6, "number of budgets (each double the last)", min=1, max=30)
    schedule: str = param("cosine", "learning-rate schedule", choices=SCHEDULES)
    lr: float = param(3e-3, "peak learning rate (AdamW) of every schedule without its own lr_<schedule>",
                      min=0.0, min_exclusive=True)
    lr_cosine: float = param(0.0, "peak learning rate of the cosine runs (0: use lr)", min=0.0)
    lr_wsd: float = param(0.0, "peak learning rate of the wsd trunk and its decay branches (0: use lr)", min=0.0)
    lr_constant: float = param(0.0, "peak learning rate of the constant run (0: use lr)", min=0.0)
    warmup_steps: int = param(20, "linear warmup steps (same for every budget; below the smallest budget's "
                              "steps)", min=0, max=10_000_000)
    decay_frac: float = param(0.2, "wsd: decay branch length as a fraction of its budget", min=0.0,
                              max=1.0, min_exclusive=True)
    weight_decay: float = param(0.1, "AdamW weight decay", min=0.0)
    beta2: float = param(0.95, "AdamW beta2", min=0.0, max=1.0, max_exclusive=True)
    grad_clip: float = param(1.0, "gradient-norm clip (0: off)", min=0.0)
    corpus: str = param("gutenberg", "pre-training corpus", choices=("gutenberg", "c4"))
    tokenizer_chars: int = param(3_000_000, "characters of the corpus the BPE is trained on", min=10_000,
                                 max=1_000_000_000)
    val_blocks: int = param(64, "held-out blocks for validation perplexity (0: skip; at most what the "
                            "held-out text holds)", min=0, max=1_000_000)
    save_every: int = param(200, "steps between resumable state saves", min=1, max=10_000_000)
    mixed_precision: str = param("no", "autocast precision (bf16 on GPU)", choices=("no", "bf16", "fp16"))
    threads: int = param(0, "torch CPU threads per process (0: torch default)", min=0, max=256)
    workers: int = param(1, "processes that train independent runs at once (results do not depend on it)",
                         min=1, max=64)
    lr_scan_lrs: tuple = param((3e-3, 6e-3, 1.2e-2, 2.4e-2), "peak learning rates of the LR scan "
                               "(lr_scan; empty: no scan)", min=0.0, min_exclusive=True, allow_empty=True)
    lr_scan_budgets: int = param(3, "the LR scan trains the smallest this many budgets (at most n_budgets)",
                                 min=1, max=30)

    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def peak_lr(self, schedule: str | None = None) -> float:
        """Peak learning rate of ``schedule`` (default: this config's): ``lr_<schedule>``, else ``lr``."""
        v = getattr(self, f"lr_{schedule or self.schedule}")
        return v if v > 0 else self.lr

    def check(self):
        s0 = budget_steps(self)[0]
        if s0 < 1:
            raise profiles.ProfileError(
                f"parameter 'min_budget' = {self.min_budget!r} is smaller than one step "
                f"(batch_size x seq_len = {self.tokens_per_step()} tokens); allowed: >= {self.tokens_per_step()}")
        if self.warmup_steps >= s0:
            raise profiles.ProfileError(
                f"parameter 'warmup_steps' = {self.warmup_steps} must be smaller than the steps of the "
                f"smallest budget ({s0}); allowed: < {s0}")
        if self.schedule == "wsd" and round(self.decay_frac * s0) < 1:
            raise profiles.ProfileError(
                f"parameter 'decay_frac' = {self.decay_frac} gives a decay branch of 0 steps at the "
                f"smallest budget ({s0} steps); allowed: >= {1 / s0:.3g}")
        if self.schedule == "wsd" and s0 - decay_steps(self, s0) < max(1, self.warmup_steps):
            raise profiles.ProfileError(
                f"parameter 'decay_frac' = {self.decay_frac}: the smallest budget's decay would start "
                f"at step 0 or inside the warmup ({self.warmup_steps} steps); allowed: < {1 - max(1, self.warmup_steps) / s0:.3g}")
        if len(set(self.lr_scan_lrs)) != len(self.lr_scan_lrs):
            raise profiles.ProfileError(f"parameter 'lr_scan_lrs' = {self.lr_scan_lrs!r} repeats a value; "
                                        f"allowed: distinct learning rates > 0")
        if self.corpus == "c4" and self.profile != "paper":
            raise profiles.ProfileError(f"parameter 'corpus' = 'c4' needs the hub (paper profile); "
                                        f"allowed at profile {self.profile!r}: 'gutenberg'")
        if self.corpus == "gutenberg" and self.val_blocks:
            from ..foundation import evaluate
            evaluate.check_blocks("gutenberg", self.val_blocks, self.seq_len, ("val_blocks", "seq_len"))


PRESETS: dict[str, Config] = {
    # olmo-pico (2 x 32) with a 512 BPE; 4k..128k tokens: whole suite in seconds.
    "smoke": Config(profile="smoke", model="olmo-pico", vocab_size=512, seq_len=64, batch_size=8,
                    min_budget=2048.0, n_budgets=6, lr=3e-3, warmup_steps=2, tokenizer_chars=400_000,
                    val_blocks=16, save_every=20, threads=1, workers=1, lr_scan_lrs=(3e-3, 1.2e-2),
                    lr_scan_budgets=2),
    # olmo-pico with a 1024 BPE: ~65k parameters (embeddings included); 0.25M..8M tokens
    # -> ~123 tokens/param at the largest budget. Peak LRs: chosen by lr_scan at this profile
    # (its lr_scan_lrs on the 0.25M, 0.5M, 1M budgets; see chapter 00). Scan + all three
    # schedules on 2 workers in ~12 min on 2 cores.
    "cpu": Config(profile="cpu", model="olmo-pico", vocab_size=1024, seq_len=128, batch_size=32,
                  min_budget=262_144.0, n_budgets=6, lr=6e-3, lr_cosine=2.4e-2, lr_wsd=6e-3,
                  lr_constant=6e-3, warmup_steps=20,
                  tokenizer_chars=3_000_000, val_blocks=64, save_every=200, threads=1, workers=2,
                  lr_scan_lrs=(3e-3, 6e-3, 1.2e-2, 2.4e-2), lr_scan_budgets=3),
    # olmo-micro (4 x 128) with a 2048 BPE: ~1.31M params; 42M..1.34B tokens (~1,020 tokens/param),
    # bf16 on one H100/A100 (Gutenberg repeated for several epochs at the largest budgets).
    "gpu": Config(profile="gpu", model="olmo-micro", vocab_size=2048, seq_len=256, batch_size=512,
                  min_budget=41_943_040.0, n_budgets=6, lr=2e-3, warmup_steps=100,
                  tokenizer_chars=20_000_000, val_blocks=256, save_every=500, mixed_precision="bf16",
                  lr_scan_lrs=()),
    # the paper's OLMo-30M on C4 (hub) for 4B..128B tokens, cosine to zero; 50k BPE trained on C4.
    "paper": Config(profile="paper", model="olmo-30m", vocab_size=50_304, seq_len=1024, batch_size=256,
                    min_budget=4e9, n_budgets=6, lr=1e-3, warmup_steps=1000, corpus="c4",
                    tokenizer_chars=200_000_000, val_blocks=512, save_every=1000, mixed_precision="bf16",
                    lr_scan_lrs=()),
}


# --------------------------------------------------------------------------- small helpers
def fmt_tokens(t: float) -> str:
    """Compact label of a token count: 4k, 0.25M, 8M (binary units when exact), 4B."""
    t = float(t)
    for div, suf in ((2 ** 40, "T"), (2 ** 30, "B"), (2 ** 20, "M"), (2 ** 10, "k")):
        v = t / div
        if 0.125 <= v and (v * 8).is_integer() and len(f"{v:g}") <= 5:
            return f"{v:g}{suf}"
    for div, suf in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if t >= div:
            return f"{t / div:.3g}{suf}"
    return f"{int(t)}"


def budget_steps(cfg: Config) -> list[int]:
    """Optimizer steps of every budget: exact doublings of the first (rounded) budget."""
    s0 = int(round(cfg.min_budget / cfg.tokens_per_step()))
    return [s0 * 2 ** i for i in range(cfg.n_budgets)]


def decay_steps(cfg: Config, steps: int) -> int:
    return max(1, int(round(cfg.decay_frac * steps)))


def lr_multiplier(step: int, cfg: Config, kind: str, total: int, decay_start: int | None = None) -> float:
    """LR factor for the update at ``step`` (0-based): warmup, then cosine/constant/linear decay to 0.

    ``kind``: "cosine" (to zero at ``total``), "constant", or "wsd_decay" (constant until
    ``decay_start``, then linear to zero at ``total``).
    """
    w = cfg.warmup_steps
    if step < w:
        return (step + 1) / (w + 1)
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        prog = (step - w) / max(1, total - w)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, prog)))
    if kind == "wsd_decay":
        if step < decay_start:
            return 1.0
        return max(0.0, (total - step) / (total - decay_start + 1))  # linear; 0 right after the last step
    raise ValueError(kind)


def n_params(cfg: Config) -> int:
    """All parameters of the model (embeddings included, tied counted once), without building it."""
    layers, d, heads, mlp = models.OLMO_PRESETS[cfg.model]
    # OLMo: q,k,v,o (d x d, no bias) + gate/up/down (d x mlp); LayerNorms have no parameters.
    return cfg.vocab_size * d + layers * (4 * d * d + 3 * d * mlp)




# --------------------------------------------------------------------------- corpus and tokenizer
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


class BlockStream:
    """Batch of global step ``k`` = rows ``k*B .. (k+1)*B`` of the epoch-wise shuffled blocks."""

    def __init__(self, blocks: np.ndarray, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise profiles.ProfileError(f"parameter 'batch_size' = {batch_size} must be divisible by "
                                        f"the number of processes ({world})")
        self.blocks, self.B, self.seed, self.rank, self.world = blocks, batch_size, seed, rank, world
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.blocks))}
        return self._perms[epoch]

    def batch(self, step: int):
        import torch
        n, per = len(self.blocks), self.B // self.world
        idx = np.arange(step * self.B + self.rank * per, step * self.B + (self.rank + 1) * per)
        ep = idx // n
        if ep[0] == ep[-1]:
            rows = self._perm(int(ep[0]))[idx % n]
        else:  # the batch straddles two epochs
            rows = np.asarray([self._perm(int(e))[i % n] for e, i in zip(ep, idx)])
        return torch.from_numpy(self.blocks[rows].astype(np.int64))


# --------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Job:
    """One contiguous training segment: steps ``[start, end)`` from scratch or from a parent state."""

    name: str
    series: str  # the schedule whose checkpoints this job exports
    start: int
    end: int
    kind: str  # lr_multiplier kind
    total: int  # horizon of the schedule
    decay_start: int | None = None
    parent: str | None = None  # file name of the state to start from (None: fresh init)
    saves: tuple = ()  # ((step, label), ...): export a checkpoint after this many steps
    keep: tuple = ()  # steps whose full state is kept for child jobs (wsd branch points)
    lineage: str | None = None  # kept states are "<lineage>@<step>.pt"; a fresh job resumes from the latest


def budget_labels(cfg: Config) -> list[str]:
    return [fmt_tokens(s * cfg.tokens_per_step()) for s in budget_steps(cfg)]


def plan(cfg: Config, budgets: int | None = None) -> list[Job]:
    """The jobs of ``cfg.schedule`` (``budgets``: only the smallest this many budgets).

    ``constant`` and the stable part of ``wsd`` are the same warmup-constant run (the "trunk"):
    it is trained once per config, exports the ``constant`` checkpoints at every budget and keeps
    its full state at every wsd branch point, from which each ``wsd`` decay branch starts.
    A truncated plan (the LR scan) has the same cosine runs and decay branches; its trunk is the
    same run stopped at its last budget (job ``trunk-<label>``), which keeps its final state so
    that the full trunk later continues from it instead of starting again.
    """
    steps, labels = budget_steps(cfg), budget_labels(cfg)
    n = len(steps) if budgets is None else max(1, min(int(budgets), len(steps)))
    steps, labels, truncated = steps[:n], labels[:n], n < cfg.n_budgets
    if cfg.schedule == "cosine":
        return [Job(f"cosine-{lab}", "cosine", 0, s, "cosine", s, saves=((s, lab),))
                for s, lab in zip(steps, labels)]
    starts = [s - decay_steps(cfg, s) for s in steps]
    top = budget_steps(cfg)[-1]  # the constant schedule's horizon is the full trunk's (no decay)
    trunk = Job(f"trunk-{labels[-1]}" if truncated else "trunk", "constant", 0, steps[-1], "constant", top,
                saves=tuple(zip(steps, labels)),
                keep=tuple(sorted(set(starts) | ({steps[-1]} if truncated else set()))), lineage="trunk")
    if cfg.schedule == "constant":
        return [trunk]
    branches = [Job(f"wsd-decay-{lab}", "wsd", p, s, "wsd_decay", s, decay_start=p, parent=f"trunk@{p}",
                    saves=((s, lab),)) for s, p, lab in zip(steps, starts, labels)]
    return [trunk] + branches


def planned_steps(cfg: Config, schedule: str | None = None) -> int:
    """Training steps a schedule costs on its own (wsd: the trunk up to its last branch point)."""
    jobs = plan(dataclasses.replace(cfg, schedule=schedule or cfg.schedule))
    if (schedule or cfg.schedule) == "wsd":
        branches = [j for j in jobs if j.name != "trunk"]
        return max(j.start for j in branches) + sum(j.end - j.start for j in branches)
    return sum(j.end - j.start for j in jobs)


def cost_ratio(cfg: Config, other: str = "wsd") -> float:
    """Planned training steps of ``cosine`` divided by those of ``other`` for the same budgets."""
    return planned_steps(cfg, "cosine") / planned_steps(cfg, other)


# --------------------------------------------------------------------------- training
def _rng_state():
    """All RNG states as tensors and plain python values only, so ``torch.load(weights_only=True)``
    reads them back without any allow-list (no numpy objects in the pickle)."""
    import torch
    kind, key, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": [int(version), [int(v) for v in internal], gauss_next],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(st):
    import torch
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    if isinstance(n, dict):
        n = (n["kind"], np.asarray(n["key"].numpy(), dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(n)  # (a legacy state holds numpy's own tuple)
    version, internal, gauss_next = st["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if st.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _legacy_state_globals() -> list:
    """The only non-torch types a state file written before the safe format holds (numpy's RNG key,
    a uint32 array): numpy array reconstruction, under both module spellings (numpy 1.x and 2.x)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    rec = multiarray._reconstruct
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), rec, (rec, "numpy.core.multiarray._reconstruct"),
            (rec, "numpy._core.multiarray._reconstruct")]


def _load_state(path: Path) -> dict:
    """Read a state file with ``torch.load(weights_only=True)``: never unpickles arbitrary objects
    (a crafted file in a shared runs folder must not run code). A legacy file (numpy RNG state inside)
    is read with a narrow allow-list of numpy array types; anything else is refused."""
    import pickle
    import torch
    try:
        with torch.serialization.safe_globals(_legacy_state_globals()):
            st = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = [l.strip() for l in str(e).splitlines() if "nsupported" in l or "but got" in l] or ["unreadable"]
        raise RuntimeError(f"refusing to load pre-training state {path}: it cannot be read safely "
                           f"(weights_only=True) and is not a state file this package wrote; delete it to "
                           f"restart that job from scratch ({why[0]})") from None
    if not (isinstance(st, dict) and {"model", "optimizer", "step", "rng"} <= st.keys()):
        raise RuntimeError(f"refusing to load pre-training state {path}: not a state file this package wrote; "
                           f"delete it to restart that job from scratch")
    return st


def _save_state(path: Path, state: dict) -> None:
    import torch
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _latest_lineage_state(state_dir: Path, job: Job, after: int) -> Path | None:
    """The kept state of ``job``'s lineage with the most steps in ``(after, job.end]``, if any."""
    if job.lineage is None or job.parent is not None:
        return None
    best, best_step = None, after
    for p in state_dir.glob(f"{job.lineage}@*.pt"):
        try:
            k = int(p.stem.rsplit("@", 1)[1])
        except ValueError:
            continue
        if best_step < k <= job.end:
            best, best_step = p, k
    return best


def _model_config(cfg: Config, tokenizer):
    return models.olmo_config(cfg.model, vocab_size=len(tokenizer), max_len=cfg.seq_len,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id,
                              eos_token_id=tokenizer.eos_token_id)


def _make_optimizer(model, cfg: Config):
    import torch
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.peak_lr(), betas=(0.9, cfg.beta2), eps=1e-8,
                             fused=False, foreach=True)


def _accelerator(cfg: Config):
    from accelerate import Accelerator
    cpu = profiles.get_profile(cfg.profile).device == "cpu"
    import torch
    mp = cfg.mixed_precision if (not cpu and torch.cuda.is_available()) else "no"
    return Accelerator(cpu=cpu, mixed_precision=mp)


def train_job(cfg: Config, job: Job, run_dir: Path, stream: BlockStream, tokenizer, accelerator,
              on_export: Callable | None = None, progress: bool = True, stop_after: int | None = None) -> dict:
    """Run (or resume) one job; export its checkpoints; return {"wall_s": elapsed, "steps": n}.

    The full state is saved atomically to ``run_dir/state/<job>.pt`` every ``cfg.save_every``
    steps; a restart resumes from it. ``stop_after`` (tests) stops after that many new steps.
    """
    import torch
    state_dir = run_dir / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    done_file = state_dir / f"{job.name}.done.json"
    if done_file.is_file():
        return json.loads(done_file.read_text())
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = models.build_model(_model_config(cfg, tokenizer), seed=cfg.seed)
    optimizer = _make_optimizer(model, cfg)
    fn = lambda i: lr_multiplier(job.start + i, cfg, job.kind, job.total, job.decay_start)
    resume = state_dir / f"{job.name}.pt"
    step, elapsed, own = job.start, 0.0, 0.0
    src = resume if resume.is_file() else (state_dir / f"{job.parent}.pt" if job.parent else None)
    st, div0 = None, None
    if src is not None:
        st = _load_state(src)
    lin = _latest_lineage_state(state_dir, job, st["step"] if (st is not None and src == resume) else job.start)
    if lin is not None:  # the same run went further before (e.g. the LR scan's shorter trunk)
        src, st = resume, _load_state(lin)
    if st is not None:
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    if st is not None:
        if src == resume:
            scheduler.load_state_dict(st["scheduler"])
            step, elapsed, own = st["step"], st["elapsed"], st["own"]
        else:  # a wsd branch: continue from the trunk's state (its time counts), own schedule
            elapsed = st["elapsed"]
        for g in optimizer.param_groups:  # the lr of the next update, whatever the saved one was
            g["lr"] = g["initial_lr"] * fn(step - job.start)
        _set_rng_state(st["rng"])
        div0 = st.get("diverged_step")  # a wsd branch inherits its trunk's divergence
        del st
    else:
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    saves = dict(job.saves)
    keep = set(job.keep)
    bar = None
    if progress and accelerator.is_main_process:
        from tqdm.auto import tqdm
        bar = tqdm(total=job.end - job.start, initial=step - job.start, desc=f"{cfg.schedule} [{cfg.profile}] {job.name}",
                   leave=False, mininterval=2.0)

    def state():
        return {"model": accelerator.unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "elapsed": elapsed, "own": own,
                "rng": _rng_state(), "diverged_step": diverged_step()}

    def diverged_step():  # read at save points only: no device sync per step
        b = int(first_bad)
        return b if b >= 0 else None

    new, first = 0, step
    # the first step whose training loss was not finite (-1: none), carried over from the state
    first_bad = torch.tensor(int(div0) if div0 is not None else -1, device=accelerator.device)
    t0 = time.perf_counter()
    while step < job.end:
        x = stream.batch(step).to(accelerator.device)
        out = model(input_ids=x, labels=x)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(out.loss.detach()),
                                torch.full_like(first_bad, step + 1), first_bad)
        accelerator.backward(out.loss)
        if cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        new += 1
        if bar is not None:
            bar.update(1)
        if step in saves or step in keep or step % cfg.save_every == 0 or step == job.end:
            now = time.perf_counter()
            elapsed += now - t0
            own += now - t0
            t0 = now
            if accelerator.is_main_process:
                st = state()
                if step in keep:
                    _save_state(state_dir / f"{job.lineage or job.name}@{step}.pt", st)
                if step in saves and on_export is not None:
                    on_export(accelerator.unwrap_model(model), job.series, saves[step], step, elapsed,
                              diverged_step=st["diverged_step"])
                _save_state(resume, st)
            accelerator.wait_for_everyone()
            t0 = time.perf_counter()
        if stop_after is not None and new >= stop_after and step < job.end:
            if bar is not None:
                bar.close()
            return {"wall_s": elapsed, "own_wall_s": own, "steps": step, "stopped": True}
    if bar is not None:
        bar.close()
    info = {"wall_s": elapsed, "own_wall_s": own, "steps": step, "resumed_at": first,
            "diverged_step": diverged_step()}
    if accelerator.is_main_process:
        results.atomic_write_json(done_file, info)
        resume.unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    return info


# --------------------------------------------------------------------------- the suite
# fields that do not change what is trained (or, for the lr_* fields, enter through the
# schedule's effective peak LR): not part of the cache key, so e.g. `workers` reuses a suite
_KEY_SKIP = ("threads", "save_every", "schedule", "workers", "lr_cosine", "lr_wsd", "lr_constant",
             "lr_scan_lrs", "lr_scan_budgets")


def suite_key(cfg: Config, tokenizer) -> str:
    """Hash of everything that changes the trained weights of ``cfg.schedule``.

    Schedules of a config with the same effective peak LR share one folder (``wsd`` and
    ``constant`` then share the trunk); ``lr`` stands for ``cfg.peak_lr()``, so a config without
    ``lr_<schedule>`` overrides has the key it had before those fields existed.
    """
    from ..foundation import evaluate
    c = {k: v for k, v in cfg.to_dict().items() if k not in _KEY_SKIP}
    c["lr"] = cfg.peak_lr()
    return results.config_hash({"config": c, "tokenizer": evaluate.tokenizer_fingerprint(tokenizer),
                                "code": CODE_VERSION})


def suite_dir(cfg: Config, tokenizer) -> Path:
    return results.runs_dir() / "suite" / suite_key(cfg, tokenizer)


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


def resolve(profile: str = "cpu", schedule: str = "cosine", seed: int = 0, overrides: dict | None = None) -> Config:
    return profiles.resolve(CHAPTER, profile, {**(overrides or {}), "schedule": schedule}, seed=seed)


def _series_name(cfg: Config) -> str:
    return f"coft-{cfg.model}-{cfg.schedule}-{cfg.profile}"


def _train_cfg(cfg: Config) -> Config:
    """``cfg`` as one training run sees it: ``lr`` is the schedule's peak LR (one value per folder)."""
    return dataclasses.replace(cfg, lr=cfg.peak_lr(), lr_cosine=0.0, lr_wsd=0.0, lr_constant=0.0)


@dataclass(frozen=True)
class Unit:
    """One job of one suite folder: what a worker process needs to train it (picklable)."""

    cfg: Config  # _train_cfg of a config whose plan holds ``job``
    root: str
    job: Job
    progress: bool = False

    def steps_left(self) -> int:
        return self.job.end - self.job.start

    def label(self) -> str:
        return f"{self.job.name} (lr {self.cfg.lr:g}, {Path(self.root).name})"


def _context_key(cfg: Config) -> tuple:
    from ..foundation import data
    return (cfg.corpus, cfg.vocab_size, cfg.tokenizer_chars, cfg.seq_len, cfg.batch_size, _tokens_needed(cfg),
            cfg.seed, cfg.val_blocks, cfg.profile, cfg.mixed_precision, str(data.cache_dir()))


_CONTEXT: dict = {}


def _context(cfg: Config, accelerator=None):
    """(tokenizer, block stream, validation blocks, accelerator) of ``cfg``, cached per process."""
    key = _context_key(cfg) + (id(accelerator),)
    if key not in _CONTEXT:
        if parallel.in_worker():  # no progress bars / chatty loggers from the worker processes
            parallel.quiet()
        acc = accelerator or _accelerator(cfg)
        tok = get_tokenizer(cfg)
        stream = BlockStream(token_blocks(cfg, tok), cfg.batch_size, cfg.seed, acc.process_index, acc.num_processes)
        val = _val_blocks(cfg, tok) if (cfg.val_blocks and acc.is_main_process) else None
        _CONTEXT.clear()  # one suite family at a time: keep memory flat
        _CONTEXT[key] = (tok, stream, val, acc)
    return _CONTEXT[key]


def _exporter(cfg: Config, tok, root: Path, val, accelerator):
    def export(model, series, label, step, elapsed, diverged_step=None):
        from ..foundation import evaluate
        out = root / series / "ckpt" / label
        models.save_model(model, out, tok)
        nparams = models.count_params(model)
        rec = {"label": label, "tokens": step * cfg.tokens_per_step(), "step": step, "params": nparams,
               "tokens_per_param": step * cfg.tokens_per_step() / nparams, "wall_s": elapsed,
               "schedule": series, "model": cfg.model, "seed": cfg.seed, "lr": cfg.lr}
        if val is not None:
            was = model.training
            model.eval()
            dev = next(model.parameters()).device
            with accelerator.autocast() if accelerator.mixed_precision != "no" else contextlib.nullcontext():
                r = evaluate.perplexity(model, val.to(dev), batch_size=16)
            model.train(was)
            rec.update(val_ppl=r["ppl"], val_loss=r["loss"])
        bad_val = val is not None and not math.isfinite(rec["val_loss"])
        rec.update(diverged=diverged_step is not None or bad_val, diverged_step=diverged_step,
                   diverged_reason=(f"non-finite training loss at step {diverged_step}" if diverged_step is not None
                                    else f"non-finite validation loss at step {step}" if bad_val else ""))
        if rec["diverged"] and val is not None:  # a diverged model's perplexity is not a score
            rec.update(val_ppl=math.nan, val_loss=math.nan)
        results.atomic_write_json(out.with_name(label + ".record.json"), rec)
    return export


def run_unit(unit: Unit, accelerator=None, stop_after: int | None = None) -> dict:
    """Train (or resume, or skip if done) one job; the worker function of :func:`train_suites`."""
    tok, stream, val, acc = _context(unit.cfg, accelerator)
    root = Path(unit.root)
    return train_job(unit.cfg, unit.job, root, stream, tok, acc, _exporter(unit.cfg, tok, root, val, acc),
                     unit.progress, stop_after)


def _done(root: Path, job: Job) -> dict | None:
    f = root / "state" / f"{job.name}.done.json"
    return json.loads(f.read_text()) if f.is_file() else None


def _ready(root: Path, job: Job) -> bool:
    return job.parent is None or (root / "state" / f"{job.parent}.pt").is_file() or \
        (root / "state" / f"{job.name}.pt").is_file()


def train_suites(cfgs, budgets: int | None = None, progress: bool = True, workers: int | None = None,
                 accelerator=None, stop_after: int | None = None) -> dict | None:
    """Train every job of the plans of ``cfgs`` that is not done, sharing what can be shared.

    The jobs of all configs go into one pool of ``workers`` processes (default: the largest
    ``cfg.workers``), longest first; a job whose parent state (a wsd branch point) does not exist
    yet waits for the next round. Jobs that two configs share (the trunk of ``wsd`` and
    ``constant`` at one peak LR) run once. Returns ``{(schedule, peak lr): series}`` for the full
    plans (``budgets`` None; series.json written) or ``{...: suite folder}`` for truncated ones;
    None when ``stop_after`` (tests) stopped a job early. Under ``torchrun``/``accelerate launch``
    (or with an ``accelerator``) the jobs run one after the other in this process, on every rank.
    """
    cfgs = list(cfgs)
    if not cfgs:
        return {}
    roots, out, todo = {}, {}, []
    for cfg in cfgs:
        tok = get_tokenizer(cfg)
        root = suite_dir(cfg, tok)
        sf = root / cfg.schedule / "series.json"
        if budgets is None and sf.is_file():
            out[(cfg.schedule, cfg.peak_lr())] = models.CheckpointSeries.from_dict(json.loads(sf.read_text()))
        else:
            todo.append((cfg, root))
            roots.setdefault(str(root), (cfg, tok))
    if not todo:
        return out
    distributed = accelerator is not None or int(os.environ.get("WORLD_SIZE", "1")) > 1
    with contextlib.ExitStack() as stack:
        if not distributed:
            # one process at a time per suite folder: a second caller waits, then loads the result
            import fcntl
            for r in sorted(roots):
                Path(r).mkdir(parents=True, exist_ok=True)
                fh = stack.enter_context(open(Path(r) / ".lock", "w"))
                fcntl.flock(fh, fcntl.LOCK_EX)
        acc0 = accelerator or (_accelerator(todo[0][0]) if distributed else None)
        main = acc0.is_main_process if acc0 is not None else True
        for r, (cfg, tok) in roots.items():  # the shared inputs, made once here, not in the workers
            token_blocks(cfg, tok)
            if cfg.val_blocks and main:
                _val_blocks(cfg, tok)
            if main:
                results.atomic_write_json(Path(r) / "config.json",
                                          {"config": _train_cfg(cfg).to_dict(), "code": CODE_VERSION})
        units, seen = [], set()
        for cfg, root in todo:
            for job in plan(cfg, budgets):
                if (str(root), job.name) not in seen:
                    seen.add((str(root), job.name))
                    units.append(Unit(_train_cfg(cfg), str(root), job))
        nw = max(c.workers for c, _ in todo) if workers is None else workers
        pending = [u for u in units if _done(Path(u.root), u.job) is None]
        while pending:
            ready = [u for u in pending if _ready(Path(u.root), u.job)]
            if not ready:
                raise RuntimeError("pre-training jobs wait for parent states that no job makes: "
                                   + ", ".join(f"{u.job.name} <- {u.job.parent}" for u in pending))
            ready.sort(key=lambda u: -u.steps_left())  # longest first: the pool ends with short jobs
            if distributed or stop_after is not None:
                for u in ready:
                    if run_unit(dataclasses.replace(u, progress=progress), acc0, stop_after).get("stopped"):
                        return None
            else:  # nw == 1: in this process, one job after the other, each with its own bar
                parallel.map_units(run_unit, [dataclasses.replace(u, progress=progress and nw == 1) for u in ready],
                                   nw, threads=ready[0].cfg.threads or (1 if nw > 1 else None), label=Unit.label,
                                   progress=progress and nw > 1,
                                   desc=f"pre-training [{ready[0].cfg.profile}]: jobs on {nw} workers")
            pending = [u for u in pending if _done(Path(u.root), u.job) is None]
        for cfg, root in todo:
            if budgets is not None:
                out[(cfg.schedule, cfg.peak_lr())] = root
                continue
            series = _assemble(cfg, root, roots[str(root)][1])
            if main:
                series.save(root / cfg.schedule / "series.json")
            out[(cfg.schedule, cfg.peak_lr())] = series
    if acc0 is not None:
        acc0.wait_for_everyone()
    return out


def _assemble(cfg: Config, root: Path, tok) -> models.CheckpointSeries:
    job_info = {j.name: _done(root, j) for j in plan(cfg)}
    ckdir = root / cfg.schedule / "ckpt"
    labels = set(budget_labels(cfg))
    recs = [r for r in load_records_dir(ckdir) if r["label"] in labels]
    cks = tuple(models.Checkpoint(r["label"], float(r["tokens"]), path=str(ckdir / r["label"])) for r in recs)
    return models.CheckpointSeries(
        _series_name(cfg), cks,
        f"{cfg.model} pre-trained on {cfg.corpus} with a {cfg.schedule} schedule ({cfg.profile} profile)",
        meta={"config": cfg.to_dict(), "init_std": _model_config(cfg, tok).initializer_range,
              "params": recs[0]["params"] if recs else n_params(cfg), "schedule": cfg.schedule, "key": root.name,
              "peak_lr": cfg.peak_lr(), "jobs": job_info, "total_train_wall_s": _total_wall(cfg.schedule, job_info),
              "total_train_steps": planned_steps(cfg),
              "tokens_per_step": cfg.tokens_per_step(), "code": CODE_VERSION})


def run_suite(cfg: Config, progress: bool = True, accelerator=None, stop_after: int | None = None):
    """Train every job of ``cfg``'s plan not done yet; return the series (None if stopped early)."""
    res = train_suites([cfg], progress=progress, accelerator=accelerator, stop_after=stop_after)
    return None if res is None else res[(cfg.schedule, cfg.peak_lr())]


def _total_wall(schedule: str, job_info: dict) -> float:
    """Measured training time a schedule costs on its own (wsd: trunk up to its last branch point
    = the largest trunk time a branch started from, plus every branch's own time)."""
    if schedule != "wsd":
        return sum(i["own_wall_s"] for i in job_info.values())
    br = [i for n, i in job_info.items() if n != "trunk"]
    return max(i["wall_s"] - i["own_wall_s"] for i in br) + sum(i["own_wall_s"] for i in br)


def load_records_dir(ckdir: Path) -> list[dict]:
    recs = [results._unjson(json.loads(p.read_text())) for p in ckdir.glob("*.record.json")]
    return sorted(recs, key=lambda r: r["tokens"])


def cached_suite(profile: str = "cpu", schedule: str = "cosine", seed: int = 0,
                 overrides: dict | None = None) -> models.CheckpointSeries | None:
    """The finished suite if it is cached, else None (never trains; may train the tokenizer)."""
    cfg = resolve(profile, schedule, seed, overrides)
    f = suite_dir(cfg, get_tokenizer(cfg)) / cfg.schedule / "series.json"
    return models.CheckpointSeries.from_dict(json.loads(f.read_text())) if f.is_file() else None


def get_suite(profile: str = "cpu", schedule: str = "cosine", seed: int = 0, overrides: dict | None = None,
              progress: bool = True) -> models.CheckpointSeries:
    """The checkpoint series of ``schedule`` at ``profile`` (trained once, then loaded from the cache)."""
    cfg = resolve(profile, schedule, seed, overrides)
    return run_suite(cfg, progress=progress)


def load_records(series: models.CheckpointSeries) -> list[dict]:
    recs = []
    for c in series:
        p = Path(c.path).with_name(c.label + ".record.json")
        recs.append(results._unjson(json.loads(p.read_text())) if p.is_file() else {"label": c.label, "tokens": c.tokens})
    return recs


def suite_records(series: models.CheckpointSeries):
    """One row per checkpoint: schedule, peak LR, label, tokens, tokens/param, val ppl, wall time."""
    import pandas as pd
    cols = ["schedule", "lr", "label", "tokens", "params", "tokens_per_param", "val_ppl", "val_loss", "wall_s",
            "step", "diverged", "diverged_step", "diverged_reason"]
    df = pd.DataFrame(load_records(series))
    return df[[c for c in cols if c in df.columns]]


# --------------------------------------------------------------------------- the book's page
def all_suites(profile: str = "cpu", seed: int = 0, overrides: dict | None = None,
               schedules=SCHEDULES, progress: bool = True) -> dict[str, models.CheckpointSeries]:
    """{schedule: series} for every schedule (``overrides`` may not set the schedule); the jobs
    of all schedules not cached yet are trained together on ``cfg.workers`` processes."""
    over = {k: v for k, v in (overrides or {}).items() if k != "schedule"}
    cfgs = [resolve(profile, s, seed, over) for s in schedules]
    res = train_suites(cfgs, progress=progress)
    return {c.schedule: res[(c.schedule, c.peak_lr())] for c in cfgs}


# --------------------------------------------------------------------------- peak-LR scan
def lr_scan(profile: str = "cpu", schedules=SCHEDULES, lrs=None, budgets: int | None = None, seed: int = 0,
            overrides: dict | None = None, progress: bool = True):
    """Validation perplexity of every schedule at every peak LR on the smallest ``budgets`` budgets.

    ``lrs`` / ``budgets`` default to the profile's ``lr_scan_lrs`` / ``lr_scan_budgets``. Each
    (schedule, lr) is the suite at that peak LR, truncated to its smallest budgets: the same jobs,
    cache folders and resumable state as the suite itself (so the suite at a scanned LR reuses
    them: its small cosine runs and decay branches, and its trunk continues from the scan's).
    All jobs run together on ``cfg.workers`` processes. Returns a DataFrame with one row per
    (schedule, lr, budget): ``schedule, lr, label, tokens, val_ppl, val_loss``.
    """
    import pandas as pd
    over = {k: v for k, v in (overrides or {}).items() if k != "schedule"}
    base = resolve(profile, "cosine", seed, over)
    lrs = tuple(base.lr_scan_lrs if lrs is None else lrs)
    budgets = min(base.lr_scan_budgets, base.n_budgets) if budgets is None else budgets
    bad = [x for x in lrs if isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0]
    if not lrs or bad:
        raise profiles.ProfileError(f"lr_scan needs peak learning rates > 0, got {lrs!r}")
    if not (isinstance(budgets, int) and 1 <= budgets <= base.n_budgets):
        raise profiles.ProfileError(f"lr_scan: budgets = {budgets!r}; allowed: an integer in 1..{base.n_budgets}")
    if not base.val_blocks:
        raise profiles.ProfileError("lr_scan compares validation perplexity: parameter 'val_blocks' must be > 0")
    bad = [s for s in schedules if s not in SCHEDULES]
    if bad:
        raise profiles.ProfileError(f"unknown schedule(s) {bad!r}; allowed: {', '.join(SCHEDULES)}")
    flat = {"lr_cosine": 0.0, "lr_wsd": 0.0, "lr_constant": 0.0}
    cfgs = [resolve(profile, s, seed, {**over, **flat, "lr": float(x)}) for s in schedules for x in lrs]
    roots = train_suites(cfgs, budgets=budgets, progress=progress)
    rows = []
    for cfg in cfgs:
        root = roots[(cfg.schedule, cfg.peak_lr())]
        keep = budget_labels(cfg)[:budgets]
        for r in load_records_dir(root / cfg.schedule / "ckpt"):
            if r["label"] in keep:
                rows.append({"schedule": cfg.schedule, "lr": cfg.peak_lr(), "label": r["label"],
                             "tokens": r["tokens"], "val_ppl": r["val_ppl"], "val_loss": r["val_loss"]})
    return pd.DataFrame(rows, columns=["schedule", "lr", "label", "tokens", "val_ppl", "val_loss"])


def choose_lr(scan) -> dict[str, float]:
    """The rule: per schedule, the peak LR with the lowest mean validation log-perplexity
    (``val_loss``) over the scanned budgets; a diverged point counts as +inf; ties go to the
    smaller LR."""
    out = {}
    for sched, g in scan.groupby("schedule", sort=False):
        m = g.assign(v=g["val_loss"].astype(float).where(np.isfinite(g["val_loss"].astype(float)), np.inf)) \
             .groupby("lr")["v"].mean()
        best = m.min()
        out[sched] = float(min(lr for lr, v in m.items() if v == best))
    return out


def lr_scan_summary(scan, cfg: Config) -> dict:
    """The chosen LRs, the preset's LRs, and a sentence stating both (for the book)."""
    chosen = choose_lr(scan)
    preset = {s: cfg.peak_lr(s) for s in chosen}
    labels = list(dict.fromkeys(scan.sort_values("tokens")["label"]))
    parts = [f"{s} {lr:g}" for s, lr in chosen.items()]
    same = all(abs(preset[s] - lr) <= 1e-12 * lr for s, lr in chosen.items())
    text = (f"Lowest mean validation log-perplexity over the {', '.join(labels)} budgets: peak LR "
            + ", ".join(parts) + ". " +
            ("The suite below is trained with these values (the profile's preset)." if same else
             "The suite below is trained with the profile's preset, "
             + ", ".join(f"{s} {preset[s]:g}" for s in chosen) + ", which differs from this scan."))
    return {"chosen": chosen, "preset": preset, "matches_preset": same, "budgets": labels, "text": text}


def plot_lr_scan(scan, chosen: dict | None = None):
    """Validation perplexity against peak LR (log x), one panel per schedule, one line per
    budget; the chosen LR of each schedule marked with a dashed line and open circles."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator, ScalarFormatter
    chosen = choose_lr(scan) if chosen is None else chosen
    scheds = list(dict.fromkeys(scan["schedule"]))
    fig, axes = plt.subplots(1, len(scheds), figsize=(3.6 * len(scheds), 3.6), sharey=True, squeeze=False)
    labels = list(dict.fromkeys(scan.sort_values("tokens")["label"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, sched in zip(axes[0], scheds):
        g = scan[scan["schedule"] == sched]
        for i, lab in enumerate(labels):
            h = g[g["label"] == lab].sort_values("lr")
            ax.plot(h["lr"], h["val_ppl"], marker="osD^v<>"[i % 7], color=colors[i % len(colors)],
                    label=f"{lab} tokens")
            c = h[np.isclose(h["lr"], chosen[sched])]
            ax.plot(c["lr"], c["val_ppl"], "o", ms=13, mfc="none", mec="k", mew=1.2)
        ax.axvline(chosen[sched], color="k", ls="--", lw=0.8)
        ax.set_xscale("log")
        plots.log_y(ax)
        lrs = sorted(set(g["lr"]))
        ax.set_xticks(lrs, labels=[f"{x:g}" for x in lrs], rotation=30)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.set_title(f"{sched}: chosen {chosen[sched]:g}")
        ax.set_xlabel("peak learning rate")
    axes[0][0].set_ylabel("validation perplexity")
    axes[0][-1].legend(title="budget", fontsize="small", loc="best")
    fig.tight_layout()
    return fig


def records_frame(suites: dict[str, models.CheckpointSeries]):
    import pandas as pd
    return pd.concat([suite_records(s) for s in suites.values()], ignore_index=True)


def plot_ppl(table, ax=None):
    """Validation perplexity against pre-training tokens (log x), one line per schedule."""
    import matplotlib.pyplot as plt
    if ax is None:
        fig, ax = plt.subplots()
    for (sched, g), mk in zip(table.groupby("schedule", sort=False), "osD^v"):
        g = g.sort_values("tokens")
        line = ax.plot(g["tokens"], g["val_ppl"], marker=mk, label=sched)[0]
        if "diverged" in g and g["diverged"].fillna(False).astype(bool).any():
            dv = g[g["diverged"].fillna(False).astype(bool)]
            ax.plot(dv["tokens"], [0.95] * len(dv), "x", color=line.get_color(), ms=10, mew=2.5, clip_on=False,
                    transform=ax.get_xaxis_transform(), label=f"{sched}: diverged (not scored)")
    ax.set_xscale("log", base=2)
    plots.log_y(ax)
    ax.set_xlabel("pre-training tokens")
    ax.set_ylabel("validation perplexity (held-out Gutenberg)")
    ax.set_title("Base models get better with more tokens")
    ax.legend(title="schedule")
    return ax.figure


def diverged_note(table) -> str:
    """Which checkpoints of a suite table diverged and why ('' if none): they have no score."""
    if "diverged" not in table:
        return ""
    d = table[table["diverged"].fillna(False).astype(bool)]
    if not len(d):
        return ""
    why = list(dict.fromkeys(d["diverged_reason"].fillna("")))
    return (f"{len(d)} of {len(table)} checkpoints diverged ({', '.join(map(str, d['label']))}; "
            f"{'; '.join(why[:2])}{' …' if len(why) > 2 else ''})")


def monotone_verdict(table) -> dict:
    """Does validation perplexity improve with tokens, per schedule? A calibrated test
    (``coft_utils.foundation.verdicts.improves`` on log perplexity: the slope per doubling of tokens with
    its 95 % CI; one trained model per budget, so the s.e. comes from the fit's residuals); the
    claim row requires every schedule (an intersection-union test, each at α). Whether every
    doubling helps (strict monotonicity) is reported beside it."""
    from ..foundation import verdicts
    per, tests = {}, {}
    for sched, g in table.groupby("schedule", sort=False):
        g = g.sort_values("tokens")
        p = list(g["val_ppl"])
        tests[sched] = verdicts.diverged(
            verdicts.improves(g.tokens.to_numpy(float), np.asarray(p, float)[None, :], log=True), diverged_note(g))
        per[sched] = {"monotone": all(b < a for a, b in zip(p, p[1:])), "first": p[0], "last": p[-1],
                      "verdict": tests[sched].label, "statistic": tests[sched].stat_text(),
                      "diverged": bool(diverged_note(g))}
    row = verdicts.combine(tests, over="schedules", require="all")
    parts = [f"{s}: {v['first']:.1f} -> {v['last']:.1f}, {v['verdict']} "
             f"({v['statistic']}" + ("" if v["diverged"] else
                                      f"; {'every doubling helps' if v['monotone'] else 'NOT every doubling helps'}") + ")"
             for s, v in per.items()]
    return {"per_schedule": per, "all_monotone": all(v["monotone"] for v in per.values()), "verdict": row,
            "text": f"Validation perplexity improving with tokens is **{row.label}** for every schedule: "
                    + "; ".join(parts) + "."}


def cost_summary(suites: dict[str, models.CheckpointSeries]) -> dict:
    """Measured training wall time per schedule and the wsd/cosine cost ratio."""
    wall = {s: float(x.meta.get("total_train_wall_s", float("nan"))) for s, x in suites.items()}
    out = {"wall_s": wall}
    if "cosine" in wall and "wsd" in wall:
        r = wall["wsd"] / wall["cosine"]
        cfg = Config(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in suites["wsd"].meta["config"].items()})
        out.update(ratio=r, planned=1 / cost_ratio(cfg))
        out["text"] = (f"training the cosine suite took {wall['cosine']:.0f} s, the wsd suite {wall['wsd']:.0f} s "
                       f"(trunk up to its last branch point plus every decay branch): wsd costs {r:.2f} of "
                       f"cosine (planned steps: {out['planned']:.2f}); constant took {wall.get('constant', float('nan')):.0f} s.")
    else:
        out["text"] = "; ".join(f"{s}: {w:.0f} s" for s, w in wall.items())
    return out
