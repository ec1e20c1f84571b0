"""Chapter 01: instruction tuning of every checkpoint of a pre-training series (paper Figs. 1-2).

::

    from coft_utils.chapters import instruct
    from coft_utils.foundation import profiles
    cfg = profiles.resolve("01_instruction_tuning", "smoke")
    series = instruct.get_series(cfg)            # the pre-training suite (smoke/cpu/gpu) or OLMo-1B (paper)
    out = instruct.run(cfg)                      # base eval, SFT per (lr, seed), best-LR eval per seed; resumable
    out["summary"]                               # one row per (checkpoint, stage): seed means, CIs, min/max
    out["sft"]                                   # one row per (checkpoint, lr, seed): train loss, val/test ppl
    out["tuned"]                                 # one row per (checkpoint, seed) at the chosen LR
    out["lr_choice"]                             # per checkpoint: chosen LR, seed-mean val ppl, seeds' votes
    cv = instruct.claim_verdict(out, cfg)        # the claim row: a coft_utils.foundation.verdicts.Verdict on acc_norm
    cv["verdict"].label, cv["verdict"].stat_text(), cv["measured"], cv["acc"], cv["id"]

    # paper scale, several GPUs (FSDP): fills the same results store; then run the notebook
    #   accelerate launch --config_file coft_utils/configs/accelerate_fsdp_instruct.yaml \\
    #       -m coft_utils.chapters.instruct --profile paper
    #   python -m coft_utils run 01_instruction_tuning --profile paper

What one run does, for every selected checkpoint of the series:

1. **base**: zero-shot ``acc``/``acc_norm`` on the eight generalist benchmarks through
   ``lm_eval.simple_evaluate`` (:mod:`coft_utils.foundation.lmeval_tasks`: local task configs here,
   lm-eval's standard tasks at ``paper``) and the response perplexity on the held-out
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
   report.

A fine-tuning seed sets the subsample and order of the training mix and the trainer's seed; the
seeds are the replicates of the verdict (:func:`claim_verdict`): the per-seed average
``acc_norm`` (the one metric declared for the claim beforehand, :data:`CLAIM_METRIC`) against
the base model's, through :func:`coft_utils.foundation.verdicts.bends_down`. With one seed there is no
replicate spread, and the verdict is *inconclusive* by construction.

Instruction data (``sft_data``): ``hh_rlhf`` = Anthropic-HH "chosen" dialogues (here the local
harmless-base pairs; at ``paper`` the hub's full train split), split at ``"\\n\\nHuman: "`` /
``"\\n\\nAssistant: "`` into user/assistant turns (dialogues that do not end with a non-empty
assistant turn are dropped); ``alpaca_seed_tasks`` = instruction (+ ``"\\n\\n"`` + input) ->
output, one example per instance; ``gsm8k`` = GSM8K train question -> answer; ``tulu`` (paper
only) = ``allenai/tulu-v2-sft-mixture`` messages. Held-out split: per source, a permutation drawn
with the fixed seed :data:`HELDOUT_SEED` (independent of the run's seed); its first
``heldout_per_source`` examples are held out (first half: validation for LR selection, second
half: test), the rest are the training pool (at most ``train_per_source`` per source). The
training mix is the union of the pools, shuffled by the fine-tuning seed.

Response perplexity = exp(total NLL / number of assistant tokens) over the held-out dialogues,
token-weighted, with sequences cut to ``max_seq_len`` tokens (the same cut as training); its
standard error (``*_loss_se``, of the log-perplexity) is the ratio estimator's over dialogues.

Results: ``results.Store("01_instruction_tuning", profile)``, one record per unit
``{"stage": "base"|"sft"|"tuned", "series", "checkpoint", ("lr", "seed"), "key"}`` where
``key`` hashes the settings that change the unit's numbers, so reruns are free and a change of
settings never reuses a stale record.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..foundation import data, divergence, models, plots, profiles, results
from ..foundation import verdicts as V
from ..foundation.lmeval_tasks import BENCHMARKS
from ..foundation.profiles import param

__all__ = ["Config", "PRESETS", "CHAPTER", "PAPER", "get_series", "select_checkpoints", "sft_sources",
           "chat_template_for", "response_perplexity", "sft", "run", "summarize", "verdict", "chance_levels",
           "alpacaeval", "main", "seed_list", "choose_lr", "id_verdict", "claim_verdict", "CLAIM_METRIC",
           "fig_average", "fig_benchmarks", "fig_id", "table_summary", "lr_text"]

CHAPTER = "01_instruction_tuning"
HELDOUT_SEED = 20250325
SFT_SOURCES = ("hh_rlhf", "alpaca_seed_tasks", "gsm8k", "tulu")
HUB_SERIES = ("olmo-1b", "olmo-2-7b-stage1", "amber")
# The one metric the claim row is decided on, declared before any run: lm-eval's acc_norm
# (log-likelihood per character of the answer), the accuracy OLMo's own evaluations report for
# ARC, HellaSwag, PIQA and OpenBookQA. avg_acc is tested and reported too, but never counts.
CLAIM_METRIC = "avg_acc_norm"

# What the paper reports for OLMo-1B (theirs; Springer et al. 2025, Fig. 1 and text). We have
# only these summary statements, not per-benchmark or per-checkpoint numbers.
PAPER = {
    "model": "OLMo-1B (intermediate checkpoints 0.04T..3.1T tokens)",
    "alpacaeval_3T_vs_2p3T": -3.0,   # percentage points (approx.), after Anthropic-HH instruction tuning
    "arc_3T_vs_2p3T": -2.0,          # percentage points (approx.), after instruction tuning
    "turning_point_tokens": 2.5e12,  # post-trained performance stops improving past ~2.5T
    "statements": (
        "After instruction tuning on Anthropic-HH, the 3T-token OLMo-1B is about 3% worse on AlpacaEval "
        "and about 2% worse on ARC than the 2.3T-token checkpoint tuned the same way.",
        "Base-model scores improve monotonically with pre-training tokens; the post-trained scores stop "
        "improving and degrade past roughly 2.5T tokens.",
        "The effect is not seen for OLMo-7B up to 3T tokens.",
    ),
}


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
    batch_size: int = param(16, "per-device SFT batch size", min=1, max=16384)
    grad_accum: int = param(1, "gradient accumulation steps", min=1, max=1024)
    max_seq_len: int = param(0, "SFT / ID-eval sequence length (0: the model's context, at most 2048)", min=0,
                             max=2048)
    warmup_ratio: float = param(0.05, "linear warmup fraction of the SFT steps", min=0.0, max=0.5)
    lr_schedule: str = param("cosine", "SFT learning-rate schedule", choices=("cosine", "linear", "constant_with_warmup"))
    weight_decay: float = param(0.0, "SFT AdamW weight decay", min=0.0)
    benchmarks: tuple[str, ...] = param(BENCHMARKS, "generalist benchmarks (lm-eval)", choices=BENCHMARKS)
    bench_limit: int = param(100, "items per benchmark (first N; 0: all)", min=0, max=100_000)
    bench_local: bool = param(True, "lm-eval task configs on the local files (False: lm-eval's hub tasks)")
    eval_max_length: int = param(256, "lm-eval max length in tokens (0: the model's)", min=0,
                                 max=32768)
    eval_batch_size: int = param(64, "lm-eval batch size", min=1, max=16384)
    precision: str = param("fp32", "training / eval precision", choices=("fp32", "bf16"))
    keep_tuned: str = param("best", "tuned weights kept on disk: best LR only, or all", choices=("best", "all"))
    alpacaeval_judge: str = param(None, "alpaca_eval annotator config (None: AlpacaEval is skipped)", nullable=True)
    threads: int = param(0, "torch CPU threads (0: torch default)", min=0, max=256)

    def check(self):
        # series / checkpoints / hub series at offline profiles: profiles.validate (shared by every chapter)
        n = len(profiles.series_info(self.series, self.profile, self.schedule).labels)
        if not self.checkpoints and self.n_checkpoints > n:
            raise profiles.ProfileError(f"parameter 'n_checkpoints' = {self.n_checkpoints} is more than series "
                                        f"{self.series!r} has ({n} checkpoints); allowed: 0 (all) .. {n}")
        if "tulu" in self.sft_data and profiles.get_profile(self.profile).offline:
            raise profiles.ProfileError(f"parameter 'sft_data' contains 'tulu', which is hub only; allowed at "
                                        f"profile {self.profile!r}: hh_rlhf, alpaca_seed_tasks, gsm8k")
        if not self.bench_local and profiles.get_profile(self.profile).offline:
            raise profiles.ProfileError(f"parameter 'bench_local' = False needs the hub; allowed at profile "
                                        f"{self.profile!r}: True")
        if not self.sft_data:
            raise profiles.ProfileError("parameter 'sft_data' may not be empty")
        if not self.benchmarks:
            raise profiles.ProfileError("parameter 'benchmarks' may not be empty")
        if len(set(self.lrs)) != len(self.lrs):
            raise profiles.ProfileError(f"parameter 'lrs' has duplicates: {self.lrs}")


PRESETS: dict[str, Config] = {
    # 3 of the smoke suite's checkpoints, 2 LRs x 2 seeds x 8 SFT steps, 10 items per benchmark: seconds.
    "smoke": Config(profile="smoke", n_checkpoints=3, train_per_source=200, heldout_per_source=16,
                    lrs=(3e-3, 1e-2), seeds=2, sft_steps=8, batch_size=8, bench_limit=10, eval_max_length=256,
                    eval_batch_size=64, threads=1),
    # every checkpoint of the cpu suite (olmo-pico), 3 LRs x 3 seeds x 80 steps of 8 dialogues, 100
    # items per benchmark: with one seed about 6 min on 2 shared cores (suite training excluded);
    # SFT and the tuned evaluation scale with the seeds (not re-timed at 3). TRL's fused LM-head
    # loss is about half of an SFT step on CPU. One torch thread: on a shared machine two
    # threads on two busy cores ran ~25x slower here.
    "cpu": Config(profile="cpu", n_checkpoints=0, train_per_source=2000, heldout_per_source=60,
                  lrs=(3e-3, 1e-2, 3e-2), seeds=3, sft_steps=80, batch_size=8, bench_limit=100,
                  eval_max_length=256, eval_batch_size=64, threads=1),
    # the gpu suite (olmo-micro), 3 LRs x 3 seeds x 1000 steps of 64, every benchmark item.
    "gpu": Config(profile="gpu", n_checkpoints=0, train_per_source=100_000, heldout_per_source=200,
                  lrs=(1e-4, 3e-4, 1e-3), seeds=3, sft_steps=1000, batch_size=64, bench_limit=0,
                  eval_max_length=1024, eval_batch_size=64, precision="bf16"),
    # the paper: OLMo-1B-hf revisions 0.04T..3.1T, Anthropic-HH (hub, full train split), one epoch,
    # global batch 8 GPUs x 8 x 2 = 128, LR grid tuned per checkpoint, lm-eval's standard tasks
    # (all items), FSDP through accelerate. The LR grid, batch and schedule are this companion's
    # choices in the range used for 1B-scale SFT; the paper's exact grid is not stated here. Three
    # fine-tuning seeds: with one, nothing statistical can be claimed (the verdict needs replicates).
    "paper": Config(profile="paper", series="olmo-1b", n_checkpoints=0, sft_data=("hh_rlhf",),
                    train_per_source=10_000_000, heldout_per_source=1000, lrs=(4e-6, 1e-5, 2e-5, 4e-5), seeds=3,
                    sft_steps=0, batch_size=8, grad_accum=2, max_seq_len=2048, warmup_ratio=0.03,
                    lr_schedule="linear", bench_limit=0, bench_local=False, eval_max_length=0,
                    eval_batch_size=32, precision="bf16"),
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


# --------------------------------------------------------------------------- instruction data
def hh_to_messages(text: str) -> list[dict] | None:
    """An Anthropic-HH transcript ("\\n\\nHuman: ... \\n\\nAssistant: ...") as chat messages."""
    import re
    parts = re.split(r"\n\n(Human|Assistant): ", "\n\n" + text.lstrip("\n"))
    msgs = []
    for role, content in zip(parts[1::2], parts[2::2]):
        r = "user" if role == "Human" else "assistant"
        content = content.strip()
        if msgs and msgs[-1]["role"] == r:  # merge accidental repeats of a role
            msgs[-1]["content"] += "\n\n" + content
        else:
            msgs.append({"role": r, "content": content})
    if not msgs or msgs[0]["role"] != "user" or msgs[-1]["role"] != "assistant" or not msgs[-1]["content"]:
        return None
    return msgs


def _source_dialogues(name: str, offline: bool) -> list[list[dict]]:
    import datasets
    if name == "hh_rlhf":
        ds = data.load("hh_rlhf", "test") if offline else datasets.load_dataset(data.spec("hh_rlhf").hub, split="train")
        out = [hh_to_messages(t) for t in ds["chosen"]]
        return [m for m in out if m]
    if name == "alpaca_seed_tasks":
        out = []
        for r in data.load("alpaca_seed_tasks", "train"):
            for inst in r["instances"]:
                user = r["instruction"].strip() + (("\n\n" + inst["input"].strip()) if inst.get("input", "").strip() else "")
                if inst.get("output", "").strip():
                    out.append([{"role": "user", "content": user}, {"role": "assistant", "content": inst["output"].strip()}])
        return out
    if name == "gsm8k":
        ds = data.load("gsm8k", "train") if offline else datasets.load_dataset("openai/gsm8k", "main", split="train")
        return [[{"role": "user", "content": q.strip()}, {"role": "assistant", "content": a.strip()}]
                for q, a in zip(ds["question"], ds["answer"])]
    if name == "tulu":
        if offline:
            raise data.DataError("tulu is hub only (allenai/tulu-v2-sft-mixture); use it at the paper profile")
        ds = datasets.load_dataset(data.spec("tulu").hub, split="train")
        return [[{"role": m["role"], "content": m["content"]} for m in ms if m["role"] in ("user", "assistant")]
                for ms in ds["messages"]]
    raise data.DataError(f"unknown instruction source {name!r}; allowed: {', '.join(SFT_SOURCES)}")


def sft_sources(cfg: Config) -> dict[str, dict[str, list]]:
    """{source: {"train": [...], "val": [...], "test": [...]}} of chat dialogues (see the module doc)."""
    offline = profiles.get_profile(cfg.profile).offline
    out = {}
    for name in cfg.sft_data:
        dia = _source_dialogues(name, offline)
        perm = list(range(len(dia)))
        random.Random(HELDOUT_SEED).shuffle(perm)
        h = min(cfg.heldout_per_source, len(dia) // 2)
        held = [dia[i] for i in perm[:h]]
        out[name] = {"val": held[: h // 2], "test": held[h // 2:],
                     "train": [dia[i] for i in perm[h:h + cfg.train_per_source]]}
    return out


def train_mix(sources: dict, seed: int) -> list[list[dict]]:
    mix = [m for s in sources.values() for m in s["train"]]
    random.Random(seed).shuffle(mix)
    return mix


def chat_template_for(tokenizer) -> str:
    """The project's chat template, with the tokenizer's own eos after each response."""
    eos = tokenizer.eos_token or "<|endoftext|>"
    return models.CHAT_TEMPLATE.replace("<|endoftext|>", eos)


def prepare_tokenizer(tokenizer):
    if not tokenizer.chat_template or "{% generation %}" not in tokenizer.chat_template:
        tokenizer.chat_template = chat_template_for(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def tokenize_dialogues(tokenizer, dialogues: list[list[dict]], max_len: int) -> list[dict]:
    """input_ids + assistant_masks (1 on response tokens), cut to ``max_len``; dialogues with no
    response token inside the cut are dropped."""
    out = []
    for msgs in dialogues:
        enc = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, mask = list(enc["input_ids"])[:max_len], list(enc["assistant_masks"])[:max_len]
        if any(mask[1:]):
            out.append({"input_ids": ids, "assistant_masks": mask})
    return out


def response_perplexity(model, tokenized: list[dict], batch_size: int = 16, pad_id: int = 0) -> dict:
    """Token-weighted perplexity of the assistant tokens (next-token NLL where the mask is 1), and
    ``loss_se``: the standard error of the mean NLL (= of the log-perplexity), the ratio estimator's
    over the dialogues (NaN with fewer than two)."""
    import torch
    import torch.nn.functional as F
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    seq_nll, seq_n = [], []
    was = model.training
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(tokenized), batch_size):
            chunk = tokenized[i:i + batch_size]
            L = max(len(c["input_ids"]) for c in chunk)
            ids = torch.full((len(chunk), L), pad_id, dtype=torch.long)
            att = torch.zeros((len(chunk), L), dtype=torch.long)
            lab = torch.full((len(chunk), L), -100, dtype=torch.long)
            for j, c in enumerate(chunk):
                n = len(c["input_ids"])
                ids[j, :n] = torch.tensor(c["input_ids"])
                att[j, :n] = 1
                m = torch.tensor(c["assistant_masks"], dtype=torch.bool)
                lab[j, :n] = torch.where(m, ids[j, :n], torch.full_like(ids[j, :n], -100))
            ids, att, lab = ids.to(dev), att.to(dev), lab.to(dev)
            logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
            tgt = lab[:, 1:]
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=-100,
                                  reduction="none").view(tgt.shape).sum(-1)
            seq_nll.extend(float(x) for x in nll)
            seq_n.extend(int(x) for x in (tgt != -100).sum(-1))
            total += float(nll.sum())
            count += int((tgt != -100).sum())
    model.train(was)
    loss = total / max(count, 1)
    N = len(seq_n)
    if N >= 2 and count > 0 and math.isfinite(loss):
        xbar = count / N
        se = math.sqrt(sum((y - loss * x) ** 2 for y, x in zip(seq_nll, seq_n)) / (N * (N - 1))) / xbar
    else:
        se = float("nan")
    return {"loss": loss, "ppl": math.exp(loss) if math.isfinite(loss) and loss < 700 else math.inf,
            "n_tokens": count, "loss_se": se}


# --------------------------------------------------------------------------- helpers
def _key(cfg: Config, fields: tuple[str, ...], extra: dict | None = None) -> str:
    d = {f: results._jsonable(getattr(cfg, f)) for f in fields}
    d.update(extra or {})
    return results.config_hash(d, 12)


_DATA_FIELDS = ("sft_data", "train_per_source", "heldout_per_source", "max_seq_len")
_SFT_FIELDS = _DATA_FIELDS + ("sft_steps", "batch_size", "grad_accum", "warmup_ratio", "lr_schedule",
                              "weight_decay", "precision")
_EVAL_FIELDS = ("benchmarks", "bench_limit", "bench_local", "eval_max_length")


def _device(cfg: Config) -> str:
    import torch
    if profiles.get_profile(cfg.profile).device == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        from accelerate import PartialState
        return str(PartialState().device)
    return "cpu"


def _dtype(cfg: Config):
    import torch
    return torch.bfloat16 if cfg.precision == "bf16" else torch.float32


def _context(model, cfg: Config) -> int:
    ctx = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
    return min(cfg.max_seq_len or ctx, 2048)


def _is_main() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def _barrier():
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
    except Exception:  # single process
        pass


def bench_eval(model, tok, cfg: Config) -> dict:
    from ..foundation import lmeval_tasks
    r = lmeval_tasks.evaluate(model, tok, cfg.benchmarks, limit=cfg.bench_limit or None,
                              batch_size=cfg.eval_batch_size, local=cfg.bench_local,
                              max_length=cfg.eval_max_length or None)
    sc = r["scores"]
    flat = {}
    for b, v in sc.items():
        for k in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr", "n"):
            flat[f"{b}/{k}"] = v[k]
    flat["avg_acc"] = sum(v["acc"] for v in sc.values()) / len(sc)
    flat["avg_acc_norm"] = sum(v["acc_norm"] for v in sc.values()) / len(sc)
    # standard error of an average of independent benchmark means
    flat["avg_acc_stderr"] = math.sqrt(sum(v["acc_stderr"] ** 2 for v in sc.values())) / len(sc)
    flat["avg_acc_norm_stderr"] = math.sqrt(sum(v["acc_norm_stderr"] ** 2 for v in sc.values())) / len(sc)
    flat["lm_eval"] = r["lm_eval"]
    return flat


def id_eval(model, tok, heldout: dict, cfg: Config, prefix: str = "") -> dict:
    """Response perplexity on the held-out ``val`` and ``test`` halves, overall and per source."""
    out = {}
    for part in ("val", "test"):
        allt = []
        for src, toks in heldout[part].items():
            r = response_perplexity(model, toks, batch_size=16, pad_id=tok.pad_token_id or 0)
            out[f"{prefix}{part}_ppl/{src}"] = r["ppl"]
            allt.extend(toks)
        r = response_perplexity(model, allt, batch_size=16, pad_id=tok.pad_token_id or 0)
        out[f"{prefix}{part}_ppl"], out[f"{prefix}{part}_loss"], out[f"{prefix}{part}_tokens"] = r["ppl"], r["loss"], r["n_tokens"]
        out[f"{prefix}{part}_loss_se"] = r["loss_se"]
    return out


# --------------------------------------------------------------------------- SFT
def sft_config(cfg: Config, lr: float, out_dir, seed: int, max_length: int, assistant_only_loss: bool = True):
    """TRL ``SFTConfig`` of one run: no packing, truncation to ``max_length`` (``keep_start``;
    dialogues left without a response token are dropped by TRL)."""
    from trl import SFTConfig
    return SFTConfig(
        output_dir=str(out_dir), max_steps=cfg.sft_steps if cfg.sft_steps else -1, num_train_epochs=1,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=lr, lr_scheduler_type=cfg.lr_schedule, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, max_length=max_length, assistant_only_loss=assistant_only_loss,
        packing=False, logging_steps=max(1, (cfg.sft_steps or 100) // 10), save_strategy="no",
        report_to=[], seed=seed, data_seed=seed, bf16=cfg.precision == "bf16", use_cpu=_device(cfg) == "cpu",
        dataloader_num_workers=0, disable_tqdm=True, logging_nan_inf_filter=False,
        # TRL defaults to checkpointing; under FSDP it is FSDP's (the yaml), on one GPU at paper ours
        activation_checkpointing=cfg.profile == "paper" and os.environ.get("ACCELERATE_USE_FSDP", "").lower() != "true")


def prepare_sft_dataset(model, tok, dialogues: list[list[dict]], cfg: Config, out_dir):
    """TRL's own preparation of chat ``messages`` with ``assistant_only_loss=True``: a dataset of
    ``input_ids`` and ``labels`` (-100 outside the assistant responses), truncated to the context.

    It depends only on the tokenizer and the dialogues, so it is done once per tokenizer and
    reused by every (checkpoint, learning rate) run (TRL leaves a dataset with ``labels`` as is)."""
    import datasets
    from trl import SFTTrainer
    ds = datasets.Dataset.from_list([{"messages": m} for m in dialogues])
    args = sft_config(cfg, 1e-4, out_dir, cfg.seed, _context(model, cfg), assistant_only_loss=True)
    return SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok).train_dataset


def sft(model, tok, train_ds, lr: float, cfg: Config, out_dir: Path, seed: int):
    """Fine-tune ``model`` in place with TRL's ``SFTTrainer``; returns (info, trainer).

    ``train_ds`` is either chat ``messages`` (a list of dialogues: prepared here with
    ``assistant_only_loss=True``) or the output of :func:`prepare_sft_dataset` (labels already
    masked to the responses)."""
    from trl import SFTTrainer
    if isinstance(train_ds, list):
        train_ds = prepare_sft_dataset(model, tok, train_ds, cfg, out_dir)
    args = sft_config(cfg, lr, out_dir, seed, _context(model, cfg), assistant_only_loss=False)
    trainer = divergence.watch(SFTTrainer)(model=model, args=args, train_dataset=train_ds, processing_class=tok)
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)  # the loss history is kept in trainer.state.log_history
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    info = {"train_loss": float(out.training_loss), "final_loss": float(losses[-1]) if losses else float("nan"),
            "steps": int(trainer.state.global_step), "n_train": len(trainer.train_dataset), "sft_wall_s": wall,
            **divergence.check(trainer, model)}
    return info, trainer


def _save_tuned(trainer, tok, path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    tmp = path.with_name(path.name + ".partial")  # the same name on every rank
    trainer.save_model(str(tmp))  # gathers a full state dict under FSDP
    if _is_main():
        tok.save_pretrained(tmp)
        os.replace(tmp, path)
    _barrier()


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
    return local + (list(cfg.benchmarks) if cfg.bench_local else [])


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
    series = series or get_series(cfg)
    store = results.Store(CHAPTER, cfg.profile)
    sources = sft_sources(cfg)
    data_names = _data_names(cfg)
    sft_key = _key(cfg, _SFT_FIELDS)
    eval_key = _key(cfg, _EVAL_FIELDS)
    id_key = _key(cfg, _DATA_FIELDS)
    seeds = seed_list(cfg)
    tok_cache: dict = {}
    # dialogues one run can consume (with some spare for those TRL drops after truncation)
    n_train = None if not cfg.sft_steps else int(cfg.sft_steps * cfg.batch_size * cfg.grad_accum
                                                   * int(os.environ.get("WORLD_SIZE", "1")) * 1.25) + 8
    model_dir = results.runs_dir() / cfg.profile / CHAPTER / "models"
    t_start = time.perf_counter()

    def tokenized(tok, model, seed: int | None = None):
        k = (tok.name_or_path, len(tok), _context(model, cfg))
        if k not in tok_cache:
            L = _context(model, cfg)
            tok_cache[k] = {"val": {s: tokenize_dialogues(tok, v["val"], L) for s, v in sources.items()},
                            "test": {s: tokenize_dialogues(tok, v["test"], L) for s, v in sources.items()}}
        if seed is not None and ("train", seed) not in tok_cache[k]:
            # the seed's subsample and order of the training mix (seed 0: the mix of the one-seed version)
            tok_cache[k][("train", seed)] = prepare_sft_dataset(model, tok, train_mix(sources, seed)[:n_train], cfg,
                                                                model_dir / "_trainer" / "prepare")
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
        info, trainer = sft(model, tok, tk[("train", seed)], lr, cfg,
                            model_dir / "_trainer" / f"{results.unit_id(u)}", seed)
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
        m = {"tokens": ck.tokens, **info, "model_dir": str(path)}
        if _is_main():
            tuned = models.load_model(str(path), device=_device(cfg), dtype=_dtype(cfg))
            m.update(id_eval(tuned, tok, tk, cfg))
            del tuned
        m["wall_s"] = time.perf_counter() - t0
        write(u, m)
        del model, trainer
        gc.collect()
        return m

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(series) * (len(cfg.lrs) * len(seeds) + 1 + len(seeds)),
                   desc=f"{CHAPTER} [{cfg.profile}]", leave=False)
    for ck in series:
        base_u = {"stage": "base", "series": series.name, "checkpoint": ck.label, "weights": models.identity(ck),
                  "key": f"{eval_key}-{id_key}"}
        if not store.done(base_u):
            t0 = time.perf_counter()
            model, tok = _load(ck, cfg)
            tk = tokenized(tok, model)
            m = {"tokens": ck.tokens, **id_eval(model, tok, tk, cfg)}
            if _is_main():
                m.update(bench_eval(model, tok, cfg))
            m["wall_s"] = time.perf_counter() - t0
            write(base_u, m)
            del model
        bar and bar.update(1)
        sft_units = {(lr, s): {"stage": "sft", "series": series.name, "checkpoint": ck.label,
                               "weights": base_u["weights"], "lr": lr, "seed": s, "key": sft_key}
                     for lr in cfg.lrs for s in seeds}
        for u in sft_units.values():
            if not store.done(u):
                train(ck, u)
            bar and bar.update(1)
        recs = {k: store.get(u)["metrics"] for k, u in sft_units.items()}
        best = choose_lr({k: r["val_ppl"] for k, r in recs.items()}, cfg.lrs, seeds)["best_lr"]
        for s in seeds:
            tuned_u = {**sft_units[(best, s)], "stage": "tuned", "key": f"{sft_key}-{eval_key}"}
            if not store.done(tuned_u) and recs[(best, s)].get("diverged"):
                # every LR diverged for this seed's choice: the tuned model has no scores
                r = recs[(best, s)]
                write(tuned_u, {"tokens": ck.tokens, "best_lr": best, "lr_grid": list(cfg.lrs), "wall_s": 0.0,
                                **{k: r[k] for k in divergence.FIELDS},
                                **{k: r[k] for k in r if k.startswith(("val_", "test_", "train_loss", "final_loss"))},
                                **{k: math.nan for k in [*_metrics(cfg), "avg_acc_stderr", "avg_acc_norm_stderr"]}})
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
                        m.update(alpacaeval(tuned, tok, cfg))
                    del tuned
                m["wall_s"] = time.perf_counter() - t0
                write(tuned_u, m)
            bar and bar.update(1)
        if cfg.keep_tuned == "best" and _is_main():
            for (lr, _), r in recs.items():
                if lr != best and r.get("model_dir") and Path(r["model_dir"]).is_dir():
                    shutil.rmtree(r["model_dir"], ignore_errors=True)
    if bar is not None:
        bar.close()
    shutil.rmtree(model_dir / "_trainer", ignore_errors=True)
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
            "tuned": f"{_key(cfg, _SFT_FIELDS)}-{_key(cfg, _EVAL_FIELDS)}"}
    rows = {"base": [], "sft": [], "tuned": []}
    for r in store.records():
        u = r["unit"]
        if u.get("series") != series.name or u.get("checkpoint") not in labels or u.get("key") != keys[u["stage"]]:
            continue
        if u.get("weights") != weights[u["checkpoint"]]:  # records of other weights under this label
            continue
        if u["stage"] != "base" and (u.get("seed") not in seeds or u.get("lr") not in cfg.lrs):
            continue
        rows[u["stage"]].append({**u, **r["metrics"]})
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
            "seeds": seeds,
            "n_examples": {s: {p: len(v[p]) for p in ("train", "val", "test")} for s, v in (sources or {}).items()}}


def _metrics(cfg: Config) -> list[str]:
    return ["avg_acc", "avg_acc_norm", "test_ppl"] + [f"{b}/{m}" for b in cfg.benchmarks for m in ("acc", "acc_norm")]


def summarize(base, tuned, cfg: Config):
    """One row per (checkpoint, stage). Tuned: the mean over seeds of every metric, its 95 %
    t-interval half-width over seeds (``*_ci``; NaN with one seed), min and max over seeds
    (``*_min``/``*_max``), ``n_seeds``, and the mean lm-eval standard error (``*_stderr``). Base:
    its value, ``*_ci`` = 1.96 lm-eval s.e. (items) for the averages (test ppl: from the
    ratio-estimator s.e. of its log), min = max = the value."""
    import pandas as pd
    from scipy import stats
    rows = []
    mets = _metrics(cfg)
    for _, r in base.iterrows():
        row = {"checkpoint": r["checkpoint"], "tokens": r["tokens"], "stage": "base", "n_seeds": 0,
               "best_lr": float("nan")}
        for m in mets:
            row[m], row[f"{m}_min"], row[f"{m}_max"] = r[m], r[m], r[m]
            row[f"{m}_ci"] = float("nan")
        for m in ("avg_acc", "avg_acc_norm"):
            row[f"{m}_stderr"] = r[f"{m}_stderr"]
            row[f"{m}_ci"] = 1.96 * r[f"{m}_stderr"]
        se = r.get("test_loss_se", float("nan"))
        row["test_ppl_ci"] = r["test_ppl"] * 1.96 * se if se is not None and math.isfinite(se) else float("nan")
        rows.append(row)
    if len(tuned):
        for ck, g in tuned.groupby("checkpoint", sort=False):
            n = len(g)
            q = float(stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")
            row = {"checkpoint": ck, "tokens": g["tokens"].iloc[0], "stage": "tuned", "n_seeds": n,
                   "best_lr": g["lr"].iloc[0]}
            for m in mets:
                x = g[m].astype(float)
                # a diverged seed (NaN) makes the mean NaN: shown, never averaged away
                row[m], row[f"{m}_min"], row[f"{m}_max"] = x.mean(skipna=False), x.min(skipna=False), x.max(skipna=False)
                row[f"{m}_ci"] = q * x.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
            for m in ("avg_acc", "avg_acc_norm"):
                row[f"{m}_stderr"] = g[f"{m}_stderr"].mean()
            row["n_diverged"] = int(g["diverged"].fillna(False).astype(bool).sum()) if "diverged" in g else 0
            rows.append(row)
    df = pd.DataFrame(rows)
    return df.sort_values(["stage", "tokens"]).reset_index(drop=True) if len(df) else df


def chance_levels(cfg: Config) -> dict:
    """Expected accuracy of a uniform guess on the items evaluated: mean of 1/(number of choices)."""
    from ..foundation import lmeval_tasks
    out = {}
    for b in cfg.benchmarks:
        try:
            docs = lmeval_tasks.normalized_docs(b)
        except data.DataError:  # paper: hub-only machine without the local files
            out[b] = float("nan")
            continue
        docs = docs[: cfg.bench_limit] if cfg.bench_limit else docs
        out[b] = sum(1 / len(d.get("choices", d.get("options"))) for d in docs) / len(docs)
    vals = [v for v in out.values() if math.isfinite(v)]
    out["avg"] = sum(vals) / len(vals) if vals else float("nan")
    return out


# --------------------------------------------------------------------------- verdicts
def _curves(tuned, base, value: str, se: str | None = None):
    """(tokens, checkpoints, tuned (seeds x K), base (1 x K), base s.e. (K)) on the checkpoints
    that both stages have, in token order; missing (checkpoint, seed) records are NaN."""
    import numpy as np
    b = base.sort_values("tokens")
    cks = [c for c in b["checkpoint"] if c in set(tuned["checkpoint"])]
    b = b.set_index("checkpoint").loc[cks]
    T = tuned.pivot_table(index="seed", columns="checkpoint", values=value, aggfunc="first", dropna=False)
    T = T.reindex(columns=cks).to_numpy(float) if len(T) else np.full((0, len(cks)), np.nan)
    bse = (b[se].to_numpy(float) if se is not None and se in b else np.full(len(cks), np.nan))
    return b["tokens"].to_numpy(float), cks, T, b[value].to_numpy(float)[None, :], bse


def _metric_name(metric: str) -> str:
    return {"avg_acc": "average acc", "avg_acc_norm": "average acc_norm"}.get(metric, metric)


def diverged_note(frame) -> str:
    """Which fine-tuning runs of a frame (``sft`` or ``tuned``) diverged, where and why; '' if none."""
    if not len(frame) or "diverged" not in frame:
        return ""
    d = frame[frame["diverged"].fillna(False).astype(bool)]
    if not len(d):
        return ""
    cks = list(dict.fromkeys(d["checkpoint"]))
    why = list(dict.fromkeys(d["diverged_reason"].fillna("")))
    return (f"{len(d)} of {len(frame)} fine-tuning runs diverged (checkpoints {', '.join(map(str, cks[:6]))}"
            f"{' …' if len(cks) > 6 else ''}; {'; '.join(why[:2])}): they have no scores")


def verdict(tuned, base, chance: dict, metric: str = "avg_acc") -> dict:
    """Does the instruction-tuned curve bend down at the end, beyond seed noise, while the base
    curve does not? :func:`coft_utils.foundation.verdicts.bends_down` on ``tuned`` = the per-seed ``metric``
    at the chosen LR (seeds x checkpoints) against ``base`` (1 x checkpoints) with the base's
    lm-eval standard error (``metric + "_stderr"``). ``tuned`` is ``out["tuned"]`` (one row per
    checkpoint and seed), ``base`` is ``out["base"]``.

    Returns the :class:`~coft_utils.foundation.verdicts.Verdict` (``"verdict"``), the seed-mean and base
    curves, whether every score lies within four standard errors of chance (uniform guessing on
    the same items: ``near_chance``) and a ``text``."""
    import numpy as np
    out = {"metric": metric}
    if not len(tuned) or not len(base):
        v = V.Verdict(claim="tuned curve bends down while the base does not", label="inconclusive",
                      reason="no tuned or no base records")
        out.update(verdict=v, label=v.label, near_chance=False, text=f"{v.label}: {v.reason}.")
        return out
    tokens, cks, T, B, bse = _curves(tuned, base, metric, metric + "_stderr")
    R, K = T.shape
    v = V.bends_down(tokens, T, B, higher_is_better=True, base_se=bse)  # a missing record (NaN) -> inconclusive
    v = V.diverged(dataclasses.replace(v, unit=f"drop in {_metric_name(metric)} at the last checkpoint"),
                   diverged_note(tuned))
    mean_t = np.nanmean(T, axis=0) if R else np.full(K, np.nan)
    ch = chance.get("avg", float("nan"))
    allv = np.concatenate([mean_t, B[0]])
    avg_se = float(np.nanmean(np.concatenate([tuned[metric + "_stderr"].to_numpy(float), bse])))
    max_dev = float(np.nanmax(np.abs(allv - ch))) if math.isfinite(ch) else float("nan")
    near = bool(math.isfinite(ch) and max_dev < 4 * avg_se and np.isfinite(mean_t).all())
    j = v.detail.get("best_earlier") if v.detail else None
    out.update(verdict=v, label=v.label, tokens=tokens.tolist(), checkpoints=cks, n_seeds=R,
               tuned_mean=mean_t.tolist(), base=B[0].tolist(), base_se=bse.tolist(),
               best_checkpoint=cks[j] if j is not None else None, last_checkpoint=cks[-1] if cks else None,
               base_bends=bool(v.detail.get("base_bends", False)) if v.detail else False,
               chance=ch, max_dev_from_chance=max_dev, avg_stderr=avg_se, near_chance=near)
    name = _metric_name(metric)
    parts = [f"{v.label}: {v.stat_text()}."]
    if j is not None:
        parts.append(f"The seed-mean instruction-tuned {name} is {mean_t[-1]:.3f} at the last checkpoint "
                     f"({cks[-1]}) against {mean_t[j]:.3f} at {cks[j]}, the best of the later half of the "
                     f"series ({R} seeds); the same test on the base curve "
                     + ("fires (the base bends down too)." if out["base_bends"] else "does not fire."))
    if v.reason:
        parts.append(v.reason[0].upper() + v.reason[1:] + ".")
    if near:
        parts.append(f"Every score ({np.nanmin(allv):.3f} to {np.nanmax(allv):.3f}, base and tuned seed means) is "
                     f"within four standard errors ({4 * avg_se:.3f}) of chance ({ch:.3f}): these models are too "
                     "small for these benchmarks, so the benchmark curves cannot show the effect either way at "
                     "this scale.")
    out["text"] = " ".join(parts)
    return out


def id_verdict(tuned, base) -> dict:
    """The in-distribution metric: does the tuned models' held-out (test) response perplexity get
    *worse* at the last checkpoint, beyond seed noise, while the base's does not?
    :func:`coft_utils.foundation.verdicts.bends_down` with ``higher_is_better=False, log=True`` (per-seed
    tuned perplexity against the base's, whose standard error is the ratio estimator's over the
    held-out dialogues, ``test_loss_se``; 0 for records made before it was stored)."""
    import numpy as np
    if not len(tuned) or not len(base):
        v = V.Verdict(claim="tuned curve bends down while the base does not", label="inconclusive",
                      reason="no tuned or no base records")
        return {"verdict": v, "label": v.label, "text": f"{v.label}: {v.reason}."}
    tokens, cks, T, B, bse = _curves(tuned, base, "test_ppl", "test_loss_se")
    exact_base = not np.isfinite(bse).all()
    bse = np.where(np.isfinite(bse), bse, 0.0)
    v = V.bends_down(tokens, T, B, higher_is_better=False, log=True, base_se=bse)
    v = V.diverged(dataclasses.replace(v, unit="% higher perplexity at the last checkpoint than at the best of the "
                                              "later half"), diverged_note(tuned))
    mean_t = np.exp(np.nanmean(np.log(T), axis=0)) if T.shape[0] else np.full(len(cks), np.nan)
    txt = (f"{v.label}: {v.stat_text()}" + (f" ({v.reason})" if v.reason else "") + ". "
           f"The tuned models' held-out response perplexity (geometric mean over seeds) goes from "
           f"{mean_t[0]:.1f} at the first checkpoint to {mean_t[-1]:.1f} at the last"
           f" (base: {B[0][0]:.1f} to {B[0][-1]:.1f})."
           + (" The base curve's s.e. was not recorded (older records): taken as 0." if exact_base else ""))
    return {"verdict": v, "label": v.label, "tokens": tokens.tolist(), "checkpoints": cks,
            "tuned_mean": mean_t.tolist(), "base": B[0].tolist(), "text": txt}


def lr_text(out: dict, cfg: Config) -> str:
    """How the learning rate was chosen per checkpoint, the seeds' agreement, and the grid's edge."""
    lc = out.get("lr_choice")
    if lc is None or not len(lc):
        return "No fine-tuning records."
    n = len(out["seeds"])
    agree = [int(r[f"seeds choosing lr={r.best_lr:g}"]) for _, r in lc.iterrows()]
    s = ("Learning rate per checkpoint (lowest seed-mean validation perplexity): "
         + ", ".join(f"{ck}: {lr:g}" for ck, lr in zip(lc.checkpoint, lc.best_lr)) + ". "
         + f"The seeds on their own agree with that choice for {sum(a == n for a in agree)} of {len(lc)} "
           f"checkpoints ({n} seeds each).")
    n_edge = int((lc.best_lr == max(cfg.lrs)).sum())
    if n_edge and len(cfg.lrs) > 1:
        s += (f" The chosen rate is the largest of the grid for {n_edge} of {len(lc)} checkpoints, so a "
              "larger one might do better still.")
    else:
        s += " The chosen rate lies inside the grid or at its lower end for every checkpoint."
    return s


def claim_verdict(out: dict, cfg: Config) -> dict:
    """The chapter's claim row (``olmo_instruction``): :func:`verdict` on :data:`CLAIM_METRIC`
    (declared beforehand; ``avg_acc`` is tested and reported too but does not count), with the
    ``avg_acc`` and the ID-perplexity verdicts beside it.

    Returns ``verdict`` (the Verdict to record), ``metric``, ``measured`` (what series,
    checkpoints, seeds and metric), ``numbers`` (JSON-able), ``acc``/``acc_norm``/``id`` (the
    three :func:`verdict`-style dicts), ``sentence`` (the one-line answer) and ``lr_text``."""
    series = out["series"]
    acc = verdict(out["tuned"], out["base"], out["chance"], "avg_acc")
    norm = verdict(out["tuned"], out["base"], out["chance"], "avg_acc_norm")
    idv = id_verdict(out["tuned"], out["base"])
    main = {"avg_acc": acc, "avg_acc_norm": norm}[CLAIM_METRIC]
    v = main["verdict"]
    cks = main.get("checkpoints") or []
    toks = main.get("tokens") or []
    n_items = f"first {cfg.bench_limit} items" if cfg.bench_limit else "all items"
    measured = (f"{series.name}: {len(cks)} checkpoints"
                + (f" ({cks[0]} to {cks[-1]}, {toks[0]:.3g} to {toks[-1]:.3g} tokens)" if cks else "")
                + f"; {len(out['seeds'])} fine-tuning seeds ({', '.join(map(str, out['seeds']))}) at the LR chosen "
                  f"per checkpoint on the seed-mean validation response perplexity; metric (declared): "
                  f"{_metric_name(CLAIM_METRIC)} over {len(cfg.benchmarks)} benchmarks ({n_items}), tuned per seed "
                  f"vs base with its lm-eval s.e.")
    what = {"observed": "the instruction-tuned models get worse at the last checkpoint, beyond seed noise, "
                        "while the base model does not",
            "contradicted": "the instruction-tuned models are best at the last checkpoint, beyond seed noise",
            "within noise": "no bend down at the last checkpoint can be told apart from seed noise",
            "inconclusive": "the data cannot decide"}[v.label]
    sentence = (f"At the {cfg.profile} profile ({series.name}, {len(cks)} checkpoints, {len(out['seeds'])} seeds), "
                f"on {_metric_name(CLAIM_METRIC)}: {what}"
                + (f" ({v.reason})" if v.reason and v.label == "inconclusive" else "")
                + (" — and every score is near chance, so the benchmarks cannot show the effect at this scale"
                   if main.get("near_chance") else "") + ".")

    def nums(d):
        return {k: (x.to_dict() if isinstance(x, V.Verdict) else x) for k, x in d.items() if k != "text"}
    numbers = {"metric": CLAIM_METRIC, "seeds": out["seeds"], "acc": nums(acc), "acc_norm": nums(norm),
               "id_ppl": nums(idv), "chance": out["chance"].get("avg"),
               "best_lr": dict(zip(out["lr_choice"].checkpoint, out["lr_choice"].best_lr))
               if len(out["lr_choice"]) else {}}
    return {"verdict": v, "metric": CLAIM_METRIC, "measured": measured, "numbers": numbers, "acc": acc,
            "acc_norm": norm, "id": idv, "sentence": sentence, "lr_text": lr_text(out, cfg)}


# --------------------------------------------------------------------------- figures and tables
def _token_axis(ax, base):
    """Log-scaled pre-training tokens, ticks at the checkpoints, labelled with their names."""
    plots.token_axis(ax, base.tokens, base.checkpoint, rotation=45, fontsize=7)


def _tuned_band(ax, t, metric, color, label, marker="o", ls="-"):
    """Seed mean (line) and min-max over seeds (band)."""
    ax.plot(t.tokens, t[metric], marker=marker, ls=ls, color=color, label=label)
    ax.fill_between(t.tokens, t[f"{metric}_min"], t[f"{metric}_max"], color=color, alpha=0.2, lw=0)


def fig_average(out: dict, cfg: Config):
    """Fig. 1: average acc and acc_norm against tokens: base (± 1 lm-eval s.e.) and the tuned seed
    mean with its min-max band over seeds; chance dotted."""
    import matplotlib.pyplot as plt
    s = out["summary"]
    base, tuned = s[s.stage == "base"].sort_values("tokens"), s[s.stage == "tuned"].sort_values("tokens")
    n = len(out["seeds"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, metric in zip(axes, ("avg_acc", "avg_acc_norm")):
        ax.errorbar(base.tokens, base[metric], yerr=base[metric + "_stderr"], marker="o", capsize=3,
                    label="base (± 1 s.e.)", color="tab:gray")
        _tuned_band(ax, tuned, metric, "tab:blue", f"instruction-tuned, chosen LR (mean of {n} seeds; band: min-max)")
        ax.axhline(out["chance"]["avg"], ls=":", color="k", label="chance")
        _token_axis(ax, base)
        ax.set_xlabel("pre-training tokens")
        ax.set_title(f"{_metric_name(metric)} over {len(cfg.benchmarks)} benchmarks (ours)"
                     + (" — the claim's metric" if metric == CLAIM_METRIC else ""), fontsize=10)
    axes[0].set_ylabel("average accuracy")
    axes[0].legend(loc="best", fontsize=7.5)
    axes[1].text(0.02, 0.02, "Paper (theirs), OLMo-1B: tuned 3T ≈ 3 pts worse on AlpacaEval,\n"
                 "≈ 2 pts worse on ARC than tuned 2.3T; base rises monotonically.",
                 transform=axes[1].transAxes, fontsize=7.5, va="bottom",
                 bbox=dict(boxstyle="round", fc="lightyellow", alpha=0.9))
    fig.tight_layout()
    return fig


def fig_benchmarks(out: dict, cfg: Config):
    """Fig. 2: every benchmark, base and tuned (seed mean, acc_norm with its min-max band)."""
    import matplotlib.pyplot as plt
    s = out["summary"]
    base, tuned = s[s.stage == "base"].sort_values("tokens"), s[s.stage == "tuned"].sort_values("tokens")
    ncol = 4
    nrow = max(1, math.ceil(len(cfg.benchmarks) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(13, 3 * nrow), sharex=True, squeeze=False)
    for ax, b in zip(axes.flat, cfg.benchmarks):
        ax.plot(base.tokens, base[f"{b}/acc_norm"], marker="o", color="tab:gray", label="base acc_norm")
        ax.plot(base.tokens, base[f"{b}/acc"], marker="x", ls="--", color="tab:gray", alpha=0.6, label="base acc")
        _tuned_band(ax, tuned, f"{b}/acc_norm", "tab:blue", "tuned acc_norm (seed mean, min-max)")
        ax.plot(tuned.tokens, tuned[f"{b}/acc"], marker="x", ls="--", color="tab:blue", alpha=0.6,
                label="tuned acc (seed mean)")
        ax.axhline(out["chance"][b], ls=":", color="k")
        ax.set_title(b, fontsize=10)
        _token_axis(ax, base)
    for ax in axes.flat[len(cfg.benchmarks):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6.5)
    fig.supxlabel("pre-training tokens")
    fig.supylabel("accuracy (ours; dotted: chance)")
    fig.tight_layout()
    return fig


def fig_id(out: dict, cfg: Config):
    """Fig. 3: held-out (test) response perplexity, base and tuned (seed mean, min-max band); and
    the validation perplexity of every LR of the grid (seed mean, min-max band), chosen LR ringed."""
    import matplotlib.pyplot as plt
    s, sft, lc = out["summary"], out["sft"], out["lr_choice"]
    base, tuned = s[s.stage == "base"].sort_values("tokens"), s[s.stage == "tuned"].sort_values("tokens")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    ax.plot(base.tokens, base.test_ppl, marker="o", color="tab:gray", label="base")
    _tuned_band(ax, tuned, "test_ppl", "tab:blue", f"instruction-tuned (mean of {len(out['seeds'])} seeds; min-max)")
    ax.set_ylabel("held-out (test) response perplexity")
    ax = axes[1]
    if len(sft):
        for lr, g in sft.groupby("lr"):
            a = g.groupby("tokens").val_ppl.agg(["mean", "min", "max"]).reset_index()
            line, = ax.plot(a.tokens, a["mean"], marker="o", label=f"lr {lr:g}")
            ax.fill_between(a.tokens, a["min"], a["max"], color=line.get_color(), alpha=0.15, lw=0)
        if len(lc):
            col = {lr: f"val ppl, lr={lr:g} (seed mean)" for lr in cfg.lrs}
            ax.plot(lc.tokens, [r[col[r.best_lr]] for _, r in lc.iterrows()], "o", ms=11, mfc="none", mec="k",
                    label="chosen LR")
    ax.set_ylabel("validation response perplexity after SFT")
    for ax in axes:
        _token_axis(ax, base)
        plots.log_y(ax)
        ax.set_xlabel("pre-training tokens")
        ax.legend(fontsize=7.5)
    fig.tight_layout()
    return fig


def table_summary(out: dict, cfg: Config, per_benchmark: bool = False):
    """The numbers as text, ``mean ± CI``: tuned over seeds (95 % t-interval), base ± 1.96 lm-eval
    s.e. (items; test ppl: from the s.e. of its log). One row per (stage, checkpoint)."""
    import pandas as pd
    s = out["summary"]
    mets = ([f"{b}/{m}" for b in cfg.benchmarks for m in ("acc", "acc_norm")] if per_benchmark
            else ["avg_acc", "avg_acc_norm", "test_ppl"])

    def fmt(v, ci, digits):
        return f"{v:.{digits}f}" + (f" ± {ci:.{digits}f}" if ci == ci else "")
    rows = []
    for _, r in s.sort_values(["stage", "tokens"]).iterrows():
        row = {"stage": r.stage, "checkpoint": r.checkpoint, "tokens": f"{r.tokens:.3g}", "seeds": int(r.n_seeds)}
        for m in mets:
            row[m] = fmt(r[m], r.get(f"{m}_ci", float("nan")), 1 if m == "test_ppl" else 3)
        if not per_benchmark:
            row["LR"] = f"{r.best_lr:g}" if r.best_lr == r.best_lr else ""
        rows.append(row)
    return pd.DataFrame(rows).set_index(["stage", "checkpoint"])


# --------------------------------------------------------------------------- AlpacaEval (optional)
def alpacaeval(model, tok, cfg: Config, max_new_tokens: int = 512) -> dict:
    """Win rate from the ``alpaca_eval`` package with the annotator ``cfg.alpacaeval_judge``.

    Runs only when a judge is configured (it needs the ``alpaca_eval`` package, the hub's
    ``tatsu-lab/alpaca_eval`` set and the judge's API key, e.g. ``OPENAI_API_KEY``); not run here.
    """
    import datasets
    import torch
    try:
        import alpaca_eval
    except ImportError as e:
        raise RuntimeError("alpacaeval_judge is set but the alpaca_eval package is not installed "
                           "(pip install alpaca-eval)") from e
    ev = datasets.load_dataset("tatsu-lab/alpaca_eval", "alpaca_eval", split="eval", trust_remote_code=False)
    outs = []
    for r in ev:
        ids = tok.apply_chat_template([{"role": "user", "content": r["instruction"]}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        ids = {k: v.to(model.device) for k, v in ids.items()}
        with torch.inference_mode():
            g = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        outs.append({"instruction": r["instruction"], "output": tok.decode(g[0, ids["input_ids"].shape[1]:],
                                                                             skip_special_tokens=True),
                     "generator": "coft"})
    df, _ = alpaca_eval.evaluate(model_outputs=outs, annotators_config=cfg.alpacaeval_judge, is_return_instead_of_print=True)
    row = df.loc["coft"] if "coft" in df.index else df.iloc[0]
    return {"alpacaeval_win_rate": float(row.get("win_rate", float("nan"))),
            "alpacaeval_lc_win_rate": float(row.get("length_controlled_winrate", float("nan")))}


# --------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    """``python -m coft_utils.chapters.instruct --profile paper [-p key value ...]`` (also under ``accelerate launch``)."""
    ap = argparse.ArgumentParser(prog="python -m coft_utils.chapters.instruct", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default=profiles.DEFAULT_PROFILE, choices=list(profiles.PROFILES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="override a parameter (VALUE parsed as YAML)")
    a = ap.parse_args(argv)
    import yaml
    overrides = {k: yaml.safe_load(v) for k, v in a.param}
    cfg = profiles.resolve(CHAPTER, a.profile, overrides, seed=a.seed)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # rank 0 evaluates while the others wait: a long collective timeout (NCCL's default is 10 min)
        import datetime
        import torch
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo",
                                    timeout=datetime.timedelta(hours=6))
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    out = run(cfg, progress=_is_main())
    if _is_main():
        print(table_summary(out, cfg).to_string())
        cv = claim_verdict(out, cfg)
        print(cv["sentence"])
        for k in ("acc", "acc_norm", "id"):
            print(f"{k}: {cv[k]['text']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
