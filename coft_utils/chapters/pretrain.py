"""Controlled pre-training suite: tiny-to-paper OLMo models, one checkpoint per token budget.

The paper (Springer et al., 2025, Sec. 4) separates "more tokens" from "a different final
learning rate" by pre-training its own OLMo-15M/30M/90M on C4 for 4B..128B tokens, every run
annealed to zero. This module (the chapter's experiment: ``Config``, ``PRESETS``, the suites'
cache keys and folders, running the plans' jobs) runs the same experiment at every profile and
returns the result as a :class:`coft_utils.foundation.models.CheckpointSeries` of local folders, so
every chapter loads it like a hub series::

    from coft_utils.chapters import pretrain
    from coft_utils.foundation import models
    series = pretrain.get_suite("smoke")                  # < 60 s, trains once, then cached
    series = pretrain.get_suite("cpu", schedule="wsd")    # cosine (default) | wsd | constant
    model = models.load_model(series.checkpoints[-1]); tok = models.load_tokenizer(series.checkpoints[-1])
    series.meta["init_std"], series.meta["config"]
    pretrain.load_records(series)                         # one record per checkpoint (tokens, val ppl, ...)
    suites = pretrain.all_suites("cpu")                   # {schedule: series}; their jobs share one pool

    # independent jobs on `workers` processes of one thread each (coft_utils.foundation.parallel), or
    # the same training code on several processes / GPUs (DDP through accelerate):
    #   python -m coft_utils.chapters.pretrain_launch --profile cpu --schedule all --workers 2
    #   accelerate launch --num_processes 2 -m coft_utils.chapters.pretrain_launch --profile gpu --schedule all
    #   accelerate launch --cpu --num_processes 2 -m coft_utils.chapters.pretrain_launch --profile smoke   # gloo
    #   torchrun --nproc_per_node 2 -m coft_utils.chapters.pretrain_launch --profile smoke
    # at paper: tokenize once first (one process), then launch; the global batch (batch_size) is the
    # same for any number of processes (gradient accumulation in micro_batch_size blocks):
    #   python -m coft_utils.chapters.pretrain_data prepare --profile paper
    #   accelerate launch --config_file coft_utils/configs/accelerate_ddp.yaml -m coft_utils.chapters.pretrain_launch --profile paper

The chapter's other modules: :mod:`~coft_utils.chapters.pretrain_plan` (budgets, LR schedules,
the plan of jobs), :mod:`~coft_utils.chapters.pretrain_data` (corpus, tokenizer, token blocks),
:mod:`~coft_utils.chapters.pretrain_train` (the resumable training loop of one job, the worker's
unit), :mod:`~coft_utils.chapters.pretrain_scan` (the peak-LR scan and its rule) and
:mod:`~coft_utils.chapters.pretrain_report` (tables, figures, the claim verdict).

Schedules (a geometric series of ``n_budgets`` token budgets, each double the last):

* ``cosine``   every budget is its own run: linear warmup, then cosine to zero (the paper's protocol);
* ``wsd``      one warmup-stable run; at each budget a decay-to-zero branch of ``decay_frac`` of
               that budget is taken off the stable trunk (cheaper: the trunk is shared);
* ``constant`` one warmup-constant run, saved at every budget (no annealing).
* ``wsd_short`` (chapter 06; not one of chapter 00's three) the ``wsd`` trunk with a short anneal:
               ``decay_frac_short`` (< ``decay_frac``) of each budget, its branch starting from the
               trunk state the ``wsd`` branch starts from (constant LR up to its own decay start),
               so short and long anneals share the trunk and differ only in the anneal.

Each schedule trains at its own peak LR, ``cfg.peak_lr(schedule)`` (``lr_<schedule>``, else
``lr``); ``wsd`` and ``constant`` share the trunk when theirs are equal.
:func:`~coft_utils.chapters.pretrain_scan.lr_scan` trains every schedule at every LR of a grid on
the smallest budgets and :func:`~coft_utils.chapters.pretrain_scan.choose_lr` picks, per schedule,
the LR with the lowest mean validation log-perplexity over them; the ``cpu`` preset holds the
values it chose there.

Parallel: the jobs of a plan (every cosine budget, the trunk, each decay branch once its branch
point exists) are independent units; :func:`train_suites` runs those of several schedules and
configs together on ``cfg.workers`` processes (:mod:`coft_utils.foundation.parallel`), longest first. Each
job writes its own state, checkpoints and records atomically, so a killed run resumes, and the
weights do not depend on ``workers`` (one torch thread per process either way).

Data: the Gutenberg book bodies (``paper``: C4 'en' shards from the hub), tokenized once -- by
rank 0, or beforehand with ``python -m coft_utils.chapters.pretrain_data prepare --profile paper``
-- by the project's BPE (trained on the same corpus) into a shared memory-mapped token file that
every rank reads (:mod:`~coft_utils.chapters.pretrain_data`), cut into packed ``seq_len`` blocks; the
block order is a permutation drawn from the seed (a fresh one per epoch), so the batch of global
step ``k`` is a pure function of (seed, k) and every budget sees a prefix of the same stream.

The paper profile (what §3 of the paper ran, each value with its source; "chosen" where no stored
public source gave it -- the paper's Appendix D Table 3 could not be read here: only the opening
of its arXiv HTML and of its reproducibility page were retrievable):

* codebase: "we pre-train models using the OLMo codebase" (App. D.1, quoted by the paper's
  reproducibility page, acmrep2026.k117.org/papers/overtrained_language_models_are_harder_to_finetune__167d13cc);
  here the OLMo-1 architecture of ``transformers`` (``OlmoForCausalLM``: no biases, SwiGLU, RoPE,
  non-parametric LayerNorm) and this module's loop;
* models OLMo-15M / 30M / 90M (paper §3), the suite's default OLMo-30M (the first author's summary:
  the Gaussian experiments use the 30M models); per size: ``models.OLMO_PRESETS`` -- layers x
  d_model x heads x MLP 8x384x6x1024 / 10x512x8x1408 / 12x768x12x2048 (chosen; 14.2M / 32.1M /
  84.9M non-embedding parameters, head_dim 64);
* data C4 'en' (paper §3; ``allenai/c4``, through :mod:`coft_utils.foundation.hubdata`'s registry);
* budgets 4B, 8B, 16B, 32B, 64B, 128B tokens, each its own run with cosine to zero (paper §3);
* muP (paper §3 / App. D; the OLMo codebase has it as ``olmo/scaling/mup_olmo`` on the ``mup``
  package, ``scripts/mup_ladder.py``): here :func:`coft_utils.foundation.models.mup_init` /
  ``mup_param_groups`` (Yang et al. 2022, Tables 3/8), base width 384 = OLMo-15M's d_model
  (chosen: the smallest model is the base; an LR tuned there transfers to 30M and 90M), untied
  output layer (as in OLMo's ``mup_ladder.py``);
* optimizer AdamW, betas (0.9, 0.95), eps 1e-8, gradient clip 1.0, bf16 autocast (the OLMo
  codebase's ``mup_ladder.py`` settings); weight decay 0.1 (OLMo-1's, Groeneveld et al. 2024;
  ``mup_ladder.py`` uses 0.05); peak LR 1e-3 at the base width (chosen: inside ``mup_ladder.py``'s
  sweep 3e-4..3e-2; not tuned here); warmup 1,000 steps (chosen);
* sequence length 1,024 and global batch 256 sequences = 262,144 tokens per step (chosen;
  ``mup_ladder.py`` uses 2,048 x 1,024, which would give the 4B budget only 1,907 steps), reached
  by gradient accumulation in micro-batches of 32 whatever the number of processes (1, 2, 4 or 8);
* tokenizer: a 50,304-entry byte-level BPE trained on 200M characters of C4 (chosen; the OLMo
  codebase's small-model configs use ``allenai/gpt-neox-olmo-dolma-v1_5``, 50,280 ids padded to
  50,304, which is not used here so that no tokenizer download is needed).

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
import os
from dataclasses import dataclass
from pathlib import Path

from ..foundation import models, parallel, profiles, results
from ..foundation.profiles import param
from .pretrain_data import _val_blocks, get_tokenizer, token_blocks
from .pretrain_plan import budget_labels, budget_steps, decay_steps, n_params, plan, planned_steps
from .pretrain_train import Unit, _accelerator, _done, _model_config, _ready, run_unit

# budget_labels: profiles.series_info reads it here (the suite's checkpoint labels of a preset)
__all__ = ["Config", "PRESETS", "SCHEDULES", "CODE_VERSION", "get_suite", "cached_suite", "run_suite",
           "all_suites", "all_suites_and_runs", "REPLICATED", "train_suites", "load_records", "load_records_dir",
           "suite_key", "suite_dir", "resolve", "budget_labels"]

CHAPTER = "00_pretraining_suite"
SCHEDULES = ("cosine", "wsd", "constant")  # chapter 00's three (all_suites, the LR scan)
# every schedule a suite can be asked for: chapter 00's three and ``wsd_short``, the wsd trunk
# with a short anneal (decay_frac_short) instead of decay_frac, whose branches start from the same
# trunk states (chapter 06: short vs long anneal at equal tokens)
VARIANTS = SCHEDULES + ("wsd_short",)
_LR_OF = {"wsd_short": "wsd"}  # wsd_short shares the wsd trunk, so its peak LR is lr_wsd
CODE_VERSION = 1  # bump when a change alters trained weights (invalidates every cached suite)


@dataclass(frozen=True)
class Config(profiles.ChapterConfig):
    model: str = param("olmo-pico", "OLMo size preset (models.OLMO_PRESETS)", choices=tuple(models.OLMO_PRESETS))
    vocab_size: int = param(1024, "BPE vocabulary trained on the pre-training corpus", min=263, max=65535)
    seq_len: int = param(128, "tokens per packed training block", min=8, max=32768)
    batch_size: int = param(32, "global batch (blocks per optimizer step), whatever the number of processes",
                            min=1, max=16384)
    micro_batch_size: int = param(0, "blocks per process per forward/backward (0: its whole share of batch_size); "
                                  "batch_size is reached by gradient accumulation", min=0, max=16384)
    mup_base_width: int = param(0, "muP base width: the d_model the LRs were tuned at (0: standard "
                                "parametrization; models.mup_init)", min=0, max=65536)
    min_budget: float = param(250_000.0, "smallest token budget", min=1.0, max=1e13)
    n_budgets: int = param(6, "number of budgets (each double the last)", min=1, max=30)
    cosine_budgets: int = param(0, "cosine: its runs stop at the smallest this many budgets (0: all n_budgets). "
                                "Every cosine budget is its own run, so a deep cosine series costs the sum of its "
                                "budgets; the shared-trunk schedules (constant, wsd) go on to n_budgets",
                                min=0, max=30)
    short_budgets: int = param(0, "wsd_short (chapter 06): short-anneal branches at the smallest this many budgets "
                               "only (0: all n_budgets); a deep branch starts from the wsd branch point and costs "
                               "a fifth of its budget", min=0, max=30)
    schedule: str = param("cosine", "learning-rate schedule", choices=VARIANTS)
    lr: float = param(3e-3, "peak learning rate (AdamW) of every schedule without its own lr_<schedule>",
                      min=0.0, min_exclusive=True)
    lr_cosine: float = param(0.0, "peak learning rate of the cosine runs (0: use lr)", min=0.0)
    lr_wsd: float = param(0.0, "peak learning rate of the wsd trunk and its decay branches (0: use lr)", min=0.0)
    lr_constant: float = param(0.0, "peak learning rate of the constant run (0: use lr)", min=0.0)
    warmup_steps: int = param(20, "linear warmup steps (same for every budget; below the smallest budget's "
                              "steps)", min=0, max=10_000_000)
    decay_frac: float = param(0.2, "wsd: decay branch length as a fraction of its budget", min=0.0,
                              max=1.0, min_exclusive=True)
    decay_frac_short: float = param(0.05, "wsd_short: the short anneal's decay length as a fraction of its budget "
                                    "(< decay_frac; at least one step; its branches start from the wsd trunk's "
                                    "states)", min=0.0,
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
    c4_train_files: int = param(1024, "c4: train shards of allenai/c4 'en' (en/c4-train.NNNNN-of-01024.json.gz) "
                                "that may be read, in order; reading stops once the largest budget is "
                                "tokenized", min=1, max=1024)
    prepare_timeout: float = param(7200.0, "seconds a non-zero rank waits for rank 0's token cache",
                                   min=1.0, max=1e6)
    threads: int = param(0, "torch CPU threads per process (0: torch default)", min=0, max=256)
    workers: int = param(1, "processes that train independent runs at once (results do not depend on it)",
                         min=1, max=64)
    lr_scan_lrs: tuple = param((3e-3, 6e-3, 1.2e-2, 2.4e-2), "peak learning rates of the LR scan "
                               "(lr_scan; empty: no scan)", min=0.0, min_exclusive=True, allow_empty=True)
    lr_scan_budgets: int = param(3, "the LR scan trains the smallest this many budgets (at most n_budgets)",
                                 min=1, max=30)
    pretrain_seeds: int = param(1, "pre-training runs of the `replicated` schedule (seeds seed .. seed + n - 1): "
                                "the spread between runs per checkpoint, the replicates of chapter 00's verdict for "
                                "that schedule, and the runs later chapters measure (their pretrain_runs)",
                                min=1, max=16)
    replicate_budgets: int = param(0, "the extra pre-training runs (pretrain_seeds > 1) stop at the smallest this "
                                   "many budgets (0: all n_budgets)", min=0, max=30)
    replicated: str = param("constant", "the schedule trained pretrain_seeds times (the series the later "
                            "chapters measure across pre-training runs: their pretrain_runs)", choices=SCHEDULES)

    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def peak_lr(self, schedule: str | None = None) -> float:
        """Peak learning rate of ``schedule`` (default: this config's): ``lr_<schedule>``, else ``lr``."""
        s = schedule or self.schedule
        v = getattr(self, f"lr_{_LR_OF.get(s, s)}")
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
        if self.schedule == "wsd_short":  # (a decay of under one step is one step: decay_steps)
            if self.decay_frac_short >= self.decay_frac:
                raise profiles.ProfileError(
                    f"parameter 'decay_frac_short' = {self.decay_frac_short} is not shorter than decay_frac = "
                    f"{self.decay_frac}; allowed: 0 < decay_frac_short < decay_frac (the short anneal starts "
                    "from the trunk state the long one starts from)")
        for name in ("cosine_budgets", "replicate_budgets", "short_budgets"):
            if getattr(self, name) > self.n_budgets:
                raise profiles.ProfileError(
                    f"parameter {name!r} = {getattr(self, name)} is more than n_budgets = {self.n_budgets}; "
                    f"allowed: 0 (all) .. {self.n_budgets}")
        if len(set(self.lr_scan_lrs)) != len(self.lr_scan_lrs):
            raise profiles.ProfileError(f"parameter 'lr_scan_lrs' = {self.lr_scan_lrs!r} repeats a value; "
                                        f"allowed: distinct learning rates > 0")
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise profiles.ProfileError(
                f"parameter 'micro_batch_size' = {self.micro_batch_size} must divide batch_size = "
                f"{self.batch_size}; allowed: a divisor of batch_size (or 0)")
        if self.corpus == "c4" and self.profile != "paper":
            raise profiles.ProfileError(f"parameter 'corpus' = 'c4' needs the hub (paper profile); "
                                        f"allowed at profile {self.profile!r}: 'gutenberg'")
        if self.corpus == "gutenberg" and self.val_blocks:
            from ..foundation import evaluate
            evaluate.check_blocks("gutenberg", self.val_blocks, self.seq_len, ("val_blocks", "seq_len"))


# the peak LRs each preset's scan tried (lr_scan_lrs) when it chose that preset's lr_<schedule>,
# for the profiles whose book does not rerun the scan
SCANNED_LRS = {"cpu": (3e-3, 6e-3, 1.2e-2, 2.4e-2)}

PRESETS: dict[str, Config] = {
    # olmo-pico (2 x 32) with a 512 BPE; 4k..128k tokens: whole suite in seconds.
    "smoke": Config(profile="smoke", model="olmo-pico", vocab_size=512, seq_len=64, batch_size=8,
                    min_budget=2048.0, n_budgets=6, lr=3e-3, warmup_steps=2, tokenizer_chars=400_000,
                    val_blocks=16, save_every=20, threads=1, workers=1, lr_scan_lrs=(3e-3, 1.2e-2),
                    lr_scan_budgets=2, pretrain_seeds=2),
    # olmo-pico with a 1024 BPE: 65,536 parameters (embeddings included; 32,768 without).
    # The shared-trunk schedules (constant, wsd, wsd_short) go to 32M tokens -> 512 tokens/param
    # (1,024 without embeddings): the depth where the fine-tuned model stops gaining (issue 25's
    # measurement); cosine, a run per budget, stops at 8M (123 tokens/param): to 32M it would
    # cost 4x more. Peak LRs: chosen by lr_scan at this profile (SCANNED_LRS on the 0.25M, 0.5M,
    # 1M budgets; chapter 00); the scan is not rerun in every book (-y '{lr_scan_lrs: [...]}').
    # The constant trunk's two further pre-training runs stop at 4M (replicate_budgets: the
    # between-run spread on 0.25M..4M; cpu-deep replicates the wsd series to 64M).
    "cpu": Config(profile="cpu", model="olmo-pico", vocab_size=1024, seq_len=128, batch_size=32,
                  min_budget=262_144.0, n_budgets=8, cosine_budgets=6, lr=6e-3, lr_cosine=2.4e-2, lr_wsd=6e-3,
                  lr_constant=6e-3, warmup_steps=20,
                  tokenizer_chars=3_000_000, val_blocks=64, save_every=200, threads=1, workers=2,
                  lr_scan_lrs=(), lr_scan_budgets=3, pretrain_seeds=3, replicate_budgets=5, short_budgets=6),
    # olmo-micro (4 x 128) with a 2048 BPE: ~1.31M params; 42M..1.34B tokens (~1,020 tokens/param),
    # bf16 on one H100/A100 (Gutenberg repeated for several epochs at the largest budgets).
    "gpu": Config(profile="gpu", model="olmo-micro", vocab_size=2048, seq_len=256, batch_size=512,
                  min_budget=41_943_040.0, n_budgets=6, lr=2e-3, warmup_steps=100,
                  tokenizer_chars=20_000_000, val_blocks=256, save_every=500, mixed_precision="bf16",
                  lr_scan_lrs=()),
    # the paper's suite (Sec. 3, App. D.1): OLMo-30M (15M/90M: suite_model) on C4 (allenai/c4 'en',
    # from the hub) for 4B..128B tokens, cosine to zero, muP; the sources of each value and what was
    # chosen where none was found: the module docstring ("The paper profile").
    "paper": Config(profile="paper", model="olmo-30m", vocab_size=50_304, seq_len=1024, batch_size=256,
                    micro_batch_size=32, mup_base_width=384, min_budget=4e9, n_budgets=6, lr=1e-3,
                    warmup_steps=1000, weight_decay=0.1, beta2=0.95, grad_clip=1.0, corpus="c4",
                    tokenizer_chars=200_000_000, val_blocks=512, save_every=1000, mixed_precision="bf16",
                    lr_scan_lrs=()),
}
# cpu-deep (the reference run, issue 25; records in results/cpu-deep/): the cpu suite with the
# shared-trunk schedules to 64M tokens (1,024 tokens/param with embeddings, 2,048 without) and the
# wsd series that chapters 02-04 measure trained 3 times (seeds 0-2, every budget, annealed
# branches included): ~1 h of its <= 2 h on 2 cores.
PRESETS["cpu-deep"] = dataclasses.replace(PRESETS["cpu"], profile="cpu-deep", n_budgets=9, replicated="wsd",
                                          pretrain_seeds=3, replicate_budgets=0)


# --------------------------------------------------------------------------- the suite
# fields that do not change what is trained (or, for the lr_* fields, enter through the
# schedule's effective peak LR): not part of the cache key, so e.g. `workers` reuses a suite
_KEY_SKIP = ("threads", "save_every", "schedule", "workers", "lr_cosine", "lr_wsd", "lr_constant",
             "lr_scan_lrs", "lr_scan_budgets", "prepare_timeout", "pretrain_seeds", "replicate_budgets", "replicated",
             # which wsd_short branches exist, not what any of them trains (a cached series.json
             # with other labels is assembled again: train_suites)
             "short_budgets",
             # the global batch fixes the run; how a process splits it (like the number of processes)
             # changes only float rounding
             "micro_batch_size")
# fields added after suites were cached: left out of the key at their default, so a config that
# does not use them (every smoke/cpu/gpu preset) keeps the key, and the suite, it had before
_KEY_IF_SET = {"mup_base_width": 0, "c4_train_files": 1024, "decay_frac_short": 0.05, "cosine_budgets": 0}


def suite_key(cfg: Config, tokenizer) -> str:
    """Hash of everything that changes the trained weights of ``cfg.schedule``.

    Schedules of a config with the same effective peak LR share one folder (``wsd`` and
    ``constant`` then share the trunk); ``lr`` stands for ``cfg.peak_lr()``, so a config without
    ``lr_<schedule>`` overrides has the key it had before those fields existed.
    """
    from ..foundation import evaluate
    c = {k: v for k, v in cfg.to_dict().items()
         if k not in _KEY_SKIP and not (k in _KEY_IF_SET and v == _KEY_IF_SET[k])}
    c["lr"] = cfg.peak_lr()
    return results.config_hash({"config": c, "tokenizer": evaluate.tokenizer_fingerprint(tokenizer),
                                "code": CODE_VERSION})


def suite_dir(cfg: Config, tokenizer) -> Path:
    return results.runs_dir() / "suite" / suite_key(cfg, tokenizer)


def resolve(profile: str = "cpu", schedule: str = "cosine", seed: int = 0, overrides: dict | None = None) -> Config:
    return profiles.resolve(CHAPTER, profile, {**(overrides or {}), "schedule": schedule}, seed=seed)


def _series_name(cfg: Config) -> str:
    """``coft-<model>-<schedule>-<profile>``, with ``-seed<N>`` for a pre-training run at seed N > 0."""
    return f"coft-{cfg.model}-{cfg.schedule}-{cfg.profile}" + (f"-seed{cfg.seed}" if cfg.seed else "")


def _train_cfg(cfg: Config) -> Config:
    """``cfg`` as one training run sees it: ``lr`` is the schedule's peak LR (one value per folder)."""
    return dataclasses.replace(cfg, lr=cfg.peak_lr(), lr_cosine=0.0, lr_wsd=0.0, lr_constant=0.0)


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
        cached = models.get_series(str(sf)) if budgets is None and sf.is_file() else None  # relative paths: its own
        if cached is not None and [c.label for c in cached] == budget_labels(cfg):
            out[(cfg.schedule, cfg.peak_lr())] = cached
        else:  # not trained, or cached with other budgets (cosine_budgets, short_budgets): train what is missing
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
            later = [] if distributed or stop_after is not None or nw < 2 else _made_this_round(ready, pending)
            if distributed or stop_after is not None:
                for u in ready:
                    if run_unit(dataclasses.replace(u, progress=progress), acc0, stop_after).get("stopped"):
                        return None
            else:  # nw == 1: in this process, one job after the other, each with its own bar
                parallel.map_units(run_unit, [dataclasses.replace(u, progress=progress and nw == 1) for u in ready]
                                   + later,
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
                series.save(root / cfg.schedule / "series.json", relative=True)  # the folder may move
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
              "tokens_per_step": cfg.tokens_per_step(), "code": CODE_VERSION,
              **({"mup_base_width": cfg.mup_base_width} if cfg.mup_base_width else {})})


