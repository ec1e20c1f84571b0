"""Chapter 01, the experiment: instruction tuning of every checkpoint of a pre-training series (paper Figs. 1-2).

::

    from coft_utils.chapters import instruct, instruct_report
    from coft_utils.foundation import profiles
    cfg = profiles.resolve("01_instruction_tuning", "smoke")
    series = instruct.get_series(cfg)            # the pre-training suite (smoke/cpu/gpu) or OLMo-1B (paper)
    out = instruct.run(cfg)                      # base eval, SFT per (lr, seed), best-LR eval per seed; resumable
    out["summary"]                               # one row per (checkpoint, stage): seed means, CIs, min/max
    out["sft"]                                   # one row per (checkpoint, lr, seed): train loss, val/test ppl
    out["tuned"]                                 # one row per (checkpoint, seed) at the chosen LR
    out["lr_choice"]                             # per checkpoint: chosen LR, seed-mean val ppl, seeds' votes
    cv = instruct_report.claim_verdict(out, cfg)  # the claim row: a coft_utils.foundation.verdicts.Verdict on acc_norm
    cv["verdict"].label, cv["verdict"].stat_text(), cv["measured"], cv["acc"], cv["id"]
    pc = instruct_report.panel_claim(out, cfg)   # the general-ability panel's row (minimal-pair accuracy)

    # paper scale, several GPUs (FSDP): fills the same results store; then run the notebook
    #   accelerate launch --config_file coft_utils/configs/accelerate_fsdp_instruct.yaml \\
    #       -m coft_utils.chapters.instruct_launch --profile paper
    #   python -m coft_utils run 01_instruction_tuning --profile paper
    # OLMo-2-7B (full fine-tuning on 8 x 80 GB): instruct_launch.fsdp_config("olmo-2-7b-stage1")
    #   accelerate launch --config_file coft_utils/configs/accelerate_fsdp_olmo2_7b.yaml \\
    #       -m coft_utils.chapters.instruct_launch --profile paper -p series olmo-2-7b-stage1 -p batch_size 4

The chapter's modules: this one (``Config``, ``PRESETS``, the units and the results store),
:mod:`.instruct_data` (dialogue sources, held-out split, chat template, tokenizing),
:mod:`.instruct_sft` (SFT with TRL's ``SFTTrainer``), :mod:`.instruct_eval` (response perplexity,
lm-eval benchmarks, AlpacaEval, chance levels, the summary over seeds), :mod:`.instruct_report`
(verdicts, figures, tables) and :mod:`.instruct_launch` (the command line).

What one run does, for every selected checkpoint of the series:

1. **base**: zero-shot ``acc``/``acc_norm`` on the generalist benchmarks through
   ``lm_eval.simple_evaluate`` (:mod:`coft_utils.foundation.lmeval_tasks`: the eight with local
   files and local task configs at smoke/cpu/gpu; at ``paper`` the paper's five, SciQ included,
   through lm-eval's own task definitions on the hub) and the response perplexity on the held-out
   instruction data (the ID metric, below);
2. **sft**: for every learning rate of ``lrs`` and every fine-tuning seed (``seeds`` of them:
   ``seed * seeds``, ``seed * seeds + 1``, ...: 0, 1, 2 at the default seed 0, and disjoint
   for another global seed, as in chapters 03-04), supervised fine-tuning with TRL's ``SFTTrainer``
   on chat-formatted dialogues with the loss on the assistant responses only
   (``assistant_only_loss=True``; the chat template marks responses with ``{% generation %}``,
   :data:`coft_utils.foundation.models.CHAT_TEMPLATE`, with the tokenizer's own eos for hub tokenizers);
   the tuned weights are saved, and the response perplexity on the *validation* half of the
   held-out data, averaged over the seeds, selects the learning rate of each checkpoint (the
   paper tunes the LR per checkpoint for the best ID score); how many seeds on their own would
   have chosen each LR is reported beside it (``out["lr_choice"]``);
3. **tuned**: every seed's model at the chosen LR is evaluated like the base model; the held-out
   *test* half gives the reported ID perplexity, so the LR is never chosen on the numbers we
   report;
4. **panel** (``cfg.panel``; smoke/cpu/gpu, none at ``paper``): the general-ability panel of
   :mod:`.instruct_panel` (minimal pairs and LAMBADA through lm-eval, pre-training-domain and
   WikiText-2 perplexity) on the base model and on every seed's tuned model, on the model already
   loaded for its base/tuned unit; its own units, so a change of the panel re-evaluates only the
   panel (``out["base"]``/``out["tuned"]`` carry its columns, ``out["panel_reference"]`` the chance
   and uniform-guess levels).

A fine-tuning seed sets the subsample and order of the training mix and the trainer's seed; the
seeds are the replicates of the verdict (:func:`coft_utils.chapters.instruct_report.claim_verdict`).

Results: ``results.Store("01_instruction_tuning", profile)``, one record per unit
``{"stage": "base"|"sft"|"tuned"|"panel", ("of": "base"|"tuned"), "series", "checkpoint", ("lr", "seed"), "key"}`` where
``key`` hashes the settings that change the unit's numbers, so reruns are free and a change of
settings never reuses a stale record.
"""
from __future__ import annotations

