"""Chapter 01: instruction tuning of every checkpoint of a pre-training series (paper Figs. 1-2).

::

    from coft_utils import instruct, profiles
    cfg = profiles.resolve("01_instruction_tuning", "smoke")
    series = instruct.get_series(cfg)            # the pre-training suite (smoke/cpu/gpu) or OLMo-1B (paper)
    out = instruct.run(cfg)                      # base eval, SFT per learning rate, best-LR eval; resumable
    out["summary"]                               # one row per (checkpoint, stage): avg acc, acc_norm, ID ppl
    out["sft"]                                   # one row per (checkpoint, lr): train loss, val/test response ppl
    instruct.verdict(out["summary"], out["chance"])    # does the tuned curve bend down?

    # paper scale, several GPUs (FSDP): fills the same results store; then run the notebook
    #   accelerate launch --config_file coft_utils/configs/accelerate_fsdp_instruct.yaml \\
    #       -m coft_utils.instruct --profile paper
    #   python -m coft_utils run 01_instruction_tuning --profile paper

What one run does, for every selected checkpoint of the series:

1. **base**: zero-shot ``acc``/``acc_norm`` on the eight generalist benchmarks through
   ``lm_eval.simple_evaluate`` (:mod:`coft_utils.lmeval_tasks`: local task configs here,
   lm-eval's standard tasks at ``paper``) and the response perplexity on the held-out
   instruction data (the ID metric, below);
2. **sft**: for every learning rate of ``lrs``, supervised fine-tuning with TRL's ``SFTTrainer``
   on chat-formatted dialogues with the loss on the assistant responses only
   (``assistant_only_loss=True``; the chat template marks responses with ``{% generation %}``,
   :data:`coft_utils.models.CHAT_TEMPLATE`, with the tokenizer's own eos for hub tokenizers);
   the tuned weights are saved, and the response perplexity on the *validation* half of the
   held-out data selects the best learning rate (the paper tunes the LR per checkpoint for the
   best ID score);
3. **tuned**: the best-LR model is evaluated like the base model; the held-out *test* half
   gives the reported ID perplexity, so the LR is never chosen on the numbers we report.

Instruction data (``sft_data``): ``hh_rlhf`` = Anthropic-HH "chosen" dialogues (here the local
harmless-base pairs; at ``paper`` the hub's full train split), split at ``"\\n\\nHuman: "`` /
``"\\n\\nAssistant: "`` into user/assistant turns (dialogues that do not end with a non-empty
assistant turn are dropped); ``alpaca_seed_tasks`` = instruction (+ ``"\\n\\n"`` + input) ->
output, one example per instance; ``gsm8k`` = GSM8K train question -> answer; ``tulu`` (paper
only) = ``allenai/tulu-v2-sft-mixture`` messages. Held-out split: per source, a permutation drawn
with the fixed seed :data:`HELDOUT_SEED` (independent of the run's seed); its first
``heldout_per_source`` examples are held out (first half: validation for LR selection, second
half: test), the rest are the training pool (at most ``train_per_source`` per source). The
training mix is the union of the pools, shuffled by the run seed.

Response perplexity = exp(total NLL / number of assistant tokens) over the held-out dialogues,
token-weighted, with sequences cut to ``max_seq_len`` tokens (the same cut as training).

Results: ``results.Store("01_instruction_tuning", profile)``, one record per unit
``{"stage": "base"|"sft"|"tuned", "series", "checkpoint", ("lr", "seed"), "key"}`` where
``key`` hashes the settings that change the unit's numbers, so reruns are free and a change of
settings never reuses a stale record.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import data, models, profiles, results
from .lmeval_tasks import BENCHMARKS
from .profiles import param

__all__ = ["Config", "PRESETS", "CHAPTER", "PAPER", "get_series", "select_checkpoints", "sft_sources",
           "chat_template_for", "response_perplexity", "sft", "run", "summarize", "verdict", "chance_levels",
           "alpacaeval", "main"]

CHAPTER = "01_instruction_tuning"
HELDOUT_SEED = 20250325
SFT_SOURCES = ("hh_rlhf", "alpaca_seed_tasks", "gsm8k", "tulu")
HUB_SERIES = ("olmo-1b", "olmo-2-7b-stage1", "amber")

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
    n_checkpoints: int = param(0, "evenly spaced checkpoints incl. first and last (0: all)", min=0)
    sft_data: tuple[str, ...] = param(("hh_rlhf", "alpaca_seed_tasks", "gsm8k"), "instruction data sources",
                                      choices=SFT_SOURCES)
    train_per_source: int = param(2000, "at most this many training dialogues per source", min=1)
    heldout_per_source: int = param(100, "held-out dialogues per source (half LR selection, half test)", min=2)
    lrs: tuple[float, ...] = param((3e-4, 1e-3, 3e-3), "SFT learning-rate grid (best per checkpoint)", min=0.0,
                                   min_exclusive=True)
    sft_steps: int = param(150, "SFT optimizer steps (0: one epoch)", min=0)
    batch_size: int = param(16, "per-device SFT batch size", min=1)
    grad_accum: int = param(1, "gradient accumulation steps", min=1)
    max_seq_len: int = param(0, "SFT / ID-eval sequence length (0: the model's context, at most 2048)", min=0)
    warmup_ratio: float = param(0.05, "linear warmup fraction of the SFT steps", min=0.0, max=0.5)
    lr_schedule: str = param("cosine", "SFT learning-rate schedule", choices=("cosine", "linear", "constant_with_warmup"))
    weight_decay: float = param(0.0, "SFT AdamW weight decay", min=0.0)
    benchmarks: tuple[str, ...] = param(BENCHMARKS, "generalist benchmarks (lm-eval)", choices=BENCHMARKS)
    bench_limit: int = param(100, "items per benchmark (first N; 0: all)", min=0)
    bench_local: bool = param(True, "lm-eval task configs on the local files (False: lm-eval's hub tasks)")
    eval_max_length: int = param(256, "lm-eval max length in tokens (0: the model's)", min=0)
    eval_batch_size: int = param(64, "lm-eval batch size", min=1)
    precision: str = param("fp32", "training / eval precision", choices=("fp32", "bf16"))
    keep_tuned: str = param("best", "tuned weights kept on disk: best LR only, or all", choices=("best", "all"))
    alpacaeval_judge: str = param(None, "alpaca_eval annotator config (None: AlpacaEval is skipped)", nullable=True)
    threads: int = param(0, "torch CPU threads (0: torch default)", min=0)

    def check(self):
        if self.series in models.SERIES and profiles.get_profile(self.profile).offline:
            raise profiles.ProfileError(f"parameter 'series' = {self.series!r} needs the hub (paper profile); "
                                        f"allowed at profile {self.profile!r}: 'suite' or a series .json "
                                        "of local folders")
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
    # 3 of the smoke suite's checkpoints, 2 LRs x 8 SFT steps, 10 items per benchmark: seconds.
    "smoke": Config(profile="smoke", n_checkpoints=3, train_per_source=200, heldout_per_source=16,
                    lrs=(3e-3, 1e-2), sft_steps=8, batch_size=8, bench_limit=10, eval_max_length=256,
                    eval_batch_size=64, threads=1),
    # every checkpoint of the cpu suite (olmo-pico), 3 LRs x 80 steps of 8 dialogues, 100 items
    # per benchmark: about 6 min on 2 shared cores (suite training excluded). TRL's fused LM-head
    # loss is about half of an SFT step on CPU. One torch thread: on a shared machine two
    # threads on two busy cores ran ~25x slower here.
    "cpu": Config(profile="cpu", n_checkpoints=0, train_per_source=2000, heldout_per_source=60,
                  lrs=(3e-3, 1e-2, 3e-2), sft_steps=80, batch_size=8, bench_limit=100,
                  eval_max_length=256, eval_batch_size=64, threads=1),
    # the gpu suite (olmo-micro), 3 LRs x 1000 steps of 64, every benchmark item.
    "gpu": Config(profile="gpu", n_checkpoints=0, train_per_source=100_000, heldout_per_source=200,
                  lrs=(1e-4, 3e-4, 1e-3), sft_steps=1000, batch_size=64, bench_limit=0,
                  eval_max_length=1024, eval_batch_size=64, precision="bf16"),
    # the paper: OLMo-1B-hf revisions 0.04T..3.1T, Anthropic-HH (hub, full train split), one epoch,
    # global batch 8 GPUs x 8 x 2 = 128, LR grid tuned per checkpoint, lm-eval's standard tasks
    # (all items), FSDP through accelerate. The LR grid, batch and schedule are this companion's
    # choices in the range used for 1B-scale SFT; the paper's exact grid is not stated here.
    "paper": Config(profile="paper", series="olmo-1b", n_checkpoints=0, sft_data=("hh_rlhf",),
                    train_per_source=10_000_000, heldout_per_source=1000, lrs=(4e-6, 1e-5, 2e-5, 4e-5),
                    sft_steps=0, batch_size=8, grad_accum=2, max_seq_len=2048, warmup_ratio=0.03,
                    lr_schedule="linear", bench_limit=0, bench_local=False, eval_max_length=0,
                    eval_batch_size=32, precision="bf16"),
}


# --------------------------------------------------------------------------- series
def get_series(cfg: Config) -> models.CheckpointSeries:
    """The series to tune: the pre-training suite of ``cfg.profile`` or a pinned hub series."""
    from . import pretrain
    return select_checkpoints(pretrain.chapter_series(cfg), cfg)


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
    """Token-weighted perplexity of the assistant tokens (next-token NLL where the mask is 1)."""
    import torch
    import torch.nn.functional as F
    dev = next(model.parameters()).device
    total, count = 0.0, 0
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
            total += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1),
                                           ignore_index=-100, reduction="sum"))
            count += int((tgt != -100).sum())
    model.train(was)
    loss = total / max(count, 1)
    return {"loss": loss, "ppl": math.exp(loss) if math.isfinite(loss) and loss < 700 else math.inf,
            "n_tokens": count}


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
    from . import lmeval_tasks
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
        dataloader_num_workers=0, disable_tqdm=True,
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
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tok)
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)  # the loss history is kept in trainer.state.log_history
    t0 = time.perf_counter()
    out = trainer.train()
    wall = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    info = {"train_loss": float(out.training_loss), "final_loss": float(losses[-1]) if losses else float("nan"),
            "steps": int(trainer.state.global_step), "n_train": len(trainer.train_dataset), "sft_wall_s": wall}
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


def run(cfg: Config, series: models.CheckpointSeries | None = None, progress: bool = True) -> dict:
    """Every unit of the chapter (resumable); returns frames ``base``, ``sft``, ``summary`` and more."""
    series = series or get_series(cfg)
    store = results.Store(CHAPTER, cfg.profile)
    sources = sft_sources(cfg)
    data_names = _data_names(cfg)
    sft_key = _key(cfg, _SFT_FIELDS)
    eval_key = _key(cfg, _EVAL_FIELDS)
    id_key = _key(cfg, _DATA_FIELDS)
    tok_cache: dict = {}
    # dialogues one run can consume (with some spare for those TRL drops after truncation)
    n_train = None if not cfg.sft_steps else int(cfg.sft_steps * cfg.batch_size * cfg.grad_accum
                                                   * int(os.environ.get("WORLD_SIZE", "1")) * 1.25) + 8
    model_dir = results.runs_dir() / cfg.profile / CHAPTER / "models"
    t_start = time.perf_counter()

    def tokenized(tok, model, train: bool = False):
        k = (tok.name_or_path, len(tok), _context(model, cfg))
        if k not in tok_cache:
            L = _context(model, cfg)
            tok_cache[k] = {"val": {s: tokenize_dialogues(tok, v["val"], L) for s, v in sources.items()},
                            "test": {s: tokenize_dialogues(tok, v["test"], L) for s, v in sources.items()}}
        if train and "train" not in tok_cache[k]:
            tok_cache[k]["train"] = prepare_sft_dataset(model, tok, train_mix(sources, cfg.seed)[:n_train], cfg,
                                                        model_dir / "_trainer" / "prepare")
        return tok_cache[k]

    def write(unit, metrics):
        if _is_main():
            store.write(unit, metrics, config=cfg, data_names=data_names)
        _barrier()

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(series) * (len(cfg.lrs) + 2), desc=f"{CHAPTER} [{cfg.profile}]", leave=False)
    for ck in series:
        base_u = {"stage": "base", "series": series.name, "checkpoint": ck.label, "key": f"{eval_key}-{id_key}"}
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
        sft_units = {lr: {"stage": "sft", "series": series.name, "checkpoint": ck.label, "lr": lr,
                          "seed": cfg.seed, "key": sft_key} for lr in cfg.lrs}
        for lr, u in sft_units.items():
            if not store.done(u):
                t0 = time.perf_counter()
                model, tok = _load(ck, cfg, train=True)
                tk = tokenized(tok, model, train=True)
                info, trainer = sft(model, tok, tk["train"], lr, cfg,
                                    model_dir / "_trainer" / f"{results.unit_id(u)}", cfg.seed)
                path = model_dir / results.unit_id(u)
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
            bar and bar.update(1)
        recs = {lr: store.get(u)["metrics"] for lr, u in sft_units.items()}
        best = min(cfg.lrs, key=lambda lr: (recs[lr]["val_ppl"] if math.isfinite(recs[lr]["val_ppl"]) else math.inf, lr))
        tuned_u = {**sft_units[best], "stage": "tuned", "key": f"{sft_key}-{eval_key}"}
        if not store.done(tuned_u):
            t0 = time.perf_counter()
            path = Path(recs[best]["model_dir"])
            m = {"tokens": ck.tokens, "best_lr": best, "lr_grid": list(cfg.lrs),
                 **{k: recs[best][k] for k in recs[best] if k.startswith(("val_", "test_", "train_loss", "final_loss"))}}
            if _is_main():
                tuned = models.load_model(str(path), device=_device(cfg), dtype=_dtype(cfg))
                tok = prepare_tokenizer(models.load_tokenizer(str(path)))
                m.update(bench_eval(tuned, tok, cfg))
                if cfg.alpacaeval_judge:
                    m.update(alpacaeval(tuned, tok, cfg))
                del tuned
            m["wall_s"] = time.perf_counter() - t0
            write(tuned_u, m)
            if cfg.keep_tuned == "best" and _is_main():
                for lr, r in recs.items():
                    if lr != best and Path(r["model_dir"]).is_dir():
                        shutil.rmtree(r["model_dir"], ignore_errors=True)
        bar and bar.update(1)
    if bar is not None:
        bar.close()
    shutil.rmtree(model_dir / "_trainer", ignore_errors=True)
    return collect(cfg, series, store, sources, wall_s=time.perf_counter() - t_start)


def collect(cfg: Config, series, store, sources=None, wall_s: float | None = None) -> dict:
    import pandas as pd
    labels = [c.label for c in series]
    keys = {"base": f"{_key(cfg, _EVAL_FIELDS)}-{_key(cfg, _DATA_FIELDS)}", "sft": _key(cfg, _SFT_FIELDS),
            "tuned": f"{_key(cfg, _SFT_FIELDS)}-{_key(cfg, _EVAL_FIELDS)}"}
    rows = {"base": [], "sft": [], "tuned": []}
    for r in store.records():
        u = r["unit"]
        if u.get("series") != series.name or u.get("checkpoint") not in labels or u.get("key") != keys[u["stage"]]:
            continue
        if u["stage"] != "base" and (u.get("seed") != cfg.seed or u.get("lr") not in cfg.lrs):
            continue
        rows[u["stage"]].append({**u, **r["metrics"]})
    frames = {k: pd.DataFrame(v).sort_values(["tokens"] + (["lr"] if k == "sft" else [])).reset_index(drop=True)
              if v else pd.DataFrame() for k, v in rows.items()}
    summary = summarize(frames["base"], frames["tuned"], cfg)
    return {"base": frames["base"], "sft": frames["sft"], "tuned": frames["tuned"], "summary": summary,
            "chance": chance_levels(cfg), "series": series, "wall_s": wall_s,
            "n_examples": {s: {p: len(v[p]) for p in ("train", "val", "test")} for s, v in (sources or {}).items()}}


def summarize(base, tuned, cfg: Config):
    """One row per (checkpoint, stage): tokens, avg acc/acc_norm (+ s.e.), test response ppl, best LR."""
    import pandas as pd
    rows = []
    for stage, df in (("base", base), ("tuned", tuned)):
        for _, r in df.iterrows():
            rows.append({"checkpoint": r["checkpoint"], "tokens": r["tokens"], "stage": stage,
                         "avg_acc": r["avg_acc"], "avg_acc_stderr": r["avg_acc_stderr"],
                         "avg_acc_norm": r["avg_acc_norm"], "avg_acc_norm_stderr": r["avg_acc_norm_stderr"],
                         "test_ppl": r["test_ppl"], "best_lr": r.get("best_lr", float("nan")) if stage == "tuned" else float("nan"),
                         **{f"{b}/{m}": r[f"{b}/{m}"] for b in cfg.benchmarks for m in ("acc", "acc_norm")}})
    return pd.DataFrame(rows)


def chance_levels(cfg: Config) -> dict:
    """Expected accuracy of a uniform guess on the items evaluated: mean of 1/(number of choices)."""
    from . import lmeval_tasks
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


def verdict(summary, chance: dict, metric: str = "avg_acc") -> dict:
    """Does the tuned curve bend down at the end, beyond noise, while the base curve does not?

    ``drop`` = best tuned score before the last checkpoint minus the last tuned score; it counts
    as a bend when it exceeds twice the combined standard error of the two points. The scores are
    also compared with chance (uniform guessing on the same items).
    """
    out = {"metric": metric}
    t = summary[summary.stage == "tuned"].sort_values("tokens")
    b = summary[summary.stage == "base"].sort_values("tokens")
    if len(t) < 2:
        out.update(bends_down=False, text="fewer than two tuned checkpoints: no curve to judge")
        return out
    se = metric + "_stderr"
    prev = t.iloc[:-1]
    i_best = prev[metric].values.argmax()
    best, best_se = prev[metric].values[i_best], prev[se].values[i_best]
    last, last_se = t[metric].values[-1], t[se].values[-1]
    drop = best - last
    noise = 2 * math.sqrt(best_se ** 2 + last_se ** 2)
    base_drop = b.iloc[:-1][metric].max() - b[metric].values[-1] if len(b) >= 2 else float("nan")
    ch = chance.get("avg", float("nan"))
    span_t = t[metric].max() - t[metric].min()
    max_dev = float((summary[metric] - ch).abs().max()) if math.isfinite(ch) else float("nan")
    avg_se = float(summary[se].mean())
    near_chance = bool(math.isfinite(ch) and max_dev < 4 * avg_se)
    bends = bool(drop > noise)
    ppl_t = t["test_ppl"].values
    ppl_improves = bool(ppl_t[-1] <= ppl_t.min() * 1.0001)
    out.update(bends_down=bends, drop=float(drop), noise=float(noise), best_checkpoint=prev["checkpoint"].values[i_best],
               last_checkpoint=t["checkpoint"].values[-1], base_drop=float(base_drop), chance=ch,
               max_dev_from_chance=max_dev, avg_stderr=avg_se, near_chance=near_chance,
               span_tuned=float(span_t), tuned_ppl_last_is_best=ppl_improves,
               tuned_ppl_first=float(ppl_t[0]), tuned_ppl_last=float(ppl_t[-1]))
    parts = []
    if bends:
        parts.append(f"Yes: the instruction-tuned {metric} falls from {best:.3f} ({out['best_checkpoint']}) "
                     f"to {last:.3f} at the last checkpoint ({out['last_checkpoint']}), a drop of {drop:.3f}, "
                     f"larger than twice its standard error ({noise:.3f}).")
    else:
        parts.append(f"No bend we can resolve: the last tuned checkpoint scores {last:.3f} against the best "
                     f"earlier {best:.3f} ({out['best_checkpoint']}); the difference {drop:+.3f} is within "
                     f"twice its standard error ({noise:.3f}).")
    if near_chance:
        lo, hi = summary[metric].min(), summary[metric].max()
        parts.append(f"Every score ({lo:.3f} to {hi:.3f}, base and tuned) is within four standard errors "
                     f"({4 * avg_se:.3f}) of chance ({ch:.3f}): these models are too small for these "
                     f"benchmarks, so the benchmark curves cannot show the effect either way at this scale.")
    parts.append("The tuned models' held-out response perplexity " +
                 ("keeps improving to the last checkpoint" if ppl_improves else "is not best at the last checkpoint") +
                 f" ({ppl_t[0]:.1f} at the first, {ppl_t[-1]:.1f} at the last).")
    out["text"] = " ".join(parts)
    return out


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
    """``python -m coft_utils.instruct --profile paper [-p key value ...]`` (also under ``accelerate launch``)."""
    ap = argparse.ArgumentParser(prog="python -m coft_utils.instruct", description=__doc__.split("\n")[0])
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
        print(out["summary"].to_string())
        print(verdict(out["summary"], out["chance"])["text"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