def _made_this_round(ready: list, pending: list) -> list:
    """The pending jobs whose parent state a job of this round makes (a wsd branch point of a
    trunk that starts now), marked to wait for it: they join the round *after* every job that can
    start at once, in the order their states appear, so a free worker trains a branch while the
    trunk goes on. The pool dispatches in input order, so every maker has started (on another
    worker) before a job that waits for it; each waiting job names its maker
    (``pretrain_train.wait_for_parent``)."""
    makers = {}
    for u in ready:
        for k in (u.job.keep if u.job.lineage else ()):
            makers[(u.root, f"{u.job.lineage}@{k}")] = u.job.name
    later = [dataclasses.replace(u, after=makers[(u.root, u.job.parent)]) for u in pending
             if u not in ready and (u.root, u.job.parent) in makers]
    return sorted(later, key=lambda u: int(u.job.parent.rsplit("@", 1)[1]))


def run_suite(cfg: Config, progress: bool = True, accelerator=None, stop_after: int | None = None):
    """Train every job of ``cfg``'s plan not done yet; return the series (None if stopped early)."""
    res = train_suites([cfg], progress=progress, accelerator=accelerator, stop_after=stop_after)
    return None if res is None else res[(cfg.schedule, cfg.peak_lr())]


def _total_wall(schedule: str, job_info: dict) -> float:
    """Measured training time a schedule costs on its own (wsd: trunk up to its last branch point
    = the largest trunk time a branch started from, plus every branch's own time)."""
    if schedule not in ("wsd", "wsd_short"):
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
    return models.get_series(str(f)) if f.is_file() else None


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