import gc
import os
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..foundation import data, divergence, models, profiles, results, weights
from ..foundation.lmeval_tasks import BENCHMARKS, HUB_ONLY, LOCAL_BENCHMARKS, PAPER_BENCHMARKS
from ..foundation.profiles import param
from .instruct_data import SFT_SOURCES, data_source, prepare_tokenizer, sft_sources, tokenize_dialogues, train_mix
from .instruct_panel import PANEL, panel_columns, panel_eval, series_reference
from .instruct_eval import (_metrics, alpacaeval, alpacaeval_preflight, alpacaeval_status, bench_eval, chance_levels,
                            id_eval, summarize)
from .instruct_sft import (_barrier, _context, _device, _dtype, _is_main, _save_tuned, batch_plan, prepare_sft_dataset,
                           sft)

__all__ = ["Config", "PRESETS", "CHAPTER", "HUB_SERIES", "get_series", "select_checkpoints", "run", "collect",
           "seed_list", "choose_lr"]

CHAPTER = "01_instruction_tuning"
HUB_SERIES = ("olmo-1b", "olmo-2-7b-stage1", "amber")


@dataclass(frozen=True)
class Config(profiles.SeriesConfig):  # series, schedule, checkpoints (empty: n_checkpoints evenly spaced)
    n_checkpoints: int = param(0, "evenly spaced checkpoints incl. first and last (0: all)", min=0,
                               max=1000)
    sft_data: tuple[str, ...] = param(("hh_rlhf", "alpaca_seed_tasks", "gsm8k"), "instruction data sources",
                                      choices=SFT_SOURCES)
    train_per_source: int = param(2000, "at most this many training dialogues per source", min=1,
                                   max=10_000_000)
    heldout_per_source: int = param(100, "held-out dialogues per source (half LR selection, half test)",
                                     min=2, max=100_000)
    lrs: tuple[float, ...] = param((3e-4, 1e-3, 3e-3), "SFT learning-rate grid (best per checkpoint)", min=0.0,
                                   min_exclusive=True)
    seeds: int = param(3, "fine-tuning seeds per (checkpoint, lr): seed*seeds, seed*seeds+1, ... "
                       "(the verdict's replicates)", min=1, max=20)
    sft_steps: int = param(150, "SFT optimizer steps (0: one epoch)", min=0, max=10_000_000)
    batch_size: int = param(16, "per-device SFT micro-batch (sequences per process per forward pass)", min=1,
                            max=16384)
    global_batch: int = param(16, "SFT sequences per optimizer step, whatever the launch: gradient accumulation "
                              "= global_batch / (batch_size x processes), computed at run time", min=1,
                              max=1_048_576)
    grad_checkpointing: bool = param(False, "activation (gradient) checkpointing in SFT (under FSDP: FSDP's own "
                                     "when its config turns it on)")
    max_seq_len: int = param(0, "SFT / ID-eval sequence length (0: the model's context, at most 2048)", min=0,
                             max=2048)
    warmup_ratio: float = param(0.05, "linear warmup fraction of the SFT steps", min=0.0, max=0.5)
    lr_schedule: str = param("cosine", "SFT learning-rate schedule", choices=("cosine", "linear", "constant_with_warmup"))
    weight_decay: float = param(0.0, "SFT AdamW weight decay", min=0.0)
    benchmarks: tuple[str, ...] = param(LOCAL_BENCHMARKS, "generalist benchmarks (lm-eval; the paper's: "
                                        + ", ".join(PAPER_BENCHMARKS) + "; sciq is hub only)", choices=BENCHMARKS)
    bench_limit: int = param(100, "items per benchmark (first N; 0: all)", min=0, max=100_000)
    bench_local: bool = param(True, "lm-eval task configs on the local files (False: lm-eval's hub tasks)")
    panel: tuple[str, ...] = param(PANEL, "the general-ability panel (instruct_panel; local data: [] = none, as "
                                   "at paper)", choices=PANEL, allow_empty=True)
    pairs_n: int = param(500, "minimal pairs of the panel (held-out Gutenberg sentences)", min=1, max=100_000)
    lambada_limit: int = param(500, "LAMBADA passages of the panel (a fixed seeded subset; 0: all 5,153)", min=0,
                               max=5153)
    panel_blocks: int = param(128, "held-out blocks per source for the panel's perplexities", min=1, max=100_000)
    panel_seq_len: int = param(128, "tokens per held-out block of the panel", min=2, max=32768)
    eval_max_length: int = param(256, "lm-eval max length in tokens (0: the model's)", min=0,
                                 max=32768)
    eval_batch_size: int = param(64, "lm-eval batch size", min=1, max=16384)
    precision: str = param("fp32", "training / eval precision", choices=("fp32", "bf16"))
    keep_tuned: str = param("best", "tuned weights kept on disk: best LR only, or all", choices=("best", "all"))
    alpacaeval_judge: str = param(None, "alpaca_eval annotator config, e.g. weighted_alpaca_eval_gpt4_turbo "
                                  "(None: AlpacaEval is skipped; a judge needs pip install coft-utils[paper] and "
                                  "its API key, checked before any work)", nullable=True)
    alpacaeval_limit: int = param(0, "AlpacaEval instructions (first N of 805; 0: all)", min=0, max=805)
    alpacaeval_max_new_tokens: int = param(512, "AlpacaEval response length cap in tokens", min=1, max=8192)
    threads: int = param(0, "torch CPU threads (0: torch default)", min=0, max=256)

    def check(self):
        # series / checkpoints / hub series at offline profiles: profiles.validate (shared by every chapter)
        n = len(profiles.series_info(self.series, self.profile, self.schedule).labels)
        if not self.checkpoints and self.n_checkpoints > n:
            raise profiles.ProfileError(f"parameter 'n_checkpoints' = {self.n_checkpoints} is more than series "
                                        f"{self.series!r} has ({n} checkpoints); allowed: 0 (all) .. {n}")
        if "tulu" in self.sft_data and data_source(self.profile) == "local":
            raise profiles.ProfileError(f"parameter 'sft_data' contains 'tulu', which is hub only; allowed at "
                                        f"profile {self.profile!r} (local data): hh_rlhf, alpaca_seed_tasks, gsm8k")
        hub_only = [b for b in self.benchmarks if b in HUB_ONLY]
        if self.bench_local and hub_only:
            raise profiles.ProfileError(f"parameter 'benchmarks' contains {', '.join(hub_only)}, which has no local "
                                        f"data file (hub only); with bench_local = True allowed: "
                                        f"{', '.join(LOCAL_BENCHMARKS)}; or set bench_local = False (paper)")
        if self.global_batch % self.batch_size:
            raise profiles.ProfileError(f"parameter 'global_batch' = {self.global_batch} is not a multiple of "
                                        f"batch_size = {self.batch_size}; allowed: multiples of batch_size x the "
                                        f"number of processes")
        if not self.bench_local and profiles.get_profile(self.profile).offline:
            raise profiles.ProfileError(f"parameter 'bench_local' = False needs the hub; allowed at profile "
                                        f"{self.profile!r}: True")
        if not self.sft_data:
            raise profiles.ProfileError("parameter 'sft_data' may not be empty")
        from .instruct_data import HUB_SOURCES
        if data_source(self.profile) == "hub" and any(s not in HUB_SOURCES for s in self.sft_data):
            bad = [s for s in self.sft_data if s not in HUB_SOURCES]
            raise profiles.ProfileError(f"parameter 'sft_data' contains {', '.join(bad)}, which has no hub id; allowed "
                                        f"at profile {self.profile!r} (data from the hub): {', '.join(HUB_SOURCES)}")
        if not self.benchmarks:
            raise profiles.ProfileError("parameter 'benchmarks' may not be empty")
        if self.panel and data_source(self.profile) == "hub":
            raise profiles.ProfileError(f"parameter 'panel' = {list(self.panel)} reads the local data (Gutenberg, "
                                        f"LAMBADA, WikiText-2); allowed at profile {self.profile!r} (data from the "
                                        f"hub): [] (the paper's benchmarks are the measure there)")
        if len(set(self.panel)) != len(self.panel):
            raise profiles.ProfileError(f"parameter 'panel' has duplicates: {self.panel}")
        if len(set(self.lrs)) != len(self.lrs):
            raise profiles.ProfileError(f"parameter 'lrs' has duplicates: {self.lrs}")


PRESETS: dict[str, Config] = {
    # 3 of the smoke suite's checkpoints, 2 LRs x 2 seeds x 8 SFT steps, 10 items per benchmark: seconds.
    "smoke": Config(profile="smoke", n_checkpoints=3, train_per_source=200, heldout_per_source=16,
                    lrs=(3e-3, 1e-2), seeds=2, sft_steps=8, batch_size=8, global_batch=8, bench_limit=10,
                    eval_max_length=256, eval_batch_size=64, threads=1, pairs_n=20, lambada_limit=20,
                    panel_blocks=8, panel_seq_len=64),
    # every checkpoint of the cpu suite (olmo-pico), 3 LRs x 3 seeds x 80 steps of 8 dialogues, 100
    # items per benchmark: with one seed about 6 min on 2 shared cores (suite training excluded);
    # SFT and the tuned evaluation scale with the seeds (not re-timed at 3). TRL's fused LM-head
    # loss is about half of an SFT step on CPU. One torch thread: on a shared machine two
    # threads on two busy cores ran ~25x slower here.
    "cpu": Config(profile="cpu", n_checkpoints=0, train_per_source=2000, heldout_per_source=60,
                  lrs=(3e-3, 1e-2, 3e-2), seeds=3, sft_steps=80, batch_size=8, global_batch=8, bench_limit=100,
                  eval_max_length=256, eval_batch_size=64, threads=1, pairs_n=500, lambada_limit=500,
                  panel_blocks=128, panel_seq_len=128),
    # the gpu suite (olmo-micro), 3 LRs x 3 seeds x 1000 steps of 64, every benchmark item.
    "gpu": Config(profile="gpu", n_checkpoints=0, train_per_source=100_000, heldout_per_source=200,
                  lrs=(1e-4, 3e-4, 1e-3), seeds=3, sft_steps=1000, batch_size=64, global_batch=64, bench_limit=0,
                  eval_max_length=1024, eval_batch_size=64, precision="bf16", pairs_n=2000,
                  lambada_limit=0, panel_blocks=512, panel_seq_len=256),
    # the paper: OLMo-1B-hf revisions 0.04T..3.1T, Anthropic-HH from the hub (Anthropic/hh-rlhf, all
    # 160,800 train pairs; a fixed 1,000 held out), one epoch (sft_steps=0; ~1,250 steps of 128 --
    # the epochs seen are recorded per run), a global batch of 128 sequences whatever the launch
    # (8 per device: accumulation 2 on 8 GPUs, 16 on one), bf16 autocast, activation checkpointing,
    # LR grid tuned per checkpoint, the paper's five benchmarks (SciQ included) through lm-eval's
    # own tasks, all items; AlpacaEval when a judge is configured. The LR grid, batch and schedule
    # are this companion's choices in the range used for 1B-scale SFT; the paper's exact grid is not
    # stated here. Three fine-tuning seeds: with one, nothing statistical can be claimed.
    # OLMo-2-7B / Amber: -p series olmo-2-7b-stage1 -p batch_size 4 under accelerate_fsdp_olmo2_7b.yaml.
    "paper": Config(profile="paper", series="olmo-1b", n_checkpoints=0, sft_data=("hh_rlhf",),
                    train_per_source=10_000_000, heldout_per_source=1000, lrs=(4e-6, 1e-5, 2e-5, 4e-5), seeds=3,
                    sft_steps=0, batch_size=8, global_batch=128, grad_checkpointing=True, max_seq_len=2048,
                    warmup_ratio=0.03, lr_schedule="linear", benchmarks=PAPER_BENCHMARKS, bench_limit=0,
                    bench_local=False, eval_max_length=0, eval_batch_size=32, precision="bf16", panel=()),
}