# --------------------------------------------------------------------------- the book's page
def all_suites(profile: str = "cpu", seed: int = 0, overrides: dict | None = None,
               schedules=SCHEDULES, progress: bool = True) -> dict[str, models.CheckpointSeries]:
    """{schedule: series} for every schedule (``overrides`` may not set the schedule); the jobs
    of all schedules not cached yet are trained together on ``cfg.workers`` processes."""
    return all_suites_and_runs(profile, seed, overrides, schedules, progress, n_seeds=1)[0]


REPLICATED = "constant"  # default of Config.replicated: the schedule with several pre-training runs


def all_suites_and_runs(profile: str = "cpu", seed: int = 0, overrides: dict | None = None,
                        schedules=SCHEDULES, progress: bool = True, n_seeds: int | None = None):
    """(``{schedule: series}``, ``{seed: series}``): every schedule at ``seed``, and the
    ``replicated`` schedule's pre-training runs at seeds ``seed .. seed + n_seeds - 1``
    (``n_seeds``: the config's ``pretrain_seeds``), all trained in one pool of workers. Each run
    is an ordinary suite (its own cache folder: the seed is in the key), so a chapter can load any
    of them with ``get_suite(profile, cfg.replicated, seed=s)``."""
    over = {k: v for k, v in (overrides or {}).items() if k != "schedule"}
    cfgs = [resolve(profile, s, seed, over) for s in schedules]
    n = cfgs[0].pretrain_seeds if n_seeds is None else n_seeds
    rep, rb = cfgs[0].replicated, cfgs[0].replicate_budgets
    extra = [resolve(profile, rep, seed + i,
                     {**over, **({"n_budgets": rb, "cosine_budgets": 0, "short_budgets": 0} if rb else {})})
             for i in range(1, n)] if rep in schedules else []
    res = train_suites(cfgs + extra, progress=progress)
    if not extra:
        return {c.schedule: res[(c.schedule, c.peak_lr())] for c in cfgs}, {}
    # train_suites keys its result by (schedule, peak lr), which the seeds share: each series is
    # read back from its own folder (series.json, written above; nothing is trained again)
    suites = {c.schedule: run_suite(c, progress=False) for c in cfgs}
    runs = {c.seed: run_suite(c, progress=False) for c in [cfgs[list(schedules).index(rep)]] + extra}
    return suites, runs