# --------------------------------------------------------------------------- series
def get_series(cfg: Config) -> models.CheckpointSeries:
    """The series to tune: the pre-training suite of ``cfg.profile`` or a pinned hub series."""
    from ..foundation import series
    return select_checkpoints(series.for_config(cfg), cfg)


def select_checkpoints(series: models.CheckpointSeries, cfg: Config) -> models.CheckpointSeries:
    if cfg.checkpoints:
        return series  # chapter_series already kept only these
    n = len(series)
    if not cfg.n_checkpoints or cfg.n_checkpoints >= n:
        return series
    idx = sorted({round(i * (n - 1) / (cfg.n_checkpoints - 1)) for i in range(cfg.n_checkpoints)}) \
        if cfg.n_checkpoints > 1 else [n - 1]
    return series.select([series.checkpoints[i].label for i in idx])


# --------------------------------------------------------------------------- helpers
def _key(cfg: Config, fields: tuple[str, ...], extra: dict | None = None) -> str:
    d = {f: results._jsonable(getattr(cfg, f)) for f in fields}
    d.update(extra or {})
    return results.config_hash(d, 12)


_DATA_FIELDS = ("sft_data", "train_per_source", "heldout_per_source", "max_seq_len")
# batch_size (the micro-batch) and the launch are not in the key: the global batch fixes the optimization
_SFT_FIELDS = _DATA_FIELDS + ("sft_steps", "global_batch", "warmup_ratio", "lr_schedule",
                              "weight_decay", "precision")
_EVAL_FIELDS = ("benchmarks", "bench_limit", "bench_local", "eval_max_length")
# the panel's own units (stage "panel"): a change of the panel re-evaluates only the panel
_PANEL_FIELDS = ("panel", "pairs_n", "lambada_limit", "panel_blocks", "panel_seq_len", "eval_max_length")
_ALPACA_FIELDS = ("alpacaeval_judge", "alpacaeval_limit", "alpacaeval_max_new_tokens")


def _panel_key(cfg: Config) -> str:
    """The panel units' key: the panel's settings and the versions of its tasks and code."""
    from ..foundation import lmeval_tasks, minimal_pairs
    from . import instruct_panel
    return _key(cfg, _PANEL_FIELDS, {"pairs_v": minimal_pairs.VERSION, "tasks_v": lmeval_tasks.TASK_VERSION,
                                      "panel_v": instruct_panel.VERSION})


def _panel_units(cfg: Config, series_name: str, ck_label: str, weights, lr=None, seed=None) -> dict:
    """The panel unit of the base model (``lr`` None) or of one tuned model."""
    u = {"stage": "panel", "of": "base" if lr is None else "tuned", "series": series_name, "checkpoint": ck_label,
         "weights": weights}
    if lr is None:
        return {**u, "key": _panel_key(cfg)}
    return {**u, "lr": lr, "seed": seed, "key": f"{_key(cfg, _SFT_FIELDS)}-{_panel_key(cfg)}"}


def _tuned_key(cfg: Config) -> str:
    """The tuned unit's key; with a judge it also names the AlpacaEval settings (so a rerun with a
    judge evaluates the tuned models again, and one without keeps the records it had)."""
    k = f"{_key(cfg, _SFT_FIELDS)}-{_key(cfg, _EVAL_FIELDS)}"
    return k + (f"-{_key(cfg, _ALPACA_FIELDS)}" if cfg.alpacaeval_judge else "")


# --------------------------------------------------------------------------- the experiment
def _load(ckpt, cfg: Config, train: bool = False):
    """Model + tokenizer; weights in fp32 for training (bf16 is autocast), ``precision`` for eval."""
    import torch
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model = models.load_model(ckpt, device=_device(cfg), dtype=torch.float32 if train else _dtype(cfg))
    tok = prepare_tokenizer(models.load_tokenizer(ckpt))
    return model, tok


def _data_names(cfg: Config) -> list[str]:
    local = [s for s in cfg.sft_data if data.spec(s).local] if profiles.get_profile(cfg.profile).offline else []
    panel = {"minimal_pairs": "gutenberg_top100_authors", "gutenberg": "gutenberg_top100_authors",
             "lambada_openai": "lambada_openai", "wikitext": "wikitext2_tokenized_valid_test"}
    return local + (list(cfg.benchmarks) if cfg.bench_local else []) + list(dict.fromkeys(panel[p] for p in cfg.panel))


def seed_list(cfg: Config) -> list[int]:
    """The fine-tuning seeds: ``seed * seeds + i`` for i < ``seeds`` (0, 1, 2 at seed 0; another
    global seed gives new, disjoint replicates, the convention of chapters 03-04)."""
    return [cfg.seed * cfg.seeds + i for i in range(cfg.seeds)]


def choose_lr(val_ppl: dict, lrs, seeds) -> dict:
    """The learning rate of one checkpoint: the lowest *seed-mean* validation response perplexity
    (a non-finite value counts as inf; ties go to the smaller LR). ``val_ppl``: {(lr, seed): ppl}.

    Returns ``best_lr``, ``mean_val_ppl`` {lr: mean over the seeds present} and ``votes``
    {lr: how many seeds, each on its own, have their lowest validation perplexity there}."""
    fin = lambda x: float(x) if x is not None and math.isfinite(float(x)) else math.inf  # noqa: E731
    mean = {}
    for lr in lrs:
        vals = [fin(val_ppl[(lr, s)]) for s in seeds if (lr, s) in val_ppl]
        mean[lr] = sum(vals) / len(vals) if vals else math.inf
    best = min(lrs, key=lambda lr: (mean[lr], lr))
    votes = {lr: 0 for lr in lrs}
    for s in seeds:
        have = [lr for lr in lrs if (lr, s) in val_ppl]
        if have:
            votes[min(have, key=lambda lr: (fin(val_ppl[(lr, s)]), lr))] += 1
    return {"best_lr": best, "mean_val_ppl": mean, "votes": votes}


def run(cfg: Config, series: models.CheckpointSeries | None = None, progress: bool = True) -> dict:
    """Every unit of the chapter (resumable); returns frames ``base``, ``sft``, ``tuned``,
    ``summary``, ``lr_choice`` and more (see :func:`collect`)."""
    # before any work (no download, no model): the batch split of this launch and AlpacaEval's needs
    plan = batch_plan(cfg)
    alpacaeval_preflight(cfg)
    if progress and _is_main():  # the notebook shows it in its AlpacaEval section
        print(alpacaeval_status(cfg))
    series = series or get_series(cfg)
    store = results.Store(CHAPTER, cfg.profile)
    sources = sft_sources(cfg)
    source = data_source(cfg.profile)
    hub_data = {}  # at the hub source: which hub commit and files each instruction set was read from
    if source == "hub":
        from ..foundation import hubdata
        hub_data = {name: hubdata.provenance(name, "train") for name in cfg.sft_data}
    data_names = _data_names(cfg)
    sft_key = _key(cfg, _SFT_FIELDS)
    eval_key = _key(cfg, _EVAL_FIELDS)
    id_key = _key(cfg, _DATA_FIELDS)
    seeds = seed_list(cfg)
    tok_cache: dict = {}
    # dialogues one run can consume (with some spare for those TRL drops after truncation)
    n_train = None if not cfg.sft_steps else int(cfg.sft_steps * plan["global_batch"] * 1.25) + 8
    model_dir = results.runs_dir() / cfg.profile / CHAPTER / "models"
    t_start = time.perf_counter()
    # the trainer folders this run made: only these are removed at the end (other processes, e.g.
    # the array jobs of `python -m coft_utils submit`, may be using their own under _trainer/)
    scratch: list[Path] = []

    def tokenized(tok, model, seed: int | None = None):
        k = (tok.name_or_path, len(tok), _context(model, cfg))
        if k not in tok_cache:
            L = _context(model, cfg)
            tok_cache[k] = {"val": {s: tokenize_dialogues(tok, v["val"], L) for s, v in sources.items()},
                            "test": {s: tokenize_dialogues(tok, v["test"], L) for s, v in sources.items()}}
        if seed is not None and ("train", seed) not in tok_cache[k]:
            # the seed's subsample and order of the training mix (seed 0: the mix of the one-seed version)
            scratch.append(model_dir / "_trainer" / f"prepare-{os.getpid()}")  # this process's own
            tok_cache[k][("train", seed)] = prepare_sft_dataset(model, tok, train_mix(sources, seed)[:n_train], cfg,
                                                                scratch[-1])
        return tok_cache[k]

    def write(unit, metrics):
        if _is_main():
            store.write(unit, metrics, config=cfg, data_names=data_names)
        _barrier()

    def train(ck, u) -> dict:
        t0 = time.perf_counter()
        lr, seed = u["lr"], u["seed"]
        model, tok = _load(ck, cfg, train=True)
        tk = tokenized(tok, model, seed)
        scratch.append(model_dir / "_trainer" / f"{results.unit_id(u)}")
        info, trainer = sft(model, tok, tk[("train", seed)], lr, cfg, scratch[-1], seed)
        path = model_dir / results.unit_id(u)
        if info["diverged"]:  # recorded, never saved or scored (its val ppl counts as inf for the LR choice)
            m = {"tokens": ck.tokens, **info, "model_dir": None,
                 **{f"{p}_{k}": math.nan for p in ("val", "test") for k in ("ppl", "loss")}}
            m["wall_s"] = time.perf_counter() - t0
            write(u, m)
            del model, trainer
            gc.collect()
            return m
        _save_tuned(trainer, tok, path)
        m = {"tokens": ck.tokens, **info, "model_dir": str(path), "data_source": source,
             **({"hub_data": hub_data} if hub_data else {})}
        if _is_main():
            tuned = models.load_model(str(path), device=_device(cfg), dtype=_dtype(cfg))
            m.update(id_eval(tuned, tok, tk, cfg))
            del tuned
        m["wall_s"] = time.perf_counter() - t0
        write(u, m)
        del model, trainer
        gc.collect()
        return m

    def panel(u, model, tok, tokens):
        """The panel unit ``u`` on a loaded model: the main process evaluates and writes it (no
        collective: the other processes never read panel records during the run)."""
        if not cfg.panel or store.done(u) or not _is_main():
            return
        t0 = time.perf_counter()
        m = {"tokens": tokens, **panel_eval(model, tok, cfg)}
        m["wall_s"] = time.perf_counter() - t0
        store.write(u, m, config=cfg, data_names=data_names)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(series) * (len(cfg.lrs) * len(seeds) + 1 + len(seeds)),
                   desc=f"{CHAPTER} [{cfg.profile}]", leave=False)
    for ck in series:
        base_u = {"stage": "base", "series": series.name, "checkpoint": ck.label, "weights": models.identity(ck),
                  **weights.tokenizer_key(series), "key": f"{eval_key}-{id_key}"}
        base_p = _panel_units(cfg, series.name, ck.label, base_u["weights"])
        if not store.done(base_u) or (cfg.panel and not store.done(base_p)):
            model, tok = _load(ck, cfg)  # one load for both units
            if not store.done(base_u):
                t0 = time.perf_counter()
                tk = tokenized(tok, model)
                m = {"tokens": ck.tokens, **id_eval(model, tok, tk, cfg)}
                if _is_main():
                    m.update(bench_eval(model, tok, cfg))
                m["wall_s"] = time.perf_counter() - t0
                write(base_u, m)
            panel(base_p, model, tok, ck.tokens)
            del model
        bar and bar.update(1)
        sft_units = {(lr, s): {"stage": "sft", "series": series.name, "checkpoint": ck.label,
                               "weights": base_u["weights"], **weights.tokenizer_key(series), "lr": lr, "seed": s,
                               "key": sft_key}
                     for lr in cfg.lrs for s in seeds}
        for u in sft_units.values():
            if not store.done(u):
                train(ck, u)
            bar and bar.update(1)
        recs = {k: store.get(u)["metrics"] for k, u in sft_units.items()}
        best = choose_lr({k: r["val_ppl"] for k, r in recs.items()}, cfg.lrs, seeds)["best_lr"]
        for s in seeds:
            tuned_u = {**sft_units[(best, s)], "stage": "tuned", "key": _tuned_key(cfg)}
            if not store.done(tuned_u) and recs[(best, s)].get("diverged"):
                # every LR diverged for this seed's choice: the tuned model has no scores
                r = recs[(best, s)]
                write(tuned_u, {"tokens": ck.tokens, "best_lr": best, "lr_grid": list(cfg.lrs), "wall_s": 0.0,
                                **{k: r[k] for k in divergence.FIELDS},
                                **{k: r[k] for k in r if k.startswith(("val_", "test_", "train_loss", "final_loss"))},
                                **{k: math.nan for k in [*_metrics(cfg), "avg_acc_stderr", "avg_acc_norm_stderr"]}})
            tuned_p = _panel_units(cfg, series.name, ck.label, base_u["weights"], best, s)
            if store.done(tuned_u) and cfg.panel and not store.done(tuned_p) and not recs[(best, s)].get("diverged"):
                # the tuned unit is done but not its panel (e.g. the panel changed): the panel alone
                if not Path(recs[(best, s)]["model_dir"]).is_dir():
                    recs[(best, s)] = train(ck, sft_units[(best, s)])
                path = Path(recs[(best, s)]["model_dir"])
                if _is_main():
                    tuned = models.load_model(str(path), device=_device(cfg), dtype=_dtype(cfg))
                    panel(tuned_p, tuned, prepare_tokenizer(models.load_tokenizer(str(path))), ck.tokens)
                    del tuned
            if not store.done(tuned_u):
                t0 = time.perf_counter()
                if not Path(recs[(best, s)]["model_dir"]).is_dir():
                    # pruned while another LR was the choice (e.g. with other seeds): train it again
                    recs[(best, s)] = train(ck, sft_units[(best, s)])
                path = Path(recs[(best, s)]["model_dir"])
                r = recs[(best, s)]
                m = {"tokens": ck.tokens, "best_lr": best, "lr_grid": list(cfg.lrs),
                     **{k: r[k] for k in r if k.startswith(("val_", "test_", "train_loss", "final_loss"))}}
                if _is_main():
                    tuned = models.load_model(str(path), device=_device(cfg), dtype=_dtype(cfg))
                    tok = prepare_tokenizer(models.load_tokenizer(str(path)))
                    m.update(bench_eval(tuned, tok, cfg))
                    if cfg.alpacaeval_judge:
                        m.update(alpacaeval(tuned, tok, cfg, path.with_name(path.name + ".alpacaeval")))
                m["wall_s"] = time.perf_counter() - t0
                write(tuned_u, m)
                if _is_main():
                    panel(tuned_p, tuned, tok, ck.tokens)  # the same loaded model
                    del tuned
            bar and bar.update(1)
        if cfg.keep_tuned == "best" and _is_main():
            for (lr, _), r in recs.items():
                if lr != best and r.get("model_dir") and Path(r["model_dir"]).is_dir():
                    shutil.rmtree(r["model_dir"], ignore_errors=True)
    if bar is not None:
        bar.close()
    for d in scratch:
        shutil.rmtree(d, ignore_errors=True)
    try:
        (model_dir / "_trainer").rmdir()  # only when no other process still has a folder in it
    except OSError:
        pass
    return collect(cfg, series, store, sources, wall_s=time.perf_counter() - t_start)


def collect(cfg: Config, series, store, sources=None, wall_s: float | None = None) -> dict:
    """The chapter's frames from the store: ``base`` (one row per checkpoint), ``sft`` (per
    checkpoint, lr, seed), ``tuned`` (per checkpoint and seed, at the LR chosen from the seed-mean
    validation perplexity of this config's seeds), ``lr_choice`` (per checkpoint: the chosen LR,
    the seed-mean validation perplexity of every LR and how many seeds alone would choose it) and
    ``summary`` (:func:`summarize`)."""
    import pandas as pd
    labels = [c.label for c in series]
    weights = {c.label: models.identity(c) for c in series}
    seeds = seed_list(cfg)
    keys = {"base": f"{_key(cfg, _EVAL_FIELDS)}-{_key(cfg, _DATA_FIELDS)}", "sft": _key(cfg, _SFT_FIELDS),
            "tuned": _tuned_key(cfg)}
    rows = {"base": [], "sft": [], "tuned": []}
    pkeys = {"base": _panel_key(cfg), "tuned": f"{_key(cfg, _SFT_FIELDS)}-{_panel_key(cfg)}"}
    panels = {}  # (of, checkpoint, lr, seed) -> the panel's metrics
    records = list(store.records())
    for r in records:
        u = r["unit"]
        if (u.get("stage") == "panel" and cfg.panel and u.get("series") == series.name
                and u.get("checkpoint") in labels and u.get("key") == pkeys.get(u.get("of"))
                and u.get("weights") == weights[u["checkpoint"]]):
            panels[(u["of"], u["checkpoint"], u.get("lr"), u.get("seed"))] = {
                **{k: v for k, v in r["metrics"].items() if k not in ("tokens", "wall_s")},
                "panel_wall_s": r["metrics"].get("wall_s"), "panel_record_id": results.unit_id(u)}
    for r in records:
        u = r["unit"]
        if u.get("stage") == "panel":
            continue
        if u.get("series") != series.name or u.get("checkpoint") not in labels or u.get("key") != keys[u["stage"]]:
            continue
        if u.get("weights") != weights[u["checkpoint"]]:  # records of other weights under this label
            continue
        if u["stage"] != "base" and (u.get("seed") not in seeds or u.get("lr") not in cfg.lrs):
            continue
        row = {**u, **r["metrics"], "record_id": results.unit_id(u)}
        if cfg.panel and u["stage"] in ("base", "tuned"):  # the panel's columns (NaN where not evaluated yet)
            key = (u["stage"], u["checkpoint"]) + ((None, None) if u["stage"] == "base" else (u["lr"], u["seed"]))
            row.update(panels.get(key) or {m: math.nan for m in panel_columns(cfg)})
        rows[u["stage"]].append(row)
    frames = {k: pd.DataFrame(v).sort_values(["tokens"] + (["lr", "seed"] if k == "sft" else ["seed"] if k == "tuned"
                                                            else [])).reset_index(drop=True)
              if v else pd.DataFrame() for k, v in rows.items()}
    choice_rows, best = [], {}
    if len(frames["sft"]):
        for ck, g in frames["sft"].groupby("checkpoint", sort=False):
            c = choose_lr({(r.lr, r.seed): r.val_ppl for r in g.itertuples()}, cfg.lrs, seeds)
            best[ck] = c["best_lr"]
            choice_rows.append({"checkpoint": ck, "tokens": g.tokens.iloc[0], "best_lr": c["best_lr"],
                                "n_seeds": int(g.seed.nunique()),
                                **{f"val ppl, lr={lr:g} (seed mean)": c["mean_val_ppl"][lr] for lr in cfg.lrs},
                                **{f"seeds choosing lr={lr:g}": c["votes"][lr] for lr in cfg.lrs}})
    lr_choice = pd.DataFrame(choice_rows)
    t = frames["tuned"]
    if len(t):
        frames["tuned"] = t[[best.get(ck) == lr for ck, lr in zip(t.checkpoint, t.lr)]].reset_index(drop=True)
    summary = summarize(frames["base"], frames["tuned"], cfg)
    return {"base": frames["base"], "sft": frames["sft"], "tuned": frames["tuned"], "summary": summary,
            "lr_choice": lr_choice, "chance": chance_levels(cfg), "series": series, "wall_s": wall_s,
            "panel_reference": series_reference(cfg, series, frames["base"]),
            "seeds": seeds,
            "n_examples": {s: {p: len(v[p]) for p in ("train", "val", "test")} for s, v in (sources or {}).items()}}


if __name__ == "__main__":  # python -m coft_utils.chapters.instruct: the command line of instruct_launch
    from .instruct_launch import main
    raise SystemExit(main())
